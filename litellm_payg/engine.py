"""The decision: given a request and the candidate deployments, which to try, in what order, and why.

A pure function over plain data (``decision.py``): it does not import LiteLLM, so it is fast, runs
without a network, and is reused as-is by the adapter, ``litellm-payg explain`` and ``simulate``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import time
from typing import Any

from .decision import Candidate, Decision, Drop, RouteRequest, Step
from .errors import PluginError, PolicyError, Problem, UnknownPriceError
from .hook_chain import HookChain
from .policy import Policy, _undotted
from .rules import Rule, matches
from .health import HealthStore, open_health
from .spend import SpendControl


class Engine:
    """Applies a policy. Build one per policy; ``decide`` is safe to call concurrently."""

    def __init__(self, policy: Policy, ledger: Any = None, clock: Callable[[], float] = time.time):
        """``ledger`` overrides the policy's ledger (a URL or a Ledger, e.g. ``memory://`` for a
        simulation); ``clock`` is the wall clock budgets are computed with (a fake one in tests)."""
        self.policy = policy
        self.pm = policy.plugin_manager
        self.routes: dict[str, list[Rule]] = {
            group: [spec.build(group, policy.models) for spec in specs]
            for group, specs in policy.routes.items()
        }
        self._filters = HookChain(self.pm, "payg_filter_candidates")
        self._observe = self.pm.hook.payg_decision
        #: budgets and the spend ledger (reserve / settle / release)
        self.spend = SpendControl(policy, ledger=ledger, clock=clock)
        #: circuit breakers and latency per deployment, in the ledger's backend (``failover:`` only)
        self.health: HealthStore | None = None
        if policy.failover is not None:
            url = ledger if isinstance(ledger, str) else policy.ledger
            self.health = open_health(
                url, breaker=policy.failover.circuit_breaker.config(), latency=policy.failover.latency.config(), clock=clock
            )
        #: the LiteLLM callback applying this engine, once ``attach`` bound it to a Router
        self.adapter: object | None = None
        self._undo: list[Callable[[], None]] = []

    def detach(self) -> None:
        """Stop governing the Router this engine was attached to (undoes ``attach``)."""
        while self._undo:
            self._undo.pop()()
        self.spend.close()
        if self.health is not None:
            self.health.close()

    # -- deciding -------------------------------------------------------------------------------

    def decide(self, request: RouteRequest, candidates: Sequence[Candidate]) -> Decision:
        """Order ``candidates`` for ``request``; every candidate left out gets a ``Drop`` with a reason."""
        rules = self.routes.get(request.group)
        dropped: list[Drop] = []
        notes: list[str] = []
        attrs: dict[str, str] = {}
        current: Sequence[Candidate] = candidates

        if request.allowed_models is not None:
            allowed = request.allowed_models
            kept = [c for c in current if any(matches(ref, c) for ref in allowed)]
            if len(kept) != len(current):
                dropped.extend(
                    Step.drop(c, "not in the models the request allowed (payg_hints.models)", "request")
                    for c in current
                    if c not in kept
                )
            current = kept

        for step in self._steps(request, current, rules or ()):
            current = step.kept
            dropped.extend(step.dropped)
            if step.note:
                notes.append(step.note)
            if step.attrs:
                attrs.update(step.attrs)

        decision = Decision(request, list(current), dropped, notes, attrs, governed=rules is not None)
        self._observe(request=request, decision=decision)
        return decision

    def _steps(self, request: RouteRequest, candidates: Sequence[Candidate], rules: Sequence[Rule]) -> Iterable[Step]:
        """The route's rules, then every ``payg_filter_candidates`` plugin, each applied to what the
        previous one kept. The filters are a chain (``hook_chain.py``): one pluggy call per
        implementation, in pluggy's order, so argument subsets, ``tryfirst``/``trylast``, wrappers
        and tracing behave as for any other hook."""
        current = candidates
        for rule in rules:
            step = rule.apply(request, current)
            current = step.kept
            yield step
        for link in self._filters.links():
            for step in link.call(request=request, candidates=current, engine=self):
                if not isinstance(step, Step):
                    raise PluginError(
                        f"plugin {link.name}: payg_filter_candidates returned {step!r}; "
                        "expected None or a litellm_payg.decision.Step"
                    )
                current = step.kept
                yield step

    # -- binding to a router's deployments ------------------------------------------------------

    def check_deployments(self, candidates_by_group: Mapping[str, Sequence[Candidate]]) -> None:
        """Fail at attach time, not on the first request: every model a rule names must be a
        deployment of its group, and every deployment a cost rule can reach must have a price."""
        problems: list[Problem] = []
        unpriced: list[Problem] = []
        for group, rules in self.routes.items():
            candidates = candidates_by_group.get(group)
            if candidates is None:
                problems.append(Problem(
                    f"routes.{group}",
                    f"the router has no model group {group!r}; it has {', '.join(sorted(candidates_by_group)) or 'none'}",
                    self.policy.line_of(("routes", group)),
                ))
                continue
            for rule in rules:
                for field, ref in rule.model_refs():
                    if not any(matches(ref, c) for c in candidates):
                        problems.append(Problem(
                            field,
                            f"no deployment of group {group!r} is {ref!r}; the group has "
                            + ", ".join(f"{c.model} (id {c.deployment_id})" for c in candidates),
                            self.policy.line_of(_undotted(field)),
                        ))
                if rule.needs_prices:
                    for c in candidates:
                        if not c.priced:
                            unpriced.append(Problem(
                                rule.context.field,
                                f"deployment {c.deployment_id} ({c.model}) of group {group!r} has no known price, "
                                f"and rule {rule.name!r} compares prices",
                                self.policy.line_of(("routes", group)),
                                hint=f"add 'models: {{{c.model}: {{input_usd_per_1k: ..., output_usd_per_1k: ...}}}}' "
                                "to the policy, or input_cost_per_token/output_cost_per_token to its litellm_params",
                            ))
        failover = self.policy.failover
        if failover is not None:
            for field, group, ref in failover.model_refs():
                candidates = candidates_by_group.get(group)
                if candidates is None:
                    problems.append(Problem(f"failover.chains.{group}", f"the router has no model group {group!r}",
                                            self.policy.line_of(("failover", "chains", group))))
                elif not any(matches(ref, c) for c in candidates):
                    problems.append(Problem(field, f"no deployment of group {group!r} is {ref!r}",
                                            self.policy.line_of(_undotted(field))))
        if problems:
            raise PolicyError(problems, self.policy.source)
        if unpriced:
            raise UnknownPriceError(unpriced, self.policy.source)

    def expected_output_tokens(self, max_tokens: int | None) -> int:
        return int(max_tokens) if max_tokens else self.policy.defaults.expected_output_tokens
