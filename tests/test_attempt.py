"""``runtime.attempt``: one request's attempts, from each pick to its outcome, without LiteLLM.

The adapter only turns LiteLLM's callbacks into these events; what each event does to the
reservation, the breaker, the next pick's failover hop and the ``payg_outcome`` observers is
checked here on the runtime alone."""

from __future__ import annotations

import pytest

from litellm_payg.adapter.deployments import candidates_named_by_policy
from litellm_payg.core.decision import RouteRequest
from litellm_payg.core.failure import Failure, FailureClass
from litellm_payg.runtime.request_state import RequestStates
from litellm_payg.policy.load import load_policy
from litellm_payg.runtime import store_access
from litellm_payg.runtime.attempt import AnsweredRequest, Attempts
from litellm_payg.runtime.engine import Engine
from litellm_payg.runtime.lifecycle import GiveUp
from routing_helpers import Recorder

DS, ML = "deepseek/deepseek-chat", "mistral/mistral-large-latest"
DOWN = Failure(FailureClass.SERVER_ERROR, "test", 500, None, "down")
REQUEST = RouteRequest(group="chat", prompt_tokens=100, output_tokens=50)
BUDGET = {"name": "cap", "scope": "global", "window": "day", "limit_usd": 100.0, "on_exceed": "block"}


class _Charge:
    def __init__(self, cost: float, prompt_tokens: int | None = 100, completion_tokens: int | None = 20,
                 estimated: bool = False) -> None:
        self.cost, self.prompt_tokens, self.completion_tokens, self.estimated = cost, prompt_tokens, completion_tokens, estimated

    @property
    def attrs(self):
        return {"usage": "estimated"} if self.estimated else None


@pytest.fixture
def setup():
    def make(**extra):
        policy = load_policy({
            "version": 1, "ledger": "memory://", "budgets": [BUDGET],
            "routes": {"chat": [{"cost_threshold": {"use": DS, "max_usd_per_1k_tokens": 0.0015, "otherwise": ML}}]},
            **extra,
        })
        engine = Engine(policy, ledger="memory://", clock=lambda: 1_000_000.0)
        cands = candidates_named_by_policy(engine)["chat"]
        by_id = {c.deployment_id: c for c in cands}
        recorder = Recorder()
        engine.pm.register(recorder)
        states = RequestStates()
        attempts = Attempts(engine, by_id.get, states)
        state = states.mint({}, "trace-1")
        make.states = states
        return engine, cands, attempts.of(state), recorder
    return make


def test_an_answered_attempt_is_settled_once_and_heard_once(setup):
    engine, cands, attempt, recorder = setup(failover={})
    pick = attempt.pick(REQUEST, cands)
    assert pick.candidate.model == DS and attempt.sent(DS)
    reservation_id = attempt.take(DS)
    assert attempt.reserved_usd(reservation_id) > 0
    attempt.answered(DS, reservation_id, _Charge(0.002), tokens=120, latency=0.5, ttft=0.1)
    assert attempt.take(DS) is None  # settled: a later callback finds nothing to end
    assert [r.amount_usd for r in store_access.records(engine)] == [0.002]
    assert store_access.all_settled(engine)
    assert store_access.breaker_states(engine, [DS], 1_000_000.0)[DS].state == "closed"
    assert [(o.ok, o.deployment_id, o.cost_usd, o.latency_s) for o in recorder.outcomes] == [(True, DS, 0.002, 0.5)]


def test_a_failed_attempt_is_released_fed_to_the_breaker_and_steers_the_next_pick(setup):
    engine, cands, attempt, recorder = setup(failover={"circuit_breaker": {"failures": 1, "within_s": 60, "open_s": 30}})
    attempt.pick(REQUEST, cands)
    attempt.sent(DS)
    error = RuntimeError("down")
    attempt.failed(DS, DOWN, error, reservation_id=attempt.take(DS))
    assert store_access.records(engine) == [] and store_access.all_settled(engine)  # it did not bill
    assert store_access.breaker_states(engine, [DS], 1_000_000.0)[DS].state == "open"
    assert [(o.ok, o.error, o.cost_usd) for o in recorder.outcomes] == [(False, error, 0.0)]
    second = attempt.pick(REQUEST, cands)
    assert second.candidate.model == ML and attempt.tried == 2
    assert any(note.startswith(f"failover after {DS}") for note in second.decision.notes)


def test_an_answered_failure_is_charged_what_it_billed(setup):
    engine, cands, attempt, recorder = setup(failover={})
    attempt.pick(REQUEST, cands)
    attempt.failed(DS, DOWN, RuntimeError("garbled"), reservation_id=attempt.take(DS),
                   billed=_Charge(0.001, completion_tokens=None, estimated=True),
                   billed_attrs={"usage": "estimated", "failed": "test"})
    [record] = store_access.records(engine)
    assert record.amount_usd == 0.001 and record.attrs["failed"] == "test"
    assert recorder.outcomes[0].usage_estimated and recorder.outcomes[0].cost_usd == 0.001


def test_a_fail_failover_is_final_and_the_next_pick_gives_up_with_its_error(setup):
    engine, cands, attempt, recorder = setup(failover={"on": {"server_error": "fail"}})
    attempt.pick(REQUEST, cands)
    error = RuntimeError("bad request")
    assert attempt.failover_action(DOWN) == "fail"
    attempt.failed(DS, DOWN, error, reservation_id=attempt.take(DS))
    assert attempt.state.final_error is error
    with pytest.raises(GiveUp) as gave_up:
        attempt.pick(REQUEST, cands)
    assert gave_up.value.error is error


def test_a_pick_never_sent_is_released_and_not_counted_as_tried(setup):
    engine, cands, attempt, recorder = setup()
    attempt.pick(REQUEST, cands)
    assert not store_access.all_settled(engine)
    attempt.released()
    assert store_access.all_settled(engine) and attempt.tried == 0 and store_access.records(engine) == []
    attempt.pick(REQUEST, cands)
    attempt.sent(DS)
    attempt.released()  # sent: an attempt now, left for its outcome
    assert not store_access.all_settled(engine) and attempt.tried == 1


def test_a_rejected_answer_is_charged_and_counts_against_the_deployment(setup):
    engine, cands, attempt, recorder = setup(failover={"circuit_breaker": {"failures": 1, "within_s": 60, "open_s": 30}})
    attempt.pick(REQUEST, cands)
    error = ValueError("invalid answer")
    attempt.rejected(DS, attempt.take(DS), _Charge(0.003), error, tokens=120)
    assert [r.amount_usd for r in store_access.records(engine)] == [0.003]
    assert store_access.breaker_states(engine, [DS], 1_000_000.0)[DS].state == "open"
    assert [(o.ok, o.error) for o in recorder.outcomes] == [(False, error)]


def test_a_finished_request_keeps_only_its_run_for_late_readers(setup):
    engine, cands, attempt, recorder = setup()
    attempt.pick(REQUEST, cands)
    attempt.answered(DS, attempt.take(DS), _Charge(0.001), tokens=None)
    attempt.finish(late_headers=True)
    assert isinstance(attempt.state.request, AnsweredRequest) and attempt.state.finished
    assert setup.states.find({"payg_request": attempt.state.id}) is attempt.state  # kept for the headers
    attempt.finish(late_headers=False)
    assert setup.states.find({"payg_request": attempt.state.id}) is None
