"""A failed attempt: what LiteLLM's two failure callbacks mean, and what an answered failure billed.

Why its own module: an attempt fails in two places LiteLLM reports differently. Its call raised
(``async_post_call_failure_deployment_hook``, inline, before the Router retries or falls back), or
a stream failed while it was read, after the Router returned it (``async_log_failure_event``
only). Both become one event of the request's :class:`~litellm_payg.runtime.attempt.Attempt`
(``failed`` / ``broke``), which releases or settles the reservation, feeds the breaker, keeps the
failure for the next pick's failover hop and tells the observers. What stays here is the
translation (LiteLLM's exception diagnosed into a :class:`~litellm_payg.core.failure.Failure`),
the estimate of what an attempt that failed after the provider answered billed, and LiteLLM's
retry lever (an error's ``num_retries``), which only the adapter may pull.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from litellm_payg.adapter import charges
from litellm_payg.adapter.failures import (
    MID_STREAM, Failure, FailureClass, InvalidResponseError, diagnose, diagnose_broken_stream, timed_out_after_sending,
)
from litellm_payg.runtime.request_state import RequestState
from litellm_payg.adapter.request_metadata import metadata_of
from litellm_payg.runtime.attempt import Attempt

logger = logging.getLogger("litellm_payg")


class FailurePath:
    """The part of :class:`~litellm_payg.adapter.routing.PaygRouting` that hears failures (a mixin)."""

    async def async_post_call_failure_deployment_hook(self, request_data, exception, call_type, fallback_depth=None):
        ours = self._ours(request_data)
        if ours is None:
            return None
        state, deployment_id = ours
        call_id = request_data.get("litellm_call_id")
        if call_id:
            state.handled_calls.add(str(call_id))  # LiteLLM's failure log of this attempt is then left alone
        attempt = self.attempts.of(state)
        reservation_id = attempt.take(deployment_id)
        failure = diagnose(exception)
        model = request_data.get("model")
        # an answer our validators rejected was charged, fed to the breaker and reported where it
        # was rejected (Attempt.rejected): only the failover step is left of it
        rejected = isinstance(exception, InvalidResponseError)
        billed: tuple[charges.Charge, dict[str, Any]] | None = None
        if not rejected and reservation_id is not None and (failure.answered or (
                not request_data.get("stream") and timed_out_after_sending(exception))):
            # the provider answered 200 before the attempt failed, or had the whole request when
            # LiteLLM stopped waiting for its answer (a read timeout): it billed, or may bill, so
            # charge it (a stream's first-token timeout is released by the failure log: README)
            billed = self._charge_answered_failure(attempt, deployment_id, reservation_id, failure, state, model)
        self._pull_retry_lever(attempt, deployment_id, exception, failure)
        attempt.failed(deployment_id, failure, exception, reservation_id=reservation_id,
                       billed=None if billed is None else billed[0], billed_attrs=None if billed is None else billed[1],
                       reported=rejected, model=model)  # a failed call does not bill: released
        return None

    def _pull_retry_lever(self, attempt: Attempt, deployment_id: str, exception: BaseException, failure: Failure) -> None:
        """Make LiteLLM do what ``failover.on`` says after ``failure``: LiteLLM reads an error's own
        ``num_retries`` to decide whether to retry the group."""
        action = attempt.failover_action(failure)
        if action is None:
            return
        if action != "fail" and getattr(exception, "num_retries", None) in (None, 0):
            # LiteLLM does not retry some errors within the group (a context window error waits
            # for context_window_fallbacks); the policy says try another deployment, so allow
            # one more attempt per untried candidate
            left = len([c for c in self._candidates.values() if c.group == (self._candidates.get(deployment_id) or c).group])
            try:
                exception.num_retries = max(1, left - attempt.tried)  # type: ignore[attr-defined]
            except AttributeError:
                pass
        if action == "fail":
            # a configuration error (auth, a bad request) must reach the caller, not be retried
            # or hidden behind a fallback (the attempt makes it final for the request)
            try:
                exception.num_retries = 0  # type: ignore[attr-defined]
            except AttributeError:
                pass

    async def async_log_failure_event(self, kwargs, response_obj, start_time, end_time):
        """The spend of a stream attempt that failed while it was read.

        LiteLLM (1.110.2) calls the failure hook above only when its call raises; a stream that
        fails later (mid-way, or before its first chunk while the Router reads it) is reported only
        here, so without this its reservation would stay open until ``reservation_ttl_s`` and then
        be charged in full. An attempt the hook already handled is skipped (by ``litellm_call_id``),
        and so is every non-stream failure (the hook sees all of those). The stream had begun —
        the provider answered 200 — when LiteLLM recovered partial usage from its chunks
        (``combined_usage_object``, its "an interrupted stream still billed"): then it is charged
        the prompt's estimate like an answered failure in the hook; else its reservation is released.
        """
        litellm_params = kwargs.get("litellm_params") or {}
        state = self.states.find(metadata_of(litellm_params))
        if state is None or not kwargs.get("stream"):
            return
        call_id = kwargs.get("litellm_call_id")
        if not call_id or str(call_id) in state.handled_calls:
            return
        state.handled_calls.add(str(call_id))  # a repeated failure log of the same attempt charges nothing more
        slo = kwargs.get("standard_logging_object") or {}
        deployment_id = str((litellm_params.get("model_info") or {}).get("id") or slo.get("model_id"))
        attempt = self.attempts.of(state)
        reservation_id = attempt.take(deployment_id)
        if reservation_id is None:
            return
        exception = kwargs.get("exception")
        failure = diagnose(exception) if isinstance(exception, BaseException) else None
        model = litellm_params.get("model") or kwargs.get("model")
        billed: tuple[charges.Charge, dict[str, Any]] | None = None
        if (failure is None or not failure.answered) and charges.stream_had_begun(kwargs):
            # LiteLLM hands this log the provider's own error, unwrapped from MidStreamFallbackError:
            # the evidence that the stream had begun is the partial usage LiteLLM recovered from it
            failure = (diagnose_broken_stream(exception) if isinstance(exception, BaseException)
                       else Failure(FailureClass.SERVER_ERROR, MID_STREAM, None, None, "", answered=True))
        if failure is not None and failure.answered:
            billed = self._charge_answered_failure(attempt, deployment_id, reservation_id, failure, state, model,
                                                   partial=charges.partial_usage(kwargs))
        # without a charge, released: it failed before any answer and did not bill
        attempt.broke(deployment_id, reservation_id, exception if isinstance(exception, BaseException) else None,
                      billed=None if billed is None else billed[0], billed_attrs=None if billed is None else billed[1],
                      model=model)

    def _charge_answered_failure(
        self, attempt: Attempt, deployment_id: str, reservation_id: str, failure: Failure, state: RequestState,
        model: str | None, partial: tuple[int, int, float] | None = None,
    ) -> tuple[charges.Charge, dict[str, Any]]:
        """What an attempt that failed after the provider answered HTTP 200 is charged, and the
        attributes of its record (the attempt settles it: ``Attempt.failed`` / ``Attempt.broke``).

        Why: the provider processed, and billed, the request (the prompt, and maybe a whole answer
        LiteLLM then failed to read: a stream where it expected JSON, a body it could not convert),
        but LiteLLM reports the attempt as failed, so releasing its reservation would leave a billed
        call without a ledger record, outside every budget. Billed means recorded:

        * when the answer's text, which LiteLLM's error carries, holds the provider's usage block,
          the attempt is charged that usage at the deployment's price (record ``failed: <matcher>``);
        * else it is charged its bound, the reservation (the most the request may bill), or what
          LiteLLM counted of a stream that broke after some chunks (``partial``: prompt and streamed
          completion tokens, priced like a success) when that is more; the prompt's estimate for a
          deployment without a reservation. The record is marked ``usage: estimated``.

        A warning names the deployment, the failure and the amount.
        """
        candidate = self._candidates.get(deployment_id)
        where = f"{(candidate.model if candidate else None) or model or '?'} (deployment {deployment_id})"
        reported = charges.usage_in_text(failure.message) if failure.message else None
        if reported is not None:
            priced = charges.estimated_charge(candidate, str((candidate.model if candidate else None) or model),
                                              *reported, reserved_usd=None)
            if priced.priced:  # the provider's own count, at the deployment's price: not an estimate
                logger.warning(
                    "litellm-payg: %s failed after the provider answered (%s: %s); charged the usage its answer "
                    "reported, $%s (%d prompt + %d completion tokens)",
                    where, failure.cls, failure.matcher, charges.usd(priced.cost), *reported,
                )
                return dataclasses.replace(priced, estimated=False), {"failed": failure.matcher}
        prompt_tokens = self._prompt_tokens(state)
        billed, what = charges.failed_answer_charge(candidate, prompt_tokens, attempt.reserved_usd(reservation_id), partial)
        cost = billed.cost
        if what == "prompt":
            how = f"charged the prompt's estimated cost of ${charges.usd(cost)} ({billed.prompt_tokens} prompt tokens)"
        elif what == "reservation":
            how = f"charged its reservation, ${charges.usd(cost)}, the most the request may have billed"
        elif what == "streamed":
            how = (f"charged LiteLLM's count of what was streamed, ${charges.usd(cost)} "
                   f"({billed.prompt_tokens} prompt + {billed.completion_tokens} completion tokens)")
        else:
            how = "the request could not be priced and had no reservation; charged $0"
        logger.warning(
            "litellm-payg: %s failed after the provider answered (%s: %s); %s; no usage was reported",
            where, failure.cls, failure.matcher, how,
        )
        return billed, {"usage": "estimated", "failed": failure.matcher}
