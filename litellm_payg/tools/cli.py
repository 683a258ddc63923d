"""``litellm-payg``: check, explain and inspect policies from the command line.

Input errors (a bad policy, a missing file, an unknown group) print a message naming the cause and
exit 2; no Python traceback reaches the user for them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from litellm_payg.adapter import litellm_versions
from litellm_payg.core.errors import PaygError

EXIT_INPUT = 2


def main(argv: Sequence[str] | None = None) -> int:
    # Offline by default: LiteLLM's bundled price map unless the user set LITELLM_LOCAL_MODEL_COST_MAP
    # (LiteLLM reads it once, when it is first imported, which happens after this line).
    litellm_versions.use_bundled_price_map_unless_chosen()
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_INPUT
    try:
        return int(args.func(args) or 0)
    except PaygError as exc:
        print(f"litellm-payg: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except FileNotFoundError as exc:
        print(f"litellm-payg: {exc.filename}: no such file", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        return 130


#: request attributes ``explain`` has a flag of its own for (``--key`` takes the key's hash as is)
_OWN_FLAGS = ("user", "team", "key", "tag", "session")


def _attribute_flags() -> list:
    """The request attributes the registered scope kinds declare beyond :data:`_OWN_FLAGS`."""
    from litellm_payg.plugins import builtin_scopes

    return [kind for kind in builtin_scopes().attributes() if kind.name not in _OWN_FLAGS]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="litellm-payg", description="Pay-as-you-go cost control for LiteLLM.")
    sub = parser.add_subparsers(metavar="COMMAND")

    check = sub.add_parser("check", help="validate policy files (exit 2 on the first invalid one)")
    check.add_argument("policies", nargs="+", metavar="POLICY")
    check.add_argument("--config", help="a LiteLLM config.yaml: also check the policy against its model_list")
    check.set_defaults(func=cmd_check)

    explain = sub.add_parser("explain", help="show the decision for a hypothetical request")
    explain.add_argument("policy", metavar="POLICY")
    explain.add_argument("--model", required=True, help="the LiteLLM model group")
    explain.add_argument("--prompt-tokens", type=int, required=True)
    explain.add_argument("--max-tokens", type=int, default=None)
    explain.add_argument("--user")
    explain.add_argument("--team")
    explain.add_argument("--tag", action="append", default=[], dest="tags")
    explain.add_argument("--key", help="the key's hash, as the key: budget scope and when: {key: ...} see it")
    explain.add_argument("--session", help="the session id (LiteLLM's litellm_session_id)")
    explain.add_argument("--metadata", action="append", default=[], metavar="FIELD=VALUE",
                         help="a request metadata field, for when: {metadata.FIELD: ...} (repeatable)")
    for kind in _attribute_flags():  # every other request attribute a scope kind declares: --end-user, --org
        explain.add_argument(f"--{kind.name.replace('_', '-')}", dest=f"attr_{kind.name}", metavar="VALUE",
                             help=f"{kind.doc}, as the {kind.name}: budget scope"
                             + (f" and when: {{{kind.when}: ...}}" if kind.when else "") + " see it")
    explain.add_argument("--min-quality", type=float, help="a client hint: raise the quality bar")
    explain.add_argument("--config", help="a LiteLLM config.yaml whose model_list gives the deployments")
    explain.add_argument("--json", action="store_true")
    explain.set_defaults(func=cmd_explain)

    budgets = sub.add_parser("budgets", help="every budget's spend, in-flight, limit, use and reset time")
    budgets.add_argument("policy", metavar="POLICY")
    budgets.add_argument("--ledger", help="read this ledger URL instead of the policy's")
    budgets.add_argument("--json", action="store_true")
    budgets.set_defaults(func=cmd_budgets)

    from litellm_payg.tools import replay

    from litellm_payg.tools import report

    from litellm_payg.tools import simulate

    from litellm_payg.tools import whatif

    from litellm_payg.tools import quality_report

    simulate.add_parser(sub)
    quality_report.add_parser(sub)
    whatif.add_parser(sub)
    report.add_parser(sub)
    replay.add_parser(sub)

    plugins = sub.add_parser("plugins", help="list installed plugins and the rule types and scope kinds they add")
    plugins.add_argument("--all", action="store_true", help="include the built-in plugins")
    plugins.add_argument("--policy", help="also load the plugin modules this policy names")
    plugins.set_defaults(func=cmd_plugins)
    return parser


# -- check --------------------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace) -> int:
    from litellm_payg.adapter.deployments import candidates_from_config
    from litellm_payg.runtime.engine import Engine
    from litellm_payg.policy.load import load_policy

    for path in args.policies:
        policy = load_policy(path, deployments_known=bool(args.config))  # --config: priced per deployment
        if args.config:
            Engine(policy).check_deployments(candidates_from_config(args.config, policy))
        rules = sum(len(r) for r in policy.routes.values())
        print(f"ok: {path} ({len(policy.routes)} route(s), {rules} rule(s))")
    print(f"priced with {litellm_versions.describe()}")
    return 0


# -- explain ------------------------------------------------------------------------------------


def cmd_explain(args: argparse.Namespace) -> int:
    from litellm_payg.core.decision import RouteRequest
    from litellm_payg.runtime import store_access
    from litellm_payg.adapter.deployments import candidates_from_config, candidates_named_by_policy
    from litellm_payg.runtime.engine import Engine
    from litellm_payg.core.errors import PolicyError, Problem
    from litellm_payg.policy.load import load_policy

    policy = load_policy(args.policy, deployments_known=bool(args.config))
    engine = Engine(policy)
    if args.config:
        by_group = candidates_from_config(args.config, policy)
        engine.check_deployments(by_group)  # the prices the load left to the deployments
    else:
        by_group = candidates_named_by_policy(engine)
    candidates = by_group.get(args.model)
    if not candidates:
        raise PolicyError(
            [Problem("--model", f"no deployments for model group {args.model!r}; known: {', '.join(sorted(by_group)) or 'none'}")],
            args.policy,
        )
    metadata: dict[str, str] = {}
    for item in args.metadata:
        name, eq, value = item.partition("=")
        if not eq or not name:
            raise PolicyError([Problem("--metadata", f"expected FIELD=VALUE, got {item!r}")], args.policy)
        metadata[name.removeprefix("metadata.")] = value
    request = RouteRequest(
        group=args.model,
        prompt_tokens=args.prompt_tokens,
        output_tokens=engine.expected_output_tokens(args.max_tokens),
        min_quality=args.min_quality,
        trace_id="explain",
        metadata=metadata,
        # every request attribute through the one door (``ScopeRegistry.request_fields``), as kept live
        **store_access.scopes(engine).request_fields({name: value for name, value in {
            "user": args.user, "team": args.team, "key": args.key, "tag": tuple(args.tags), "session": args.session,
            **{kind.name: getattr(args, f"attr_{kind.name}") for kind in _attribute_flags()},
        }.items() if name in store_access.scopes(engine) and value not in (None, ())}),
    )
    decision = engine.decide(request, candidates)
    if args.json:
        out = decision.as_dict()
        out["prices"] = {
            c.deployment_id: {"input_usd_per_1k": _per_1k(c.input_usd_per_token), "output_usd_per_1k": _per_1k(c.output_usd_per_token)}
            for c in candidates
        }
        out["litellm"] = {"version": litellm_versions.litellm_version(), "price_map": litellm_versions.price_map()}
        print(json.dumps(out, indent=2))
        return 0
    print(_explain_table(decision, candidates))
    print(f"priced with {litellm_versions.describe()}")
    return 0


def _per_1k(value: float | None) -> float | None:
    return None if value is None else value * 1000


def _explain_table(decision: Any, candidates: Sequence[Any]) -> str:
    req = decision.request
    lines = [
        f"group {req.group!r}: {req.prompt_tokens} prompt tokens, {req.output_tokens} expected output tokens",
    ]
    for note in decision.notes:
        lines.append(f"  {note}")
    rank = {c.deployment_id: i for i, c in enumerate(decision.ordered)}
    drops = {d.deployment_id: d for d in decision.dropped}
    header = f"{'deployment':<28} {'model':<34} {'$/1K in':>10} {'$/1K out':>10} {'est. $':>11} {'$/1K req':>10}  verdict"
    lines += ["", header, "-" * len(header)]
    for c in candidates:
        if c.priced:
            prices = (
                f"{c.input_usd_per_token * 1000:>10.6f} {c.output_usd_per_token * 1000:>10.6f} "
                f"{c.estimate_usd(req.prompt_tokens, req.output_tokens):>11.7f} "
                f"{c.usd_per_1k(req.prompt_tokens, req.output_tokens):>10.6f}"
            )
        else:
            prices = f"{'unknown':>10} {'unknown':>10} {'-':>11} {'-':>10}"
        if c.deployment_id in rank and not decision.governed:
            verdict = "kept"
        elif c.deployment_id in rank:
            verdict = "CHOSEN" if rank[c.deployment_id] == 0 else f"fallback #{rank[c.deployment_id]}"
        elif c.deployment_id in drops:
            verdict = f"dropped by {drops[c.deployment_id].by}: {drops[c.deployment_id].reason}"
        else:
            verdict = "dropped"
        judged = decision.judged.get(c.deployment_id)
        if judged:  # a measured quality_floor: the bound it was judged on
            verdict = f"{verdict}; judged on: {judged}"
        lines.append(f"{c.deployment_id[:28]:<28} {c.model[:34]:<34} {prices}  {verdict}")
    chosen = decision.chosen
    if chosen is not None and not decision.governed:
        lines += ["", "=> no route rule applies: one of the kept deployments, picked at random among those with budget room"]
    else:
        lines += ["", f"=> {chosen.model} ({chosen.deployment_id})" if chosen else "=> no deployment left"]
    return "\n".join(lines)


# -- budgets ------------------------------------------------------------------------------------


def cmd_budgets(args: argparse.Namespace) -> int:
    from litellm_payg.tools.budget_status import budget_rows, render
    from litellm_payg.stores.ledger import open_ledger
    from litellm_payg.stores.ledger.base import LedgerError
    from litellm_payg.policy.load import load_policy

    policy = load_policy(args.policy)
    url = args.ledger or policy.ledger
    try:
        with open_ledger(url, must_exist=True) as ledger:
            rows = budget_rows(policy, ledger)
    except LedgerError as exc:
        raise LedgerInputError(f"cannot read the ledger {url}: {exc}") from None
    if args.json:
        print(json.dumps([r.as_dict() for r in rows], indent=2))
    else:
        print(render(rows))
    return 0


class LedgerInputError(PaygError):
    """The ledger named on the command line (or in the policy) cannot be read."""


# -- plugins ------------------------------------------------------------------------------------


def cmd_plugins(args: argparse.Namespace) -> int:
    from litellm_payg.plugins import describe_plugins, make_plugin_manager

    if args.policy:
        from litellm_payg.policy.load import load_policy

        pm = load_policy(args.policy).plugin_manager
    else:
        pm = make_plugin_manager()
    print(json.dumps(describe_plugins(pm, include_builtin=args.all), indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
