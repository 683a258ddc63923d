"""A budget scope that names a model, deployment, provider or group the router does not have can
never apply: it is a PolicyError at ``check --config``, at ``attach`` and when the proxy starts."""

from __future__ import annotations

import subprocess
import sys
import types

import litellm
import pytest
import yaml
from proxy_fixtures import RunningProxy, litellm_proxy_factory, require_proxy_deps  # noqa: F401  (fixture)
from routing_helpers import DEEPSEEK, MISTRAL, deployment

import litellm_payg
from litellm_payg.tools.cli import main as cli
from litellm_payg.core.errors import PolicyError

MODEL_LIST = [deployment("chat", DEEPSEEK, "ds-1"), deployment("chat", MISTRAL, "mi-1"),
              deployment("premium", MISTRAL, "mi-2")]


def _policy(scope: str, **extra) -> str:
    return ("version: 1\nledger: memory://\nbudgets:\n  - name: cap\n"
            f"    scope: '{scope}'\n    window: day\n    limit_usd: 5\n" + "".join(f"    {k}: {v}\n" for k, v in extra.items()))


# (scope, words the message must contain, words the hint must contain)
NAMES_NOTHING = [
    ("model:deepseek-chat", "no deployment of the router has model 'deepseek-chat'", "did you mean 'scope: model:deepseek/deepseek-chat'?"),
    ("model:openai/gpt-4o", "the router has models 'deepseek/deepseek-chat', 'mistral/mistral-large-latest'", "provider prefix included"),
    ("provider:openai", "no deployment of the router has provider 'openai'; the router has providers 'deepseek', 'mistral'", "'provider:*'"),
    ("group:chatt", "no deployment of the router has group 'chatt'; the router has groups 'chat', 'premium'", "did you mean 'scope: group:chat'?"),
    ("deployment:ds-2", "no deployment of the router has deployment 'ds-2'", "model_info.id"),
]
APPLIES = ["model:deepseek/deepseek-chat", "provider:mistral", "group:premium", "deployment:mi-2", "model:*",
           "provider:*", "deployment:*", "user:alice", "tag:batch", "global"]


@pytest.mark.parametrize("scope,words,hint", NAMES_NOTHING, ids=[s for s, _, _ in NAMES_NOTHING])
def test_attach_refuses_a_scope_that_names_nothing(tmp_path, scope, words, hint):
    path = tmp_path / "policy.yaml"
    path.write_text(_policy(scope))
    router = litellm.Router(model_list=MODEL_LIST)
    with pytest.raises(PolicyError) as info:
        litellm_payg.attach(router, str(path))
    message = str(info.value)
    assert f"{path}:5: budgets[0].scope: budget 'cap' can never apply: " in message, message
    assert words in message and hint in message, message


@pytest.mark.parametrize("scope", APPLIES)
def test_a_scope_the_router_has_attaches(tmp_path, scope):
    path = tmp_path / "policy.yaml"
    path.write_text(_policy(scope))
    engine = litellm_payg.attach(litellm.Router(model_list=MODEL_LIST), str(path))
    engine.detach()


@pytest.mark.parametrize("scope,words,hint", NAMES_NOTHING, ids=[s for s, _, _ in NAMES_NOTHING])
def test_check_config_refuses_a_scope_that_names_nothing(tmp_path, capsys, scope, words, hint):
    policy = tmp_path / "policy.yaml"
    policy.write_text(_policy(scope))
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"model_list": MODEL_LIST}))
    assert cli(["check", str(policy), "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"{policy}:5: budgets[0].scope: " in err and words in err and hint in err and "Traceback" not in err
    assert cli(["check", str(policy)]) == 0  # without a config there is nothing to check it against
    capsys.readouterr()


def test_check_config_through_the_console_script(tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text(_policy("provider:opnai"))
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"model_list": [
        {"model_name": "chat", "litellm_params": {"model": "openai/gpt-4o-mini", "api_key": "os.environ/OPENAI_API_KEY"}}]}))
    result = subprocess.run(["litellm-payg", "check", str(policy), "--config", str(config)], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "budgets[0].scope" in result.stderr and "did you mean 'scope: provider:openai'?" in result.stderr


async def test_proxy_handler_checks_the_config_model_list_at_start(monkeypatch, tmp_path, caplog):
    """In process: the handler's __init__ reads the proxy's config file; the error is logged at
    ERROR before any Router exists and every request is refused with it."""
    require_proxy_deps()
    from fastapi import HTTPException

    from litellm_payg.adapter.proxy import ProxyPaygRouting

    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"model_list": MODEL_LIST}))
    policy = tmp_path / "payg-policy.yaml"
    policy.write_text(_policy("group:chatt"))
    server = types.SimpleNamespace(llm_router=None, user_config_file_path=str(config))
    monkeypatch.setitem(sys.modules, "litellm.proxy.proxy_server", server)
    with caplog.at_level("ERROR", logger="litellm_payg"):
        handler = ProxyPaygRouting(policy)
    assert handler.error is not None and "budgets[0].scope" in handler.error
    assert any(r.levelname == "ERROR" and "group 'chatt'" in r.getMessage() for r in caplog.records)
    for router in (None, litellm.Router(model_list=MODEL_LIST)):  # before the Router exists, and after
        server.llm_router = router
        with pytest.raises(HTTPException) as info:
            await handler.async_pre_call_hook(None, None, {"model": "chat"}, "completion")
        assert info.value.status_code == 500 and "budgets[0].scope" in info.value.detail

    # the Router is the authority: a deployment it has (e.g. from the proxy's database) clears it
    policy.write_text(_policy("group:chat"))
    handler = ProxyPaygRouting(policy)
    assert handler.error is None


@pytest.fixture(scope="module")
def scope_proxy(litellm_proxy_factory) -> RunningProxy:  # noqa: F811
    proxy = litellm_proxy_factory(
        {
            "model_list": [
                {"model_name": "chat", "litellm_params": {"model": DEEPSEEK, "api_key": "not-used", "mock_response": "served"}},
            ],
            "litellm_settings": {"callbacks": ["litellm_payg.proxy_handler"]},
        },
        name="scope",
        files={"payg-policy.yaml": _policy("model:deepseek-chat", on_exceed="block")},
    )
    proxy.wait_ready()
    return proxy


def test_a_proxy_whose_budget_names_nothing_logs_it_at_start_and_refuses_requests(scope_proxy):
    import openai

    proxy = scope_proxy
    log = proxy.log()
    error_lines = [line for line in log.splitlines() if "litellm_payg:ERROR" in line]
    assert error_lines and "policy does not fit the model_list of" in error_lines[0], log
    assert "budgets[0].scope" in log and "model 'deepseek-chat'" in log
    assert f"{(proxy.workdir / 'payg-policy.yaml').resolve()}:5:" in log

    client = openai.OpenAI(base_url=f"{proxy.base_url}/v1", api_key=proxy.master_key, max_retries=0, timeout=30)
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}], max_tokens=5)
    message = str(info.value)
    assert "budgets[0].scope" in message and "can never apply" in message
    assert "did you mean 'scope: model:deepseek/deepseek-chat'?" in message
    assert "payg decision" not in proxy.log()  # nothing was routed
