"""Run budgets (``scope: session:*``, ``window: session:<idle>``) through LiteLLM's real Router.

Deployments answer with ``mock_response``; LiteLLM's mock usage is 10 prompt + 20 completion tokens,
so with prices set on the deployments every answer costs a known amount. Idle expiry is driven by an
injected clock, never by sleeping.
"""

from __future__ import annotations

import asyncio

import pytest
from routing_helpers import attached, deployment, served_by, settled
from services import BACKENDS, ledger_url

import litellm_payg
from litellm_payg.adapter.litellm_errors import BudgetExceeded
from litellm_payg.core.runs import prompt_hash

CHEAP, DEAR = "deepseek/deepseek-chat", "mistral/mistral-large-latest"
# per-token prices on the deployments: an answer (10 prompt + 20 completion tokens) costs 3e-5 on
# the cheap deployment and 3e-4 on the dear one
CHEAP_PRICE = {"input_cost_per_token": 1e-6, "output_cost_per_token": 1e-6}
DEAR_PRICE = {"input_cost_per_token": 1e-5, "output_cost_per_token": 1e-5}
CHEAP_COST, DEAR_COST = 30 * 1e-6, 30 * 1e-5


def _deployments():
    return [deployment("chat", CHEAP, "cheap", **CHEAP_PRICE), deployment("chat", DEAR, "dear", **DEAR_PRICE)]


def _policy(run: dict, ledger: str = "memory://", route=None) -> dict:
    budget = {"name": "per-run", "scope": "session:*", "window": "session:30m", "limit_usd": 1.0, **run}
    return {
        "version": 1, "ledger": ledger, "budgets": [budget],
        "models": {CHEAP: {"quality": 0.7}, DEAR: {"quality": 0.95}},
        # without a run budget in the way, every request goes to the capable (dear) deployment
        # (a floor the policy lets a run's downgrade take lower: floors hold by default)
        "routes": {"chat": route or [{"quality_floor": {"min_quality": 0.9, "keep_past_downgrade": False}}]},
    }


def _msg(text: str = "Please tell me what the status of my order number 12345 is today.") -> list[dict]:
    return [{"role": "user", "content": text}]


async def _ask(router, run: str | None, text: str = "Please tell me what the status of my order number 12345 is today.",
               **metadata):
    meta = dict(metadata)
    if run is not None:
        meta["session_id"] = run
    return await router.acompletion(model="chat", messages=_msg(text), max_tokens=20, metadata=meta)


class Clock:
    def __init__(self, t: float = 1_800_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


async def test_the_loop_guard_stops_a_client_sending_the_same_prompt_again_and_again():
    with attached(_deployments(), _policy({"loop_guard": 5})) as (router, engine):
        for _ in range(4):
            await _ask(router, "run-a")
            await settled(engine)
        with pytest.raises(BudgetExceeded) as info:
            await _ask(router, "run-a")
        exc = info.value
        assert exc.status_code == 429 and exc.rule == "loop" and exc.count == 4 and exc.count_limit == 5
        message = str(exc)
        assert "run 'run-a' (budget 'per-run', session:30m) refused by the loop guard" in message
        assert "already sent 4 times in this run (loop_guard: 5)" in message and "loop" in message
        assert f"the run spent ${4 * DEAR_COST:.6f} (+ $0.000000 in flight) of $1.000000" in message
        # another prompt in the same run, and the same prompt in another run, are no loop
        await _ask(router, "run-a", "Something else entirely, please.")
        await _ask(router, "run-b")
        await settled(engine)
        status = engine.run_status("run-a")
        assert status.requests == 5 and status.spent_usd == pytest.approx(5 * DEAR_COST, abs=1e-12)


async def test_max_requests_stops_a_runaway_run_and_says_so():
    with attached(_deployments(), _policy({"max_requests": 3})) as (router, engine):
        for i in range(3):
            await _ask(router, "run-a", f"step {i}: go on")
        with pytest.raises(BudgetExceeded) as info:
            await _ask(router, "run-a", "step 3: go on")
        exc = info.value
        assert exc.rule == "max_requests" and exc.count == 3 and exc.count_limit == 3
        assert "run 'run-a' (budget 'per-run', session:30m) refused by max_requests: 3 of 3 requests used" in str(exc)
        assert "the run starts afresh after 30m idle" in str(exc)
        await _ask(router, "run-b", "step 3: go on")  # another run has its own count
        await settled(engine)
        # a request without a session id is in no run
        await _ask(router, None, "step 4: go on")


async def test_a_request_that_failed_does_not_count_against_max_requests():
    model_list = [deployment("chat", CHEAP, "cheap", **CHEAP_PRICE),
                  deployment("chat", DEAR, "dear", mock=Exception("provider down"), **DEAR_PRICE)]
    with attached(model_list, _policy({"max_requests": 2}), num_retries=0) as (router, engine):
        with pytest.raises(Exception) as info:
            await _ask(router, "run-a")
        assert not isinstance(info.value, BudgetExceeded)
        await settled(engine)
        assert engine.run_status("run-a").requests == 0


@pytest.mark.parametrize("backend", BACKENDS)
async def test_50_concurrent_requests_of_one_run_never_exceed_its_cap(backend, tmp_path):
    cap = 10 * DEAR_COST + DEAR_COST / 2  # room for 10 answers, not 11
    policy = _policy({"limit_usd": cap}, ledger_url(backend, tmp_path))
    with attached(_deployments(), policy) as (router, engine):
        async def one(i):
            try:
                await _ask(router, "burst", f"request {i}")
                return "ok"
            except BudgetExceeded as exc:
                assert exc.rule == "cap" and "refused by its cap" in str(exc)
                return "blocked"

        results = await asyncio.gather(*(one(i) for i in range(50)))
        await settled(engine)
        status = engine.run_status("burst")
        # every estimate is at least the answer's cost here, so the cap holds exactly (the issue
        # allows one reservation of overshoot)
        assert status.spent_usd <= cap + 1e-12
        assert results.count("ok") == status.requests == 10, results
        assert status.spent_usd == pytest.approx(10 * DEAR_COST, abs=1e-12)
        assert engine.spend.ledger.open_reservations() == 0


async def test_past_the_downgrade_share_the_run_is_served_by_the_cheaper_deployment():
    limit = 10 * DEAR_COST
    policy = _policy({"limit_usd": limit, "downgrade": [{"at": 0.5, "min_quality": 0.6}]})
    with attached(_deployments(), policy) as (router, engine):
        served = []
        for i in range(8):
            served.append(served_by(await _ask(router, "run-a", f"step {i}")))
            await settled(engine)
        # 5 dear answers use half the budget: from then on the cheap deployment serves the run
        assert served == ["dear"] * 5 + ["cheap"] * 3, served
        response = await _ask(router, "run-a", "step 9")
        assert served_by(response) == "cheap"
        # a fresh run is not downgraded
        assert served_by(await _ask(router, "run-b", "step 0")) == "dear"
        await settled(engine)


async def test_downgrade_steps_apply_in_turn_and_say_why():
    limit = 10 * DEAR_COST
    policy = _policy({"limit_usd": limit, "downgrade": [{"at": 0.3, "min_quality": 0.9}, {"at": 0.5, "min_quality": 0.6}]})
    policy["models"][DEAR] = {"quality": 0.95}
    rec = Recorder()
    with attached(_deployments(), policy) as (router, engine):
        engine.pm.register(rec)
        served = []
        for i in range(7):
            served.append(served_by(await _ask(router, "run-a", f"step {i}")))
            await settled(engine)
        # past 0.3 the bar is 0.9: still the dear one (the cheapest meeting it); past 0.5, the cheap one
        assert served == ["dear"] * 5 + ["cheap"] * 2, served
        notes = rec.decisions[-1].notes
        assert any("run 'run-a' has used 5" in n and "past its downgrade step at 0.5" in n
                   and "quality >= 0.6" in n for n in notes), notes
        dropped = {d.deployment_id: d.reason for d in rec.decisions[-1].dropped}
        assert "quality 0.95" not in dropped.get("dear", "")  # the dear one is kept as the fallback


class Recorder:
    def __init__(self):
        self.decisions = []

    @litellm_payg.hookimpl
    def payg_decision(self, request, decision):
        self.decisions.append(decision)


async def test_the_final_request_gets_through_from_the_reserve_after_the_working_budget_is_gone():
    limit = 10 * DEAR_COST
    policy = _policy({"limit_usd": limit, "final_reserve": {"share": 0.3, "when": {"metadata.step": "final"}}})
    with attached(_deployments(), policy) as (router, engine):
        served = 0
        with pytest.raises(BudgetExceeded) as info:
            for i in range(20):
                await _ask(router, "run-a", f"work {i}")
                served += 1
                await settled(engine)
        exc = info.value
        # the working budget is 70% of the limit: 7 answers, and the 8th would reach into the reserve
        assert served == 7 and exc.rule == "reserve"
        assert "refused by final_reserve" in str(exc) and f"${0.3 * limit:.6f} of the limit ${limit:.6f}" in str(exc)
        status = engine.run_status("run-a")
        assert status.working_remaining_usd < DEAR_COST <= status.remaining_usd
        # the final request is served from the reserve
        await _ask(router, "run-a", "final answer, please", step="final")
        await settled(engine)
        status = engine.run_status("run-a")
        assert status.spent_usd == pytest.approx(8 * DEAR_COST, abs=1e-12) and status.spent_usd > 0.7 * limit
        # and the reserve is not a second budget: final requests stop at the cap
        await _ask(router, "run-a", "final 2", step="final")
        await _ask(router, "run-a", "final 3", step="final")
        await settled(engine)
        with pytest.raises(BudgetExceeded) as info:
            await _ask(router, "run-a", "final 4", step="final")
        assert info.value.rule == "cap"
        assert engine.run_status("run-a").spent_usd <= limit + 1e-12


async def test_a_run_that_idles_past_its_window_starts_fresh():
    clock = Clock()
    router_policy = _policy({"max_requests": 2, "loop_guard": 2})
    from litellm import Router

    router = Router(model_list=_deployments())
    engine = litellm_payg.attach(router, router_policy, clock=clock)
    try:
        await _ask(router, "run-a", "first")
        clock.t += 29 * 60  # 29 minutes: still the same run
        with pytest.raises(BudgetExceeded) as info:
            await _ask(router, "run-a", "first")
        assert info.value.rule == "loop"
        await _ask(router, "run-a", "second")
        await settled(engine)
        with pytest.raises(BudgetExceeded) as info:
            await _ask(router, "run-a", "third")
        assert info.value.rule == "max_requests"
        assert engine.run_status("run-a").requests == 2
        clock.t += 30 * 60 - 1  # refusals are no activity, but the last answer was under 30 minutes ago
        with pytest.raises(BudgetExceeded):
            await _ask(router, "run-a", "third")
        clock.t += 1  # 30 minutes idle: a fresh run, its counts and its spend gone
        fresh = engine.run_status("run-a")
        assert fresh.requests == 0 and fresh.spent_usd == 0 and fresh.remaining_usd == 1.0
        await _ask(router, "run-a", "first")
        await settled(engine)
        assert engine.run_status("run-a").requests == 1
        # the spend records keep the whole history, both runs
        assert len([r for r in engine.spend.ledger.records() if r.attrs.get("session") == "run-a"]) == 3
    finally:
        engine.detach()


async def test_run_status_answers_what_a_run_spent_and_has_left():
    policy = _policy({"limit_usd": 0.01, "max_requests": 50, "final_reserve": {"share": 0.1, "when": {"tags": ["final"]}}})
    with attached(_deployments(), policy) as (router, engine):
        for i in range(3):
            await _ask(router, "run-a", f"q{i}")
        await settled(engine)
        status = engine.run_status("run-a")
        assert status.session == "run-a" and status.budget == "per-run" and status.window == "session:30m"
        assert status.spent_usd == pytest.approx(3 * DEAR_COST, abs=1e-12) and status.reserved_usd == 0
        assert status.remaining_usd == pytest.approx(0.01 - 3 * DEAR_COST, abs=1e-12)
        assert status.working_remaining_usd == pytest.approx(0.009 - 3 * DEAR_COST, abs=1e-12)
        assert status.requests == 3 and status.max_requests == 50
        assert engine.run_status("never-seen").spent_usd == 0
        with pytest.raises(ValueError, match="no run budget 'other'"):
            engine.run_status("run-a", budget="other")


def test_prompt_hash_ignores_key_order_and_tells_prompts_apart():
    a = [{"role": "user", "content": "hi"}]
    assert prompt_hash(a) == prompt_hash([{"content": "hi", "role": "user"}])
    assert prompt_hash(a) != prompt_hash([{"role": "user", "content": "hi!"}])
    assert prompt_hash(None) is None and prompt_hash([]) is None


@pytest.mark.parametrize("budget,words", [
    ({"scope": "user:*", "window": "day", "limit_usd": 1, "max_requests": 3}, "max_requests apply to run budgets only"),
    ({"scope": "user:*", "window": "session:30m", "limit_usd": 1}, "needs a session scope"),
    ({"scope": "session:*", "window": "session:30m", "limit_usd": 1, "loop_guard": 1}, "greater than or equal to 2"),
    ({"scope": "session:*", "window": "session:30m", "limit_usd": 1,
      "downgrade": [{"at": 0.8, "min_quality": 0.3}, {"at": 0.5, "min_quality": 0.6}]}, "ascending"),
    ({"scope": "session:*", "window": "session:30m", "limit_usd": 1,
      "final_reserve": {"share": 0.1, "when": {"metadata.team": "x"}}}, "final_reserve.when.metadata.team"),
    ({"scope": "session:*", "window": "session:0m", "limit_usd": 1}, "window must be"),
])
def test_run_budget_mistakes_are_policy_errors(budget, words):
    from litellm_payg.core.errors import PolicyError
    from litellm_payg.policy.load import load_policy

    with pytest.raises(PolicyError) as info:
        load_policy({"version": 1, "budgets": [budget]})
    assert words in str(info.value)


def test_the_readme_run_budget_example_is_a_valid_policy():
    """The policy in README "Agent runs" loads as written (a doc example that drifted would not)."""
    import re
    from pathlib import Path

    import yaml

    from litellm_payg.policy.load import load_policy

    import user_docs

    section = user_docs.section("Agent runs")
    block = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    policy = load_policy({"version": 1, **yaml.safe_load(block)})
    [budget] = policy.budgets
    assert budget.is_run and budget.max_requests == 200 and budget.loop_guard == 5
    assert [s.at for s in budget.downgrade] == [0.5, 0.8] and budget.final_reserve.share == 0.1


async def test_the_policy_names_where_the_session_id_is_read_from():
    policy = _policy({"max_requests": 1})
    policy["sessions"] = {"id_from": ["metadata.job", "litellm_session_id"]}
    with attached(_deployments(), policy) as (router, engine):
        await _ask(router, None, "one", job="job-7")
        with pytest.raises(BudgetExceeded) as info:
            await _ask(router, None, "two", job="job-7")
        assert "run 'job-7'" in str(info.value)
        # metadata.session_id is not a source any more: these are two requests in no run
        await _ask(router, "job-8", "three")
        await _ask(router, "job-8", "four")
        await router.acompletion(model="chat", messages=_msg("five"), max_tokens=20, litellm_session_id="job-9")
        with pytest.raises(BudgetExceeded):
            await router.acompletion(model="chat", messages=_msg("six"), max_tokens=20, litellm_session_id="job-9")
        await settled(engine)


def test_session_sources_are_checked_and_read_in_order():
    from litellm_payg.core.errors import PolicyError
    from litellm_payg.wire.identity import session_of
    from litellm_payg.policy.load import load_policy

    assert load_policy({"version": 1}).session_sources == ("litellm_session_id", "metadata.session_id")
    for bad in ("trace", "header:", "metadata.payg_request", "cookie:x"):
        with pytest.raises(PolicyError, match="session id source"if bad not in ("metadata.payg_request",) else "own field"):
            load_policy({"version": 1, "sessions": {"id_from": [bad]}})
    kwargs = {"litellm_trace_id": "t1", "proxy_server_request": {"headers": {"X-Agent-Run": "h1"}}}
    assert session_of(kwargs, {"session_id": "m1"}) == "m1"
    assert session_of(kwargs, {"session_id": "m1"}, ("header:x-agent-run", "metadata.session_id")) == "h1"
    assert session_of(kwargs, {}, ("header:x-other", "litellm_trace_id")) == "t1"
    assert session_of({}, {}, ("header:x-agent-run",)) is None


@pytest.mark.parametrize("on_exceed", ["alert", "downgrade"])
async def test_the_counts_refuse_whatever_on_exceed_says_of_the_dollars(on_exceed):
    with attached(_deployments(), _policy({"on_exceed": on_exceed, "loop_guard": 2, "max_requests": 3})) as (router, engine):
        await _ask(router, "run-a", "same")
        with pytest.raises(BudgetExceeded) as info:
            await _ask(router, "run-a", "same")
        assert info.value.rule == "loop"
        await _ask(router, "run-a", "other")
        await _ask(router, "run-a", "third")
        with pytest.raises(BudgetExceeded) as info:
            await _ask(router, "run-a", "fourth")
        assert info.value.rule == "max_requests"
        await settled(engine)


async def test_budget_status_and_report_show_each_run_and_leave_the_counters_out():
    from litellm_payg.tools.budget_status import budget_rows
    from litellm_payg.tools.report import build_report

    from litellm import Router

    clock = Clock()
    router = Router(model_list=_deployments())
    engine = litellm_payg.attach(router, _policy({"loop_guard": 3, "max_requests": 9}), clock=clock)
    try:
        await _ask(router, "run-a", "one")
        await _ask(router, "run-a", "two")
        await _ask(router, "run-b", "one")
        await settled(engine)
        rows = {r.scope: r for r in budget_rows(engine.policy, engine.spend.ledger, now=clock.t)}
        assert set(rows) == {"session:run-a", "session:run-b"}
        assert rows["session:run-a"].spent_usd == pytest.approx(2 * DEAR_COST, abs=1e-12)
        report = build_report(engine.spend.ledger, engine.policy, since=0, now=clock.t)
        assert {(s["scope"], s["window"]) for s in report.by_scope} == {
            ("session:run-a", "session:30m"), ("session:run-b", "session:30m")}
        assert report.total_usd == pytest.approx(3 * DEAR_COST, abs=1e-12)
        # idle past the window: the run's row reads as a fresh run (the records keep the history)
        rows = {r.scope: r for r in budget_rows(engine.policy, engine.spend.ledger, now=clock.t + 1800)}
        assert rows["session:run-a"].spent_usd == 0
    finally:
        engine.detach()


def test_a_downgrade_step_never_makes_a_request_dearer():
    """Past a step whose bar the route's own (cheaper) pick does not meet, the route's pick stands:
    a downgrade that would move a request from a cheap model up to the step's choice is not one."""
    from litellm_payg.core.buckets import Bucket, Usage
    from litellm_payg.core.budgets import Budget, BudgetBucket
    from litellm_payg.core.decision import Candidate, RouteRequest
    from litellm_payg.core.runs import RunUsage
    from litellm_payg.core.snapshot import Snapshot
    from litellm_payg.policy.load import load_policy
    from litellm_payg.runtime.engine import Engine

    policy = load_policy({"version": 1, "ledger": "memory://",
                          "models": {"cheap": {"quality": 0.5, "input_usd_per_1k": 1e-4, "output_usd_per_1k": 1e-4},
                                     "mid": {"quality": 0.85, "input_usd_per_1k": 1e-3, "output_usd_per_1k": 1e-3},
                                     "dear": {"quality": 0.95, "input_usd_per_1k": 1e-2, "output_usd_per_1k": 1e-2}},
                          "routes": {"agent": [{"when": {"metadata.step": "act"}, "cost_threshold": {
                              "use": "cheap", "max_usd_per_1k_tokens": 1, "otherwise": ["mid"]}},
                              {"quality_floor": {"min_quality": 0.9, "keep_past_downgrade": False}}]},
                          "budgets": [{"name": "per-run", "scope": "session:*", "window": "session:30m", "limit_usd": 1,
                                       "downgrade": [{"at": 0.5, "min_quality": 0.8}]}]})
    engine = Engine(policy, ledger="memory://")
    cands = [Candidate("c", "cheap", "p", "agent", 1e-7, 1e-7, quality=0.5),
             Candidate("m", "mid", "p", "agent", 1e-6, 1e-6, quality=0.85),
             Candidate("d", "dear", "p", "agent", 1e-5, 1e-5, quality=0.95)]
    budget = Budget(scope="session:*", window="session:30m", limit_usd=1, name="per-run",
                    downgrade=[{"at": 0.5, "min_quality": 0.8}])
    past = RunUsage(BudgetBucket(budget, Bucket("per-run|session:r|session", 1, True), "r", None, None), Usage(0.6, 0.0))
    snapshot = Snapshot(0.0, policy, runs=(past,))
    act = RouteRequest("agent", 100, 100, session="r", metadata={"step": "act"})
    plan = RouteRequest("agent", 100, 100, session="r", metadata={"step": "plan"})
    from litellm_payg import hookimpl

    class CountingFilter:
        calls = 0

        @hookimpl
        def payg_filter_candidates(self, candidates):
            CountingFilter.calls += 1

    engine.pm.register(CountingFilter())
    assert engine.decide(act, cands, snapshot).ordered[0].deployment_id == "c"  # the route's cheap pick stands
    decided = engine.decide(plan, cands, snapshot)
    assert decided.ordered[0].deployment_id == "m"  # the route's 'dear' moves down to the step's choice
    assert decided.attrs.get("run_downgrade") == "0.5"
    assert CountingFilter.calls == 2  # the filters run once per decision, whichever way it went


# -- issue #19 item 6b: a run belongs to the key (or team) that started it ---------------------------

def test_a_run_is_its_sessions_run_of_the_key_that_sent_it():
    from litellm_payg.core.identity import RequestIdentity, run_of, session_in

    def who(key=None, team=None, user=None):
        return RequestIdentity(user=user, team=team, api_key=key, tags=(), via_proxy=True)

    a, b = who(key="a" * 64, team="t1"), who(key="b" * 64, team="t1")
    assert run_of("r1", a) != run_of("r1", b)  # the default owner: the key
    assert run_of("r1", a) == "r1@key:" + "a" * 16 and session_in(run_of("r1", a)) == "r1"
    assert run_of("r1", a, "team") == run_of("r1", b, "team") == "r1@team:t1"
    assert run_of("r1", who(key="c" * 64), "team") == "r1@key:" + "c" * 16  # no team: the key's own
    assert run_of("r1", a, "shared") == run_of("r1", b, "shared") == "r1"
    assert run_of(None, a) is None and run_of("r1", who()) == "r1"  # SDK without a key: as sent


def test_sessions_owner_is_checked():
    from litellm_payg.core.errors import PolicyError
    from litellm_payg.policy.load import load_policy

    assert load_policy({"version": 1}).run_owner == "key"
    assert load_policy({"version": 1, "sessions": {"owner": "shared"}}).run_owner == "shared"
    with pytest.raises(PolicyError, match="owner"):
        load_policy({"version": 1, "sessions": {"owner": "everyone"}})


async def test_two_keys_naming_one_session_id_get_runs_of_their_own_through_a_router():
    """In Python the calling code names the key (``metadata.api_key``): two keys, one session id,
    two runs, each with its own counter (``max_requests: 2``)."""
    policy = _policy({"max_requests": 2})
    with attached(_deployments(), policy) as (router, engine):
        for key in ("key-a", "key-b"):
            for i in range(2):
                await _ask(router, "shared-id", f"{key} {i}", api_key=key)
        with pytest.raises(BudgetExceeded) as info:
            await _ask(router, "shared-id", "one more", api_key="key-a")
        assert info.value.rule == "max_requests" and "run 'shared-id'" in str(info.value)
        await settled(engine)
        runs = {r.attrs.get("run") for r in engine.spend.ledger.records()}
        assert runs == {"shared-id@key:key-a", "shared-id@key:key-b"}, runs
