"""Feedback through a real LiteLLM proxy with the OpenAI SDK: ``POST /payg/feedback``.

A rating by response id moves the estimate of the deployment that answered (as the plugin
recorded it, whatever the client claims); another key's rating, an unknown id or a bad value is
refused with a 4xx and changes nothing. The evidence is read back from the proxy's SQLite ledger
file, the store the proxy wrote it to.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
import yaml

from proxy_fixtures import RunningProxy, litellm_proxy_factory  # noqa: F401  (fixture)
from trust_helpers import AUTH_MODULE, AUTH_MODULE_NAME, new_key

from litellm_payg.stores.evidence import cell_key, open_evidence

CHEAP = "deepseek/deepseek-chat"
POLICY = {
    "version": 1,
    "ledger": "sqlite:///payg-ledger.db",
    "models": {CHEAP: {"quality": 0.9}},
    "quality": {"feedback": True, "metrics": {"helpful": "score"},
                # every answer also judged against the newcomer, within $0.002 an hour (a sample
                # reserves $0.001 and costs about $0.00003: all 200 would cost about $0.005)
                "judge": {"model": "openai/gpt-4o-mini", "share": 1.0, "max_usd": 0.002, "reserve_usd": 0.001,
                          "max_tokens": 50, "litellm_params": {"mock_response": "PASS", "api_key": "not-used"}}},
    "routes": {"chat": [{"quality_floor": {"min_quality": 0.5, "measured": {}}}]},
}
CONFIG = {
    "model_list": [{"model_name": "chat", "litellm_params": {
        "model": CHEAP, "api_key": "not-used-mock-response", "mock_response": "hello",
        "input_cost_per_token": 1e-6, "output_cost_per_token": 1e-6}, "model_info": {"id": "cheap"}},
        # no declared quality: unsure of the bar, never served (no exploration budget), only judged
        {"model_name": "chat", "litellm_params": {
            "model": "mistral/mistral-small-latest", "api_key": "not-used-mock-response", "mock_response": "hi there",
            "input_cost_per_token": 1e-7, "output_cost_per_token": 1e-7}, "model_info": {"id": "new"}}],
    "litellm_settings": {"callbacks": ["litellm_payg.proxy_handler"]},
    "general_settings": {"custom_auth": f"{AUTH_MODULE_NAME}.user_api_key_auth"},
}


@pytest.fixture(scope="module")
def proxy(litellm_proxy_factory) -> RunningProxy:  # noqa: F811
    return litellm_proxy_factory(
        CONFIG, name="feedback",
        files={"payg-policy.yaml": yaml.safe_dump(POLICY, sort_keys=False), f"{AUTH_MODULE_NAME}.py": AUTH_MODULE},
    ).wait_ready()


def _rate(proxy: RunningProxy, key: str, body: object) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(f"{proxy.base_url}/payg/feedback", data=data, method="POST",
                                 headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def _tallies(proxy: RunningProxy) -> dict:
    """The evidence about the deployment that answers (the judged sample adds its own on ``new``)."""
    store = open_evidence(f"sqlite:///{proxy.workdir}/payg-ledger.db")
    try:
        return {k: t for k, t in store.tallies("chat").items() if k.startswith("cheap")}
    finally:
        store.close()


def test_feedback_by_response_id_moves_the_estimate_and_nothing_else_does(proxy):
    import openai

    key, other = new_key(label="fb"), new_key(label="other")
    client = openai.OpenAI(base_url=f"{proxy.base_url}/v1", api_key=key, max_retries=0, timeout=30)
    answer = client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])
    assert answer.id

    refused = [
        (other, {"response_id": answer.id, "metric": "helpful", "value": 1.0}, 404),  # not this key's answer
        (key, {"response_id": "chatcmpl-forged", "metric": "helpful", "value": 1.0}, 404),
        (key, {"response_id": answer.id, "metric": "helpful", "value": 7}, 422),
        (key, {"response_id": answer.id, "metric": "valid", "value": "yes"}, 422),
        (key, {"response_id": answer.id, "metric": "nonsense", "value": 1}, 422),
        (key, {"response_id": answer.id, "metric": "helpful", "value": 1, "deployment": "dear"}, 422),
        (key, b"not json", 400),
    ]
    for who, body, status in refused:
        got, reply = _rate(proxy, who, body)
        assert got == status, (body, reply)
    assert _tallies(proxy) == {}  # nothing changed

    got, reply = _rate(proxy, key, {"response_id": answer.id, "metric": "helpful", "value": 0.8})
    assert got == 200 and reply["n"] == 1
    tally = _tallies(proxy)[cell_key("cheap", "", "helpful")]
    assert tally.n == 1 and tally.s == pytest.approx(0.8)
    assert _rate(proxy, key, {"response_id": answer.id, "metric": "helpful", "value": 0.1})[0] == 409  # once
    assert _rate(proxy, "sk-not-a-key", {"response_id": answer.id, "metric": "helpful", "value": 1})[0] in (401, 403)
    assert _tallies(proxy)[cell_key("cheap", "", "helpful")].n == 1


def test_the_judged_sample_stays_inside_its_dollar_cap_at_200_concurrent_requests(proxy):
    import time
    from concurrent.futures import ThreadPoolExecutor

    import openai

    from litellm_payg.stores.ledger import open_ledger

    client = openai.OpenAI(base_url=f"{proxy.base_url}/v1", api_key=new_key(label="load"), max_retries=0, timeout=60)

    def ask(i: int) -> str:
        raw = client.chat.completions.with_raw_response.create(model="chat", messages=[{"role": "user", "content": f"q{i}"}])
        return raw.headers["x-payg-chosen"]

    with ThreadPoolExecutor(max_workers=50) as pool:
        chosen = list(pool.map(ask, range(200)))
    assert set(chosen) == {"cheap"}

    def judged() -> list:
        ledger = open_ledger(f"sqlite:///{proxy.workdir}/payg-ledger.db")
        try:
            return [r for r in ledger.records() if r.attrs.get("purpose") == "judge"]
        finally:
            ledger.close()

    seen, deadline = None, time.monotonic() + 30
    while time.monotonic() < deadline:  # the samples run off the callers' path: wait until they settle
        now = judged()
        if now and seen is not None and len(now) == len(seen):
            break
        seen = now
        time.sleep(1.0)
    records = judged()
    spent = sum(r.amount_usd for r in records)
    assert 1 <= len(records) < 200 and 0 < spent <= 0.002
    assert 200 * min(r.amount_usd for r in records) > 0.002  # without the cap, the 200 would be over it
    store = open_evidence(f"sqlite:///{proxy.workdir}/payg-ledger.db")
    try:
        tally = store.tallies("chat")[cell_key("new", "", "judged")]
    finally:
        store.close()
    assert tally.n == len(records)
