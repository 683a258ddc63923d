"""What a simulated request costs, and which deployment LiteLLM's own cost-based routing would pick.

Why a module of its own: pricing is asked by the driver (each served request), the baselines
(every deployment for every class) and ``what-if`` (its ``HistoryPricer`` extends :class:`Pricer`).
A simulated answer's usage is exact (the traffic says its tokens), so it is charged by the same
function as a live answer (``core/charge.py``), LiteLLM's ``cost_per_token`` standing in for the
cost LiteLLM computes for a real response.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from litellm_payg.core.charge import Charge, Tariff, Usage, charge
from litellm_payg.tools.sim_traffic import SimulationError


class Pricer:
    """The charge of a simulated answer per (deployment, prompt tokens, completion tokens), cached:
    LiteLLM's cost function for the tokens (with the deployment's own price where the policy or
    the config overrides LiteLLM's), made a charge by ``core.charge.charge`` as a live answer's is."""

    def __init__(self, candidates: Sequence[Any], policy_models: Mapping[str, Any] | None = None):
        from litellm_payg.stores import prices as pricing

        self._cache: dict[tuple[str, int, int], Charge] = {}
        self.source: dict[str, str] = {}
        self._custom: dict[str, dict[str, float] | None] = {}
        #: deployment id -> True when the policy's ``models:`` sets its price (LiteLLM cannot see that)
        self.policy_overridden: dict[str, bool] = {}
        for c in candidates:
            facts = pricing.facts_for(pricing._refs(c.model, c.deployment_id), policy_models or {})
            self.policy_overridden[c.deployment_id] = facts is not None and facts.input_usd_per_1k is not None
            mapped = pricing.litellm_price(c.model)
            if not c.priced:
                self.source[c.deployment_id] = "unknown"
                self._custom[c.deployment_id] = None
            elif mapped is not None and mapped == (c.input_usd_per_token, c.output_usd_per_token):
                self.source[c.deployment_id] = "LiteLLM price map"
                self._custom[c.deployment_id] = None
            else:
                self.source[c.deployment_id] = (
                    "policy models: override" if self.policy_overridden[c.deployment_id] else "litellm_params override"
                )
                self._custom[c.deployment_id] = {
                    "input_cost_per_token": c.input_usd_per_token, "output_cost_per_token": c.output_usd_per_token,
                }
        self._by_id = {c.deployment_id: c for c in candidates}

    def cost(self, candidate: Any, prompt_tokens: int, completion_tokens: int) -> float:
        return self.answer_charge(candidate, prompt_tokens, completion_tokens).cost

    def answer_charge(self, candidate: Any, prompt_tokens: int, completion_tokens: int) -> Charge:
        """The charge of a simulated answer (exact usage) on ``candidate``, as a live answer's."""
        key = (candidate.deployment_id, prompt_tokens, completion_tokens)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        import litellm

        if not candidate.priced:
            raise SimulationError(
                f"deployment {candidate.deployment_id} ({candidate.model}) has no known price: add "
                f"'models: {{{candidate.model}: {{input_usd_per_1k: ..., output_usd_per_1k: ...}}}}' to the policy"
            )
        custom = self._custom.get(candidate.deployment_id)
        quiet, litellm.suppress_debug_info = litellm.suppress_debug_info, True
        try:
            if custom is not None:
                p, c = litellm.cost_per_token(
                    model=candidate.model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                    custom_cost_per_token=custom,  # type: ignore[arg-type]
                )
            else:
                p, c = litellm.cost_per_token(
                    model=candidate.model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens
                )
        finally:
            litellm.suppress_debug_info = quiet
        exact = Usage(prompt_tokens, completion_tokens, litellm_cost=float(p) + float(c))
        value = self._cache[key] = charge(exact, Tariff.of(candidate))  # as the live adapter charges it
        return value


def litellm_cost_based_choice(group: str, candidates: Sequence[Any], pricer: Pricer) -> Any:
    """The deployment LiteLLM's ``routing_strategy="cost-based-routing"`` picks for this group.

    LiteLLM's own ``LowestCostLoggingHandler`` is asked, with deployment dicts built from the
    candidates (``litellm_params`` prices when the price came from the LiteLLM config; LiteLLM does
    not see the policy's ``models:`` overrides). It ranks by input + output price per token,
    whatever the request's size; with no tpm/rpm limits its choice does not change over time.
    """
    from litellm.caching.caching import DualCache
    from litellm.router_strategy.lowest_cost import LowestCostLoggingHandler

    deployments = []
    for c in candidates:
        params: dict[str, Any] = {"model": c.model}
        custom = pricer._custom.get(c.deployment_id)
        if custom is not None and not pricer.policy_overridden[c.deployment_id]:
            params.update(custom)
        deployments.append({"model_name": group, "litellm_params": params, "model_info": {"id": c.deployment_id}})
    handler = LowestCostLoggingHandler(DualCache())
    picked = asyncio.run(handler.async_get_available_deployments(group, deployments, messages=None))
    if picked is None:
        return None
    return next(c for c in candidates if c.deployment_id == picked["model_info"]["id"])
