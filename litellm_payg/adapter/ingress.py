"""The governed doors: where a request enters a governed Router, and what is refused there.

A request enters through the proxy's pre-call hook (``proxy.py``) or, in Python, through one of the
Router's request methods that ``attach`` wraps (:func:`governed_entry_points`). Both do the same
three things before anything is reserved (``PaygRouting.open_request``):

1. refuse a request that carries forged plugin state or a malformed field the plugin reads
   (:mod:`litellm_payg.wire.request_checks`), with an error that names the field;
2. route or refuse a request whose ``model`` names a deployment instead of a group (LiteLLM would
   send it straight to that deployment, past every routing hook), per the policy's
   ``direct_deployments``;
3. mint the plugin's id for the request (:mod:`litellm_payg.runtime.request_state`), which is also how a
   Router's callback knows the request is its own and not another Router's.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from typing import Any

import litellm

from litellm_payg.core.errors import BudgetRefused, PaygError
from litellm_payg.wire.request_checks import check_request, forged_state_keys

#: the Router's async request methods: each can reach a deployment, so each is a governed door.
#: Responses and Anthropic messages keep LiteLLM's metadata in ``litellm_metadata`` (their own
#: ``metadata`` parameter is sent to the provider).
ENTRY_POINTS: dict[str, str] = {
    "acompletion": "metadata",
    "atext_completion": "metadata",
    "aresponses": "litellm_metadata",
    "aanthropic_messages": "litellm_metadata",
    "anthropic_messages": "litellm_metadata",  # the same, async too: the one LiteLLM's proxy calls for /v1/messages
    "aembedding": "metadata",
    "aimage_generation": "metadata",
    "atranscription": "metadata",
    "aspeech": "metadata",
    "arerank": "metadata",
    "amoderation": "metadata",
    "agenerate_content": "metadata",
}


class InvalidRequest(PaygError, litellm.BadRequestError):
    """A request the plugin refuses before anything is reserved: a malformed field, forged plugin
    state, or a deployment named as the model. HTTP 400 in the proxy; ``litellm.BadRequestError``
    in Python. Final: LiteLLM does not retry it (``num_retries = 0``)."""

    def __init__(self, message: str, field: str | None = None):
        self.field = field
        super().__init__(message=message, model=None, llm_provider="litellm_payg")
        self.message = message
        self.status_code = 400
        self.num_retries = 0

    def __str__(self) -> str:
        return self.message


def refuse_bad_input(data: dict, own: tuple[str, ...] = (), api: str | None = None) -> None:
    """Raise :class:`InvalidRequest` naming the first forged ``payg_*`` key (other than ``own``,
    the plugin's own stamps in a dict it minted an id into), client-side credential or malformed
    field (of ``api``'s own fields too, when it is known)."""
    forged = [key for key in forged_state_keys(data) if key.split(".", 1)[1] not in own]
    if forged:
        raise InvalidRequest(
            f"litellm-payg: {', '.join(forged)}: 'payg_*' metadata keys are reserved for litellm-payg's own "
            "state and may not be sent by a client (only 'payg_hints' may)",
            field=forged[0],
        )
    problem = check_request(data, api)
    if problem is not None:
        raise InvalidRequest(str(problem), field=problem.field)


def governed_entry_points(router: Any, adapter: Any) -> Callable[[], None]:
    """Wrap ``router``'s request methods so each request enters through ``adapter.open_request``;
    return the function that unwraps them. The wrappers are set on the Router *instance*, so a
    second Router (even one built from the same config) is not affected."""
    wrapped: list[str] = []
    for name, metadata_field in ENTRY_POINTS.items():
        original = getattr(router, name, None)
        if original is None:
            continue
        setattr(router, name, _governed(original, adapter, metadata_field, name))
        wrapped.append(name)

    router_ref = weakref.ref(router)  # unwrap is kept by the engine: it must not keep the Router alive

    def unwrap() -> None:
        governed = router_ref()
        for name in wrapped if governed is not None else ():
            governed.__dict__.pop(name, None)

    return unwrap


def _governed(method: Callable[..., Any], adapter: Any, metadata_field: str, name: str) -> Callable[..., Any]:
    """``method`` behind the door. ``name`` is the Router attribute it was read from, i.e. the API
    (the method's own ``__name__`` is a generic wrapper's on some LiteLLM releases)."""
    @functools.wraps(method)
    async def governed(*args: Any, **kwargs: Any) -> Any:
        if args:  # model passed positionally
            kwargs["model"], args = args[0], args[1:]
        # the caller's own metadata dict, as LiteLLM uses it (it writes per-request keys into it
        # too); a later request reusing it gets a new id, a concurrent one a copy
        state = adapter.open_request(kwargs, metadata_field, call=name)
        try:
            response = await method(*args, **kwargs)
        except BaseException as exc:
            adapter.release_failed(kwargs)  # a refused or failed request keeps no state
            # A budget refusal on a fallback hop reaches LiteLLM's Router as that hop's error, and
            # the Router raises the *first* group's error instead (a 500 whose message ends "Fallback
            # to ... also failed: <refusal>"), which clients retry. The refusal is the request's
            # answer: raise it, with what happened before as its cause.
            refusal = getattr(state, "final_error", None)
            if isinstance(refusal, BudgetRefused) and refusal is not exc:
                raise refusal from exc
            raise
        # settle before the caller has the answer, not on LiteLLM's logging worker (``answered``)
        return adapter.answered(state, response, kwargs, api=name)

    governed.__doc__ = f"Router.{method.__name__}, governed by litellm-payg."
    return governed
