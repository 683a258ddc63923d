"""``litellm-payg quality POLICY``: measured quality per route x deployment (x class), and split verdicts.

Reads the evidence the policy's ledger backend keeps (``stores/evidence.py``) and the ledger's
spend records: per cell, the answers observed (``n``), the estimate and its interval at the
policy's ``quality.confidence`` (the declared quality as prior, forgetting applied as of now), the
cost per request the ledger recorded for the deployment on that route, and per route (and class)
the cheapest deployment whose lower bound clears the route's ``quality_floor`` bar.

For a route with a ``split`` rule, the answers rated with a split arm (feedback carries the arm of
the plugin's record of the answer) give a verdict per arm against the first arm
(``core/ab_verdict.py``): cost per request and per passing request with intervals, the quality
difference with an anytime-valid interval, and "promote" / "drop" / "not yet: about N more
requests per arm".

Per route, what routing on the estimates would have saved (``_saving``): the requests the ledger
saw times the difference between the cost per request of what was served and that of the cheapest
deployment whose lower bound clears the bar. ``--html`` writes the same as a page
(``quality_page.py``).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from litellm_payg.core.ab_verdict import arm_stats, verdict
from litellm_payg.core.errors import PaygError
from litellm_payg.core.quality import verdict as judge
from litellm_payg.tools.quality_words import arm_costs, cheapest_sentence, cost, difference, interval, saving_sentence


class QualityReportError(PaygError):
    """Bad arguments or an unreadable store (a message, never a traceback)."""


def _bar(policy: Any, group: str) -> float | None:
    bars = [float(s.options.min_quality) for s in policy.routes.get(group, ()) if s.name == "quality_floor"]
    return max(bars) if bars else None


def _costs(ledger_url: str) -> dict[tuple[str, str], tuple[int, float]]:
    """(route, deployment) -> (settled requests, dollars) from the ledger's spend records."""
    from litellm_payg.stores.ledger import LedgerError, open_ledger

    try:
        ledger = open_ledger(ledger_url, must_exist=True)
    except LedgerError as e:
        raise QualityReportError(str(e)) from None
    try:
        out: dict[tuple[str, str], tuple[int, float]] = {}
        for r in ledger.records():
            key = (str(r.attrs.get("group")), str(r.attrs.get("deployment")))
            n, usd = out.get(key, (0, 0.0))
            out[key] = (n + 1, usd + r.amount_usd)
        return out
    finally:
        ledger.close()


def build(policy: Any, url: str, metric: str | None = None, margin: float = 0.02, now: float | None = None) -> dict[str, Any]:
    """The report as plain data (what ``--json`` prints)."""
    from litellm_payg.runtime.quality import QualityControl
    from litellm_payg.stores.evidence import EvidenceError, open_evidence

    settings = policy.quality
    metric = metric or "valid"
    try:
        settings.kind(metric)
    except ValueError as e:
        raise QualityReportError(str(e)) from None
    now = time.time() if now is None else now
    try:
        store = open_evidence(url)
    except EvidenceError as e:
        raise QualityReportError(str(e)) from None
    try:
        quality = QualityControl(policy, store, clock=lambda: now)
        costs = _costs(url) if not url.startswith("memory") else {}
        log = store.log()
        models = {r.get("deployment_id"): r.get("model") for r in log if r.get("model")}
        routes = []
        for group in sorted(set(policy.routes) | {r["group"] for r in log}):
            quality.explore_windows[group] = 3600.0
            view = quality.view(group, now)
            if view is None:
                raise QualityReportError(f"cannot read the evidence store {url}")
            bar = _bar(policy, group)
            cells = sorted({(d, c) for (d, c, m) in view.tallies if m == metric})
            rows = []
            for dep, cls in cells:
                facts = policy.models.get(models.get(dep) or "")
                est = view.estimate(dep, facts.quality if facts else None, cls, metric)
                n_req, usd = costs.get((group, dep), (0, 0.0))
                rows.append({"deployment": dep, "model": models.get(dep), "class": cls, "n": est.n,
                             "estimate": est.mean, "lo": est.lo, "hi": est.hi,
                             "verdict": judge(est, bar) if bar is not None else None,
                             "cost_per_request": usd / n_req if n_req else None})
            cheapest = {}
            for cls in sorted({r["class"] for r in rows}):
                ok = [r for r in rows if r["class"] == cls and r["verdict"] == "meets" and r["cost_per_request"] is not None]
                if ok:
                    best = min(ok, key=lambda r: r["cost_per_request"])
                    cheapest[cls] = best["deployment"]
            routes.append({"route": group, "metric": metric, "bar": bar, "cells": rows, "cheapest_meeting_bar": cheapest,
                           "saving": _saving(policy, view, group, bar, metric, costs, models),
                           "splits": _splits(policy, group, log, metric, margin)})
        return {"confidence": settings.confidence, "half_life_s": settings.half_life_s, "routes": routes}
    finally:
        store.close()


def _saving(policy: Any, view: Any, group: str, bar: float | None, metric: str,
            costs: dict[tuple[str, str], tuple[int, float]], models: dict[Any, Any]) -> dict[str, Any] | None:
    """What routing on the estimates would have saved on a route, over the requests the ledger saw:

        requests x (cost per request served - cost per request of the cheapest deployment that meets the bar)

    ``cost per request served``: the route's dollars / its requests in the ledger's spend records;
    the cheapest deployment that meets the bar: the lowest dollars / requests among the route's
    deployments with spend records whose lower bound, on every class's evidence together, clears
    the route's bar. None when the route has no bar, no spend records, or no deployment that meets
    it. Negative when what was served was cheaper (some of it did not meet the bar)."""
    if bar is None:
        return None
    spent = {dep: nu for (g, dep), nu in costs.items() if g == group}
    requests = sum(n for n, _ in spent.values())
    if not requests:
        return None
    served = sum(usd for _, usd in spent.values()) / requests
    meeting = []
    for dep, (n, usd) in spent.items():
        facts = policy.models.get(models.get(dep) or "")
        est = view.estimate(dep, facts.quality if facts else None, "", metric)
        if n and est.n and judge(est, bar) == "meets":
            meeting.append((usd / n, dep, est.lo))
    if not meeting:
        return None
    best_cost, best, lo = min(meeting)
    return {"requests": requests, "served_cost_per_request": served, "cheapest": best, "cheapest_lo": lo,
            "cheapest_cost_per_request": best_cost, "usd": requests * (served - best_cost)}


def _splits(policy: Any, group: str, log: list[dict[str, Any]], metric: str, margin: float) -> list[dict[str, Any]]:
    rated = [r for r in log if r.get("group") == group and r.get("metric") == metric and r.get("arm")]
    if not rated:
        return []
    arms: dict[str, list[tuple[float, float]]] = {}
    for r in rated:
        arms.setdefault(str(r["arm"]), []).append((float(r["value"]), float(r.get("cost_usd") or 0.0)))
    order = [a.name or a.model for s in policy.routes.get(group, ()) if s.name == "split" for a in s.options.arms]
    names = sorted(arms, key=lambda a: (order.index(a) if a in order else len(order), a))
    control = arm_stats(names[0], arms[names[0]])
    z = 1.959963984540054
    return [verdict(control, arm_stats(name, arms[name]), metric, margin=margin).as_dict(z) for name in names[1:]]


def format_report(report: dict[str, Any]) -> str:
    h = report["half_life_s"]
    lines = [f"measured quality (confidence {report['confidence']:g}, half-life {'none' if h is None else f'{h:g}s'})"]
    for route in report["routes"]:
        bar = route["bar"]
        shown = "-" if bar is None else f"{bar:g}"
        lines += ["", f"route {route['route']}: metric {route['metric']}, bar {shown}"]
        if not route["cells"]:
            lines.append("  no evidence yet")
        else:
            lines.append(f"  {'deployment':<24} {'class':<10} {'n':>6} {'estimate':>8} {'interval':>15} {'$/request':>11}  verdict")
            for r in route["cells"]:
                lines.append(f"  {r['deployment']:<24} {r['class'] or '*':<10} {r['n']:>6} {r['estimate']:>8.3f} "
                             f"{interval(r)} {cost(r['cost_per_request']):>11}  {r['verdict'] or '-'}")
        for cls, dep in route["cheapest_meeting_bar"].items():
            lines.append(f"  {cheapest_sentence(cls, dep)}")
        if saving_sentence(route):
            lines.append(f"  {saving_sentence(route)}")
        for v in route["splits"]:
            a, b = v["a"], v["b"]
            lines.append(f"  split {b['name']} vs {a['name']}:")
            for arm in (a, b):
                lines.append(f"    {arm['name']:<20} n={arm['n']:<6} pass {arm['pass_rate']:.3f}  $/request {arm_costs(arm)[0]}  "
                             f"$/passing request {arm_costs(arm)[1]}")
            lines.append(f"    {difference(v)}")
            lines.append(f"    {v['sentence']}")
    return "\n".join(lines)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("quality", help="measured quality per route and deployment, and split verdicts")
    p.add_argument("policy", metavar="POLICY")
    p.add_argument("--ledger", help="read this ledger URL instead of the policy's")
    p.add_argument("--metric", help="the metric to show (default: valid)")
    p.add_argument("--margin", type=float, default=0.02, help="how much worse a split's new arm may be (default 0.02)")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--html", metavar="FILE", help="also write a self-contained HTML page (intervals drawn)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from litellm_payg.policy.load import load_policy

    policy = load_policy(args.policy)
    if not 0 <= args.margin < 1:
        raise QualityReportError("--margin must be in [0, 1)")
    report = build(policy, args.ledger or policy.ledger, args.metric, args.margin)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    if args.html:
        from litellm_payg.tools.quality_page import write_html

        write_html(report, args.html)
    return 0
