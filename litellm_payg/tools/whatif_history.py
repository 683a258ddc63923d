"""Served requests as history: one :class:`HistoryRow` per request, from any source, in time order.

``what-if`` (``whatif.py``) replays rows; where they come from is this module's job and
``whatif_postgres.py``'s: a JSONL export (one line per request, the format below), the plugin's own
ledger (SQLite, Redis, through ``stores.ledger``) and LiteLLM's spend logs in Postgres. Every source
yields rows lazily, so a month of a busy proxy is never held in memory.

The JSONL line (``--export-jsonl`` writes it, ``--from FILE.jsonl`` reads it)::

    {"request_id": "req-1", "start_time": "2025-01-01T00:00:00Z", "model_group": "chat",
     "model": "deepseek/deepseek-chat", "deployment": "ds-1", "prompt_tokens": 1200,
     "completion_tokens": 300, "cache_read_tokens": 0, "cache_write_tokens": 0,
     "reasoning_tokens": 0, "spend_usd": 0.000654, "user": "u1", "team": "t1", "key": "hash",
     "org": null, "end_user": null, "session": null, "tags": ["faq"], "status": "success"}

``start_time`` is ISO 8601 or seconds since the epoch; lines are in time order. ``prompt_tokens``
and ``completion_tokens`` null (or absent) mean the history has no usage for the request: it is
listed, never priced. Only ``start_time`` and ``model_group`` are required.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from litellm_payg.core.errors import PaygError


class WhatIfInputError(PaygError):
    """A history source that cannot be read: a bad URL or path, an unreachable database, a missing
    table or column, a malformed JSONL line (with its number)."""


@dataclass(frozen=True, slots=True)
class HistoryRow:
    """One request as the history recorded it."""

    request_id: str
    ts: float  # start time, seconds since the epoch
    group: str  # the model group (LiteLLM's model_name) the client asked for
    model: str  # the LiteLLM model string of the deployment that served it
    deployment: str | None  # that deployment's id, when recorded
    prompt_tokens: int | None  # None: the history has no usage for this request
    completion_tokens: int | None
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    spend_usd: float = 0.0  # what was paid
    user: str | None = None
    team: str | None = None
    key: str | None = None
    org: str | None = None
    end_user: str | None = None
    session: str | None = None
    tags: tuple[str, ...] = ()
    status: str = "success"

    def __init__(self, request_id: str, ts: float, group: str, model: str, deployment: str | None,
                 prompt_tokens: int | None, completion_tokens: int | None, cache_read_tokens: int = 0,
                 cache_write_tokens: int = 0, reasoning_tokens: int = 0, spend_usd: float = 0.0, user: str | None = None,
                 team: str | None = None, key: str | None = None, org: str | None = None, end_user: str | None = None,
                 session: str | None = None, tags: tuple[str, ...] = (), status: str = "success") -> None:
        # written out with each slot's own setter: one row is built per request read (a million for a
        # busy month), and the generated frozen __init__ (``object.__setattr__`` per field) costs twice this
        s = _SET
        s[0](self, request_id); s[1](self, ts); s[2](self, group); s[3](self, model)  # noqa: E702
        s[4](self, deployment); s[5](self, prompt_tokens); s[6](self, completion_tokens)  # noqa: E702
        s[7](self, cache_read_tokens); s[8](self, cache_write_tokens); s[9](self, reasoning_tokens)  # noqa: E702
        s[10](self, spend_usd); s[11](self, user); s[12](self, team); s[13](self, key)  # noqa: E702
        s[14](self, org); s[15](self, end_user); s[16](self, session); s[17](self, tags)  # noqa: E702
        s[18](self, status)

    @property
    def has_usage(self) -> bool:
        return self.prompt_tokens is not None and self.completion_tokens is not None and (
            self.prompt_tokens + self.completion_tokens > 0)

    def as_json(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id, "start_time": iso(self.ts), "model_group": self.group, "model": self.model,
            "deployment": self.deployment, "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
            "cache_read_tokens": self.cache_read_tokens, "cache_write_tokens": self.cache_write_tokens,
            "reasoning_tokens": self.reasoning_tokens, "spend_usd": self.spend_usd, "user": self.user, "team": self.team,
            "key": self.key, "org": self.org, "end_user": self.end_user, "session": self.session,
            "tags": list(self.tags), "status": self.status,
        }


#: each field's slot setter, in field order (``HistoryRow.__init__``)
_SET = tuple(getattr(HistoryRow, f.name).__set__ for f in fields(HistoryRow))


@dataclass(frozen=True)
class Filters:
    """What ``--since/--until/--team/--key/--model-group/--tag`` keep (None: no filter)."""

    since: float | None = None
    until: float | None = None
    team: str | None = None
    key: str | None = None
    group: str | None = None
    tag: str | None = None

    def accepts(self, row: HistoryRow) -> bool:
        return ((self.since is None or row.ts >= self.since) and (self.until is None or row.ts < self.until)
                and (self.team is None or row.team == self.team) and (self.key is None or row.key == self.key)
                and (self.group is None or row.group == self.group) and (self.tag is None or self.tag in row.tags))


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat().replace("+00:00", "Z")


def parse_time(value: Any, where: str) -> float:
    """Seconds since the epoch from an ISO 8601 string (naive = UTC) or a number."""
    if isinstance(value, bool):
        raise WhatIfInputError(f"{where}: expected a time, got {value!r}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise WhatIfInputError(f"{where}: expected a time, got {value!r}")
        return float(value)
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise WhatIfInputError(f"{where}: expected an ISO 8601 time, got {value!r}") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        return dt.timestamp()
    raise WhatIfInputError(f"{where}: expected a time, got {value!r}")


# -- JSONL --------------------------------------------------------------------------------------

_FIELDS = {"request_id", "start_time", "model_group", "model", "deployment", "prompt_tokens", "completion_tokens",
           "cache_read_tokens", "cache_write_tokens", "reasoning_tokens", "spend_usd", "user", "team", "key", "org",
           "end_user", "session", "tags", "status"}


def _opt_str(obj: dict, name: str, where: str) -> str | None:
    value = obj.get(name)
    if value is None or isinstance(value, str):
        return value or None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise WhatIfInputError(f"{where}: {name}: expected a string, got {value!r}")


def _opt_int(obj: dict, name: str, where: str, default: int | None) -> int | None:
    value = obj.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise WhatIfInputError(f"{where}: {name}: expected a whole number >= 0, got {value!r}")
    return value


def row_from_json(obj: Any, where: str) -> HistoryRow:
    """A JSONL line's object as a row; a wrong field is an error naming it and the line."""
    if not isinstance(obj, dict):
        raise WhatIfInputError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - _FIELDS)
    if unknown:
        raise WhatIfInputError(f"{where}: unknown field(s) {', '.join(unknown)}; expected some of {', '.join(sorted(_FIELDS))}")
    if "start_time" not in obj:
        raise WhatIfInputError(f"{where}: start_time is required")
    group = _opt_str(obj, "model_group", where)
    if not group:
        raise WhatIfInputError(f"{where}: model_group is required")
    spend = obj.get("spend_usd", 0.0)
    if isinstance(spend, bool) or not isinstance(spend, (int, float)) or not math.isfinite(spend) or spend < 0:
        raise WhatIfInputError(f"{where}: spend_usd: expected a number >= 0, got {spend!r}")
    tags = obj.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise WhatIfInputError(f"{where}: tags: expected a list of strings, got {tags!r}")
    return HistoryRow(
        request_id=_opt_str(obj, "request_id", where) or where,
        ts=parse_time(obj["start_time"], f"{where}: start_time"),
        group=group,
        model=_opt_str(obj, "model", where) or group,
        deployment=_opt_str(obj, "deployment", where),
        prompt_tokens=_opt_int(obj, "prompt_tokens", where, None),
        completion_tokens=_opt_int(obj, "completion_tokens", where, None),
        cache_read_tokens=_opt_int(obj, "cache_read_tokens", where, 0) or 0,
        cache_write_tokens=_opt_int(obj, "cache_write_tokens", where, 0) or 0,
        reasoning_tokens=_opt_int(obj, "reasoning_tokens", where, 0) or 0,
        spend_usd=float(spend),
        user=_opt_str(obj, "user", where), team=_opt_str(obj, "team", where), key=_opt_str(obj, "key", where),
        org=_opt_str(obj, "org", where), end_user=_opt_str(obj, "end_user", where),
        session=_opt_str(obj, "session", where), tags=tuple(tags),
        status=_opt_str(obj, "status", where) or "success",
    )


def read_jsonl(path: str, filters: Filters = Filters()) -> Iterator[HistoryRow]:
    """The rows of a JSONL export, one line at a time, in the file's (time) order."""
    p = Path(path)
    if not p.is_file():
        raise WhatIfInputError(f"{path}: no such file")
    last = -math.inf
    with p.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise WhatIfInputError(f"{where}: not JSON ({exc.msg} at column {exc.colno})") from None
            row = row_from_json(obj, where)
            if row.ts < last:
                raise WhatIfInputError(f"{where}: start_time {iso(row.ts)} is before the line above it; "
                                       "the lines must be in time order (sort them by start_time)")
            last = row.ts
            if filters.accepts(row):
                yield row


# -- the plugin's own ledger --------------------------------------------------------------------


def read_ledger(url: str, filters: Filters = Filters()) -> Iterator[HistoryRow]:
    """The settled charges of the plugin's own ledger (``stores.ledger``: SQLite, Redis), in time order.

    A ledger record carries the charge and every scope (deployment, model, group, user, team, key,
    tags, session) and, for an answer the adapter settled, the token counts it was charged for
    (``adapter/charges.Charge.attrs``: ``prompt_tokens``, ``completion_tokens``, and the cache reads
    and writes and reasoning tokens when there were any). A record without ``prompt_tokens`` and
    ``completion_tokens`` (an older one, a cache hit, a failed attempt) has no usage to reprice and
    is listed, not priced. The ledger
    classes return a source's records as one list (they have no cursor), so this source is held in
    memory, unlike Postgres and JSONL."""
    from litellm_payg.stores.ledger import LedgerError, open_ledger

    try:
        with open_ledger(url, must_exist=True) as ledger:
            records = ledger.records(since=filters.since)
    except LedgerError as exc:
        raise WhatIfInputError(f"cannot read the ledger {url}: {exc}") from None
    for r in records:
        a = r.attrs or {}
        if a.get("kind", "settled") not in ("settled", "expired"):
            continue
        group = a.get("group")
        if not group:
            continue  # a charge outside any model group (a test record, an alert claim): nothing to route
        tags = a.get("tag") or a.get("tags") or ()
        row = HistoryRow(
            request_id=str(a.get("trace_id") or r.reservation_id), ts=float(r.ts), group=str(group),
            model=str(a.get("model") or group), deployment=a.get("deployment"),
            prompt_tokens=_int_or_none(a.get("prompt_tokens")), completion_tokens=_int_or_none(a.get("completion_tokens")),
            cache_read_tokens=_int_or_none(a.get("cache_read_tokens")) or 0,
            cache_write_tokens=_int_or_none(a.get("cache_write_tokens")) or 0,
            reasoning_tokens=_int_or_none(a.get("reasoning_tokens")) or 0,
            spend_usd=float(r.amount_usd), user=a.get("user"), team=a.get("team"), key=a.get("key"), org=a.get("org"),
            end_user=a.get("end_user"), session=a.get("session"),
            tags=tuple(tags) if isinstance(tags, (list, tuple)) else (str(tags),),
        )
        if filters.accepts(row):
            yield row


def _int_or_none(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None
