"""``litellm-payg simulate``: what a month of traffic costs under a policy, before it runs.

Every simulated request goes through the runtime's lifecycle, as live traffic does
(``runtime/lifecycle.py``): ``Lifecycle.pick`` (snapshot, ``Engine.decide`` with the route's rules
and every ``payg_filter_candidates`` plugin, the failover hop, the breaker claim, the reservation),
then ``succeeded`` or, when the class's faults make the attempt fail, ``failed`` and another
``pick`` with the request's attempts and last failure, as LiteLLM's Router retries. The ledger and
the health store are in memory and driven by a simulated clock, so ``block`` and ``downgrade``
budgets, ``failover.on`` and circuit breakers act exactly as they would live. Each served request is charged with LiteLLM's own cost
function (``litellm.cost_per_token``) for the deployment that served it; a deployment whose price
the policy (``models:``) or the LiteLLM config (``litellm_params``) overrides is charged at that
price, the way ``pricing.py`` resolves it. Costs are cached per (deployment, prompt, completion)
because traffic classes repeat.

The same traffic is then priced under baselines: each single deployment of a group alone,
LiteLLM's built-in ``cost-based-routing`` choice (LiteLLM's own ``LowestCostLoggingHandler`` is
asked), the cheapest deployment meeting the policy's quality bar per request (the *oracle*, a lower
bound) and a subscription plan (monthly fee + included tokens + overage per 1K tokens).

Traffic is JSONL, one request class (or one request) per line::

    {"group": "support", "prompt_tokens": 150, "completion_tokens": 50, "count": 300000,
     "name": "faq", "user": "alice", "team": "t1", "tags": ["faq"], "max_tokens": 512,
     "time": "2025-01-01T00:00:00Z/2025-01-31T00:00:00Z"}

Besides ``user``, ``team`` and ``tags``, a class may give every other request attribute a scope kind
declares (:func:`attribute_fields`: ``key``, ``end_user``, ``org``; the built-in plugins' kinds, as the
traffic is read before the policy), so that ``key:``,
``end_user:`` and ``org:`` budgets cap simulated traffic as they cap live traffic.

``count`` requests are spread evenly over ``time`` when it is a range (``start/end``), all at
``time`` when it is an instant, else over the simulated period (``--start``, ``--period`` days).
``faults`` (``{"<deployment>": {"<failure class>": probability}}``, or a list of
``{"deployment": ..., "<failure class>": p, "time": "start/end"}``) makes attempts of the class fail,
drawn from a generator seeded with ``--seed``; ``retries`` bounds the attempts after a failure
(default: one per other deployment of the group).
A line ``{"scenario": {...}}`` carries a scenario's description, assumptions, period and plan.

A line ``{"runs": {...}}`` describes ``count`` agent runs of one shape instead of independent
requests (``sim_runs.py``)::

    {"runs": {"name": "agent", "group": "agent", "count": 1000, "gap_s": 10,
              "steps": [{"step": "plan", "prompt_tokens": 1500, "completion_tokens": 400, "max_tokens": 800},
                        {"repeat": [2, 10], "steps": [{"step": "act", "prompt_tokens": 2500, "completion_tokens": 250},
                                                      {"step": "observe", "prompt_tokens": 3500, "completion_tokens": 150}]},
                        {"step": "final", "prompt_tokens": 4000, "completion_tokens": 600}],
              "runaway": {"share": 0.03, "loop": 500, "same_prompt": 0.5}}}

``steps`` are sent in order, one request per step; a step (or a block of ``steps``) with ``repeat``
(``n`` or ``[min, max]``, drawn per run) goes round that many times; ``{"step": ["act", "observe"],
...}`` is a block of steps of the same size. The last step is the run's *final* step. ``runaway``:
``round(share * count)`` runs (drawn) go round the first repeated block ``loop`` more times, and
``round(same_prompt * runaways)`` of them resend the same prompt each round (what a loop guard
catches), ``round(same_tool_call * runaways)`` others make the same tool call and get the same
result each round in a conversation that grows (a new prompt each round: a loop guard with
``loop_counts: [tool_call]`` catches them, one on the prompt alone does not), and the rest send a new
prompt each round. Runs start evenly spread over ``time`` (or the
period); a run's requests are ``gap_s`` seconds apart (default 10), each with the run's session id
(``<name>-<n>``), ``metadata.step`` and a prompt hash (the same for a loop's resent prompt,
different for every other request). A budget refusal of a working request sends the run to its
final step; a refused final request ends it unfinished; a request that failed for good (faults) is
passed over. ``user``, ``team``, ``tags``, ``time``, ``faults`` and ``retries`` are as on a class.
Runs are planned with a generator of their own, seeded from ``--seed``. When the policy has a run
budget, the same traffic is also simulated without run budgets and with them as hard caps (no
``downgrade`` steps, no ``final_reserve``), and the three are compared per run.

What is printed and written (the table, ``--csv``, ``--html``) is ``sim_output.py``'s job.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import heapq
import json
import math
import random
import re
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

from litellm_payg.adapter import litellm_versions
from litellm_payg.tools import sim_runs
from litellm_payg.tools.sim_output import format_failover, format_table, write_csv, write_html  # noqa: F401 - the output, by its old names
from litellm_payg.core.errors import PaygError
from litellm_payg.core.failure import FailureClass

DEFAULT_START = "2025-01-01T00:00:00Z"
DEFAULT_PERIOD_DAYS = 30.0
DEFAULT_SEED = 0  # the random generator of a run (faults, the shuffle of a group without a route)
DAYS_PER_MONTH = 30.0  # a subscription's "month" when the simulated period is not exactly one
SCENARIO_PACKAGE = "litellm_payg.tools.scenarios"


class SimulationError(PaygError):
    """Bad traffic, an unknown scenario, or a request that cannot be priced."""


# -- traffic ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrafficClass:
    """One line of a traffic file: ``count`` identical requests spread over [start, end]."""

    name: str
    group: str
    prompt_tokens: int
    completion_tokens: int
    count: int
    start: float | None = None
    end: float | None = None
    user: str | None = None
    team: str | None = None
    tags: tuple[str, ...] = ()
    max_tokens: int | None = None
    line: int = 0
    #: the faults this class's requests meet, per deployment reference (see :class:`Fault`)
    faults: tuple["Fault", ...] = ()
    #: retries after a failed attempt (None: one per other candidate of the group)
    retries: int | None = None
    #: a step of a ``runs`` line: its name (sent as ``metadata.step``) and the line's name; such a
    #: class's requests are sent by the planned runs (``sim_runs``), not spread over the period
    step: str | None = None
    run: str | None = None
    #: the class's other request attributes, as a scope kind declares them (``key``, ``end_user``,
    #: ``org``...: :func:`attribute_fields`), by kind name, as the line gives them
    attrs: tuple[tuple[str, str], ...] = ()


def attribute_fields() -> dict[str, Any]:
    """The traffic fields of the request attributes the registered scope kinds declare, beyond
    ``user``, ``team`` and ``tags`` (a class's own fields) and ``session`` (a runs line's): the
    field is the kind's name (``key``: the key as the proxy's auth sees it, a raw ``sk-`` key is
    hashed as LiteLLM hashes it; ``end_user``; ``org``), a string."""
    from litellm_payg.plugins import builtin_scopes

    return {k.name: k for k in builtin_scopes().attributes() if k.name not in ("user", "team", "tag", "session")}


def class_request_fields(scopes: Any, c: TrafficClass) -> dict[str, Any]:
    """A class's request attributes as RouteRequest fields, through the same door as the live
    adapter's (``ScopeRegistry.request_fields``): each kept as its declaration says."""
    raw: dict[str, Any] = {"user": c.user, "team": c.team, "tag": c.tags, **dict(c.attrs)}
    return scopes.request_fields({name: value for name, value in raw.items() if name in scopes})


@dataclass(frozen=True)
class Fault:
    """Attempts of a class's requests to ``deployment`` (a deployment id, a LiteLLM model string or
    the model without its provider prefix) fail with probability ``rates[failure class]``, during
    [start, end) when the fault has a ``time``, else all the time."""

    deployment: str
    rates: tuple[tuple[str, float], ...]
    start: float | None = None
    end: float | None = None
    label: str = "faults"  # where in the line it was given, for error messages

    def active(self, now: float) -> bool:
        return (self.start is None or now >= self.start) and (self.end is None or now < self.end)


@dataclass(frozen=True)
class Plan:
    fee_usd: float
    included_tokens: int
    overage_usd_per_1k: float

    def cost(self, tokens: int, months: float) -> float:
        over = max(0.0, tokens - self.included_tokens * months)
        return self.fee_usd * months + over / 1000.0 * self.overage_usd_per_1k


@dataclass
class Traffic:
    classes: list[TrafficClass]
    source: str
    meta: dict[str, Any] = field(default_factory=dict)
    #: ``{"runs": ...}`` lines (``sim_runs.RunSpec``): planned into classes and runs by ``simulate``
    runs: list[Any] = field(default_factory=list)

    @property
    def requests(self) -> int:
        """The requests of the classes (a ``runs`` line's requests are known once planned)."""
        return sum(c.count for c in self.classes)


_KNOWN = {"name", "group", "prompt_tokens", "completion_tokens", "count", "time", "user", "team", "tags", "max_tokens",
          "faults", "retries"}


def _failure_classes() -> list[str]:
    return [c.value for c in FailureClass]


def _time_span(value: Any, where: str) -> tuple[float, float]:
    """``start/end`` or ``[start, end]`` as epoch seconds; an instant is a span of zero length."""
    if isinstance(value, str) and "/" in value:
        value = value.split("/", 1)
    if isinstance(value, list):
        if len(value) != 2:
            raise SimulationError(f"{where}: a time range is 'start/end' or [start, end]")
        start, end = _parse_time(value[0], where), _parse_time(value[1], where)
        if end <= start:
            raise SimulationError(f"{where}: time range ends before it starts")
        return start, end
    t = _parse_time(value, where)
    return t, t


def _fault_rates(spec: Mapping[str, Any], where: str, field: str, skip: tuple[str, ...] = ()) -> tuple[tuple[str, float], ...]:
    known = _failure_classes()
    rates = []
    for key, value in spec.items():
        if key in skip:
            continue
        if key not in known:
            raise SimulationError(f"{where}: {field}: unknown failure class {key!r}; expected some of {known}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise SimulationError(f"{where}: {field}.{key} must be a probability in [0, 1], got {value!r}")
        rates.append((key, float(value)))
    if not rates:
        raise SimulationError(f"{where}: {field} names no failure class; give some of {known} with a probability")
    total = math.fsum(r for _, r in rates)
    if total > 1 + 1e-12:
        raise SimulationError(f"{where}: {field}: the probabilities add up to {total:g}, more than 1")
    return tuple(rates)


def _parse_faults(value: Any, where: str) -> tuple[Fault, ...]:
    """``{"<deployment>": {"<failure class>": p, ...}}`` (all the time), or a list of
    ``{"deployment": "<deployment>", "<failure class>": p, ..., "time": "start/end"}``."""
    faults: list[Fault] = []
    if isinstance(value, dict):
        for ref, spec in value.items():
            field = f"faults.{ref}"
            if not isinstance(spec, dict):
                raise SimulationError(f"{where}: {field} must be an object of failure class -> probability, got {spec!r}")
            faults.append(Fault(ref, _fault_rates(spec, where, field), label=field))
        return tuple(faults)
    if not isinstance(value, list):
        raise SimulationError(f"{where}: 'faults' must be an object (deployment -> failure class -> probability) or a list")
    for index, spec in enumerate(value):
        field = f"faults[{index}]"
        if not isinstance(spec, dict):
            raise SimulationError(f"{where}: {field} must be an object, got {spec!r}")
        ref = spec.get("deployment")
        if not isinstance(ref, str) or not ref:
            raise SimulationError(f"{where}: {field}.deployment (a deployment id or LiteLLM model) is required")
        start = end = None
        if spec.get("time") is not None:
            start, end = _time_span(spec["time"], f"{where}: {field}.time")
            if start == end:
                raise SimulationError(f"{where}: {field}.time must be a range 'start/end', got an instant")
        faults.append(Fault(ref, _fault_rates(spec, where, field, skip=("deployment", "time")), start, end, label=field))
    return tuple(faults)


def _parse_time(value: Any, where: str) -> float:
    if not isinstance(value, str):
        raise SimulationError(f"{where}: time must be an ISO 8601 string, got {value!r}")
    try:
        dt = datetime.fromisoformat(value.strip())
    except ValueError:
        raise SimulationError(f"{where}: time {value!r} is not ISO 8601 (e.g. 2025-01-01T00:00:00Z)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def _int_field(obj: Mapping[str, Any], key: str, where: str, *, minimum: int, default: int | None = None) -> int:
    value = obj.get(key, default)
    if value is None:
        raise SimulationError(f"{where}: {key!r} is required")
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SimulationError(f"{where}: {key!r} must be an integer >= {minimum}, got {value!r}")
    return value


def parse_traffic(text: str, source: str) -> Traffic:
    classes: list[TrafficClass] = []
    runs: list[Any] = []
    meta: dict[str, Any] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        where = f"{source}:{number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SimulationError(f"{where}: not valid JSON: {exc.msg}") from None
        if not isinstance(obj, dict):
            raise SimulationError(f"{where}: expected a JSON object per line, got {type(obj).__name__}")
        if "scenario" in obj:
            if not isinstance(obj["scenario"], dict):
                raise SimulationError(f"{where}: 'scenario' must be an object")
            meta = dict(obj["scenario"])
            continue
        if "runs" in obj:
            if len(obj) != 1:
                raise SimulationError(f"{where}: a runs line is {{\"runs\": {{...}}}} alone; put {sorted(set(obj) - {'runs'})} inside it")
            runs.append(parse_runs(obj["runs"], where, number))
            continue
        known = _KNOWN | set(attribute_fields())
        unknown = sorted(set(obj) - known)
        if unknown:
            raise SimulationError(f"{where}: unknown field(s) {unknown}; expected some of {sorted(known)}")
        group = obj.get("group")
        if not isinstance(group, str) or not group:
            raise SimulationError(f"{where}: 'group' (the LiteLLM model group) is required")
        start = end = None
        if obj.get("time") is not None:
            start, end = _time_span(obj["time"], where)
        tags = obj.get("tags") or ()
        if isinstance(tags, str):
            tags = (tags,)
        if not isinstance(tags, (list, tuple)) or not all(isinstance(t, str) for t in tags):
            raise SimulationError(f"{where}: 'tags' must be a list of strings")
        max_tokens = obj.get("max_tokens")
        if max_tokens is not None:
            max_tokens = _int_field(obj, "max_tokens", where, minimum=1)
        faults = _parse_faults(obj["faults"], where) if obj.get("faults") is not None else ()
        retries = _int_field(obj, "retries", where, minimum=0) if obj.get("retries") is not None else None
        for key in ("user", "team", "name", *attribute_fields()):
            if obj.get(key) is not None and not isinstance(obj[key], str):
                raise SimulationError(f"{where}: {key!r} must be a string")
        classes.append(TrafficClass(
            name=obj.get("name") or f"line {number}",
            group=group,
            prompt_tokens=_int_field(obj, "prompt_tokens", where, minimum=0),
            completion_tokens=_int_field(obj, "completion_tokens", where, minimum=0),
            count=_int_field(obj, "count", where, minimum=1, default=1),
            start=start,
            end=end,
            user=obj.get("user"),
            team=obj.get("team"),
            tags=tuple(tags),
            max_tokens=max_tokens,
            line=number,
            faults=faults,
            retries=retries,
            attrs=tuple((key, obj[key]) for key in attribute_fields() if obj.get(key) is not None),
        ))
    if not classes and not runs:
        raise SimulationError(f"{source}: no requests in the traffic file")
    names = [r.name for r in runs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise SimulationError(f"{source}: runs lines need distinct names (their runs' session ids start with it): {dup}")
    return Traffic(classes, source, meta, runs)


# -- runs lines (the runs themselves: ``sim_runs``) ---------------------------------------------

#: fields of a ``{"runs": {...}}`` object, of one of its steps, and of its ``runaway``
RUNS_FIELDS = {"name", "group", "count", "steps", "runaway", "gap_s", "time", "user", "team", "tags", "faults", "retries"}
STEP_FIELDS = {"step", "prompt_tokens", "completion_tokens", "max_tokens", "repeat", "steps"}
RUNAWAY_FIELDS = {"share", "loop", "same_prompt", "same_tool_call"}


def _error(where: str, message: str) -> Exception:
    return SimulationError(f"{where}: {message}")


def _runs_count(obj: Mapping[str, Any], key: str, where: str, label: str, *, minimum: int, required: bool = True) -> int | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise _error(where, f"{label}{key} is required")
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _error(where, f"{label}{key} must be an integer >= {minimum}, got {value!r}")
    return value


def _runs_share(obj: Mapping[str, Any], key: str, where: str, label: str, default: float | None = None) -> float:
    value = obj.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise _error(where, f"{label}{key} must be a share in [0, 1], got {value!r}")
    return float(value)


def _run_step(obj: Any, where: str, label: str) -> Any:
    if not isinstance(obj, dict):
        raise _error(where, f"{label} must be an object, got {obj!r}")
    name = obj.get("step")
    if not isinstance(name, str) or not name:
        raise _error(where, f"{label}.step (the step's name, sent as metadata.step) must be a non-empty string, got {name!r}")
    return sim_runs.RunStep(name, _runs_count(obj, "prompt_tokens", where, label + ".", minimum=0),  # type: ignore[arg-type]
                   _runs_count(obj, "completion_tokens", where, label + ".", minimum=0),  # type: ignore[arg-type]
                   _runs_count(obj, "max_tokens", where, label + ".", minimum=1, required=False))


def _run_block(obj: Any, where: str, label: str) -> Any:
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
        steps = tuple(_run_step(s, where, f"{label}.steps[{i}]") for i, s in enumerate(inner))
        return sim_runs.RunBlock(steps, repeat, "repeat" in obj)
    names = obj.get("step")
    if isinstance(names, list):  # shorthand: several steps of the same size
        if not names or not all(isinstance(n, str) and n for n in names):
            raise _error(where, f"{label}.step must be a step name or a non-empty list of names, got {names!r}")
        steps = tuple(_run_step({**obj, "step": n}, where, label) for n in names)
    else:
        steps = (_run_step(obj, where, label),)
    return sim_runs.RunBlock(steps, repeat, "repeat" in obj)


def parse_runs(obj: Any, where: str, number: int) -> Any:
    """A ``{"runs": {...}}`` line's object; bad input is a SimulationError naming line and field."""
    if not isinstance(obj, dict):
        raise _error(where, f"'runs' must be an object, got {obj!r}")
    known = RUNS_FIELDS | set(attribute_fields())  # and every request attribute a scope kind declares
    unknown = sorted(set(obj) - known)
    if unknown:
        raise _error(where, f"runs: unknown field(s) {unknown}; expected some of {sorted(known)}")
    group = obj.get("group")
    if not isinstance(group, str) or not group:
        raise _error(where, "runs.group (the LiteLLM model group) is required")
    for key in ("name", "user", "team", *attribute_fields()):
        if obj.get(key) is not None and (not isinstance(obj[key], str) or not obj[key]):
            raise _error(where, f"runs.{key} must be a non-empty string")
    count = _runs_count(obj, "count", where, "runs.", minimum=1)
    steps = obj.get("steps")
    if not isinstance(steps, list) or not steps:
        raise _error(where, "runs.steps must be a non-empty list of steps (the last one is the run's final step)")
    blocks = tuple(_run_block(s, where, f"runs.steps[{i}]") for i, s in enumerate(steps))
    if blocks[-1].repeat != (1, 1):
        raise _error(where, f"runs.steps[{len(blocks) - 1}]: the last step is the run's final step; it cannot repeat")
    gap = obj.get("gap_s", sim_runs.DEFAULT_GAP_S)
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
        runaway = sim_runs.Runaway(_runs_share(ra, "share", where, "runs.runaway."),
                          _runs_count(ra, "loop", where, "runs.runaway.", minimum=1),  # type: ignore[arg-type]
                          # without same_prompt, the runaways that do not repeat a tool call resend a prompt
                          _runs_share(ra, "same_prompt", where, "runs.runaway.",
                                      1.0 - _runs_share(ra, "same_tool_call", where, "runs.runaway.", 0.0)),
                          _runs_share(ra, "same_tool_call", where, "runs.runaway.", 0.0))
        if runaway.same_prompt + runaway.same_tool_call > 1:
            raise _error(where, "runs.runaway.same_prompt + same_tool_call are shares of the runaway runs: "
                                f"at most 1 together, got {runaway.same_prompt:g} + {runaway.same_tool_call:g}")
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
    retries = _runs_count(obj, "retries", where, "runs.", minimum=0, required=False)
    return sim_runs.RunSpec(obj.get("name") or f"runs {number}", group, count, blocks, runaway, float(gap), start, end,  # type: ignore[arg-type]
                   obj.get("user"), obj.get("team"), tuple(tags), number, faults, retries,
                   tuple((key, obj[key]) for key in attribute_fields() if obj.get(key) is not None))



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


def load_traffic(path: str | Path) -> Traffic:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SimulationError(f"{path}: cannot read traffic file: {exc.strerror or exc}") from None
    return parse_traffic(text, str(path))


def scenario_names() -> list[str]:
    root = resources.files(SCENARIO_PACKAGE)
    return sorted(p.name[: -len(".jsonl")] for p in root.iterdir() if p.name.endswith(".jsonl"))


def load_scenario(name: str) -> Traffic:
    resource = resources.files(SCENARIO_PACKAGE) / f"{name}.jsonl"
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or not resource.is_file():
        raise SimulationError(f"unknown scenario {name!r}; bundled: {', '.join(scenario_names()) or 'none'}")
    return parse_traffic(resource.read_text(encoding="utf-8"), f"scenario {name}")


def _arrivals(classes: Sequence[TrafficClass], start: float, end: float) -> Iterator[tuple[float, int]]:
    """Every request as (time, class index), in time order: each class spread evenly over its span."""

    def one(i: int, c: TrafficClass) -> Iterator[tuple[float, int]]:
        s = c.start if c.start is not None else start
        e = c.end if c.end is not None else end
        step = (e - s) / c.count
        for k in range(c.count):
            yield s + (k + 0.5) * step, i

    return heapq.merge(*(one(i, c) for i, c in enumerate(classes) if c.run is None))


# -- prices -------------------------------------------------------------------------------------


class Pricer:
    """LiteLLM's cost function per (deployment, prompt tokens, completion tokens), cached."""

    def __init__(self, candidates: Sequence[Any], policy_models: Mapping[str, Any] | None = None):
        from litellm_payg.stores import prices as pricing

        self._cache: dict[tuple[str, int, int], float] = {}
        self.source: dict[str, str] = {}
        self._custom: dict[str, dict[str, float] | None] = {}
        #: deployment id -> True when the policy's ``models:`` sets its price (LiteLLM cannot see that)
        self.policy_overridden: dict[str, bool] = {}
        for c in candidates:
            facts = pricing.facts_for(pricing._refs(c.model, c.deployment_id), policy_models or {})
            self.policy_overridden[c.deployment_id] = facts is not None and facts.input_usd_per_1k is not None
            mapped = pricing.litellm_price(c.model)
            if not c.priced:
                self.source[c.deployment_id] = "unknown"
                self._custom[c.deployment_id] = None
            elif mapped is not None and mapped == (c.input_usd_per_token, c.output_usd_per_token):
                self.source[c.deployment_id] = "LiteLLM price map"
                self._custom[c.deployment_id] = None
            else:
                self.source[c.deployment_id] = (
                    "policy models: override" if self.policy_overridden[c.deployment_id] else "litellm_params override"
                )
                self._custom[c.deployment_id] = {
                    "input_cost_per_token": c.input_usd_per_token, "output_cost_per_token": c.output_usd_per_token,
                }
        self._by_id = {c.deployment_id: c for c in candidates}

    def cost(self, candidate: Any, prompt_tokens: int, completion_tokens: int) -> float:
        key = (candidate.deployment_id, prompt_tokens, completion_tokens)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        import litellm

        if not candidate.priced:
            raise SimulationError(
                f"deployment {candidate.deployment_id} ({candidate.model}) has no known price: add "
                f"'models: {{{candidate.model}: {{input_usd_per_1k: ..., output_usd_per_1k: ...}}}}' to the policy"
            )
        custom = self._custom.get(candidate.deployment_id)
        quiet, litellm.suppress_debug_info = litellm.suppress_debug_info, True
        try:
            if custom is not None:
                p, c = litellm.cost_per_token(
                    model=candidate.model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                    custom_cost_per_token=custom,  # type: ignore[arg-type]
                )
            else:
                p, c = litellm.cost_per_token(
                    model=candidate.model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens
                )
        finally:
            litellm.suppress_debug_info = quiet
        value = float(p) + float(c)
        self._cache[key] = value
        return value


def litellm_cost_based_choice(group: str, candidates: Sequence[Any], pricer: Pricer) -> Any:
    """The deployment LiteLLM's ``routing_strategy="cost-based-routing"`` picks for this group.

    LiteLLM's own ``LowestCostLoggingHandler`` is asked, with deployment dicts built from the
    candidates (``litellm_params`` prices when the price came from the LiteLLM config; LiteLLM does
    not see the policy's ``models:`` overrides). It ranks by input + output price per token,
    whatever the request's size; with no tpm/rpm limits its choice does not change over time.
    """
    from litellm.caching.caching import DualCache
    from litellm.router_strategy.lowest_cost import LowestCostLoggingHandler

    deployments = []
    for c in candidates:
        params: dict[str, Any] = {"model": c.model}
        custom = pricer._custom.get(c.deployment_id)
        if custom is not None and not pricer.policy_overridden[c.deployment_id]:
            params.update(custom)
        deployments.append({"model_name": group, "litellm_params": params, "model_info": {"id": c.deployment_id}})
    handler = LowestCostLoggingHandler(DualCache())
    picked = asyncio.run(handler.async_get_available_deployments(group, deployments, messages=None))
    if picked is None:
        return None
    return next(c for c in candidates if c.deployment_id == picked["model_info"]["id"])


# -- the simulation -----------------------------------------------------------------------------


@dataclass
class Result:
    policy_source: str
    traffic_source: str
    litellm_version: str
    start: float
    end: float
    classes: list[TrafficClass]
    candidates: dict[str, list[Any]]
    prices: list[dict[str, Any]]
    #: (deployment id, class index) -> requests served
    served: dict[tuple[str, int], int]
    unit_cost: dict[tuple[str, int], float]
    blocked: dict[str, int]  # budget -> requests refused
    downgraded: dict[str, int]  # budget -> requests that lost a deployment to it
    no_deployment: int
    served_by_class: list[int]
    dropped_by: dict[str, int]
    first_block: dict[str, float]
    baselines: list[dict[str, Any]]
    plan: Plan | None
    assumptions: list[str]
    elapsed_s: float
    meta: dict[str, Any]
    seed: int = DEFAULT_SEED
    #: (deployment id, failure class) -> attempts that failed with it
    attempts_failed: dict[tuple[str, str], int] = field(default_factory=dict)
    #: deployment id -> requests that failed on it and were tried again (failed over)
    failed_over: dict[str, int] = field(default_factory=dict)
    #: deployment id -> requests whose final attempt failed on it (failed for good)
    failed_final: dict[str, int] = field(default_factory=dict)
    #: (deployment id, class index) -> invalid answers charged (billed, then rejected)
    failed_charges: dict[tuple[str, int], int] = field(default_factory=dict)
    #: deployment id -> times its circuit breaker opened / requests it kept away from it
    breaker_opened: dict[str, int] = field(default_factory=dict)
    breaker_moved: dict[str, int] = field(default_factory=dict)
    breakers: bool = False  # the policy has ``failover:`` (circuit breakers)
    #: the traffic's runs (``sim_runs.Run``) with what became of each
    runs: list[Any] = field(default_factory=list)
    #: the three-way comparison of the runs (``sim_runs``), when the policy has a run budget
    run_comparison: dict[str, Any] | None = None
    #: requests a run budget's ``downgrade`` step routed (the route's rules set aside)
    run_downgrades: int = 0
    #: requests sent (a stopped run does not send the rest of its planned requests)
    sent_requests: int | None = None

    # -- figures ---------------------------------------------------------------------------------

    @property
    def requests(self) -> int:
        return sum(c.count for c in self.classes)

    @property
    def served_requests(self) -> int:
        return sum(self.served.values())

    def deployment_rows(self) -> list[dict[str, Any]]:
        """Per deployment that served or failed a request: requests served, their tokens and the
        cost (invalid answers charged included); with faults or breakers, what failed and moved."""
        rows: dict[str, dict[str, Any]] = {}
        cand = {c.deployment_id: c for cs in self.candidates.values() for c in cs}
        parts: dict[str, list[float]] = {}
        failing = self.failover_shown

        def row_of(dep: str) -> dict[str, Any]:
            row = rows.get(dep)
            if row is None:
                row = rows[dep] = {
                    "deployment": dep, "model": cand[dep].model, "provider": cand[dep].provider, "group": cand[dep].group,
                    "requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0,
                }
                if failing:
                    row.update({
                        "failed_attempts": 0, "failed_attempts_by_class": {}, "failed_over": self.failed_over.get(dep, 0),
                        "failed_final": self.failed_final.get(dep, 0), "invalid_answers_charged_usd": 0.0,
                        "breaker_opened": self.breaker_opened.get(dep, 0), "breaker_moved": self.breaker_moved.get(dep, 0),
                    })
            return row

        for (dep, ci), n in sorted(self.served.items()):
            cls = self.classes[ci]
            row = row_of(dep)
            row["requests"] += n
            row["prompt_tokens"] += n * cls.prompt_tokens
            row["completion_tokens"] += n * cls.completion_tokens
            parts.setdefault(dep, []).append(n * self.unit_cost[(dep, ci)])
        if failing:
            for dep in sorted({d for d, _ in self.attempts_failed} | set(self.breaker_opened) | set(self.breaker_moved)):
                row_of(dep)
            for (dep, fc), n in sorted(self.attempts_failed.items()):
                row = rows[dep]
                row["failed_attempts"] += n
                row["failed_attempts_by_class"][fc] = n
            for (dep, ci), n in sorted(self.failed_charges.items()):
                charge = n * self.unit_cost[(dep, ci)]
                rows[dep]["invalid_answers_charged_usd"] += charge
                parts.setdefault(dep, []).append(charge)
        for dep, row in rows.items():
            row["cost_usd"] = math.fsum(parts.get(dep, ()))
        return sorted(rows.values(), key=lambda r: (-r["cost_usd"], r["deployment"]))

    @property
    def failover_shown(self) -> bool:
        """Whether there is anything to say about failures: an attempt failed, or breakers exist."""
        return bool(self.attempts_failed) or self.breakers

    @property
    def failed_requests(self) -> int:
        """Requests that failed for good (their last attempt failed, with no retry left or allowed)."""
        return sum(self.failed_final.values())

    def charged(self) -> Iterator[tuple[str, int, int]]:
        """(deployment, class index, attempts charged): served answers and invalid ones (billed)."""
        for (dep, ci), n in self.served.items():
            yield dep, ci, n
        for (dep, ci), n in self.failed_charges.items():
            yield dep, ci, n

    @property
    def policy_cost(self) -> float:
        return math.fsum(n * self.unit_cost[(dep, ci)] for dep, ci, n in self.charged())

    @property
    def tokens(self) -> int:
        return sum(c.count * (c.prompt_tokens + c.completion_tokens) for c in self.classes)

    def runs_section(self) -> dict[str, Any]:
        """The runs' figures: the three-way comparison, or (the policy has no run budget) one row."""
        if self.run_comparison is not None:
            return self.run_comparison
        row = {"key": "as_written", "label": "policy as written", "description": "the policy has no run budget",
               **sim_runs.summary("policy as written", self.runs)}
        return {"budget": None, "budget_as_written": None, "rows": [row]}

    def baseline(self, kind: str) -> dict[str, Any] | None:
        return next((b for b in self.baselines if b["kind"] == kind), None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy_source,
            "traffic": self.traffic_source,
            "litellm_version": self.litellm_version,
            "price_map": litellm_versions.price_map(),
            "period": {"start": _iso(self.start), "end": _iso(self.end), "days": (self.end - self.start) / 86400},
            "requests": self.requests,
            "sent": self.sent_requests,
            "served": self.served_requests,
            "tokens": self.tokens,
            "policy_cost_usd": self.policy_cost,
            "deployments": self.deployment_rows(),
            "classes": [
                {
                    "name": c.name, "group": c.group, "prompt_tokens": c.prompt_tokens,
                    "completion_tokens": c.completion_tokens, "count": c.count, "served": self.served_by_class[i],
                    "served_by": {dep: n for (dep, ci), n in self.served.items() if ci == i},
                }
                for i, c in enumerate(self.classes)
            ],
            "prices": self.prices,
            "budget_blocks": dict(self.blocked),
            "budget_downgrades": dict(self.downgraded),
            "first_block_at": {k: _iso(v) for k, v in self.first_block.items()},
            "no_deployment_left": self.no_deployment,
            "run_downgrades": self.run_downgrades,
            "failed_requests": self.failed_requests,
            "failover": {
                "seed": self.seed,
                "breakers": self.breakers,
                "failed_attempts": _nested(self.attempts_failed),
                "failed_over": dict(self.failed_over),
                "failed_for_good": dict(self.failed_final),
                "breaker_opened": dict(self.breaker_opened),
                "breaker_moved": dict(self.breaker_moved),
            },
            "dropped_by": dict(self.dropped_by),
            **({"runs": self.runs_section()} if self.runs else {}),
            "baselines": self.baselines,
            "assumptions": self.assumptions,
            "elapsed_s": self.elapsed_s,
            "scenario": self.meta,
        }


def _nested(counts: Mapping[tuple[str, str], int]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for (a, b), n in sorted(counts.items()):
        out.setdefault(a, {})[b] = n
    return out


class _Clock:
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
    import litellm

    from litellm_payg.adapter.deployments import candidates_from_config, candidates_named_by_policy
    from litellm_payg.core.decision import RouteRequest
    from litellm_payg.runtime.engine import Engine
    from litellm_payg.core.errors import NoDeploymentLeft
    from litellm_payg.policy.load import Policy, load_policy
    from litellm_payg.core.errors import BudgetRefused, UnboundedCost
    from litellm_payg.core.failure import Failure
    from litellm_payg.runtime.lifecycle import GiveUp, Lifecycle

    loaded: Policy = policy if isinstance(policy, Policy) else load_policy(policy)
    meta = traffic.meta
    if start is None:
        start = _parse_time(meta.get("start", DEFAULT_START), "start")
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
    cands = {g: list(candidates_by_group[g]) for g in groups}
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
    served: dict[tuple[str, int], int] = {}
    served_by_class = [0] * len(classes)
    blocked: dict[str, int] = {}
    first_block: dict[str, float] = {}
    downgraded: dict[str, int] = {}
    dropped_by: dict[str, int] = {}
    no_deployment = 0
    total = sum(c.count for c in classes)
    bar = _Progress(total, progress)

    lifecycle = Lifecycle(engine, rng=rng)
    pick = lifecycle.pick
    succeeded = lifecycle.succeeded
    failed = lifecycle.failed
    cost = pricer.cost
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
        rid = f"sim-{i}"
        attempts: list[str] = []
        last_failure = None
        budget_drops: list[Any] = []
        moved: set[str] | None = None
        while True:
            try:
                picked = pick(request, class_cands[ci], rid, attempts=attempts, last_failure=last_failure)
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
            if attempts:  # the last attempt failed and this request moved on to another one
                failed_over[attempts[-1]] = failed_over.get(attempts[-1], 0) + 1
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
            charge = unit.get(key)
            if charge is None:
                cls = classes[ci]
                charge = unit[key] = cost(chosen, cls.prompt_tokens, cls.completion_tokens)
            fault = _draw(faults.get(dep), when, rng) if faults else None
            if fault is None:
                succeeded(picked, dep, charge, tokens=classes[ci].prompt_tokens + classes[ci].completion_tokens)
                served[key] = served.get(key, 0) + 1
                served_by_class[ci] += 1
                outcome = "served"
                run_cost += charge
                break
            failure = Failure(fault, "simulated fault", _STATUS.get(fault.value), None, f"simulated {fault.value} on {dep}")
            if fault is FailureClass.INVALID_RESPONSE:  # answered and billed, then rejected by the validators
                failed_charges[key] = failed_charges.get(key, 0) + 1
                run_cost += charge
                state = failed(picked, dep, failure, charge)
            else:
                state = failed(picked, dep, failure)
            fk = (dep, fault.value)
            attempts_failed[fk] = attempts_failed.get(fk, 0) + 1
            if state == "open":  # requests run one at a time: an attempt never goes to an open breaker
                breaker_opened[dep] = breaker_opened.get(dep, 0) + 1
            attempts.append(dep)
            if len(attempts) > retry_bound[ci]:
                failed_final[dep] = failed_final.get(dep, 0) + 1
                break
            last_failure = (dep, chosen, failure)
            rid = f"sim-{i}.{len(attempts)}"
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
    engine.spend.close()
    if engine.health is not None:
        engine.health.close()

    result = Result(
        policy_source=loaded.source or "<policy>",
        traffic_source=traffic.source,
        litellm_version=_litellm_version(),
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
    result.baselines = _baselines(result, engine, pricer, plan, period_days)
    result.assumptions = _assumptions(result, loaded, period_days, litellm)
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


def quality_bar(engine: Any, cls: "TrafficClass") -> float | None:
    """The highest quality bar that the rules applying to a class's requests set (None: no bar).

    Only the rules that apply: a route with ``when:`` conditions applies the entries whose condition
    the request meets (its ``metadata.step``, tags, user, team, size), as ``Engine.decide`` does, so
    an agent's cheap ``act`` step is not held to its ``plan`` step's bar."""
    from litellm_payg.core.decision import RouteRequest

    route = engine.routes.get(cls.group, [])
    request = RouteRequest(cls.group, cls.prompt_tokens, cls.completion_tokens,
                           metadata={"step": cls.step} if cls.step is not None else {},
                           **class_request_fields(engine.spend.scopes, cls))
    bars = [rule.bar_for(cls.prompt_tokens) for rule in engine.rules_for(request, route) if hasattr(rule, "bar_for")]
    return max(bars) if bars else None


def _meets_bar(candidate: Any, bar: float | None) -> bool:
    """Whether a deployment may serve a request held to ``bar`` (None: the rules set no bar)."""
    return bar is None or (candidate.quality is not None and candidate.quality >= bar)


def _baselines(result: Result, engine: Any, pricer: Pricer, plan: Plan | None, period_days: float) -> list[dict[str, Any]]:
    classes = result.classes
    out: list[dict[str, Any]] = []
    policy_by_group: dict[str, float] = {}
    for dep, ci, n in result.charged():
        g = classes[ci].group
        policy_by_group[g] = policy_by_group.get(g, 0.0) + n * result.unit_cost[(dep, ci)]
    for g, cands in result.candidates.items():
        group_classes = [(i, c) for i, c in enumerate(classes) if c.group == g]
        n_req = sum(c.count for _, c in group_classes)
        for cand in cands:
            if not cand.priced:
                continue
            total = math.fsum(c.count * pricer.cost(cand, c.prompt_tokens, c.completion_tokens) for _, c in group_classes)
            meets = [_meets_bar(cand, quality_bar(engine, c)) for _, c in group_classes]
            out.append({
                "kind": "single", "group": g, "label": f"only {cand.model} ({cand.deployment_id})" if cand.model != cand.deployment_id else f"only {cand.model}",
                "deployment": cand.deployment_id, "requests": n_req, "cost_usd": total,
                "policy_cost_usd": policy_by_group.get(g, 0.0),
                "meets_quality_bar_for": sum(c.count for (_, c), ok in zip(group_classes, meets) if ok),
            })
    # LiteLLM cost-based-routing: one choice per group
    lc_total, lc_parts, lc_picks, lc_meets = [], {}, {}, 0
    for g, cands in result.candidates.items():
        pick = litellm_cost_based_choice(g, [c for c in cands if c.priced], pricer)
        if pick is None:
            continue
        lc_picks[g] = pick.deployment_id
        part = math.fsum(c.count * pricer.cost(pick, c.prompt_tokens, c.completion_tokens) for c in classes if c.group == g)
        lc_parts[g] = part
        lc_total.append(part)
        # LiteLLM's choice ignores quality: count the requests it sends to a model under their bar
        lc_meets += sum(c.count for c in classes if c.group == g and _meets_bar(pick, quality_bar(engine, c)))
    out.append({
        "kind": "litellm-cost-based", "label": "LiteLLM cost-based-routing", "requests": result.requests,
        "cost_usd": math.fsum(lc_total), "picks": lc_picks, "meets_quality_bar_for": lc_meets,
    })
    # oracle: per request the cheapest deployment meeting the policy's bar
    oracle_all, oracle_served, oracle_picks = [], [], {}
    for i, c in enumerate(classes):
        bar = quality_bar(engine, c)
        eligible = [
            x for x in result.candidates[c.group]
            if x.priced and (bar is None or (x.quality is not None and x.quality >= bar))
        ]
        if not eligible:
            continue
        best = min(eligible, key=lambda x: pricer.cost(x, c.prompt_tokens, c.completion_tokens))
        unit = pricer.cost(best, c.prompt_tokens, c.completion_tokens)
        oracle_picks[c.name] = best.deployment_id
        oracle_all.append(c.count * unit)
        oracle_served.append(result.served_by_class[i] * unit)
    out.append({
        "kind": "oracle", "label": "oracle: cheapest meeting the quality bar, per request", "requests": result.requests,
        "cost_usd": math.fsum(oracle_all), "served_cost_usd": math.fsum(oracle_served), "picks": oracle_picks,
    })
    if plan is not None:
        months = period_days / DAYS_PER_MONTH
        out.append({
            "kind": "plan",
            "label": f"plan ${plan.fee_usd:g}/month, {plan.included_tokens:,} tokens incl., ${plan.overage_usd_per_1k:g}/1K over",
            "requests": result.requests, "cost_usd": plan.cost(result.tokens, months), "months": months,
            "tokens": result.tokens, "overage_tokens": max(0.0, result.tokens - plan.included_tokens * months),
        })
    return out


def _assumptions(result: Result, policy: Any, period_days: float, litellm: Any) -> list[str]:
    lines = [
        f"{litellm_versions.describe()}; "
        "cost of a request = litellm.cost_per_token(model, prompt_tokens, completion_tokens) of the deployment that served it",
        f"period: {_iso(result.start)} to {_iso(result.end)} ({period_days:g} days); each class's requests evenly spaced over it (or over its own 'time')",
        f"routing estimates assume {policy.defaults.expected_output_tokens} output tokens (policy defaults.expected_output_tokens) unless a class sets max_tokens; "
        "budget reservations assume the class's max_tokens, else the model's maximum output (its price map entry), "
        f"else {policy.defaults.reserve_output_tokens} (defaults.reserve_output_tokens); the charge uses the class's completion_tokens",
    ]
    for p in result.prices:
        if p["input_usd_per_1m"] is None:
            lines.append(f"price {p['deployment']}: unknown")
            continue
        q = "" if p["quality"] is None else f", quality {p['quality']:g}"
        lines.append(
            f"price {p['model']}: ${p['input_usd_per_1m']:.4f}/1M input, ${p['output_usd_per_1m']:.4f}/1M output ({p['source']}{q})"
        )
    for c in result.classes:
        lines.append(
            f"class {c.name}: {c.count:,} x ({c.prompt_tokens} prompt + {c.completion_tokens} completion tokens), group {c.group!r}"
            + (f", user {c.user}" if c.user else "") + (f", team {c.team}" if c.team else "")
            + "".join(f", {name} {value}" for name, value in c.attrs)
            + (f", tags {','.join(c.tags)}" if c.tags else "") + (f", max_tokens {c.max_tokens}" if c.max_tokens else "")
        )
    for c in result.classes:
        for f in c.faults:
            when = f" from {_iso(f.start)} to {_iso(f.end)}" if f.start is not None else ""
            rates = ", ".join(f"{fc} {p:g}" for fc, p in f.rates)
            lines.append(f"faults of class {c.name} on {f.deployment}{when}: {rates} per attempt (seed {result.seed})")
        if c.faults or c.retries is not None:
            n = c.retries if c.retries is not None else len(result.candidates[c.group]) - 1
            how = "its 'retries'" if c.retries is not None else "one per other deployment of the group"
            lines.append(f"class {c.name}: up to {n} retr{'y' if n == 1 else 'ies'} after a failed attempt ({how}), "
                         "as LiteLLM's Router with num_retries")
    lines.append("single-model baselines send every request of the group to that deployment, whatever its quality")
    lines.append("LiteLLM cost-based-routing: LiteLLM's LowestCostLoggingHandler picks the lowest input+output price per token, "
                 "regardless of request size (no tpm/rpm limits simulated)")
    lines.append("oracle: per request, the cheapest deployment (at the real charge) whose quality meets the policy's quality bar; a lower bound")
    if result.plan is not None:
        lines.append(
            f"plan: ${result.plan.fee_usd:g} per {DAYS_PER_MONTH:g}-day month including {result.plan.included_tokens:,} tokens "
            f"(prompt + completion); tokens above that at ${result.plan.overage_usd_per_1k:g} per 1K"
        )
    lines.extend(str(a) for a in result.meta.get("assumptions", []))
    return lines


def _litellm_version() -> str:
    return litellm_versions.litellm_version()


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat().replace("+00:00", "Z")


# -- CLI ----------------------------------------------------------------------------------------


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("simulate", help="price a traffic mix under a policy (real decisions and budgets) and baselines")
    p.add_argument("policy", metavar="POLICY")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--traffic", metavar="FILE", help="JSONL: one request class per line")
    src.add_argument("--scenario", metavar="NAME", help="a bundled traffic scenario (e.g. support-bot)")
    p.add_argument("--config", help="a LiteLLM config.yaml whose model_list gives the deployments")
    p.add_argument("--period", type=float, default=None, metavar="DAYS", help=f"days to spread requests over (default {DEFAULT_PERIOD_DAYS:g})")
    p.add_argument("--start", default=None, help=f"ISO start of the simulated period (default {DEFAULT_START})")
    p.add_argument("--plan-fee", type=float, help="subscription baseline: monthly fee in USD")
    p.add_argument("--plan-tokens", type=int, help="subscription baseline: tokens included per month")
    p.add_argument("--plan-overage-per-1k", type=float, help="subscription baseline: USD per 1K tokens above the included ones")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED,
                   help=f"seed of the random generator drawing the traffic's faults (default {DEFAULT_SEED}): same seed, same numbers")
    p.add_argument("--csv", metavar="FILE", help="also write the figures as CSV")
    p.add_argument("--html", metavar="FILE", help="also write a self-contained HTML report")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--progress", action="store_true", help="show a progress bar even when stderr is not a terminal")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from litellm_payg.tools import sim_quality

    if args.scenario and sim_quality.is_quality_scenario(args.scenario):
        return sim_quality.run(args)  # hidden true qualities: its own simulation (sim_quality.py)
    traffic = load_scenario(args.scenario) if args.scenario else load_traffic(args.traffic)
    plan_args = (args.plan_fee, args.plan_tokens, args.plan_overage_per_1k)
    plan = None
    if any(a is not None for a in plan_args):
        meta_plan = traffic.meta.get("plan") or {}
        fee = args.plan_fee if args.plan_fee is not None else meta_plan.get("fee_usd")
        tokens = args.plan_tokens if args.plan_tokens is not None else meta_plan.get("included_tokens")
        over = args.plan_overage_per_1k if args.plan_overage_per_1k is not None else meta_plan.get("overage_usd_per_1k")
        if fee is None or tokens is None or over is None:
            raise SimulationError("a plan baseline needs --plan-fee, --plan-tokens and --plan-overage-per-1k")
        if fee < 0 or tokens < 0 or over < 0:
            raise SimulationError("plan figures must be >= 0")
        plan = Plan(float(fee), int(tokens), float(over))
    start = _parse_time(args.start, "--start") if args.start else None
    show = args.progress or sys.stderr.isatty()
    result = simulate(args.policy, traffic, config=args.config, start=start, period_days=args.period, plan=plan, progress=show,
                      seed=args.seed)
    if args.csv:
        write_csv(result, args.csv)
    if args.html:
        write_html(result, args.html)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        print(format_table(result))
    return 0
