"""Simulation speed: ``litellm-payg simulate`` requests/s, against a bare ``engine.decide`` loop over
the same requests measured in the same run (the decision alone is the floor a simulation that runs
the real policy code cannot beat; the ratio is the cost of budgets, ledger and accounting on top).

    python bench/simulate.py            # the support-bot scenario, 500,000 requests, + a budgeted variant
                                        # + a failover variant with faults (2% 5xx, a 1-hour outage)
    python bench/simulate.py --quick    # 50,000 requests
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from litellm_payg.core.decision import RouteRequest  # noqa: E402
from litellm_payg.adapter.deployments import candidates_named_by_policy  # noqa: E402
from litellm_payg.runtime.engine import Engine  # noqa: E402
from litellm_payg.policy.load import load_policy  # noqa: E402
from litellm_payg.tools.simulate import Fault, Traffic, TrafficClass, _arrivals, load_scenario, simulate  # noqa: E402

TARGET_S_500K = 60.0


def scaled(traffic: Traffic, factor: float) -> Traffic:
    return Traffic([TrafficClass(**{**c.__dict__, "count": max(1, int(c.count * factor))}) for c in traffic.classes], traffic.source, traffic.meta)


def with_faults(traffic: Traffic) -> Traffic:
    """Every class meets 2% server errors on DeepSeek, and a 1-hour DeepSeek outage on day 10."""
    start = 1735689600.0 + 9 * 86400 + 9 * 3600  # 2025-01-10T09:00:00Z
    faults = (Fault("deepseek/deepseek-chat", (("server_error", 0.02),)),
              Fault("deepseek/deepseek-chat", (("server_error", 0.98),), start, start + 3600))
    return Traffic([TrafficClass(**{**c.__dict__, "faults": faults}) for c in traffic.classes], traffic.source, traffic.meta)


def bare_decide(policy, traffic: Traffic) -> float:
    """Baseline: the same arrivals, only ``engine.decide`` per request."""
    engine = Engine(policy, ledger="memory://")
    cands = candidates_named_by_policy(engine)
    reqs = [RouteRequest(c.group, c.prompt_tokens, engine.expected_output_tokens(c.max_tokens), c.max_tokens) for c in traffic.classes]
    per = [cands[c.group] for c in traffic.classes]
    start = traffic.meta.get("start") and 1735689600.0 or 1735689600.0
    t0 = time.perf_counter()
    for _, ci in _arrivals(traffic.classes, start, start + 30 * 86400):
        engine.decide(reqs[ci], per[ci])
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    factor = 0.1 if args.quick else 1.0
    base = load_scenario("support-bot")
    traffic = scaled(base, factor)
    n = traffic.requests
    plain = load_policy(REPO / "policies" / "support-bot.yaml")
    budgeted = load_policy({
        **{k: v for k, v in __import__("yaml").safe_load((REPO / "policies" / "support-bot.yaml").read_text()).items()},
        "ledger": "memory://",
        "budgets": [
            {"name": "deepseek-daily", "scope": "deployment:deepseek/deepseek-chat", "window": "day", "limit_usd": 0.4, "on_exceed": "downgrade"},
            {"name": "all-daily", "scope": "global", "window": "day", "limit_usd": 8.0, "on_exceed": "block"},
        ],
    })
    failover = load_policy({
        **{k: v for k, v in __import__("yaml").safe_load((REPO / "policies" / "support-bot.yaml").read_text()).items()},
        "ledger": "memory://",
        "failover": {"circuit_breaker": {"failures": 5, "within_s": 60, "open_s": 30}},
    })
    print(f"{n:,} requests (support-bot scenario x{factor:g}), Python {sys.version.split()[0]}")
    rows = []
    for label, policy, mix in (("support-bot.yaml", plain, traffic), ("support-bot.yaml + 2 budgets", budgeted, traffic),
                               ("+ failover, faults", failover, with_faults(traffic))):
        base_s = bare_decide(policy, mix)
        t0 = time.perf_counter()
        result = simulate(policy, mix)
        wall = time.perf_counter() - t0
        rows.append((label, base_s, result.elapsed_s, wall, result))
    print(f"{'policy':<30} {'decide-only req/s':>18} {'simulate req/s':>15} {'x decide-only':>14} {'wall s':>8}  "
          "blocks/downgrades  failed attempts/breaker openings")
    for label, base_s, loop_s, wall, result in rows:
        print(f"{label:<30} {n / base_s:>18,.0f} {n / loop_s:>15,.0f} {loop_s / base_s:>14.2f} {wall:>8.1f}  "
              f"{sum(result.blocked.values()):,}/{sum(result.downgraded.values()):,}  "
              f"{sum(result.attempts_failed.values()):,}/{sum(result.breaker_opened.values()):,}")
    # the request loop scales with the request count; setup (policy, prices, baselines) does not
    worst = max(loop_s * 500_000 / n + (wall - loop_s) for _, _, loop_s, wall, _ in rows)
    print(f"verdict: 500,000 requests in <= {TARGET_S_500K:.0f} s: {'pass' if worst <= TARGET_S_500K else 'miss'} "
          f"(worst wall time{' extrapolated' if n != 500_000 else ''} for 500k: {worst:.1f} s)")


if __name__ == "__main__":
    main()
