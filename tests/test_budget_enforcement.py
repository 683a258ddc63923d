"""Budgets through LiteLLM's real Router: reserve before the call, settle after, never overshoot."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from routing_helpers import DEEPSEEK, MISTRAL, attached, deployment, served_by, settled
from services import BACKENDS
from services import redis_url as _redis_url

import litellm_payg
from litellm_payg.tools.budget_status import budget_rows
from litellm_payg.stores.ledger import open_ledger
from litellm_payg.policy.load import load_policy
from litellm_payg.stores.prices import count_prompt_tokens
from litellm_payg.adapter.litellm_errors import BudgetExceeded
from litellm_payg.core.errors import BudgetRefused  # what the runtime raises; BudgetExceeded is its LiteLLM face

ROOT = Path(__file__).resolve().parents[1]
# LiteLLM's mock usage is 10 prompt + 20 completion tokens; with >= 10 counted prompt tokens and
# max_tokens=20 the reservation is never below the real cost, as the design requires.
MESSAGES = [{"role": "user", "content": "Please tell me what the status of my order number 12345 is today."}]
MOCK_COST = 10 * 2.8e-07 + 20 * 4.2e-07  # deepseek-chat, LiteLLM's bundled price


def _policy(budgets, ledger="memory://", **extra):
    return {"version": 1, "ledger": ledger, "budgets": budgets, "routes": {"chat": [{"quality_floor": {"min_quality": 0}}]},
            "models": {DEEPSEEK: {"quality": 1}, MISTRAL: {"quality": 1}}, **extra}




def _settled_usd(engine) -> float:
    return sum(r.amount_usd for r in engine.spend.ledger.records())


async def _burst(router, n):
    async def one():
        try:
            await router.acompletion(model="chat", messages=MESSAGES, max_tokens=20)
            return "ok"
        except BudgetExceeded:
            return "blocked"

    return await asyncio.gather(*(one() for _ in range(n)))


@pytest.mark.parametrize("backend", BACKENDS)
async def test_500_concurrent_requests_never_overshoot_and_leave_nothing_reserved(backend, tmp_path):
    ledger = {"memory": "memory://", "sqlite": f"sqlite:///{tmp_path}/ledger.db", "redis": None}[backend]
    if backend == "redis":
        ledger = _redis_url()
    cap = 0.004  # room for a few hundred of the 500 requests
    policy = _policy([{"scope": "global", "window": "day", "limit_usd": cap, "on_exceed": "block"}], ledger)
    model_list = [deployment("chat", DEEPSEEK, "ds")]
    with attached(model_list, policy) as (router, engine):
        results = await _burst(router, 500)
        await settled(engine)
        served = results.count("ok")
        settled_usd = _settled_usd(engine)
        assert settled_usd <= cap + 1e-12
        assert served > 0 and results.count("blocked") > 0
        assert settled_usd == pytest.approx(served * MOCK_COST, abs=1e-12)
        # no phantom blocks: after the burst, requests keep being served until the cap is within
        # one request's estimate
        while True:
            try:
                await router.acompletion(model="chat", messages=MESSAGES, max_tokens=20)
            except BudgetExceeded as exc:
                assert exc.limit_usd - exc.spent_usd - exc.reserved_usd < exc.estimate_usd
                assert exc.reserved_usd == 0
                break
            await settled(engine)
        await settled(engine)
        assert _settled_usd(engine) <= cap + 1e-12
        assert engine.spend.ledger.open_reservations() == 0


async def test_block_names_the_budget_and_is_not_bypassed_by_fallbacks():
    policy = _policy([{"name": "team-daily", "scope": "team:*", "window": "day", "limit_usd": 0.00001, "on_exceed": "block"}])
    model_list = [deployment("chat", DEEPSEEK, "ds"), deployment("premium", MISTRAL, "ml")]
    with attached(model_list, policy, fallbacks=[{"chat": ["premium"]}]) as (router, engine):
        with pytest.raises(BudgetExceeded) as info:
            await router.acompletion(model="chat", messages=MESSAGES, max_tokens=20, metadata={"team": "support"})
    exc = info.value
    assert exc.status_code == 429 and exc.budget == "team-daily" and exc.scope == "team:support"
    assert "budget 'team-daily' (team:support, day) exceeded" in str(exc) and "resets at" in str(exc)
    import litellm

    assert isinstance(exc, litellm.BudgetExceededError)


async def test_downgrade_moves_traffic_off_an_exhausted_provider():
    policy = _policy([{"name": "deepseek-daily", "scope": "provider:deepseek", "window": "day", "limit_usd": 3 * MOCK_COST + 1e-9, "on_exceed": "downgrade"}])
    policy["routes"] = {"chat": [{"cost_threshold": {"use": DEEPSEEK, "max_usd_per_1k_tokens": 0.01, "otherwise": MISTRAL}}]}
    with attached([deployment("chat", DEEPSEEK, "ds"), deployment("chat", MISTRAL, "ml")], policy) as (router, engine):
        served = []
        for _ in range(6):
            metadata: dict = {}
            served.append(served_by(await router.acompletion(model="chat", messages=MESSAGES, max_tokens=20, metadata=metadata)))
            await settled(engine)
        assert served[0] == "ds" and served[-1] == "ml"
        assert "ml" in served and served.index("ml") >= 2
        assert any("budget 'deepseek-daily' (provider:deepseek, day) exhausted" in d["reason"] for d in metadata["payg_decision"]["dropped"])


class AlertRecorder:
    def __init__(self):
        self.alerts = []

    @litellm_payg.hookimpl
    def payg_budget_alert(self, budget, scope, threshold, spent_usd, limit_usd, resets_at):
        self.alerts.append((budget.name, scope, threshold))


async def test_alert_fires_exactly_once_per_threshold_per_window():
    policy = _policy([{"name": "watch", "scope": "global", "window": "day", "limit_usd": 10 * MOCK_COST, "on_exceed": "alert", "alert_at": [0.5, 0.8]}])
    with attached([deployment("chat", DEEPSEEK, "ds")], policy) as (router, engine):
        recorder = AlertRecorder()
        engine.pm.register(recorder)
        for _ in range(14):
            await router.acompletion(model="chat", messages=MESSAGES, max_tokens=20)  # alert never blocks
            await settled(engine)
    assert recorder.alerts == [("watch", "global", 0.5), ("watch", "global", 0.8), ("watch", "global", 1.0)]


def test_day_and_month_windows_roll_over_at_local_midnight():
    """A fake clock drives the engine: spend just before local midnight, a fresh window just after."""
    from litellm_payg.core.decision import RouteRequest
    from litellm_payg.runtime.engine import Engine
    from litellm_payg.policy.load import load_policy
    from litellm_payg.stores.prices import candidate_from_deployment

    tz = ZoneInfo("America/New_York")
    policy = load_policy(_policy([
        {"name": "daily", "scope": "global", "window": "day", "limit_usd": 1.5 * MOCK_COST},
        {"name": "monthly", "scope": "global", "window": "month", "limit_usd": 2.5 * MOCK_COST},
    ], timezone="America/New_York"))
    now = [datetime(2026, 11, 30, 23, 59, 0, tzinfo=tz).timestamp()]
    engine = Engine(policy, ledger="memory://", clock=lambda: now[0])
    candidate = candidate_from_deployment(deployment("chat", DEEPSEEK, "ds"), policy.models)
    request = RouteRequest("chat", 10, 20, max_tokens=20)

    def call(tag):
        admission = engine.spend.admit(request, [candidate], tag)
        engine.spend.settle(tag, MOCK_COST)
        return admission

    call("a")
    with pytest.raises(BudgetRefused) as info:
        call("b")
    assert info.value.budget == "daily"
    assert info.value.resets_at == datetime(2026, 12, 1, 0, 0, tzinfo=tz)
    now[0] = datetime(2026, 12, 1, 0, 0, 0, tzinfo=tz).timestamp()  # local midnight, 05:00 UTC: new day AND month
    call("c")
    call_time = datetime(2026, 12, 1, 4, 59, 59, tzinfo=ZoneInfo("UTC")).timestamp()  # still Nov 30 in New York
    now[0] = call_time
    with pytest.raises(BudgetRefused) as info:
        call("d")
    assert info.value.budget == "daily"


def test_identity_in_the_proxy_comes_from_the_key_not_the_client():
    from litellm_payg.wire.identity import identity_of

    proxy_md = {"user_api_key_hash": "hash-1", "user_api_key_user_id": "alice", "user_api_key_team_id": "t1", "user": "mallory"}
    who = identity_of({"user": "mallory"}, proxy_md)
    assert (who.user, who.team, who.api_key, who.end_user) == ("alice", "t1", "hash-1", "mallory")
    # a key without a user: the body's `user` is the client's end user, never the key's user
    keyless = identity_of({"user": "mallory"}, {"user_api_key_hash": "hash-2"})
    assert (keyless.user, keyless.end_user) == (None, "mallory")
    # the SDK: the calling code's metadata names the user; `user=` is the end user there too
    sdk = identity_of({"user": "bob"}, {"team": "t2", "user": "alice"})
    assert (sdk.user, sdk.team, sdk.end_user) == ("alice", "t2", "bob")


# -- several processes, restarts, a ledger that goes away -----------------------------------------

WORKER = textwrap.dedent(
    """
    import asyncio, json, sys
    sys.path.insert(0, {tests!r})
    import litellm_payg
    from litellm_payg.adapter.litellm_errors import BudgetExceeded
    from routing_helpers import deployment, DEEPSEEK
    policy = json.loads(sys.argv[1])
    async def main():
        from litellm import Router
        router = Router(model_list=[deployment("chat", DEEPSEEK, "ds", mock_delay=float(sys.argv[3]))])
        engine = litellm_payg.attach(router, policy)
        print("ready", flush=True)
        async def one():
            try:
                await router.acompletion(model="chat", messages={messages!r}, max_tokens=20)
                return 1
            except BudgetExceeded:
                return 0
        results = await asyncio.gather(*(one() for _ in range(int(sys.argv[2]))))
        for _ in range(200):
            if engine.spend.ledger.open_reservations() == 0:
                break
            await asyncio.sleep(0.05)
        print(json.dumps({{"served": sum(results)}}), flush=True)
    asyncio.run(main())
    """
).format(tests=str(ROOT / "tests"), messages=MESSAGES)


def _spawn(policy, n, delay=0.0):
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, json.dumps(policy), str(n), str(delay)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
    )


def test_four_processes_sharing_redis_never_overshoot():
    url = _redis_url()
    cap = 0.002
    policy = _policy([{"scope": "global", "window": "month", "limit_usd": cap, "on_exceed": "block"}], url)
    workers = [_spawn(policy, 60) for _ in range(4)]
    served = 0
    for w in workers:
        out, err = w.communicate(timeout=180)
        assert w.returncode == 0, err[-2000:]
        served += json.loads(out.strip().splitlines()[-1])["served"]
    ledger = open_ledger(url)
    try:
        settled_usd = sum(r.amount_usd for r in ledger.records())
        assert settled_usd <= cap + 1e-12
        assert settled_usd == pytest.approx(served * MOCK_COST, abs=1e-12)
        assert ledger.open_reservations() == 0
        assert served >= int(cap / MOCK_COST) - 4 * 20  # most of the cap was used: no mass phantom blocks
    finally:
        ledger.close()


def test_sigkill_mid_request_keeps_spend_and_charges_the_dead_reservation(tmp_path):
    url = f"sqlite:///{tmp_path}/ledger.db"
    policy = _policy([{"scope": "global", "window": "month", "limit_usd": 1.0, "on_exceed": "block"}], url, reservation_ttl_s=2)
    first = _spawn(policy, 3)
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err[-2000:]
    victim = _spawn(policy, 1, delay=30)
    assert victim.stdout.readline().strip() == "ready"
    ledger = open_ledger(url)
    deadline = time.monotonic() + 30
    while ledger.open_reservations() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ledger.open_reservations() == 1
    [in_flight] = [row.reserved_usd for row in budget_rows(load_policy(policy), ledger)]
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    ledger.close()
    # the reservation is the pessimistic estimate (the counted prompt and all 20 max_tokens),
    # never below what the answer would have cost
    pessimistic = count_prompt_tokens(DEEPSEEK, MESSAGES) * 2.8e-07 + 20 * 4.2e-07
    assert in_flight == pytest.approx(pessimistic, abs=1e-12) and in_flight >= MOCK_COST

    restarted = open_ledger(url)  # "after restart"
    try:
        assert sum(r.amount_usd for r in restarted.records()) == pytest.approx(3 * MOCK_COST, abs=1e-12)
        time.sleep(2.2)
        assert restarted.expire() == 1
        expired = [r for r in restarted.records() if r.attrs.get("kind") == "expired"]
        assert len(expired) == 1
        assert expired[0].amount_usd == pytest.approx(in_flight, abs=1e-12)  # charged in full, as reserved
        assert restarted.open_reservations() == 0
    finally:
        restarted.close()


async def test_ledger_outage_fail_closed_refuses_and_fail_open_keeps_every_charge(tmp_path):
    from litellm_payg.runtime.spend import LedgerDown

    # a Redis nobody listens on: the ledger is down from the start
    dead = "redis://127.0.0.1:1/0"
    closed = _policy([{"scope": "global", "window": "day", "limit_usd": 1, "on_exceed": "block"}], dead)
    with attached([deployment("chat", DEEPSEEK, "ds")], closed) as (router, _):
        with pytest.raises(Exception) as info:
            await router.acompletion(model="chat", messages=MESSAGES, max_tokens=20)
        assert isinstance(info.value, LedgerDown) or "ledger is unavailable" in str(info.value)

    opened = _policy([{"scope": "global", "window": "day", "limit_usd": 1, "on_exceed": "alert"}], dead, on_ledger_error="fail_open")
    with attached([deployment("chat", DEEPSEEK, "ds")], opened) as (router, engine):
        for _ in range(3):
            await router.acompletion(model="chat", messages=MESSAGES, max_tokens=20)
        for _ in range(100):
            if engine.spend.unsettled == 3:
                break
            await asyncio.sleep(0.05)
        assert engine.spend.unsettled == 3  # kept, not lost
        # the ledger comes back: the kept charges are replayed on the next call
        live = open_ledger(f"sqlite:///{tmp_path}/back.db")
        engine.spend._ledger = live
        await router.acompletion(model="chat", messages=MESSAGES, max_tokens=20)
        await settled(engine)
        for _ in range(100):
            if len(live.records()) == 4:
                break
            await asyncio.sleep(0.05)
        assert engine.spend.unsettled == 0
        assert sum(r.amount_usd for r in live.records()) == pytest.approx(4 * MOCK_COST, abs=1e-12)


async def test_a_refusal_for_a_down_ledger_is_final_after_one_attempt():
    """fail_closed with Redis down: LedgerDown reaches the caller after exactly one attempt. LiteLLM
    retries an error without its own num_retries (three times, with backoff, ~4.8 s), and a
    fallback to another group must not route around it either."""
    import litellm

    from litellm_payg.stores.ledger.redis import connect
    from litellm_payg.runtime.spend import LedgerDown

    assert LedgerDown.num_retries == 0
    client, _ = connect("redis://127.0.0.1:1/0")  # fail fast: a short connect timeout, no client retries
    conn = client.connection_pool.make_connection()
    assert conn.socket_connect_timeout <= 0.5 and conn.retry._retries == 0
    client.close()

    closed = _policy([{"scope": "global", "window": "day", "limit_usd": 1, "on_exceed": "block"}], "redis://127.0.0.1:1/0",
                     routes={"chat": [{"quality_floor": {"min_quality": 0}}], "backup": [{"quality_floor": {"min_quality": 0}}]})
    model_list = [deployment("chat", DEEPSEEK, "ds"), deployment("backup", MISTRAL, "mi")]
    with attached(model_list, closed, num_retries=3, fallbacks=[{"chat": ["backup"]}]) as (router, engine):
        admits = []
        admit = engine.spend.admit
        engine.spend.admit = lambda request, *a, **k: admits.append(request.group) or admit(request, *a, **k)
        failures = []

        class CountFailures(litellm.integrations.custom_logger.CustomLogger):
            async def async_log_failure_event(self, kwargs, response_obj, start_time, end_time):
                failures.append(kwargs.get("litellm_call_id"))

        counter = CountFailures()
        litellm.callbacks.append(counter)
        try:
            for _ in range(2):
                admits.clear()
                with pytest.raises(LedgerDown, match="ledger is unavailable"):
                    await router.acompletion(model="chat", messages=MESSAGES, max_tokens=20)
                assert admits == ["chat"], admits  # one attempt: no retry, no fallback hop to "backup"
            await asyncio.sleep(0.3)
            assert len(failures) <= 2  # at most one failure event per request (none before an attempt starts)
        finally:
            litellm.callbacks.remove(counter)


async def test_an_amount_the_ledger_refuses_is_a_400_not_an_outage_even_under_fail_open():
    """A reservation the ledger cannot store (here: an absurd deployment price makes the estimate
    exceed 1e9 USD) used to be a LedgerError, i.e. an outage: fail_open admitted the request without
    a reservation. It is InvalidAmount now: refused, final, nothing reserved or charged."""
    policy = _policy([{"scope": "global", "window": "day", "limit_usd": 1, "on_exceed": "block"}], on_ledger_error="fail_open")
    absurd = deployment("chat", DEEPSEEK, "ds", input_cost_per_token=1e-6, output_cost_per_token=1e8)
    with attached([absurd], policy, num_retries=2) as (router, engine):
        admits = []
        admit = engine.spend.admit
        engine.spend.admit = lambda *a, **k: admits.append(1) or admit(*a, **k)
        with pytest.raises(litellm_payg.InvalidAmount, match="at most 1e\\+09 USD") as info:
            await router.acompletion(model="chat", messages=MESSAGES, max_tokens=20)
        assert info.value.status_code == 400 and len(admits) == 1
        assert engine.spend.ledger.open_reservations() == 0 and engine.spend.ledger.records() == []
        assert engine.spend.unsettled == 0


async def test_a_model_the_policy_prices_is_charged_at_the_policy_price():
    """A self-hosted model LiteLLM does not know: LiteLLM would price it $0, the policy does not."""
    policy = {"version": 1, "ledger": "memory://", "routes": {"chat": [{"quality_floor": {"min_quality": 0}}]},
              "models": {"openai/my-finetune": {"quality": 1, "input_usd_per_1k": 0.001, "output_usd_per_1k": 0.002}}}
    model_list = [deployment("chat", "openai/my-finetune", "ft", api_base="http://127.0.0.1:9")]
    with attached(model_list, policy) as (router, engine):
        await router.acompletion(model="chat", messages=MESSAGES, max_tokens=20)
        stream = await router.acompletion(model="chat", messages=MESSAGES, max_tokens=20, stream=True)
        async for _ in stream:
            pass
        await settled(engine)
        amounts = [r.amount_usd for r in engine.spend.ledger.records()]
    # LiteLLM's mock usage: 10 prompt + 20 completion tokens. Which of the two settles first is
    # LiteLLM's logging worker's business (1.100.0 settles the stream first, 1.110.2 the other).
    assert pytest.approx(10 * 1e-06 + 20 * 2e-06, abs=1e-12) in amounts
    assert len(amounts) == 2 and all(a > 0 for a in amounts)
