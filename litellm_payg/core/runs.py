"""Run budgets (``scope: session:*``, ``window: session:<idle>``): the pure half.

A run is what a client names with a session id (``identity.session_of``): an agent's conversation,
a batch job. Its budget is a ledger bucket that lives until the run has been idle for the window's
time, plus counters (requests, one prompt's repeats) reserved with it in one atomic call
(``budgets.buckets_for``, ``budgets.loop_bucket``). What is decided rather than reserved lives here:

* :func:`downgrade_step` / :func:`downgrade`: past a share of the run's limit (spent and in flight,
  read into the snapshot), the run's requests go to the cheapest deployment whose quality is at
  least the step's ``min_quality``; the route's own rules are set aside for it;
* :func:`prompt_hash`: what the loop guard counts;
* :class:`RunStatus`: what a run has spent and has left (``Engine.run_status``, response headers).

Session ids are written by the client: a run cap bounds an honest runaway client, never a hostile
one (a new session id is a new run); the key, user and team caps do that.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from litellm_payg.core.budgets import Budget, BudgetBucket, DowngradeStep
from litellm_payg.core.buckets import Usage
from litellm_payg.core.decision import Candidate, RouteRequest, Step
from litellm_payg.core.identity import session_in


def prompt_hash(messages: Any) -> str | None:
    """A short, stable fingerprint of a request's messages (None without messages): two sends of
    the same conversation hash alike whatever the key order of their dicts."""
    if not messages:
        return None
    text = json.dumps(messages, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:24]


@dataclass(frozen=True)
class RunUsage:
    """One run budget's dollar bucket for a request's run, and its usage when the snapshot was taken."""

    bucket: BudgetBucket
    usage: Usage

    @property
    def share(self) -> float:
        """Spent and in flight, as a share of the run's limit."""
        limit = self.bucket.budget.limit_usd
        return (self.usage.spent_usd + self.usage.reserved_usd) / limit if limit else 1.0


def downgrade_step(runs: Sequence[RunUsage]) -> tuple[RunUsage, DowngradeStep] | None:
    """The downgrade step in force: of the first run budget (policy order) past one of its steps,
    the last step it is past."""
    for run in runs:
        passed = [step for step in run.bucket.budget.downgrade if run.share >= step.at]
        if passed:
            return run, passed[-1]
    return None


def downgrade(request: RouteRequest, candidates: Sequence[Candidate], runs: Sequence[RunUsage]) -> Step | None:
    """The run's progressive downgrade as a decision step, or None when no step is in force: the
    candidates whose quality is at least the step's ``min_quality``, cheapest first for this
    request; the others (and those without a quality score or a price) dropped with the reason."""
    found = downgrade_step(runs)
    if found is None:
        return None
    run, step = found
    budget = run.bucket.budget
    used = run.usage.spent_usd + run.usage.reserved_usd
    why = (f"run {session_in(run.bucket.scope_value)!r} has used {run.share:.0%} of budget {budget_label(budget, run)!r} "
           f"(${used:.6f} of ${budget.limit_usd:g}): past its downgrade step at {step.at:g}")
    kept: list[tuple[float, Candidate]] = []
    dropped = []
    for c in candidates:
        if c.quality is None:
            dropped.append(Step.drop(c, f"{why}; no quality score for {c.model} in the policy's models:", "run"))
        elif c.quality < step.min_quality:
            dropped.append(Step.drop(c, f"{why}; quality {c.quality:g} is below the step's bar {step.min_quality:g}", "run"))
        elif not c.priced:
            dropped.append(Step.drop(c, f"{why}; {c.model} has no known price to compare", "run"))
        else:
            kept.append((c.estimate_usd(request.prompt_tokens, request.output_tokens), c))
    kept.sort(key=lambda ec: ec[0])
    return Step([c for _, c in kept], dropped,
                f"{why}; cheapest deployment with quality >= {step.min_quality:g} (the route's rules are set aside)",
                {"run_downgrade": f"{step.at:g}"})


def budget_label(budget: Budget, run: RunUsage) -> str:
    return budget.name or run.bucket.bucket.key.split("|", 1)[0]


@dataclass(frozen=True)
class RunStatus:
    """What one run has spent and has left under one run budget (``Engine.run_status``)."""

    session: str
    budget: str
    window: str
    spent_usd: float  #: settled charges of this run
    reserved_usd: float  #: reservations of requests still in flight
    limit_usd: float
    requests: int  #: requests answered or in flight in this run
    max_requests: int | None
    #: dollars kept for the run's final requests (``final_reserve``), 0 without one
    reserve_usd: float

    @property
    def remaining_usd(self) -> float:
        """What the run may still spend, its final reserve included."""
        return max(0.0, self.limit_usd - self.spent_usd - self.reserved_usd)

    @property
    def working_remaining_usd(self) -> float:
        """What the run's requests that are not final may still spend (the reserve left out)."""
        return max(0.0, self.limit_usd - self.reserve_usd - self.spent_usd - self.reserved_usd)

    def as_dict(self) -> dict[str, Any]:
        return {
            "session": self.session, "budget": self.budget, "window": self.window,
            "spent_usd": self.spent_usd, "reserved_usd": self.reserved_usd, "limit_usd": self.limit_usd,
            "remaining_usd": self.remaining_usd, "working_remaining_usd": self.working_remaining_usd,
            "requests": self.requests, "max_requests": self.max_requests, "reserve_usd": self.reserve_usd,
        }


__all__ = ["RunStatus", "RunUsage", "downgrade", "downgrade_step", "prompt_hash"]
