"""``decide`` is a pure function of (request, candidates, snapshot, policy).

``Engine.snapshot`` makes every read a decision needs (the clock, the ``downgrade`` budgets' usage,
the breakers and latency); the filters read only that frozen value. These tests take a snapshot
from real stores (memory, SQLite, Redis), then make every store and the clock raise, and decide
again from the snapshot alone.
"""

from __future__ import annotations

import dataclasses

import pytest

import litellm_payg
from litellm_payg.core.decision import Candidate, RouteRequest, Step
from litellm_payg.runtime.engine import Engine
from litellm_payg.policy.load import load_policy
from litellm_payg.core.snapshot import Snapshot

from services import BACKENDS, ledger_url

T0 = 1_700_000_000.0
REQUEST = RouteRequest(group="chat", prompt_tokens=100, output_tokens=50, max_tokens=50)
DS, ML, GPT = (
    Candidate(dep, model, provider, "chat", price, price * 2)
    for dep, model, provider, price in (
        ("ds", "deepseek/deepseek-chat", "deepseek", 1e-6),
        ("ml", "mistral/mistral-large-latest", "mistral", 2e-6),
        ("gpt", "openai/gpt-4o-mini", "openai", 3e-6),
    )
)
CANDIDATES = [DS, ML, GPT]


def policy(ledger: str) -> dict:
    """ds is under a downgrade budget this request's estimate (100 x 1e-6 + 50 x 2e-6) exceeds; a
    single failure opens a breaker."""
    return {
        "version": 1,
        "ledger": ledger,
        "budgets": [{"name": "ds-cap", "scope": "deployment:ds", "window": "day", "limit_usd": 0.0001,
                     "on_exceed": "downgrade"}],
        "failover": {"circuit_breaker": {"failures": 1, "within_s": 60, "open_s": 30}},
    }


class Refuses:
    """A stand-in for a store or a clock that must not be used: any use fails the test."""

    def __init__(self, what: str):
        self._what = what

    def __getattr__(self, name: str):
        raise AssertionError(f"decide used the {self._what} ({name}) although it was given a snapshot")

    def __call__(self, *args, **kwargs):
        raise AssertionError(f"decide called the {self._what} although it was given a snapshot")


@pytest.fixture(params=BACKENDS)
def engine(request, tmp_path):
    engine = Engine(load_policy(policy(ledger_url(request.param, tmp_path))), clock=lambda: T0)
    try:
        yield engine
    finally:
        if engine.health is not None:
            engine.health.reset()
        engine.detach()


def summary(decision) -> tuple:
    return ([c.deployment_id for c in decision.ordered],
            [(d.deployment_id, d.by, d.reason) for d in decision.dropped], decision.notes)


def test_decide_from_a_snapshot_reads_no_store_and_gives_the_same_decision(engine, monkeypatch):
    engine.health.record("gpt", ok=False)  # its breaker opens
    snap = engine.snapshot(REQUEST, CANDIDATES)
    assert snap.now == T0 and snap.ledger_error is None and snap.health_error is None
    assert snap.health["gpt"].state == "open"
    assert snap.budgets["ds"].estimate_usd == pytest.approx(2e-4) and set(snap.budgets) == {"ds"}
    expected = summary(engine.decide(REQUEST, CANDIDATES, snap, observe=False))
    assert expected[0] == ["ml"]
    assert [(d, by) for d, by, _ in expected[1]] == [("ds", "budget"), ("gpt", "failover")]
    assert "budget 'ds-cap' (deployment:ds, day) exhausted" in expected[1][0][2]

    monkeypatch.setattr(engine.spend, "_ledger", Refuses("budget ledger"))
    monkeypatch.setattr(engine.spend, "clock", Refuses("clock"))
    monkeypatch.setattr(engine, "health", Refuses("health store"))
    first = engine.decide(REQUEST, CANDIDATES, snap, observe=False)
    second = engine.decide(REQUEST, CANDIDATES, snap, observe=False)
    assert summary(first) == summary(second) == expected
    assert first.as_dict() == second.as_dict()


def test_the_decision_follows_the_snapshot_not_the_stores(engine):
    """A breaker that opens after the snapshot was taken changes the next snapshot's decision only."""
    before = engine.snapshot(REQUEST, CANDIDATES)
    engine.health.record("ml", ok=False)
    assert summary(engine.decide(REQUEST, CANDIDATES, before, observe=False))[0] == ["ml", "gpt"]
    assert summary(engine.decide(REQUEST, CANDIDATES, observe=False))[0] == ["gpt"]


def test_unreadable_stores_are_in_the_snapshot_and_every_candidate_goes_through():
    engine = Engine(load_policy(policy("redis://127.0.0.1:1/0")), clock=lambda: T0)
    try:
        snap = engine.snapshot(REQUEST, CANDIDATES)
        assert snap.ledger_error and snap.health_error
        assert not snap.usage and snap.health is None
        decision = engine.decide(REQUEST, CANDIDATES, snap, observe=False)
        assert [c.deployment_id for c in decision.ordered] == ["ds", "ml", "gpt"] and not decision.dropped
        assert any("health store unavailable" in n for n in decision.notes)
    finally:
        engine.detach()


def test_a_snapshot_is_frozen():
    snap = Snapshot(T0, None, budgets={"ds": None})
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.now = 0.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        snap.budgets["ml"] = None  # type: ignore[index]
    assert Snapshot(T0, None).budgets == {} and Snapshot(T0, None).failover is None


@pytest.fixture
def plain_engine():
    """No budgets, no failover: only a third-party filter shapes the decision."""
    engine = Engine(load_policy({"version": 1, "ledger": "memory://"}))
    try:
        yield engine
    finally:
        engine.detach()


def _last_first(candidates) -> Step:
    return Step(list(reversed(candidates)))


def test_a_filter_taking_the_snapshot_gets_the_one_decide_was_given(plain_engine):
    seen = []

    class Plugin:
        @litellm_payg.hookimpl
        def payg_filter_candidates(self, request, candidates, snapshot):
            seen.append(snapshot)
            return _last_first(candidates)

    plain_engine.pm.register(Plugin(), name="snapshot-filter")
    try:
        snap = plain_engine.snapshot(REQUEST, CANDIDATES)
        decision = plain_engine.decide(REQUEST, CANDIDATES, snap, observe=False)
        assert [c.deployment_id for c in decision.ordered] == ["gpt", "ml", "ds"]
        assert seen == [snap]
        plain_engine.decide(REQUEST, CANDIDATES, observe=False)  # no snapshot given: one is taken
        assert isinstance(seen[1], Snapshot) and seen[1] is not snap
    finally:
        plain_engine.pm.unregister(name="snapshot-filter")


def test_a_filter_written_for_the_engine_argument_still_works(plain_engine):
    seen = []

    class Plugin:
        @litellm_payg.hookimpl
        def payg_filter_candidates(self, request, candidates, engine):
            seen.append(engine)
            return _last_first(candidates)

    plain_engine.pm.register(Plugin(), name="engine-filter")
    try:
        decision = plain_engine.decide(REQUEST, CANDIDATES, observe=False)
        assert [c.deployment_id for c in decision.ordered] == ["gpt", "ml", "ds"]
        assert seen == [plain_engine]
    finally:
        plain_engine.pm.unregister(name="engine-filter")
