"""An answered attempt: when it is settled, by whichever of LiteLLM's callbacks sees it first.

Why its own module: LiteLLM reports an answer in several places (the per-attempt success hook,
inline; the door, once the Router returned; a stream's last chunk; LiteLLM's success log on its
logging worker), and which of them sees an answer first depends on the call type, the cache and
whether it streams. Each is translated here into the one event of the request's
:class:`~litellm_payg.runtime.attempt.Attempt` (``answered``), with the charge worked out by
``answer_charges.py``; the attempt settles it, tells the breaker and the observers. Whichever
comes first takes the attempt's reservation; the others find none and charge nothing.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from typing import Any

import litellm

from litellm_payg.adapter import charges, streams
from litellm_payg.runtime.request_state import RequestState
from litellm_payg.adapter.request_metadata import metadata_of

logger = logging.getLogger("litellm_payg")


class AnswerPath:
    """The part of :class:`~litellm_payg.adapter.routing.PaygRouting` that settles answers (a mixin)."""

    async def async_post_call_success_deployment_hook(self, request_data, response, call_type):
        """Settle a non-stream attempt the moment it is answered (:meth:`settle_attempt`), unless
        the response guard runs: then the guard settles it once the validators accepted it, so
        which of the two LiteLLM calls first does not matter."""
        if self._guard is None:
            self.settle_attempt(request_data, response, call_type)
        return None

    def settle_attempt(self, request_data: Mapping[str, Any], response: Any, call_type: Any) -> None:
        """Settle an answered non-stream attempt inline, before LiteLLM returns it to the Router.

        Why here and not only in the door: LiteLLM runs this hook once per *attempt*, inside the
        attempt, with that attempt's deployment (``model_info``) and logging object (its cost
        calculator knows the deployment's custom prices), before the Router decides on a retry or
        a fallback and before the caller gets the answer. The door sees only the request's final
        response, after all of that. So every answered attempt is charged here, by the function the
        success log uses (:meth:`settle_answer`), and LiteLLM's later success log finds no
        reservation and charges nothing. What this hook never sees is settled by the door
        (:meth:`answered`: cache hits, streams, call types LiteLLM runs no hook for).

        An answer with neither usage nor a LiteLLM cost (a moderation, an image LiteLLM cannot
        price) is left to the door (:meth:`answered`), which settles it before the caller has it. A
        Google ``generateContent`` answer is charged from its own ``usageMetadata``: LiteLLM 1.110
        may log no success event for it at all."""
        if request_data.get("stream"):
            return None
        ours = self._ours(request_data)
        if ours is None:
            return None
        state, deployment_id = ours
        if "generate_content" in str(call_type) and isinstance(response, Mapping):
            self._charge_generate_content(state, deployment_id, response, request_data.get("model"))
            return None
        # the answer's usage is read once here, and what it says is handed on (the charge, the price)
        usage = charges.field_of(response, "usage")
        prompt_tokens, completion_tokens = charges.answer_tokens(response, usage)
        plain = self._token_prices.plain(response, self._candidates.get(deployment_id), usage)
        cost = _Once(lambda: self._attempt_cost(request_data, response, deployment_id, plain))
        if not (prompt_tokens or completion_tokens or isinstance(response, litellm.ModelResponse) or cost()):
            return None
        latency = charges.elapsed(request_data)
        self.settle_answer(
            state, deployment_id, response, prompt_tokens, completion_tokens, litellm_cost=cost,
            messages=request_data.get("messages"), tools=charges.tools_of(request_data), model=request_data.get("model"),
            latency=latency, ttft=latency,  # a whole answer: its first token came with its last (as LiteLLM logs it)
            usage=usage, plain=plain,
        )
        return None

    def answered(self, state: RequestState, response: Any, request: Mapping[str, Any], api: str | None = None) -> Any:
        """The door's part once the Router returned ``response`` for the request ``state``:
        settle what no per-attempt hook settled, so nothing of an answered request waits for
        LiteLLM's logging worker (which an exiting script never runs).

        * A stream (chat, text completion, Responses API, Anthropic messages; ``api`` is the Router
          method that answered) is settled when its last event is read, or, left unread, when it
          is dropped (:func:`litellm_payg.adapter.streams.settle_when_read`); it is returned as the
          same object.
        * An answer LiteLLM's cache served never reached a deployment hook: it is settled here at
          $0 and marked ``cache_hit`` (the provider was not called).
        * Any other answer whose attempt is still open (a call type LiteLLM runs no hook for, or an
          answer priced per unit that the hook left) is settled with the cost LiteLLM stamped on it
          (``_hidden_params["response_cost"]``; a moderation's $0 included); one LiteLLM priced
          nowhere (an image answer, on 1.110.2) is charged its reservation, marked ``usage:
          estimated``, rather than the $0 LiteLLM's success log would record for it.
        """
        if state.finished:
            return response
        if not state.open_reservations:  # the per-attempt hook settled it
            self._finish(state)
            return response
        if streams.is_stream(response, api):
            return streams.settle_when_read(self, state, response, request, api)
        if request.get("stream") or hasattr(type(response), "__anext__"):
            return response  # a stream not read here (generateContent's): LiteLLM's success log settles it
        hidden = charges.attribute(response, "_hidden_params")
        deployment_id = hidden.get("model_id") if isinstance(hidden, Mapping) else None
        if deployment_id is None:
            return response  # not a response the Router stamped: LiteLLM's success log settles it
        deployment_id = str(deployment_id)
        prompt_tokens, completion_tokens = charges.answer_tokens(response)
        cache_hit = charges.served_from_cache(response)
        stamped = hidden.get("response_cost")
        unpriced = not (cache_hit or prompt_tokens or completion_tokens or stamped is not None)
        litellm_cost: Callable[[], Any] = lambda: stamped  # noqa: E731
        if unpriced:
            # LiteLLM priced it nowhere (an image answer of 1.110.2: its calculator says 0 inline and
            # its success log None, recorded as $0): the bound it was reserved at, marked an estimate
            reserved = self.attempts.of(state).open_usd(deployment_id)
            litellm_cost = lambda: reserved  # noqa: E731
            logger.warning("litellm-payg: LiteLLM could not price an answer of deployment %s (%s); charged its "
                           "reservation, $%s, marked as an estimate", deployment_id, type(response).__name__,
                           charges.usd(reserved or 0.0))
        ms = hidden.get("_response_ms")
        latency = None if cache_hit or not isinstance(ms, (int, float)) else ms / 1000
        self.settle_answer(
            state, deployment_id, response, prompt_tokens, completion_tokens, litellm_cost=litellm_cost,
            messages=request.get("messages"), tools=charges.tools_of(request), model=hidden.get("litellm_model_name"),
            latency=latency, ttft=latency, cache_hit=cache_hit, estimated=unpriced,
        )
        if not state.open_reservations:
            self._finish(state)
        return response

    def _charge_generate_content(self, state: RequestState, deployment_id: str, response: Mapping[str, Any], model: Any) -> None:
        """Charge a Google ``generateContent`` answer from its own ``usageMetadata`` (prompt, and
        candidates plus thoughts as output) at the deployment's price."""
        attempt = self.attempts.of(state)
        reservation_id = attempt.take(deployment_id)
        if reservation_id is None:
            return
        usage = response.get("usageMetadata") or {}
        prompt = int(usage.get("promptTokenCount") or 0)
        completion = int(usage.get("candidatesTokenCount") or 0) + int(usage.get("thoughtsTokenCount") or 0)
        charge = charges.reported_charge(self._candidates.get(deployment_id), str(model or ""), prompt, completion,
                                         attempt.reserved_usd(reservation_id))
        # no latency is known for it here, and the deployment's health store is not told of it
        attempt.answered(deployment_id, reservation_id, charge, tokens=charges.used_tokens(charge), model=model,
                         health=False)
        self._finish(state)


    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):
        """An answer still unsettled when LiteLLM logs it is charged here with LiteLLM's
        ``response_cost`` (:meth:`settle_answer`), and its latency recorded; one settled inline
        (the usual case) is not charged again. An answer without usage is charged an estimate
        (:meth:`_estimate_missing_usage`); a stream without usage is not one: LiteLLM already
        counted its tokens, and its ``response_cost`` prices them."""
        state = self.states.find(metadata_of(kwargs.get("litellm_params") or {}))
        if state is None:
            return  # another router's request (or another policy's, attached before or after this one)
        slo = kwargs.get("standard_logging_object") or {}
        deployment_id = str(slo.get("model_id") or ((kwargs.get("litellm_params") or {}).get("model_info") or {}).get("id"))
        model = (kwargs.get("litellm_params") or {}).get("model") or kwargs.get("model")
        prompt_tokens, completion_tokens = charges.reported_tokens(slo, response_obj)
        disconnected = charges.client_disconnected(kwargs)
        charge = self.settle_answer(
            state, deployment_id, response_obj, prompt_tokens, completion_tokens,
            litellm_cost=lambda: kwargs.get("response_cost"),
            messages=kwargs.get("messages"), tools=charges.tools_of(kwargs), model=model,
            latency=charges.seconds(slo.get("startTime"), slo.get("endTime")),
            ttft=charges.seconds(slo.get("startTime"), slo.get("completionStartTime")),
            cache_hit=kwargs.get("cache_hit") is True, abandoned="client_disconnected" if disconnected else None,
        )
        if charge is not None and disconnected:
            # the proxy's disconnect billing: LiteLLM assembled what was streamed before the client
            # went away and counted it; the provider may have generated (and billed) more
            logger.warning(
                "litellm-payg: the client of a stream from deployment %s disconnected; charged LiteLLM's count "
                "of what was streamed, $%s (%s prompt + %s completion tokens), marked as an estimate",
                deployment_id, charges.usd(charge.cost), charge.prompt_tokens, charge.completion_tokens,
            )
        self._finish(state)

    def settle_answer(
        self, state: RequestState, deployment_id: str, response: Any, prompt_tokens: Any, completion_tokens: Any, *,
        litellm_cost: Callable[[], Any], messages: Any, tools: Any, model: Any, latency: float | None,
        ttft: float | None, cache_hit: bool = False, abandoned: str | None = None, estimated: bool = False,
        usage: Any = charges.UNREAD, plain: Any = None,
    ) -> charges.Charge | None:
        """Settle the open reservation of an answered attempt on ``deployment_id``: charge it
        (:meth:`_charge_answer`), record its latency, tell the ``payg_outcome`` observers. Returns
        the charge, or None when the attempt was already settled: whichever of the inline paths
        (the per-attempt hook, the door, the stream's last chunk) and LiteLLM's later success log
        comes first settles it, the others find no reservation and charge nothing. ``usage`` and
        ``plain``: what the caller read of the answer already (:meth:`_charge_answer`)."""
        attempt = self.attempts.of(state)
        reservation_id = attempt.take(deployment_id)
        if reservation_id is None:
            return None
        charge = self._charge_answer(deployment_id, reservation_id, response, prompt_tokens, completion_tokens,
                                     litellm_cost, messages, tools, state, model, cache_hit, usage, plain)
        if abandoned is not None:
            charge = dataclasses.replace(charge, abandoned=True, abandoned_because=abandoned)
        elif estimated:
            charge = dataclasses.replace(charge, estimated=True)
        settled = charge

        def learn_from_it() -> None:  # after the settle, before the observers hear of it
            if self.engine.policy.quality.feedback:
                self._remember_answer(state, deployment_id, response, settled.cost)
            if self.engine.policy.quality.judge is not None and not abandoned:
                self.judge.maybe_sample(state, deployment_id, messages, response)

        attempt.answered(deployment_id, reservation_id, charge, tokens=charges.used_tokens(charge), latency=latency,
                         ttft=ttft, model=model, before_outcome=learn_from_it)
        return charge

    def _remember_answer(self, state: RequestState, deployment_id: str, response: Any, cost: float) -> None:
        """Keep the plugin's record of an answer by the id its caller got (``quality.feedback``):
        what feedback on it counts for is read from here, never from the caller."""
        response_id = response.get("id") if isinstance(response, Mapping) else getattr(response, "id", None)
        candidate = self._candidates.get(deployment_id)
        request = state.request
        if not isinstance(response_id, str) or not response_id or candidate is None or request is None:
            return
        decision = state.decision or {}
        try:
            self.engine.quality.remember_answer(response_id, {
                "group": candidate.group, "deployment_id": deployment_id, "model": candidate.model,
                "api_key": getattr(request, "api_key", None), "cls": self.engine.quality.class_of(request),
                "cost_usd": cost, "arm": (decision.get("attrs") or {}).get("split_arm"),
            })
        except Exception as exc:  # noqa: BLE001 - a lost record only loses the chance to rate it
            logger.warning("litellm-payg quality: could not remember answer %s: %s", response_id, exc)

    def _finish(self, state: RequestState) -> None:
        """The request was answered (``Attempt.finish``): its state goes now, or, when the proxy's
        response headers (:attr:`late_headers`) still have to read it, once they did."""
        self.attempts.of(state).finish(self.late_headers)

class _Once:
    """A zero-argument function's value, computed on the first call only (LiteLLM's cost
    calculator is not free, and a charge may not need it)."""

    def __init__(self, compute: Callable[[], Any]):
        self._compute: Callable[[], Any] | None = compute
        self._value: Any = None

    def __call__(self) -> Any:
        if self._compute is not None:
            self._value, self._compute = self._compute(), None
        return self._value

