"""The thin layer that wires the engine into LiteLLM's Router through LiteLLM's own extension points.

* ``async_filter_deployments`` (a ``CustomLogger`` hook the Router runs on every pick, retry and
  fallback hop, after its own cooldown and health filtering) narrows the group's deployments to the
  one the policy orders first among those not yet tried for this request. LiteLLM keeps doing its
  health checks, cooldowns, retries and fallbacks; we only decide the candidate.
* The decision is stamped on the request's live ``metadata`` dict (``payg_decision``), which the
  success and failure callbacks receive too, and logged.
* ``async_log_success_event`` / ``async_log_failure_event`` turn LiteLLM's outcome (real
  ``response_cost`` of the deployment that actually ran, latency) into a ``payg_outcome`` hook call.
* The synchronous ``router.completion`` skips async filters, so ``attach`` routes it through the async
  path (``sync_bridge.py``) instead of letting it go unrouted.
"""

from __future__ import annotations

import logging
import random
import uuid
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import litellm
from litellm.integrations.custom_logger import CustomLogger

from .decision import Candidate, Outcome, RouteRequest
from .engine import Engine
from .errors import NoDeploymentLeft
from .identity import hints_of, identity_of
from .policy import Policy, load_policy
from .pricing import candidate_from_deployment, count_prompt_tokens
from .spend import BudgetExceeded
from .sync_bridge import BRIDGE

logger = logging.getLogger("litellm_payg")

DECISION_KEY = "payg_decision"
ATTEMPTS_KEY = "payg_attempts"
PROMPT_TOKENS_KEY = "payg_prompt_tokens"
BINDING_KEY = "payg_binding"
RESERVATIONS_KEY = "payg_reservations"
BLOCKED_KEY = "payg_blocked"


class PaygRouting(CustomLogger):
    """The LiteLLM callback that applies an :class:`Engine` to one Router's requests.

    LiteLLM's callback list is process-wide, so this callback acts only on requests whose
    deployments belong to the router it was bound to, and passes every other request through.
    """

    _count = 0

    def __init__(self, engine: Engine):
        super().__init__()
        self.engine = engine
        # LiteLLM de-duplicates callbacks by class name plus their public str/int/bool attributes, so
        # two PaygRouting instances (two governed Routers) would collapse into one without this.
        PaygRouting._count += 1
        self.binding = f"payg-{PaygRouting._count}-{id(self):x}"
        self._candidates: dict[str, Candidate] = {}
        self._router_ref: weakref.ReferenceType[Any] | None = None

    # -- binding ----------------------------------------------------------------------------------

    def bind(self, router: Any) -> None:
        """Learn the router's deployments and check the policy against them (fails loudly now,
        not on the first request)."""
        self._router_ref = weakref.ref(router)
        self._load(router.registry().deployments())
        by_group: dict[str, list[Candidate]] = {}
        for c in self._candidates.values():
            by_group.setdefault(c.group, []).append(c)
        self.engine.check_deployments(by_group)

    def _load(self, deployments: Sequence[Mapping[str, Any]]) -> None:
        models = self.engine.policy.models
        self._candidates = {
            str(d["model_info"]["id"]): candidate_from_deployment(d, models) for d in deployments
        }

    def _candidates_for(self, deployments: Sequence[Mapping[str, Any]]) -> list[Candidate] | None:
        """Our candidates for these deployment dicts, or None if they are another router's."""
        out = []
        for d in deployments:
            c = self._candidates.get(str((d.get("model_info") or {}).get("id")))
            if c is None:
                router = self._router_ref() if self._router_ref else None
                if router is None or not router.registry().has_deployment(str(d["model_info"]["id"])):
                    return None
                self._load(router.registry().deployments())  # deployments were added at runtime
                c = self._candidates.get(str(d["model_info"]["id"]))
                if c is None:
                    return None
            out.append(c)
        return out

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
        metadata = request_kwargs.get("metadata")
        if metadata is None:
            metadata = {}
        metadata[BINDING_KEY] = self.binding  # so outcomes find their way back to this policy
        blocked = metadata.get(BLOCKED_KEY)
        if blocked:
            # a budget block is final for the request: LiteLLM's fallbacks must not route around it
            raise BudgetExceeded.from_dict(blocked)
        request = self.route_request(model, candidates, messages, request_kwargs, metadata)
        decision = self.engine.decide(request, candidates)
        if not decision.governed and not decision.dropped and not self.engine.spend.budgets:
            return healthy_deployments

        attempts: list[str] = metadata.setdefault(ATTEMPTS_KEY, [])
        if not decision.ordered:
            raise NoDeploymentLeft(model, [(d.deployment_id, d.model, f"{d.by}: {d.reason}") for d in decision.dropped])
        untried = [c for c in decision.ordered if c.deployment_id not in attempts] or decision.ordered[:1]
        if not decision.governed and len(untried) > 1:
            untried = random.sample(untried, len(untried))  # no route: spread load as LiteLLM's shuffle would
        reservation_id = f"{request.trace_id or uuid.uuid4().hex}:{len(attempts)}"
        try:
            admission = self.engine.spend.admit(request, untried, reservation_id, decision.attrs)
        except BudgetExceeded as exc:
            metadata[BLOCKED_KEY] = exc.as_dict()
            raise
        pick = admission.candidate
        attempts.append(pick.deployment_id)
        metadata.setdefault(RESERVATIONS_KEY, {}).setdefault(pick.deployment_id, []).append(reservation_id)
        stamped = decision.as_dict()
        stamped["chosen"] = pick.deployment_id
        stamped["chosen_model"] = pick.model
        if admission.skipped:
            stamped["dropped"] += [
                {"deployment_id": d.deployment_id, "model": d.model, "by": d.by, "reason": d.reason}
                for d in admission.skipped
            ]
        metadata[DECISION_KEY] = stamped
        return [d for d in healthy_deployments if str(d["model_info"]["id"]) == pick.deployment_id]

    def route_request(
        self,
        group: str,
        candidates: Sequence[Candidate],
        messages: Any,
        request_kwargs: Mapping[str, Any],
        metadata: dict,
    ) -> RouteRequest:
        prompt_tokens = metadata.get(PROMPT_TOKENS_KEY)
        if prompt_tokens is None:
            prompt_tokens = count_prompt_tokens(candidates[0].model, messages or request_kwargs.get("messages"))
            metadata[PROMPT_TOKENS_KEY] = prompt_tokens
        max_tokens = request_kwargs.get("max_tokens") or request_kwargs.get("max_completion_tokens")
        max_tokens = int(max_tokens) if max_tokens else None
        who = identity_of(request_kwargs, metadata)
        hints = hints_of(metadata)
        return RouteRequest(
            group=group,
            prompt_tokens=int(prompt_tokens),
            output_tokens=self.engine.expected_output_tokens(max_tokens),
            max_tokens=max_tokens,
            user=who.user,
            team=who.team,
            api_key=who.api_key,
            tags=who.tags,
            min_quality=hints.min_quality,
            allowed_models=hints.models,
            trace_id=request_kwargs.get("litellm_trace_id"),
            metadata=metadata,
        )

    # -- outcomes ---------------------------------------------------------------------------------

    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):
        self._outcome(kwargs, start_time, end_time, ok=True)

    async def async_log_failure_event(self, kwargs, response_obj, start_time, end_time):
        self._outcome(kwargs, start_time, end_time, ok=False)

    def _outcome(self, kwargs: Mapping[str, Any], start_time: Any, end_time: Any, ok: bool) -> None:
        slo = kwargs.get("standard_logging_object") or {}
        metadata = (kwargs.get("litellm_params") or {}).get("metadata") or {}
        if metadata.get(BINDING_KEY) != self.binding:
            return  # another router's request (or another policy's, attached before or after this one)
        decision = metadata.get(DECISION_KEY)
        deployment_id = slo.get("model_id") or ((kwargs.get("litellm_params") or {}).get("model_info") or {}).get("id")
        try:
            latency = (end_time - start_time).total_seconds()
        except Exception:
            latency = None
        outcome = Outcome(
            group=slo.get("model_group") or metadata.get("model_group") or "",
            deployment_id=None if deployment_id is None else str(deployment_id),
            model=(kwargs.get("litellm_params") or {}).get("model") or kwargs.get("model"),
            ok=ok,
            cost_usd=float(kwargs.get("response_cost") or 0.0) if ok else 0.0,
            latency_s=latency,
            prompt_tokens=slo.get("prompt_tokens"),
            completion_tokens=slo.get("completion_tokens"),
            error=None if ok else kwargs.get("exception"),
            trace_id=slo.get("trace_id") or kwargs.get("litellm_trace_id"),
            decision=decision,
        )
        reservations = (metadata.get(RESERVATIONS_KEY) or {}).get(outcome.deployment_id) or []
        if reservations:
            reservation_id = reservations.pop(0)
            billed = float(kwargs.get("response_cost") or 0.0)
            if ok or billed > 0:
                self.engine.spend.settle(reservation_id, billed if not ok else outcome.cost_usd)
            else:
                self.engine.spend.release(reservation_id)
        self.engine.pm.hook.payg_outcome(outcome=outcome)


def attach(router: Any, policy: str | Path | Mapping[str, Any] | Policy) -> Engine:
    """Govern ``router`` by ``policy`` (a YAML path, a dict, or a loaded Policy); returns the Engine.

    Registers a :class:`PaygRouting` callback with LiteLLM and routes ``router.completion`` (sync)
    through the async path so it is governed too. ``engine.detach()`` undoes both.
    """
    loaded = policy if isinstance(policy, Policy) else load_policy(policy)
    engine = Engine(loaded)
    adapter = PaygRouting(engine)
    adapter.bind(router)
    litellm.logging_callback_manager.add_litellm_callback(adapter)

    original_completion = router.completion

    def completion(*args: Any, **kwargs: Any) -> Any:
        result = BRIDGE.run(router.acompletion(*args, **kwargs))
        if kwargs.get("stream"):
            return BRIDGE.iterate(result)
        return result

    completion.__doc__ = "Router.completion, governed by litellm-payg (served through acompletion)."
    router.completion = completion

    def detach() -> None:
        # LiteLLM promotes a callback from litellm.callbacks into its success/failure lists on first
        # use: remove it from all of them, or a detached policy would keep receiving outcomes.
        litellm.logging_callback_manager.remove_callback_from_all_lists(adapter)
        router.completion = original_completion

    engine.adapter = adapter
    engine._undo.append(detach)
    return engine
