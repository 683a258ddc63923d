"""The policy's response validators (``validate:``), run where LiteLLM lets them fail an attempt.

Why its own module: LiteLLM swallows an exception raised from a plain ``CustomLogger``'s success
hook, but re-raises a ``CustomGuardrail``'s, which then counts as a failed attempt; so the
validators run from a guardrail object of their own (:class:`ResponseGuard`), installed only when
some validator can run (:func:`validates`). An answer they reject billed: the request's
:class:`~litellm_payg.runtime.attempt.Attempt` charges it, counts it against the deployment's
breaker and reports it as a failure (``Attempt.rejected``); LiteLLM's failure hook then only plans
the failover step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from litellm.integrations.custom_guardrail import CustomGuardrail

from litellm_payg.adapter import charges
from litellm_payg.adapter.failures import InvalidResponseError
from litellm_payg.runtime.answers import check_answer


class ResponseGuard(CustomGuardrail):
    """Fails an attempt whose answer the validators reject, so the request moves on.

    LiteLLM swallows an exception raised from a plain ``CustomLogger``'s
    ``async_post_call_success_deployment_hook`` ("a broken callback must not fail a completed
    request") but re-raises a ``CustomGuardrail``'s, which then counts as a failed attempt. This
    object does nothing else: it has no guardrail event hooks and delegates to the adapter.
    """

    def __init__(self, adapter: Any):
        super().__init__(guardrail_name=f"litellm-payg-validate-{adapter.binding}", default_on=False)
        self.adapter = adapter

    async def async_post_call_success_deployment_hook(self, request_data, response, call_type):
        await self.adapter.check_response(request_data, response)  # raises (after charging it) if rejected
        self.adapter.settle_attempt(request_data, response, call_type)  # accepted: settle it now
        return None


def validates(engine: Any) -> bool:
    """Whether any validator can run: the policy's ``validate:`` list or a third-party hook."""
    if engine.policy.validators:
        return True
    return any(
        impl.plugin_name != "litellm_payg.policy.validators" for impl in engine.pm.hook.payg_validate_response.get_hookimpls()
    )


class ValidatedAnswers:
    """The part of :class:`~litellm_payg.adapter.routing.PaygRouting` the guard calls (a mixin)."""

    async def check_response(self, request_data: Mapping[str, Any], response: Any) -> None:
        """Run the ``payg_validate_response`` hooks on a non-stream answer (``runtime/answers.py``); raise
        :class:`InvalidResponseError` (after charging it) if any finds a problem. Called by
        :class:`ResponseGuard`, because LiteLLM lets only a guardrail's raise fail an attempt."""
        ours = self._ours(request_data)
        if ours is None or request_data.get("stream"):
            return None
        state, deployment_id = ours
        request = state.request
        candidate = self._candidates.get(deployment_id)
        problems = check_answer(self.engine, response, request, candidate)
        if not problems:
            return None
        error = InvalidResponseError(problems, model=candidate.model if candidate else None, deployment_id=deployment_id)
        attempt = self.attempts.of(state)
        reservation_id = attempt.take(deployment_id)
        charge = None
        if reservation_id is not None:  # it billed: still paid for, the charge an accepted answer gets
            prompt_tokens, completion_tokens = charges.answer_tokens(response)
            charge = self._charge_answer(
                deployment_id, reservation_id, response, prompt_tokens, completion_tokens,
                lambda: self._attempt_cost(request_data, response, deployment_id),
                request_data.get("messages"), charges.tools_of(request_data), state, request_data.get("model"),
            )
        tokens = None if charge is None else charges.used_tokens(charge)
        if charge is None:  # settled already: the observers still hear what it cost
            charge = charges.answer_charge(candidate, request_data.get("model"), None, None,
                                           lambda: charges.attempt_cost(request_data, response, candidate))
        attempt.rejected(deployment_id, reservation_id, charge, error, tokens=tokens, model=request_data.get("model"))
        raise error
