"""The simulation's driver: every request of a traffic, in time order, through the same attempt
object live traffic goes through (``runtime/attempt.py``).

Each simulated request is one :class:`~litellm_payg.runtime.attempt.Attempt`: ``pick`` (the
lifecycle's snapshot, ``Engine.decide`` with the route's rules and every ``payg_filter_candidates``
plugin, the failover hop, the breaker claim, the reservation), then ``answered`` with the class's
usage, or, when the class's faults make the attempt fail, ``failed`` with the fault's
:class:`~litellm_payg.core.failure.Failure` and another ``pick``, as LiteLLM's Router retries. So
the ``payg_outcome`` observers hear of each simulated attempt with the arguments a live one gives
them. The ledger and the health store are in memory and driven by a simulated clock, so ``block``
and ``downgrade`` budgets, ``failover.on`` and circuit breakers act exactly as they would live.
Each answer is charged by ``sim_pricing.Pricer`` (LiteLLM's cost function for the class's exact
usage, made a charge by ``core.charge``), cached per (deployment, class) because traffic classes
repeat.

``count`` requests are spread evenly over ``time`` when it is a range (``start/end``), all at
``time`` when it is an instant, else over the simulated period (``--start``, ``--period`` days).
Faults are drawn from a generator seeded with ``--seed``; ``retries`` bounds the attempts after a
failure (default: one per other deployment of the group). A ``runs`` line's runs are planned with
a generator of their own, seeded from ``--seed`` (``sim_runs.py``); when the policy has a run
budget the same traffic is also simulated without run budgets and with them as hard caps.

Why apart: the driver only counts what happened (``sim_result.Result``); reading the traffic
(``sim_traffic.py``), pricing (``sim_pricing.py``), the baselines (``sim_baselines.py``) and
printing (``sim_output.py``) are other modules' jobs.
"""

from __future__ import annotations

import dataclasses
import heapq
import random
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from litellm_payg.core.decision import CandidateSet
from litellm_payg.core.failure import FailureClass
from litellm_payg.runtime import store_access
from litellm_payg.tools import sim_runs
from litellm_payg.tools.sim_baselines import Plan, baselines
from litellm_payg.tools.sim_pricing import Pricer
from litellm_payg.tools.sim_result import DEFAULT_SEED, Result, assumptions, litellm_version
from litellm_payg.tools.sim_traffic import Fault, SimulationError, Traffic, TrafficClass, class_request_fields, time_of

DEFAULT_START = "2025-01-01T00:00:00Z"
DEFAULT_PERIOD_DAYS = 30.0


@dataclass
class _RunsTraffic:
    """What the simulation needs of a traffic's runs: the extra classes and the planned runs."""

    classes: list[Any] = field(default_factory=list)
    runs: list[Any] = field(default_factory=list)


def _run_classes(specs: Sequence[Any], first_index: int) -> tuple[list[Any], dict[tuple[int, int, int], int]]:
    """One traffic class per step of each runs line (counted once the runs are planned), and the
    map (line, block, step) -> class index."""
    classes: list[Any] = []
    class_of: dict[tuple[int, int, int], int] = {}
    for si, spec in enumerate(specs):
        seen: set[str] = set()
        for bi, block in enumerate(spec.blocks):
            for ki, st in enumerate(block.steps):
                name = f"{spec.name}/{st.step}"
                if name in seen:
                    name = f"{name}@{bi}.{ki}"
                seen.add(name)
                class_of[(si, bi, ki)] = first_index + len(classes)
                classes.append(TrafficClass(
                    name=name, group=spec.group, prompt_tokens=st.prompt_tokens, completion_tokens=st.completion_tokens,
                    count=0, user=spec.user, team=spec.team, tags=spec.tags, max_tokens=st.max_tokens, line=spec.line,
                    faults=spec.faults, retries=spec.retries, step=st.step, run=spec.name, attrs=spec.attrs))
    return classes, class_of


def plan_runs_traffic(specs: Sequence[Any], seed: int, start: float, end: float, first_index: int) -> _RunsTraffic:
    """The runs' classes, with ``count`` the requests the planned runs would send uncapped."""
    classes, class_of = _run_classes(specs, first_index)
    runs = sim_runs.plan_runs(specs, seed, start, end, class_of)
    counts = [0] * len(classes)
    for run in runs:
        for ci, _ in run.requests:
            counts[ci - first_index] += 1
    classes = [dataclasses.replace(c, count=n) for c, n in zip(classes, counts)]
    return _RunsTraffic(classes, runs)


def _arrivals(classes: Sequence[TrafficClass], start: float, end: float) -> Iterator[tuple[float, int]]:
    """Every request as (time, class index), in time order: each class spread evenly over its span."""

    def one(i: int, c: TrafficClass) -> Iterator[tuple[float, int]]:
        s = c.start if c.start is not None else start
        e = c.end if c.end is not None else end
        step = (e - s) / c.count
        for k in range(c.count):
            yield s + (k + 0.5) * step, i

    return heapq.merge(*(one(i, c) for i, c in enumerate(classes) if c.run is None))


class _Clock:
    """The simulated time the ledger, the health store and the budgets' windows read."""

    __slots__ = ("now",)

    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


class _Progress:
    """The progress line on stderr, at most five updates a second: a bar when the total is known
    (``simulate``), a running count when it is not (``what-if`` streams its history)."""

    def __init__(self, total: int | None, enabled: bool, stream: Any = None, verb: str = "simulating"):
        self.total = None if total is None else max(1, total)
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.verb = verb
        self.started = time.perf_counter()
        self.last = 0.0

    def update(self, done: int, final: bool = False) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if not final and now - self.last < 0.2:
            return
        self.last = now
        rate = done / max(now - self.started, 1e-9)
        if self.total is None:
            self.stream.write(f"\r{self.verb} {done:,} requests ({rate:,.0f}/s)")
        else:
            frac = done / self.total
            width = 30
            bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
            self.stream.write(f"\r{self.verb} [{bar}] {done:,}/{self.total:,} ({rate:,.0f} req/s)")
        if final:
            self.stream.write("\n")
        self.stream.flush()


def simulate(
    policy: Any,
    traffic: Traffic,
    *,
    candidates_by_group: Mapping[str, Sequence[Any]] | None = None,
    config: str | None = None,
    start: float | None = None,
    period_days: float | None = None,
    plan: Plan | None = None,
    progress: bool = False,
    seed: int = DEFAULT_SEED,
    compare_runs: bool = True,
) -> Result:
    """Run every request of ``traffic`` through ``policy`` (a path or a loaded Policy).

    ``seed`` seeds the one random generator of the run: the traffic's faults and the shuffle of a
    group without a route; the traffic's runs are planned with a generator of their own seeded from
    it. The same seed gives the same numbers. When the traffic has runs and the policy a run budget,
    the same traffic is also simulated without the run budgets and with them as hard caps
    (``compare_runs``; ``Result.run_comparison``)."""
    from litellm_payg.adapter.deployments import candidates_from_config, candidates_named_by_policy
    from litellm_payg.core.decision import RouteRequest
    from litellm_payg.runtime.engine import Engine
    from litellm_payg.core.errors import NoDeploymentLeft
    from litellm_payg.policy.load import Policy, load_policy
    from litellm_payg.core.errors import BudgetRefused, UnboundedCost
    from litellm_payg.core.failure import Failure
    from litellm_payg.runtime.attempt import Attempt, Attempts
    from litellm_payg.runtime.lifecycle import GiveUp, Lifecycle
    from litellm_payg.runtime.request_state import RequestState

    loaded: Policy = policy if isinstance(policy, Policy) else load_policy(policy)
    meta = traffic.meta
    if start is None:
        start = time_of(meta.get("start", DEFAULT_START), "start")
    if period_days is None:
        period_days = float(meta.get("period_days", DEFAULT_PERIOD_DAYS))
    if not period_days > 0:
        raise SimulationError(f"the period must be > 0 days, got {period_days}")
    end = start + period_days * 86400
    if plan is None and isinstance(meta.get("plan"), dict):
        p = meta["plan"]
        plan = Plan(float(p["fee_usd"]), int(p["included_tokens"]), float(p["overage_usd_per_1k"]))

    clock = _Clock(start)
    rng = random.Random(seed)
    engine = Engine(loaded, ledger="memory://", clock=clock)
    if candidates_by_group is None:
        candidates_by_group = candidates_from_config(config, loaded) if config else candidates_named_by_policy(engine)
    groups = sorted({c.group for c in traffic.classes} | {r.group for r in traffic.runs})
    missing = [g for g in groups if not candidates_by_group.get(g)]
    if missing:
        raise SimulationError(
            f"{traffic.source}: no deployments for model group(s) {', '.join(map(repr, missing))}; the "
            f"{'config' if config else 'policy'} has {', '.join(sorted(candidates_by_group)) or 'none'}"
        )
    # a CandidateSet per group, as the adapter hands a live group's candidates to every pick: what the
    # rules work out from the candidates alone is kept in its memo
    cands = {g: CandidateSet(candidates_by_group[g]) for g in groups}
    if config:
        engine.check_deployments(cands)
    all_cands = [c for g in groups for c in cands[g]]
    pricer = Pricer(all_cands, loaded.models)

    planned = plan_runs_traffic(traffic.runs, seed, start, end, len(traffic.classes))
    classes = list(traffic.classes) + planned.classes
    runs = planned.runs
    requests = [
        RouteRequest(
            group=c.group,
            prompt_tokens=c.prompt_tokens,
            output_tokens=engine.expected_output_tokens(c.max_tokens),
            max_tokens=c.max_tokens,
            metadata={"step": c.step} if c.step is not None else {},
            **class_request_fields(engine.spend.scopes, c),
        )
        for c in classes
    ]
    class_cands = [cands[c.group] for c in classes]
    unit: dict[tuple[str, int], float] = {}
    unit_charge: dict[tuple[str, int], Any] = {}
    served: dict[tuple[str, int], int] = {}
    served_by_class = [0] * len(classes)
    blocked: dict[str, int] = {}
    first_block: dict[str, float] = {}
    downgraded: dict[str, int] = {}
    dropped_by: dict[str, int] = {}
    no_deployment = 0
    total = sum(c.count for c in classes)
    bar = _Progress(total, progress)

    by_id = {c.deployment_id: c for c in all_cands}
    shared = Attempts(engine, by_id.get, lifecycle=Lifecycle(engine, rng=rng))
    answer_charge = pricer.answer_charge
    # faults per class: deployment id -> the class's faults on it; and the retries each class gets
    class_faults = [_resolve_faults(c, cands[c.group], traffic.source) for c in classes]
    retry_bound = [c.retries if c.retries is not None else len(cands[c.group]) - 1 for c in classes]
    attempts_failed: dict[tuple[str, str], int] = {}  # (deployment, failure class) -> failed attempts
    failed_over: dict[str, int] = {}  # deployment -> requests that failed on it and were tried again
    failed_final: dict[str, int] = {}  # deployment -> requests whose last, final attempt failed on it
    failed_charges: dict[tuple[str, int], int] = {}  # (deployment, class) -> invalid answers charged
    breaker_opened: dict[str, int] = {}
    breaker_moved: dict[str, int] = {}
    run_downgrades = 0  # requests a run budget's downgrade step sent to a cheaper deployment
    began = time.perf_counter()
    i = 0
    schedule = sim_runs.Schedule(_arrivals(classes, start, end), runs, traffic.runs)
    for when, ci, ref in schedule:
        i += 1
        if not i & 0x3FFF:
            bar.update(i)
        clock.now = when
        request = requests[ci]
        outcome, rule, run_cost, run_downgraded = "failed", None, 0.0, False
        if ref is not None:  # a request of a run: its session and its prompt's fingerprint
            run = runs[ref[0]]
            request = dataclasses.replace(request, session=run.session, prompt_hash=run.requests[ref[1]][1],
                                          loop_marks=run.marks if ref[1] in run.marked else ())
        faults = class_faults[ci]
        state = RequestState(f"sim-{i}", None)
        attempt = Attempt(shared, state)
        attempts = state.attempts  # the deployments picked so far, the one of this attempt last
        budget_drops: list[Any] = []
        moved: set[str] | None = None
        while True:
            try:
                picked = attempt.pick(request, class_cands[ci])
            except BudgetRefused as exc:
                _count_drops(dropped_by, exc)
                blocked[exc.budget] = blocked.get(exc.budget, 0) + 1
                first_block.setdefault(exc.budget, when)
                # a loop of one tool call (the guard's loop_counts) is told apart from a resent prompt
                outcome, rule = "refused", "tool_loop" if exc.rule == "loop" and getattr(exc, "repeated", None) else exc.rule
                break
            except NoDeploymentLeft as exc:
                _count_drops(dropped_by, exc)
                no_deployment += 1
                outcome, rule = "refused", "no deployment left"
                decision = getattr(exc, "decision", None)
                if decision is not None and not decision.ordered:  # the policy (or the breakers) left none
                    budget_drops.extend(d for d in decision.dropped if d.by == "budget")
                else:  # every candidate left was refused by a downgrade budget at reservation
                    budget_drops.extend(exc.drops)
                break
            except GiveUp:  # failover.on says the last failure is final
                failed_final[attempts[-1]] = failed_final.get(attempts[-1], 0) + 1
                break
            except UnboundedCost as exc:  # a budget cannot reserve on a deployment without a price
                raise SimulationError(str(exc).removeprefix("litellm-payg: ")) from None
            if len(attempts) > 1:  # the last attempt failed and this request moved on to another one
                failed_over[attempts[-2]] = failed_over.get(attempts[-2], 0) + 1
            decided = picked.decided
            if "run_downgrade" in decided.attrs:  # a run budget's downgrade step set the route aside
                run_downgraded = True
            for d in decided.dropped:
                by = d.by
                dropped_by[by] = dropped_by.get(by, 0) + 1
                if by == "budget":
                    budget_drops.append(d)
                elif by == "failover" and d.reason.startswith("circuit breaker") and d.deployment_id not in attempts:
                    # kept away by its breaker, not because this request already tried it
                    moved = moved or set()
                    moved.add(d.deployment_id)
            if picked.admission.skipped:
                budget_drops.extend(picked.admission.skipped)
            chosen = picked.candidate
            dep = chosen.deployment_id
            key = (dep, ci)
            billed = unit_charge.get(key)
            if billed is None:
                cls = classes[ci]
                billed = unit_charge[key] = _Answer(answer_charge(chosen, cls.prompt_tokens, cls.completion_tokens))
                unit[key] = billed.cost
            charge = billed.cost
            fault = _draw(faults.get(dep), when, rng) if faults else None
            if fault is None:
                attempt.answered(dep, picked.reservation_id, billed,
                                 tokens=classes[ci].prompt_tokens + classes[ci].completion_tokens)
                served[key] = served.get(key, 0) + 1
                served_by_class[ci] += 1
                outcome = "served"
                run_cost += charge
                break
            failure = Failure(fault, "simulated fault", _STATUS.get(fault.value), None, f"simulated {fault.value} on {dep}")
            error = SimulatedFault(failure.message)
            if fault is FailureClass.INVALID_RESPONSE:  # answered and billed, then rejected by the validators
                failed_charges[key] = failed_charges.get(key, 0) + 1
                run_cost += charge
                health = attempt.failed(dep, failure, error, reservation_id=picked.reservation_id, billed=billed)
            else:
                health = attempt.failed(dep, failure, error, reservation_id=picked.reservation_id)
            fk = (dep, fault.value)
            attempts_failed[fk] = attempts_failed.get(fk, 0) + 1
            if health == "open":  # requests run one at a time: an attempt never goes to an open breaker
                breaker_opened[dep] = breaker_opened.get(dep, 0) + 1
            if len(attempts) > retry_bound[ci]:
                failed_final[dep] = failed_final.get(dep, 0) + 1
                break
        if budget_drops:
            _count_downgrades(downgraded, budget_drops)
        if moved:
            for dep in moved:
                breaker_moved[dep] = breaker_moved.get(dep, 0) + 1
        if run_downgraded:
            run_downgrades += 1
        if ref is not None:
            schedule.done(ref, when, outcome, run_cost, rule, run_downgraded)
    elapsed = time.perf_counter() - began
    bar.update(i, final=True)
    store_access.close(engine)

    result = Result(
        policy_source=loaded.source or "<policy>",
        traffic_source=traffic.source,
        litellm_version=litellm_version(),
        start=start,
        end=end,
        classes=classes,
        candidates=cands,
        prices=[
            {
                "group": c.group, "deployment": c.deployment_id, "model": c.model, "provider": c.provider,
                "quality": c.quality,
                "input_usd_per_1m": None if c.input_usd_per_token is None else c.input_usd_per_token * 1e6,
                "output_usd_per_1m": None if c.output_usd_per_token is None else c.output_usd_per_token * 1e6,
                "source": pricer.source[c.deployment_id],
            }
            for c in all_cands
        ],
        served=served,
        unit_cost=unit,
        blocked=blocked,
        downgraded=downgraded,
        no_deployment=no_deployment,
        served_by_class=served_by_class,
        dropped_by=dropped_by,
        first_block=first_block,
        baselines=[],
        plan=plan,
        assumptions=[],
        elapsed_s=elapsed,
        meta=meta,
        seed=seed,
        attempts_failed=attempts_failed,
        failed_over=failed_over,
        failed_final=failed_final,
        failed_charges=failed_charges,
        breaker_opened=breaker_opened,
        breaker_moved=breaker_moved,
        breakers=engine.health is not None,
        runs=runs,
        run_downgrades=run_downgrades,
        sent_requests=i,
    )
    if compare_runs and runs and any(b.is_run for b in loaded.budgets):
        result.run_comparison = _compare_runs(
            result, loaded, traffic, candidates_by_group=candidates_by_group, config=config, start=start,
            period_days=period_days, plan=plan, progress=progress, seed=seed)
    result.baselines = baselines(result, engine, pricer, plan, period_days)
    result.assumptions = assumptions(result, loaded, period_days)
    return result


def _compare_runs(result: Result, policy: Any, traffic: Traffic, **options: Any) -> dict[str, Any]:
    """The same traffic without the policy's run budgets and with them as hard caps, next to the
    policy as written (``result``): a row per variant (``sim_runs.summary``)."""

    budget_index, budget = next((i, b) for i, b in enumerate(policy.budgets) if b.is_run)
    rows = []
    for key, description, variant in sim_runs.variant_policies(policy):
        other = simulate(variant, traffic, compare_runs=False, **options)
        label = "no run caps" if key == "no_run_caps" else "hard cap"
        rows.append({"key": key, "label": label, "description": description, **sim_runs.summary(label, other.runs)})
    rows.append({"key": "as_written", "label": "policy as written",
                 "description": "the run budget as written (downgrade steps and final reserve included)",
                 **sim_runs.summary("policy as written", result.runs)})
    return {"budget": budget.budget_id(budget_index), "budget_as_written": sim_runs.describe_budget(budget), "rows": rows}


class _Answer:
    """A simulated answer's charge (``core.charge``'s, of its exact usage) as its attempt settles
    it: without the record attributes a live charge stamps on its ledger record (its token counts,
    for ``what-if --from``); the simulated ledger is thrown away, and they cost a dict per answer."""

    __slots__ = ("cost", "prompt_tokens", "completion_tokens", "estimated", "attrs")

    def __init__(self, charge: Any) -> None:
        self.cost, self.prompt_tokens, self.completion_tokens = charge.cost, charge.prompt_tokens, charge.completion_tokens
        self.estimated, self.attrs = charge.estimated, None


class SimulatedFault(Exception):
    """The error of a simulated attempt a traffic fault made fail (what the ``payg_outcome``
    observers get as ``error``, where a live attempt gives them LiteLLM's exception)."""


_STATUS = {"rate_limit": 429, "server_error": 500, "context_window": 400, "auth": 401, "bad_request": 400}


def _resolve_faults(c: TrafficClass, candidates: Sequence[Any], source: str) -> dict[str, list[Fault]]:
    """A class's faults by the deployment id they hit; a reference that is no deployment of the
    class's group is an input error naming the line and field."""
    from litellm_payg.rules import matches

    out: dict[str, list[Fault]] = {}
    for fault in c.faults:
        hit = [x for x in candidates if matches(fault.deployment, x)]
        if not hit:
            have = ", ".join(f"{x.model} (id {x.deployment_id})" for x in candidates)
            raise SimulationError(
                f"{source}:{c.line}: {fault.label}: {fault.deployment!r} is no deployment of group {c.group!r}; it has {have}"
            )
        for x in hit:
            out.setdefault(x.deployment_id, []).append(fault)
    return out


def _draw(faults: Sequence[Fault] | None, now: float, rng: random.Random) -> Any:
    """The failure class an attempt meets at ``now``, or None: one draw against the active faults'
    probabilities laid end to end (overlapping faults add up)."""
    if not faults:
        return None
    active = [f for f in faults if f.active(now)]
    if not active:
        return None
    u = rng.random()
    acc = 0.0
    for f in active:
        for cls, p in f.rates:
            acc += p
            if u < acc:
                return FailureClass(cls)
    return None


def _count_drops(counter: dict[str, int], exc: Exception) -> None:
    """The drops of the decision a refused pick came from, per reason (as for a served one)."""
    decision = getattr(exc, "decision", None)
    for d in decision.dropped if decision is not None else ():
        counter[d.by] = counter.get(d.by, 0) + 1


def _count_downgrades(counter: dict[str, int], drops: Sequence[Any]) -> None:
    """One downgrade per budget that moved this request, whatever number of deployments it dropped."""
    names = {d.budget or "budget" for d in drops}
    for name in names:
        counter[name] = counter.get(name, 0) + 1

