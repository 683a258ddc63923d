"""``litellm-payg report``: where the money went, from the real spend ledger.

Reads ``Ledger.records()`` (every settled or expired charge, with its deployment, model, provider,
group, user, team and the budget buckets it counted against) and prints spend per day, per
deployment, per provider and per budget scope. Given the policy, it also shows each budget's use
in its current window (read with ``Ledger.usage``, in-flight reservations included) and a burn-rate
forecast of when the limit will be hit.

``--html FILE`` writes one self-contained file (inline SVG, no script, no network): spend over time
stacked by model, and budget use against limits.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from litellm_payg.core.errors import PaygError
from litellm_payg.tools.money import usd

PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac")


class ReportError(PaygError):
    """Bad ``--since``, an unreadable ledger URL, ..."""


_SINCE = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(value: str, now: float) -> float:
    """``30d``, ``12h``, ``2w`` (relative) or an ISO date/time (absolute) -> epoch seconds."""
    m = _SINCE.match(value.strip())
    if m:
        return now - float(m.group(1)) * _UNIT[m.group(2)]
    try:
        dt = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ReportError(f"--since {value!r}: expected e.g. 30d, 12h, 2w or an ISO date like 2025-01-01") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


@dataclass
class BudgetUse:
    budget: str
    scope: str
    window: str
    on_exceed: str
    limit_usd: float
    spent_usd: float
    reserved_usd: float
    window_start: float | None
    resets_at: float | None
    rate_usd_per_day: float
    forecast: str
    hit_at: float | None
    projected_usd: float | None

    @property
    def used(self) -> float:
        return (self.spent_usd + self.reserved_usd) / self.limit_usd if self.limit_usd else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "budget": self.budget, "scope": self.scope, "window": self.window, "on_exceed": self.on_exceed,
            "limit_usd": self.limit_usd, "spent_usd": self.spent_usd, "reserved_usd": self.reserved_usd,
            "used_fraction": self.used, "window_start": _iso(self.window_start), "resets_at": _iso(self.resets_at),
            "burn_rate_usd_per_day": self.rate_usd_per_day, "forecast": self.forecast, "hit_at": _iso(self.hit_at),
            "projected_usd": self.projected_usd,
        }


@dataclass
class Report:
    ledger: str
    since: float
    now: float
    tz: str
    records: int
    total_usd: float
    by_day: dict[str, dict[str, float]]  # day -> model -> usd
    by_deployment: list[dict[str, Any]]
    by_provider: dict[str, float]
    by_scope: list[dict[str, Any]]
    budgets: list[BudgetUse] = field(default_factory=list)
    #: the most expensive runs (records with a session id), dearest first: what a runaway looks like
    top_runs: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ledger": self.ledger, "since": _iso(self.since), "now": _iso(self.now), "timezone": self.tz,
            "records": self.records, "total_usd": self.total_usd,
            "by_day": self.by_day, "by_deployment": self.by_deployment, "by_provider": self.by_provider,
            "by_budget_scope": self.by_scope, "budgets": [b.as_dict() for b in self.budgets],
            "top_runs": self.top_runs,
        }


#: how many of the most expensive runs a report lists
TOP_RUNS = 10


def build_report(ledger: Any, policy: Any = None, since: float | None = None, now: float | None = None) -> Report:
    """Aggregate a ledger's records (a Ledger or a URL) since ``since``; budgets need ``policy``."""
    from zoneinfo import ZoneInfo

    from litellm_payg.core.budgets import is_counter_key, split_bucket_key
    from litellm_payg.stores.ledger import open_ledger
    from litellm_payg.stores.ledger.base import LedgerError

    now = time.time() if now is None else now
    since = now - 30 * 86400 if since is None else since
    owned = isinstance(ledger, str)
    try:
        led = open_ledger(ledger, must_exist=True) if owned else ledger
    except LedgerError as exc:
        raise ReportError(str(exc)) from None
    try:
        records = led.records(since=since)
        tz = policy.timezone if policy is not None else "UTC"
        zone = ZoneInfo(tz)
        by_day: dict[str, dict[str, float]] = {}
        deps: dict[str, dict[str, Any]] = {}
        providers: dict[str, list[float]] = {}
        scopes: dict[tuple[str, str, str], list[float]] = {}
        runs: dict[str, dict[str, Any]] = {}
        for r in records:
            a = r.attrs or {}
            if a.get("session"):
                run = runs.setdefault(str(a["session"]), {"session": str(a["session"]), "requests": 0, "parts": [],
                                                          "first": r.ts, "last": r.ts, "models": {}})
                run["requests"] += 1
                run["parts"].append(r.amount_usd)
                run["first"], run["last"] = min(run["first"], r.ts), max(run["last"], r.ts)
                m = str(a.get("model") or "unknown")
                run["models"][m] = run["models"].get(m, 0) + 1
            model = str(a.get("model") or "unknown")
            day = datetime.fromtimestamp(r.ts, zone).date().isoformat()
            by_day.setdefault(day, {})
            by_day[day][model] = by_day[day].get(model, 0.0) + r.amount_usd
            dep = str(a.get("deployment") or "unknown")
            row = deps.setdefault(dep, {"deployment": dep, "model": model, "provider": a.get("provider"), "requests": 0, "parts": []})
            row["requests"] += 1
            row["parts"].append(r.amount_usd)
            providers.setdefault(str(a.get("provider") or "unknown"), []).append(r.amount_usd)
            for key in r.buckets:
                split = split_bucket_key(key)
                if split is not None and not is_counter_key(key):  # a run's request counters count no dollars
                    scopes.setdefault(split, []).append(r.amount_usd)
        by_deployment = sorted(
            ({k: v for k, v in row.items() if k != "parts"} | {"cost_usd": math.fsum(row["parts"])} for row in deps.values()),
            key=lambda x: (-x["cost_usd"], x["deployment"]),
        )
        report = Report(
            ledger=getattr(led, "url", str(ledger)),
            since=since,
            now=now,
            tz=tz,
            records=len(records),
            total_usd=math.fsum(r.amount_usd for r in records),
            by_day=dict(sorted(by_day.items())),
            by_deployment=by_deployment,
            by_provider={k: math.fsum(v) for k, v in sorted(providers.items())},
            by_scope=[
                {"budget": b, "scope": s, "window": w, "requests": len(v), "cost_usd": math.fsum(v)}
                for (b, s, w), v in sorted(scopes.items())
            ],
        )
        report.top_runs = sorted(
            ({"session": run["session"], "requests": run["requests"], "cost_usd": math.fsum(run["parts"]),
              "first": _iso(run["first"]), "last": _iso(run["last"]), "models": run["models"]} for run in runs.values()),
            key=lambda x: (-x["cost_usd"], x["session"]),
        )[:TOP_RUNS]
        if policy is not None:
            report.budgets = budget_uses(led, policy, records, now)
        return report
    except LedgerError as exc:
        raise ReportError(f"ledger {getattr(led, 'url', ledger)}: {exc}") from None
    finally:
        if owned:
            led.close()


def budget_uses(ledger: Any, policy: Any, records: Sequence[Any], now: float) -> list[BudgetUse]:
    """Each budget's current window per scope value seen in the records (global always shown)."""
    from litellm_payg.core.budgets import bucket_key, parse_scope, parse_window, scope_key, split_bucket_key, window_key
    from litellm_payg.stores.ledger.base import Bucket

    out: list[BudgetUse] = []
    when = datetime.fromtimestamp(now, timezone.utc)
    for i, budget in enumerate(policy.budgets):
        if budget.is_run:
            continue  # one counter per run, gone once the run is idle: nothing to forecast (budget-status lists them)
        kind, value = parse_scope(budget.scope)
        _, rolling_s = parse_window(budget.window)
        suffix, s, e = window_key(budget.window, when, policy.timezone)
        if s is None or e is None:  # rolling
            start, resets = now - float(rolling_s), None  # type: ignore[arg-type]
        else:
            start, resets = s.timestamp(), e.timestamp()
        keys: dict[str, str] = {}
        for r in records:
            for key in r.buckets:
                split = split_bucket_key(key)
                if split is not None and split[0] == budget.budget_id(i) and split[2] == suffix:
                    keys[key] = split[1]
        if kind == "global" or (value and value != "*"):
            keys.setdefault(bucket_key(budget.budget_id(i), kind, value, suffix), scope_key(kind, value))
        buckets = [Bucket(k, budget.limit_usd, False, rolling_s=rolling_s) for k in keys]
        usage = ledger.usage(buckets, now=now) if buckets else {}
        for key, scope in sorted(keys.items()):
            u = usage[key]
            in_window = [r for r in records if key in r.buckets and r.ts >= start]
            out.append(_forecast(budget, budget.budget_id(i), scope, u.spent_usd, u.reserved_usd, start, resets, rolling_s, in_window, now))
    return out


def _forecast(budget: Any, label: str, scope: str, spent: float, reserved: float, start: float, resets: float | None,
              rolling_s: float | None, in_window: Sequence[Any], now: float) -> BudgetUse:
    limit = budget.limit_usd
    used = spent + reserved
    hit_at = projected = None
    if rolling_s is None:
        # calendar window: the window's average burn rate so far, extrapolated to its end
        elapsed = max(now - start, 1.0)
        rate = spent / elapsed
        projected = rate * (float(resets) - start)  # type: ignore[arg-type]
        if used >= limit:
            forecast = "limit reached"
            hit_at = min((r.ts for r in _cumulative_hit(in_window, limit)), default=now)
        elif rate <= 0:
            forecast = "no spend yet in this window"
        else:
            eta = now + (limit - used) / rate
            if eta < float(resets):  # type: ignore[arg-type]
                hit_at = eta
                forecast = f"at this rate the limit is hit at {_iso(eta)}, before the window resets at {_iso(resets)}"
            else:
                forecast = f"at this rate {usd(projected)} by the reset at {_iso(resets)} ({projected / limit:.0%} of the limit)"
    else:
        # rolling window: the rate of the last quarter window decides where the rolling total heads
        recent_span = rolling_s / 4
        recent = math.fsum(r.amount_usd for r in in_window if r.ts >= now - recent_span)
        rate = recent / recent_span
        projected = rate * rolling_s
        if used >= limit:
            forecast = "limit reached"
            hit_at = now
        elif rate <= 0:
            forecast = "no recent spend"
        elif projected > limit:
            older_rate = max(0.0, (spent - recent) / max(rolling_s - recent_span, 1.0))
            climb = rate - older_rate
            hit_at = now + (limit - used) / climb if climb > 0 else None
            forecast = (f"at the last {_span(recent_span)}'s rate the rolling total heads to {usd(projected)} "
                        f"(over the limit)" + (f"; hit around {_iso(hit_at)}" if hit_at else ""))
        else:
            forecast = f"at the last {_span(recent_span)}'s rate the rolling total heads to {usd(projected)} ({projected / limit:.0%})"
    return BudgetUse(
        budget=label, scope=scope, window=budget.window, on_exceed=budget.on_exceed, limit_usd=limit,
        spent_usd=spent, reserved_usd=reserved, window_start=start if rolling_s is None else None,
        resets_at=resets, rate_usd_per_day=rate * 86400, forecast=forecast, hit_at=hit_at, projected_usd=projected,
    )


def _cumulative_hit(records: Sequence[Any], limit: float) -> list[Any]:
    total = 0.0
    for r in sorted(records, key=lambda r: r.ts):
        total += r.amount_usd
        if total >= limit:
            return [r]
    return []


def _span(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


# -- text ---------------------------------------------------------------------------------------


def format_report(report: Report) -> str:
    out = [
        f"litellm-payg report: {report.ledger}, since {_iso(report.since)} ({report.records:,} charges, total {usd(report.total_usd)})",
        "",
        "Spend per day (" + report.tz + "):",
    ]
    for day, models in report.by_day.items():
        detail = ", ".join(f"{m} {usd(v)}" for m, v in sorted(models.items(), key=lambda kv: -kv[1]))
        out.append(f"  {day}  {usd(math.fsum(models.values())):>14}   {detail}")
    out += ["", "Spend per deployment:"]
    for r in report.by_deployment:
        out.append(f"  {r['deployment'][:36]:<36} {str(r['model'])[:34]:<34} {r['requests']:>8,} req  {usd(r['cost_usd']):>14}")
    out += ["", "Spend per provider:"]
    for p, v in report.by_provider.items():
        out.append(f"  {p:<36} {usd(v):>14}")
    out += ["", "Spend per budget scope (ledger buckets):"]
    if not report.by_scope:
        out.append("  (no charge counted against a budget)")
    for s in report.by_scope:
        out.append(f"  {s['budget']:<16} {s['scope']:<28} {s['window']:<24} {s['requests']:>8,} req  {usd(s['cost_usd']):>14}")
    if report.top_runs:
        out += ["", f"Most expensive runs (session ids; top {TOP_RUNS}):"]
        for run in report.top_runs:
            models = ", ".join(f"{m} x{n}" for m, n in sorted(run["models"].items(), key=lambda kv: -kv[1]))
            out.append(f"  {run['session'][:36]:<36} {run['requests']:>8,} req  {usd(run['cost_usd']):>14}  "
                       f"{run['first']} .. {run['last']}  {models}")
    if report.budgets:
        out += ["", "Budgets (current window):"]
        for b in report.budgets:
            out.append(
                f"  {b.budget:<16} {b.scope:<24} {b.window:<12} {usd(b.spent_usd + b.reserved_usd)} of {usd(b.limit_usd)} "
                f"({b.used:.1%}, {b.on_exceed}); burn {usd(b.rate_usd_per_day)}/day; {b.forecast}"
            )
    return "\n".join(out)


# -- HTML (shared with simulate) ----------------------------------------------------------------


def _e(s: Any) -> str:
    return html.escape(str(s), quote=True)


def html_page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{_e(title)}</title><style>"
        "body{font-family:sans-serif;margin:24px;color:#222;background:#fff}"
        "table{border-collapse:collapse;margin:8px 0 16px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}th{background:#eee}svg{display:block;margin:8px 0}"
        ".legend span{display:inline-block;margin-right:14px}.legend i{display:inline-block;width:12px;height:12px;margin-right:4px}"
        "</style></head><body>\n" + body + "\n</body></html>\n"
    )


def html_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _ticks(vmax: float) -> list[float]:
    if vmax <= 0:
        return [0.0]
    step = 10 ** math.floor(math.log10(vmax))
    for m in (1, 2, 5, 10):
        if vmax / (step * m) <= 5:
            step *= m
            break
    return [step * i for i in range(int(vmax / step) + 2) if step * i <= vmax * 1.0001 + step]


def bar_chart_svg(chart_id: str, bars: Sequence[tuple[str, float]], plot_width: int = 460,
                  marks: Mapping[int, str] | None = None) -> str:
    """Horizontal bars, one per (label, USD). ``marks`` (bar index -> words) flags bars that are not
    like for like, e.g. a baseline that misses the policy's quality bar: such a bar is drawn hatched
    in grey and its words are written after its amount, so a cheap bar cannot pass for a better policy."""
    marks = marks or {}
    row_h = 26
    right = 90 + 7 * max((len(m) + 3 for m in marks.values()), default=0)  # the amount, then the words
    left = min(520, 16 + 7 * max((len(label) for label, _ in bars), default=10))
    width, h = left + plot_width + right, row_h * len(bars) + 30 + (22 if marks else 0)
    vmax = max([v for _, v in bars] + [1e-12])
    scale = plot_width / vmax
    parts = [f'<svg id="{_e(chart_id)}" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{h}" role="img">']
    if marks:
        parts.append(f'<defs><pattern id="{_e(chart_id)}-hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
                     'patternTransform="rotate(45)"><rect width="6" height="6" fill="#d9d9d9"/>'
                     '<line x1="0" y1="0" x2="0" y2="6" stroke="#777" stroke-width="3"/></pattern></defs>')
    for i, (label, value) in enumerate(bars):
        y = 10 + i * row_h
        w = max(1.0, value * scale)
        mark = marks.get(i)
        fill = f"url(#{_e(chart_id)}-hatch)" if mark else PALETTE[i % len(PALETTE)]
        cls = "bar missed" if mark else "bar"
        note = f" ({mark})" if mark else ""
        parts.append(f'<text x="{left - 8}" y="{y + 16}" text-anchor="end" font-size="12">{_e(label[:72])}</text>')
        parts.append(f'<rect id="{_e(chart_id)}-bar-{i}" class="{cls}" x="{left}" y="{y}" width="{w:.1f}" height="{row_h - 6}" '
                     f'fill="{fill}"><title>{_e(label)}: {_e(usd(value))}{_e(note)}</title></rect>')
        parts.append(f'<text x="{left + w + 6:.1f}" y="{y + 16}" font-size="12">{_e(usd(value))}'
                     + (f'<tspan class="mark" fill="#b00" font-weight="bold">{_e(note)}</tspan>' if mark else "") + "</text>")
    if marks:
        y = 10 + len(bars) * row_h + 4
        parts.append(f'<rect x="{left}" y="{y}" width="14" height="14" fill="url(#{_e(chart_id)}-hatch)"/>'
                     f'<text x="{left + 20}" y="{y + 12}" font-size="12">hatched: not like for like (see the words after the amount)</text>')
    parts.append("</svg>")
    return "".join(parts)


def stacked_bars_svg(chart_id: str, by_day: Mapping[str, Mapping[str, float]], width: int = 1100, height: int = 380) -> str:
    """Spend over time: one column per day, stacked by model, with a y axis in USD and a legend."""
    days = list(by_day)
    models = sorted({m for v in by_day.values() for m in v}, key=lambda m: -sum(by_day[d].get(m, 0.0) for d in days))
    color = {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(models)}
    left, bottom, top = 80, 60, 20
    plot_w, plot_h = width - left - 20, height - bottom - top
    totals = [sum(by_day[d].values()) for d in days]
    vmax = max(totals + [1e-12])
    ticks = _ticks(vmax)
    vmax = max(vmax, ticks[-1])
    slot = plot_w / max(1, len(days))
    bar_w = max(2.0, slot * 0.7)
    parts = [f'<svg id="{_e(chart_id)}" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">']
    for t in ticks:
        y = top + plot_h - t / vmax * plot_h
        parts.append(f'<line x1="{left}" x2="{width - 20}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{usd(t)}</text>')
    parts.append(f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + plot_h}" stroke="#444"/>')
    for i, d in enumerate(days):
        x = left + i * slot + (slot - bar_w) / 2
        y = top + plot_h
        for j, m in enumerate(models):
            v = by_day[d].get(m, 0.0)
            if v <= 0:
                continue
            h = v / vmax * plot_h
            y -= h
            parts.append(f'<rect id="{_e(chart_id)}-{_e(d)}-{j}" class="seg" x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{max(h, 0.5):.1f}" fill="{color[m]}"><title>{_e(d)} {_e(m)}: {usd(v)}</title></rect>')
        if len(days) <= 31 or i % max(1, len(days) // 15) == 0:
            parts.append(f'<text x="{x + bar_w / 2:.1f}" y="{top + plot_h + 14}" text-anchor="middle" font-size="10">{_e(d[5:])}</text>')
    ly = height - 22
    lx = left
    for m in models:
        parts.append(f'<rect class="legend-key" x="{lx}" y="{ly}" width="12" height="12" fill="{color[m]}"/>')
        parts.append(f'<text x="{lx + 16}" y="{ly + 11}" font-size="11">{_e(m)}</text>')
        lx += 24 + 7 * len(m)
    parts.append("</svg>")
    return "".join(parts)


def budget_chart_svg(chart_id: str, uses: Sequence[BudgetUse], width: int = 1100) -> str:
    """Budget use against limits: a grey track per budget scope (the limit) and its use in colour."""
    row_h, left, right = 34, 360, 200
    h = row_h * max(1, len(uses)) + 20
    track = width - left - right
    parts = [f'<svg id="{_e(chart_id)}" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{h}" role="img">']
    if not uses:
        parts.append('<text x="10" y="24" font-size="13">no budgets in the policy</text>')
    for i, u in enumerate(uses):
        y = 10 + i * row_h
        frac = min(u.used, 1.5)
        color = "#59a14f" if u.used < 0.8 else ("#edc948" if u.used < 1 else "#e15759")
        parts.append(f'<text x="{left - 8}" y="{y + 17}" text-anchor="end" font-size="12">{_e(u.budget)} {_e(u.scope)} ({_e(u.window)})</text>')
        parts.append(f'<rect id="{_e(chart_id)}-limit-{i}" class="limit" x="{left}" y="{y}" width="{track}" height="22" fill="#e6e6e6"/>')
        parts.append(f'<rect id="{_e(chart_id)}-use-{i}" class="use" x="{left}" y="{y}" width="{max(1.0, min(frac, 1.0) * track):.1f}" height="22" fill="{color}"><title>{usd(u.spent_usd + u.reserved_usd)} of {usd(u.limit_usd)}</title></rect>')
        parts.append(f'<line x1="{left + track}" x2="{left + track}" y1="{y - 3}" y2="{y + 25}" stroke="#222" stroke-width="2"/>')
        parts.append(f'<text x="{left + track + 8}" y="{y + 17}" font-size="12">{u.used:.0%} of {usd(u.limit_usd)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def write_html(report: Report, path: str) -> None:
    body = [
        "<h1>litellm-payg spend report</h1>",
        f"<p>Ledger {_e(report.ledger)}, since {_e(_iso(report.since))}: {report.records:,} charges, total {usd(report.total_usd)}.</p>",
        "<h2>Spend over time, by model</h2>",
        stacked_bars_svg("chart-spend-by-model", report.by_day),
        "<h2>Budget use against limits</h2>",
        budget_chart_svg("chart-budgets", report.budgets),
        html_table(
            ["budget", "scope", "window", "spent", "in flight", "limit", "use", "burn $/day", "forecast"],
            [[b.budget, b.scope, b.window, usd(b.spent_usd), usd(b.reserved_usd), usd(b.limit_usd), f"{b.used:.1%}",
              usd(b.rate_usd_per_day), b.forecast] for b in report.budgets],
        ),
        "<h2>Per deployment</h2>",
        html_table(["deployment", "model", "provider", "requests", "cost"],
                   [[r["deployment"], r["model"], r["provider"], f"{r['requests']:,}", usd(r['cost_usd'])] for r in report.by_deployment]),
        "<h2>Per provider</h2>",
        html_table(["provider", "cost"], [[p, usd(v)] for p, v in report.by_provider.items()]),
        "<h2>Per budget scope</h2>",
        html_table(["budget", "scope", "window", "requests", "cost"],
                   [[s["budget"], s["scope"], s["window"], f"{s['requests']:,}", usd(s['cost_usd'])] for s in report.by_scope]),
        "<h2>Most expensive runs</h2>",
        html_table(["run (session id)", "requests", "cost", "first", "last"],
                   [[r["session"], f"{r['requests']:,}", usd(r['cost_usd']), r["first"], r["last"]] for r in report.top_runs]),
    ]
    Path(path).write_text(html_page("litellm-payg spend report", "\n".join(body)), encoding="utf-8")


# -- CLI ----------------------------------------------------------------------------------------


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("report", help="spend per day, deployment, provider and budget from the ledger")
    p.add_argument("--ledger", help="ledger URL (default: the policy's ledger)")
    p.add_argument("--policy", help="the policy: budget limits, windows and time zone")
    p.add_argument("--since", default="30d", help="e.g. 30d, 12h, 2w or an ISO date (default 30d)")
    p.add_argument("--html", metavar="FILE", help="also write a self-contained HTML report with charts")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    policy = None
    if args.policy:
        from litellm_payg.policy.load import load_policy

        policy = load_policy(args.policy)
    url = args.ledger or (policy.ledger if policy is not None else None)
    if not url:
        raise ReportError("give --ledger URL (or --policy, whose ledger is used)")
    now = time.time()
    report = build_report(url, policy, since=parse_since(args.since, now), now=now)
    if args.html:
        write_html(report, args.html)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(format_report(report))
    return 0
