"""``litellm-payg simulate``: what a month of traffic costs under a policy, before it runs.

Every simulated request goes through the runtime's lifecycle, as live traffic does, with the
policy's real decisions, budgets, failover and breakers; each served request is charged as a live
answer is (LiteLLM's cost function, made a charge by ``core/charge.py``); the same traffic is then
priced under baselines (each deployment alone, LiteLLM's ``cost-based-routing``, the quality
oracle, a subscription plan).

This module is the command (its arguments and :func:`run`) and the names other code imports from
it. The work is split by job, each module saying why:

* ``sim_traffic.py`` (with its schema, ``sim_traffic_schema.py``): the traffic file, validated;
* ``sim_driver.py``: the simulation itself, request by request;
* ``sim_pricing.py``: what a simulated answer costs; ``sim_baselines.py``: what it is compared to;
* ``sim_result.py``: the figures and their assumptions; ``sim_output.py``: the table, CSV and HTML;
* ``sim_runs.py``: agent runs; ``sim_quality.py``: the scenarios with hidden true qualities.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from litellm_payg.tools.sim_baselines import DAYS_PER_MONTH, Plan, quality_bar  # noqa: F401 - re-exported
from litellm_payg.tools.sim_driver import (  # noqa: F401 - re-exported
    DEFAULT_PERIOD_DAYS,
    DEFAULT_START,
    _arrivals,
    _Clock,
    _compare_runs,
    _Progress,
    plan_runs_traffic,
    simulate,
)
from litellm_payg.tools.sim_output import format_failover, format_table, write_csv, write_html  # noqa: F401 - re-exported
from litellm_payg.tools.sim_pricing import Pricer, litellm_cost_based_choice  # noqa: F401 - re-exported
from litellm_payg.tools.sim_result import DEFAULT_SEED, Result  # noqa: F401 - re-exported
from litellm_payg.tools.sim_traffic import (  # noqa: F401 - re-exported
    SCENARIO_PACKAGE,
    Fault,
    SimulationError,
    Traffic,
    TrafficClass,
    attribute_fields,
    class_request_fields,
    load_scenario,
    load_traffic,
    parse_traffic,
    read_scenario,
    read_traffic,
    scenario_names,
    time_of,
)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("simulate", help="price a traffic mix under a policy (real decisions and budgets) and baselines")
    p.add_argument("policy", metavar="POLICY")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--traffic", metavar="FILE", help="JSONL: one request class per line")
    src.add_argument("--scenario", metavar="NAME", help="a bundled traffic scenario (e.g. support-bot)")
    p.add_argument("--config", help="a LiteLLM config.yaml whose model_list gives the deployments")
    p.add_argument("--period", type=float, default=None, metavar="DAYS", help=f"days to spread requests over (default {DEFAULT_PERIOD_DAYS:g})")
    p.add_argument("--start", default=None, help=f"ISO start of the simulated period (default {DEFAULT_START})")
    p.add_argument("--plan-fee", type=float, help="subscription baseline: monthly fee in USD")
    p.add_argument("--plan-tokens", type=int, help="subscription baseline: tokens included per month")
    p.add_argument("--plan-overage-per-1k", type=float, help="subscription baseline: USD per 1K tokens above the included ones")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED,
                   help=f"seed of the random generator drawing the traffic's faults (default {DEFAULT_SEED}): same seed, same numbers")
    p.add_argument("--csv", metavar="FILE", help="also write the figures as CSV")
    p.add_argument("--html", metavar="FILE", help="also write a self-contained HTML report")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--progress", action="store_true", help="show a progress bar even when stderr is not a terminal")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from litellm_payg.tools import sim_quality

    if args.scenario and sim_quality.is_quality_scenario(args.scenario):
        return sim_quality.run(args)  # hidden true qualities: its own simulation (sim_quality.py)
    # read here, parsed through this module's name (a test caps the traffic by replacing it)
    traffic = parse_traffic(*(read_scenario(args.scenario) if args.scenario else read_traffic(args.traffic)))
    plan_args = (args.plan_fee, args.plan_tokens, args.plan_overage_per_1k)
    plan = None
    if any(a is not None for a in plan_args):
        meta_plan = traffic.meta.get("plan") or {}
        fee = args.plan_fee if args.plan_fee is not None else meta_plan.get("fee_usd")
        tokens = args.plan_tokens if args.plan_tokens is not None else meta_plan.get("included_tokens")
        over = args.plan_overage_per_1k if args.plan_overage_per_1k is not None else meta_plan.get("overage_usd_per_1k")
        if fee is None or tokens is None or over is None:
            raise SimulationError("a plan baseline needs --plan-fee, --plan-tokens and --plan-overage-per-1k")
        if fee < 0 or tokens < 0 or over < 0:
            raise SimulationError("plan figures must be >= 0")
        plan = Plan(float(fee), int(tokens), float(over))
    start = time_of(args.start, "--start") if args.start else None
    show = args.progress or sys.stderr.isatty()
    result = simulate(args.policy, traffic, config=args.config, start=start, period_days=args.period, plan=plan, progress=show,
                      seed=args.seed)
    if args.csv:
        write_csv(result, args.csv)
    if args.html:
        write_html(result, args.html)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        print(format_table(result))
    return 0
