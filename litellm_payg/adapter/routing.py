"""The thin layer that wires the engine into LiteLLM's Router through LiteLLM's own extension points.

* The governed doors (``ingress.py``): the Router's request methods, wrapped by ``install``, and in
  the proxy the pre-call hook (``proxy.py``), check each request (forged ``payg_*`` state,
  malformed fields, a deployment named as the model) and mint the plugin's id for it; the state
  every hook below reads lives in :class:`~litellm_payg.wire.request_state.RequestStates`, keyed by that
  id, never in anything a client can write.
* ``async_pre_call_deployment_hook``, once per attempt: refuses an attempt on a governed deployment
  that no pick chose (the backstop of the doors), and sets ``first_token_timeout_ms``.
* ``async_filter_deployments`` (a ``CustomLogger`` hook the Router runs on every pick, retry and
  fallback hop, after its own cooldown and health filtering) narrows the group's deployments to the
  one the policy orders first among those not yet tried for this request, and reserves its estimate
  against the budgets. LiteLLM keeps doing its health checks, cooldowns, retries and fallbacks; we
  only decide the candidate.
* ``async_post_call_failure_deployment_hook`` runs inline once per failed attempt: the attempt's
  reservation is released (it did not bill), the failure is classified and fed to the circuit
  breaker, and the next pick of the same request follows ``failover.on``. An attempt that failed
  *after* the provider answered HTTP 200 (``Failure.answered``: a garbled body, a Gemini answer
  without ``usageMetadata``, a stream that broke) has billed at least the prompt, so it is charged
  an estimate instead (:meth:`PaygRouting._charge_answered_failure`).
* ``async_log_failure_event``: a stream that fails while it is being read (after LiteLLM's call
  returned it) never reaches the hook above; LiteLLM reports it only to the failure log. Such an
  attempt's reservation is released there, or charged the same estimate when the stream had
  begun (LiteLLM recovered partial usage from it).
* ``async_post_call_success_deployment_hook`` runs inline once per answered non-stream attempt: the
  response validators run, then the attempt is settled there with LiteLLM's real cost
  (:meth:`PaygRouting.settle_attempt`), before the Router returns the answer. The door settles what
  that hook never sees (:meth:`PaygRouting.answered`): an answer LiteLLM's cache served ($0, marked
  ``cache_hit``), and a stream, when its last chunk is read or when it is dropped unread
  (``streams.py``). An answer that reported no usage at all (LiteLLM then says 0 tokens, $0) is
  charged an estimate instead, LiteLLM's token counter x the deployment's price, and logged and
  marked as such (:meth:`PaygRouting._estimate_missing_usage`): it billed, so it must not be
  recorded at $0. Every path charges through one function (:meth:`PaygRouting.settle_answer`).
* ``async_log_success_event`` (LiteLLM's background worker, after the answer; for streams, after the
  last chunk) settles what is still open then (the proxy's disconnect billing, call types priced
  per unit) the same way; an attempt settled inline has no reservation left, so it is not charged
  twice. A script whose event loop ends right after its last call never runs this worker: that is
  why answers are settled inline.
* The decision of each attempt (the pick it went to, and why the others were not) goes to the
  ``payg_decision`` observers once per attempt, and is stamped on the request's ``metadata`` dict
  (``payg_decision``) as an output: the plugin never reads it back.
* How much an answer is charged is ``charges.py``'s business; these hooks decide when.
* The synchronous ``router.completion`` skips async filters, so ``attach`` routes it through the async
  path (``sync_bridge.py``) instead of letting it go unrouted.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import litellm
from litellm.integrations.custom_guardrail import CustomGuardrail
from litellm.integrations.custom_logger import CustomLogger

from litellm_payg.adapter import charges
from litellm_payg.adapter.judge import JudgedSample

from litellm_payg.adapter import litellm_fixes

from litellm_payg.adapter import litellm_versions
from litellm_payg.adapter import streams
from litellm_payg.core.decision import Candidate, Outcome, RouteRequest
from litellm_payg.core.feasibility import Needs
from litellm_payg.runtime.answers import check_answer
from litellm_payg.runtime.lifecycle import GiveUp, Lifecycle
from litellm_payg.runtime.engine import Engine
from litellm_payg.core.errors import InvalidAmount, PaygError, UnboundedCost
from litellm_payg.adapter.failures import (
    MID_STREAM, Failure, FailureClass, InvalidResponseError, diagnose, diagnose_broken_stream, timed_out_after_sending,
)
from litellm_payg.adapter.attachment import Attached
from litellm_payg.adapter.attributes import door_attributes
from litellm_payg.core.identity import LabelError, RequestIdentity, bounded_label, hints_of, minted_session, run_of
from litellm_payg.wire.identity import DEFAULT_SESSION_SOURCES, identity_of, session_of
from litellm_payg.core.runs import loop_marks, prompt_hash
from litellm_payg.adapter.ingress import InvalidRequest, governed_entry_points, refuse_bad_input
from litellm_payg.policy.load import Policy, load_policy
from litellm_payg.stores.prices import OTHER_PROMPT_PARTS, candidate_from_deployment, count_request_tokens, prompt_tokens_at_most
from litellm_payg.wire.request_checks import api_of, asks_cache_write, choices, output_cap
from litellm_payg.wire.request_fields import unknown_field
from litellm_payg.wire.request_state import REQUEST_KEY, RequestState, RequestStates, metadata_of
from litellm_payg.adapter.litellm_errors import BudgetExceeded
from litellm_payg.core.errors import BudgetRefused
from litellm_payg.runtime.spend import LedgerDown
from litellm_payg.adapter.sync_bridge import BRIDGE

logger = logging.getLogger("litellm_payg")

#: the built-in ``payg_outcome`` implementation that only logs at INFO (``default_plugins/decision_log.py``)
_DECISION_LOG = "litellm_payg.default_plugins.decision_log"
try:  # pluggy's own hook runner: a plugin manager with monitoring or tracing on runs another one
    from pluggy._callers import _multicall as _PLUGGY_MULTICALL
except ImportError:  # another pluggy layout: always emit
    _PLUGGY_MULTICALL = None

#: where the decision is stamped for observers (an output: the plugin never reads it back)
DECISION_KEY = "payg_decision"
#: the plugin's own stamps: allowed in a metadata dict that carries one of its request ids
OWN_KEYS = (REQUEST_KEY, DECISION_KEY)

#: the parts of a request's prompt besides its messages (``pricing.count_request_tokens``)
_PROMPT_PARTS = frozenset(("tools", *OTHER_PROMPT_PARTS))


def _limits_of(deployment: Mapping[str, Any]) -> tuple[float, float] | None:
    """A deployment's (rpm, tpm) as LiteLLM's usage-based routing reads them (the deployment's own
    key, else ``litellm_params``, else ``model_info``; none is unlimited), or None without either."""
    found = []
    for name in ("rpm", "tpm"):
        value = None
        for source in (deployment, deployment.get("litellm_params") or {}, deployment.get("model_info") or {}):
            if source.get(name) is not None:
                value = source.get(name)
                break
        found.append(value)
    if found == [None, None]:
        return None
    try:
        return tuple(float("inf") if v is None else float(v) for v in found)  # type: ignore[return-value]
    except (TypeError, ValueError):
        return None


#: the live adapters, to tell a request that bypassed this router's routing from one of another
#: router that governs the same deployment ids (two Routers built from one config)
_LIVE: "weakref.WeakSet[PaygRouting]" = weakref.WeakSet()


class PaygRouting(CustomLogger):
    """The LiteLLM callback that applies an :class:`Engine` to one Router's requests.

    LiteLLM's callback list is process-wide, so this callback acts only on requests whose
    deployments belong to the router it was bound to, and passes every other request through.
    """

    _count = 0
    #: whether a hook may read an answered request's state after it settled (the proxy's response
    #: headers); without one, an answered request's state is released as soon as it settles
    late_headers = False

    def __init__(self, engine: Engine):
        super().__init__()
        self.engine = engine
        self.lifecycle = Lifecycle(engine)
        #: ``quality.judge``: a share of answers also sent to an unsure candidate and judged (judge.py)
        self.judge = JudgedSample(self)
        # LiteLLM de-duplicates callbacks by class name plus their public str/int/bool attributes, so
        # two PaygRouting instances (two governed Routers) would collapse into one without this.
        PaygRouting._count += 1
        self.binding = f"payg-{PaygRouting._count}-{id(self):x}"
        self._candidates: dict[str, Candidate] = {}
        self._groups: frozenset[str] = frozenset()
        self._cache_write_groups: frozenset[str] = frozenset()
        self._deployment_names: dict[str, set[str]] = {}
        self._vision_varies = False
        self._patterns: tuple[str, ...] = ()
        self._tag_routing = False
        self._tag_routing_setting = False
        self._region_checks = False
        self._limits: dict[str, tuple[float, float]] = {}
        self._usage_routing = False
        self._precall_rpm = False
        self._rpm_limits: dict[str, int] = {}
        #: LiteLLM's aliases (``model_group_alias``) of this router: alias -> group
        self._aliases: dict[str, str] = {}
        self._router_ref: weakref.ReferenceType[Any] | None = None
        #: per-request state, keyed by an id this adapter mints (never read from client input)
        self.states = RequestStates()
        self._guard: ResponseGuard | None = None
        #: prices plain-token answers of flat-priced deployments without LiteLLM's calculator
        self._token_prices = charges.TokenPrices()
        #: undoes the governed doors on the bound Router's request methods (``ingress``)
        self._unwrap: Callable[[], None] | None = None

    # -- binding ----------------------------------------------------------------------------------

    def bind(self, router: Any) -> None:
        """Learn the router's deployments and check the policy against them (fails loudly now,
        not on the first request)."""
        if self._router_ref is not None and self._router_ref() is not router and self._unwrap is not None:
            self._unwrap()  # the proxy replaced its Router: the doors move to the new one
            self._unwrap = None
        self._router_ref = weakref.ref(router)
        self._load(litellm_versions.deployments(router))
        self._tag_routing_setting = bool(litellm_versions.router_setting(router, "enable_tag_filtering"))
        #: LiteLLM's usage-based selection passes over deployments at their rpm/tpm after this filter
        self._usage_routing = litellm_versions.router_setting(router, "routing_strategy") == "usage-based-routing-v2"
        #: LiteLLM compares ``allowed_model_region`` to ``region_name`` only with pre-call checks on
        self._region_checks = bool(litellm_versions.router_setting(router, "enable_pre_call_checks"))
        #: LiteLLM < 1.109's pre-call check passes over a deployment at its rpm after this filter
        self._precall_rpm = (self._region_checks and not self._usage_routing and bool(self._rpm_limits)
                             and litellm_versions.precall_checks_rpm())
        by_group: dict[str, list[Candidate]] = {}
        for c in self._candidates.values():
            by_group.setdefault(c.group, []).append(c)
        self.engine.check_deployments(by_group)

    def install(self, router: Any) -> None:
        """Bind to ``router`` and set up what the policy needs from LiteLLM besides this callback:
        the context-window fallback alias (``failover.on.context_window: larger_context``) and the
        response guard (``validate:``), and the repairs for LiteLLM defects that misreport billed
        usage (:mod:`litellm_payg.adapter.litellm_fixes`). Shared by ``attach`` and the proxy handler;
        idempotent."""
        litellm_fixes.apply()
        self.bind(router)
        _route_context_errors_back(router, self.engine)
        self._aliases = litellm_versions.model_group_aliases(router)
        _LIVE.add(self)
        if self._unwrap is None:
            self._unwrap = governed_entry_points(router, self)
        if self._guard is None and _validates(self.engine):
            self._guard = ResponseGuard(self)
            litellm.logging_callback_manager.add_litellm_callback(self._guard)

    def uninstall(self) -> None:
        """Remove this callback and its guard from every LiteLLM callback list (LiteLLM promotes a
        callback from ``litellm.callbacks`` into its success/failure lists on first use)."""
        litellm.logging_callback_manager.remove_callback_from_all_lists(self)
        _LIVE.discard(self)
        if self._unwrap is not None:
            self._unwrap()
            self._unwrap = None
        if self._guard is not None:
            litellm.logging_callback_manager.remove_callback_from_all_lists(self._guard)
            self._guard = None

    def _load(self, deployments: Sequence[Mapping[str, Any]]) -> None:
        models = self.engine.policy.models
        self._candidates = {
            str(d["model_info"]["id"]): candidate_from_deployment(d, models) for d in deployments
        }
        self._groups = frozenset(c.group for c in self._candidates.values())
        self._token_prices.flat = frozenset(
            str(d["model_info"]["id"]) for d in deployments
            if charges.flat_priced(self._candidates.get(str(d["model_info"]["id"])), d))
        #: groups with a deployment that bills cache writes above its input price (Anthropic)
        self._cache_write_groups = frozenset(c.group for c in self._candidates.values()
                                             if c.cache_write_usd_per_token is not None)
        #: the wildcard routes (``openai/*``): LiteLLM sends a model name they match to them, even
        #: one that is also a deployment's model string
        self._patterns = tuple(g for g in self._groups if "*" in g)
        #: whether a request must be looked at for LiteLLM's vision check (some deployment declares none)
        self._vision_varies = any(c.no_vision for c in self._candidates.values())
        #: whether LiteLLM's tag routing may apply to every request (the Router's setting or a
        #: deployment's ``model_info.enable_tag_filtering``); a request may also ask for it
        self._tag_routing = any((d.get("model_info") or {}).get("enable_tag_filtering") for d in deployments)
        #: the rpm/tpm limits LiteLLM's usage-based routing reads, by deployment id (``_limits_of``)
        self._limits = {str(d["model_info"]["id"]): limits for d in deployments if (limits := _limits_of(d)) is not None}
        #: the rpm LiteLLM < 1.109's pre-call check reads: ``litellm_params.rpm`` when it is an int
        self._rpm_limits = {str(d["model_info"]["id"]): rpm for d in deployments
                            if isinstance(rpm := (d.get("litellm_params") or {}).get("rpm"), int) and not isinstance(rpm, bool)}
        #: a deployment's id or model string -> the groups it serves (what a client may name instead)
        self._deployment_names: dict[str, set[str]] = {}
        for c in self._candidates.values():
            for name in (c.deployment_id, c.model):
                self._deployment_names.setdefault(name, set()).add(c.group)

    def _candidates_for(self, deployments: Sequence[Mapping[str, Any]]) -> list[Candidate] | None:
        """Our candidates for these deployment dicts, or None if they are another router's."""
        known = self._candidates
        try:  # on every pick, for every deployment of the group: the common case in one pass
            return [known[d["model_info"]["id"]] for d in deployments]
        except (KeyError, TypeError):
            pass  # an id that is not a str, a deployment added at runtime, or another router's
        out = []
        for d in deployments:
            info = d.get("model_info")
            key = info.get("id") if info else None
            c = known.get(key if type(key) is str else str(key))
            if c is None:
                router = self._router_ref() if self._router_ref else None
                if router is None or not litellm_versions.has_deployment(router, str(d["model_info"]["id"])):
                    return None
                self._load(litellm_versions.deployments(router))  # deployments were added at runtime
                known = self._candidates
                c = known.get(str(d["model_info"]["id"]))
                if c is None:
                    return None
            out.append(c)
        return out

    # -- the front door: a request's state, its model, its fields --------------------------------

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
        refuse_bad_input(data, own=OWN_KEYS if existing is not None else (), api=api_of(call))
        if "model" in data:
            data["model"] = self.resolve_model(data["model"])
            self._refuse_unknown_fields(data)
        if live:
            metadata = data[field] = dict(metadata)
            identity = identity or existing.identity
        state = self.states.mint(metadata, _trace(data), identity)
        state.entered = router_door
        state.api = api_of(call)
        if state.api == "speech":  # what a per-character price bills (the Router's filter may not see it)
            state.characters = _characters(data)
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
        trace = _trace(request_kwargs)
        state = self.states.find(metadata, trace)
        if state is not None:
            if state.trace_id is None:
                state.trace_id = trace
            return state
        if self._another_routers(metadata, trace):
            return None
        refuse_bad_input(request_kwargs)
        return self.states.mint(metadata, trace)

    # -- the routing lever ------------------------------------------------------------------------

    async def async_filter_deployments(
        self,
        model: str,
        healthy_deployments: list,
        messages: list | None,
        request_kwargs: dict | None = None,
        parent_otel_span: Any = None,
    ) -> list:
        if not healthy_deployments:
            return healthy_deployments
        candidates = self._candidates_for(healthy_deployments)
        if candidates is None:
            return healthy_deployments
        request_kwargs = request_kwargs or {}
        metadata = metadata_of(request_kwargs)
        if metadata is None:
            metadata = {}
        state = self._state_for(request_kwargs, metadata)
        if state is None:
            return healthy_deployments
        if state.final_error is not None:
            # a budget block, a down ledger or a `fail` failure is final for the request: LiteLLM's
            # retries and fallbacks to other groups must not route around it
            raise state.final_error
        self._release_unsent(state)
        group = candidates[0].group
        if (model != group and self._aliases.get(model) != group and not model.endswith(LARGER_CONTEXT_SUFFIX)
                and not ("*" in group and fnmatch.fnmatchcase(model, group))):
            # a deployment named as the model past the governed doors (resolve_model)
            state.final_error = InvalidRequest(
                f"litellm-payg: model {model!r} names a deployment of the governed group {group!r}; send model={group!r}",
                field="model",
            )
            raise state.final_error
        needs = await self._needs(model, healthy_deployments, messages, request_kwargs)
        request = self.route_request(group, candidates, messages, request_kwargs, metadata, state, needs)
        if (missing := self.engine.spend.missing_run(request)) is not None:  # sessions.required: final, a 400
            state.final_error = InvalidRequest(missing, field=self.engine.policy.session_sources[0])
            raise state.final_error
        last, state.last_failure = state.last_failure, None
        failed = None if last is None else (last[0], self._candidates.get(last[0]), diagnose(last[1]))
        reservation_id = state.next_reservation_id()
        try:
            picked = self.lifecycle.pick(request, candidates, reservation_id, attempts=state.attempts, last_failure=failed)
        except GiveUp:
            raise last[1] from None  # failover.on says stop: the attempt's own error reaches the caller
        except BudgetRefused as refused:  # final: no fallback hop may route around it
            state.final_error = BudgetExceeded.from_refusal(refused)
            raise state.final_error from None
        except (LedgerDown, InvalidAmount) as exc:  # final too
            state.final_error = exc
            raise
        except UnboundedCost as exc:  # a 400 that says why: never reserved at $0
            state.final_error = InvalidRequest(str(exc), field="model")
            raise state.final_error from None
        pick = picked.candidate
        state.add_reservation(pick.deployment_id, reservation_id)
        state.unsent = (pick.deployment_id, reservation_id)
        state.request = request
        state.decision = picked.decision.as_dict(compact=True)
        metadata[DECISION_KEY] = state.decision
        # candidates[i] is healthy_deployments[i]'s (_candidates_for): no need to read the dicts again
        chosen_id = pick.deployment_id
        for d, c in zip(healthy_deployments, candidates):
            if c is pick:  # the same object, as a rule passes candidates through
                return [d]
        return [d for d, c in zip(healthy_deployments, candidates) if c.deployment_id == chosen_id]

    async def _needs(self, model: str, deployments: list, messages: Any, request_kwargs: Mapping[str, Any]) -> Needs | None:
        """What LiteLLM's own checks, which run after this filter, ask of a deployment for this
        request (``core/feasibility.py`` applies them before the rules): image content while some
        deployment declares no vision, ``allowed_model_region`` under pre-call checks, an order
        fallback's target order, and the deployments LiteLLM's tag routing keeps (worked out by
        LiteLLM's own ``get_deployments_for_tag``). None, without reading the request, when none
        of these can apply."""
        image = self._vision_varies and litellm_versions.request_has_image(messages, request_kwargs)
        region = request_kwargs.get("allowed_model_region") if self._region_checks else None
        order = request_kwargs.get("_target_order")
        order = order if isinstance(order, int) and not isinstance(order, bool) else None
        tag_kept: frozenset[str] | None = None
        reason = ""
        if self._tag_routing or self._tag_routing_setting or request_kwargs.get("enable_tag_filtering") is True:
            router = self._router_ref() if self._router_ref else None
            try:
                kept = await litellm_versions.deployments_for_tag(router, model, list(deployments), request_kwargs)
            except Exception:  # noqa: BLE001 - LiteLLM's own tag check raises it again after this filter
                kept = None
            if kept is not None and len(kept) != len(deployments):
                tag_kept = frozenset(str((d.get("model_info") or {}).get("id")) for d in kept)
                tags = (metadata_of(request_kwargs) or {}).get("tags")
                reason = f"the deployment's tags do not match the request's tags {tags!r}"
        usage = None
        if self._usage_routing and self._limits:
            limited = [d for d in deployments if str((d.get("model_info") or {}).get("id")) in self._limits]
            if limited:
                router = self._router_ref() if self._router_ref else None
                counts = litellm_versions.usage_counts(router, limited)
                usage = {}
                for d, (requests, tokens) in zip(limited, counts):
                    key = str(d["model_info"]["id"])
                    usage[key] = (requests, tokens, *self._limits[key])
        precall = None
        if self._precall_rpm:
            limited_ids = [i for d in deployments if (i := str((d.get("model_info") or {}).get("id"))) in self._rpm_limits]
            if limited_ids:
                router = self._router_ref() if self._router_ref else None
                counts = litellm_versions.precall_request_counts(router, model, limited_ids)
                precall = {i: (n, self._rpm_limits[i]) for i, n in zip(limited_ids, counts)}
        if not image and region is None and order is None and tag_kept is None and not usage and not precall:
            return None
        return Needs(image=image, region=None if region is None else str(region), target_order=order,
                     tag_kept=tag_kept, tag_reason=reason, usage=usage, precall_requests=precall)

    def _minted(self, state: RequestState, who: Any) -> str | None:
        """``sessions.mint``: the key's own run for a request that names none (noted on the state for
        the ``x-payg-run-minted`` header), else None."""
        if not getattr(self.engine.policy, "session_mint", False):
            return None
        state.minted_run = minted_session(who)
        return state.minted_run

    def _release_unsent(self, state: RequestState) -> None:
        """Free the reservation of a pick that never became an attempt.

        LiteLLM sometimes asks for a pick without sending anything: its request scheduler
        (``/queue/chat/completions``, ``schedule_acompletion``) checks that a deployment is
        available before it queues the request, then picks again to send it. A pick becomes an
        attempt when LiteLLM calls the deployment hook for it (``async_pre_call_deployment_hook``);
        one still unsent when the next pick comes was only looked at, so its reservation is
        released and it does not count as tried."""
        if state.unsent is None:
            return
        deployment_id, reservation_id = state.unsent
        state.unsent = None
        open_ = state.reservations.get(deployment_id) or []
        if reservation_id in open_:
            open_.remove(reservation_id)
            if state.attempts and state.attempts[-1] == deployment_id:
                state.attempts.pop()
            self.engine.spend.release(reservation_id)

    def route_request(
        self,
        group: str,
        candidates: Sequence[Candidate],
        messages: Any,
        request_kwargs: Mapping[str, Any],
        metadata: Mapping[str, Any],
        state: RequestState,
        needs: Needs | None = None,
    ) -> RouteRequest:
        """What the policy decides on, from the plugin's own state (identity, the prompt counted
        once) and the request's already checked fields; never from ``payg_*`` metadata.

        The prompt is not counted here: the request carries a counter (:meth:`_counter`) that runs
        the first time a rule, a budget reservation or a charge reads ``prompt_tokens``, so a
        policy that never reads the request's size never pays for LiteLLM's token counter."""
        if state.identity is None:
            try:
                state.identity = identity_of(request_kwargs, metadata)
                attrs = door_attributes(self.engine.spend.scopes, metadata)
                if attrs:
                    state.identity = dataclasses.replace(state.identity, attrs=attrs)
            except LabelError as exc:
                raise InvalidRequest(str(exc), field=exc.field) from None
        who = state.identity
        max_tokens = output_cap(request_kwargs, state.api)
        hints = hints_of(metadata)
        return RouteRequest(
            group=group,
            prompt_tokens=state.prompt_tokens if state.prompt_tokens is not None else self._counter(
                state, candidates[0].model, messages, request_kwargs),
            output_tokens=self.engine.expected_output_tokens(max_tokens),
            max_tokens=max_tokens,
            user=who.user,
            team=who.team,
            api_key=who.api_key,
            tags=who.tags,
            end_user=who.end_user,
            choices=choices(request_kwargs),
            min_quality=hints.min_quality,
            allowed_models=hints.models,
            trace_id=state.trace_id,
            metadata=metadata,
            session=(session := session_of(request_kwargs, metadata,
                                           getattr(self.engine.policy, "session_sources", DEFAULT_SESSION_SOURCES))
                     or self._minted(state, who)),
            run=run_of(session, who, getattr(self.engine.policy, "run_owner", "key")),
            prompt_hash=(prompt_hash(messages or request_kwargs.get("messages") or request_kwargs.get("input"))
                         if self.engine.spend.loop_guards else None),
            loop_marks=loop_marks(messages or request_kwargs.get("messages") or request_kwargs.get("input"),
                                  self.engine.spend.loop_kinds)
            if self.engine.spend.loop_kinds else (),
            # worked out only if a rule reads it (quality_floor), like the count itself
            prompt_tokens_at_most=None if state.prompt_tokens is not None else lambda: prompt_tokens_at_most(
                {**{name: request_kwargs[name] for name in _PROMPT_PARTS.intersection(request_kwargs)},
                 "messages": messages or request_kwargs.get("messages")}),
            api=state.api,
            characters=(state.characters if state.characters is not None else _characters(request_kwargs))
            if state.api == "speech" else None,
            # only looked for where a reservation can use it: budgets, and a deployment that prices it
            cache_writes=bool(self.engine.spend.budgets) and group in self._cache_write_groups and asks_cache_write(
                messages or request_kwargs.get("messages"), request_kwargs),
            needs=needs,
            attrs=dict(who.attrs),
        )

    @staticmethod
    def _counter(state: RequestState, model: str, messages: Any, request_kwargs: Mapping[str, Any]) -> Callable[[], int]:
        """The request's prompt counter: LiteLLM's token counter with ``model`` (the first
        candidate's, as the first pick saw them) on every part of the prompt, run at most once per
        request; the count is kept in ``state.prompt_tokens``. The parts are taken now, so a later
        read counts what was routed."""
        if state.count_prompt is None:
            parts = {name: request_kwargs[name] for name in _PROMPT_PARTS.intersection(request_kwargs)
                     if request_kwargs[name]}
            parts["messages"] = messages or request_kwargs.get("messages")

            def count() -> int:
                if state.prompt_tokens is None:
                    state.prompt_tokens = count_request_tokens(model, parts)
                return state.prompt_tokens

            state.count_prompt = count
        return state.count_prompt

    @staticmethod
    def _prompt_tokens(state: RequestState) -> int | None:
        """The request's prompt tokens for a charge, counted now if nothing needed them before;
        None when the request was never routed here or LiteLLM cannot count its prompt."""
        if state.prompt_tokens is None and state.count_prompt is not None:
            try:
                state.count_prompt()
            except Exception:  # noqa: BLE001 - a charge must not be lost to a tokenizer failure
                logger.warning("litellm-payg: LiteLLM could not count the prompt of request %s", state.id, exc_info=True)
        return state.prompt_tokens

    # -- per attempt, inline ----------------------------------------------------------------------

    def _ours(self, request_data: Mapping[str, Any]) -> tuple[RequestState, str] | None:
        """This adapter's state for an attempt's request, and the attempt's deployment id."""
        state = self.states.find(metadata_of(request_data))
        if state is None:
            return None
        return state, str((request_data.get("model_info") or {}).get("id"))

    def _another_routers(self, metadata: Mapping[str, Any] | None, trace: str | None = None) -> bool:
        """Whether another live adapter minted this request's id: the request of another Router
        that governs the same deployment ids (two Routers built from one config)."""
        return any(other is not self and other.states.find(metadata, trace) is not None for other in list(_LIVE))


    async def async_post_call_failure_deployment_hook(self, request_data, exception, call_type, fallback_depth=None):
        ours = self._ours(request_data)
        if ours is None:
            return None
        state, deployment_id = ours
        call_id = request_data.get("litellm_call_id")
        if call_id:
            state.handled_calls.add(str(call_id))  # LiteLLM's failure log of this attempt is then left alone
        reservation_id = state.pop_reservation(deployment_id)
        failure = diagnose(exception)
        charge: charges.Charge | None = None
        # an answer our validators rejected was charged and fed to the breaker where it was rejected
        if not isinstance(exception, InvalidResponseError):
            if reservation_id is not None and (failure.answered or (
                    not request_data.get("stream") and timed_out_after_sending(exception))):
                # the provider answered 200 before the attempt failed, or had the whole request when
                # LiteLLM stopped waiting for its answer (a read timeout): it billed, or may bill, so
                # charge it (a stream's first-token timeout is released by the failure log: README)
                charge = self._charge_answered_failure(deployment_id, reservation_id, failure, state,
                                                       request_data.get("model"))
                reservation_id = None  # settled: the lifecycle only tells the breaker
            self.lifecycle.failed(reservation_id, deployment_id, failure)  # a failed call does not bill
        failover = self.engine.policy.failover
        if failover is not None:
            state.last_failure = (deployment_id, exception)
            action = failover.action_for(failure.cls.value)
            if action != "fail" and getattr(exception, "num_retries", None) in (None, 0):
                # LiteLLM does not retry some errors within the group (a context window error waits
                # for context_window_fallbacks); the policy says try another deployment, so allow
                # one more attempt per untried candidate
                left = len([c for c in self._candidates.values() if c.group == (self._candidates.get(deployment_id) or c).group])
                try:
                    exception.num_retries = max(1, left - len(state.attempts))
                except AttributeError:
                    pass
            if action == "fail":
                # a configuration error (auth, a bad request) must reach the caller, not be retried
                # or hidden behind a fallback: LiteLLM reads an error's own num_retries
                try:
                    exception.num_retries = 0
                except AttributeError:
                    pass
                state.final_error = exception
        if not isinstance(exception, InvalidResponseError):
            self._emit_failure(state, deployment_id, exception, charge, request_data.get("model"))
        return None

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
        reservation_id = state.pop_reservation(deployment_id)
        if reservation_id is None:
            return
        exception = kwargs.get("exception")
        failure = diagnose(exception) if isinstance(exception, BaseException) else None
        model = litellm_params.get("model") or kwargs.get("model")
        charge: charges.Charge | None = None
        if (failure is None or not failure.answered) and charges.stream_had_begun(kwargs):
            # LiteLLM hands this log the provider's own error, unwrapped from MidStreamFallbackError:
            # the evidence that the stream had begun is the partial usage LiteLLM recovered from it
            failure = (diagnose_broken_stream(exception) if isinstance(exception, BaseException)
                       else Failure(FailureClass.SERVER_ERROR, MID_STREAM, None, None, "", answered=True))
        if failure is not None and failure.answered:
            charge = self._charge_answered_failure(deployment_id, reservation_id, failure, state, model,
                                                   partial=charges.partial_usage(kwargs))
        else:
            self.engine.spend.release(reservation_id)  # failed before any answer: it did not bill
        if isinstance(exception, BaseException):
            self._emit_failure(state, deployment_id, exception, charge, model)

    def _charge_answered_failure(
        self, deployment_id: str, reservation_id: str, failure: Failure, state: RequestState, model: str | None,
        partial: tuple[int, int, float] | None = None,
    ) -> charges.Charge:
        """Settle an attempt that failed after the provider answered HTTP 200.

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
            cost = charges.price_tokens(candidate, str((candidate.model if candidate else None) or model), *reported)
            if cost is not None:
                self.engine.spend.settle(reservation_id, cost, {"failed": failure.matcher})
                logger.warning(
                    "litellm-payg: %s failed after the provider answered (%s: %s); charged the usage its answer "
                    "reported, $%s (%d prompt + %d completion tokens)",
                    where, failure.cls, failure.matcher, charges.usd(cost), *reported,
                )
                return charges.Charge(cost, reported[0], reported[1])
        prompt_tokens = self._prompt_tokens(state)
        completion_tokens: int | None = None
        cost: float | None = None
        if candidate is not None and candidate.priced and prompt_tokens is not None:
            cost = candidate.estimate_usd(int(prompt_tokens), 0)
            how = f"charged the prompt's estimated cost of ${charges.usd(cost)} ({int(prompt_tokens)} prompt tokens)"
        reserved = self.engine.spend.reserved_usd(reservation_id)
        if reserved is not None and reserved > (cost or 0.0):
            cost = reserved
            how = f"charged its reservation, ${charges.usd(cost)}, the most the request may have billed"
        if partial is not None:
            streamed_prompt, streamed_completion, litellm_cost = partial
            streamed = charges.policy_priced(candidate, streamed_prompt, streamed_completion)
            if streamed is None:
                streamed = litellm_cost
            if streamed > (cost or 0.0):
                cost, prompt_tokens, completion_tokens = streamed, streamed_prompt, streamed_completion
                how = (f"charged LiteLLM's count of what was streamed, ${charges.usd(cost)} "
                       f"({streamed_prompt} prompt + {streamed_completion} completion tokens)")
        if cost is None:
            cost = 0.0
            how = "the request could not be priced and had no reservation; charged $0"
        self.engine.spend.settle(reservation_id, cost, {"usage": "estimated", "failed": failure.matcher})
        logger.warning(
            "litellm-payg: %s failed after the provider answered (%s: %s); %s; no usage was reported",
            where, failure.cls, failure.matcher, how,
        )
        return charges.Charge(cost, int(prompt_tokens) if prompt_tokens is not None else None, completion_tokens, estimated=True)

    def _emit_failure(
        self, state: RequestState, deployment_id: str, exception: BaseException, charge: charges.Charge | None, model: Any
    ) -> None:
        if charge is None:
            self._emit(state, deployment_id, ok=False, cost=0.0, error=exception, model=model)
            return
        self._emit(state, deployment_id, ok=False, cost=charge.cost, error=exception, model=model,
                   prompt_tokens=charge.prompt_tokens, usage_estimated=True)

    async def async_pre_call_deployment_hook(self, kwargs, call_type):
        """Runs once per attempt, just before LiteLLM calls the deployment. Two jobs:

        * **The backstop of the trust boundary.** An attempt on one of this router's deployments
          that no pick of this plugin chose is refused (:class:`InvalidRequest`, final). LiteLLM
          sends a request whose ``model`` is a deployment id straight to that deployment, past every
          routing hook; the governed doors (:meth:`resolve_model`) route or refuse such a request,
          and this catches any way in they do not see, so every billed call on a governed
          deployment is reserved and recorded, or not made.
        * ``first_token_timeout_ms`` for streams, which LiteLLM lacks: the stream's HTTP read
          timeout is set to it, so a deployment that sends no first chunk in time fails the attempt
          with a timeout (class ``server_error``) and the request moves to the next deployment. It
          is a read timeout, so a later gap between chunks longer than it also ends the stream.
        """
        deployment_id = str((kwargs.get("model_info") or {}).get("id"))
        if deployment_id not in self._candidates:
            return None
        ours = self._ours(kwargs)
        if ours is None and self._another_routers(metadata_of(kwargs)):
            return None  # another router's attempt on a deployment with the same id
        if ours is not None and ours[0].unsent is not None and ours[0].unsent[0] == deployment_id:
            ours[0].unsent = None  # the pick is now an attempt
        if ours is None or not ours[0].attempts or ours[0].attempts[-1] != deployment_id:
            error = InvalidRequest(
                f"litellm-payg: the request reached deployment {deployment_id} "
                f"({self._candidates[deployment_id].model}) without being routed by the policy "
                f"(model {kwargs.get('model')!r}); send the model group "
                f"{self._candidates[deployment_id].group!r} instead",
                field="model",
            )
            if ours is not None:
                ours[0].final_error = error
            raise error
        failover = self.engine.policy.failover
        if failover is None or not failover.first_token_timeout_ms or not kwargs.get("stream"):
            return None
        limit = failover.first_token_timeout_ms / 1000
        current = kwargs.get("timeout")
        if not isinstance(current, (int, float)) or current > limit:
            kwargs["timeout"] = limit
            kwargs["stream_timeout"] = limit
        return kwargs

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
        prompt_tokens, completion_tokens = charges.answer_tokens(response)
        cost = _Once(lambda: self._attempt_cost(request_data, response, deployment_id))
        if not (prompt_tokens or completion_tokens or isinstance(response, litellm.ModelResponse) or cost()):
            return None
        latency = charges.elapsed(request_data)
        self.settle_answer(
            state, deployment_id, response, prompt_tokens, completion_tokens, litellm_cost=cost,
            messages=request_data.get("messages"), tools=charges.tools_of(request_data), model=request_data.get("model"),
            latency=latency, ttft=latency,  # a whole answer: its first token came with its last (as LiteLLM logs it)
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
        hidden = getattr(response, "_hidden_params", None)
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
            open_ = state.reservations.get(deployment_id)
            reserved = self.engine.spend.reserved_usd(open_[0]) if open_ else None
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
        reservation_id = state.pop_reservation(deployment_id)
        if reservation_id is None:
            return
        usage = response.get("usageMetadata") or {}
        prompt = int(usage.get("promptTokenCount") or 0)
        completion = int(usage.get("candidatesTokenCount") or 0) + int(usage.get("thoughtsTokenCount") or 0)
        candidate = self._candidates.get(deployment_id)
        cost = charges.price_tokens(candidate, str(model or ""), prompt, completion) if (prompt or completion) else None
        charge = charges.Charge(cost, prompt, completion) if cost is not None else charges.Charge(
            self.engine.spend.reserved_usd(reservation_id) or 0.0, prompt, completion, estimated=True)
        self.engine.spend.settle(reservation_id, charge.cost, charge.attrs, tokens=charges.used_tokens(charge))
        self._emit(state, deployment_id, ok=True, cost=charge.cost, model=model, prompt_tokens=prompt,
                   completion_tokens=completion, usage_estimated=charge.estimated)
        self._finish(state)

    def _attempt_cost(self, request_data: Mapping[str, Any], response: Any, deployment_id: str) -> float:
        """LiteLLM's cost of an answered attempt (``charges.attempt_cost``), or the same number from
        the deployment's per-token price where that is known to be it (``charges.TokenPrices``)."""
        candidate = self._candidates.get(deployment_id)
        return self._token_prices.cost(request_data, response, candidate,
                                       lambda: charges.attempt_cost(request_data, response, candidate))

    def _charge_inline(self, request_data: Mapping[str, Any], response: Any, state: RequestState, deployment_id: str) -> charges.Charge | None:
        """Settle a non-stream answer the validators rejected (it billed): the charge of
        :meth:`_charge_answer`, without the success outcome (the caller reports a failure)."""
        reservation_id = state.pop_reservation(deployment_id)
        if reservation_id is None:
            return None
        prompt_tokens, completion_tokens = charges.answer_tokens(response)
        charge = self._charge_answer(
            deployment_id, reservation_id, response, prompt_tokens, completion_tokens,
            lambda: self._attempt_cost(request_data, response, deployment_id),
            request_data.get("messages"), charges.tools_of(request_data), state, request_data.get("model"),
        )
        self.engine.spend.settle(reservation_id, charge.cost, charge.attrs, tokens=charges.used_tokens(charge))
        return charge

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
        try:
            prompt_tokens = charges.count_prompt(model, messages, tools) if messages else None
            if not prompt_tokens:
                routed = self._prompt_tokens(state)  # what the request was routed with
                if routed is not None:
                    prompt_tokens = routed
            completion_tokens = charges.count_completion(model, response)
            if prompt_tokens is None:
                raise ValueError("the request's messages are not available to count")
            cost = charges.price_tokens(candidate, model, prompt_tokens, completion_tokens)
            problem = None if cost is not None else "the deployment has no known price"
        except Exception as exc:  # noqa: BLE001 - a tokenizer or price lookup failure must not lose the charge
            cost, problem = None, f"LiteLLM could not count or price it: {exc}"
        if cost is not None:
            logger.warning(
                "litellm-payg: %s answered without a usage block; charged an estimate of $%s "
                "(%d prompt + %d completion tokens by LiteLLM's token counter)",
                where, charges.usd(cost), prompt_tokens, completion_tokens,
            )
            return charges.Charge(cost, prompt_tokens, completion_tokens, estimated=True)
        reserved = self.engine.spend.reserved_usd(reservation_id) or 0.0
        logger.warning(
            "litellm-payg: %s answered without a usage block and no estimate could be made (%s); "
            "charged the reservation's $%s",
            where, problem, charges.usd(reserved),
        )
        return charges.Charge(reserved, prompt_tokens, completion_tokens, estimated=True)

    async def check_response(self, request_data: Mapping[str, Any], response: Any) -> None:
        """Run the ``payg_validate_response`` hooks on a non-stream answer; raise
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
        charge = self._charge_inline(request_data, response, state, deployment_id)  # it billed: still paid for
        if self.engine.health is not None:
            self.engine.health.record(deployment_id, ok=False)
        if charge is None:
            charge = charges.Charge(charges.attempt_cost(request_data, response, candidate), None, None)
        self._emit(state, deployment_id, ok=False, cost=charge.cost, error=error, model=request_data.get("model"),
                   **({"prompt_tokens": charge.prompt_tokens, "completion_tokens": charge.completion_tokens,
                       "usage_estimated": True} if charge.estimated else {}))
        raise error

    # -- outcomes, from LiteLLM's logging worker --------------------------------------------------

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
    ) -> charges.Charge | None:
        """Settle the open reservation of an answered attempt on ``deployment_id``: charge it
        (:meth:`_charge_answer`), record its latency, tell the ``payg_outcome`` observers. Returns
        the charge, or None when the attempt was already settled: whichever of the inline paths
        (the per-attempt hook, the door, the stream's last chunk) and LiteLLM's later success log
        comes first settles it, the others find no reservation and charge nothing."""
        reservation_id = state.pop_reservation(deployment_id)
        if reservation_id is None:
            return None
        charge = self._charge_answer(deployment_id, reservation_id, response, prompt_tokens, completion_tokens,
                                     litellm_cost, messages, tools, state, model, cache_hit)
        if abandoned is not None:
            charge = dataclasses.replace(charge, abandoned=True, abandoned_because=abandoned)
        elif estimated:
            charge = dataclasses.replace(charge, estimated=True)
        self.lifecycle.succeeded(reservation_id, deployment_id, charge.cost, latency, ttft, charge.attrs,
                                 tokens=charges.used_tokens(charge))
        if self.engine.policy.quality.feedback:
            self._remember_answer(state, deployment_id, response, charge.cost)
        if self.engine.policy.quality.judge is not None and not abandoned:
            self.judge.maybe_sample(state, deployment_id, messages, response)
        self._emit(
            state, deployment_id, ok=True, cost=charge.cost, latency=latency, model=model,
            prompt_tokens=charge.prompt_tokens, completion_tokens=charge.completion_tokens,
            usage_estimated=charge.estimated,
        )
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

    def _charge_answer(
        self, deployment_id: str, reservation_id: str, response: Any, prompt_tokens: Any, completion_tokens: Any,
        litellm_cost: Callable[[], Any], messages: Any, tools: Any, state: RequestState, model: Any,
        cache_hit: bool = False,
    ) -> charges.Charge:
        """What an answer is charged, wherever it is settled: nothing for an answer LiteLLM's cache
        served (the provider was not called; marked ``cache_hit``); an estimate for an answer that
        reported no usage (:meth:`_estimate_missing_usage`); the policy's own price for a
        deployment it prices; else LiteLLM's cost (``litellm_cost``: its logging payload's
        ``response_cost``, or its calculator run on the response inline), and the deployment's
        price where LiteLLM priced billed tokens at $0 (its /v1/messages path does, 1.110.2)."""
        if cache_hit:
            return charges.Charge(0.0, prompt_tokens, completion_tokens, cache_hit=True)
        if charges.usage_missing(response, prompt_tokens, completion_tokens):
            return self._estimate_missing_usage(deployment_id, reservation_id, messages, tools, response, state, model)
        candidate = self._candidates.get(deployment_id)
        cost = charges.policy_priced(candidate, prompt_tokens, completion_tokens)
        if cost is None:
            cost = float(litellm_cost() or 0.0)
        if cost == 0.0 and (prompt_tokens or completion_tokens):
            priced = charges.price_tokens(candidate, str(model or ""), int(prompt_tokens or 0), int(completion_tokens or 0))
            cost = priced if priced is not None else cost
        per_character = candidate.input_usd_per_character if candidate is not None else None
        if per_character and state.characters:
            # a speech model bills every character of its input; LiteLLM's cost leaves out the
            # whitespace ("hello world" is priced as 10 characters), so the ledger would fall below
            # the bill: charge the characters the provider was sent, as the reservation counted them
            cost = max(cost, state.characters * per_character)
        return charges.Charge(cost, prompt_tokens, completion_tokens, **charges.token_details(response))

    def _finish(self, state: RequestState) -> None:
        """The request was answered: its state is released now, unless the proxy's response headers
        (:attr:`late_headers`) have not read its decision yet; then only what its next attempt would
        need is dropped, and the state stays among the last finished (bounded) until they do, keeping
        of its request only the run it belongs to (:class:`AnsweredRequest`, what the headers report)."""
        self.states.finished(state)
        if state.request is not None and not isinstance(state.request, AnsweredRequest):
            request = state.request
            state.request = AnsweredRequest(session=getattr(request, "session", None), run=getattr(request, "run", None),
                                            run_budgets=self.engine.spend.run_budgets_of(request) if self.late_headers else ())
        state.count_prompt = None  # holds the prompt's parts
        state.last_failure = None
        state.final_error = None
        if not self.late_headers or state.headers_sent:
            self.states.forget(state)

    def release_failed(self, data: Mapping[str, Any]) -> None:
        """The request ``data`` ended in an error (a refusal, its last attempt failed): forget its
        state now. A refused request's state holds its final error, whose traceback holds the
        filter's frames and so the whole request (a 1 MiB metadata blob cost about 2 MB of proxy
        memory per refused request while 20,000 states were kept). A pick that never became an
        attempt is released (:meth:`_release_unsent`). A state with an attempt's reservation still
        open is kept: LiteLLM's failure event for that attempt settles it later."""
        state = self.states.find(metadata_of(data))
        if state is None:
            return
        # a pick LiteLLM rejected the request after, before any attempt began (its own checks of a
        # field: a Responses ``tools`` entry that is not an object...): the provider was not called
        # and no failure event will come for it, so its reservation is released now
        self._release_unsent(state)
        if not state.open_reservations:
            self.states.forget(state)

    def _outcome_heard(self) -> bool:
        """Whether a ``payg_outcome`` would reach anything: False only when the sole implementation
        is the built-in decision log, with its logger below INFO (it then returns at once), and no
        pluggy monitoring or tracing watches the calls. Checked on every outcome, so a plugin
        registered or a log level changed later is heard from its next outcome on; it saves
        building an Outcome and a pluggy call (about 15 us) on the caller's path."""
        pm = self.engine.pm
        impls = pm.hook.payg_outcome.get_hookimpls()
        if len(impls) != 1 or impls[0].plugin_name != _DECISION_LOG or logger.isEnabledFor(logging.INFO):
            return True
        return getattr(pm, "_inner_hookexec", None) is not _PLUGGY_MULTICALL or _PLUGGY_MULTICALL is None

    def _emit(self, state: RequestState, deployment_id: str, ok: bool, cost: float, **extra: Any) -> None:
        if not self._outcome_heard():
            return
        candidate = self._candidates.get(deployment_id)
        outcome = Outcome(
            group=(candidate.group if candidate else None) or "",
            deployment_id=deployment_id,
            model=(candidate.model if candidate else None) or extra.get("model"),  # as configured, with its provider
            ok=ok,
            cost_usd=cost,
            latency_s=extra.get("latency"),
            prompt_tokens=extra.get("prompt_tokens"),
            completion_tokens=extra.get("completion_tokens"),
            error=extra.get("error"),
            trace_id=state.trace_id,
            decision=state.decision,
            usage_estimated=bool(extra.get("usage_estimated")),
        )
        self.engine.pm.hook.payg_outcome(outcome=outcome)


class ResponseGuard(CustomGuardrail):
    """Fails an attempt whose answer the validators reject, so the request moves on.

    LiteLLM swallows an exception raised from a plain ``CustomLogger``'s
    ``async_post_call_success_deployment_hook`` ("a broken callback must not fail a completed
    request") but re-raises a ``CustomGuardrail``'s, which then counts as a failed attempt. This
    object does nothing else: it has no guardrail event hooks and delegates to the adapter.
    """

    def __init__(self, adapter: PaygRouting):
        super().__init__(guardrail_name=f"litellm-payg-validate-{adapter.binding}", default_on=False)
        self.adapter = adapter

    async def async_post_call_success_deployment_hook(self, request_data, response, call_type):
        await self.adapter.check_response(request_data, response)  # raises (after charging it) if rejected
        self.adapter.settle_attempt(request_data, response, call_type)  # accepted: settle it now
        return None


def _characters(request_kwargs: Mapping[str, Any]) -> int | None:
    """The characters of a speech request's ``input``, what a per-character price bills."""
    text = request_kwargs.get("input")
    return len(text) if isinstance(text, str) else None


@dataclasses.dataclass(frozen=True)
class AnsweredRequest:
    """What a finished request's state keeps of its RouteRequest: the run (``session``, ``run``) the
    proxy's response headers report on, and the run budgets that applied to it (their index,
    ``SpendControl.run_budgets_of``). The rest (its metadata, the prompt's parts) is dropped."""

    session: Any
    run: Any = None
    run_budgets: tuple[int, ...] = ()


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


def _trace(request_kwargs: Mapping[str, Any]) -> str | None:
    """LiteLLM's trace id of a request (stable across its retries and fallback hops)."""
    trace = request_kwargs.get("litellm_trace_id")
    return None if trace in (None, "") else bounded_label(str(trace))  # client-set: a label, bounded


LARGER_CONTEXT_SUFFIX = "::payg-larger-context"


def _route_context_errors_back(router: Any, engine: Engine) -> None:
    """Make ``failover.on.context_window: larger_context`` reachable.

    LiteLLM 1.110 never retries a context-window error inside its group: it only follows
    ``context_window_fallbacks`` to another group. So each governed group without such a fallback
    gets one to an alias of itself (``<group>::payg-larger-context``); on that hop the filter sees the
    failure and picks an untried deployment with a larger ``max_input_tokens``. A group that already
    has context-window fallbacks keeps them.
    """
    failover = engine.policy.failover
    if failover is None or failover.action_for("context_window") != "larger_context":
        return
    existing = litellm_versions.context_window_fallbacks(router)
    covered = {group for entry in existing for group in entry}
    aliases = litellm_versions.model_group_aliases(router)
    added = False
    for group in engine.routes:
        if group in covered:
            continue
        alias = group + LARGER_CONTEXT_SUFFIX
        existing.append({group: [alias]})
        aliases[alias] = group
        added = True
    if added:
        litellm_versions.set_context_window_fallbacks(router, existing, aliases)


def _validates(engine: Engine) -> bool:
    """Whether any validator can run: the policy's ``validate:`` list or a third-party hook."""
    if engine.policy.validators:
        return True
    return any(
        impl.plugin_name != "litellm_payg.policy.validators" for impl in engine.pm.hook.payg_validate_response.get_hookimpls()
    )


def attach(
    router: Any,
    policy: str | Path | Mapping[str, Any] | Policy,
    *,
    ledger: Any = None,
    clock: Callable[[], float] | None = None,
) -> Attached:
    """Govern ``router`` by ``policy`` (a YAML path, a dict, or a loaded Policy); returns the handle
    (:class:`~litellm_payg.adapter.attachment.Attached`: ``.engine`` is the Engine, whose attributes
    the handle reads through).

    ``ledger`` (a URL such as ``memory://``, or a ``Ledger``) replaces the policy's ledger, and
    ``clock`` the wall clock budgets and breakers read: tests and simulations inject both instead of
    sleeping in real time or reaching into private attributes.

    Registers a :class:`PaygRouting` callback with LiteLLM, makes the Router's request methods
    governed doors (:mod:`litellm_payg.adapter.ingress`: bad input and deployment names are refused there,
    and each request gets the plugin's id), and routes ``router.completion`` (sync) through the
    async path so it is governed too. ``.detach()`` on the handle undoes all of it.
    """
    loaded = policy if isinstance(policy, Policy) else load_policy(policy, deployments_known=True)  # bind checks prices
    engine = Engine(loaded, ledger=ledger, clock=clock or time.time)
    adapter = PaygRouting(engine)
    adapter.install(router)
    litellm.logging_callback_manager.add_litellm_callback(adapter)
    if adapter not in litellm.callbacks:
        # LiteLLM only warns when its callback list is full (MAX_CALLBACKS): the Router would then
        # run ungoverned, so say so instead
        adapter.uninstall()
        raise PaygError(
            f"litellm-payg: LiteLLM refused to register the policy's callback: its callback list is full "
            f"({len(litellm.callbacks)} callbacks). Detach the engines and drop the Routers you no longer "
            "use (before LiteLLM 1.110 every Router also keeps its own callbacks there for good)"
        )


    def completion(*args: Any, **kwargs: Any) -> Any:
        result = BRIDGE.run(router.acompletion(*args, **kwargs))
        if kwargs.get("stream"):
            return BRIDGE.iterate(result)
        return result

    completion.__doc__ = "Router.completion, governed by litellm-payg (served through acompletion)."
    router.completion = completion

    attached = Attached(engine, adapter, router)
    # a Router dropped without detach() must not leave its callback in LiteLLM's process-wide lists
    weakref.finalize(router, _router_collected, weakref.ref(adapter))
    return attached


def _router_collected(adapter_ref: "weakref.ReferenceType[PaygRouting]") -> None:
    adapter = adapter_ref()
    if adapter is not None:
        adapter.uninstall()
