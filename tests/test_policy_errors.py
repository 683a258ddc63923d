"""Broken policies: each kind exits 2 from ``litellm-payg check`` with a message naming the field."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest

from litellm_payg.tools.cli import main as cli
from litellm_payg.core.errors import PolicyError
from litellm_payg.policy.load import load_policy

ROOT = Path(__file__).resolve().parents[1]

GOOD_RULE = """\
    - cost_threshold:
        use: deepseek/deepseek-chat
        max_usd_per_1k_tokens: 0.0015
        otherwise: mistral/mistral-large-latest
"""

# a rule entry limited by a `when:` (line 5), the condition filled in
_WHEN = "version: 1\nroutes:\n  chat:\n    - quality_floor: {{min_quality: 0.5}}\n      when: {{{}}}\n"

# (name, policy text, expected field, expected line, words the message must contain)
BROKEN = [
    ("bad yaml", "version: 1\nroutes:\n  chat: [\n    - x\n", "", 4, "not valid YAML"),
    ("empty file", "", "", 1, "the file is empty"),
    ("not a mapping", "- version: 1\n", "", 1, "expected a mapping"),
    ("missing version", "routes: {}\n", "version", 1, "required"),
    ("wrong version", "version: 2\nroutes: {}\n", "version", 1, "Input should be 1"),
    ("unknown top-level key", "version: 1\nroutez: {}\n", "routez", 2, "unknown field"),
    ("unknown rule", "version: 1\nroutes:\n  chat:\n    - cheapest_ever: {}\n", "routes.chat[0].cheapest_ever", 4, "unknown rule type 'cheapest_ever'"),
    ("two keys in a rule", "version: 1\nroutes:\n  chat:\n    - {split: {}, quality_floor: {}}\n", "routes.chat[0]", 4, "exactly one key"),
    ("wrong type", "version: 1\nroutes:\n  chat:\n" + GOOD_RULE.replace("0.0015", "cheap"), "routes.chat[0].cost_threshold.max_usd_per_1k_tokens", 6, "valid number"),
    ("negative threshold", "version: 1\nroutes:\n  chat:\n" + GOOD_RULE.replace("0.0015", "-0.0015"), "routes.chat[0].cost_threshold.max_usd_per_1k_tokens", 6, "greater than 0"),
    ("missing rule option", "version: 1\nroutes:\n  chat:\n    - cost_threshold: {use: deepseek/deepseek-chat, otherwise: gpt-4o}\n", "routes.chat[0].cost_threshold.max_usd_per_1k_tokens", 4, "required"),
    ("unknown rule option", "version: 1\nroutes:\n  chat:\n    - quality_floor: {min_quality: 0.5, max_quality: 1}\n", "routes.chat[0].quality_floor.max_quality", 4, "unknown field"),
    ("negative price", "version: 1\nmodels:\n  my-ft:\n    input_usd_per_1k: -1\n    output_usd_per_1k: 0.002\nroutes: {}\n", "models.my-ft.input_usd_per_1k", 4, "greater than or equal to 0"),
    ("half a price", "version: 1\nmodels:\n  my-ft: {input_usd_per_1k: 0.001}\nroutes: {}\n", "models.my-ft", 3, "give both input_usd_per_1k and output_usd_per_1k"),
    ("unknown model without a price", "version: 1\nroutes:\n  chat:\n" + GOOD_RULE.replace("deepseek/deepseek-chat", "acme/unheard-of-7b"), "routes.chat[0].cost_threshold.use", 5, "no known price for model 'acme/unheard-of-7b'"),
    ("split weight zero", "version: 1\nroutes:\n  chat:\n    - split:\n        arms:\n          - {model: gpt-4o-mini, weight: 95}\n          - {model: gpt-4o, weight: 0}\n", "routes.chat[0].split.arms[1].weight", 7, "greater than 0"),
    ("split weight negative", "version: 1\nroutes:\n  chat:\n    - split:\n        arms:\n          - {model: gpt-4o-mini, weight: -5}\n          - {model: gpt-4o, weight: 5}\n", "routes.chat[0].split.arms[0].weight", 6, "greater than 0"),
    ("split sticky field", "version: 1\nroutes:\n  chat:\n    - split:\n        sticky_by: shoe_size\n        arms: [{model: gpt-4o-mini, weight: 1}, {model: gpt-4o, weight: 1}]\n", "routes.chat[0].split.sticky_by", 5, "expected user, team, api_key"),
    ("unknown plugin module", "version: 1\nplugins: [no_such_payg_plugin_xyz]\nroutes: {}\n", "plugins", 2, "no_such_payg_plugin_xyz"),
    ("missing plugin file", "version: 1\nplugins: [plugins/nope.py]\nroutes: {}\n", "plugins", 2, "no such file"),
    ("bad budget window", "version: 1\nbudgets:\n  - {scope: global, window: fortnight, limit_usd: 5}\n", "budgets[0].window", 3, "window must be hour, day, week, month, rolling"),
    ("bad budget scope", "version: 1\nbudgets:\n  - {scope: 'planet:earth', window: day, limit_usd: 5}\n", "budgets[0].scope", 3, "scope must be 'global'"),
    ("negative budget", "version: 1\nbudgets:\n  - {scope: global, window: day, limit_usd: -5}\n", "budgets[0].limit_usd", 3, "greater than 0"),
    ("bad on_exceed", "version: 1\nbudgets:\n  - {scope: global, window: day, limit_usd: 5, on_exceed: panic}\n", "budgets[0].on_exceed", 3, "'block', 'downgrade' or 'alert'"),
    ("unknown timezone", "version: 1\ntimezone: Mars/Olympus\n", "timezone", 2, "unknown IANA time zone"),
    ("bad ledger url", "version: 1\nledger: postgres://x\n", "ledger", 2, "unknown ledger URL scheme 'postgres' in 'postgres://x'; accepted: memory://"),
    ("sqlite url with two slashes", "version: 1\nledger: sqlite://x.db\n", "ledger", 2, "SQLite ledger URL 'sqlite://x.db' must look like sqlite:///relative.db"),
    ("bad failover action", "version: 1\nfailover:\n  on:\n    auth: retry_forever\n", "failover.on.auth", 4, "'next', 'fail' or 'larger_context'"),
    ("when unknown key", _WHEN.format("teem: ops"), "routes.chat[0].when.teem", 5, "unknown condition 'teem'"),
    ("when wrong type", _WHEN.format("team: {name: ops}"), "routes.chat[0].when.team", 5, "expected a value"),
    ("when empty list", _WHEN.format("metadata.step: []"), "routes.chat[0].when.metadata.step", 5, "empty list"),
    ("when min over max", _WHEN.format("prompt_tokens: {min: 900, max: 100}"), "routes.chat[0].when.prompt_tokens", 5, "min (900) is greater than max (100)"),
    ("when body team", _WHEN.format("metadata.team: ops"), "routes.chat[0].when.metadata.team", 5, "written by the client"),
    ("when without a rule", "version: 1\nroutes:\n  chat:\n    - when: {team: ops}\n", "routes.chat[0]", 4, "besides an optional 'when'"),
]


@pytest.mark.parametrize("name,text,field,line,words", BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_policy_names_the_field_and_line(tmp_path, capsys, name, text, field, line, words):
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    message = str(info.value)
    where = f"{path}:{line}: " if line else f"{path}: "
    assert where in message, message
    assert f": {field}: " in message or (not field and ": (top level): " in message), message
    assert words in message, message

    assert cli(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


def test_check_passes_every_shipped_policy_through_the_installed_console_script():
    policies = sorted(str(p) for p in (ROOT / "policies").glob("*.yaml"))
    assert len(policies) >= 4
    result = subprocess.run(["litellm-payg", "check", *policies], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("ok: ") == len(policies)


def test_check_exits_2_without_a_traceback_through_the_console_script(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(textwrap.dedent("""\
        version: 1
        routes:
          chat:
            - cost_threshold: {use: deepseek/deepseek-chat, max_usd_per_1k_tokens: -1, otherwise: gpt-4o}
    """))
    result = subprocess.run(["litellm-payg", "check", str(bad)], capture_output=True, text=True)
    assert result.returncode == 2
    assert "routes.chat[0].cost_threshold.max_usd_per_1k_tokens" in result.stderr
    assert f"{bad}:4" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_every_problem_of_a_file_is_reported_at_once(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text("version: 1\nroutes:\n  chat:\n    - nope: {}\n    - quality_floor: {min_quality: -1}\n")
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert len(info.value.problems) == 2


def test_missing_file_and_unknown_group_are_input_errors(tmp_path, capsys):
    assert cli(["check", str(tmp_path / "absent.yaml")]) == 2
    assert "cannot read policy file" in capsys.readouterr().err
    assert cli(["explain", str(ROOT / "policies" / "cost-threshold.yaml"), "--model", "nope", "--prompt-tokens", "5"]) == 2
    assert "no deployments for model group 'nope'" in capsys.readouterr().err


# -- every policy number is finite and bounded (bounds.py) ------------------------------------

_RULES = "version: 1\nroutes:\n  chat:\n"
OUT_OF_BOUNDS = [
    ("limit 1e308", "version: 1\nbudgets:\n  - {scope: global, window: day, limit_usd: 1e308}\n", "budgets[0].limit_usd", 3, "less than or equal to 1000000000"),
    ("limit inf", "version: 1\nbudgets:\n  - {scope: global, window: day, limit_usd: .inf}\n", "budgets[0].limit_usd", 3, "finite number"),
    ("limit nan", "version: 1\nbudgets:\n  - {scope: global, window: day, limit_usd: .nan}\n", "budgets[0].limit_usd", 3, "finite number"),
    ("alert_at nan", "version: 1\nbudgets:\n  - {scope: global, window: day, limit_usd: 5, alert_at: [.nan]}\n", "budgets[0].alert_at[0]", 3, "finite number"),
    ("rolling window of ages", "version: 1\nbudgets:\n  - {scope: global, window: 'rolling:99999999d', limit_usd: 5}\n", "budgets[0].window", 3, "at most 366 days"),
    ("price inf", "version: 1\nmodels:\n  my-ft:\n    input_usd_per_1k: .inf\n    output_usd_per_1k: 0.002\nroutes: {}\n", "models.my-ft.input_usd_per_1k", 4, "finite number"),
    ("price huge", "version: 1\nmodels:\n  my-ft:\n    input_usd_per_1k: 0.001\n    output_usd_per_1k: 1e12\nroutes: {}\n", "models.my-ft.output_usd_per_1k", 5, "less than or equal to 1000"),
    ("quality nan", "version: 1\nmodels:\n  my-ft: {quality: .nan}\n", "models.my-ft.quality", 3, "finite number"),
    ("max_input_tokens huge", "version: 1\nmodels:\n  my-ft: {max_input_tokens: 1000000000000}\n", "models.my-ft.max_input_tokens", 3, "less than or equal to 100000000"),
    ("reserve tokens huge", "version: 1\ndefaults:\n  reserve_output_tokens: 10000000000\n", "defaults.reserve_output_tokens", 3, "less than or equal to 100000000"),
    ("ttl 1e308", "version: 1\nreservation_ttl_s: 1e308\n", "reservation_ttl_s", 2, "less than or equal to 2592000"),
    ("ttl inf", "version: 1\nreservation_ttl_s: .inf\n", "reservation_ttl_s", 2, "finite number"),
    ("breaker open_s inf", "version: 1\nfailover:\n  circuit_breaker: {open_s: .inf}\n", "failover.circuit_breaker.open_s", 3, "finite number"),
    ("breaker failures huge", "version: 1\nfailover:\n  circuit_breaker:\n    failures: 10000000000\n", "failover.circuit_breaker.failures", 4, "less than or equal to 1000000"),
    ("latency window nan", "version: 1\nfailover:\n  latency: {window_s: .nan}\n", "failover.latency.window_s", 3, "finite number"),
    ("max latency huge", "version: 1\nfailover:\n  max_latency_ms: 100000000000000\n", "failover.max_latency_ms", 3, "less than or equal to"),
    ("threshold inf", _RULES + GOOD_RULE.replace("0.0015", ".inf"), "routes.chat[0].cost_threshold.max_usd_per_1k_tokens", 6, "finite number"),
    ("threshold huge", _RULES + GOOD_RULE.replace("0.0015", "1e9"), "routes.chat[0].cost_threshold.max_usd_per_1k_tokens", 6, "less than or equal to 1000"),
    ("quality floor nan", _RULES + "    - quality_floor: {min_quality: .nan}\n", "routes.chat[0].quality_floor.min_quality", 4, "finite number"),
    ("tier tokens huge", _RULES + "    - quality_floor:\n        min_quality: 0.5\n        tiers: [{up_to_prompt_tokens: 1000000000000, min_quality: 0.6}]\n", "routes.chat[0].quality_floor.tiers[0].up_to_prompt_tokens", 6, "less than or equal to 100000000"),
    ("split weight inf", _RULES + "    - split:\n        arms:\n          - {model: gpt-4o-mini, weight: .inf}\n          - {model: gpt-4o, weight: 5}\n", "routes.chat[0].split.arms[0].weight", 6, "finite number"),
    ("split weight huge", _RULES + "    - split:\n        arms:\n          - {model: gpt-4o-mini, weight: 1e300}\n          - {model: gpt-4o, weight: 5}\n", "routes.chat[0].split.arms[0].weight", 6, "less than or equal to 1000000"),
]


@pytest.mark.parametrize("name,text,field,line,words", OUT_OF_BOUNDS, ids=[b[0] for b in OUT_OF_BOUNDS])
def test_policy_numbers_are_finite_and_bounded(tmp_path, capsys, name, text, field, line, words):
    test_broken_policy_names_the_field_and_line(tmp_path, capsys, name, text, field, line, words)


def test_every_number_the_policy_schema_declares_is_bounded():
    """Structural: a new numeric field without an upper bound (or a float field that accepts nan)
    fails here, in the policy document, the budget, failover settings and every built-in rule."""
    import annotated_types
    from pydantic import BaseModel

    from litellm_payg.plugins import make_plugin_manager, rule_types
    from litellm_payg.policy.load import _PolicyDocument

    seen: set[type] = set()
    unbounded: list[str] = []

    def walk(model: type[BaseModel], where: str) -> None:
        if model in seen:
            return
        seen.add(model)
        for name, info in model.model_fields.items():
            for arg, meta in _leaf_types(info.annotation, list(info.metadata)):
                if isinstance(arg, type) and issubclass(arg, BaseModel):
                    walk(arg, f"{where}.{name}")
                elif arg in (int, float) and f"{where}.{name}" not in BOUNDED_BY_A_VALIDATOR:
                    has_upper = any(isinstance(m, (annotated_types.Le, annotated_types.Lt)) for m in meta)
                    finite = arg is int or model.model_config.get("allow_inf_nan") is False or any(
                        getattr(m, "allow_inf_nan", None) is False for m in meta
                    )
                    if not (has_upper and finite):
                        unbounded.append(f"{where}.{name}")

    walk(_PolicyDocument, "policy")
    for name, rule_type in rule_types(make_plugin_manager()).items():
        walk(rule_type.Options, f"routes.<group>[].{name}")
    assert not unbounded, f"numbers without a finite upper bound: {unbounded}"


#: fields whose range a validator checks (alert_at: fractions in (0, 1], finite as nan fails it)
BOUNDED_BY_A_VALIDATOR = {"policy.budgets.alert_at"}


def _leaf_types(annotation, meta):
    """(type, constraints) of every leaf of an annotation: through Optional, list, dict, Annotated."""
    import typing

    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Annotated:
        inner = [m for m in annotation.__metadata__]
        found = []
        for m in inner:  # pydantic's Field(...) in Annotated carries its constraints in .metadata
            found += list(getattr(m, "metadata", []) or [])
            found.append(m)
        return _leaf_types(args[0], meta + found)
    if not args:
        return [(annotation, meta)]
    out = []
    for a in args:
        out += _leaf_types(a, meta)
    return out


def test_limit_1e308_exits_2_through_the_console_script(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text("version: 1\nbudgets:\n  - scope: global\n    window: month\n    limit_usd: 1e308\n")
    result = subprocess.run(["litellm-payg", "check", str(path)], capture_output=True, text=True)
    assert result.returncode == 2
    assert f"{path}:5: budgets[0].limit_usd: " in result.stderr and "Traceback" not in result.stderr
    assert "finite and bounded" in result.stderr  # the hint
