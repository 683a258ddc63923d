"""An answer is settled where it is in hand, not on LiteLLM's logging worker.

LiteLLM logs a success on a background worker (a task, for a stream) after the caller already has
the answer; a script whose event loop ends right after its last call never runs it. Settled only
there, the README's usage (three ``acompletion`` calls, then the script ends) left the last
request's reservation open in the ledger (later charged in full on expiry) and, without a budget,
lost answers' records; an agent's finished requests counted as in flight at their full
reservation. These tests run a real Router with ``mock_response`` deployments, the real ledgers
(SQLite file, Redis) and LiteLLM's real cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import subprocess
import sys
import textwrap

import litellm
import pytest
from routing_helpers import Recorder, attached, deployment, success_logs, until as _until  # noqa: F401  (fixture)
from services import fresh_redis_prefix

import litellm_payg
from litellm_payg.stores.ledger import open_ledger

MODEL = "openai/gpt-4o-mini"
ANSWER = "a short answer to that question, in a few words"
BUDGET = [{"scope": "global", "window": "day", "limit_usd": 10}]
CALLS = 4  # sequential calls, then as many concurrent ones, then the script ends


def _policy(ledger: str, budget: bool) -> dict:
    return {"version": 1, "ledger": ledger, **({"budgets": BUDGET} if budget else {})}


def _deployments(n: int = 2) -> list[dict]:
    return [deployment("chat", MODEL, f"d{i}", ANSWER) for i in range(n)]


SCRIPT = """
import asyncio, sys
import litellm_payg
from litellm import Router

deployments, calls = {deployments!r}, {calls!r}

def run(policy, stream, detach):
    router = Router(model_list=deployments)
    engine = litellm_payg.attach(router, policy)

    async def ask(i):
        r = await router.acompletion(model="chat", messages=[{{"role": "user", "content": f"question {{i}}"}}], stream=stream)
        if stream:
            async for _ in r:
                pass

    async def main():
        for i in range(calls):
            await ask(i)
        await asyncio.gather(*(ask(calls + i) for i in range(calls)))

    asyncio.run(main())  # the event loop ends with the last answer: LiteLLM's logging worker with it
    if detach:
        engine.detach()

for policy, stream, detach in {variants!r}:
    run(policy, stream, detach)
# the script ends here: nothing waits for LiteLLM's logging worker
"""

VARIANTS = [  # (budget, stream, detach)
    (False, False, False), (False, False, True), (True, False, False), (True, False, True),
    (False, True, False), (True, True, True),
]


def _run_script(urls: list[str]) -> None:
    """One interpreter for all the variants (each ends its own event loop; the last also ends the
    interpreter), each variant with a ledger of its own."""
    variants = [(_policy(url, budget), stream, detach) for url, (budget, stream, detach) in zip(urls, VARIANTS)]
    script = SCRIPT.format(deployments=_deployments(), calls=CALLS, variants=variants)
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], env=env, timeout=300,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]


def _settled_or_why(url: str, variant: tuple[bool, bool, bool]) -> str | None:
    ledger = open_ledger(url)
    try:
        records, still_open = ledger.records(), ledger.open_reservations()
    finally:
        ledger.close()
    budget, stream, detach = variant
    what = f"budget={budget} stream={stream} detach={detach}"
    if still_open:
        return f"{what}: {still_open} reservation(s) left open"
    if len(records) != 2 * CALLS:
        return f"{what}: {len(records)} records for {2 * CALLS} answers"
    if not all(r.amount_usd > 0 and r.attrs.get("kind") == "settled" for r in records):
        return f"{what}: {[(r.amount_usd, r.attrs) for r in records]}"
    return None


def test_a_script_that_exits_at_once_leaves_every_answer_recorded_and_nothing_open_sqlite(tmp_path):
    urls = [f"sqlite:///{tmp_path}/ledger-{i}.db" for i in range(len(VARIANTS))]
    _run_script(urls)
    problems = [p for p in map(_settled_or_why, urls, VARIANTS) if p]
    assert not problems, problems


def test_a_script_that_exits_at_once_leaves_every_answer_recorded_and_nothing_open_redis():
    with contextlib.ExitStack() as stack:
        urls = [stack.enter_context(fresh_redis_prefix()) for _ in VARIANTS]
        _run_script(urls)
        problems = [p for p in map(_settled_or_why, urls, VARIANTS) if p]
        assert not problems, problems


# -- in process: settled before the caller resumes ---------------------------------------------------


def _attached(tmp_path, budget: bool = True, **router_kwargs):
    return attached(_deployments(), _policy(f"sqlite:///{tmp_path}/ledger.db", budget), **router_kwargs)


@pytest.mark.parametrize("budget", [True, False])
async def test_an_answer_is_settled_when_acompletion_returns(tmp_path, budget):
    with _attached(tmp_path, budget) as (router, engine):
        response = await router.acompletion(model="chat", messages=[{"role": "user", "content": "hi"}])
        # no await since: LiteLLM's logging worker has not run
        ledger = engine.spend.ledger
        assert ledger.open_reservations() == 0 and engine.spend.in_flight == 0
        (record,) = ledger.records()
        assert record.amount_usd == pytest.approx(litellm.completion_cost(response), rel=1e-9)
        assert record.attrs["deployment"] == response._hidden_params["model_id"]


async def test_a_stream_is_settled_when_its_last_chunk_is_read(tmp_path):
    with _attached(tmp_path) as (router, engine):
        stream = await router.acompletion(model="chat", messages=[{"role": "user", "content": "hi"}], stream=True)
        assert engine.spend.ledger.open_reservations() == 1  # in flight while it is read
        chunks = [chunk async for chunk in stream]
        assert engine.spend.ledger.open_reservations() == 0 and engine.spend.in_flight == 0
        (record,) = engine.spend.ledger.records()
        built = litellm.stream_chunk_builder(chunks, messages=[{"role": "user", "content": "hi"}])
        assert record.amount_usd == pytest.approx(litellm.completion_cost(built), rel=1e-9) and record.amount_usd > 0
        assert "usage" not in record.attrs and "abandoned" not in record.attrs


async def test_the_late_success_log_does_not_charge_again(tmp_path, success_logs):
    engine_outcomes = Recorder()
    with _attached(tmp_path) as (router, engine):
        engine.pm.register(engine_outcomes)
        response = await router.acompletion(model="chat", messages=[{"role": "user", "content": "hi"}])
        stream = await router.acompletion(model="chat", messages=[{"role": "user", "content": "hey"}], stream=True)
        async for _ in stream:
            pass
        assert await _until(lambda: success_logs.seen >= 2), "LiteLLM's success logs never ran"
        await asyncio.sleep(0.2)  # our own callback runs in the same dispatch as the counter above
        records = engine.spend.ledger.records()
        assert len(records) == 2
        assert records[0].amount_usd == pytest.approx(litellm.completion_cost(response), rel=1e-9)
        assert engine.spend.ledger.open_reservations() == 0
        # the payg_outcome observers hear of each attempt once, with its latency
        assert [o.ok for o in engine_outcomes.outcomes] == [True, True]
        assert all(o.latency_s is not None for o in engine_outcomes.outcomes)


async def test_a_stream_dropped_before_its_end_is_charged_what_was_streamed_marked_abandoned(tmp_path, caplog):
    long_answer = " ".join(f"word{i}" for i in range(200))
    with attached([deployment("chat", MODEL, "d0", long_answer)],
                  _policy(f"sqlite:///{tmp_path}/ledger.db", True)) as (router, engine):
        stream = await router.acompletion(model="chat", messages=[{"role": "user", "content": "hi"}], stream=True,
                                          max_tokens=1000)
        read = 0
        async for _ in stream:
            read += 1
            if read == 3:
                break
        del stream
        gc.collect()
        assert engine.spend.ledger.open_reservations() == 0
        (record,) = engine.spend.ledger.records()
        assert record.attrs.get("abandoned") == "stream_dropped" and record.attrs.get("usage") == "estimated"
        prompt = litellm.token_counter(model=MODEL, messages=[{"role": "user", "content": "hi"}])
        floor = litellm.cost_per_token(model=MODEL, prompt_tokens=prompt, completion_tokens=0)[0]
        full = litellm.completion_cost(model=MODEL, prompt="hi", completion=long_answer)
        assert floor < record.amount_usd < full  # the prompt and three chunks, not the whole answer
        assert "dropped before its end" in caplog.text


# -- cache hits (issue #19 item 6) ---------------------------------------------------------------------


@pytest.fixture
def local_cache():
    previous = litellm.cache
    litellm.cache = litellm.Cache(type="local")
    try:
        yield
    finally:
        litellm.cache = previous


@pytest.mark.parametrize("stream", [False, True])
async def test_a_cache_hit_is_charged_nothing_and_marked(tmp_path, local_cache, success_logs, stream):
    messages = [{"role": "user", "content": f"cache me {stream}"}]
    with _attached(tmp_path, cache_responses=True) as (router, engine):
        async def ask():
            r = await router.acompletion(model="chat", messages=messages, stream=stream)
            if stream:
                async for _ in r:
                    pass
            return r

        first = await ask()
        assert await _until(lambda: success_logs.seen >= 1)  # LiteLLM stores the answer in its cache then
        await asyncio.sleep(0.2)
        second = await ask()
        if not stream:
            assert second._hidden_params.get("cache_hit") is True, "the premise: LiteLLM served it from its cache"
        else:
            assert second.custom_llm_provider == "cached_response", "the premise: LiteLLM replayed it from its cache"
        assert engine.spend.ledger.open_reservations() == 0  # settled before the caller resumed
        assert await _until(lambda: success_logs.seen >= 2)
        await asyncio.sleep(0.2)
        paid, hit = engine.spend.ledger.records()
        assert paid.amount_usd > 0 and "cache_hit" not in paid.attrs
        assert hit.amount_usd == 0 and hit.attrs.get("cache_hit") == "true"
        assert engine.spend.ledger.open_reservations() == 0
        del first


DROPPED_AT_EXIT = """
import asyncio
import litellm_payg
from litellm import Router

router = Router(model_list={deployments!r})
engine = litellm_payg.attach(router, {policy!r})
kept = []

async def main():
    stream = await router.acompletion(model="chat", messages=[{{"role": "user", "content": "hi"}}], stream=True)
    async for _ in stream:
        break  # one chunk read, and the stream kept (unread) until the interpreter ends
    kept.append(stream)

asyncio.run(main())
"""


@pytest.mark.parametrize("budget", [False, True])
def test_a_stream_still_unread_at_exit_is_recorded_as_dropped(tmp_path, budget):
    """Its record is written even without a budget (a batched record): the exit hook that settles
    it writes what waits itself, whichever exit hook of the ledger ran first."""
    url = f"sqlite:///{tmp_path}/ledger.db"
    script = DROPPED_AT_EXIT.format(deployments=_deployments(1), policy=_policy(url, budget))
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], timeout=180, capture_output=True, text=True,
                          env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"})
    assert done.returncode == 0, done.stderr[-3000:]
    with open_ledger(url) as ledger:
        (record,) = ledger.records()
        assert ledger.open_reservations() == 0
    assert record.attrs.get("abandoned") == "stream_dropped" and record.amount_usd > 0


async def test_each_attempt_of_a_retried_request_is_settled_before_acompletion_returns(standin, tmp_path):
    """Why per attempt (the deployment hook) and not in the door: the door sees only the final
    answer. Here DeepSeek's answer is empty (billed, then rejected by the validators) and Mistral
    answers on the retry; both attempts are settled, each on its deployment, before the caller
    resumes, and the observers hear of each attempt once."""
    standin.fail("deepseek", "empty")
    model_list = [
        {"model_name": "chat", "litellm_params": {"model": "deepseek/deepseek-chat", "api_key": "sk-test",
                                                  "api_base": standin.url("deepseek")}, "model_info": {"id": "ds"}},
        {"model_name": "chat", "litellm_params": {"model": "mistral/mistral-large-latest", "api_key": "sk-test",
                                                  "api_base": standin.url("mistral")}, "model_info": {"id": "ml"}},
    ]
    policy = {**_policy(f"sqlite:///{tmp_path}/ledger.db", True), "validate": ["non_empty"],
              "routes": {"chat": [{"cost_threshold": {"use": "deepseek/deepseek-chat", "max_usd_per_1k_tokens": 0.0015,
                                                      "otherwise": "mistral/mistral-large-latest"}}]},
              "failover": {}}
    seen = Recorder()
    with attached(model_list, policy, num_retries=2, retry_after=0, disable_cooldowns=True) as (router, engine):
        engine.pm.register(seen)
        response = await router.acompletion(model="chat", messages=[{"role": "user", "content": "hi"}])
        assert engine.spend.ledger.open_reservations() == 0 and engine.spend.in_flight == 0
        charged = {r.attrs["deployment"]: r.amount_usd for r in engine.spend.ledger.records()}
    assert response._hidden_params["model_id"] == "ml"
    assert set(charged) == {"ds", "ml"} and charged["ds"] > 0 and charged["ml"] > 0
    assert [(o.deployment_id, o.ok) for o in seen.outcomes] == [("ds", False), ("ml", True)]
