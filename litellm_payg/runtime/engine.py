"""The decision: given a request and the candidate deployments, which to try, in what order, and why.

Two halves: ``Engine.snapshot`` reads what a decision may know (budget usage, breaker and latency
state, the clock) into a frozen :class:`~litellm_payg.core.snapshot.Snapshot`; ``Engine.decide`` is then a
pure function of the request, the candidates, that snapshot and the policy, over plain data
(``decision.py``). It is reused as-is by the adapter, ``litellm-payg explain`` and ``simulate``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import logging
import time
from typing import Any

from litellm_payg.core.decision import Candidate, Decision, Drop, RouteRequest, Step
from litellm_payg.core.feasibility import feasible
from litellm_payg.core.errors import PluginError, PolicyError, Problem, UnknownPriceError
from litellm_payg.hook_chain import _PLUGGY_MULTICALL, Broadcast, HookChain
from litellm_payg.policy.load import Policy, _undotted
from litellm_payg.rules import Rule, matches
from litellm_payg.stores.health import HealthError, HealthStore, open_health
from litellm_payg.core.runs import RunStatus, downgrade
from litellm_payg.core.snapshot import Snapshot
from litellm_payg.runtime.quality import QualityControl
from litellm_payg.runtime.spend import SpendControl

logger = logging.getLogger("litellm_payg")


def _dearer(routed: Sequence[Candidate], stepped: Sequence[Candidate], request: RouteRequest) -> bool:
    """Whether the route's first choice costs this request more than the downgrade step's: only
    then does the step apply. Unpriced on either side: the step applies (it prices what it keeps)."""
    if not routed or not stepped or not (routed[0].priced and stepped[0].priced):
        return True
    p, o = request.prompt_tokens, request.output_tokens
    return routed[0].estimate_usd(p, o) > stepped[0].estimate_usd(p, o)


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
        self._observe = Broadcast(self.pm, "payg_decision")  # not made when every observer is silent for it
        #: budgets and the spend ledger (reserve / settle / release)
        self.spend = SpendControl(policy, ledger=ledger, clock=clock)
        #: circuit breakers and latency per deployment, in the ledger's backend (``failover:`` only)
        self.health: HealthStore | None = None
        if policy.failover is not None:
            url = ledger if isinstance(ledger, str) else policy.ledger
            self.health = open_health(
                url, breaker=policy.failover.circuit_breaker.config(), latency=policy.failover.latency.config(), clock=clock
            )
        #: groups whose route has a rule entry with ``when:`` (see :meth:`rules_for`)
        self._conditioned = {
            group: any(rule.context.when is not None for rule in rules) for group, rules in self.routes.items()
        }
        #: measured quality: evidence per (route, deployment, class, metric), on the ledger's backend
        url = ledger if isinstance(ledger, str) else getattr(ledger, "url", None) or policy.ledger
        if "***" in url:  # a Ledger object's URL has its password redacted: the policy's has it
            url = policy.ledger
        self.quality = QualityControl(policy, url, clock, explore_windows={
            group: rule.options.measured.explore_window_s
            for group, rules in self.routes.items() for rule in rules
            if getattr(getattr(rule, "options", None), "measured", None) is not None
        })

    def detach(self) -> None:
        """Close the engine's stores (ledger, health, quality evidence). The engine knows nothing
        of a Router it governs: ``attach`` returns the handle that undoes that, and whose
        ``detach()`` calls this one (``adapter/attachment.py``)."""
        self.spend.close()
        if self.health is not None:
            self.health.close()
        self.quality.close()

    # -- deciding -------------------------------------------------------------------------------

    def snapshot(self, request: RouteRequest, candidates: Sequence[Candidate]) -> Snapshot:
        """Read what a decision about ``request`` may know: the clock, the ``downgrade`` budgets'
        usage for each candidate (one ledger read) and the candidates' breaker and latency state
        (one health store read). All the I/O of a decision is here; a store that cannot be read is
        logged and recorded in the snapshot (``ledger_error``/``health_error``), never raised."""
        spend = self.spend
        now = spend.clock()  # the engine's clock (``clock=``), which the budget windows use
        runs_read = spend.run_downgrades and request.session
        # quality.measured(group), inlined: on every decision
        quality = self.quality.view(request.group, now) if request.group in self.quality.explore_windows else None
        if self.health is None and not spend.downgrades and not runs_read:
            return Snapshot(now, self.policy, quality=quality)  # nothing else to read: most policies
        budgets, usage, ledger_error = self.spend.downgrade_budgets(request, candidates, now)
        runs, run_error = self.spend.run_usage(request, now)
        ledger_error = ledger_error or run_error
        health = health_error = None
        if self.health is not None and candidates:
            try:
                health = self.health.snapshot([c.deployment_id for c in candidates], now)
            except HealthError as e:  # fail open: a health store outage must not stop traffic
                logger.warning("litellm-payg failover: health store unavailable, breakers ignored: %s", e)
                health_error = str(e)
        return Snapshot(now, self.policy, budgets, usage, ledger_error, health, health_error, runs, quality)

    def decide(self, request: RouteRequest, candidates: Sequence[Candidate], snapshot: Snapshot | None = None,
               *, observe: bool = True) -> Decision:
        """Order ``candidates`` for ``request``; every candidate left out gets a ``Drop`` with a reason.

        A pure function of the request, the candidates, ``snapshot`` and the policy: the filters
        read budgets and breakers from ``snapshot``, and nothing here reads a store. Without a
        snapshot one is taken first (:meth:`snapshot`), which is where the reads happen.

        ``observe=False`` leaves the ``payg_decision`` observers to the caller: the adapter narrows
        the order further (failover, circuit breakers, budget reservation) and calls
        :meth:`observe` with the pick it actually made, so observers never report a deployment
        that did not serve the attempt."""
        if snapshot is None:
            snapshot = self.snapshot(request, candidates)
        route = self.routes.get(request.group)
        dropped: list[Drop] = []
        notes: list[str] = []
        rules = self.rules_for(request, route, notes) if route and self._conditioned[request.group] else route
        attrs: dict[str, str] = {}
        judged: dict[str, str] = {}
        current: Sequence[Candidate] = candidates

        # first what LiteLLM's own checks refuse (context window, tags, region, vision, order), so
        # that every rule and filter below chooses among deployments LiteLLM will actually call
        checked = feasible(request, current)
        if checked is not None:
            current = self._take(checked, dropped, notes, attrs, judged)

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

        # a run past a downgrade step of its run budget: the step's bar, cheapest first, instead of the
        # route -- unless the route's own pick is already no dearer (a downgrade never raises the cost)
        run_step = downgrade(request, current, snapshot.runs, lambda: _own_bar(request, rules)) if snapshot.runs else None
        rule_steps = self._rule_steps(request, current, rules, snapshot) if rules else []
        if run_step is not None and not _dearer(rule_steps[-1].kept if rule_steps else current, run_step.kept, request):
            notes.append(f"{run_step.note}; kept the route's pick, which is no dearer")
            run_step = None
        if run_step is not None:
            rule_steps = [run_step]  # in place of the route's rules; the filters still apply
        for step in rule_steps:
            current = self._take(step, dropped, notes, attrs, judged)
        current = self._apply_filters(request, current, snapshot, dropped, notes, attrs, judged)

        # a route whose conditions all missed and that has no unconditioned rule governs nothing:
        # the request is spread as in a group without a route (budgets and breakers still apply)
        governed = run_step is not None or (
            route is not None and (bool(rules) or not self._conditioned.get(request.group)))
        decision = Decision(request, list(current), dropped, notes, attrs, governed=governed, judged=judged)
        if observe:
            self.observe(decision)
        return decision

    def rules_for(self, request: RouteRequest, route: Sequence[Rule], notes: list[str] | None = None) -> list[Rule]:
        """The rules of ``route`` that apply to ``request``: the conditioned entries whose ``when``
        matches, in policy order; when none matches, the unconditioned entries, in policy order. A
        route without any ``when`` applies all its rules. Says which ``when`` matched and why, or
        what the request had when none did, in ``notes``."""
        if not any(rule.context.when is not None for rule in route):
            return list(route)
        matched: list[Rule] = []
        for rule in route:
            when = rule.context.when
            if when is None:
                continue
            why = when.check(request)
            if why is not None:
                matched.append(rule)
                if notes is not None:
                    notes.append(f"when {why} matched: {rule.context.field}")
        if matched:
            return matched
        rest = [rule for rule in route if rule.context.when is None]
        if notes is not None:
            seen: dict[str, str] = {}
            for rule in route:
                for condition in rule.context.when.conditions if rule.context.when is not None else ():
                    seen.setdefault(condition.key, condition.describe(request))
            applies = (
                "the unconditioned rules apply: " + ", ".join(rule.context.field for rule in rest) if rest
                else "no unconditioned rule: no route rule applies"
            )
            notes.append(f"when: no condition matched ({'; '.join(seen.values())}); {applies}")
        return rest

    def feedback(self, response: Any, metric: str, value: Any, *, api_key: str | None = None) -> Any:
        """Rate one answer: ``response`` is the LiteLLM response (or its ``id``), ``metric`` one of
        the policy's ``quality.metrics`` (``valid`` and any the policy adds), ``value`` true/false for
        a pass metric or a number in [0, 1] for a score. Needs ``quality: {feedback: true}`` (the
        plugin then remembers each answer by its id). Returns the cell's tally after the rating;
        raises :class:`~litellm_payg.runtime.quality.FeedbackRefused` (a ``ValueError``) and changes
        nothing for an unknown id, a bad metric or value, or a second rating of the same metric."""
        response_id = response if isinstance(response, str) else (
            response.get("id") if isinstance(response, Mapping) else getattr(response, "id", None))
        return self.quality.feedback(response_id, metric, value, api_key=api_key)

    def run_status(self, session: str, budget: str | None = None) -> RunStatus:
        """What run ``session`` (a session id, as ``wire.identity.session_of`` reads it) has spent and
        has left: a :class:`~litellm_payg.core.runs.RunStatus` with ``spent_usd``, ``reserved_usd``
        (in flight), ``limit_usd``, ``remaining_usd``, ``working_remaining_usd`` (the final reserve
        left out), ``requests`` and ``max_requests``. ``budget`` picks a run budget by name (default:
        the policy's first run budget). A run idle past its window reads as a fresh one."""
        return self.spend.run_status(session, budget)

    # -- run control: the operator's view of a run, and its levers ----------------------------------

    def run_report(self, run: str) -> list[RunStatus]:
        """Run ``run`` (a run id: the session id qualified by its owner, ``<session>@key:<16 hex>``,
        as ``litellm-payg budgets`` and the spend records' ``run`` name it; a session id alone in
        Python without a key) under every run budget it is in: spend, in flight, requests, tokens,
        first request and idle expiry, the downgrade step in force, grants, whether it is closed and
        its last refusal. Raises ``RunNotFound`` for a run the ledger has not (or no longer)."""
        return self.spend.run_report(run)

    def close_run(self, run: str) -> list[RunStatus]:
        """Close run ``run``: its next request, on any replica sharing the ledger, is refused at once
        (``BudgetExceeded``, ``rule: closed``) until :meth:`grant_run` opens it again or it idles
        out. Raises ``RunNotFound`` (nothing changed) for an unknown run."""
        return self.spend.close_run(run)

    def grant_run(self, run: str, *, usd: float = 0.0, requests: int = 0, tokens: int = 0, seconds: float = 0.0,
                  budget: str | None = None) -> list[RunStatus]:
        """Raise run ``run``'s limits under run budget ``budget`` (default: the first it is in) by
        ``usd``, ``requests`` (``max_requests``), ``tokens`` (``max_total_tokens``) and ``seconds``
        (``max_duration``), and open it again if it was closed. For this run only, until it idles
        out; held in the ledger and read inside each reservation. Raises ``RunNotFound`` (nothing
        changed) for an unknown run, ``ValueError`` naming the field for a bad amount."""
        return self.spend.grant_run(run, usd=usd, requests=requests, tokens=tokens, seconds=seconds, budget=budget)

    def observe(self, decision: Decision) -> None:
        """Tell the ``payg_decision`` observers (decision log, metrics, plugins) about a decision,
        after charging a pick made to explore to its route's exploration window: the engine's own
        bookkeeping, not an observer's (observers get values and write no store). ``engine=`` is
        still passed for observers written for it (deprecated)."""
        if decision.attrs:  # what charge_explored reads first: a decision without attrs explored nothing
            self.quality.charge_explored(decision)
        self._observe(request=decision.request, decision=decision, engine=self)

    @staticmethod
    def _take(step: Step, dropped: list[Drop], notes: list[str], attrs: dict[str, str],
              judged: dict[str, str]) -> Sequence[Candidate]:
        """Record what one step dropped, noted and learnt; what it kept is the next step's input."""
        dropped.extend(step.dropped)
        if step.note:
            notes.append(step.note)
        if step.attrs:
            attrs.update(step.attrs)
        if step.judged:
            judged.update(step.judged)
        return step.kept

    @staticmethod
    def _rule_steps(request: RouteRequest, candidates: Sequence[Candidate], rules: Sequence[Rule],
                    snapshot: Snapshot | None = None) -> list[Step]:
        """The route's rules, each applied to what the previous one kept (a rule with
        ``reads_snapshot`` also gets the decision's snapshot: measured quality is in it). A list
        built by a loop, not a generator: it runs on every decision."""
        steps = []
        current = candidates
        for rule in rules:
            step = rule.apply(request, current, snapshot) if rule.reads_snapshot else rule.apply(request, current)
            current = step.kept
            steps.append(step)
        return steps

    def _apply_filters(self, request: RouteRequest, candidates: Sequence[Candidate], snapshot: Snapshot,
                       dropped: list[Drop], notes: list[str], attrs: dict[str, str],
                       judged: dict[str, str]) -> Sequence[Candidate]:
        """Every ``payg_filter_candidates`` plugin, each applied to what the previous one kept, after
        the route's rules; what each step dropped, noted and learnt is recorded (``_take``), and what
        the last kept is returned. The filters are a chain (``hook_chain.py``): one pluggy call per
        implementation, in pluggy's order, so argument subsets, ``tryfirst``/``trylast``, wrappers
        and tracing behave as for any other hook. A plain loop, not a generator: it runs on every
        decision, and most links answer nothing."""
        current = candidates
        # unwatched(self.pm), inlined: on every decision
        quiet = _PLUGGY_MULTICALL is not None and getattr(self.pm, "_inner_hookexec", None) is _PLUGGY_MULTICALL
        # one dict of arguments for every link (each link's call gets a copy: ``call(**kwargs)``),
        # its candidates kept up to date with what the last link kept
        kwargs = {"request": request, "candidates": current, "snapshot": snapshot, "engine": self}
        for link in self._filters.links():
            if quiet and link.silent is not None and link.silent(kwargs):
                continue  # the built-in failover filter without ``failover:``, budget headroom without usage
            for step in link.call(**kwargs):
                if not isinstance(step, Step):
                    raise PluginError(
                        f"plugin {link.name}: payg_filter_candidates returned {step!r}; "
                        "expected None or a litellm_payg.core.decision.Step"
                    )
                current = self._take(step, dropped, notes, attrs, judged)
            kwargs["candidates"] = current
        return current

    # -- binding to a router's deployments ------------------------------------------------------

    def check_deployments(self, candidates_by_group: Mapping[str, Sequence[Candidate]]) -> None:
        """Fail at attach time, not on the first request: every model a rule names must be a
        deployment of its group, every deployment a cost rule can reach must have a price, and every
        budget scope that names a model, deployment, provider or group must name one the router has
        (a budget that can never apply is a cap nobody enforces)."""
        problems: list[Problem] = self._budget_scope_problems(candidates_by_group)
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
                            f"no deployment of group {group!r} is {ref!r}{_did_you_mean(ref, candidates)}; the group has "
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
                                "to the policy, or input_cost_per_token/output_cost_per_token (or a priced base_model) "
                                "to its litellm_params or model_info",
                            ))
        failover = self.policy.failover
        if failover is not None:
            for field, group, ref in failover.model_refs():
                candidates = candidates_by_group.get(group)
                if candidates is None:
                    problems.append(Problem(f"failover.chains.{group}", f"the router has no model group {group!r}",
                                            self.policy.line_of(("failover", "chains", group))))
                elif not any(matches(ref, c) for c in candidates):
                    problems.append(Problem(field, f"no deployment of group {group!r} is {ref!r}{_did_you_mean(ref, candidates)}",
                                            self.policy.line_of(_undotted(field))))
        if problems:
            raise PolicyError(problems, self.policy.source)
        if unpriced:
            raise UnknownPriceError(unpriced, self.policy.source)

    def _budget_scope_problems(self, candidates_by_group: Mapping[str, Sequence[Candidate]]) -> list[Problem]:
        """A scope of a kind the router's deployments have (``provider:``, ``model:``, ``group:``,
        ``deployment:``: each kind that declares ``router_values``) is matched exactly against the
        request's deployment, so it must be one of the router's values."""
        import difflib

        from litellm_payg.core.budgets import parse_scope

        problems = []
        for index, budget in enumerate(self.policy.budgets):  # a run budget's `when: {group: ...}`
            wanted = (budget.when or {}).get("group")
            for group in ([] if wanted is None else wanted if isinstance(wanted, list) else [wanted]):
                if str(group) not in candidates_by_group:
                    close = difflib.get_close_matches(str(group), list(candidates_by_group), n=1)
                    problems.append(Problem(
                        f"budgets[{index}].when.group",
                        f"budget {budget.budget_id(index)!r} names model group {group!r}, which the router does not "
                        f"have; it has {', '.join(map(repr, sorted(candidates_by_group))) or 'none'}",
                        self.policy.line_of(("budgets", index, "when", "group")),
                        hint=f"did you mean {close[0]!r}?" if close else None,
                    ))
        for index, budget in enumerate(self.policy.budgets):
            kind, value = parse_scope(budget.scope)
            declared = budget.scope_kind
            if declared is None or declared.router_values is None or value == "*":
                continue
            have = list(declared.router_values(candidates_by_group))
            if value in have:
                continue
            close = [m for m in have if kind == "model" and m.partition("/")[2] == value]
            close = close or difflib.get_close_matches(value, have, n=1)
            hints = [f"did you mean 'scope: {kind}:{close[0]}'?"] if close else []
            if declared.hint:
                hints.append(declared.hint)
            hint = " ".join(hints)
            problems.append(Problem(
                f"budgets[{index}].scope",
                f"budget {budget.budget_id(index)!r} can never apply: no deployment of the router has {kind} "
                f"{value!r}; the router has {kind}s {', '.join(map(repr, have)) or 'none'}",
                self.policy.line_of(("budgets", index, "scope")),
                hint=hint,
            ))
        return problems

    def expected_output_tokens(self, max_tokens: int | None) -> int:
        return int(max_tokens) if max_tokens else self.policy.defaults.expected_output_tokens


def _did_you_mean(ref: str, candidates: Sequence[Candidate]) -> str:
    """`` (did you mean 'X'?)`` with the group's model names and deployment ids closest to ``ref``
    (a misspelled model is a typo to fix, not a model to price), or ``""``."""
    import difflib

    names: dict[str, None] = {}
    for c in candidates:  # the model as the reference writes it (with or without its provider), and the id
        names.update(dict.fromkeys((c.model if "/" in ref else c.model.partition("/")[2] or c.model, c.deployment_id)))
    close = difflib.get_close_matches(ref, list(names), n=2, cutoff=0.6)
    return f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""


def _own_bar(request: RouteRequest, rules: Sequence[Any] | None) -> float | None:
    """The quality bar the route's rules that apply to ``request`` keep past a run's downgrade step
    (``quality_floor``, its ``bar_for``, unless the entry says ``keep_past_downgrade: false``), or None."""
    bars = [rule.bar_for(request.prompt_tokens) for rule in rules or ()
            if hasattr(rule, "bar_for") and getattr(rule.options, "keep_past_downgrade", True)]
    return max(bars) if bars else None
