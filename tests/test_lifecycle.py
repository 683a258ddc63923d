"""What ``runtime.lifecycle`` gives its callers beyond the pick (``simulate`` reads all of it): the
engine's own decision on the Pick and on a refusal, the breaker state after an outcome, and a
shuffle that follows the ``rng`` it is given."""

from __future__ import annotations

import dataclasses
import random

import pytest

from litellm_payg.adapter.deployments import candidates_named_by_policy
from litellm_payg.core.decision import RouteRequest
from litellm_payg.core.errors import BudgetRefused
from litellm_payg.core.failure import Failure, FailureClass
from litellm_payg.policy.load import load_policy
from litellm_payg.runtime.engine import Engine
from litellm_payg.runtime.lifecycle import GiveUp, Lifecycle

DS, ML = "deepseek/deepseek-chat", "mistral/mistral-large-latest"
DOWN = Failure(FailureClass.SERVER_ERROR, "test", 500, None, "down")


def _engine(**extra):
    clock = [1_000_000.0]
    policy = load_policy({
        "version": 1, "ledger": "memory://",
        "routes": {"chat": [{"cost_threshold": {"use": DS, "max_usd_per_1k_tokens": 0.0015, "otherwise": ML}}]},
        **extra,
    })
    engine = Engine(policy, ledger="memory://", clock=lambda: clock[0])
    return engine, candidates_named_by_policy(engine)["chat"]


REQUEST = RouteRequest(group="chat", prompt_tokens=100, output_tokens=50)


def test_the_pick_keeps_the_engines_decision_and_outcomes_return_the_breaker_state():
    engine, cands = _engine(failover={"circuit_breaker": {"failures": 2, "within_s": 60, "open_s": 30}})
    life = Lifecycle(engine)
    first = life.pick(REQUEST, cands, "r1")
    assert first.candidate.model == DS and first.decided is not None and first.decided.ordered[0].model == DS
    assert life.failed(first, first.candidate.deployment_id, DOWN) == "closed"
    second = life.pick(REQUEST, cands, "r2", attempts=[DS], last_failure=(DS, first.candidate, DOWN))
    assert second.candidate.model == ML
    assert [c.model for c in second.decided.ordered] == [DS, ML]  # the engine's, before the failover hop
    assert any(d.deployment_id == DS and "already tried" in d.reason for d in second.decision.dropped)
    assert life.succeeded(second, ML, 0.001) == "closed"
    third = life.pick(REQUEST, cands, "r3")
    assert life.failed(third, DS, DOWN) == "open"  # the second failure within 60 s


def test_a_refusal_carries_the_decision_it_came_from():
    engine, cands = _engine(budgets=[{"name": "cap", "scope": "global", "window": "day", "limit_usd": 0.0000001,
                                      "on_exceed": "block"}])
    with pytest.raises(BudgetRefused) as refused:
        Lifecycle(engine).pick(REQUEST, cands, "r1")
    assert refused.value.decision.ordered[0].model == DS
    engine, cands = _engine(failover={"on": {"server_error": "fail"}})
    with pytest.raises(GiveUp) as gave_up:
        Lifecycle(engine).pick(REQUEST, cands, "r2", attempts=[DS], last_failure=(DS, cands[0], DOWN))
    assert gave_up.value.decision.ordered and "failover.on.server_error is 'fail'" in gave_up.value.hop.reason


def test_the_shuffle_of_a_group_without_a_route_follows_the_rng():
    engine, cands = _engine()
    request = RouteRequest(group="other", prompt_tokens=100, output_tokens=50)
    others = [dataclasses.replace(c, group="other") for c in cands]

    def picks(seed):
        life = Lifecycle(engine, rng=random.Random(seed))
        return [life.pick(request, others, f"r{i}").candidate.model for i in range(20)]

    assert picks(3) == picks(3)
    assert len(set(picks(3))) == 2
