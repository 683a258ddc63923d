"""Run control through LiteLLM's real Router: an operator reads, closes and grants a run
(``Engine.run_report`` / ``close_run`` / ``grant_run``), a run's token and wall-clock caps
(``max_total_tokens``, ``max_duration``), and ``when: {group: ...}`` on a run budget.

Deployments answer with ``mock_response`` (LiteLLM's mock usage: 10 prompt + 20 completion tokens);
the dear deployment's answer costs 3e-4. The wall clock is injected, never slept on. The grant and
the close live in the ledger and are read inside each reservation: two engines (replicas) on one
Redis see each other's.
"""

from __future__ import annotations

import asyncio

import pytest
from routing_helpers import attached, deployment, served_by, settled
from services import BACKENDS, ledger_url, redis_url
from litellm import Router

import litellm_payg
from litellm_payg.adapter.litellm_errors import BudgetExceeded
from litellm_payg.core.identity import RequestIdentity, run_of
from litellm_payg.core.runs import NotYourRun, RunNotFound, run_for

CHEAP, DEAR = "deepseek/deepseek-chat", "mistral/mistral-large-latest"
DEAR_PRICE = {"input_cost_per_token": 1e-5, "output_cost_per_token": 1e-5}
CHEAP_PRICE = {"input_cost_per_token": 1e-6, "output_cost_per_token": 1e-6}
DEAR_COST = 30 * 1e-5


def _deployments(group: str = "chat"):
    return [deployment(group, DEAR, f"dear-{group}", **DEAR_PRICE)]


def _policy(run: dict, ledger: str = "memory://", **more) -> dict:
    budget = {"name": "per-run", "scope": "session:*", "window": "session:30m", "limit_usd": 1.0, **run}
    return {"version": 1, "ledger": ledger, "budgets": [budget], **more}


async def _ask(router, run: str, text: str = "What is the status of my order number 12345 today?",
               max_tokens: int = 20, group: str = "chat"):
    return await router.acompletion(model=group, messages=[{"role": "user", "content": text}], max_tokens=max_tokens,
                                    metadata={"session_id": run})


class Clock:
    def __init__(self, t: float = 1_800_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_run_closed_by_the_operator_is_refused_at_once_then_granted_more_and_served(backend, tmp_path):
    with attached(_deployments(), _policy({"limit_usd": 3.5 * DEAR_COST}, ledger_url(backend, tmp_path))) as (router, engine):
        for i in range(2):
            await _ask(router, "r1", f"step {i}")
        await settled(engine)
        [report] = engine.run_report("r1")
        assert report.requests == 2 and report.spent_usd == pytest.approx(2 * DEAR_COST) and not report.closed
        [closed] = engine.close_run("r1")
        assert closed.closed
        with pytest.raises(BudgetExceeded) as info:
            await _ask(router, "r1", "step 2")
        exc = info.value
        assert exc.status_code == 429 and exc.rule == "closed" and exc.num_retries == 0
        assert exc.headers == {"x-should-retry": "false"}  # no retry-after: waiting does not lift it
        assert "run 'r1' (budget 'per-run', session:30m) was closed by the operator" in str(exc)
        [seen] = engine.run_report("r1")
        assert seen.requests == 2 and seen.last_refusal["rule"] == "closed"  # the refusal reserved nothing
        await _ask(router, "r2", "another run is not closed")
        # the third answer still fits; the fourth does not: the cap refuses until the grant
        await settled(engine)
        [granted] = engine.grant_run("r1", usd=2 * DEAR_COST)
        assert not granted.closed and granted.limit_usd == pytest.approx(5.5 * DEAR_COST)
        assert granted.granted_usd == pytest.approx(2 * DEAR_COST)
        for i in range(3):
            assert served_by(await _ask(router, "r1", f"step {i + 3}")) == "dear-chat"
        await settled(engine)
        with pytest.raises(BudgetExceeded) as info:
            await _ask(router, "r1", "step 6")
        assert info.value.rule == "cap" and info.value.limit_usd == pytest.approx(5.5 * DEAR_COST)
        assert engine.run_status("r1").spent_usd == pytest.approx(5 * DEAR_COST)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_an_unknown_or_forged_run_is_not_found_and_nothing_changes(backend, tmp_path):
    with attached(_deployments(), _policy({"limit_usd": 1.0}, ledger_url(backend, tmp_path))) as (router, engine):
        await _ask(router, "real")
        await settled(engine)
        before = engine.spend.ledger.records()
        for forged in ("nope", "real@key:0123456789abcdef", "real "):
            with pytest.raises(RunNotFound):
                engine.run_report(forged)
            with pytest.raises(RunNotFound):
                engine.close_run(forged)
            with pytest.raises(RunNotFound):
                engine.grant_run(forged, usd=5)
            status = engine.run_status(forged)
            assert not status.live and status.limit_usd == 1.0 and not status.closed  # nothing was created
        assert engine.spend.ledger.records() == before
        with pytest.raises(ValueError, match="usd: expected a number from 0"):
            engine.grant_run("real", usd=-1)
        with pytest.raises(ValueError, match="at least one of usd"):
            engine.grant_run("real")
        with pytest.raises(ValueError, match="budget: no run budget 'other'"):
            engine.grant_run("real", usd=1, budget="other")
        await _ask(router, "real")  # still served: nothing was closed


async def test_a_granted_run_under_a_burst_never_spends_past_its_limit_plus_the_grant():
    url = redis_url()
    policy = _policy({"limit_usd": 2.5 * DEAR_COST}, url)
    with attached(_deployments(), policy) as (router, engine):
        await _ask(router, "burst", "first")
        await settled(engine)
        engine.grant_run("burst", usd=5 * DEAR_COST)  # room for 7 answers in all

        async def one(i):
            try:
                await _ask(router, "burst", f"request {i}")
                return "ok"
            except BudgetExceeded as exc:
                assert exc.rule == "cap"
                return "blocked"

        results = await asyncio.gather(*(one(i) for i in range(30)))
        await settled(engine)
        assert results.count("ok") == 6, results
        assert engine.run_status("burst").spent_usd == pytest.approx(7 * DEAR_COST)


async def test_two_replicas_on_redis_see_the_close_and_the_grant_at_once():
    url = redis_url()
    policy = _policy({"limit_usd": 20 * DEAR_COST, "max_requests": 3}, url)
    with attached(_deployments(), policy) as (router_a, engine_a), attached(_deployments(), policy) as (router_b, engine_b):
        await _ask(router_a, "shared-run", "one")
        await _ask(router_b, "shared-run", "two")
        await settled(engine_a)
        await settled(engine_b)
        engine_a.close_run("shared-run")
        with pytest.raises(BudgetExceeded) as info:
            await _ask(router_b, "shared-run", "three")
        assert info.value.rule == "closed"
        engine_b.grant_run("shared-run", usd=DEAR_COST, requests=1)
        [status] = engine_a.run_report("shared-run")
        assert not status.closed and status.max_requests == 4 and status.limit_usd == pytest.approx(21 * DEAR_COST)
        await _ask(router_a, "shared-run", "three")
        await _ask(router_b, "shared-run", "four")
        await settled(engine_a)
        await settled(engine_b)
        with pytest.raises(BudgetExceeded) as info:
            await _ask(router_a, "shared-run", "five")
        assert info.value.rule == "max_requests" and info.value.count_limit == 4
        assert engine_b.run_status("shared-run").requests == 4


@pytest.mark.parametrize("backend", BACKENDS)
async def test_max_total_tokens_counts_settled_usage_and_the_bound_in_flight(backend, tmp_path):
    # each answer uses 10 + 20 tokens; a request's bound is its prompt + max_tokens
    with attached(_deployments(), _policy({"max_total_tokens": 200}, ledger_url(backend, tmp_path))) as (router, engine):
        for i in range(4):
            await _ask(router, "tok", f"step {i}", max_tokens=40)
            await settled(engine)
        [status] = engine.run_report("tok")
        assert status.tokens == 4 * 30 and status.max_total_tokens == 200  # settled: what the answers used
        with pytest.raises(BudgetExceeded) as info:
            await _ask(router, "tok", "step 4", max_tokens=100)  # bound: its prompt + 100 > 80 left
        exc = info.value
        assert exc.rule == "tokens" and exc.count == 120 and exc.count_limit == 200 and exc.tokens_asked > 100
        assert "refused by max_total_tokens: the run's 120 tokens" in str(exc)
        await _ask(router, "tok", "step 4", max_tokens=20)  # a smaller bound fits
        await settled(engine)
        engine.grant_run("tok", tokens=100)
        await _ask(router, "tok", "step 5", max_tokens=100)
        await settled(engine)
        assert engine.run_report("tok")[0].tokens == 6 * 30


@pytest.mark.parametrize("backend", BACKENDS)
async def test_max_duration_refuses_a_run_older_than_its_wall_clock_cap_from_its_first_request(backend, tmp_path):
    clock = Clock()
    router = Router(model_list=_deployments())
    engine = litellm_payg.attach(router, _policy({"max_duration": "10m"}, ledger_url(backend, tmp_path)), clock=clock)
    try:
        await _ask(router, "slow", "first")
        clock.t += 9 * 60
        await _ask(router, "slow", "at nine minutes")
        [status] = engine.run_report("slow")
        assert status.started_at == pytest.approx(clock.t - 9 * 60) and status.ends_at == pytest.approx(clock.t + 60)
        assert status.expires_at == pytest.approx(clock.t + 30 * 60)
        clock.t += 60  # ten minutes after the first request
        with pytest.raises(BudgetExceeded) as info:
            await _ask(router, "slow", "at ten minutes")
        assert info.value.rule == "duration" and "refused by max_duration" in str(info.value)
        await _ask(router, "fresh", "another run has its own clock")
        engine.grant_run("slow", seconds=300)
        await _ask(router, "slow", "granted five more minutes")
        await settled(engine)
    finally:
        engine.detach()


async def test_a_run_budget_with_when_group_applies_to_that_model_group_only():
    model_list = _deployments("agent") + [deployment("chat", CHEAP, "cheap-chat", **CHEAP_PRICE)]
    policy = _policy({"max_requests": 2, "when": {"group": "agent"}})
    with attached(model_list, policy) as (router, engine):
        for i in range(2):
            await _ask(router, "g", f"agent {i}", group="agent")
        with pytest.raises(BudgetExceeded) as info:
            await _ask(router, "g", "agent 2", group="agent")
        assert info.value.rule == "max_requests"
        for i in range(3):  # the same run id in another group: the run budget does not apply
            await _ask(router, "g", f"chat {i}", group="chat")
        await settled(engine)
        assert engine.run_status("g").requests == 2


def test_a_when_group_naming_no_group_of_the_router_is_an_error_naming_the_field():
    policy = _policy({"max_requests": 2, "when": {"group": "agnet"}})
    with pytest.raises(litellm_payg.PolicyError) as info:
        with attached(_deployments("agent"), policy):
            pass
    assert "budgets[0].when.group" in str(info.value) and "did you mean 'agent'?" in str(info.value)


def test_a_key_reaches_only_its_own_runs_and_an_operator_every_run():
    alice = RequestIdentity(user=None, team=None, api_key="a" * 64, tags=(), via_proxy=True)
    bob = RequestIdentity(user=None, team=None, api_key="b" * 64, tags=(), via_proxy=True)
    alices_run = run_of("s1", alice, "key")
    assert run_for("s1", alice, "key", operator=False) == alices_run
    assert run_for(alices_run, alice, "key", operator=False) == alices_run
    assert run_for("s1", bob, "key", operator=False) != alices_run  # bob's own s1
    with pytest.raises(NotYourRun):
        run_for(alices_run, bob, "key", operator=False)
    assert run_for(alices_run, bob, "key", operator=True) == alices_run


def test_the_budgets_command_lists_runs_with_their_requests_tokens_idle_expiry_and_the_operators_doing(tmp_path):
    from litellm_payg.policy.load import load_policy
    from litellm_payg.stores.ledger import open_ledger
    from litellm_payg.tools.budget_status import budget_rows, render

    url = f"sqlite:///{tmp_path}/ledger.db"
    clock = Clock()
    router = Router(model_list=_deployments())
    engine = litellm_payg.attach(router, _policy({"max_requests": 10}, url), clock=clock)
    try:
        async def go():
            for i in range(3):
                await _ask(router, "listed", f"step {i}")
            await _ask(router, "other", "one")
            await settled(engine)
        asyncio.run(go())
        engine.close_run("listed")
        engine.grant_run("listed", usd=0.5)
    finally:
        engine.detach()
    with open_ledger(url) as ledger:
        rows = {r.scope: r for r in budget_rows(load_policy(_policy({"max_requests": 10}, url)), ledger, now=clock.t + 60)}
    listed = rows["session:listed"]
    assert listed.requests == 3 and listed.tokens == 90 and listed.limit_usd == pytest.approx(1.5)
    assert not listed.closed and listed.granted_usd == pytest.approx(0.5)  # the grant opened it again
    assert listed.expires_at.timestamp() == pytest.approx(clock.t + 30 * 60)
    assert rows["session:other"].requests == 1
    text = render(list(rows.values()))
    assert "3 req, 90 tok, idle out" in text and "+$0.5 granted" in text
    with open_ledger(url) as ledger:  # 31 minutes later the runs have idled out
        rows = {r.scope: r for r in budget_rows(load_policy(_policy({"max_requests": 10}, url)), ledger,
                                                now=clock.t + 31 * 60)}
    assert rows["session:listed"].expires_at is None and rows["session:listed"].requests == 0
    assert "idle (over)" in render(list(rows.values()))


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_ledger_adjusts_only_live_session_counters_and_forgets_it_when_the_run_starts_afresh(backend, tmp_path):
    from litellm_payg.stores.ledger import Bucket, open_ledger

    t = 1_800_000_000.0
    live = Bucket(f"adj-{backend}|session:s|session:60s", 1.0, True, idle_s=60.0)
    ghost = Bucket(f"adj-{backend}|session:ghost|session:60s", 1.0, True, idle_s=60.0)
    with open_ledger(ledger_url(backend, tmp_path)) as ledger:
        assert ledger.reserve("r1", [live], 0.9, 600, now=t).ok
        ledger.settle("r1", 0.9, now=t)
        assert not ledger.reserve("r2", [live], 0.2, 600, now=t + 1).ok
        # a forged or unknown counter: nothing is written, whatever else is named with it
        assert not ledger.adjust([ghost], grant={ghost.key: 5.0}, now=t + 2)
        assert not ledger.adjust([live, ghost], grant={live.key: 5.0}, close=True, now=t + 2)
        assert not ledger.state([ghost], now=t + 2)[ghost.key].live
        assert ledger.state([live], now=t + 2)[live.key].usage.granted_usd == 0 and not ledger.state([live], now=t + 2)[live.key].closed
        # a live one: the grant is read inside the next reservation
        assert ledger.adjust([live], grant={live.key: 0.5}, note="why", now=t + 2)
        result = ledger.reserve("r3", [live], 0.2, 600, now=t + 3)
        assert result.ok and result.usage[live.key].granted_usd == pytest.approx(0.5)
        ledger.release("r3")
        assert ledger.adjust([live], close=True, now=t + 4)
        refused = ledger.reserve("r4", [live], 0.01, 600, now=t + 5)
        assert not refused.ok and refused.refused_rule == "closed"
        state = ledger.state([live], now=t + 5)[live.key]
        assert state.closed and state.note == "why" and state.first_at == pytest.approx(t) and state.last_at == pytest.approx(t + 3)
        # idle past its time: the run starts afresh, without the grant or the close
        assert not ledger.adjust([live], grant={live.key: 1.0}, now=t + 3 + 61)
        fresh = ledger.reserve("r5", [live], 0.5, 600, now=t + 3 + 61)
        assert fresh.ok and fresh.usage[live.key].granted_usd == 0
        after = ledger.state([live], now=t + 3 + 62)[live.key]
        assert not after.closed and after.note is None and after.first_at == pytest.approx(t + 64)


@pytest.mark.parametrize("budget, field, message", [
    ({"max_duration": "2x"}, "budgets[0].max_duration", "a duration is <N>(s|m|h|d)"),
    ({"max_duration": "0s"}, "budgets[0].max_duration", "N > 0"),
    ({"max_total_tokens": 0}, "budgets[0].max_total_tokens", "greater than 0"),
    ({"window": "day", "max_total_tokens": 100}, "budgets[0]", "max_total_tokens apply to run budgets only"),
])
def test_a_bad_token_or_duration_cap_is_a_policy_error_naming_the_field(budget, field, message):
    from litellm_payg.policy.load import load_policy

    with pytest.raises(litellm_payg.PolicyError) as info:
        load_policy(_policy(budget))
    assert f"{field}" in str(info.value) and message in str(info.value), str(info.value)


def test_sessions_operators_is_checked_and_kept():
    from litellm_payg.policy.load import load_policy

    policy = load_policy(_policy({}, sessions={"operators": {"team": ["ops"], "key": ["ab" * 32]}}))
    assert policy.run_operators == {"team": frozenset({"ops"}), "key": frozenset({"ab" * 32}), "user": frozenset()}
    with pytest.raises(litellm_payg.PolicyError, match="sessions.operators.teams: unknown field"):
        load_policy(_policy({}, sessions={"operators": {"teams": ["ops"]}}))


def test_who_is_an_operator_at_the_proxy():
    from types import SimpleNamespace

    from litellm.proxy._types import LitellmUserRoles, UserAPIKeyAuth

    from litellm_payg.adapter.run_control import is_operator
    from litellm_payg.policy.load import load_policy

    raw = "sk-payg.agent..k1"
    policy = load_policy(_policy({}, sessions={"operators": {"team": ["ops"], "user": ["olga"], "key": [raw]}}))
    assert is_operator(UserAPIKeyAuth(api_key="sk-anything", user_role=LitellmUserRoles.PROXY_ADMIN), policy)
    assert is_operator(UserAPIKeyAuth(api_key="sk-x.1", team_id="ops"), policy)
    assert is_operator(UserAPIKeyAuth(api_key="sk-x.2", user_id="olga"), policy)
    assert is_operator(UserAPIKeyAuth(api_key=raw), policy)  # named by the key (kept as its hash)
    assert not is_operator(UserAPIKeyAuth(api_key="sk-x.3", team_id="dev", user_id="mallory"), policy)
    assert not is_operator(UserAPIKeyAuth(api_key="sk-x.4", user_role=LitellmUserRoles.INTERNAL_USER), policy)
    assert not is_operator(SimpleNamespace(), policy)
