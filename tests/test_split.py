"""Weighted A/B splits: proportions over many users, and stickiness per user."""

from __future__ import annotations

from pathlib import Path

from litellm_payg.core.decision import RouteRequest
from litellm_payg.runtime.engine import Engine
from litellm_payg.policy.load import load_policy
from litellm_payg.stores.prices import candidate_from_deployment

from routing_helpers import DEEPSEEK, attached, deployment, served_by

AB = Path(__file__).resolve().parents[1] / "policies" / "ab-split.yaml"


def _engine_and_candidates():
    policy = load_policy(AB)
    deployments = [deployment("chat", "gpt-4o-mini", "mini"), deployment("chat", DEEPSEEK, "ds")]
    return Engine(policy), [candidate_from_deployment(d, policy.models) for d in deployments]


def test_95_5_split_over_10000_users_lands_within_4_5_to_5_5_percent():
    engine, candidates = _engine_and_candidates()
    arms = {}
    for i in range(10_000):
        user = f"user-{i}"
        decision = engine.decide(RouteRequest("chat", 100, 100, user=user, trace_id=f"t{i}"), candidates)
        arms[user] = decision.chosen.deployment_id
        assert decision.attrs["split_arm"] in ("current", "candidate")
    small = sum(1 for a in arms.values() if a == "ds") / len(arms)
    assert 0.045 <= small <= 0.055, small


def test_every_user_keeps_its_arm_across_calls_and_engines():
    first, candidates = _engine_and_candidates()
    second, _ = _engine_and_candidates()  # a restart: a fresh engine must agree
    for i in range(2000):
        request = RouteRequest("chat", 100, 100, user=f"user-{i}", trace_id=f"a{i}")
        again = RouteRequest("chat", 999, 10, user=f"user-{i}", trace_id=f"b{i}")
        assert first.decide(request, candidates).chosen == second.decide(again, candidates).chosen


async def test_split_through_the_router_is_sticky_per_user():
    model_list = [deployment("chat", "gpt-4o-mini", "mini"), deployment("chat", DEEPSEEK, "ds")]
    with attached(model_list, AB) as (router, _):
        seen: dict[str, set[str]] = {}
        for round_ in range(3):
            for i in range(40):
                response = await router.acompletion(
                    model="chat", messages=[{"role": "user", "content": f"hi {round_}"}], user=f"u{i}"
                )
                seen.setdefault(f"u{i}", set()).add(served_by(response))
    assert all(len(arms) == 1 for arms in seen.values())


def test_requests_without_the_sticky_field_are_split_by_trace_id():
    engine, candidates = _engine_and_candidates()
    decision = engine.decide(RouteRequest("chat", 10, 10, trace_id="abc"), candidates)
    assert any("not sticky" in note for note in decision.notes)
