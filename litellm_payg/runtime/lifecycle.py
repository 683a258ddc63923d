"""One attempt of one request, from the candidates to a single pick and back: written once.

The Router adapter runs it for live traffic (through one request's
:class:`~litellm_payg.runtime.attempt.Attempt`) and ``simulate`` runs it for simulated traffic, so
what a simulation reports is what the plugin would do, failover and circuit breakers included::

    pick:   snapshot (budget usage, breaker states: the reads)
            -> decide (rules and filters: a pure function of request, candidates, snapshot)
            -> failover hop (what the last failure of this request calls for, ``failover.on``)
            -> breaker claim (a half-open deployment's probe slot)
            -> admit (reserve the estimate; a refused downgrade candidate passes to the next)
            -> one Pick, given to the observers once (``payg_decision``, the decision log, metrics)
    finish: the attempt's outcome -> settle or release the reservation, and the deployment's health

Nothing here knows LiteLLM: the adapter turns LiteLLM's exceptions into a :class:`Failure` and
LiteLLM's cost into a number before calling in, and turns :class:`GiveUp` and the budget refusal
into what LiteLLM's callers expect.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from litellm_payg.core.decision import Candidate, Decision, Drop, RouteRequest, Step
from litellm_payg.core.errors import NoDeploymentLeft
from litellm_payg.core.failure import Failure
from litellm_payg.core.snapshot import State
from litellm_payg.runtime.next_hop import NextHop, plan_next
from litellm_payg.runtime.spend import Admission


class GiveUp(Exception):
    """``failover.on`` says the request stops at its last failure (or nothing is left to try): the
    caller re-raises that failure's own error."""

    def __init__(self, hop: NextHop):
        super().__init__(hop.reason)
        self.hop = hop
        #: the last attempt's own error, set by ``runtime.attempt.Attempt.pick`` for the adapter to re-raise
        self.error: BaseException | None = None


@dataclass(frozen=True)
class Pick:
    """The deployment one attempt goes to, the reservation that backs it, and the decision as the
    observers saw it (the pick first, every other candidate with the reason it was not picked)."""

    candidate: Candidate
    reservation_id: str
    decision: Decision
    admission: Admission
    #: the engine's decision before the failover hop, the breaker claim and the reservation
    #: narrowed it (what ``simulate`` counts drops and downgrades from)
    decided: Decision | None = None

    def __init__(self, candidate: Candidate, reservation_id: str, decision: Decision, admission: Admission,
                 decided: Decision | None = None) -> None:
        # written out: one is built on every pick, and a generated frozen __init__ costs twice this
        vars(self).update(candidate=candidate, reservation_id=reservation_id, decision=decision, admission=admission,
                          decided=decided)


class Lifecycle:
    """The runtime's half of an attempt, over one :class:`~litellm_payg.runtime.engine.Engine`."""

    def __init__(self, engine, rng: random.Random | None = None) -> None:
        """``rng``: what a group without a route is shuffled with (``simulate`` passes a seeded one)."""
        self.engine = engine
        self._sample = rng.sample if rng is not None else random.sample

    def pick(
        self,
        request: RouteRequest,
        candidates: Sequence[Candidate],
        reservation_id: str,
        *,
        attempts: Sequence[str] = (),
        last_failure: tuple[str, Candidate | None, Failure] | None = None,
    ) -> Pick:
        """Choose the deployment for this attempt and reserve its estimate.

        ``attempts``: deployment ids this request already tried (earlier attempts);
        ``last_failure``: ``(deployment id, its candidate if known, failure)`` of the last attempt,
        if it failed.
        Raises ``NoDeploymentLeft`` (the policy dropped everything, or every breaker is shut),
        :class:`GiveUp`, and what ``SpendControl.admit`` raises (``BudgetRefused``, ``LedgerDown``);
        each carries the engine's decision it came from as ``decision``."""
        engine = self.engine
        snapshot = engine.snapshot(request, candidates)
        decision = engine.decide(request, candidates, snapshot, observe=False)
        try:
            if not decision.ordered:
                engine.observe(decision)
                raise NoDeploymentLeft(
                    request.group, [(d.deployment_id, d.model, f"{d.by}: {d.reason}") for d in decision.dropped],
                    decision.dropped,
                )
            untried = self.next_candidates(decision, request, attempts, last_failure)
            if not decision.governed and len(untried) > 1:
                untried = self._sample(untried, len(untried))  # no route: spread load as LiteLLM's shuffle would
            admission = engine.spend.admit(request, untried, reservation_id, decision.attrs)
        except Exception as exc:
            exc.decision = decision  # type: ignore[attr-defined]
            raise
        final = as_picked(decision, admission.candidate, untried, admission.skipped, attempts)
        engine.observe(final)
        return Pick(admission.candidate, reservation_id, final, admission, decision)

    def next_candidates(
        self,
        decision: Decision,
        request: RouteRequest,
        attempts: Sequence[str],
        last_failure: tuple[str, Candidate | None, Failure] | None,
    ) -> list[Candidate]:
        """The candidates this pick may use, best first: untried ones, narrowed by what the last
        failure of this request calls for (``failover.on``) and by the circuit breakers (the first
        one a breaker allows is claimed: ``allow`` takes a half-open probe slot)."""
        # the decision's own list when nothing narrows it (a first attempt): read, never changed, here
        # and by as_picked, which then knows it at once
        untried = [c for c in decision.ordered if c.deployment_id not in attempts] if attempts else decision.ordered
        failover = self.engine.policy.failover
        if failover is not None and last_failure is not None:
            failed_id, failed, failure = last_failure
            hop = plan_next(failover, failure, failed, decision.ordered, attempts, lambda: request.prompt_tokens)
            decision.notes.append(f"failover after {failed_id}: {hop.reason}")
            if not hop.candidates:
                raise GiveUp(hop)
            untried = hop.candidates
        if not untried:
            untried = decision.ordered[:1]  # every candidate was tried: a LiteLLM retry gets the best again
        health = self.engine.health
        if health is not None:
            allowed = next((c for c in untried if health.allow(c.deployment_id)), None)
            if allowed is None:
                raise NoDeploymentLeft(
                    request.group, [(c.deployment_id, c.model, "circuit breaker half-open, no probe slot free") for c in untried]
                )
            untried = [allowed] + [c for c in untried if c is not allowed]
        return untried

    def succeeded(self, pick_or_reservation: Pick | str, deployment_id: str, cost_usd: float,
                  latency_s: float | None = None, ttft_s: float | None = None,
                  attrs: Mapping[str, object] | None = None, tokens: int | None = None) -> State | None:
        """The attempt was answered: charge what it cost (and the ``tokens`` it used, prompt and
        output, to its run's token counter) and record the deployment's latency.
        Returns the deployment's breaker state after it (None without ``failover:``)."""
        rid = pick_or_reservation.reservation_id if isinstance(pick_or_reservation, Pick) else pick_or_reservation
        self.engine.spend.settle(rid, cost_usd, attrs, tokens=tokens)
        if self.engine.health is not None:
            return self.engine.health.record(deployment_id, ok=True, latency_s=latency_s, ttft_s=ttft_s)
        return None

    def failed(self, pick_or_reservation: Pick | str | None, deployment_id: str, failure: Failure,
               charge_usd: float | None = None, attrs: Mapping[str, object] | None = None) -> State | None:
        """The attempt failed: release its reservation (or charge ``charge_usd``, with the record
        attributes ``attrs``, when the provider answered before it failed) and feed a failure that
        is the deployment's to its breaker.
        ``None`` as the reservation: the caller already settled it (or there was none), only the
        breaker is told. Returns the breaker state after it (None without ``failover:`` or when the
        failure is the request's, not the deployment's)."""
        rid = pick_or_reservation.reservation_id if isinstance(pick_or_reservation, Pick) else pick_or_reservation
        if rid is None:
            pass
        elif charge_usd is None:
            self.engine.spend.release(rid)
        else:
            self.engine.spend.settle(rid, charge_usd, attrs)
        if self.engine.health is not None and failure.cls.counts_against_deployment:
            return self.engine.health.record(deployment_id, ok=False)
        return None

    def released(self, pick_or_reservation: Pick | str) -> None:
        """The pick was never sent (or its answer is not wanted): free its reservation; the
        deployment's health is not told, nothing happened to it."""
        rid = pick_or_reservation.reservation_id if isinstance(pick_or_reservation, Pick) else pick_or_reservation
        self.engine.spend.release(rid)


def as_picked(
    decision: Decision, pick: Candidate, untried: Sequence[Candidate], skipped: Sequence[Drop], tried: Sequence[str]
) -> Decision:
    """The decision as this attempt applies it: ``pick`` first, then what the request could still
    fall back to; every other candidate dropped with its reason (a rule, a budget refusal at
    reservation, an earlier attempt, the failover step or a circuit breaker). What observers,
    the decision log, metrics and response headers are given, once per attempt."""
    ranked = decision.ordered
    if not skipped and ranked and pick is ranked[0]:
        if untried is ranked:
            return decision  # the usual first attempt: the engine's order, applied as it is
        if len(untried) == len(ranked):
            for a, b in zip(untried, ranked):  # a loop, not all(genexpr): this runs on every pick
                if a is not b:
                    break
            else:
                return decision  # the engine's order, in a list of its own
    refused = {d.deployment_id for d in skipped}
    ordered = [pick] + [c for c in untried if c is not pick and c.deployment_id not in refused]
    kept = {c.deployment_id for c in ordered}
    dropped = list(decision.dropped) + list(skipped)
    for c in decision.ordered:
        if c.deployment_id in kept or c.deployment_id in refused:
            continue
        why = "already tried for this request" if c.deployment_id in tried else "left out by the failover step or a circuit breaker"
        dropped.append(Step.drop(c, why, "failover"))
    return dataclasses.replace(decision, ordered=ordered, dropped=dropped)
