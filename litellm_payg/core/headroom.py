"""Budget headroom as a pure function of a :class:`~litellm_payg.core.snapshot.Snapshot`.

A candidate whose ``downgrade`` budget has no room left for this request's reservation estimate is
dropped, with a reason that says how much was spent, how much is in flight, the estimate and the
limit. The reads (the ledger's usage at the snapshot's time) were made when the snapshot was taken;
reservation (``spend.py``) stays the authority under concurrency. The wording helpers are shared
with ``spend.py``, so a drop here and a refusal at reservation describe a budget the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

from litellm_payg.core.budgets import BudgetBucket
from litellm_payg.core.decision import Candidate, RouteRequest, Step
from litellm_payg.core.buckets import Usage
from litellm_payg.core.snapshot import Snapshot


def over(usage: Usage, estimate: float, limit: float) -> bool:
    return usage.spent_usd + usage.reserved_usd + estimate > limit + 1e-12


def scope_label(bb: BudgetBucket) -> str:
    kind = bb.budget.scope.split(":", 1)[0]
    return "global" if kind == "global" else f"{kind}:{bb.scope_value}"


def budget_label(bb: BudgetBucket) -> str:
    """The budget's name, or its position-based id (``b0``) as its ledger keys spell it."""
    return bb.budget.name or bb.bucket.key.split("|", 1)[0]


def exhausted(bb: BudgetBucket, usage: Usage, estimate: float) -> str:
    resets = f", resets {bb.resets_at.isoformat()}" if bb.resets_at else ""
    return (
        f"budget {budget_label(bb)!r} "
        f"({scope_label(bb)}, {bb.budget.window}) exhausted: spent ${usage.spent_usd:.6f} + in flight "
        f"${usage.reserved_usd:.6f} + estimate ${estimate:.6f} > ${bb.budget.limit_usd:g}{resets}"
    )


def headroom(request: RouteRequest, candidates: Sequence[Candidate], snapshot: Snapshot) -> Step | None:
    """Drop the candidates under an exhausted ``downgrade`` budget, with the reason; None when none is.

    A candidate the snapshot has no budgets for (none applies, or it was not among the candidates
    the snapshot was taken for) is kept, and so is everyone when the ledger could not be read."""
    usage = snapshot.usage
    if not usage or not candidates:
        return None
    kept, dropped = [], []
    for c in candidates:
        mine = snapshot.budgets.get(c.deployment_id)
        hit = None
        if mine is not None:
            hit = next((bb for bb in mine.buckets if over(usage[bb.bucket.key], mine.estimate_usd, bb.budget.limit_usd)), None)
        if hit is None:
            kept.append(c)
        else:
            dropped.append(Step.drop(c, exhausted(hit, usage[hit.bucket.key], mine.estimate_usd), "budget", budget_label(hit)))
    if not dropped:
        return None
    return Step(kept, dropped, f"budget: {len(dropped)} deployment(s) under an exhausted downgrade budget")


__all__ = ["budget_label", "exhausted", "headroom", "over", "scope_label"]
