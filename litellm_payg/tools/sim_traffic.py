"""A traffic file (or a bundled scenario) read into what the simulation drives: request classes,
runs lines and the scenario's description.

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

Why a module of its own: reading input is a job apart from running it. Each line is validated by
the pydantic models of ``sim_traffic_schema.py`` (the format, written once) and turned into the
frozen dataclasses the driver reads (:class:`TrafficClass`, :class:`Fault`, ``sim_runs.RunSpec``).
A malformed line is a :class:`SimulationError` naming the file, the line and the dotted field, as
a policy error does (``policy/load.py``): the CLI prints it and exits 2, no traceback.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from litellm_payg.core.errors import PaygError, Problem
from litellm_payg.tools import sim_runs
from litellm_payg.tools.sim_traffic_schema import (
    HIDDEN_LOC,
    ClassLine,
    RunsLine,
    ScenarioEntry,
    class_line_model,
    parse_time,
    runs_line_model,
)

SCENARIO_PACKAGE = "litellm_payg.tools.scenarios"


class SimulationError(PaygError):
    """Bad traffic, an unknown scenario, or a request that cannot be priced."""


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
    faults: tuple[Fault, ...] = ()
    #: retries after a failed attempt (None: one per other candidate of the group)
    retries: int | None = None
    #: a step of a ``runs`` line: its name (sent as ``metadata.step``) and the line's name; such a
    #: class's requests are sent by the planned runs (``sim_runs``), not spread over the period
    step: str | None = None
    run: str | None = None
    #: the class's other request attributes, as a scope kind declares them (``key``, ``end_user``,
    #: ``org``...: :func:`attribute_fields`), by kind name, as the line gives them
    attrs: tuple[tuple[str, str], ...] = ()


@dataclass
class Traffic:
    """A whole traffic file: its request classes, its runs lines and its scenario description."""

    classes: list[TrafficClass]
    source: str
    meta: dict[str, Any] = field(default_factory=dict)
    #: ``{"runs": ...}`` lines (``sim_runs.RunSpec``): planned into classes and runs by ``simulate``
    runs: list[Any] = field(default_factory=list)

    @property
    def requests(self) -> int:
        """The requests of the classes (a ``runs`` line's requests are known once planned)."""
        return sum(c.count for c in self.classes)


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


# -- errors -------------------------------------------------------------------------------------


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if part in HIDDEN_LOC:
            continue
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out


def _problems(exc: ValidationError, line: int) -> list[Problem]:
    """Pydantic's errors as the policy renders its own (``policy/load.py``): dotted field, message."""
    problems = []
    for err in exc.errors():
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown field"
        elif err["type"] == "missing":
            message = "this field is required"
        elif "input" in err and not isinstance(err["input"], (dict, list)) and "got " not in message:
            message += f" (got {err['input']!r})"
        problems.append(Problem(_dotted(tuple(err["loc"])), message, line))
    return problems


def _validate(model: type[BaseModel], obj: Any, source: str, line: int) -> Any:
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        raise SimulationError("\n".join(p.render(source) for p in _problems(exc, line))) from None


# -- lines into dataclasses ---------------------------------------------------------------------


def _faults(line: ClassLine | RunsLine) -> tuple[Fault, ...]:
    faults = line.faults
    if faults is None:
        return ()
    if isinstance(faults, dict):
        return tuple(Fault(ref, tuple(rates.items()), label=f"faults.{ref}") for ref, rates in faults.items())
    return tuple(Fault(w.deployment, tuple(w.rates.items()), *(w.time or (None, None)), label=f"faults[{i}]")
                 for i, w in enumerate(faults))


def _attrs(line: BaseModel, attributes: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    return tuple((a, getattr(line, a)) for a in attributes if getattr(line, a) is not None)


def _traffic_class(line: ClassLine, number: int, attributes: tuple[str, ...]) -> TrafficClass:
    start, end = line.time or (None, None)
    return TrafficClass(
        name=line.name or f"line {number}", group=line.group, prompt_tokens=line.prompt_tokens,
        completion_tokens=line.completion_tokens, count=line.count, start=start, end=end, user=line.user,
        team=line.team, tags=line.tags, max_tokens=line.max_tokens, line=number, faults=_faults(line),
        retries=line.retries, attrs=_attrs(line, attributes),
    )


def _run_spec(line: RunsLine, number: int, attributes: tuple[str, ...]) -> sim_runs.RunSpec:
    blocks = []
    for b in line.steps:
        if hasattr(b, "steps"):  # a block of steps, each with its own size
            steps = tuple(sim_runs.RunStep(s.step, s.prompt_tokens, s.completion_tokens, s.max_tokens) for s in b.steps)
        else:  # one step, or several of the same size
            steps = tuple(sim_runs.RunStep(n, b.prompt_tokens, b.completion_tokens, b.max_tokens) for n in b.step)
        blocks.append(sim_runs.RunBlock(steps, b.repeat or (1, 1), b.repeat is not None))
    ra = line.runaway
    runaway = None if ra is None else sim_runs.Runaway(ra.share, ra.loop, ra.prompt_share, ra.same_tool_call)
    start, end = line.time or (None, None)
    return sim_runs.RunSpec(line.name or f"runs {number}", line.group, line.count, tuple(blocks), runaway,
                            float(line.gap_s), start, end, line.user, line.team, line.tags, number, _faults(line),
                            line.retries, _attrs(line, attributes))


def parse_traffic(text: str, source: str) -> Traffic:
    """Every line of a traffic file, validated; the first bad line is an error naming its fields."""
    attributes = tuple(attribute_fields())
    classes: list[TrafficClass] = []
    runs: list[sim_runs.RunSpec] = []
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
            _validate(ScenarioEntry, obj, source, number)
            meta = dict(obj["scenario"])  # as written: ``--json`` shows it
        elif "runs" in obj:
            if len(obj) != 1:
                raise SimulationError(f"{where}: a runs line is {{\"runs\": {{...}}}} alone; put {sorted(set(obj) - {'runs'})} inside it")
            if not isinstance(obj["runs"], dict):
                raise SimulationError(f"{where}: 'runs' must be an object, got {obj['runs']!r}")
            runs.append(_run_spec(_validate(runs_line_model(attributes), obj, source, number).runs, number, attributes))
        else:
            classes.append(_traffic_class(_validate(class_line_model(attributes), obj, source, number), number, attributes))
    if not classes and not runs:
        raise SimulationError(f"{source}: no requests in the traffic file")
    names = [r.name for r in runs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise SimulationError(f"{source}: runs lines need distinct names (their runs' session ids start with it): {dup}")
    return Traffic(classes, source, meta, runs)


def time_of(value: Any, where: str) -> float:
    """An ISO 8601 instant given outside a traffic line (``--start``, a scenario's ``start``)."""
    try:
        return parse_time(value)
    except ValueError as exc:
        raise SimulationError(f"{where}: {exc}") from None


def read_traffic(path: str | Path) -> tuple[str, str]:
    """A traffic file's text and its name for errors."""
    try:
        return Path(path).read_text(encoding="utf-8"), str(path)
    except OSError as exc:
        raise SimulationError(f"{path}: cannot read traffic file: {exc.strerror or exc}") from None


def scenario_names() -> list[str]:
    root = resources.files(SCENARIO_PACKAGE)
    return sorted(p.name[: -len(".jsonl")] for p in root.iterdir() if p.name.endswith(".jsonl"))


def read_scenario(name: str) -> tuple[str, str]:
    """A bundled scenario's text and its name for errors."""
    resource = resources.files(SCENARIO_PACKAGE) / f"{name}.jsonl"
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or not resource.is_file():
        raise SimulationError(f"unknown scenario {name!r}; bundled: {', '.join(scenario_names()) or 'none'}")
    return resource.read_text(encoding="utf-8"), f"scenario {name}"


def load_traffic(path: str | Path) -> Traffic:
    return parse_traffic(*read_traffic(path))


def load_scenario(name: str) -> Traffic:
    return parse_traffic(*read_scenario(name))

