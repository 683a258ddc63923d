"""``litellm-payg quality --html FILE``: the quality report as one self-contained page.

The same data as the table (``quality_report.build``), in the same words (the sentences come from
``quality_words``, amounts from ``money.usd``), plus per route a chart of each cell's
interval on [0, 1] against the route's bar: a line from the lower to the upper bound, a dot at the
estimate, coloured by the verdict, so "meets", "unsure" and "below" read at a glance. Inline SVG
and CSS only: no script, nothing fetched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from litellm_payg.tools.quality_words import arm_costs, cheapest_sentence, cost, difference, interval, saving_sentence
from litellm_payg.tools.report import _e, html_page, html_table

#: a verdict's colour on the chart (none: the route has no bar)
COLOURS = {"meets": "#59a14f", "unsure": "#f28e2b", "below": "#e15759", None: "#4e79a7"}


def _label(row: dict[str, Any]) -> str:
    return f"{row['deployment']} ({row['class']})" if row["class"] else row["deployment"]


def interval_chart_svg(chart_id: str, rows: list[dict[str, Any]], bar: float | None, plot: int = 420) -> str:
    """One row per cell: its interval as a line, its estimate as a dot, the bar as a dashed line."""
    row_h, left, top = 26, min(360, 16 + 7 * max((len(_label(r)) for r in rows), default=10)), 24
    right = 300
    width, height = left + plot + right, top + row_h * len(rows) + 30

    def x(v: float) -> float:
        return left + v * plot

    parts = [f'<svg id="{_e(chart_id)}" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">']
    axis_y = top + row_h * len(rows) + 4
    parts.append(f'<line x1="{left}" x2="{left + plot}" y1="{axis_y}" y2="{axis_y}" stroke="#444"/>')
    for t in (0.0, 0.25, 0.5, 0.75, 1.0):
        parts.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{top - 4}" y2="{axis_y}" stroke="#eee"/>'
                     f'<text x="{x(t):.1f}" y="{axis_y + 16}" text-anchor="middle" font-size="11">{t:g}</text>')
    if bar is not None:
        parts.append(f'<line class="bar-line" x1="{x(bar):.1f}" x2="{x(bar):.1f}" y1="{top - 8}" y2="{axis_y}" stroke="#222" '
                     f'stroke-dasharray="4 3" stroke-width="1.5"/><text x="{x(bar):.1f}" y="{top - 12}" text-anchor="middle" '
                     f'font-size="11">bar {bar:g}</text>')
    for i, r in enumerate(rows):
        y = top + i * row_h + row_h / 2
        colour = COLOURS.get(r["verdict"], COLOURS[None])
        words = f"{r['estimate']:.3f} {interval(r)} n = {r['n']:,}" + (f", {r['verdict']}" if r["verdict"] else "")
        parts.append(f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end" font-size="12">{_e(_label(r)[:60])}</text>')
        parts.append(f'<line class="interval" x1="{x(r["lo"]):.1f}" x2="{x(r["hi"]):.1f}" y1="{y:.1f}" y2="{y:.1f}" '
                     f'stroke="{colour}" stroke-width="4" stroke-linecap="round"/>')
        parts.append(f'<circle class="point" cx="{x(r["estimate"]):.1f}" cy="{y:.1f}" r="5" fill="{colour}" stroke="#222">'
                     f'<title>{_e(_label(r))}: {_e(words)}</title></circle>')
        parts.append(f'<text x="{left + plot + 10}" y="{y + 4:.1f}" font-size="12">{_e(words)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def html_body(report: dict[str, Any]) -> list[str]:
    h = report["half_life_s"]
    body = ["<h1>litellm-payg measured quality</h1>",
            f"<p>Confidence {report['confidence']:g} (one-sided: routing judges a candidate on its lower bound), "
            f"half-life {'none' if h is None else f'{h:g} s'}.</p>"]
    for i, route in enumerate(report["routes"]):
        bar = route["bar"]
        body += [f"<h2>route {_e(route['route'])}</h2>",
                 f"<p>metric {_e(route['metric'])}, bar {'-' if bar is None else f'{bar:g}'}</p>"]
        if not route["cells"]:
            body.append("<p>no evidence yet</p>")
        else:
            body.append(interval_chart_svg(f"chart-quality-{i}", route["cells"], bar))
            body.append(html_table(
                ["deployment", "model", "class", "n", "estimate", "interval", "$/request", "verdict"],
                [[r["deployment"], r["model"] or "-", r["class"] or "*", f"{r['n']:,}", f"{r['estimate']:.3f}", interval(r),
                  cost(r["cost_per_request"]), r["verdict"] or "-"] for r in route["cells"]]))
        for cls, dep in route["cheapest_meeting_bar"].items():
            body.append(f"<p class=\"cheapest\">{_e(cheapest_sentence(cls, dep))}</p>")
        if saving_sentence(route):
            body.append(f"<p class=\"saving\">{_e(saving_sentence(route))}</p>")
        for v in route["splits"]:
            a, b = v["a"], v["b"]
            body.append(f"<h3>split {_e(b['name'])} vs {_e(a['name'])}</h3>")
            body.append(html_table(["arm", "n", "pass rate", "$/request", "$/passing request"],
                                   [[arm["name"], f"{arm['n']:,}", f"{arm['pass_rate']:.3f}", *arm_costs(arm)] for arm in (a, b)]))
            body.append(f"<p>{_e(difference(v))}</p>")
            body.append(f"<p class=\"verdict\"><strong>{_e(v['sentence'])}</strong></p>")
    return body


def write_html(report: dict[str, Any], path: str) -> None:
    Path(path).write_text(html_page("litellm-payg measured quality", "\n".join(html_body(report))), encoding="utf-8")


__all__ = ["html_body", "interval_chart_svg", "write_html"]
