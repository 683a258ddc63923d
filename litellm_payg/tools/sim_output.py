"""What ``litellm-payg simulate`` prints and writes: the table, the CSV and the HTML page.

The table and the page are built from the same words: the budget hits sentence
(:func:`budget_hits`), the baselines with their quality-bar marks (:func:`baseline_rows`) and the
runs comparison (``sim_runs.comparison_*``), so a chart cannot say less than the table (a cheap
baseline that misses the policy's quality bar is hatched and says so; the run budget's downgrades
are counted where the page says "downgraded"). Every amount goes through ``money.usd``.

The result is read by duck typing (``sim_result.Result``): this module does not import the
simulation, which imports it.
"""

from __future__ import annotations

import csv
import html
import io
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from litellm_payg.tools import sim_runs
from litellm_payg.tools.money import usd
from litellm_payg.tools.report import bar_chart_svg, html_page, html_table


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat().replace("+00:00", "Z")


def _esc(s: Any) -> str:
    return html.escape(str(s))


# -- the words the table and the page share -----------------------------------------------------


def budget_hits(result: Any) -> list[str]:
    """The budget hits: a summary sentence, then a line per budget that blocked or downgraded."""
    blocks = sum(result.blocked.values())
    downs = sum(result.downgraded.values())
    out = [f"Budget hits: {blocks:,} request(s) blocked, {downs:,} downgraded, {result.no_deployment:,} with no deployment left"
           + (f"; {result.run_downgrades:,} routed by a run budget's downgrade steps" if result.run_downgrades else "")]
    for name, n in sorted(result.blocked.items()):
        out.append(f"blocked by {name!r}: {n:,} (first at {_iso(result.first_block[name])})")
    for name, n in sorted(result.downgraded.items()):
        out.append(f"downgraded by {name!r}: {n:,}")
    return out


def bar_missed(baseline: dict[str, Any]) -> int:
    """Requests a baseline sends to a deployment below their quality bar (0: none, or not known)."""
    meets = baseline.get("meets_quality_bar_for")
    return 0 if meets is None else max(0, baseline["requests"] - meets)


def baseline_rows(result: Any) -> list[dict[str, Any]]:
    """The policy and each baseline: label, requests, cost, ratio to the policy and the requests
    below their quality bar (``missed``); the oracle over the served requests when some were not."""
    rows = [{"label": f"policy ({Path(result.policy_source).name})", "requests": result.served_requests,
             "cost_usd": result.policy_cost, "vs": "1.00x", "missed": 0, "kind": "policy"}]
    for b in result.baselines:
        ref = b.get("policy_cost_usd", result.policy_cost)
        label = b["label"] if b["kind"] != "single" or len(result.candidates) == 1 else f"[{b['group']}] {b['label']}"
        rows.append({"label": label, "requests": b["requests"], "cost_usd": b["cost_usd"],
                     "vs": f"{b['cost_usd'] / ref:.2f}x" if ref > 0 else "-", "missed": bar_missed(b), "kind": b["kind"]})
        if b["kind"] == "oracle" and result.served_requests < result.requests:
            rows.append({"label": "  oracle over the requests the policy served", "requests": result.served_requests,
                         "cost_usd": b["served_cost_usd"], "vs": "", "missed": 0, "kind": "oracle-served"})
    return rows


#: baselines whose requests are checked against their quality bar ("met" or "bar missed: N")
_JUDGED = ("single", "litellm-cost-based", "oracle")


def missed_words(n: int) -> str:
    return f"bar missed: {n:,}"


# -- text ---------------------------------------------------------------------------------------


def format_table(result: Any) -> str:
    out: list[str] = []
    title = result.meta.get("description") or f"{result.requests:,} requests"
    out.append(f"litellm-payg simulate: {result.policy_source} on {result.traffic_source} (LiteLLM {result.litellm_version})")
    out.append(str(title))
    out.append("")
    out.append("Assumptions:")
    out.extend(f"  - {a}" for a in result.assumptions)
    out.append("")
    header = f"{'deployment':<32} {'requests':>10} {'prompt tok':>14} {'compl. tok':>14} {'cost':>14}"
    out += ["Policy routing (the runtime's lifecycle: decide, budgets, failover):", header, "-" * len(header)]
    for r in result.deployment_rows():
        out.append(f"{r['deployment'][:32]:<32} {r['requests']:>10,} {r['prompt_tokens']:>14,} {r['completion_tokens']:>14,} {usd(r['cost_usd']):>14}")
    served_tokens = sum(r["prompt_tokens"] for r in result.deployment_rows()), sum(r["completion_tokens"] for r in result.deployment_rows())
    out.append("-" * len(header))
    out.append(f"{'total':<32} {result.served_requests:>10,} {served_tokens[0]:>14,} {served_tokens[1]:>14,} {usd(result.policy_cost):>14}")
    out.append("")
    hits = budget_hits(result)
    out += hits[:1] + [f"  {line}" for line in hits[1:]]
    out.append("")
    if result.runs:
        out.extend(sim_runs.format_comparison(result.runs_section()))
        out.append("")
    if result.failover_shown:
        out.extend(format_failover(result))
        out.append("")
    out.append("Same traffic under baselines:")
    bh = f"{'baseline':<64} {'requests':>10} {'cost':>14} {'vs policy':>10}"
    out += [bh, "-" * len(bh)]
    for row in baseline_rows(result):
        label = row["label"] + (f" ({missed_words(row['missed'])})" if row["missed"] else "")
        out.append(f"{label[:64]:<64} {row['requests']:>10,} {usd(row['cost_usd']):>14} {row['vs']:>10}".rstrip())
    out.append("")
    sent = result.sent_requests if result.sent_requests is not None else result.requests
    unsent = f" (of {result.requests:,}: stopped runs did not send the rest)" if sent < result.requests else ""
    out.append(f"simulated {sent:,} requests{unsent} in {result.elapsed_s:.1f} s ({sent / max(result.elapsed_s, 1e-9):,.0f} req/s)")
    return "\n".join(out)


def format_failover(result: Any) -> list[str]:
    """The failures section of the table: per deployment, failed attempts, requests that failed
    over from it or failed for good on it, and its circuit breaker."""
    out = [f"Failures and failover (faults drawn with seed {result.seed}; "
           + ("circuit breakers from the policy's failover: section" if result.breakers else "no failover: in the policy, no breakers") + "):"]
    header = (f"{'deployment':<32} {'failed att.':>11} {'failed over':>11} {'failed final':>12} "
              f"{'breaker opened':>14} {'moved by breaker':>16}")
    out += [header, "-" * len(header)]
    rows = sorted(result.deployment_rows(), key=lambda r: r["deployment"])
    for r in rows:
        out.append(f"{r['deployment'][:32]:<32} {r['failed_attempts']:>11,} {r['failed_over']:>11,} {r['failed_final']:>12,} "
                   f"{r['breaker_opened']:>14,} {r['breaker_moved']:>16,}")
    out.append("-" * len(header))
    out.append(f"{'total':<32} {sum(r['failed_attempts'] for r in rows):>11,} {sum(r['failed_over'] for r in rows):>11,} "
               f"{result.failed_requests:>12,} {sum(r['breaker_opened'] for r in rows):>14,} {sum(r['breaker_moved'] for r in rows):>16,}")
    for r in rows:
        if r["failed_attempts_by_class"]:
            by = ", ".join(f"{fc} {n:,}" for fc, n in sorted(r["failed_attempts_by_class"].items()))
            charged = f"; invalid answers charged {usd(r['invalid_answers_charged_usd'])}" if r["invalid_answers_charged_usd"] else ""
            out.append(f"  {r['deployment']}: {by}{charged}")
    out.append(f"{result.failed_requests:,} request(s) failed for good (their last attempt failed and no retry was left or allowed)")
    return out


# -- CSV ----------------------------------------------------------------------------------------


def write_csv(result: Any, path: str) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    failing = result.failover_shown
    extra = ["failed_attempts", "failed_over", "failed_final", "breaker_opened", "breaker_moved"] if failing else []
    w.writerow(["section", "name", "model", "requests", "prompt_tokens", "completion_tokens", "cost_usd"] + extra)
    for r in result.deployment_rows():
        w.writerow(["deployment", r["deployment"], r["model"], r["requests"], r["prompt_tokens"], r["completion_tokens"], f"{r['cost_usd']:.6f}"]
                   + [r[k] for k in extra])
    w.writerow(["total", "policy", "", result.served_requests, "", "", f"{result.policy_cost:.6f}"])
    if failing:
        w.writerow(["failed", "for good", "", result.failed_requests, "", "", ""])
    for b in result.baselines:
        w.writerow(["baseline", b["label"], b.get("deployment", ""), b["requests"], "", "", f"{b['cost_usd']:.6f}"])
    for name, n in sorted(result.blocked.items()):
        w.writerow(["blocked", name, "", n, "", "", ""])
    for name, n in sorted(result.downgraded.items()):
        w.writerow(["downgraded", name, "", n, "", "", ""])
    Path(path).write_text(buf.getvalue(), encoding="utf-8")


# -- HTML ---------------------------------------------------------------------------------------


def write_html(result: Any, path: str) -> None:
    """One self-contained page (inline SVG, no script): the cost chart with the baselines that miss
    the quality bar hatched and marked, the baselines table, per deployment, failures, budget hits,
    the runs comparison (chart and table) and the assumptions."""
    Path(path).write_text(html_page("litellm-payg simulation", "\n".join(html_body(result))), encoding="utf-8")


def html_body(result: Any) -> list[str]:
    rows = result.deployment_rows()
    base = [r for r in baseline_rows(result) if r["kind"] != "oracle-served"]
    marks = {i: f"{missed_words(r['missed'])} requests below the quality bar" for i, r in enumerate(base) if r["missed"]}
    body = [
        f"<h1>Simulation: {_esc(Path(result.policy_source).name)} on {_esc(result.traffic_source)}</h1>",
        f"<p>{result.requests:,} requests, LiteLLM {_esc(result.litellm_version)}.</p>",
        "<h2>Cost under the policy and the baselines</h2>",
        bar_chart_svg("chart-baselines", [(r["label"], r["cost_usd"]) for r in base], marks=marks),
        html_table(["baseline", "requests", "cost", "vs policy", "quality bar"],
                   [[r["label"].strip(), f"{r['requests']:,}", usd(r["cost_usd"]), r["vs"],
                     missed_words(r["missed"]) if r["missed"] else ("met" if r["kind"] in _JUDGED else "-")]
                    for r in baseline_rows(result)]),
        "<h2>Per deployment</h2>",
        html_table(
            ["deployment", "model", "requests", "prompt tokens", "completion tokens", "cost"],
            [[r["deployment"], r["model"], f"{r['requests']:,}", f"{r['prompt_tokens']:,}", f"{r['completion_tokens']:,}", usd(r["cost_usd"])] for r in rows]
            + [["total", "", f"{result.served_requests:,}", "", "", usd(result.policy_cost)]],
        ),
        *(_html_failover(result) if result.failover_shown else []),
        *_html_budget_hits(result),
        *(_html_runs(result) if result.runs else []),
        "<h2>Assumptions</h2><ul>" + "".join(f"<li>{_esc(a)}</li>" for a in result.assumptions) + "</ul>",
    ]
    return body


def _html_budget_hits(result: Any) -> list[str]:
    """The table's sentence, then per budget what it blocked and downgraded; a run budget's
    downgrade steps (counted per request, not per budget) get a row of their own."""
    hits = budget_hits(result)
    table = [[name, f"{result.blocked.get(name, 0):,}", f"{result.downgraded.get(name, 0):,}"]
             for name in sorted(set(result.blocked) | set(result.downgraded))]
    if result.run_downgrades:
        table.append(["run budget downgrade steps", "-", f"{result.run_downgrades:,}"])
    return ["<h2>Budget hits</h2>", f"<p class=\"budget-hits\">{_esc(hits[0])}</p>",
            *(["<ul>" + "".join(f"<li>{_esc(line)}</li>" for line in hits[1:]) + "</ul>"] if hits[1:] else []),
            html_table(["budget", "blocked", "downgraded"], table or [["(none)", "0", "0"]])]


def _html_runs(result: Any) -> list[str]:
    """The runs comparison: total cost per variant as bars, the table's columns, and its notes."""
    comparison = result.runs_section()
    return [
        "<h2>Agent runs</h2>",
        f"<p>{_esc(sim_runs.comparison_title(comparison))}</p>",
        bar_chart_svg("chart-runs", [(f"{row['label']}: total", row["total_usd"]) for row in comparison["rows"]]),
        html_table(list(sim_runs.COLUMNS), [sim_runs.comparison_cells(row) for row in comparison["rows"]]),
        "<ul class=\"runs-notes\">" + "".join(f"<li>{_esc(n)}</li>" for n in sim_runs.comparison_notes(comparison)) + "</ul>",
    ]


def _html_failover(result: Any) -> list[str]:
    rows = sorted(result.deployment_rows(), key=lambda r: r["deployment"])
    return [
        f"<h2>Failures and failover</h2><p>Faults drawn with seed {result.seed}; "
        f"{result.failed_requests:,} request(s) failed for good.</p>",
        html_table(
            ["deployment", "failed attempts", "by class", "failed over", "failed for good", "breaker opened", "moved by breaker"],
            [[r["deployment"], f"{r['failed_attempts']:,}",
              ", ".join(f"{fc} {n:,}" for fc, n in sorted(r["failed_attempts_by_class"].items())) or "-",
              f"{r['failed_over']:,}", f"{r['failed_final']:,}", f"{r['breaker_opened']:,}", f"{r['breaker_moved']:,}"] for r in rows],
        ),
    ]
