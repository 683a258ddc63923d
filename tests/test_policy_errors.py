"""Broken policies: each kind exits 2 from ``litellm-payg check`` with a message naming the field."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest

from litellm_payg.cli import main as cli
from litellm_payg.errors import PolicyError
from litellm_payg.policy import load_policy

ROOT = Path(__file__).resolve().parents[1]

GOOD_RULE = """\
    - cost_threshold:
        use: deepseek/deepseek-chat
        max_usd_per_1k_tokens: 0.0015
        otherwise: mistral/mistral-large-latest
"""

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
    ("bad budget window", "version: 1\nbudgets:\n  - {scope: global, window: fortnight, limit_usd: 5}\n", "budgets[0].window", 3, "window must be hour, day, week, month or rolling"),
    ("bad budget scope", "version: 1\nbudgets:\n  - {scope: 'planet:earth', window: day, limit_usd: 5}\n", "budgets[0].scope", 3, "scope must be 'global'"),
    ("negative budget", "version: 1\nbudgets:\n  - {scope: global, window: day, limit_usd: -5}\n", "budgets[0].limit_usd", 3, "greater than 0"),
    ("bad on_exceed", "version: 1\nbudgets:\n  - {scope: global, window: day, limit_usd: 5, on_exceed: panic}\n", "budgets[0].on_exceed", 3, "'block', 'downgrade' or 'alert'"),
    ("unknown timezone", "version: 1\ntimezone: Mars/Olympus\n", "timezone", 2, "unknown IANA time zone"),
    ("bad ledger url", "version: 1\nledger: postgres://x\n", "ledger", 2, "expected memory://"),
    ("bad failover action", "version: 1\nfailover:\n  on:\n    auth: retry_forever\n", "failover.on.auth", 4, "'next', 'fail' or 'larger_context'"),
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
