"""What ``litellm-payg budgets`` shows: every budget's spend, in-flight reservations, limit, use
and reset time, read from the policy's ledger for the current window.

A budget over ``*`` (``user:*``) has one counter per user; the ledger's charge history says which
users have one this window, so each is listed on its own row. A run budget's rows are its runs
(their run ids), each with its requests, tokens, when it idles out and whether an operator closed it
or granted it more (the limit shown includes the grant).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from litellm_payg.core.budgets import Budget, parse_scope, parse_window, window_bounds
from litellm_payg.stores.ledger.base import Bucket, Ledger
from litellm_payg.tools.money import usd


@dataclass(frozen=True)
class BudgetRow:
    budget: str
    scope: str
    window: str
    on_exceed: str
    spent_usd: float
    reserved_usd: float
    limit_usd: float
    resets_at: datetime | None
    #: a run (a run budget's row): its requests and tokens, when it idles out (None: not active),
    #: whether an operator closed it, and what was granted on top of the limit
    requests: int | None = None
    tokens: int | None = None
    expires_at: datetime | None = None
    closed: bool = False
    granted_usd: float = 0.0

    @property
    def used(self) -> float:
        return (self.spent_usd + self.reserved_usd) / self.limit_usd

    def as_dict(self) -> dict[str, Any]:
        out = {
            "budget": self.budget, "scope": self.scope, "window": self.window, "on_exceed": self.on_exceed,
            "spent_usd": self.spent_usd, "reserved_usd": self.reserved_usd, "limit_usd": self.limit_usd,
            "used": self.used, "resets_at": self.resets_at.isoformat() if self.resets_at else None,
        }
        if self.requests is not None:
            out.update(requests=self.requests, tokens=self.tokens, closed=self.closed, granted_usd=self.granted_usd,
                       expires_at=self.expires_at.isoformat() if self.expires_at else None)
        return out


def budget_rows(policy: Any, ledger: Ledger, now: float | None = None) -> list[BudgetRow]:
    now = time.time() if now is None else now
    ledger.expire(now)  # dead reservations are charged now, so the figures include them
    seen_keys = {key for record in ledger.records() for key in record.buckets}
    rows: list[BudgetRow] = []
    for index, budget in enumerate(policy.budgets):
        for key, scope_label, resets in _buckets(budget, index, policy.timezone, now, seen_keys):
            wkind, seconds = parse_window(budget.window)
            bucket = Bucket(key, budget.limit_usd, budget.on_exceed == "block",
                            rolling_s=seconds if wkind == "rolling" else None,
                            idle_s=seconds if wkind == "session" else None)
            if wkind == "session" and not scope_label.endswith("(no spend yet)"):
                rows.append(_run_row(budget, index, key, scope_label, bucket, ledger, now))
                continue
            usage = ledger.usage([bucket], now=now)[key]
            rows.append(BudgetRow(
                budget.budget_id(index), scope_label, budget.window, budget.on_exceed,
                usage.spent_usd, usage.reserved_usd, budget.limit_usd, resets,
            ))
    return rows


def _run_row(budget: Budget, index: int, key: str, scope_label: str, bucket: Bucket, ledger: Ledger,
             now: float) -> BudgetRow:
    """One run of a run budget: its dollars, request and token counters, read in one ledger call."""
    requests = Bucket(f"{key}|requests", None, False, idle_s=bucket.idle_s, counts=True)
    tokens = Bucket(f"{key}|tokens", None, False, idle_s=bucket.idle_s, counts=True)
    state = ledger.state([bucket, requests, tokens], now=now)
    money, counted, used = state[key], state[requests.key], state[tokens.key]
    last = counted.last_at or money.last_at
    live = counted.live or money.live
    return BudgetRow(
        budget.budget_id(index), scope_label, budget.window, budget.on_exceed, money.usage.spent_usd,
        money.usage.reserved_usd, budget.limit_usd + money.usage.granted_usd, None,
        requests=int(round(counted.usage.spent_usd + counted.usage.reserved_usd)),
        tokens=int(round(used.usage.spent_usd + used.usage.reserved_usd)),
        expires_at=datetime.fromtimestamp(last + (bucket.idle_s or 0), timezone.utc) if live and last else None,
        closed=counted.closed, granted_usd=money.usage.granted_usd,
    )


def _buckets(budget: Budget, index: int, tz: str, now: float, seen: set[str]):
    """(ledger key, concrete scope, reset instant) of every counter of ``budget`` this window."""
    kind, value = parse_scope(budget.scope)
    wkind, _ = parse_window(budget.window)
    prefix = budget.budget_id(index).replace("%", "%25").replace("|", "%7C")
    if wkind in ("rolling", "session"):
        suffix, resets = f"|{budget.window}", None
    else:
        _, end, label = window_bounds(wkind, datetime.fromtimestamp(now, timezone.utc), tz)
        suffix, resets = f"|{wkind}|{label}", end
    if kind == "global":
        return [(f"{prefix}|global{suffix}", "global", resets)]
    if value != "*":
        escaped = value.replace("%", "%25").replace("|", "%7C")
        return [(f"{prefix}|{kind}:{escaped}{suffix}", f"{kind}:{value}", resets)]
    found = []
    head = f"{prefix}|{kind}:"
    for key in sorted(seen):
        if key.startswith(head) and key.endswith(suffix):
            scope_value = key[len(head):len(key) - len(suffix)].replace("%7C", "|").replace("%25", "%")
            found.append((key, f"{kind}:{scope_value}", resets))
    return found or [(f"{head}*{suffix}", f"{kind}:* (no spend yet)", resets)]


def render(rows: list[BudgetRow]) -> str:
    header = f"{'budget':<16} {'scope':<28} {'window':<12} {'action':<9} {'spent':>12} {'in flight':>12} {'limit':>10} {'used':>7}  resets"
    lines = [header, "-" * len(header)]
    for r in rows:
        resets = r.resets_at.isoformat(timespec="minutes") if r.resets_at else "rolling"
        if r.requests is not None:  # a run: its requests, tokens, idle expiry, the operator's doing
            resets = (f"{r.requests} req, {r.tokens} tok, "
                      + (f"idle out {r.expires_at.isoformat(timespec='minutes')}" if r.expires_at else "idle (over)")
                      + (", closed" if r.closed else "") + (f", +${r.granted_usd:g} granted" if r.granted_usd else ""))
        lines.append(
            f"{r.budget[:16]:<16} {r.scope[:28]:<28} {r.window:<12} {r.on_exceed:<9} {usd(r.spent_usd):>12} "
            f"{usd(r.reserved_usd):>12} {usd(r.limit_usd):>10} {r.used:>6.1%}  {resets}"
        )
    if not rows:
        lines.append("(the policy has no budgets)")
    return "\n".join(lines)
