"""What a decision may know about the world: one frozen value, read before the decision is made.

``Engine.snapshot(request, candidates)`` does the reading (the budget ledger, the health store, the
clock) and ``Engine.decide(request, candidates, snapshot)`` is then a pure function of the request,
the candidates, this value and the policy: the ``payg_filter_candidates`` plugins read the
snapshot, never a store. So a decision can be replayed, explained or tested from the value alone,
and two decisions given the same four things agree.

This module does no I/O and imports no LiteLLM; neither does anything it imports.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

from litellm_payg.core.budgets import BudgetBucket
from litellm_payg.core.buckets import Usage

State = Literal["closed", "open", "half_open"]

_EMPTY: Mapping[Any, Any] = MappingProxyType({})


@dataclass(frozen=True)
class DeploymentHealth:
    """One deployment's health at a moment."""

    deployment_id: str
    state: State
    failures: int  # failures counted toward opening (closed state, within the window)
    opened_at: float | None  # when the breaker last opened (None: closed)
    open_until: float | None  # when it turns half-open (None: closed)
    opened_by: str | None  # "failures" or "probe" (a failed half-open probe)
    probes_in_flight: int
    probes_allowed: int
    latency_p95_s: float | None
    ttft_p95_s: float | None
    latency_samples: int
    ttft_samples: int

    @property
    def probe_free(self) -> bool:
        return self.state == "half_open" and self.probes_in_flight < self.probes_allowed

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def is_slow(h: DeploymentHealth, max_latency_ms: float | None, max_ttft_ms: float | None = None) -> bool:
    """Whether ``h``'s p95 latency exceeds ``max_latency_ms`` (or its p95 time-to-first-token
    exceeds ``max_ttft_ms``). False while there are too few samples (the p95 is then None)."""
    if max_latency_ms is not None and h.latency_p95_s is not None and h.latency_p95_s * 1000 > max_latency_ms:
        return True
    return max_ttft_ms is not None and h.ttft_p95_s is not None and h.ttft_p95_s * 1000 > max_ttft_ms


@dataclass(frozen=True)
class CandidateBudgets:
    """The ``downgrade`` budgets a request to one candidate falls under, and what it would reserve."""

    #: this request's ``downgrade`` budget buckets on the candidate, in the policy's order
    buckets: tuple[BudgetBucket, ...]
    #: the reservation the request would make on the candidate (``SpendControl.reserve_estimate``)
    estimate_usd: float


@dataclass(frozen=True, init=False)
class Snapshot:
    """The world as one decision sees it. Built by :meth:`litellm_payg.runtime.engine.Engine.snapshot`.

    Budgets cover only ``downgrade`` budgets (the ones a decision acts on; the others refuse or
    alert at reservation). Health is ``None`` when the policy has no ``failover:`` section (no
    health store). A store that could not be read leaves its part empty and says why in
    ``ledger_error`` / ``health_error``: the built-in filters then let every candidate through
    (fail open), as reservation and the breaker claim stay the authorities. The mappings are
    read-only views, whoever built the snapshot."""

    #: the clock's time the snapshot was taken at (budget windows and breaker timers use it)
    now: float
    #: the policy deciding (its ``failover`` settings, and a stable identity for observers)
    policy: Any
    #: per candidate deployment id; a candidate with no entry is under no ``downgrade`` budget
    budgets: Mapping[str, CandidateBudgets]
    #: usage (spent and reserved) of every bucket in ``budgets``, by bucket key, read at ``now``
    usage: Mapping[str, Usage]
    #: why the budget ledger could not be read (``budgets`` and ``usage`` are then empty)
    ledger_error: str | None
    #: breaker and latency state per candidate deployment id; None without a health store
    health: Mapping[str, DeploymentHealth] | None
    #: why the health store could not be read (``health`` is then None)
    health_error: str | None
    #: the request's run, under each run budget with ``downgrade`` steps (``runs.RunUsage``, policy
    #: order); empty without such a budget, without a session id, or when the ledger could not be read
    runs: tuple[Any, ...]
    #: the route's measured quality (``core.quality.QualityView``) when one of its rules judges on
    #: evidence, else None (also when the evidence store could not be read)
    quality: Any

    def __init__(
        self,
        now: float,
        policy: Any,
        budgets: Mapping[str, CandidateBudgets] = _EMPTY,
        usage: Mapping[str, Usage] = _EMPTY,
        ledger_error: str | None = None,
        health: Mapping[str, DeploymentHealth] | None = None,
        health_error: str | None = None,
        runs: tuple[Any, ...] = (),
        quality: Any = None,
    ) -> None:
        # written out rather than generated: one is built on every decision, and this is half the
        # cost of a generated frozen __init__ with default factories and a __post_init__
        if budgets is _EMPTY and usage is _EMPTY and health is None and runs == ():
            # the usual snapshot (``Engine.snapshot`` with nothing to read): nothing to copy
            vars(self).update(now=now, policy=policy, budgets=_EMPTY, usage=_EMPTY, ledger_error=ledger_error, health=None,
                              health_error=health_error, runs=(), quality=quality)
            return
        vars(self).update(
            now=now,
            policy=policy,
            budgets=frozen(budgets),
            usage=frozen(usage),
            ledger_error=ledger_error,
            health=None if health is None else frozen(health),
            health_error=health_error,
            runs=tuple(runs),
            quality=quality,
        )

    @property
    def failover(self) -> Any:
        """The policy's ``failover:`` settings (a ``FailoverSettings``), or None."""
        return getattr(self.policy, "failover", None)


def frozen(mapping: Mapping[Any, Any]) -> Mapping[Any, Any]:
    """A read-only copy of ``mapping`` (itself when it is one already; the shared empty one when empty)."""
    if type(mapping) is MappingProxyType:
        return mapping
    return MappingProxyType(dict(mapping)) if mapping else _EMPTY


__all__ = ["CandidateBudgets", "DeploymentHealth", "Snapshot", "State", "frozen", "is_slow"]
