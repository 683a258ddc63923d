"""What an answered attempt is charged: LiteLLM's cost, the policy's price, or an estimate.

Why its own module: *when* an answer is settled is the answer path's business (``answer_path.py``)
and the settling is the request's :class:`~litellm_payg.runtime.attempt.Attempt`'s; *how much* is
worked out here, from LiteLLM's usage and calculators and the deployment's price
(``charges.py``), so an answer without usage is charged an estimate rather than LiteLLM's $0.
Nothing here settles anything: the reservation's amount, the last resort, is read through the
attempt.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from litellm_payg.adapter import charges
from litellm_payg.runtime.request_state import RequestState

logger = logging.getLogger("litellm_payg")


class AnswerCharges:
    """The part of :class:`~litellm_payg.adapter.routing.PaygRouting` that prices answers (a mixin)."""

    def _attempt_cost(self, request_data: Mapping[str, Any], response: Any, deployment_id: str,
                      plain: Any = charges.UNREAD) -> float:
        """LiteLLM's cost of an answered attempt (``charges.attempt_cost``), or the same number from
        the deployment's per-token price where that is known to be it (``charges.TokenPrices``;
        ``plain``: its ``plain`` of the answer, when the caller worked it out)."""
        candidate = self._candidates.get(deployment_id)
        return self._token_prices.cost(request_data, response, candidate,
                                       lambda: charges.attempt_cost(request_data, response, candidate), plain)


    def _estimate_missing_usage(
        self,
        deployment_id: str,
        reservation_id: str,
        messages: Any,
        tools: Any,
        response: Any,
        state: RequestState,
        model: str | None = None,
    ) -> charges.Charge:
        """The charge for an answer that reported no usage.

        Why: a provider (or an OpenAI-compatible gateway, or a self-hosted server) that answers
        without a ``usage`` block still billed, but LiteLLM then reports 0 tokens and a
        ``response_cost`` of 0.0, so settling what LiteLLM says would record the call at $0 and let
        it escape every budget. Instead the answer is counted with LiteLLM's own token counter
        (prompt: the request's messages and tools; completion: the answer's text, tool calls and
        reasoning, as LiteLLM counts a stream that reported no usage) for the deployment's model,
        and priced at the deployment's price (the one the reservation used; for a deployment
        without one, ``litellm.cost_per_token``). If that cannot be computed, the reservation's
        amount is charged. Never $0 for a priced deployment, never a lost record: the record is
        marked ``usage: estimated`` and a warning names the deployment and the cause. (A deployment
        with no price anywhere is charged the reservation, which is $0 for it, as every answer of
        it is.)
        """
        candidate = self._candidates.get(deployment_id)
        model = (candidate.model if candidate else None) or model or ""
        where = f"{model} (deployment {deployment_id})"
        prompt_tokens: int | None = None
        completion_tokens: int | None = None
        problem = None
        try:
            prompt_tokens = charges.count_prompt(model, messages, tools) if messages else None
            if not prompt_tokens:
                routed = self._prompt_tokens(state)  # what the request was routed with
                if routed is not None:
                    prompt_tokens = routed
            completion_tokens = charges.count_completion(model, response)
            if prompt_tokens is None:
                raise ValueError("the request's messages are not available to count")
        except Exception as exc:  # noqa: BLE001 - a tokenizer or price lookup failure must not lose the charge
            problem = f"LiteLLM could not count or price it: {exc}"
        reserved = self.attempts.of(state).reserved_usd(reservation_id)
        try:
            charge = charges.estimated_charge(candidate, model, prompt_tokens, completion_tokens, reserved,
                                              countable=problem is None)
        except Exception as exc:  # noqa: BLE001 - a price lookup failure must not lose the charge
            problem = f"LiteLLM could not count or price it: {exc}"
            charge = charges.estimated_charge(candidate, model, prompt_tokens, completion_tokens, reserved, countable=False)
        if charge.priced:
            logger.warning(
                "litellm-payg: %s answered without a usage block; charged an estimate of $%s "
                "(%d prompt + %d completion tokens by LiteLLM's token counter)",
                where, charges.usd(charge.cost), prompt_tokens, completion_tokens,
            )
            return charge
        logger.warning(
            "litellm-payg: %s answered without a usage block and no estimate could be made (%s); "
            "charged the reservation's $%s",
            where, problem or "the deployment has no known price", charges.usd(charge.cost),
        )
        return charge


    def _charge_answer(
        self, deployment_id: str, reservation_id: str, response: Any, prompt_tokens: Any, completion_tokens: Any,
        litellm_cost: Callable[[], Any], messages: Any, tools: Any, state: RequestState, model: Any,
        cache_hit: bool = False, usage: Any = charges.UNREAD, plain: Any = None,
    ) -> charges.Charge:
        """What an answer is charged, wherever it is settled: nothing for an answer LiteLLM's cache
        served (the provider was not called; marked ``cache_hit``); an estimate for an answer that
        reported no usage (:meth:`_estimate_missing_usage`); the policy's own price for a
        deployment it prices; else LiteLLM's cost (``litellm_cost``: its logging payload's
        ``response_cost``, or its calculator run on the response inline), and the deployment's
        price where LiteLLM priced billed tokens at $0 (its /v1/messages path does, 1.110.2).
        ``usage``: the answer's ``usage`` when the caller read it; ``plain``: its plain text token
        counts when the caller found them (``TokenPrices.plain``): such a usage reports no cache or
        reasoning tokens, so they are not looked for."""
        if charges.usage_missing(response, prompt_tokens, completion_tokens) and not cache_hit:
            return self._estimate_missing_usage(deployment_id, reservation_id, messages, tools, response, state, model)
        # a speech model bills every character of its input; LiteLLM's cost leaves out the whitespace
        # ("hello world" is priced as 10 characters): the characters the reservation counted are charged
        return charges.answer_charge(self._candidates.get(deployment_id), model, prompt_tokens, completion_tokens,
                                     litellm_cost, characters=state.characters, cache_hit=cache_hit,
                                     details=None if cache_hit or plain is not None else charges.token_details(response, usage))
