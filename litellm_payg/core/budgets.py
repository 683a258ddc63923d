"""Budget specs and the pure window/scope math that maps a request to buckets.

No I/O and no hidden clock: callers pass ``now`` (an aware datetime) so the
same code is driven by a fake clock in tests and by the wall clock in the
proxy.

* A *scope* says which requests a budget counts (``global``,
  ``user:alice``, ``user:*`` = one bucket per user, ...). A request that lacks
  the attribute (no user) simply does not fall under that scope.
* A *window* says over which period: calendar ``hour``/``day``/``week``
  (ISO, Monday)/``month`` in the policy's IANA time zone -- so "daily" resets
  at local midnight, DST included -- or ``rolling:<N><s|m|h|d>``, or
  ``session:<N><s|m|h|d>`` (a run's window: it lasts until the run has been idle that
  long, see :class:`~litellm_payg.core.buckets.Bucket` ``idle_s``; ``session:`` scopes only).

A ``session`` budget is a *run budget*: besides its dollar cap it may count the run's requests
(``max_requests``), refuse a prompt -- or, with ``loop_counts``, a tool call, a (tool call, tool
result) pair or an assistant output -- repeated ``loop_guard`` times (the loop guard), send the run to
cheaper deployments past shares of its budget (``downgrade``) and keep the last share of its budget
for the run's final requests (``final_reserve``), and apply to some requests only (``when``). The counts are ledger buckets reserved in the
same atomic call as the dollars (:func:`buckets_for`); the downgrade steps are decided from the
snapshot (``runs.py``).

Calendar bucket keys embed the window start (``b0|user:alice|month|2026-11``)
so a new window is a fresh counter: nothing has to be reset, and a replica
with a slightly different clock writes to the right window on its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Annotated, Any, Literal, Sequence
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from litellm_payg.core.bounds import MAX_COUNT, MAX_ROLLING_WINDOW_S, Count, Score, Usd
from litellm_payg.core.buckets import Bucket
from litellm_payg.core.decision import Candidate, RouteRequest
from litellm_payg.core.scopes import BUILTIN, SCOPE_KINDS, ScopeKind, ScopeRegistry  # noqa: F401  (SCOPE_KINDS re-exported)

CALENDAR_WINDOWS = ("hour", "day", "week", "month")
_ROLLING = re.compile(r"^rolling:(\d+)([smhd])$")
_SESSION = re.compile(r"^session:(\d+)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}

#: how long a finished calendar bucket is kept after its window ends, so
#: "last month" can still be read from the counters before GC
DEFAULT_GC_MARGIN_S = 35 * 86400


def parse_window(window: str) -> tuple[str, float | None]:
    """``('month', None)``, ``('rolling', seconds)`` or ``('session', idle seconds)``; ValueError otherwise."""
    if window in CALENDAR_WINDOWS:
        return window, None
    m = _SESSION.match(window)
    if m and int(m.group(1)) > 0:
        seconds = int(m.group(1)) * _UNIT_S[m.group(2)]
        if seconds > MAX_ROLLING_WINDOW_S:
            raise ValueError(f"a session window's idle time is at most 366 days, got {window!r}")
        return "session", float(seconds)
    m = _ROLLING.match(window)
    if m and int(m.group(1)) > 0:
        seconds = int(m.group(1)) * _UNIT_S[m.group(2)]
        if seconds > MAX_ROLLING_WINDOW_S:
            # bounded like every policy number (bounds.py): slice arithmetic and key TTLs stay finite
            raise ValueError(f"a rolling window is at most 366 days, got {window!r}")
        return "rolling", float(seconds)
    raise ValueError(
        f"window must be hour, day, week, month, rolling:<N>(s|m|h|d) or session:<N>(s|m|h|d), got {window!r}")


_DURATION = re.compile(r"^(\d+)([smhd])$")


def parse_duration(text: str) -> float:
    """Seconds of a ``<N>(s|m|h|d)`` duration (``max_duration``), N > 0, at most 366 days; ValueError otherwise."""
    m = _DURATION.match(str(text))
    if not m or int(m.group(1)) <= 0:
        raise ValueError(f"a duration is <N>(s|m|h|d) with N > 0, e.g. 2h, got {text!r}")
    seconds = int(m.group(1)) * _UNIT_S[m.group(2)]
    if seconds > MAX_ROLLING_WINDOW_S:
        raise ValueError(f"a duration is at most 366 days, got {text!r}")
    return float(seconds)


def parse_scope(scope: str, scopes: ScopeRegistry | None = None) -> tuple[str, str | None]:
    """``('global', None)`` or ``(kind, value)``; value ``'*'`` = each one separately.

    Only the first ``:`` separates kind and value, because LiteLLM model
    strings may contain colons (``bedrock/...:0``). ``scopes``: the kinds the policy knows (the
    kind is checked against them); without it, a budget already validated is being read.
    """
    if scope == "global":
        return "global", None
    kind, sep, value = scope.partition(":")
    if not sep or (scopes is not None and kind not in scopes) or not kind or not value.strip():
        names = (scopes or BUILTIN).names
        raise ValueError(
            f"scope must be 'global' or <kind>:<value> with kind one of {', '.join(names)} "
            f"(value '*' = each separately), got {scope!r}"
        )
    return kind, value


class DowngradeStep(BaseModel):
    """Past ``at`` (a share of the run's limit, spent and in flight), the run's requests go to the
    cheapest deployment of their group whose quality is at least ``min_quality``."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    at: float = Field(gt=0, lt=1)
    min_quality: Score


class FinalReserve(BaseModel):
    """The last ``share`` of a run's limit is kept for its final requests: those ``when`` matches
    (a ``when:`` as on a rule entry, e.g. ``{metadata.step: final}`` or ``{tags: [final]}``; the
    policy loader checks it with ``core.conditions.When``). Other requests of the run are refused once they
    would reach into it."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    share: float = Field(gt=0, lt=1)
    when: dict[str, Any]


class Budget(BaseModel):
    """One budget as written in a policy file."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    scope: str
    window: str
    limit_usd: Usd
    on_exceed: Literal["block", "downgrade", "alert"] = "block"
    alert_at: list[float] = Field(default_factory=list)
    name: str | None = None
    #: run budgets (``window: session:<idle>``) only: requests per run
    max_requests: Count | None = None
    #: run budgets only: the same prompt sent this many times in one run is refused (the Nth)
    loop_guard: Annotated[int, Field(ge=2, le=MAX_COUNT)] | None = None
    #: run budgets only: what the loop guard counts (``runs.LOOP_KINDS``): the whole prompt (the
    #: default), the newest turn's tool calls, its (tool call, tool result) pairs, its assistant
    #: output; each counted on its own, each refused at its ``loop_guard``-th time in the run
    loop_counts: tuple[Literal["prompt", "tool_call", "tool_result", "output"], ...] = Field(
        default=("prompt",), min_length=1)
    #: run budgets only: progressive downgrade steps, by ascending share
    downgrade: tuple[DowngradeStep, ...] = ()
    #: run budgets only: the share of the limit kept for the run's final requests
    final_reserve: FinalReserve | None = None
    #: run budgets only: the requests this budget applies to (a ``when:`` as on a rule entry, checked
    #: by the policy loader with ``core.conditions.When``); without it, every request of a run
    when: dict[str, Any] | None = None
    #: run budgets only: the run's tokens (prompt and output, settled, plus each request in flight's
    #: bound: its prompt and every output token it may produce) at most this many
    max_total_tokens: Annotated[int, Field(gt=0, le=MAX_COUNT * 1000)] | None = None
    #: run budgets only: no request of the run is admitted this long after its first one
    #: (``<N>(s|m|h|d)``, wall clock)
    max_duration: str | None = None

    #: the scope's kind, resolved at validation from the policy's kinds (the validation context's
    #: ``scopes``, a :class:`~litellm_payg.core.scopes.ScopeRegistry`; without one, the built-in kinds)
    _kind: ScopeKind | None = PrivateAttr(default=None)

    @property
    def scope_kind(self) -> ScopeKind | None:
        """The kind the scope names (None: ``global``)."""
        return self._kind

    @property
    def max_duration_s(self) -> float | None:
        """``max_duration`` in seconds (None without one)."""
        return None if self.max_duration is None else parse_duration(self.max_duration)

    @property
    def is_run(self) -> bool:
        """A run budget: its window is ``session:<idle>``."""
        return self.window.startswith("session:")

    @model_validator(mode="after")
    def _run_fields(self) -> "Budget":
        run_only = [f for f in ("max_requests", "loop_guard", "downgrade", "final_reserve", "max_total_tokens",
                                "max_duration") if getattr(self, f)]
        run_only += [f for f in ("loop_counts", "when") if f in self.model_fields_set]
        if self.is_run and not self.scope.startswith("session:"):
            raise ValueError(f"window {self.window!r} is a run's window: it needs a session scope (scope: session:*)")
        if run_only and not self.is_run:
            raise ValueError(f"{', '.join(run_only)} apply to run budgets only: use scope: session:* "
                             "with window: session:<idle time>, e.g. session:30m")
        if "loop_counts" in self.model_fields_set and self.loop_guard is None:
            raise ValueError("loop_counts says what the loop guard counts: set loop_guard (the count it refuses at) too")
        if len(set(self.loop_counts)) != len(self.loop_counts):
            raise ValueError(f"loop_counts must not repeat an entry, got {list(self.loop_counts)}")
        ats = [step.at for step in self.downgrade]
        if ats != sorted(set(ats)):
            raise ValueError("downgrade steps must be in ascending, distinct 'at' order")
        return self

    @field_validator("max_duration")
    @classmethod
    def _duration(cls, v: str | None) -> str | None:
        if v is not None:
            parse_duration(v)
        return v

    @field_validator("scope")
    @classmethod
    def _scope(cls, v: str, info: ValidationInfo) -> str:
        parse_scope(v, _scopes(info))
        return v

    @model_validator(mode="after")
    def _resolve_kind(self, info: ValidationInfo) -> "Budget":
        kind, _ = parse_scope(self.scope)
        self._kind = None if kind == "global" else _scopes(info)[kind]
        return self

    @field_validator("window")
    @classmethod
    def _window(cls, v: str) -> str:
        parse_window(v)
        return v

    @field_validator("alert_at")
    @classmethod
    def _alert_at(cls, v: list[float]) -> list[float]:
        bad = [x for x in v if not (0 < x <= 1)]
        if bad:
            raise ValueError(f"alert_at values must be fractions in (0, 1], got {bad}")
        return sorted(set(v))

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and (not v or "|" in v):
            raise ValueError(f"name must be non-empty and must not contain '|', got {v!r}")
        return v

    def budget_id(self, index: int) -> str:
        """Stable counter prefix: the name if given, else the position ``b<i>``.

        Naming a budget keeps its spend when budgets are reordered.
        """
        return self.name if self.name is not None else f"b{index}"


def _scopes(info: ValidationInfo) -> ScopeRegistry:
    context = info.context if isinstance(info.context, dict) else {}
    return context.get("scopes") or BUILTIN


@dataclass(frozen=True)
class BudgetBucket:
    """A ledger bucket together with the budget and window it came from."""

    budget: Budget
    bucket: Bucket
    scope_value: str | None  # the concrete user/tag/... (None for global)
    window_start: datetime | None  # None for rolling and session windows
    resets_at: datetime | None  # next window start; None for rolling and session windows
    #: what the bucket enforces: ``cap`` (the budget's dollars), or for a run budget ``max_requests``
    #: (its request count) or ``loop`` (one prompt's count); a refusal names it
    rule: str = "cap"
    #: a loop counter's subject, as a refusal names it (``the same tool call search(args sha256:...)``);
    #: None for the whole prompt and for the other buckets
    what: str | None = None


def _values(budget: Budget, kind: str, value: str | None, request: RouteRequest,
            candidate: Candidate | None) -> tuple[str, ...]:
    """The scope values of the request this scope selects (empty: not covered)."""
    if kind == "global":
        return ("global",)
    have = budget.scope_kind.read(request, candidate)  # type: ignore[union-attr]
    if value == "*":
        return have
    return (value,) if value in have else ()


def _esc(s: str) -> str:
    """Keep ``|`` a safe separator whatever a user id contains."""
    return s.replace("%", "%25").replace("|", "%7C")


def _unesc(s: str) -> str:
    return s.replace("%7C", "|").replace("%25", "%")


# -- the bucket key: ``<budget id>|<scope>|<window>``, written and read only here ------------------


def scope_key(kind: str, value: str | None) -> str:
    """The scope part of a bucket key: ``global`` or ``<kind>:<escaped value>``."""
    return "global" if kind == "global" else f"{kind}:{_esc(value or '')}"


def bucket_key(budget_id: str, kind: str, value: str | None, window_key: str) -> str:
    """The ledger key of one budget's counter for one scope value in one window."""
    return f"{_esc(budget_id)}|{scope_key(kind, value)}|{window_key}"


def split_bucket_key(key: str) -> tuple[str, str, str] | None:
    """``(budget id, scope, window)`` of a bucket key (unescaped), or None if it is not one."""
    parts = key.split("|")
    if len(parts) < 3:
        return None
    return _unesc(parts[0]), _unesc(parts[1]), "|".join(parts[2:])


def window_key(window: str, now: datetime, tz: str | ZoneInfo = "UTC") -> tuple[str, datetime | None, datetime | None]:
    """The window part of a bucket key at ``now``, with the calendar window's start and end
    (``None`` for a rolling window: one counter, read over the trailing span)."""
    wkind, _ = parse_window(window)
    if wkind in ("rolling", "session"):
        return window, None, None
    start, end, label = window_bounds(wkind, now, tz)
    return f"{wkind}|{label}", start, end


def _local_midnight(d: date, tz: ZoneInfo) -> datetime:
    # fold=0: for an ambiguous/nonexistent local midnight, PEP 495 picks the
    # pre-transition offset, i.e. the first instant of the local day.
    return datetime(d.year, d.month, d.day, tzinfo=tz)


def window_bounds(window: str, now: datetime, tz: str | ZoneInfo = "UTC") -> tuple[datetime, datetime, str]:
    """(start, next start, label) of the calendar window containing ``now``.

    Both datetimes are aware, in ``tz``. Day/week/month boundaries are local
    midnights, so a DST day is 23 or 25 hours long. Hour labels carry the UTC
    offset so the repeated hour of a DST fall-back gets its own bucket.
    """
    zone = _zone(tz)
    local = _aware(now).astimezone(zone)
    if window == "hour":
        start = local.replace(minute=0, second=0, microsecond=0)
        end = (start.astimezone(timezone.utc) + timedelta(hours=1)).astimezone(zone)
        return start, end, start.strftime("%Y-%m-%dT%H%z")
    if window == "day":
        d = local.date()
        return _local_midnight(d, zone), _local_midnight(d + timedelta(days=1), zone), d.isoformat()
    if window == "week":
        monday = local.date() - timedelta(days=local.weekday())
        iso = monday.isocalendar()
        return (_local_midnight(monday, zone), _local_midnight(monday + timedelta(days=7), zone),
                f"{iso.year}-W{iso.week:02d}")
    if window == "month":
        first = local.date().replace(day=1)
        nxt = date(first.year + (first.month == 12), first.month % 12 + 1, 1)
        return _local_midnight(first, zone), _local_midnight(nxt, zone), first.strftime("%Y-%m")
    raise ValueError(f"not a calendar window: {window!r}")


def buckets_for(
    budget: Budget,
    request: RouteRequest,
    candidate: Candidate | None,
    now: datetime,
    tz: str | ZoneInfo = "UTC",
    index: int = 0,
    gc_margin_s: float = DEFAULT_GC_MARGIN_S,
) -> list[BudgetBucket]:
    """The bucket(s) one budget assigns to a request (``[]`` if not covered).

    Usually zero or one; ``tag:*`` gives one per tag of the request. A run budget
    (``window: session:<idle>``) gives its dollar bucket and its request counter (``rule``
    ``max_requests``; track-only without ``max_requests``, so the run's requests can be read). The
    counts refuse whatever ``on_exceed`` says: it is about the dollars;
    the loop guard's per-prompt counter depends on the prompt, see :func:`loop_bucket`.
    """
    kind, value = parse_scope(budget.scope)
    wkind, rolling_s = parse_window(budget.window)
    values = _values(budget, kind, value, request, candidate)
    if not values:
        return []
    enforce = budget.on_exceed == "block"
    wkey, start, end = window_key(budget.window, now, tz)
    if wkind == "session":
        out = []
        for v in values:
            key = bucket_key(budget.budget_id(index), kind, v, wkey)
            out.append(BudgetBucket(budget, Bucket(key, budget.limit_usd, enforce, idle_s=rolling_s), v, None, None))
            out.append(BudgetBucket(
                budget, Bucket(f"{key}|requests", budget.max_requests, budget.max_requests is not None,
                               idle_s=rolling_s, counts=True, max_age_s=budget.max_duration_s), v, None, None,
                rule="max_requests"))
        return out
    # a calendar window's counter is dropped some time after it ends; a rolling one is read over its span
    timing = {"rolling_s": rolling_s} if wkind == "rolling" else {"expires_at": end.timestamp() + gc_margin_s}
    out = []
    for v in values:
        bucket = Bucket(bucket_key(budget.budget_id(index), kind, v, wkey), budget.limit_usd, enforce, **timing)
        out.append(BudgetBucket(budget, bucket, None if kind == "global" else v, start, end))
    return out


def is_counter_key(key: str) -> bool:
    """Whether a bucket key is a run budget's request, token or loop counter (it counts requests
    or tokens, not dollars: reports of spend leave it out)."""
    tail = key.rsplit("|", 1)[-1]
    return tail in ("requests", "tokens") or tail.startswith("loop:")


def token_bucket(money: BudgetBucket, bound: int) -> BudgetBucket:
    """A run's token counter, as a request of ``bound`` tokens at most (its prompt and every
    output token it may produce) meets it: reserves the bound, settles what the answer used;
    refuses once the run's tokens would pass ``max_total_tokens``. Track-only without one."""
    budget = money.budget
    limit = budget.max_total_tokens
    bucket = Bucket(f"{money.bucket.key}|tokens", limit, limit is not None, idle_s=money.bucket.idle_s,
                    counts=True, units=max(0, min(int(bound), 10**9)))
    return BudgetBucket(budget, bucket, money.scope_value, None, None, rule="tokens")


def loop_bucket(money: BudgetBucket, prompt_hash: str, what: str | None = None) -> BudgetBucket:
    """The loop guard's counter of one prompt (or one tool call, tool result or output: ``what``
    names it, the key is its ``runs.LoopMark.key``) in one run: refuses the ``loop_guard``-th send."""
    budget = money.budget
    assert budget.loop_guard is not None
    bucket = Bucket(f"{money.bucket.key}|loop:{prompt_hash}", budget.loop_guard - 1, True,
                    idle_s=money.bucket.idle_s, counts=True)
    return BudgetBucket(budget, bucket, money.scope_value, None, None, rule="loop", what=what)


def all_buckets(
    budgets: Sequence[Budget],
    request: RouteRequest,
    candidate: Candidate | None,
    now: datetime,
    tz: str | ZoneInfo = "UTC",
    gc_margin_s: float = DEFAULT_GC_MARGIN_S,
) -> list[BudgetBucket]:
    """Buckets of every budget a request falls under, in policy order.

    Raises ValueError if two budgets would share a counter (duplicate names),
    since one reservation would then be counted twice on it.
    """
    out: list[BudgetBucket] = []
    seen: set[str] = set()
    for i, b in enumerate(budgets):
        for bb in buckets_for(b, request, candidate, now, tz, i, gc_margin_s):
            if bb.bucket.key in seen:
                raise ValueError(f"two budgets map to the same counter {bb.bucket.key!r}; give them distinct names")
            seen.add(bb.bucket.key)
            out.append(bb)
    return out


def _zone(tz: str | ZoneInfo) -> ZoneInfo:
    if isinstance(tz, ZoneInfo):
        return tz
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise ValueError(f"unknown IANA time zone {tz!r}") from e


def _aware(now: datetime) -> datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime (pass the clock explicitly, e.g. datetime.now(UTC))")
    return now
