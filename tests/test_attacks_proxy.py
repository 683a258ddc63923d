"""Issue #19: the ways a hostile client of a REAL proxy got past a $0.0002 per-user cap, one test each.

Every deployment points at the billing fake provider (``billing_provider.py``), which bills what it
receives -- after LiteLLM merged ``extra_body``, renamed ``max_tokens``, put ``deployment_id`` in the
Azure URL -- so its bill is the ground truth. Each attack runs as a fresh user (own cap) and is sent
up to ``ATTEMPTS`` times, one request at a time; for every request:

* the answer is a 200 or a refusal (4xx), never a 5xx: hostile input is still client input;
* billed means recorded: the ledger holds at least what the provider billed for it (settled records
  of the request's own key);

and over the attack, the provider's bill for the user stays within the cap plus one *ordinary*
request of the group (``SLACK``, the same request without the attack): a reservation that is an upper
bound of what the provider bills never lets more through.

These assert the fixed product. On the branch that added this file (``fuzz``) several fail because
their fixes are on other branches (``bound``, ``routes``, ``settle``); the report of that branch
lists which, and why. Do not mark them xfail: run them after merging.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from billing_provider import BillingProvider, prompt_tokens
from billing_proxy import CAP_USD, GROUPS, BillingProxy, Sent, config, files
from proxy_fixtures import litellm_proxy_factory  # noqa: F401  (fixture)
from trust_helpers import new_key

ATTEMPTS = 6
TEXT = "What is the status of my order number 12345 today?"
MESSAGES = [{"role": "user", "content": TEXT}]
WORDS = "lorem ipsum dolor sit amet consectetur adipiscing elit "  # 8 tokens
MAX_TOKENS = 20


@pytest.fixture(scope="module")
def fake():
    with BillingProvider() as p:
        yield p


@pytest.fixture(scope="module")
def proxies(litellm_proxy_factory, fake):  # noqa: F811
    started = {
        "main": litellm_proxy_factory(config(fake), name="attacks", files=files()),
        "cached": litellm_proxy_factory(config(fake, cache=True, cache_params={"type": "local"}), name="attacks-cached",
                                        files=files()),
    }
    out = {name: BillingProxy(p.wait_ready(), fake) for name, p in started.items()}
    yield out
    for proxy in out.values():
        proxy.close()


@pytest.fixture(scope="module")
def proxy(proxies) -> BillingProxy:
    return proxies["main"]


# -- the invariant -----------------------------------------------------------------------------------------


def ordinary_bill(fake: BillingProvider, group: str, body: dict[str, Any]) -> float:
    """What the provider bills for ``body`` sent honestly (no attack) to ``group``'s model."""
    model = GROUPS[group].split("/", 1)[1]
    info = fake.price(model)
    if "input_cost_per_character" in info:
        return len(body["input"]) * info["input_cost_per_character"]
    completion = 0 if group == "embed" else fake.completion_tokens(model, body, info)
    return prompt_tokens(model, body) * info["input_cost_per_token"] + completion * info.get("output_cost_per_token", 0)


def assert_cap_holds(attack: str, sent: list[Sent], slack: float) -> None:
    """No 5xx; per request the ledger >= the provider's bill; the user's bill <= cap + one ordinary request."""
    lines = [f"  #{i}: HTTP {s.status}, billed ${s.billed_usd:.6f}, recorded ${s.ledger_usd:.6f}"
             + (f" -- {s.text[:160]!r}" if s.status >= 300 else "") for i, s in enumerate(sent)]
    story = f"{attack}:\n" + "\n".join(lines)
    assert not [s for s in sent if s.status >= 500], f"a 5xx for client input\n{story}"
    assert all(s.status == 200 or 400 <= s.status < 500 for s in sent), story
    unrecorded = [i for i, s in enumerate(sent) if s.ledger_usd < s.billed_usd * (1 - 1e-9) - 1e-12]
    assert not unrecorded, f"billed but not (fully) recorded: requests {unrecorded}\n{story}"
    billed = sum(s.billed_usd for s in sent)
    assert billed <= CAP_USD + slack + 1e-12, (
        f"the provider billed the user ${billed:.6f} against a ${CAP_USD} cap (+ ${slack:.6f} for one ordinary "
        f"request)\n{story}")


def run_attack(proxy: BillingProxy, path: str, make: Callable[[], Any], attempts: int = ATTEMPTS,
               raw: bool = False) -> list[Sent]:
    user = f"a{uuid.uuid4().hex[:8]}"
    out = []
    for _ in range(attempts):
        body = make()
        key = new_key(user=user, label="attack")
        out.append(proxy.send(path, None if raw else body, key, raw=body if raw else None))
    return out


# -- the attacks ---------------------------------------------------------------------------------------------

CHAT = {"model": "chat", "messages": MESSAGES, "max_tokens": MAX_TOKENS}
BIG_MESSAGES = [{"role": "user", "content": WORDS * 4000}]  # ~32k tokens
BIG_FUNCTIONS = [{"name": "lookup", "description": WORDS * 2500,
                  "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}]

#: name -> (path, the attack's body, the group, the same request without the attack)
ATTACKS: dict[str, tuple[str, Callable[[], dict], str, dict]] = {
    "extra_body.max_tokens": ("/v1/chat/completions",
                              lambda: {**CHAT, "max_tokens": 10, "extra_body": {"max_tokens": 16000}}, "chat", CHAT),
    "extra_body.n": ("/v1/chat/completions", lambda: {**CHAT, "max_tokens": 100, "extra_body": {"n": 128}}, "chat",
                     CHAT),
    "extra_body.messages": ("/v1/chat/completions", lambda: {**CHAT, "extra_body": {"messages": BIG_MESSAGES}},
                            "chat", CHAT),
    "extra_body.input on embeddings": ("/v1/embeddings",
                                       lambda: {"model": "embed", "input": "hi",
                                                "extra_body": {"input": [WORDS * 2000] * 40}},
                                       "embed", {"model": "embed", "input": "hi"}),
    "deployment_id on an Azure group": ("/v1/chat/completions",
                                        lambda: {**CHAT, "model": "azure-chat", "max_tokens": 150,
                                                 "deployment_id": "gpt-4o"},
                                        "azure-chat", CHAT),
    "max_tokens 1 + max_completion_tokens 5000 on o-series": (
        "/v1/chat/completions",
        lambda: {**CHAT, "model": "reasoning", "max_tokens": 1, "max_completion_tokens": 5000}, "reasoning", CHAT),
    "a large legacy functions schema": ("/v1/chat/completions", lambda: {**CHAT, "functions": BIG_FUNCTIONS}, "chat",
                                        CHAT),
    "/v1/audio/speech on a per-character model": ("/v1/audio/speech",
                                                  lambda: {"model": "speech", "voice": "alloy", "input": "word " * 800},
                                                  "speech", {"model": "speech", "voice": "alloy", "input": "hello"}),
    "extra_body.stream": ("/v1/chat/completions", lambda: {**CHAT, "max_tokens": 100, "extra_body": {"stream": True}},
                          "chat", CHAT),
}


@pytest.mark.parametrize("path,body,group", [
    ("/v1/chat/completions", CHAT, "chat"),
    ("/v1/embeddings", {"model": "embed", "input": WORDS * 200}, "embed"),
    ("/v1/audio/speech", {"model": "speech", "voice": "alloy", "input": "hello"}, "speech"),
], ids=["chat", "embeddings", "speech"])
def test_the_rig_lets_an_ordinary_user_spend_up_to_the_cap_and_no_further(proxy, fake, path, body, group):
    """The control: the same checks hold for ordinary requests, sent until the cap refuses them, so a
    failure above is the attack's doing, not the rig's."""
    sent = run_attack(proxy, path, lambda: body, attempts=40)
    assert_cap_holds(f"ordinary {group}", sent, ordinary_bill(fake, group, body))
    assert sent[0].status == 200 and sent[-1].status == 429, [s.status for s in sent]


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_the_cap_holds_against(proxy, fake, attack):
    path, make, group, ordinary = ATTACKS[attack]
    sent = run_attack(proxy, path, make)
    assert_cap_holds(attack, sent, ordinary_bill(fake, group, ordinary))


def test_the_cap_holds_against_files_and_batches(proxy, fake):
    """A batch file of 30 gpt-4o-mini requests with 2000 output tokens each, uploaded through the
    proxy's ``/v1/files`` and run by ``/v1/batches`` with the ``chat`` deployment's credentials: no
    Router callback sees it. Governed (reserved and recorded) or refused."""
    user = f"b{uuid.uuid4().hex[:8]}"
    lines = [{"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 2000}} for i in range(30)]
    jsonl = "\n".join(json.dumps(line) for line in lines).encode()
    sent = []
    for _ in range(3):
        key = new_key(user=user, label="batch")
        mark = fake.mark()
        upload = proxy.post("/v1/files", key, files={"file": ("batch.jsonl", jsonl)},
                            data={"purpose": "batch", "model": "chat"})
        statuses = [upload.status_code]
        text = upload.text
        if upload.status_code == 200:
            batch = proxy.post("/v1/batches", key, json={"input_file_id": upload.json()["id"], "model": "chat",
                                                         "endpoint": "/v1/chat/completions",
                                                         "completion_window": "24h"})
            statuses.append(batch.status_code)
            text = batch.text
        bills = fake.bills_since(mark)
        worst = max(statuses, key=lambda s: (s >= 500, s != 200))
        sent.append(Sent("/v1/batches", None, user, worst, text[:300], bills, proxy.key_ledger_usd(key), 0))
    assert_cap_holds("files + batches", sent, ordinary_bill(fake, "chat", CHAT))


def test_a_flood_of_1_mib_metadata_blobs_keeps_the_proxy_memory_flat(proxy, fake):
    """60 requests, each carrying a 1 MiB metadata blob: the proxy keeps no per-request copy (its
    resident memory grows by less than half of what was sent; a kept copy, parsed, is more than all
    of it) and the cap holds. The warm-up is long enough for the allocator's arenas to settle: with
    5 warm-up requests a loaded machine measured 24 MiB of growth that was not kept."""
    blob = "x" * (1 << 20)
    warm = run_attack(proxy, "/v1/chat/completions", lambda: {**CHAT, "metadata": {"blob": blob}}, attempts=15)
    before = proxy.rss_kib
    sent = warm + run_attack(proxy, "/v1/chat/completions", lambda: {**CHAT, "metadata": {"blob": blob}}, attempts=60)
    grown_mib = (proxy.rss_kib - before) / 1024
    assert not [s for s in sent if s.status >= 500], [s.text for s in sent if s.status >= 500][:2]
    assert grown_mib < 30, f"the proxy's VmRSS grew {grown_mib:.0f} MiB over 60 MiB of metadata blobs"
    assert all(s.ledger_usd >= s.billed_usd * (1 - 1e-9) - 1e-12 for s in sent)


def test_a_huge_user_field_does_not_make_huge_ledger_records(proxy):
    """The body's ``user`` (1 MiB): refused, or recorded in a record of bounded size."""
    key = new_key(user=f"h{uuid.uuid4().hex[:8]}", label="huge")
    sent = proxy.send("/v1/chat/completions", {**CHAT, "user": "u" * (1 << 20)}, key)
    assert sent.status == 200 or 400 <= sent.status < 500, (sent.status, sent.text)
    assert sent.ledger_usd >= sent.billed_usd * (1 - 1e-9) - 1e-12
    sizes = [len(json.dumps(r.attrs)) for r in sent.records]
    assert all(size <= 4096 for size in sizes), f"ledger record attrs of {sizes} bytes for a 1 MiB user field"


def test_a_cache_hit_is_charged_nothing(proxies, fake):
    """The second identical request is answered from LiteLLM's cache: the provider is not called, so
    nothing is charged (and nothing is left reserved)."""
    proxy = proxies["cached"]
    body = {**CHAT, "messages": [{"role": "user", "content": f"{TEXT} {uuid.uuid4().hex}"}]}
    user = f"c{uuid.uuid4().hex[:8]}"
    first = proxy.send("/v1/chat/completions", body, new_key(user=user, label="c1"))
    second = proxy.send("/v1/chat/completions", body, new_key(user=user, label="c2"))
    assert (first.status, second.status) == (200, 200), (first.text, second.text)
    assert first.billed_usd > 0 and second.bills == [], "the second request must be a cache hit"
    assert first.ledger_usd >= first.billed_usd * (1 - 1e-9)
    assert second.ledger_usd == 0 and second.open_after == 0, (
        f"a cache hit (provider not called) was charged ${second.ledger_usd:.6f}, {second.open_after} left open")


def test_a_run_id_named_by_another_key_is_not_that_run(proxy):
    """Key A spends in run R; key B (another user) names R: B is refused, or its spend is charged to
    none of the budget buckets of A's run (runs belong to the key that started them)."""
    run = f"run-{uuid.uuid4().hex[:8]}"
    tag = uuid.uuid4().hex[:6]
    a = proxy.send("/v1/chat/completions", {**CHAT, "litellm_session_id": run}, new_key(user=f"ra{tag}", label="runa"))
    b = proxy.send("/v1/chat/completions", {**CHAT, "litellm_session_id": run}, new_key(user=f"rb{tag}", label="runb"))
    assert a.status == 200, a.text
    assert 400 <= b.status < 500 or b.status == 200, (b.status, b.text)
    a_run_buckets = {bucket for r in a.records for bucket in r.buckets if "session" in bucket}
    assert a_run_buckets, f"A's request was charged to no run: {[r.buckets for r in a.records]}"
    b_buckets = {bucket for r in b.records for bucket in r.buckets}
    assert not a_run_buckets & b_buckets, (
        f"key B's spend was charged to key A's run {sorted(a_run_buckets & b_buckets)}: {[r.attrs for r in b.records]}")


def test_extra_body_that_is_not_an_object_is_a_400(proxy):
    sent = proxy.send("/v1/chat/completions", {**CHAT, "extra_body": "text"}, new_key(user="eb", label="eb"))
    assert sent.status == 400, (sent.status, sent.text)
    assert "extra_body" in sent.text
    assert sent.bills == []


# -- what the fuzzer found (tests/test_fuzz_proxy.py); Router-level regressions: tests/test_client_input.py --


def test_a_request_litellm_rejects_after_the_pick_leaves_no_reservation_open(proxy):
    """LiteLLM's proxy answers ``tools: [5, 6]`` on /v1/responses with its own 400 after the plugin's
    pick reserved, and no failure event comes for it: the door releases the reservation at once
    (before, it stayed open until it expired and was then charged in full)."""
    body = {"model": "chat", "input": "hi there", "tools": [5, 6], "max_output_tokens": 16}  # fits the cap
    sent = proxy.send("/v1/responses", body, new_key(user=f"t{uuid.uuid4().hex[:8]}", label="tools"))
    assert 400 <= sent.status < 500, (sent.status, sent.text)
    assert sent.open_after == 0, f"{sent.open_after} reservation(s) left open after HTTP {sent.status}"
    assert sent.ledger_usd >= sent.billed_usd * (1 - 1e-9) - 1e-12


@pytest.mark.parametrize("path,body,field", [
    ("/v1/embeddings", {"model": "embed", "input": "hi", "stream": True}, "stream"),
    ("/v1/embeddings", {"model": "embed", "input": "hi", "litellm_trace_id": True}, "litellm_trace_id"),
    ("/v1/completions", {"model": "chat", "prompt": None, "max_tokens": 5}, "prompt"),
    ("/v1/completions", {"model": "chat", "prompt": "hi", "messages": MESSAGES}, "messages"),
    ("/v1/messages", {"model": "claude", "messages": None, "max_tokens": 5}, "messages"),
    ("/v1/chat/completions", {**CHAT, "num_retries": "3"}, "num_retries"),
    ("/v1/chat/completions", {**CHAT, "timeout": 0.001}, "timeout"),
    ("/v1/chat/completions", {**CHAT, "model": "azure-chat", "response_format": [63, 63]}, "response_format"),
], ids=["embeddings-stream", "trace-id-bool", "prompt-null", "completions-messages", "messages-null",
        "num-retries-text", "tiny-timeout", "azure-response-format-list"])
def test_client_input_litellm_fails_on_is_a_400_before_the_provider(proxy, path, body, field):
    sent = proxy.send(path, body, new_key(user=f"i{uuid.uuid4().hex[:8]}", label="input"))
    assert sent.status == 400 and field in sent.text, (sent.status, sent.text)
    assert sent.bills == [] and sent.open_after == 0


def test_a_tiny_timeout_in_litellms_header_is_a_400(proxy):
    """LiteLLM's proxy copies ``x-litellm-timeout`` into the request's ``timeout``: the same floor."""
    sent = proxy.send("/v1/chat/completions", CHAT, new_key(user=f"h{uuid.uuid4().hex[:8]}", label="hdr"),
                      headers={"x-litellm-timeout": "0.001"})
    assert sent.status == 400 and "timeout" in sent.text, (sent.status, sent.text)
    assert sent.bills == [] and sent.open_after == 0
