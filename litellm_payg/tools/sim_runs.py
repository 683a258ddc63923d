"""Runs in ``litellm-payg simulate``: traffic that describes agent runs, and the three-way comparison.

A traffic line ``{"runs": {...}}`` describes ``count`` runs of one shape (see ``sim_traffic``'s
docstring and the README's "Simulating runs"; ``sim_traffic`` parses it into a :class:`RunSpec`, this
module imports nothing of the simulation). Before the simulation each run is *planned* with a
generator of its own (seeded from ``--seed``, apart from the faults' generator, so every variant of
the comparison sees the same runs): how many times each repeated block goes round, which runs are
runaways, the prompt fingerprint of every request. During the simulation a run sends one request at
a time, ``gap_s`` apart in simulated time, each carrying the run's session id, ``metadata.step`` and
its prompt hash, through the same lifecycle as every other request; a budget refusal of a working
request sends the run to its final step (an agent told to stop wraps up), a refusal of a final
request ends the run unfinished.

The comparison (``sim_driver._compare_runs``, rows by :func:`summary`) runs the same traffic three times: without the policy's run
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
from dataclasses import dataclass
from typing import Any

from litellm_payg.tools.money import usd

DEFAULT_GAP_S = 10.0  # seconds between a run's requests


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
    #: of the runaway runs (after those), those whose loop repeats one tool call and gets the same
    #: result each round, in a conversation that grows (a new prompt each round)
    same_tool_call: float = 0.0


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
    #: the runs' other request attributes (``key``, ``end_user``, ``org``...: ``sim_traffic.attribute_fields``)
    attrs: tuple[tuple[str, str], ...] = ()


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
    #: a runaway repeating one tool call: the requests (indexes) whose newest turn is that call and
    #: its result, and what a loop guard counts of them (``runs.LoopMark``)
    tool_loop: bool = False
    marked: frozenset[int] = frozenset()
    marks: tuple[Any, ...] = ()
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
        tool = set(runaway_ids[len(same): len(same) + round(spec.runaway.same_tool_call * len(runaway_ids))]
                   ) if spec.runaway else set()
        runaway_set = set(runaway_ids)
        loop_block = next((bi for bi, b in enumerate(spec.blocks) if b.repeats), None)
        width = len(str(spec.count))
        for r in range(spec.count):
            session = f"{spec.name}-{r + 1:0{width}d}"
            run = Run(session, si, s + (r + 0.5) * (e - s) / spec.count, [], 0,
                      runaway=r in runaway_set, same_prompt=r in same, tool_loop=r in tool)
            marked: set[int] = set()
            for bi, block in enumerate(spec.blocks):
                if bi == len(spec.blocks) - 1:
                    run.final_at = len(run.requests)
                rounds = rng.randint(*block.repeat)
                for _ in range(rounds):
                    for ki in range(len(block.steps)):
                        run.requests.append((class_of[(si, bi, ki)], _hash(f"{session}:{len(run.requests)}")))
                if run.runaway and bi == loop_block:
                    for _ in range(spec.runaway.loop):  # type: ignore[union-attr]
                        if run.tool_loop:  # each round's first request answers the same tool call
                            marked.add(len(run.requests))
                        for ki in range(len(block.steps)):
                            text = f"{session}:loop:{ki}" if run.same_prompt else f"{session}:{len(run.requests)}"
                            run.requests.append((class_of[(si, bi, ki)], _hash(text)))
            if marked:
                run.marked, run.marks = frozenset(marked), _tool_marks(session)
            runs.append(run)
    return runs


def _tool_marks(session: str) -> tuple[Any, ...]:
    """What a loop guard counts of a tool-looping run's request (``runs.loop_marks`` of its newest
    turn): the same call ``search`` with the same arguments, and the same result, every round."""
    from litellm_payg.core.runs import LoopMark

    call, result = _hash(f"{session}:call"), _hash(f"{session}:result")
    what = f"the same tool call search(args sha256:{call[:8]})"
    return (LoopMark("tool_call", f"call:{call}", what),
            LoopMark("tool_result", f"result:{result}", f"{what} with the same result (sha256:{result[:8]})"))


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
        counts = [k for k in budget.loop_counts if k != "prompt"]
        parts.append(f"loop_guard {budget.loop_guard}" + (f" (prompts, {', '.join(counts)})" if counts else ""))
    if budget.downgrade:
        parts.append("downgrade at " + "/".join(f"{s.at:g}" for s in budget.downgrade))
    if budget.final_reserve is not None:
        parts.append(f"final reserve {budget.final_reserve.share:.0%}")
    return ", ".join(parts)


def comparison_title(comparison: Mapping[str, Any]) -> str:
    """The comparison's heading line (the table and the HTML page print the same words)."""
    first = comparison["rows"][0]
    if comparison["budget"] is None:
        return (f"Agent runs: {first['runs']:,} runs, {first['runaway_runs']:,} of them runaway (the policy has no run budget "
                "to compare: scope: session:*, window: session:<idle>):")
    return (f"Agent runs: {first['runs']:,} runs, {first['runaway_runs']:,} of them runaway; the same runs three ways "
            f"(run budget {comparison['budget']!r}: {comparison['budget_as_written']}):")


#: the comparison's columns, as the table and the HTML page head them
COLUMNS = ("variant", "p50/run", "p95/run", "max/run", "total", "finished", "honest cut", "runaway stopped",
           "runaway cost", "per runaway")


def comparison_cells(row: Mapping[str, Any]) -> list[str]:
    """One variant's cells under :data:`COLUMNS` (amounts by ``money.usd``: a $0.02 run is not "$0.02" for $0.0247)."""
    c = row["cost_per_run_usd"]
    return [row["label"], usd(c["p50"]), usd(c["p95"]), usd(c["max"]), usd(row["total_usd"]), f"{row['finished']:,}",
            f"{row['honest_cut_short']:,}", f"{row['runaway_stopped']:,} of {row['runaway_runs']:,}",
            usd(row["runaway_cost_usd"]), usd(row["runaway_cost_per_run_usd"])]


def comparison_notes(comparison: Mapping[str, Any]) -> list[str]:
    """Per variant what it is and what it served, downgraded and stopped; then what the columns mean."""
    out = []
    for row in comparison["rows"]:
        by = ", ".join(f"{rule} {n:,}" for rule, n in row["runaway_stopped_by"].items())
        down = (f"; {row['requests_downgraded']:,} requests of {row['runs_downgraded']:,} runs routed by the downgrade steps"
                if row["requests_downgraded"] else "")
        out.append(f"{row['label']}: {row['description']}; {row['requests_served']:,} requests served{down}"
                   + (f"; runaways stopped by {by}" if by else ""))
    out.append("finished: the run's final step was served; honest cut: runs that were not runaways but had a working "
               "request refused; runaway stopped: refused before its loop ended (the run then sends its final step)")
    return out


def format_comparison(comparison: Mapping[str, Any]) -> list[str]:
    """The comparison as the text table prints it."""
    widths = (-22, 9, 9, 9, 10, 9, 10, 15, 12, 11)

    def line(cells: Sequence[str]) -> str:
        return " ".join(f"{c:<{-w}}" if w < 0 else f"{c:>{w}}" for c, w in zip(cells, widths))

    header = line(COLUMNS)
    out = [comparison_title(comparison), header, "-" * len(header)]
    out += [line(comparison_cells(row)) for row in comparison["rows"]]
    out += [f"  {note}" for note in comparison_notes(comparison)]
    return out
