"""Responses API and Anthropic ``/v1/messages`` streams are settled when their last event is read,
or when they are dropped unread, like chat streams (``adapter/streams.py``).

Why: LiteLLM charges these streams on its success log, which it hands to a task or to its logging
worker when the stream ends; a script whose event loop ends right after its last stream never runs
it (its reservation stayed open, later charged in full on expiry; without a budget, its record was
lost), and a stream the caller stops reading logs nothing at all.

The deployments stream from the billing fake provider (``billing_provider.py``: LiteLLM's real
OpenAI Responses and Anthropic clients, a real HTTP stream with the provider's usage on its
``response.completed`` / ``message_start`` + ``message_delta`` events). Every charge is checked
against LiteLLM's own cost calculator for the usage the provider sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import subprocess
import sys
import textwrap
import time

import litellm
import pytest
from routing_helpers import attached, success_logs, until as _until  # noqa: F401  (fixture)
from services import fresh_redis_prefix

from billing_provider import BillingProvider
from proxy_fixtures import litellm_proxy_factory  # noqa: F401  (fixture)
from litellm_payg.stores.ledger import open_ledger

RESPONSES_MODEL = "openai/gpt-4o-mini"
MESSAGES_MODEL = "anthropic/claude-haiku-4-5"
FAMILIES = ("responses", "messages")
CALLS = 2  # sequential stream calls, then as many concurrent ones, then the script ends
MAX_TOKENS = 24
BUDGET = [{"scope": "global", "window": "day", "limit_usd": 10}]


def _model_list(fake: BillingProvider) -> list[dict]:
    return [
        {"model_name": "responses", "litellm_params": {"model": RESPONSES_MODEL, "api_key": "sk-test",
                                                       "api_base": fake.url}, "model_info": {"id": "resp-dep"}},
        {"model_name": "messages", "litellm_params": {"model": MESSAGES_MODEL, "api_key": "sk-test",
                                                      "api_base": fake.origin}, "model_info": {"id": "msg-dep"}},
        # /v1/messages to an OpenAI model: LiteLLM bridges it to OpenAI's Responses API and streams
        # Anthropic events back, the input tokens in message_delta (message_start says 0)
        {"model_name": "messages-bridged", "litellm_params": {"model": RESPONSES_MODEL, "api_key": "sk-test",
                                                              "api_base": fake.url}, "model_info": {"id": "bridge-dep"}},
    ]


def _policy(ledger: str, budget: bool) -> dict:
    return {"version": 1, "ledger": ledger, **({"budgets": BUDGET} if budget else {})}


def _litellm_cost(bill) -> float:
    """LiteLLM's cost calculator for the usage the provider sent (and billed)."""
    model = {"gpt-4o-mini": RESPONSES_MODEL, "claude-haiku-4-5": MESSAGES_MODEL}[bill.model]
    prompt_usd, completion_usd = litellm.cost_per_token(model=model, prompt_tokens=bill.prompt_tokens,
                                                        completion_tokens=bill.completion_tokens)
    return prompt_usd + completion_usd


SCRIPT = """
import asyncio
import litellm_payg
from litellm import Router

model_list, calls, max_tokens = {model_list!r}, {calls!r}, {max_tokens!r}

def last(family, event):
    if family == "responses":
        return getattr(event, "type", None) == "response.completed"
    return b"message_stop" in event

def run(family, policy, stop_at_last):
    router = Router(model_list=model_list)
    litellm_payg.attach(router, policy)

    async def ask(i):
        if family == "responses":
            stream = await router.aresponses(model="responses", input=f"question {{i}}", max_output_tokens=max_tokens,
                                             stream=True)
        else:
            stream = await router.aanthropic_messages(model="messages", max_tokens=max_tokens, stream=True,
                                                      messages=[{{"role": "user", "content": f"question {{i}}"}}])
        async for event in stream:  # read to the end, or to the last event (as SDKs that stop there do)
            if stop_at_last and last(family, event):
                break

    async def main():
        for i in range(calls):
            await ask(i)
        await asyncio.gather(*(ask(calls + i) for i in range(calls)))

    asyncio.run(main())  # the event loop ends with the last event read: LiteLLM's logging with it

for family, policy, stop_at_last in {variants!r}:
    run(family, policy, stop_at_last)
# the script ends here: no detach, no sleep, nothing waits for LiteLLM's logging
"""

#: (family, budget, stop at the last event instead of reading on to the stream's end)
VARIANTS = [(family, budget, stop) for family in FAMILIES for budget in (False, True) for stop in (False, True)]


def _run_script(fake: BillingProvider, urls: list[str]) -> None:
    variants = [(family, _policy(url, budget), stop) for url, (family, budget, stop) in zip(urls, VARIANTS)]
    script = SCRIPT.format(model_list=_model_list(fake), calls=CALLS, max_tokens=MAX_TOKENS, variants=variants)
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], timeout=300, capture_output=True, text=True,
                          env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"})
    assert done.returncode == 0, done.stderr[-3000:]


def _problems(fake: BillingProvider, urls: list[str]) -> list[str]:
    bills = fake.bills
    per_variant = 2 * CALLS
    assert len(bills) == per_variant * len(VARIANTS), f"the premise: {len(bills)} streams billed"
    problems = []
    for i, (url, (family, budget, stop)) in enumerate(zip(urls, VARIANTS)):
        ledger = open_ledger(url)
        try:
            records, still_open = ledger.records(), ledger.open_reservations()
        finally:
            ledger.close()
        what = f"{family} budget={budget} stop_at_last_event={stop}"
        billed = sorted(_litellm_cost(b) for b in bills[i * per_variant:(i + 1) * per_variant])
        if still_open:
            problems.append(f"{what}: {still_open} reservation(s) left open")
        if len(records) != per_variant:
            problems.append(f"{what}: {len(records)} records for {per_variant} streams")
            continue
        charged = sorted(r.amount_usd for r in records)
        if any(abs(c - b) > 1e-12 + 1e-9 * b for c, b in zip(charged, billed)):
            problems.append(f"{what}: charged {charged}, LiteLLM's cost of what was billed {billed}")
        if any(r.attrs.get("kind") != "settled" or "usage" in r.attrs or "abandoned" in r.attrs for r in records):
            problems.append(f"{what}: {[r.attrs for r in records]}")
    return problems


def test_streams_read_to_the_end_then_exit_leave_every_record_and_nothing_open_sqlite(tmp_path):
    """Without the plugin settling them, the Anthropic variants lose records and leave reservations
    open. The Responses variants hold on LiteLLM 1.110.2 either way (its iterator awaits its own
    success log when the stream ends); what the plugin adds there is checked in process below
    (settled as ``response.completed`` is read, and dropped streams)."""
    urls = [f"sqlite:///{tmp_path}/ledger-{i}.db" for i in range(len(VARIANTS))]
    with BillingProvider(default_output_tokens=MAX_TOKENS, stream_deltas=4) as fake:
        _run_script(fake, urls)
        problems = _problems(fake, urls)
    assert not problems, problems


def test_streams_read_to_the_end_then_exit_leave_every_record_and_nothing_open_redis():
    with contextlib.ExitStack() as stack, BillingProvider(default_output_tokens=MAX_TOKENS, stream_deltas=4) as fake:
        urls = [stack.enter_context(fresh_redis_prefix()) for _ in VARIANTS]
        _run_script(fake, urls)
        problems = _problems(fake, urls)
    assert not problems, problems


# -- in process ------------------------------------------------------------------------------------------


async def _open_stream(router, family: str, max_tokens: int = MAX_TOKENS):
    if family == "responses":
        return await router.aresponses(model="responses", input="tell me", max_output_tokens=max_tokens, stream=True)
    return await router.aanthropic_messages(model=family, max_tokens=max_tokens, stream=True,
                                            messages=[{"role": "user", "content": "tell me"}])


def _is_last(family: str, event) -> bool:
    if family == "responses":
        return getattr(event, "type", None) == "response.completed"
    return b"message_stop" in event


@pytest.mark.parametrize("family", FAMILIES + ("messages-bridged",))
async def test_a_stream_is_settled_as_its_last_event_is_read_and_the_late_success_log_charges_nothing(
        tmp_path, success_logs, family):
    with BillingProvider(default_output_tokens=MAX_TOKENS, stream_deltas=4) as fake:
        with attached(_model_list(fake), _policy(f"sqlite:///{tmp_path}/ledger.db", True)) as (router, engine):
            stream = await _open_stream(router, family)
            assert engine.spend.ledger.open_reservations() == 1  # in flight while it is read
            async for event in stream:
                if _is_last(family, event):
                    # settled as the last event reached the caller, before it read on
                    assert engine.spend.ledger.open_reservations() == 0 and engine.spend.in_flight == 0
                    break
            else:
                pytest.fail("the stream had no last event")
            async for _ in stream:
                pass
            # the object is the one LiteLLM returned, of a subclass of its own class (the proxy checks isinstance)
            assert type(stream).__module__.startswith("litellm.") and type(stream).__mro__[2].__name__ == type(stream).__name__
            (bill,) = fake.bills
            (record,) = engine.spend.ledger.records()
            assert record.amount_usd == pytest.approx(_litellm_cost(bill), rel=1e-9) and record.amount_usd > 0
            assert "usage" not in record.attrs and "abandoned" not in record.attrs
            assert await _until(lambda: success_logs.seen >= 1), "LiteLLM's success log never ran"
            await asyncio.sleep(0.3)  # our own callback runs in the same dispatch as the counter above
            assert len(engine.spend.ledger.records()) == 1 and engine.spend.ledger.open_reservations() == 0
            assert engine.spend.ledger.records()[0].amount_usd == record.amount_usd


@pytest.mark.parametrize("family", FAMILIES)
async def test_a_stream_dropped_before_its_end_is_charged_what_was_streamed_marked_abandoned(tmp_path, caplog, family):
    long = 400
    # slow enough that LiteLLM, which reads ahead of its caller, has not read the provider's end when it is dropped
    with BillingProvider(default_output_tokens=long, stream_deltas=40, stream_pause_s=0.2) as fake:
        with attached(_model_list(fake), _policy(f"sqlite:///{tmp_path}/ledger.db", True)) as (router, engine):
            stream = await _open_stream(router, family, max_tokens=long)
            read = 0
            async for event in stream:
                read += 1
                if read == 4:
                    break
            del stream, event
            gc.collect()
            assert engine.spend.ledger.open_reservations() == 0
            (record,) = engine.spend.ledger.records()
            (bill,) = fake.bills
    assert record.attrs.get("abandoned") == "stream_dropped" and record.attrs.get("usage") == "estimated", record.attrs
    model = RESPONSES_MODEL if family == "responses" else MESSAGES_MODEL
    floor = litellm.cost_per_token(model=model, prompt_tokens=bill.prompt_tokens, completion_tokens=0)[0]
    assert floor < record.amount_usd < _litellm_cost(bill)  # the prompt and some of the answer, not all of it
    assert "dropped before its end" in caplog.text


DROPPED_AT_EXIT = """
import asyncio
import litellm_payg
from litellm import Router

router = Router(model_list={model_list!r})
engine = litellm_payg.attach(router, {policy!r})
kept = []

async def main():
    if {family!r} == "responses":
        stream = await router.aresponses(model="responses", input="hi", max_output_tokens=400, stream=True)
    else:
        stream = await router.aanthropic_messages(model="messages", max_tokens=400, stream=True,
                                                  messages=[{{"role": "user", "content": "hi"}}])
    async for _ in stream:
        break  # one event read, and the stream kept (unread) until the interpreter ends
    kept.append(stream)

asyncio.run(main())
"""


@pytest.mark.parametrize("family", FAMILIES)
def test_a_stream_still_unread_at_exit_is_recorded_as_dropped(tmp_path, family):
    url = f"sqlite:///{tmp_path}/ledger.db"
    # slow enough that LiteLLM, which reads ahead of its caller, has not read the provider's end by exit
    with BillingProvider(default_output_tokens=400, stream_deltas=40, stream_pause_s=0.2) as fake:
        script = DROPPED_AT_EXIT.format(model_list=_model_list(fake), policy=_policy(url, False), family=family)
        done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], timeout=180, capture_output=True,
                              text=True, env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"})
    assert done.returncode == 0, done.stderr[-3000:]
    with open_ledger(url) as ledger:
        (record,) = ledger.records()
        assert ledger.open_reservations() == 0
    assert record.attrs.get("abandoned") == "stream_dropped" and record.amount_usd > 0


# -- through a real proxy -------------------------------------------------------------------------------


PROXY_POLICY = {"version": 1, "ledger": "sqlite:///payg-ledger.db",
                "budgets": [{"scope": "global", "window": "day", "limit_usd": 10}]}


@pytest.fixture(scope="module")
def billing_proxy(litellm_proxy_factory):  # noqa: F811
    import yaml
    from trust_helpers import LedgerView

    with BillingProvider(default_output_tokens=MAX_TOKENS, stream_deltas=4) as fake:
        config = {"model_list": _model_list(fake), "litellm_settings": {"callbacks": ["litellm_payg.proxy_handler"]}}
        running = litellm_proxy_factory(config, name="streams", files={"payg-policy.yaml": yaml.safe_dump(PROXY_POLICY)})
        running.wait_ready()
        view = LedgerView(running.workdir)
        try:
            yield running, fake, view
        finally:
            view.close()


@pytest.mark.parametrize("family", FAMILIES)
def test_a_proxy_stream_is_recorded_once_at_its_exact_cost(billing_proxy, family):
    """``/v1/responses`` and ``/v1/messages`` streams through LiteLLM's proxy: one record each, at
    LiteLLM's cost of the usage the provider sent, on the books when the client has the last event,
    and LiteLLM's later success log charges nothing more (the proxy keeps running: its logging
    worker runs)."""
    import httpx

    running, fake, ledger = billing_proxy
    mark, before = fake.mark(), len(ledger.records())
    if family == "responses":
        path, body = "/v1/responses", {"model": "responses", "input": "tell me", "max_output_tokens": MAX_TOKENS,
                                       "stream": True}
    else:
        path, body = "/v1/messages", {"model": "messages", "max_tokens": MAX_TOKENS, "stream": True,
                                      "messages": [{"role": "user", "content": "tell me"}]}
    with httpx.Client(base_url=running.base_url, timeout=60, trust_env=False) as client:
        with client.stream("POST", path, json=body, headers={"Authorization": f"Bearer {running.master_key}"}) as resp:
            assert resp.status_code == 200, resp.read()
            text = "".join(resp.iter_text())
    assert ("response.completed" if family == "responses" else "message_stop") in text
    (bill,) = fake.bills_since(mark)
    # settled as the proxy read the last event, before it sent it on: on the books when the client has it
    assert len(ledger.records()) == before + 1 and ledger.open() == 0, (len(ledger.records()) - before, ledger.open())
    time.sleep(2.0)  # LiteLLM's success log for the stream has run on the proxy's logging worker by now
    records = ledger.records()[before:]
    assert len(records) == 1, [(r.amount_usd, r.attrs) for r in records]
    assert records[0].amount_usd == pytest.approx(_litellm_cost(bill), rel=1e-9) and records[0].amount_usd > 0
    assert "usage" not in records[0].attrs and "abandoned" not in records[0].attrs
    assert ledger.left_open_since(0, timeout=3) == 0

