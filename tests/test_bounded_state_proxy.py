"""Issue #19 items 5 and 6b through a REAL ``litellm --config`` proxy: bounded state, bounded labels,
and runs that belong to the key that started them.

Found by a hostile client of a real proxy: refused requests kept their whole state (a 1 MiB
metadata blob cost about 2 MB of proxy memory per refused request), ``user``, session ids and tags
were stored verbatim (782 KB per ledger record), and a run id named by another key read that run's
spend in the response headers and advanced its counters.

One proxy for the module; callers are told apart by their key (``custom_auth``, see
``trust_helpers``). Deployments answer with ``mock_response`` at prices set on them.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
import yaml

from proxy_fixtures import RunningProxy, litellm_proxy_factory  # noqa: F401  (fixture)
from trust_helpers import AUTH_MODULE, AUTH_MODULE_NAME, LedgerView, key_hash, new_key, post, wait_until

from litellm_payg.core.identity import MAX_LABEL_CHARS, MAX_TAGS

PRICE = 1e-5  # per token, in and out
POLICY = {
    "version": 1,
    "ledger": "sqlite:///payg-ledger.db",
    "models": {"openai/gpt-4o-mini": {"quality": 1}},
    "routes": {"chat": [{"quality_floor": {"min_quality": 0}}]},
    "budgets": [
        # every request of the end user "flooder" is refused: the flood of refusals
        {"name": "flood", "scope": "end_user:flooder", "window": "day", "limit_usd": 1e-9},
        {"name": "per-run", "scope": "session:*", "window": "session:30m", "limit_usd": 1.0, "max_requests": 50},
    ],
}
CONFIG = {
    "model_list": [{
        "model_name": "chat",
        "litellm_params": {"model": "openai/gpt-4o-mini", "api_key": "not-used-mock-response",
                           "mock_response": "ok", "input_cost_per_token": PRICE, "output_cost_per_token": PRICE},
        "model_info": {"id": "d1"},
    }],
    "litellm_settings": {"callbacks": ["litellm_payg.adapter.proxy.handler"]},
    "general_settings": {"custom_auth": f"{AUTH_MODULE_NAME}.user_api_key_auth"},
}


@pytest.fixture(scope="module")
def proxy(litellm_proxy_factory) -> RunningProxy:  # noqa: F811
    return litellm_proxy_factory(
        CONFIG, name="bounded",
        files={"payg-policy.yaml": yaml.safe_dump(POLICY, sort_keys=False), f"{AUTH_MODULE_NAME}.py": AUTH_MODULE},
    ).wait_ready()


@pytest.fixture()
def ledger(proxy):
    view = LedgerView(Path(proxy.workdir))
    yield view
    view.close()


def _chat(proxy: RunningProxy, key: str, **body):
    return post(proxy.base_url, "/v1/chat/completions",
                {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, **body}, key)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


# -- item 5: bounded state ----------------------------------------------------------------------------

FLOOD = 200
BLOB = "x" * (1 << 20)  # 1 MiB of metadata per request


def test_a_flood_of_refused_requests_with_a_large_metadata_blob_leaves_memory_flat(proxy):
    key = new_key(label="flood")
    import httpx

    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5,
            "user": "flooder", "metadata": {"blob": BLOB}}
    payload = json.dumps(body).encode()
    with httpx.Client(base_url=proxy.base_url, timeout=60, trust_env=False) as client:
        def send() -> int:
            return client.post("/v1/chat/completions", content=payload,
                               headers={"Authorization": f"Bearer {key}", "content-type": "application/json"}).status_code

        warm = [send() for _ in range(20)]  # LiteLLM's own first-request allocations
        assert set(warm) == {429}, warm
        time.sleep(1.0)
        before = _rss_kib(proxy.proc.pid)
        statuses = [send() for _ in range(FLOOD)]
        time.sleep(1.0)
        after = _rss_kib(proxy.proc.pid)
    assert set(statuses) == {429}, set(statuses)
    grown_mib = (after - before) / 1024
    print(f"proxy RSS before {before / 1024:.1f} MiB, after {FLOOD} refused 1 MiB requests {after / 1024:.1f} MiB "
          f"(+{grown_mib:.1f} MiB)")
    # with the refused states kept, each held its request: about 2 MB per request, +400 MB here
    assert grown_mib < 64, f"proxy RSS grew {grown_mib:.1f} MiB over {FLOOD} refused requests"


def test_a_huge_user_or_session_id_makes_a_bounded_ledger_record(proxy, ledger):
    key = new_key(label="huge")
    huge_user = "u" * 1_000_000
    huge_session = "s" * 100_000
    resp = _chat(proxy, key, user=huge_user, litellm_session_id=huge_session)
    assert resp.status_code == 200, resp.text[:300]
    assert wait_until(lambda: ledger.records(key=key), timeout=5)
    (record,) = ledger.records(key=key)
    size = len(json.dumps(record.attrs)) + sum(len(b) for b in record.buckets)
    print(f"a ledger record for a 1,000,000-character user and a 100,000-character session id: {size} characters")
    assert size < 4 * MAX_LABEL_CHARS + 2048, f"a ledger record of {size} characters"
    end_user = record.attrs["end_user"]
    assert len(end_user) == MAX_LABEL_CHARS and end_user.startswith("uuu") and "...sha256:" in end_user
    # two long labels that share their prefix stay apart (their own end-user and run buckets)
    other = _chat(proxy, new_key(label="huge2"), user=huge_user[:-1] + "v")
    assert other.status_code == 200
    assert wait_until(lambda: len({r.attrs.get("end_user") for r in ledger.records() if "end_user" in r.attrs
                                   and r.attrs["end_user"].startswith("uuu")}) == 2, timeout=5)


def test_too_many_tags_is_a_400_naming_the_field(proxy):
    resp = _chat(proxy, new_key(label="tags"), metadata={"tags": [f"t{i}" for i in range(MAX_TAGS + 1)]})
    assert resp.status_code == 400, resp.text[:300]
    assert "metadata.tags" in resp.text and str(MAX_TAGS) in resp.text


# -- item 6b: a run belongs to the key that started it ------------------------------------------------

def _run_headers(resp) -> tuple[int, float]:
    assert resp.status_code == 200, resp.text[:300]
    return int(resp.headers["x-payg-run-requests"]), float(resp.headers["x-payg-run-spend-usd"]) + float(
        resp.headers["x-payg-run-in-flight-usd"])


def test_another_key_naming_the_same_run_id_gets_a_run_of_its_own(proxy, ledger):
    owner, intruder = new_key(label="owner"), new_key(label="intruder")
    run = f"run-{uuid.uuid4().hex[:8]}"
    for i in range(3):
        requests, _ = _run_headers(_chat(proxy, owner, litellm_session_id=run))
        assert requests == i + 1
    wait_until(lambda: len(ledger.records(key=owner)) == 3, timeout=5)
    # the intruder names the owner's run: it sees only its own request and its own spend...
    requests, spent = _run_headers(_chat(proxy, intruder, litellm_session_id=run))
    assert requests == 1, f"the intruder read the owner's run: {requests} requests"
    assert spent < 2 * 30 * PRICE, spent  # its own answer (mock usage: 30 tokens), not the owner's three
    # ...and did not advance the owner's counters
    requests, _ = _run_headers(_chat(proxy, owner, litellm_session_id=run))
    assert requests == 4, f"the owner's run counts {requests} requests after 4 of its own"
    # the ledger keeps the two runs apart: the session id as sent, and the run of its owner
    labels = {(r.attrs["session"], r.attrs["run"]) for r in ledger.records(key=intruder)}
    assert labels == {(run, f"{run}@key:{key_hash(intruder)[:16]}")}, labels
