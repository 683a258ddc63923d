"""The front door of a governed request: its state, its model, its fields.

Why its own module: every hook of the callback first has to find the request's state (or start it),
and the proxy's pre-call hook and the wrapped Router methods (``ingress.py``) open it; keeping that
apart from the pick, the answer and the failure paths keeps each of them about one event. The
state itself is the request's :class:`~litellm_payg.runtime.attempt.Attempt`'s; this module only
finds it by the id minted into the request's metadata, never by anything a client can write.
"""

from __future__ import annotations

import fnmatch
import weakref
from collections.abc import Mapping
from typing import Any

from litellm_payg.adapter.ingress import InvalidRequest, refuse_bad_input
from litellm_payg.core.identity import RequestIdentity, bounded_label
from litellm_payg.wire.request_checks import api_of
from litellm_payg.wire.request_fields import unknown_field
from litellm_payg.runtime.request_state import REQUEST_KEY, RequestState
from litellm_payg.adapter.request_metadata import metadata_of

#: where the decision is stamped for observers (an output: the plugin never reads it back)
DECISION_KEY = "payg_decision"
#: the plugin's own stamps: allowed in a metadata dict that carries one of its request ids
OWN_KEYS = (REQUEST_KEY, DECISION_KEY)

#: the live adapters, to tell a request that bypassed this router's routing from one of another
#: router that governs the same deployment ids (two Routers built from one config)
LIVE: "weakref.WeakSet[Any]" = weakref.WeakSet()


class RequestDoor:
    """The part of :class:`~litellm_payg.adapter.routing.PaygRouting` that opens and finds a
    request's state (a mixin: it reads the callback's engine, deployments and states)."""

    def resolve_model(self, model: Any) -> Any:
        """What ``model`` a request should be sent with: a governed group (or its alias) as is; a
        deployment's id or model string (which LiteLLM would send straight to that deployment,
        past every routing hook) per the policy's ``direct_deployments``: ``route`` sends the group
        instead, ``refuse`` raises :class:`InvalidRequest` naming the group to use. A name that is
        none of these is not this router's, and is returned as is."""
        if not isinstance(model, str):
            return model
        if model in self._groups or model in self._aliases:
            return model
        named = sorted(self._deployment_names.get(model, ()))
        if not named:
            return model
        if self._patterns and model not in self._candidates and any(fnmatch.fnmatchcase(model, p) for p in self._patterns):
            return model  # LiteLLM routes it to the wildcard route, not to the deployment with that model
        if self.engine.policy.direct_deployments == "route" and len(named) == 1:
            return named[0]
        raise InvalidRequest(
            f"litellm-payg: model {model!r} names a deployment, not a model group; requests go through "
            f"the policy's routing and budgets, so send model={named[0]!r}"
            + (f" (it is a deployment of the groups {', '.join(map(repr, named))})" if len(named) > 1 else "")
            + ("" if len(named) > 1 else " (policy: direct_deployments: refuse)"),
            field="model",
        )

    def open_request(
        self, data: dict, field: str = "metadata", identity: RequestIdentity | None = None, *, router_door: bool = True,
        call: Any = None,
    ) -> RequestState:
        """Start the plugin's state for a request entering through a governed door: refuse forged
        ``payg_*`` keys, malformed fields and fields outside a governed group's request surface
        (:meth:`_refuse_unknown_fields`), route or refuse a deployment named as the model, and
        mint the request's id into ``data[field]`` (LiteLLM's metadata for this kind of request).

        There are two doors, and a proxy request passes both: the proxy's pre-call hook (which
        knows the authenticated key) and then the wrapped Router method (``router_door``; the only
        door in Python, and on proxy routes that skip the pre-call hook, such as ``/queue``). The
        Router door of a request the proxy's door opened adopts its state. A second Router call
        that shares an open request's metadata dict (``abatch_completion`` over ``model: "a,b"``
        sends every call with the one dict) gets a copy of the dict and its own state, so each
        call is reserved and settled on its own.
        """
        metadata = data.get(field)
        if metadata is None:
            metadata = data[field] = {}
        existing = self.states.find(metadata) if isinstance(metadata, dict) else None
        live = existing is not None and not existing.finished
        if live and router_door and not existing.entered:
            existing.entered = True  # the proxy's door opened it: same request, same state
            if "model" in data:
                data["model"] = self.resolve_model(data["model"])
            return existing
        # the plugin's own stamps in a dict it has seen (a sibling call, or a dict the caller reuses)
        api = api_of(call)
        refuse_bad_input(data, own=OWN_KEYS if existing is not None else (), api=api)
        if "model" in data:
            data["model"] = self.resolve_model(data["model"])
            self._refuse_unknown_fields(data)
        if live:
            metadata = data[field] = dict(metadata)
            identity = identity or existing.identity
        state = self.states.mint(metadata, trace_of(data), identity)
        state.entered = router_door
        state.api = api
        if state.api == "speech":  # what a per-character price bills (the Router's filter may not see it)
            state.characters = characters_of(data)
        return state

    def _refuse_unknown_fields(self, data: Mapping[str, Any]) -> None:
        """A request to a governed group accepts only the fields of the closed request surface
        (:mod:`litellm_payg.wire.request_fields`) and the policy's ``requests.allow_fields``:
        anything else could change what the provider bills past the reservation."""
        model = data.get("model")
        if model not in self._groups and model not in self._aliases:
            return
        problem = unknown_field(data, self.engine.policy.allow_fields)
        if problem is not None:
            raise InvalidRequest(str(problem), field=problem.field)

    def _state_for(self, request_kwargs: Mapping[str, Any], metadata: dict) -> RequestState | None:
        """This request's state, or None when it is another router's. A request no governed door
        saw (a Router method that is not wrapped) gets its state here, unless another live
        adapter governs the same deployments, when whose it is cannot be told."""
        trace = trace_of(request_kwargs)
        state = self.states.find(metadata, trace)
        if state is not None:
            if state.trace_id is None:
                state.trace_id = trace
            return state
        if self._another_routers(metadata, trace):
            return None
        refuse_bad_input(request_kwargs)
        return self.states.mint(metadata, trace)


    def _ours(self, request_data: Mapping[str, Any]) -> tuple[RequestState, str] | None:
        """This adapter's state for an attempt's request, and the attempt's deployment id."""
        state = self.states.find(metadata_of(request_data))
        if state is None:
            return None
        return state, str((request_data.get("model_info") or {}).get("id"))

    def _another_routers(self, metadata: Mapping[str, Any] | None, trace: str | None = None) -> bool:
        """Whether another live adapter minted this request's id: the request of another Router
        that governs the same deployment ids (two Routers built from one config)."""
        return any(other is not self and other.states.find(metadata, trace) is not None for other in list(LIVE))


    def release_failed(self, data: Mapping[str, Any]) -> None:
        """The request ``data`` ended in an error (a refusal, its last attempt failed): forget its
        state now (:meth:`Attempt.ended_in_error <litellm_payg.runtime.attempt.Attempt.ended_in_error>`:
        a pick LiteLLM rejected the request after, before any attempt began, is released; a state
        with an attempt's reservation still open is kept for LiteLLM's failure event)."""
        state = self.states.find(metadata_of(data))
        if state is not None:
            self.attempts.of(state).ended_in_error()

def characters_of(request_kwargs: Mapping[str, Any]) -> int | None:
    """The characters of a speech request's ``input``, what a per-character price bills."""
    text = request_kwargs.get("input")
    return len(text) if isinstance(text, str) else None




def trace_of(request_kwargs: Mapping[str, Any]) -> str | None:
    """LiteLLM's trace id of a request (stable across its retries and fallback hops)."""
    trace = request_kwargs.get("litellm_trace_id")
    return None if trace in (None, "") else bounded_label(str(trace))  # client-set: a label, bounded


