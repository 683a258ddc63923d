"""The words the ``quality`` table and its page share: an interval, an amount, the cheapest
deployment, the saving, a split arm's costs, so both say the same thing the same way (amounts
through ``money.usd``)."""

from __future__ import annotations

from typing import Any

from litellm_payg.tools.money import usd


def interval(row: dict[str, Any]) -> str:
    return f"[{row['lo']:.3f}, {row['hi']:.3f}]"


def cost(x: float | None) -> str:
    return "-" if x is None else usd(x)


def cheapest_sentence(cls: str, dep: str) -> str:
    return f"cheapest deployment meeting the bar{' for ' + cls if cls else ''}: {dep}"


def _span(lo: float, hi: float) -> str:
    return f"[{usd(lo)}, {'unbounded' if hi == float('inf') else usd(hi)}]"


def arm_costs(arm: dict[str, Any]) -> tuple[str, str]:
    """An arm's cost per request and per passing request, each with its interval."""
    per_pass = "none passed" if arm["cost_per_pass"] == float("inf") else f"{usd(arm['cost_per_pass'])} {_span(*arm['cost_per_pass_interval'])}"
    return f"{usd(arm['cost_per_request'])} {_span(*arm['cost_per_request_interval'])}", per_pass


def difference(v: dict[str, Any]) -> str:
    dlo, dhi = v["difference_interval"]
    return f"difference {v['difference']:+.3f} (anytime-valid [{dlo:+.3f}, {dhi:+.3f}])"


def saving_sentence(route: dict[str, Any]) -> str | None:
    """The saving in words, as the table and the page print it."""
    s = route.get("saving")
    if s is None:
        return None
    head = (f"routing on the estimates: {s['requests']:,} requests at {usd(s['served_cost_per_request'])} each as served; "
            f"at {usd(s['cheapest_cost_per_request'])} each on {s['cheapest']} (lower bound {s['cheapest_lo']:.3f} "
            f"clears the bar {route['bar']:g})")
    if s["usd"] >= 0:
        return f"{head}: {usd(s['usd'])} saved"
    return f"{head}: {usd(-s['usd'])} more (some of what was served did not meet the bar)"
