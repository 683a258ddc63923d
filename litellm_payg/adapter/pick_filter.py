"""The routing lever: which deployment an attempt goes to, and the request the policy decides on.

Why its own module: ``async_filter_deployments`` is the one place LiteLLM lets a callback choose the
deployment (on every pick, retry and fallback hop, after LiteLLM's own cooldown and health
filtering); what it takes to turn LiteLLM's request into the policy's
:class:`~litellm_payg.core.decision.RouteRequest` (identity, the prompt counted once, what LiteLLM's
own later checks will ask of a deployment) is this module's, and the pick itself, its reservation
and the failover hop are the request's :class:`~litellm_payg.runtime.attempt.Attempt`'s. The
adapter only turns the attempt's refusals into the errors LiteLLM's callers expect, and makes a
refusal final (``RequestState.final_error``) so no retry or fallback routes around it.
``async_pre_call_deployment_hook`` closes the loop: the pick became an attempt (``Attempt.sent``).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from litellm_payg.adapter import litellm_versions
from litellm_payg.adapter.attributes import door_attributes
from litellm_payg.adapter.context_window import LARGER_CONTEXT_SUFFIX
from litellm_payg.adapter.ingress import InvalidRequest
from litellm_payg.adapter.litellm_errors import BudgetExceeded
from litellm_payg.adapter.request_door import DECISION_KEY, characters_of
from litellm_payg.core.decision import Candidate, RouteRequest
from litellm_payg.core.errors import BudgetRefused, InvalidAmount, UnboundedCost
from litellm_payg.core.feasibility import Needs
from litellm_payg.core.identity import LabelError, hints_of, minted_session, run_of
from litellm_payg.wire.identity import DEFAULT_SESSION_SOURCES, identity_of, session_of
from litellm_payg.wire.request_checks import asks_cache_write, choices, output_cap
from litellm_payg.runtime.request_state import RequestState
from litellm_payg.adapter.request_metadata import metadata_of
from litellm_payg.core.runs import loop_marks, prompt_hash
from litellm_payg.runtime import store_access
from litellm_payg.runtime.lifecycle import GiveUp
from litellm_payg.runtime.spend import LedgerDown
from litellm_payg.stores.prices import OTHER_PROMPT_PARTS, count_request_tokens, prompt_tokens_at_most

logger = logging.getLogger("litellm_payg")

#: the parts of a request's prompt besides its messages (``pricing.count_request_tokens``)
_PROMPT_PARTS = frozenset(("tools", *OTHER_PROMPT_PARTS))


class PickFilter:
    """The part of :class:`~litellm_payg.adapter.routing.PaygRouting` that picks (a mixin)."""

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
        attempt = self.attempts.of(state)
        attempt.released()  # the last pick was only looked at (LiteLLM's scheduler), never sent
        group = candidates[0].group
        if (model != group and self._aliases.get(model) != group and not model.endswith(LARGER_CONTEXT_SUFFIX)
                and not ("*" in group and fnmatch.fnmatchcase(model, group))):
            # a deployment named as the model past the governed doors (resolve_model)
            state.final_error = InvalidRequest(
                f"litellm-payg: model {model!r} names a deployment of the governed group {group!r}; send model={group!r}",
                field="model",
            )
            raise state.final_error
        if self._tag_routing or self._tag_routing_setting or request_kwargs.get("enable_tag_filtering") is True:
            needs = await self._needs(model, healthy_deployments, messages, request_kwargs)
        else:  # no tag routing to ask LiteLLM about: no coroutine to make and await
            needs = self._needs_untagged(model, healthy_deployments, messages, request_kwargs)
        request = self.route_request(group, candidates, messages, request_kwargs, metadata, state, needs)
        if (missing := store_access.missing_run(self.engine, request)) is not None:  # sessions.required: final, a 400
            state.final_error = InvalidRequest(missing, field=self.engine.policy.session_sources[0])
            raise state.final_error
        try:
            picked = attempt.pick(request, candidates)
        except GiveUp as stop:
            raise stop.error from None  # failover.on says stop: the attempt's own error reaches the caller
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
        metadata[DECISION_KEY] = state.decision
        # candidates[i] is healthy_deployments[i]'s (_candidates_for): no need to read the dicts again
        chosen_id = pick.deployment_id
        for d, c in zip(healthy_deployments, candidates):
            if c is pick:  # the same object, as a rule passes candidates through
                return [d]
        return [d for d, c in zip(healthy_deployments, candidates) if c.deployment_id == chosen_id]

    async def _needs(self, model: str, deployments: list, messages: Any, request_kwargs: Mapping[str, Any]) -> Needs | None:
        """What LiteLLM's own checks, which run after this filter, ask of a deployment for this
        request (``core/feasibility.py`` applies them before the rules): the deployments LiteLLM's
        tag routing keeps (worked out by LiteLLM's own ``get_deployments_for_tag``, which is why
        this one awaits), and the rest (:meth:`_needs_untagged`)."""
        tag_kept: frozenset[str] | None = None
        reason = ""
        router = self._router_ref() if self._router_ref else None
        try:
            kept = await litellm_versions.deployments_for_tag(router, model, list(deployments), request_kwargs)
        except Exception:  # noqa: BLE001 - LiteLLM's own tag check raises it again after this filter
            kept = None
        if kept is not None and len(kept) != len(deployments):
            tag_kept = frozenset(str((d.get("model_info") or {}).get("id")) for d in kept)
            tags = (metadata_of(request_kwargs) or {}).get("tags")
            reason = f"the deployment's tags do not match the request's tags {tags!r}"
        return self._needs_untagged(model, deployments, messages, request_kwargs, tag_kept, reason)

    def _needs_untagged(self, model: str, deployments: list, messages: Any, request_kwargs: Mapping[str, Any],
                        tag_kept: frozenset[str] | None = None, reason: str = "") -> Needs | None:
        """What LiteLLM's own checks ask of a deployment besides tag routing: image content while
        some deployment declares no vision, ``allowed_model_region`` under pre-call checks, an order
        fallback's target order, the rpm/tpm usage-based routing and old pre-call checks read. None,
        without reading the request, when none of these can apply (and ``tag_kept`` is None).
        Called directly, without a coroutine, for a request no tag routing applies to."""
        image = self._vision_varies and litellm_versions.request_has_image(messages, request_kwargs)
        region = request_kwargs.get("allowed_model_region") if self._region_checks else None
        order = request_kwargs.get("_target_order")
        order = order if isinstance(order, int) and not isinstance(order, bool) else None
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
                attrs = door_attributes(store_access.scopes(self.engine), metadata)
                if attrs:
                    state.identity = dataclasses.replace(state.identity, attrs=attrs)
            except LabelError as exc:
                raise InvalidRequest(str(exc), field=exc.field) from None
        who = state.identity
        engine = self.engine
        spend, policy = engine.spend, engine.policy
        max_tokens = output_cap(request_kwargs, state.api)
        hints = hints_of(metadata)
        return RouteRequest(
            group=group,
            prompt_tokens=state.prompt_tokens if state.prompt_tokens is not None else self._counter(
                state, candidates[0].model, messages, request_kwargs),
            output_tokens=engine.expected_output_tokens(max_tokens),
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
                                           getattr(policy, "session_sources", DEFAULT_SESSION_SOURCES))
                     or self._minted(state, who)),
            run=run_of(session, who, getattr(policy, "run_owner", "key")),
            prompt_hash=(prompt_hash(messages or request_kwargs.get("messages") or request_kwargs.get("input"))
                         if spend.loop_guards else None),
            loop_marks=loop_marks(messages or request_kwargs.get("messages") or request_kwargs.get("input"),
                                  spend.loop_kinds)
            if spend.loop_kinds else (),
            # worked out only if a rule reads it (quality_floor), like the count itself
            prompt_tokens_at_most=None if state.prompt_tokens is not None else lambda: prompt_tokens_at_most(
                {**{name: request_kwargs[name] for name in _PROMPT_PARTS.intersection(request_kwargs)},
                 "messages": messages or request_kwargs.get("messages")}),
            api=state.api,
            characters=(state.characters if state.characters is not None else characters_of(request_kwargs))
            if state.api == "speech" else None,
            # only looked for where a reservation can use it: budgets, and a deployment that prices it
            cache_writes=bool(spend.budgets) and group in self._cache_write_groups and asks_cache_write(
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
        # the pick is now an attempt, if it was this deployment's
        if ours is None or not self.attempts.of(ours[0]).sent(deployment_id):
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
