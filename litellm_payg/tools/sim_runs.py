"""Runs in ``litellm-payg simulate``: traffic that describes agent runs, and the three-way comparison.

A traffic line ``{"runs": {...}}`` describes ``count`` runs of one shape (see ``simulate``'s
docstring and the README's "Simulating runs"). Before the simulation each run is *planned* with a
generator of its own (seeded from ``--seed``, apart from the faults' generator, so every variant of
the comparison sees the same runs): how many times each repeated block goes round, which runs are
runaways, the prompt fingerprint of every request. During the simulation a run sends one request at
a time, ``gap_s`` apart in simulated time, each carrying the run's session id, ``metadata.step`` and
its prompt hash, through the same lifecycle as every other request; a budget refusal of a working
request sends the run to its final step (an agent told to stop wraps up), a refusal of a final
request ends the run unfinished.

The comparison (:func:`compare`) runs the same traffic three times: without the policy's run
budgets, with them as hard caps only (``limit_usd``, ``max_requests`` and ``loop_guard``, without
``downgrade`` steps or ``final_reserve``) and with the policy as written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import math
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: fields of a ``{"runs": {...}}`` object, of one of its steps, and of its ``runaway``
RUNS_FIELDS = {"name", "group", "count", "steps", "runaway", "gap_s", "time", "user", "team", "tags", "faults", "retries"}
STEP_FIELDS = {"step", "prompt_tokens", "completion_tokens", "max_tokens", "repeat", "steps"}
RUNAWAY_FIELDS = {"share", "loop", "same_prompt"}
DEFAULT_GAP_S = 10.0


@dataclass(frozen=True)
class RunStep:
    """One request of a run: its step name (``metadata.step``) and its size."""

    step: str
    prompt_tokens: int
    completion_tokens: int
    max_tokens: int | None = None


@dataclass(frozen=True)
class RunBlock:
    """Steps sent in order, the whole block ``repeat`` times (drawn in [lo, hi] per run)."""

    steps: tuple[RunStep, ...]
    repeat: tuple[int, int] = (1, 1)
    repeats: bool = False  # written with ``repeat``: a runaway loops on the first such block


@dataclass(frozen=True)
class Runaway:
    share: float  # of the runs, rounded to a whole number of runs
    loop: int  # extra rounds of the looping block
    same_prompt: float = 1.0  # of the runaway runs, those whose loop resends the same prompt


@dataclass(frozen=True)
class RunSpec:
    """One ``{"runs": ...}`` line."""

    name: str
    group: str
    count: int
    blocks: tuple[RunBlock, ...]
    runaway: Runaway | None
    gap_s: float
    start: float | None
    end: float | None
    user: str | None
    team: str | None
    tags: tuple[str, ...]
    line: int
    faults: tuple[Any, ...] = ()
    retries: int | None = None


def _error(where: str, message: str) -> Exception:
    from litellm_payg.tools.simulate import SimulationError

    return SimulationError(f"{where}: {message}")


def _count(obj: Mapping[str, Any], key: str, where: str, label: str, *, minimum: int, required: bool = True) -> int | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise _error(where, f"{label}{key} is required")
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _error(where, f"{label}{key} must be an integer >= {minimum}, got {value!r}")
    return value


def _share(obj: Mapping[str, Any], key: str, where: str, label: str, default: float | None = None) -> float:
    value = obj.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise _error(where, f"{label}{key} must be a share in [0, 1], got {value!r}")
    return float(value)


def _step(obj: Any, where: str, label: str) -> RunStep:
    if not isinstance(obj, dict):
        raise _error(where, f"{label} must be an object, got {obj!r}")
    name = obj.get("step")
    if not isinstance(name, str) or not name:
        raise _error(where, f"{label}.step (the step's name, sent as metadata.step) must be a non-empty string, got {name!r}")
    return RunStep(name, _count(obj, "prompt_tokens", where, label + ".", minimum=0),  # type: ignore[arg-type]
                   _count(obj, "completion_tokens", where, label + ".", minimum=0),  # type: ignore[arg-type]
                   _count(obj, "max_tokens", where, label + ".", minimum=1, required=False))


def _block(obj: Any, where: str, label: str) -> RunBlock:
    if not isinstance(obj, dict):
        raise _error(where, f"{label} must be an object, got {obj!r}")
    unknown = sorted(set(obj) - STEP_FIELDS)
    if unknown:
        raise _error(where, f"{label}: unknown field(s) {unknown}; expected some of {sorted(STEP_FIELDS)}")
    repeat: tuple[int, int] = (1, 1)
    if "repeat" in obj:
        r = obj["repeat"]
        if isinstance(r, int) and not isinstance(r, bool):
            r = [r, r]
        if (not isinstance(r, list) or len(r) != 2 or any(isinstance(x, bool) or not isinstance(x, int) for x in r)
                or r[0] < 1 or r[1] < r[0]):
            raise _error(where, f"{label}.repeat must be a whole number >= 1 or [min, max] with 1 <= min <= max, got {obj['repeat']!r}")
        repeat = (r[0], r[1])
    if "steps" in obj:  # a block of several steps, each with its own size
        extra = sorted(set(obj) - {"steps", "repeat"})
        if extra:
            raise _error(where, f"{label}: a block with 'steps' takes only 'repeat' besides; move {extra} into its steps")
        inner = obj["steps"]
        if not isinstance(inner, list) or not inner:
            raise _error(where, f"{label}.steps must be a non-empty list of steps")
        steps = tuple(_step(s, where, f"{label}.steps[{i}]") for i, s in enumerate(inner))
        return RunBlock(steps, repeat, "repeat" in obj)
    names = obj.get("step")
    if isinstance(names, list):  # shorthand: several steps of the same size
        if not names or not all(isinstance(n, str) and n for n in names):
            raise _error(where, f"{label}.step must be a step name or a non-empty list of names, got {names!r}")
        steps = tuple(_step({**obj, "step": n}, where, label) for n in names)
    else:
        steps = (_step(obj, where, label),)
    return RunBlock(steps, repeat, "repeat" in obj)


def parse_runs(obj: Any, where: str, number: int) -> RunSpec:
    """A ``{"runs": {...}}`` line's object; bad input is a SimulationError naming line and field."""
    from litellm_payg.tools.simulate import _parse_faults, _time_span

    if not isinstance(obj, dict):
        raise _error(where, f"'runs' must be an object, got {obj!r}")
    unknown = sorted(set(obj) - RUNS_FIELDS)
    if unknown:
        raise _error(where, f"runs: unknown field(s) {unknown}; expected some of {sorted(RUNS_FIELDS)}")
    group = obj.get("group")
    if not isinstance(group, str) or not group:
        raise _error(where, "runs.group (the LiteLLM model group) is required")
    for key in ("name", "user", "team"):
        if obj.get(key) is not None and (not isinstance(obj[key], str) or not obj[key]):
            raise _error(where, f"runs.{key} must be a non-empty string")
    count = _count(obj, "count", where, "runs.", minimum=1)
    steps = obj.get("steps")
    if not isinstance(steps, list) or not steps:
        raise _error(where, "runs.steps must be a non-empty list of steps (the last one is the run's final step)")
    blocks = tuple(_block(s, where, f"runs.steps[{i}]") for i, s in enumerate(steps))
    if blocks[-1].repeat != (1, 1):
        raise _error(where, f"runs.steps[{len(blocks) - 1}]: the last step is the run's final step; it cannot repeat")
    gap = obj.get("gap_s", DEFAULT_GAP_S)
    if isinstance(gap, bool) or not isinstance(gap, (int, float)) or not 0 < gap <= 86400:
        raise _error(where, f"runs.gap_s (seconds between a run's requests) must be a number in (0, 86400], got {gap!r}")
    runaway = None
    if obj.get("runaway") is not None:
        ra = obj["runaway"]
        if not isinstance(ra, dict):
            raise _error(where, f"runs.runaway must be an object {{share, loop, same_prompt}}, got {ra!r}")
        bad = sorted(set(ra) - RUNAWAY_FIELDS)
        if bad:
            raise _error(where, f"runs.runaway: unknown field(s) {bad}; expected some of {sorted(RUNAWAY_FIELDS)}")
        if "share" not in ra:
            raise _error(where, "runs.runaway.share (the share of runs that run away) is required")
        runaway = Runaway(_share(ra, "share", where, "runs.runaway."),
                          _count(ra, "loop", where, "runs.runaway.", minimum=1),  # type: ignore[arg-type]
                          _share(ra, "same_prompt", where, "runs.runaway.", 1.0))
        if not any(b.repeats for b in blocks[:-1]):
            raise _error(where, "runs.runaway: a runaway run loops on the first step with 'repeat'; no step has one")
    start = end = None
    if obj.get("time") is not None:
        start, end = _time_span(obj["time"], f"{where}: runs.time")
    tags = obj.get("tags") or ()
    if isinstance(tags, str):
        tags = (tags,)
    if not isinstance(tags, (list, tuple)) or not all(isinstance(t, str) for t in tags):
        raise _error(where, "runs.tags must be a list of strings")
    faults = _parse_faults(obj["faults"], f"{where}: runs") if obj.get("faults") is not None else ()
    retries = _count(obj, "retries", where, "runs.", minimum=0, required=False)
    return RunSpec(obj.get("name") or f"runs {number}", group, count, blocks, runaway, float(gap), start, end,  # type: ignore[arg-type]
                   obj.get("user"), obj.get("team"), tuple(tags), number, faults, retries)


# -- planning -----------------------------------------------------------------------------------


@dataclass
class Run:
    """One planned run and what became of it in one simulation."""

    session: str
    spec: int  # index into Traffic.runs
    start: float
    #: (class index, prompt hash) per request, in order
    requests: list[tuple[int, str]]
    final_at: int  # index of the run's first final request
    runaway: bool = False
    same_prompt: bool = False
    # -- outcome
    cost_usd: float = 0.0
    served: int = 0
    downgraded: int = 0  # its requests a downgrade step routed
    finished: bool = False
    stopped_by: str | None = None  # the rule that refused a working request (the run then went to its final step)
    ended_by: str | None = None  # the rule that refused its final request (the run ended unfinished)


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def plan_runs(specs: Sequence[RunSpec], seed: int, start: float, end: float,
              class_of: Mapping[tuple[int, int, int], int]) -> list[Run]:
    """Every run of every ``runs`` line, planned with a generator of its own seeded from ``seed``:
    the rounds of each repeated block, which runs run away (``round(share * count)`` of them, drawn)
    and, of those, which resend one prompt (``round(same_prompt * runaways)``). ``class_of`` maps
    (line, block, step) to the traffic class of that step."""
    rng = random.Random(f"litellm-payg runs {seed}")
    runs: list[Run] = []
    for si, spec in enumerate(specs):
        s = spec.start if spec.start is not None else start
        e = spec.end if spec.end is not None else end
        runaway_ids: list[int] = []
        if spec.runaway is not None:
            k = round(spec.runaway.share * spec.count)
            runaway_ids = rng.sample(range(spec.count), k)
        same = set(runaway_ids[: round(spec.runaway.same_prompt * len(runaway_ids))]) if spec.runaway else set()
        runaway_set = set(runaway_ids)
        loop_block = next((bi for bi, b in enumerate(spec.blocks) if b.repeats), None)
        width = len(str(spec.count))
        for r in range(spec.count):
            session = f"{spec.name}-{r + 1:0{width}d}"
            run = Run(session, si, s + (r + 0.5) * (e - s) / spec.count, [], 0,
                      runaway=r in runaway_set, same_prompt=r in same)
            for bi, block in enumerate(spec.blocks):
                if bi == len(spec.blocks) - 1:
                    run.final_at = len(run.requests)
                rounds = rng.randint(*block.repeat)
                for _ in range(rounds):
                    for ki in range(len(block.steps)):
                        run.requests.append((class_of[(si, bi, ki)], _hash(f"{session}:{len(run.requests)}")))
                if run.runaway and bi == loop_block:
                    for _ in range(spec.runaway.loop):  # type: ignore[union-attr]
                        for ki in range(len(block.steps)):
                            text = f"{session}:loop:{ki}" if run.same_prompt else f"{session}:{len(run.requests)}"
                            run.requests.append((class_of[(si, bi, ki)], _hash(text)))
            runs.append(run)
    return runs


class Schedule:
    """The requests of a simulation in time order: the classes' evenly spread arrivals merged with
    the runs' requests, each run's next request put on the heap once its last one is done
    (:meth:`done`)."""

    def __init__(self, arrivals: Iterator[tuple[float, int]], runs: Sequence[Run], specs: Sequence[RunSpec]):
        self._arrivals = arrivals
        self._runs = runs
        self._specs = specs
        self._heap: list[tuple[float, int, int]] = [(run.start, ri, 0) for ri, run in enumerate(runs) if run.requests]
        heapq.heapify(self._heap)

    def __iter__(self) -> Iterator[tuple[float, int, tuple[int, int] | None]]:
        nxt = next(self._arrivals, None)
        heap = self._heap
        while nxt is not None or heap:
            if nxt is not None and (not heap or nxt[0] <= heap[0][0]):
                yield nxt[0], nxt[1], None
                nxt = next(self._arrivals, None)
            else:
                t, ri, pos = heapq.heappop(heap)
                yield t, self._runs[ri].requests[pos][0], (ri, pos)

    def done(self, ref: tuple[int, int], when: float, outcome: str, cost: float, rule: str | None = None,
             downgraded: bool = False) -> None:
        """Request ``ref`` of a run ended ``served``, ``refused`` (by ``rule``) or ``failed``:
        book it and schedule the run's next request."""
        ri, pos = ref
        run = self._runs[ri]
        run.cost_usd += cost
        run.downgraded += downgraded
        last = len(run.requests) - 1
        if outcome == "served":
            run.served += 1
            if pos == last:
                run.finished = True
        nxt: int | None = pos + 1
        if outcome == "refused":
            if pos < run.final_at:  # a working request refused: the run wraps up with its final step
                run.stopped_by = rule
                nxt = run.final_at
            else:  # its final step refused: the run ends unfinished
                run.ended_by = rule
                nxt = None
        if nxt is not None and nxt <= last:
            heapq.heappush(self._heap, (when + self._specs[run.spec].gap_s, ri, nxt))


# -- the comparison -----------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest rank: the smallest value with at least ``p`` of the values at or below it."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p * len(ordered)) - 1)]


def summary(label: str, runs: Sequence[Run]) -> dict[str, Any]:
    """One row of the comparison, from the runs of one simulation."""
    costs = [r.cost_usd for r in runs]
    runaway = [r for r in runs if r.runaway]
    honest = [r for r in runs if not r.runaway]
    stopped = [r for r in runaway if r.stopped_by]
    by_rule: dict[str, int] = {}
    for r in stopped:
        by_rule[r.stopped_by] = by_rule.get(r.stopped_by, 0) + 1  # type: ignore[index]
    runaway_cost = math.fsum(r.cost_usd for r in runaway)
    return {
        "variant": label,
        "runs": len(runs),
        "cost_per_run_usd": {"p50": percentile(costs, 0.5), "p95": percentile(costs, 0.95), "max": max(costs, default=0.0)},
        "total_usd": math.fsum(costs),
        "finished": sum(r.finished for r in runs),
        "honest_runs": len(honest),
        "honest_cut_short": sum(1 for r in honest if r.stopped_by),
        "honest_finished": sum(r.finished for r in honest),
        "runaway_runs": len(runaway),
        "runaway_stopped": len(stopped),
        "runaway_stopped_by": dict(sorted(by_rule.items())),
        "runaway_cost_usd": runaway_cost,
        "runaway_cost_per_run_usd": runaway_cost / len(runaway) if runaway else 0.0,
        "runaway_finished": sum(r.finished for r in runaway),
        "requests_served": sum(r.served for r in runs),
        "requests_downgraded": sum(r.downgraded for r in runs),
        "runs_downgraded": sum(1 for r in runs if r.downgraded),
    }


def variant_policies(policy: Any) -> list[tuple[str, str, Any]]:
    """(key, description, policy) for the comparison's first two rows: without the run budgets, and
    with them as hard caps (dollars, max_requests, loop_guard; no downgrade steps, no final reserve)."""
    none = dataclasses.replace(policy, budgets=[b for b in policy.budgets if not b.is_run])
    hard = dataclasses.replace(policy, budgets=[
        b.model_copy(update={"downgrade": (), "final_reserve": None}) if b.is_run else b for b in policy.budgets])
    return [("no_run_caps", "the policy without its run budgets", none),
            ("hard_cap", "limit_usd, max_requests and loop_guard as written; no downgrade steps, no final reserve", hard)]


def describe_budget(budget: Any) -> str:
    parts = [f"${budget.limit_usd:g}/run"]
    if budget.max_requests:
        parts.append(f"max_requests {budget.max_requests}")
    if budget.loop_guard:
        parts.append(f"loop_guard {budget.loop_guard}")
    if budget.downgrade:
        parts.append("downgrade at " + "/".join(f"{s.at:g}" for s in budget.downgrade))
    if budget.final_reserve is not None:
        parts.append(f"final reserve {budget.final_reserve.share:.0%}")
    return ", ".join(parts)


def format_comparison(comparison: Mapping[str, Any]) -> list[str]:
    rows = comparison["rows"]
    first = rows[0]
    if comparison["budget"] is None:
        out = [f"Agent runs: {first['runs']:,} runs, {first['runaway_runs']:,} of them runaway (the policy has no run budget "
               "to compare: scope: session:*, window: session:<idle>):"]
    else:
        out = [f"Agent runs: {first['runs']:,} runs, {first['runaway_runs']:,} of them runaway; the same runs three ways "
               f"(run budget {comparison['budget']!r}: {comparison['budget_as_written']}):"]
    header = (f"{'variant':<22} {'p50/run':>9} {'p95/run':>9} {'max/run':>9} {'total':>10} {'finished':>9} "
              f"{'honest cut':>10} {'runaway stopped':>15} {'runaway cost':>12} {'per runaway':>11}")
    out += [header, "-" * len(header)]
    for row in rows:
        c = row["cost_per_run_usd"]
        out.append(
            f"{row['label']:<22} {_usd4(c['p50']):>9} {_usd4(c['p95']):>9} {_usd4(c['max']):>9} {_usd2(row['total_usd']):>10} "
            f"{row['finished']:>9,} {row['honest_cut_short']:>10,} {row['runaway_stopped']:>7,} of {row['runaway_runs']:<4,} "
            f"{_usd2(row['runaway_cost_usd']):>12} {_usd4(row['runaway_cost_per_run_usd']):>11}")
    for row in rows:
        by = ", ".join(f"{rule} {n:,}" for rule, n in row["runaway_stopped_by"].items())
        down = (f"; {row['requests_downgraded']:,} requests of {row['runs_downgraded']:,} runs routed by the downgrade steps"
                if row["requests_downgraded"] else "")
        out.append(f"  {row['label']}: {row['description']}; {row['requests_served']:,} requests served{down}"
                   + (f"; runaways stopped by {by}" if by else ""))
    out.append("  finished: the run's final step was served; honest cut: runs that were not runaways but had a working "
               "request refused; runaway stopped: refused before its loop ended (the run then sends its final step)")
    return out


def _usd2(x: float) -> str:
    return f"${x:,.2f}"


def _usd4(x: float) -> str:
    return f"${x:,.4f}"


@dataclass
class RunsTraffic:
    """What the simulation needs of a traffic's runs: the extra classes and the planned runs."""

    classes: list[Any] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)


def run_classes(specs: Sequence[RunSpec], first_index: int) -> tuple[list[Any], dict[tuple[int, int, int], int]]:
    """One traffic class per step of each runs line (counted once the runs are planned), and the
    map (line, block, step) -> class index."""
    from litellm_payg.tools.simulate import TrafficClass

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
                    faults=spec.faults, retries=spec.retries, step=st.step, run=spec.name))
    return classes, class_of


def plan(specs: Sequence[RunSpec], seed: int, start: float, end: float, first_index: int) -> RunsTraffic:
    """The runs' classes, with ``count`` the requests the planned runs would send uncapped."""
    classes, class_of = run_classes(specs, first_index)
    runs = plan_runs(specs, seed, start, end, class_of)
    counts = [0] * len(classes)
    for run in runs:
        for ci, _ in run.requests:
            counts[ci - first_index] += 1
    classes = [dataclasses.replace(c, count=n) for c, n in zip(classes, counts)]
    return RunsTraffic(classes, runs)
