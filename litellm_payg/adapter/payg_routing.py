"""The ``PaygRouting`` callback: one Router's deployments, and LiteLLM's hooks assembled.

Why its own module: the callback is one object LiteLLM registers, but each of its hooks has one job,
kept in a module of its own (a mixin each): the door (``request_door.py``), the pick
(``pick_filter.py``), the answer (``answer_path.py``, priced by ``answer_charges.py``), the failure
(``failure_path.py``) and the validators (``response_guard.py``). What is left here is what they
share: binding to a Router (its deployments as the policy's candidates, the Router settings the
pick has to mirror) and installing the callback's companions. Every spend and health call of a
request is its :class:`~litellm_payg.runtime.attempt.Attempt`'s (``self.attempts.of(state)``).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import litellm
from litellm.integrations.custom_logger import CustomLogger

from litellm_payg.adapter import charges, litellm_fixes, litellm_versions
from litellm_payg.adapter.answer_charges import AnswerCharges
from litellm_payg.adapter.answer_path import AnswerPath
from litellm_payg.adapter.context_window import route_context_errors_back
from litellm_payg.adapter.failure_path import FailurePath
from litellm_payg.adapter.ingress import governed_entry_points
from litellm_payg.adapter.judge import JudgedSample
from litellm_payg.adapter.pick_filter import PickFilter
from litellm_payg.adapter.request_door import LIVE, RequestDoor
from litellm_payg.adapter.response_guard import ResponseGuard, ValidatedAnswers, validates
from litellm_payg.core.decision import Candidate, CandidateSet
from litellm_payg.runtime.attempt import Attempts
from litellm_payg.runtime.engine import Engine
from litellm_payg.stores.prices import candidate_from_deployment


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


class PaygRouting(RequestDoor, PickFilter, AnswerPath, AnswerCharges, FailurePath, ValidatedAnswers, CustomLogger):
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
        #: the requests' attempts: every spend and health call, the failover hop, ``payg_outcome``
        self.attempts = Attempts(engine, lambda deployment_id: self._candidates.get(deployment_id))
        self.lifecycle = self.attempts.lifecycle
        #: ``quality.judge``: a share of answers also sent to an unsure candidate and judged (judge.py)
        self.judge = JudgedSample(self)
        # LiteLLM de-duplicates callbacks by class name plus their public str/int/bool attributes, so
        # two PaygRouting instances (two governed Routers) would collapse into one without this.
        PaygRouting._count += 1
        self.binding = f"payg-{PaygRouting._count}-{id(self):x}"
        self._candidates: dict[str, Candidate] = {}
        #: the candidate sets handed to picks, by their deployment ids in order (``_candidates_for``)
        self._sets: dict[tuple[str, ...], CandidateSet] = {}
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
        self.states = self.attempts.states
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
        route_context_errors_back(router, self.engine)
        self._aliases = litellm_versions.model_group_aliases(router)
        LIVE.add(self)
        if self._unwrap is None:
            self._unwrap = governed_entry_points(router, self)
        if self._guard is None and validates(self.engine):
            self._guard = ResponseGuard(self)
            litellm.logging_callback_manager.add_litellm_callback(self._guard)

    def uninstall(self) -> None:
        """Remove this callback and its guard from every LiteLLM callback list (LiteLLM promotes a
        callback from ``litellm.callbacks`` into its success/failure lists on first use)."""
        litellm.logging_callback_manager.remove_callback_from_all_lists(self)
        LIVE.discard(self)
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
        self._sets = {}  # new candidates: what was worked out from the old ones goes with them
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

    def _candidates_for(self, deployments: Sequence[Mapping[str, Any]]) -> Sequence[Candidate] | None:
        """Our candidates for these deployment dicts, or None if they are another router's.

        The same deployments in the same order (a group's every pick, while none cools down) get the
        same :class:`~litellm_payg.core.decision.CandidateSet`, so what the rules work out from the
        candidates alone is worked out once (its ``memo``); new deployments (``_load``) start new sets."""
        try:  # on every pick, for every deployment of the group: the common case in one pass
            ids = tuple([d["model_info"]["id"] for d in deployments])
            found = self._sets.get(ids)
            if found is not None:
                return found
            known = self._candidates
            found = CandidateSet([known[i] for i in ids])
        except (KeyError, TypeError):
            pass  # an id that is not a str, a deployment added at runtime, or another router's
        else:
            if len(self._sets) >= 64:  # cooldowns and tag routing make a few subsets of a group: bounded
                self._sets = {}
            self._sets[ids] = found
            return found
        known = self._candidates
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
