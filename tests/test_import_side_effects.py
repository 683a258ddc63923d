"""Importing litellm_payg changes nothing in the process: no environment variable, no LiteLLM global.

Each check runs in a fresh interpreter with a minimal environment (no ``LITELLM_LOCAL_MODEL_COST_MAP``,
no pytest plugin), because this test process has the suite's offline settings. LiteLLM is pointed
at an unreachable loopback URL for its price map, so when a check imports it, it falls back to its
bundled copy without leaving the machine and without the variable under test being set.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from litellm_payg.adapter import litellm_versions

# What a check prints: the environment and LiteLLM's globals before and after the import.
SNAPSHOT = textwrap.dedent("""\
    import json, os, sys

    def litellm_state():
        if "litellm" not in sys.modules:
            return None
        import litellm
        from litellm.llms.groq.chat.transformation import GroqChatCompletionStreamingHandler, GroqChatConfig
        lists = ("callbacks", "success_callback", "failure_callback", "_async_success_callback",
                 "_async_failure_callback", "input_callback", "service_callback")
        return {
            **{name: [repr(cb) for cb in getattr(litellm, name, None) or []] for name in lists},
            **{name + ".id": id(getattr(litellm, name, None)) for name in lists},
            "model_cost.id": id(litellm.model_cost),
            "model_cost.len": len(litellm.model_cost),
            "suppress_debug_info": litellm.suppress_debug_info,
            "budget_exceeded_status_code": getattr(litellm, "budget_exceeded_status_code", None),
            "groq.transform_response": id(GroqChatConfig.transform_response),
            "groq.chunk_parser": id(GroqChatCompletionStreamingHandler.chunk_parser),
        }

    def snapshot():
        return {"env": dict(os.environ), "litellm": litellm_state()}
""")


def _run(code: str) -> dict:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        # LiteLLM's price map fetch fails at once (connection refused) and it uses its bundled copy
        "LITELLM_MODEL_COST_MAP_URL": "http://127.0.0.1:9/model_prices.json",
    }
    for name in ("PYTHONPATH", "PAYG_NETLOG"):  # keep the suite's network guard in the child
        if os.environ.get(name):
            env[name] = os.environ[name]
    result = subprocess.run([sys.executable, "-c", SNAPSHOT + textwrap.dedent(code)], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_importing_the_package_changes_no_environment_variable_and_does_not_import_litellm():
    out = _run("""
        before = snapshot()
        import litellm_payg
        from litellm_payg import hookimpl, PaygError, PolicyError
        import litellm_payg.tools.cli, litellm_payg.adapter.litellm_versions
        after = snapshot()
        print(json.dumps({"before": before, "after": after, "litellm_loaded": "litellm" in sys.modules}))
    """)
    assert "LITELLM_LOCAL_MODEL_COST_MAP" not in out["after"]["env"]
    assert out["after"]["env"] == out["before"]["env"]
    assert not out["litellm_loaded"]


def test_importing_the_adapter_proxy_and_attach_changes_no_litellm_global():
    """An application that imported LiteLLM (and so chose its price map) then imports the plugin:
    its environment, LiteLLM's callback lists, price map and the code litellm_fixes repairs are
    untouched until it calls ``attach`` -- which the same snapshot does see, so it can see a change."""
    out = _run("""
        import litellm
        before = snapshot()
        import litellm_payg
        from litellm_payg import attach, Engine, load_policy, BudgetExceeded
        import litellm_payg.adapter.routing, litellm_payg.adapter.proxy, litellm_payg.stores.prices, litellm_payg.adapter.metrics
        from litellm_payg.adapter import litellm_fixes
        imported = snapshot()
        fixes = litellm_fixes.applied()
        router = litellm.Router(model_list=[{"model_name": "chat", "litellm_params": {
            "model": "deepseek/deepseek-chat", "api_key": "x", "mock_response": "hi"}, "model_info": {"id": "ds"}}])
        attach(router, {"version": 1, "ledger": "memory://", "routes": {"chat": []}})
        attached = snapshot()
        print(json.dumps({"before": before, "imported": imported, "fixes": fixes, "attached": attached}))
    """)
    assert out["imported"]["env"] == out["before"]["env"]
    assert "LITELLM_LOCAL_MODEL_COST_MAP" not in out["imported"]["env"]
    assert out["imported"]["litellm"] == out["before"]["litellm"]
    assert out["fixes"] == {}
    # attach does register its callback (and repairs what the installed LiteLLM still needs)
    assert out["attached"]["litellm"]["callbacks"] != out["before"]["litellm"]["callbacks"]
    assert out["attached"]["env"] == out["before"]["env"]


def test_the_cli_prices_offline_unless_the_user_chose(tmp_path):
    """``litellm-payg`` sets LITELLM_LOCAL_MODEL_COST_MAP=True before LiteLLM is imported, unless the
    user set it; ``check`` says which release and which map priced the answer."""
    policy = tmp_path / "p.yaml"
    policy.write_text("version: 1\nledger: memory://\nroutes:\n  chat:\n    - quality_floor: {min_quality: 0}\n")
    out = _run(f"""
        import contextlib, io
        from litellm_payg.tools.cli import main
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            rc = main(["check", {str(policy)!r}])
        print(json.dumps({{"rc": rc, "out": buf.getvalue(), "env": os.environ.get("LITELLM_LOCAL_MODEL_COST_MAP")}}))
    """)
    assert out["rc"] == 0 and out["env"] == "True"
    assert f"LiteLLM {litellm_versions.litellm_version()}" in out["out"]
    assert "bundled price map (LITELLM_LOCAL_MODEL_COST_MAP=True)" in out["out"]


@pytest.mark.parametrize("choice", ["False", "True"])
def test_the_cli_keeps_the_users_choice(monkeypatch, capsys, choice):
    from litellm_payg.tools.cli import main

    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", choice)
    assert main(["plugins"]) == 0
    assert os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] == choice
