"""The plugin contract: built-ins and third-party plugins register through the same hooks."""

from __future__ import annotations

import inspect
import json
import re
import sys
import textwrap
from pathlib import Path

import pytest

import litellm_payg
from litellm_payg import hookspecs

import user_docs
from litellm_payg.tools.cli import main as cli
from litellm_payg.core.errors import PolicyError
from litellm_payg.plugins import DEFAULT_PLUGINS, make_plugin_manager, rule_types
from litellm_payg.policy.load import load_policy

from routing_helpers import DEEPSEEK, MISTRAL, attached, deployment, served_by

ROOT = Path(__file__).resolve().parents[1]
EU_POLICY = ROOT / "policies" / "eu-residency.yaml"


async def test_example_plugin_rule_keeps_eu_tagged_requests_on_eu_deployments():
    model_list = [deployment("chat", DEEPSEEK, "ds"), deployment("chat", MISTRAL, "ml"), deployment("chat", "gpt-4o", "gpt")]
    with attached(model_list, EU_POLICY) as (router, engine):
        assert "data_residency" in rule_types(engine.pm)
        eu = await router.acompletion(model="chat", messages=[{"role": "user", "content": "hi"}], metadata={"tags": ["eu"]})
        anywhere = await router.acompletion(model="chat", messages=[{"role": "user", "content": "hi"}])
    assert served_by(eu) == "ml"  # the only region=eu deployment
    assert served_by(anywhere) == "ds"  # untagged: the cheapest with quality >= 0.8


def test_builtin_rules_are_registered_through_the_public_hook():
    pm = make_plugin_manager()
    for name in ("cost_threshold", "quality_floor", "split"):
        owner = next(impl.plugin_name for impl in pm.hook.payg_register_rules.get_hookimpls() if name in impl.plugin_name)
        assert owner in DEFAULT_PLUGINS
    assert {"cost_threshold", "quality_floor", "split"} <= set(rule_types(pm))


def test_a_typo_in_a_hook_name_fails_loudly(tmp_path):
    plugin = tmp_path / "typo_plugin.py"
    plugin.write_text(textwrap.dedent("""\
        import litellm_payg

        @litellm_payg.hookimpl
        def payg_regster_rules(register):
            pass
    """))
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\nplugins: [typo_plugin.py]\n")
    with pytest.raises(PolicyError) as info:
        load_policy(policy)
    assert "payg_regster_rules" in str(info.value) and "plugins" in str(info.value)


def test_two_plugins_cannot_claim_the_same_rule_name(tmp_path):
    plugin = tmp_path / "clash.py"
    plugin.write_text(textwrap.dedent("""\
        import litellm_payg
        from litellm_payg.default_plugins.split import Split

        class MySplit(Split):
            pass

        @litellm_payg.hookimpl
        def payg_register_rules(register):
            register(MySplit)
    """))
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\nplugins: [clash.py]\n")
    with pytest.raises(PolicyError) as info:
        load_policy(policy)
    assert "rule type 'split' is registered twice" in str(info.value)


def test_entry_point_plugins_are_loaded(tmp_path, monkeypatch):
    """An installed distribution advertising the ``litellm_payg`` entry point group."""
    (tmp_path / "payg_fake_plugin.py").write_text(textwrap.dedent("""\
        import litellm_payg
        from litellm_payg.core.decision import Step
        from litellm_payg.rules import Rule, RuleOptions

        class Options(RuleOptions):
            model: str

        class Only(Rule):
            name = "only"
            Options = Options

            def apply(self, request, candidates):
                return Step([c for c in candidates if c.model == self.options.model])

        @litellm_payg.hookimpl
        def payg_register_rules(register):
            register(Only)
    """))
    dist = tmp_path / "payg_fake_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: payg-fake-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[litellm_payg]\nfake = payg_fake_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    policy = load_policy({"version": 1, "routes": {"chat": [{"only": {"model": MISTRAL}}]}})
    assert "only" in rule_types(policy.plugin_manager)
    assert any(name == "fake" for name, _ in policy.plugin_manager.list_name_plugin())


def test_plugins_command_lists_builtins_and_policy_plugins(capsys):
    # without --all the built-ins are hidden, but the policy's own plugin is listed (a non-empty
    # list, so "no row is built in" says something)
    assert cli(["plugins", "--policy", str(EU_POLICY)]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert "example_plugin.py" in rows
    assert not set(rows) & set(DEFAULT_PLUGINS) and not any(row["builtin"] for row in rows.values())
    assert cli(["plugins", "--all", "--policy", str(EU_POLICY)]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert set(DEFAULT_PLUGINS) <= set(rows) and all(rows[name]["builtin"] for name in DEFAULT_PLUGINS)
    assert rows["litellm_payg.default_plugins.cost_threshold"]["rules"] == ["cost_threshold"]
    assert rows["example_plugin.py"]["rules"] == ["data_residency"]


def test_every_hook_is_documented_where_declared_with_a_payg_prefix():
    for name, spec in inspect.getmembers(hookspecs, inspect.isfunction):
        assert name.startswith("payg_"), name
        assert spec.__doc__ and len(spec.__doc__.strip()) > 40, f"{name} needs a docstring"


def test_readme_hook_reference_matches_the_code():
    """The README lists each hook with its exact signature, and no hook that does not exist."""
    readme = user_docs.text()
    declared = {
        name: f"{name}({', '.join(inspect.signature(fn).parameters)})"
        for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
    }
    for name, signature in declared.items():
        assert f"`{signature}`" in readme, f"README.md must document {signature}"
    reference = user_docs.section("Hook reference")
    mentioned = set(re.findall(r"`(payg_[a-z_]+)\(", reference))
    assert mentioned <= set(declared), f"README.md documents hooks that do not exist: {mentioned - set(declared)}"


def test_hookimpl_marker_is_exported_from_the_package_root():
    assert litellm_payg.hookimpl is hookspecs.hookimpl
    assert sys.modules["litellm_payg"].__all__.count("hookimpl") == 1


def test_public_names_resolve_from_the_package_root():
    import litellm

    for name in litellm_payg.__all__:
        assert getattr(litellm_payg, name) is not None, name
    assert issubclass(litellm_payg.BudgetExceeded, litellm.BudgetExceededError)
