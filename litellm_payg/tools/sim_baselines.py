"""What the policy's cost is compared against: the same traffic priced under baselines.

Each single deployment of a group alone, LiteLLM's built-in ``cost-based-routing`` choice (LiteLLM's
own ``LowestCostLoggingHandler`` is asked), the cheapest deployment meeting the policy's quality bar
per request (the *oracle*, a lower bound) and a subscription plan (monthly fee + included tokens +
overage per 1K tokens).

Why apart from the driver: a baseline does not route, it re-prices the classes the driver served
(``Result``) with the driver's :class:`~litellm_payg.tools.sim_pricing.Pricer`; ``what-if`` reads
the quality bar the same way (:func:`quality_bar`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from litellm_payg.tools.sim_pricing import Pricer, litellm_cost_based_choice
from litellm_payg.tools.sim_traffic import TrafficClass, class_request_fields

DAYS_PER_MONTH = 30.0  # a subscription's "month" when the simulated period is not exactly one


@dataclass(frozen=True)
class Plan:
    """A subscription: a monthly fee including some tokens, and a price per 1K tokens above them."""

    fee_usd: float
    included_tokens: int
    overage_usd_per_1k: float

    def cost(self, tokens: int, months: float) -> float:
        over = max(0.0, tokens - self.included_tokens * months)
        return self.fee_usd * months + over / 1000.0 * self.overage_usd_per_1k


def quality_bar(engine: Any, cls: TrafficClass) -> float | None:
    """The highest quality bar that the rules applying to a class's requests set (None: no bar).

    Only the rules that apply: a route with ``when:`` conditions applies the entries whose condition
    the request meets (its ``metadata.step``, tags, user, team, size), as ``Engine.decide`` does, so
    an agent's cheap ``act`` step is not held to its ``plan`` step's bar."""
    from litellm_payg.core.decision import RouteRequest

    route = engine.routes.get(cls.group, [])
    request = RouteRequest(cls.group, cls.prompt_tokens, cls.completion_tokens,
                           metadata={"step": cls.step} if cls.step is not None else {},
                           **class_request_fields(engine.spend.scopes, cls))
    bars = [rule.bar_for(cls.prompt_tokens) for rule in engine.rules_for(request, route) if hasattr(rule, "bar_for")]
    return max(bars) if bars else None


def meets_bar(candidate: Any, bar: float | None) -> bool:
    """Whether a deployment may serve a request held to ``bar`` (None: the rules set no bar)."""
    return bar is None or (candidate.quality is not None and candidate.quality >= bar)


def baselines(result: Any, engine: Any, pricer: Pricer, plan: Plan | None, period_days: float) -> list[dict[str, Any]]:
    """The baselines' rows for a simulation's ``result`` (``sim_result.Result``)."""
    classes = result.classes
    out: list[dict[str, Any]] = []
    policy_by_group: dict[str, float] = {}
    for dep, ci, n in result.charged():
        g = classes[ci].group
        policy_by_group[g] = policy_by_group.get(g, 0.0) + n * result.unit_cost[(dep, ci)]
    for g, cands in result.candidates.items():
        group_classes = [(i, c) for i, c in enumerate(classes) if c.group == g]
        n_req = sum(c.count for _, c in group_classes)
        for cand in cands:
            if not cand.priced:
                continue
            total = math.fsum(c.count * pricer.cost(cand, c.prompt_tokens, c.completion_tokens) for _, c in group_classes)
            meets = [meets_bar(cand, quality_bar(engine, c)) for _, c in group_classes]
            out.append({
                "kind": "single", "group": g, "label": f"only {cand.model} ({cand.deployment_id})" if cand.model != cand.deployment_id else f"only {cand.model}",
                "deployment": cand.deployment_id, "requests": n_req, "cost_usd": total,
                "policy_cost_usd": policy_by_group.get(g, 0.0),
                "meets_quality_bar_for": sum(c.count for (_, c), ok in zip(group_classes, meets) if ok),
            })
    # LiteLLM cost-based-routing: one choice per group
    lc_total, lc_parts, lc_picks, lc_meets = [], {}, {}, 0
    for g, cands in result.candidates.items():
        pick = litellm_cost_based_choice(g, [c for c in cands if c.priced], pricer)
        if pick is None:
            continue
        lc_picks[g] = pick.deployment_id
        part = math.fsum(c.count * pricer.cost(pick, c.prompt_tokens, c.completion_tokens) for c in classes if c.group == g)
        lc_parts[g] = part
        lc_total.append(part)
        # LiteLLM's choice ignores quality: count the requests it sends to a model under their bar
        lc_meets += sum(c.count for c in classes if c.group == g and meets_bar(pick, quality_bar(engine, c)))
    out.append({
        "kind": "litellm-cost-based", "label": "LiteLLM cost-based-routing", "requests": result.requests,
        "cost_usd": math.fsum(lc_total), "picks": lc_picks, "meets_quality_bar_for": lc_meets,
    })
    # oracle: per request the cheapest deployment meeting the policy's bar
    oracle_all, oracle_served, oracle_picks = [], [], {}
    for i, c in enumerate(classes):
        bar = quality_bar(engine, c)
        eligible = [
            x for x in result.candidates[c.group]
            if x.priced and (bar is None or (x.quality is not None and x.quality >= bar))
        ]
        if not eligible:
            continue
        best = min(eligible, key=lambda x: pricer.cost(x, c.prompt_tokens, c.completion_tokens))
        unit = pricer.cost(best, c.prompt_tokens, c.completion_tokens)
        oracle_picks[c.name] = best.deployment_id
        oracle_all.append(c.count * unit)
        oracle_served.append(result.served_by_class[i] * unit)
    out.append({
        "kind": "oracle", "label": "oracle: cheapest meeting the quality bar, per request", "requests": result.requests,
        "cost_usd": math.fsum(oracle_all), "served_cost_usd": math.fsum(oracle_served), "picks": oracle_picks,
    })
    if plan is not None:
        months = period_days / DAYS_PER_MONTH
        out.append({
            "kind": "plan",
            "label": f"plan ${plan.fee_usd:g}/month, {plan.included_tokens:,} tokens incl., ${plan.overage_usd_per_1k:g}/1K over",
            "requests": result.requests, "cost_usd": plan.cost(result.tokens, months), "months": months,
            "tokens": result.tokens, "overage_tokens": max(0.0, result.tokens - plan.included_tokens * months),
        })
    return out

