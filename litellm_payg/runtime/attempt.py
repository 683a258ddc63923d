"""One request's attempts, from each pick to its outcome: the only caller of spend and health.

Why: a request's money and its deployments' health used to be moved from a dozen places of the
LiteLLM adapter (a release here, a settle there, a breaker fed from the validator, another from the
failure hook), so which reservation ended how, and which failure reached a breaker, could only be
told by reading all of them. :class:`Attempt` owns that now. It wraps the request's
:class:`~litellm_payg.runtime.request_state.RequestState` (what ties LiteLLM's several calls of one
request together) and is the one place that makes every spend call (reserve through the lifecycle's
pick, settle, release, the reserved amount) and every health call for a request, plans the failover
hop, and emits ``payg_outcome``::

    pick -> sent -> answered(charge)                 settle, the breaker told ok, outcome
                 -> failed(failure, billed charge)   release or settle, the breaker told, failover, outcome
                 -> broke(...)                       a stream failed while read: release or settle, outcome
                 -> rejected(charge)                 a validator refused the answer: settle, breaker, outcome
         -> released()                               never sent: release

The adapter (``adapter/``) only translates LiteLLM's callbacks into these events, works out what
an answer is charged (``adapter/charges.py``: that needs LiteLLM's calculators) and pulls LiteLLM's
retry levers (an error's ``num_retries``). Nothing here knows LiteLLM.

:class:`Attempts` is the part shared by every request of one adapter: the engine, its
:class:`~litellm_payg.runtime.lifecycle.Lifecycle`, the request states and the outcome observers.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from litellm_payg.core.decision import Candidate, Outcome, RouteRequest
from litellm_payg.core.failure import Failure
from litellm_payg.runtime.request_state import RequestState, RequestStates
from litellm_payg.runtime.lifecycle import GiveUp, Lifecycle, Pick

logger = logging.getLogger("litellm_payg")

#: the built-in ``payg_outcome`` implementation that only logs at INFO (``default_plugins/decision_log.py``)
_DECISION_LOG = "litellm_payg.default_plugins.decision_log"
try:  # pluggy's own hook runner: a plugin manager with monitoring or tracing on runs another one
    from pluggy._callers import _multicall as _PLUGGY_MULTICALL
except ImportError:  # another pluggy layout: always emit
    _PLUGGY_MULTICALL = None


class Charge(Protocol):
    """What the adapter charges an attempt (``adapter/charges.py``'s ``Charge``)."""

    cost: float
    prompt_tokens: Any
    completion_tokens: Any
    estimated: bool

    @property
    def attrs(self) -> Mapping[str, Any] | None: ...


@dataclasses.dataclass(frozen=True)
class AnsweredRequest:
    """What a finished request's state keeps of its RouteRequest: the run (``session``, ``run``) the
    proxy's response headers report on, and the run budgets that applied to it (their index,
    ``SpendControl.run_budgets_of``). The rest (its metadata, the prompt's parts) is dropped."""

    session: Any
    run: Any = None
    run_budgets: tuple[int, ...] = ()


class Attempts:
    """The attempts of one adapter's requests: what each request's :class:`Attempt` shares."""

    def __init__(self, engine: Any, candidate_of: Callable[[str], Candidate | None],
                 states: RequestStates | None = None, lifecycle: Lifecycle | None = None) -> None:
        """``candidate_of``: the adapter's candidate for a deployment id (its deployments may be
        reloaded, so it is asked each time)."""
        self.engine = engine
        self.lifecycle = lifecycle or Lifecycle(engine)
        self.candidate_of = candidate_of
        #: per-request state, keyed by an id the adapter mints (never read from client input)
        self.states = states if states is not None else RequestStates()

    def of(self, state: RequestState) -> "Attempt":
        """The attempts of the request ``state`` belongs to."""
        return Attempt(self, state)

    # -- outcomes ---------------------------------------------------------------------------------

    def outcome_heard(self) -> bool:
        """Whether a ``payg_outcome`` would reach anything: False only when the sole implementation
        is the built-in decision log, with its logger below INFO (it then returns at once), and no
        pluggy monitoring or tracing watches the calls. Checked on every outcome, so a plugin
        registered or a log level changed later is heard from its next outcome on; it saves
        building an Outcome and a pluggy call (about 15 us) on the caller's path."""
        pm = self.engine.pm
        impls = pm.hook.payg_outcome.get_hookimpls()
        if len(impls) != 1 or impls[0].plugin_name != _DECISION_LOG or logger.isEnabledFor(logging.INFO):
            return True
        return getattr(pm, "_inner_hookexec", None) is not _PLUGGY_MULTICALL or _PLUGGY_MULTICALL is None

    def emit(self, state: RequestState, deployment_id: str, ok: bool, cost: float, heard: bool = False,
             **extra: Any) -> None:
        """Tell the ``payg_outcome`` observers how one attempt ended (``heard``: the caller already
        checked :meth:`outcome_heard`)."""
        if not heard and not self.outcome_heard():
            return
        candidate = self.candidate_of(deployment_id)
        outcome = Outcome(
            group=(candidate.group if candidate else None) or "",
            deployment_id=deployment_id,
            model=(candidate.model if candidate else None) or extra.get("model"),  # as configured, with its provider
            ok=ok,
            cost_usd=cost,
            latency_s=extra.get("latency"),
            prompt_tokens=extra.get("prompt_tokens"),
            completion_tokens=extra.get("completion_tokens"),
            error=extra.get("error"),
            trace_id=state.trace_id,
            decision=state.decision,
            usage_estimated=bool(extra.get("usage_estimated")),
        )
        self.engine.pm.hook.payg_outcome(outcome=outcome)


class Attempt:
    """One request's attempts, from each pick to its outcome (the request's state, wrapped).

    Attempts of one request are sequential; each pick opens a reservation on its deployment, and
    whichever of LiteLLM's callbacks for that attempt comes first ends it (:meth:`take` pops it, so
    the later ones find nothing to end and charge nothing)."""

    __slots__ = ("_of", "state")

    def __init__(self, attempts: Attempts, state: RequestState) -> None:
        self._of = attempts
        self.state = state

    # -- the pick ---------------------------------------------------------------------------------

    def pick(self, request: RouteRequest, candidates: Sequence[Candidate]) -> Pick:
        """Choose and reserve the deployment of the request's next attempt, after the failover hop
        the last failure of this request calls for (``failover.on``). Raises what
        :meth:`Lifecycle.pick <litellm_payg.runtime.lifecycle.Lifecycle.pick>` raises; a
        :class:`GiveUp` carries the last attempt's own error as ``error`` (the caller re-raises it)."""
        state = self.state
        last, state.last_failure = state.last_failure, None
        failed = None if last is None else (last[0], self._of.candidate_of(last[0]), last[2])
        reservation_id = state.next_reservation_id()
        try:
            picked = self._of.lifecycle.pick(request, candidates, reservation_id, attempts=state.attempts,
                                             last_failure=failed)
        except GiveUp as stop:
            stop.error = last[1]  # type: ignore[index]
            raise
        deployment_id = picked.candidate.deployment_id
        state.add_reservation(deployment_id, reservation_id)
        state.unsent = (deployment_id, reservation_id)
        state.request = request
        state.decided = picked.decision  # stamped (as_dict) when first read: RequestState.decision
        return picked

    def sent(self, deployment_id: str) -> bool:
        """LiteLLM is about to call ``deployment_id`` for this request: the last pick, if it was
        that deployment's, is an attempt now. Whether that deployment is the one last picked (an
        attempt no pick chose is not the policy's)."""
        state = self.state
        if state.unsent is not None and state.unsent[0] == deployment_id:
            state.unsent = None
        return bool(state.attempts) and state.attempts[-1] == deployment_id

    def released(self) -> None:
        """Free the reservation of a pick that never became an attempt (LiteLLM's scheduler picks
        to see that a deployment is free, then picks again to send; a request refused after its
        pick): it does not count as tried. Nothing when the last pick was sent."""
        state = self.state
        if state.unsent is None:
            return
        deployment_id, reservation_id = state.unsent
        state.unsent = None
        open_ = state.reservations.get(deployment_id) or []
        if reservation_id in open_:
            open_.remove(reservation_id)
            if state.attempts and state.attempts[-1] == deployment_id:
                state.attempts.pop()
            self._of.lifecycle.released(reservation_id)

    @property
    def tried(self) -> int:
        """How many attempts the request made so far."""
        return len(self.state.attempts)

    # -- what an attempt's reservation holds ------------------------------------------------------

    def take(self, deployment_id: str) -> str | None:
        """End-to-be: the oldest open reservation of the attempt on ``deployment_id``, taken off
        the request so no later callback ends it again; None when it already ended."""
        return self.state.pop_reservation(deployment_id)

    def reserved_usd(self, reservation_id: str | None) -> float | None:
        """What ``reservation_id`` holds (its pessimistic estimate: the most the attempt may bill),
        or None when it is not open."""
        return None if reservation_id is None else self._of.engine.spend.reserved_usd(reservation_id)

    def open_usd(self, deployment_id: str) -> float | None:
        """What the oldest open reservation on ``deployment_id`` holds, without ending it."""
        open_ = self.state.reservations.get(deployment_id)
        return self.reserved_usd(open_[0]) if open_ else None

    # -- outcomes ---------------------------------------------------------------------------------

    def answered(self, deployment_id: str, reservation_id: str, charge: Charge, *, tokens: int | None,
                 latency: float | None = None, ttft: float | None = None, model: Any = None,
                 health: bool = True, before_outcome: Callable[[], None] | None = None) -> None:
        """The attempt was answered: charge it (``tokens``: what it used, for its run's token
        counter), tell the deployment's breaker it answered and record its latency (not with
        ``health=False``), then (after ``before_outcome``) the ``payg_outcome`` observers."""
        if health:
            self._of.lifecycle.succeeded(reservation_id, deployment_id, charge.cost, latency, ttft, charge.attrs,
                                         tokens=tokens)
        else:
            self._of.engine.spend.settle(reservation_id, charge.cost, charge.attrs, tokens=tokens)
        if before_outcome is not None:
            before_outcome()
        if self._of.outcome_heard():  # checked first: the arguments are not built for nothing
            self._of.emit(
                self.state, deployment_id, ok=True, cost=charge.cost, latency=latency, model=model,
                prompt_tokens=charge.prompt_tokens, completion_tokens=charge.completion_tokens,
                usage_estimated=charge.estimated, heard=True,
            )

    def failover_action(self, failure: Failure) -> str | None:
        """What ``failover.on`` says to do after ``failure`` (None without ``failover:``)."""
        failover = self._of.engine.policy.failover
        return None if failover is None else failover.action_for(failure.cls.value)

    def failed(self, deployment_id: str, failure: Failure, error: BaseException, *,
               reservation_id: str | None = None, billed: Charge | None = None,
               billed_attrs: Mapping[str, Any] | None = None, reported: bool = False, model: Any = None) -> Any:
        """The attempt on ``deployment_id`` failed with ``error`` (diagnosed as ``failure``).

        Its reservation is released, or charged ``billed`` (with ``billed_attrs``) when the
        provider answered before it failed; a failure that is the deployment's is fed to its
        breaker. ``reported``: a validator already rejected the answer (:meth:`rejected` charged it
        and told the breaker and the observers), so only the failover step is left. Then the next
        pick's failover hop is planned from it: the failure is kept for that pick, and a ``fail``
        makes the error final for the request (no retry or fallback may route around it). Returns
        the deployment's breaker state after it, when its breaker was told (``simulate`` counts
        the openings)."""
        health = None
        if not reported:
            health = self._of.lifecycle.failed(reservation_id, deployment_id, failure,
                                               None if billed is None else billed.cost, billed_attrs)
        action = self.failover_action(failure)
        if action is not None:
            self.state.last_failure = (deployment_id, error, failure)
            if action == "fail":
                self.state.final_error = error
        if not reported:
            self._emit_failure(deployment_id, error, billed, model)
        return health

    def broke(self, deployment_id: str, reservation_id: str, error: BaseException | None, *,
              billed: Charge | None = None, billed_attrs: Mapping[str, Any] | None = None, model: Any = None) -> None:
        """A stream attempt failed while it was read (LiteLLM reports it only to its failure log,
        after the Router returned the stream): its reservation is released (it failed before any
        answer: it did not bill), or charged ``billed`` when the stream had begun. The breaker is
        not told and no failover follows: the Router has already answered."""
        spend = self._of.engine.spend
        if billed is None:
            spend.release(reservation_id)
        else:
            spend.settle(reservation_id, billed.cost, billed_attrs)
        if error is not None:
            self._emit_failure(deployment_id, error, billed, model)

    def rejected(self, deployment_id: str, reservation_id: str | None, charge: Charge, error: BaseException, *,
                 tokens: int | None = None, model: Any = None) -> None:
        """A validator rejected the answer of the attempt on ``deployment_id``: it billed, so its
        reservation (if still open) is charged ``charge``; the deployment's breaker counts it as a
        failure, and the observers hear of it as one."""
        if reservation_id is not None:
            self._of.engine.spend.settle(reservation_id, charge.cost, charge.attrs, tokens=tokens)
        health = self._of.engine.health
        if health is not None:
            health.record(deployment_id, ok=False)
        self._of.emit(self.state, deployment_id, ok=False, cost=charge.cost, error=error, model=model,
                      **({"prompt_tokens": charge.prompt_tokens, "completion_tokens": charge.completion_tokens,
                          "usage_estimated": True} if charge.estimated else {}))

    def _emit_failure(self, deployment_id: str, error: BaseException, billed: Charge | None, model: Any) -> None:
        if billed is None:
            self._of.emit(self.state, deployment_id, ok=False, cost=0.0, error=error, model=model)
            return
        self._of.emit(self.state, deployment_id, ok=False, cost=billed.cost, error=error, model=model,
                      prompt_tokens=billed.prompt_tokens, usage_estimated=True)

    # -- the request's end ------------------------------------------------------------------------

    def finish(self, late_headers: bool) -> None:
        """The request was answered: its state is released now, unless the proxy's response headers
        (``late_headers``) have not read its decision yet; then only what its next attempt would
        need is dropped, and the state stays among the last finished (bounded) until they do,
        keeping of its request only the run it belongs to (:class:`AnsweredRequest`, what the
        headers report)."""
        state, states = self.state, self._of.states
        if not late_headers:
            states.finished_and_forgotten(state)  # nothing reads it later: gone at once
        else:
            states.finished(state)
        if state.request is not None and not isinstance(state.request, AnsweredRequest):
            request = state.request
            state.request = AnsweredRequest(
                session=getattr(request, "session", None), run=getattr(request, "run", None),
                run_budgets=self._of.engine.spend.run_budgets_of(request) if late_headers else ())
        state.count_prompt = None  # holds the prompt's parts
        if late_headers:
            state.decision = state.decision  # stamped now: the Decision it is made from holds the request
        else:
            state.decided = None
        state.last_failure = None
        state.final_error = None
        if late_headers and state.headers_sent:
            states.forget(state)

    def ended_in_error(self) -> None:
        """The request ended in an error (a refusal, its last attempt failed): forget its state now,
        after releasing a pick that never became an attempt. A refused request's state holds its
        final error, whose traceback holds the filter's frames and so the whole request. A state
        with an attempt's reservation still open is kept: LiteLLM's failure event for that attempt
        ends it later."""
        self.released()
        if not self.state.open_reservations:
            self._of.states.forget(self.state)
