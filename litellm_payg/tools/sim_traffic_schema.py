"""The schema of a traffic file's lines, as pydantic models: what ``simulate`` accepts, in one place.

Why pydantic, as for the policy (``policy/load.py``): the models *are* the format, each field's
type and bound is written once, every error says which field of which line is wrong (the dotted
path pydantic reports, rendered by ``sim_traffic.py``), and all the errors of a line are reported
at once. A line is validated strictly (``1.0`` is no count, ``true`` no probability) and an
unknown field is an error, never ignored.

Three kinds of line: a request class (:func:`class_line_model`), a ``{"runs": {...}}`` line
(:func:`runs_line_model`) and a ``{"scenario": {...}}`` line (:class:`ScenarioEntry`). A
class or a runs line may also give every request attribute a scope kind declares (``key``,
``end_user``, ``org``: ``sim_traffic.attribute_fields``); those fields are added to the models
per set of attribute names, since the kinds are the plugins'.
"""

from __future__ import annotations

import functools
import math
from datetime import datetime, timezone
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    create_model,
    field_validator,
    model_validator,
)

from litellm_payg.core.failure import FailureClass
from litellm_payg.tools.sim_runs import DEFAULT_GAP_S

#: loc parts pydantic adds that name no field of the line (union tags, our regrouping of rates)
HIDDEN_LOC = frozenset({"by_deployment", "windows", "block", "single", "rates", "function-after", "[key]"})


class _Line(BaseModel):
    """Strict, closed, immutable: what a traffic line says and nothing else."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


def parse_time(value: Any) -> float:
    """An ISO 8601 instant as epoch seconds (UTC when it names no zone)."""
    if not isinstance(value, str):
        raise ValueError(f"time must be an ISO 8601 string, got {value!r}")
    try:
        dt = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"time {value!r} is not ISO 8601 (e.g. 2025-01-01T00:00:00Z)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def _span(value: Any) -> tuple[float, float]:
    """``start/end`` or ``[start, end]`` as epoch seconds; an instant is a span of zero length."""
    if isinstance(value, str) and "/" in value:
        value = value.split("/", 1)
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError("a time range is 'start/end' or [start, end]")
        start, end = parse_time(value[0]), parse_time(value[1])
        if end <= start:
            raise ValueError("time range ends before it starts")
        return start, end
    t = parse_time(value)
    return t, t


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def _non_empty(value: str) -> str:
    if not value:
        raise ValueError("must be a non-empty string")
    return value


#: a time span: ``start/end``, ``[start, end]`` or one instant (start == end)
Span = Annotated[Any, AfterValidator(_span)]
Count0 = Annotated[int, Field(ge=0)]
Count1 = Annotated[int, Field(ge=1)]
Share = Annotated[float, Field(ge=0, le=1)]
Name = Annotated[str, AfterValidator(_non_empty)]
#: one tag or a list of them; null is none
Tags = Annotated[tuple[str, ...], BeforeValidator(lambda v: () if v is None else tuple(_one_or_many(v)))]
FailureName = Literal[tuple(c.value for c in FailureClass)]  # type: ignore[valid-type]


def _rates_add_up(rates: dict[str, float]) -> dict[str, float]:
    if not rates:
        raise ValueError(f"names no failure class; give some of {[c.value for c in FailureClass]} with a probability")
    total = math.fsum(rates.values())
    if total > 1 + 1e-12:
        raise ValueError(f"the probabilities add up to {total:g}, more than 1")
    return rates


#: failure class -> the probability that an attempt fails with it
Rates = Annotated[dict[FailureName, Share], AfterValidator(_rates_add_up)]


class FaultWindow(_Line):
    """``{"deployment": ..., "<failure class>": p, ..., "time": "start/end"}``: a fault for a while."""

    deployment: Name
    time: Span | None = None
    rates: Rates

    @model_validator(mode="before")
    @classmethod
    def _gather_rates(cls, data: Any) -> Any:
        """The failure classes are written beside ``deployment`` and ``time``; they are validated as
        one ``rates`` field (hidden again in error paths)."""
        if not isinstance(data, dict) or "rates" in data:
            return data
        return {**{k: v for k, v in data.items() if k in ("deployment", "time")},
                "rates": {k: v for k, v in data.items() if k not in ("deployment", "time")}}

    @field_validator("time")
    @classmethod
    def _a_range(cls, time: tuple[float, float] | None) -> tuple[float, float] | None:
        if time is not None and time[0] == time[1]:
            raise ValueError("must be a range 'start/end', got an instant")
        return time


def _faults_kind(value: Any) -> str | None:
    return "by_deployment" if isinstance(value, dict) else "windows" if isinstance(value, list) else None


#: ``{"<deployment>": {"<failure class>": p}}`` (all the time) or a list of :class:`FaultWindow`
Faults = Annotated[
    Union[Annotated[dict[str, Rates], Tag("by_deployment")], Annotated[list[FaultWindow], Tag("windows")]],
    Discriminator(_faults_kind, custom_error_type="faults_type",
                  custom_error_message="must be an object (deployment -> failure class -> probability) or a list"),
]


class _Requests(_Line):
    """What a class line and a runs line share: who sends, when, and what goes wrong."""

    group: Annotated[str, AfterValidator(_non_empty)] = Field(description="the LiteLLM model group")
    name: Name | None = None
    time: Span | None = None
    user: Name | None = None
    team: Name | None = None
    tags: Tags = ()
    faults: Faults | None = None
    retries: Count0 | None = None


class ClassLine(_Requests):
    """One request class: ``count`` identical requests spread over ``time`` (or the period)."""

    prompt_tokens: Count0
    completion_tokens: Count0
    count: Count1 = 1
    max_tokens: Count1 | None = None


def _step_name(value: str) -> str:
    if not value:
        raise ValueError("the step's name (sent as metadata.step) must be a non-empty string")
    return value


StepName = Annotated[str, AfterValidator(_step_name)]


class RunStepLine(_Line):
    """One request of a run: a step name (sent as ``metadata.step``) and its size."""

    step: StepName
    prompt_tokens: Count0
    completion_tokens: Count0
    max_tokens: Count1 | None = None


def _pair(value: Any) -> Any:
    """``n`` is ``[n, n]``; a JSON list is the pair (a strict tuple takes no list)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    return tuple(value) if isinstance(value, list) else value


def _repeat(value: tuple[int, int]) -> tuple[int, int]:
    if value[0] < 1 or value[1] < value[0]:
        raise ValueError(f"must be a whole number >= 1 or [min, max] with 1 <= min <= max, got {list(value)}")
    return value


#: ``n`` or ``[min, max]`` rounds, drawn per run
Repeat = Annotated[tuple[int, int], BeforeValidator(_pair), AfterValidator(_repeat)]


class StepLine(_Line):
    """A step, or several steps of the same size (``"step": ["act", "observe"]``), maybe repeated."""

    step: Annotated[list[StepName], Field(min_length=1), BeforeValidator(_one_or_many)]
    prompt_tokens: Count0
    completion_tokens: Count0
    max_tokens: Count1 | None = None
    repeat: Repeat | None = None


class BlockLine(_Line):
    """A block of steps, each with its own size, maybe repeated as a whole."""

    steps: Annotated[list[RunStepLine], Field(min_length=1)]
    repeat: Repeat | None = None


def _block_kind(value: Any) -> str | None:
    return ("block" if "steps" in value else "single") if isinstance(value, dict) else None


Block = Annotated[
    Union[Annotated[BlockLine, Tag("block")], Annotated[StepLine, Tag("single")]],
    Discriminator(_block_kind, custom_error_type="step_type", custom_error_message="a step must be an object"),
]


class RunawayLine(_Line):
    """``round(share * count)`` runs go round the first repeated block ``loop`` more times."""

    share: Share
    loop: Count1
    same_prompt: Share | None = None
    same_tool_call: Share = 0.0

    @model_validator(mode="after")
    def _shares(self) -> "RunawayLine":
        if self.same_prompt is not None and self.same_prompt + self.same_tool_call > 1:
            raise ValueError("same_prompt + same_tool_call are shares of the runaway runs: at most 1 together, "
                             f"got {self.same_prompt:g} + {self.same_tool_call:g}")
        return self

    @property
    def prompt_share(self) -> float:
        """Without ``same_prompt``, the runaways that do not repeat a tool call resend a prompt."""
        return self.same_prompt if self.same_prompt is not None else 1.0 - self.same_tool_call


class RunsLine(_Requests):
    """``count`` agent runs of one shape (``sim_runs.py`` plans and follows them)."""

    count: Count1
    steps: Annotated[list[Block], Field(min_length=1)]
    runaway: RunawayLine | None = None
    gap_s: Annotated[float, Field(gt=0, le=86400)] = DEFAULT_GAP_S  # seconds between a run's requests

    @model_validator(mode="after")
    def _shape(self) -> "RunsLine":
        last = self.steps[-1]
        if last.repeat is not None and last.repeat != (1, 1):
            raise ValueError(f"steps[{len(self.steps) - 1}]: the last step is the run's final step; it cannot repeat")
        if self.runaway is not None and not any(b.repeat is not None for b in self.steps[:-1]):
            raise ValueError("runaway: a runaway run loops on the first step with 'repeat'; no step has one")
        return self


def _instant(value: str) -> str:
    parse_time(value)
    return value


class PlanLine(_Line):
    """A subscription plan the traffic is compared with (``sim_baselines.Plan``)."""

    fee_usd: Annotated[float, Field(ge=0)]
    included_tokens: Count0
    overage_usd_per_1k: Annotated[float, Field(ge=0)]


class ScenarioLine(_Line):
    """What a scenario says about itself: a description, its period, its plan, its assumptions."""

    description: str | None = None
    start: Annotated[str, AfterValidator(_instant)] | None = None
    period_days: Annotated[float, Field(gt=0)] | None = None
    plan: PlanLine | None = None
    assumptions: list[str] = []


class ScenarioEntry(_Line):
    """``{"scenario": {...}}``, nothing else on the line."""

    scenario: ScenarioLine


@functools.cache
def class_line_model(attributes: tuple[str, ...]) -> type[ClassLine]:
    """:class:`ClassLine` with a string field per request attribute the scope kinds declare."""
    return create_model("ClassLine", __base__=ClassLine, **{a: (Name | None, None) for a in attributes})  # type: ignore[call-overload]


@functools.cache
def runs_line_model(attributes: tuple[str, ...]) -> type[BaseModel]:
    """``{"runs": RunsLine}`` (nothing else on the line), with the attribute fields on ``runs``."""
    runs = create_model("RunsLine", __base__=RunsLine, **{a: (Name | None, None) for a in attributes})  # type: ignore[call-overload]
    return create_model("RunsEntry", __base__=_Line, runs=(runs, ...))
