"""Config mistakes say where: a misspelled ledger URL option, an unquoted URL in YAML, a misspelled
model. Each is found by ``litellm-payg check`` (and the commands that read the ledger, and the proxy
at start) with the file, the line and what to do, and no Python traceback.

Before: ``?prefx=payg:`` passed ``check``, then ``budgets``/``report`` printed redis-py's
``TypeError`` traceback and the proxy answered every request 500 with no file or line; the README's
own unquoted ``redis://host:port/db?prefix=payg:`` failed with a bare YAML error; and
``deepseek/deepseek-chatt`` was told to "add a price".
"""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml

from litellm_payg.core.errors import PolicyError
from litellm_payg.policy.load import load_policy
from litellm_payg.stores.ledger import LedgerError, open_ledger
from litellm_payg.stores.schemes import parse_store_url

GOOD_RULE = """\
    - cost_threshold:
        use: deepseek/deepseek-chat
        max_usd_per_1k_tokens: 0.0015
        otherwise: mistral/mistral-large-latest
"""


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The installed console script, as a user runs it."""
    return subprocess.run(["litellm-payg", *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _input_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    return result.stderr


# -- ledger URL options -----------------------------------------------------------------------------


def test_a_misspelled_redis_option_is_found_by_check_budgets_and_report_with_file_line_and_the_accepted_ones(tmp_path):
    policy = _write(tmp_path, "policy.yaml", """\
        version: 1
        ledger: "redis://127.0.0.1:6379/0?prefx=payg:"
        routes: {}
        budgets:
          - {scope: global, window: day, limit_usd: 5}
        """)
    for command in (["check", "policy.yaml"], ["budgets", "policy.yaml"], ["report", "--policy", "policy.yaml"]):
        err = _input_error(_cli(*command, cwd=tmp_path))
        assert "policy.yaml:2: ledger: " in err, (command, err)
        assert "unknown option 'prefx' (did you mean 'prefix'?)" in err, (command, err)
        assert "accepted: batch_s, prefix" in err and "socket_connect_timeout" in err, (command, err)
    # the same URL on the command line (no policy file): the option and the accepted ones
    err = _input_error(_cli("report", "--ledger", "redis://127.0.0.1:6379/0?prefx=payg:", cwd=tmp_path))
    assert "unknown option 'prefx' (did you mean 'prefix'?)" in err and "accepted: batch_s, prefix" in err


@pytest.mark.parametrize("url, words", [
    ("redis://127.0.0.1:6379/0?socket_timeout=soon", "option 'socket_timeout' has an invalid value 'soon'"),
    ("redis://127.0.0.1:6379/0?ssl_ca_certs=/x.pem", "unknown option 'ssl_ca_certs'"),  # TLS settings: rediss:// only
    ("sqlite:///ledger.db?synchronus=full", "unknown option 'synchronus' (did you mean 'synchronous'?); accepted: batch_s, synchronous"),
    ("sqlite:///ledger.db?synchronous=always", "option 'synchronous' has an invalid value 'always'; accepted: off, normal, full, extra"),
], ids=["redis bad number", "redis tls option on redis://", "sqlite misspelled", "sqlite bad synchronous"])
def test_each_ledger_url_option_is_checked_when_the_policy_is_read(tmp_path, url, words):
    path = _write(tmp_path, "policy.yaml", f'version: 1\nledger: "{url}"\nroutes: {{}}\n')
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert f"{path}:2: ledger: " in str(info.value) and words in str(info.value)
    with pytest.raises(LedgerError, match=words.split(" (")[0].replace("(", r"\(")):
        open_ledger(url)


def test_the_options_that_work_are_accepted(tmp_path):
    for url in ("redis://127.0.0.1:6379/0?prefix=payg:&batch_s=0&socket_connect_timeout=1&max_connections=5",
                "rediss://:pw@127.0.0.1:6380/0?ssl_cert_reqs=none&ssl_ca_certs=/etc/ssl/ca.pem&prefix=p:",
                "sqlite:///ledger.db?synchronous=FULL&batch_s=0"):
        assert parse_store_url(url, "ledger").options


def test_a_redis_password_is_not_repeated_in_the_options_error():
    with pytest.raises(ValueError) as info:
        parse_store_url("redis://:hunter2@127.0.0.1:6379/0?prefx=a", "ledger")
    assert "hunter2" not in str(info.value) and ":***@" in str(info.value)


# -- YAML: an unquoted URL --------------------------------------------------------------------------


def test_an_unquoted_url_ending_in_a_colon_gets_a_hint_to_quote_it(tmp_path):
    """PyYAML reads ``ledger: redis://h:6379/0?prefix=payg:`` as a mapping inside a plain scalar:
    ``ScannerError: mapping values are not allowed here`` at the last ``:``."""
    text = "version: 1\nledger: redis://127.0.0.1:6379/0?prefix=payg:\nroutes: {}\n"
    with pytest.raises(yaml.YAMLError, match="mapping values are not allowed here"):
        yaml.safe_load(text)
    _write(tmp_path, "policy.yaml", text)
    err = _input_error(_cli("check", "policy.yaml", cwd=tmp_path))
    assert "policy.yaml:2: (top level): not valid YAML: mapping values are not allowed here" in err
    assert 'Hint: quote the URL' in err and 'ledger: "redis://127.0.0.1:6379/0?prefix=payg:"' in err
    # quoted as the hint says, it loads
    _write(tmp_path, "policy.yaml", text.replace("ledger: redis://127.0.0.1:6379/0?prefix=payg:",
                                                 'ledger: "redis://127.0.0.1:6379/0?prefix=payg:"'))
    assert load_policy(tmp_path / "policy.yaml").ledger == "redis://127.0.0.1:6379/0?prefix=payg:"


def test_a_yaml_error_on_a_line_without_a_url_gets_no_url_hint(tmp_path):
    _write(tmp_path, "policy.yaml", "version: 1\nroutes:\n  chat: [\n    - x\n")
    err = _input_error(_cli("check", "policy.yaml", cwd=tmp_path))
    assert "not valid YAML" in err and "Hint: quote the URL" not in err


# -- a misspelled model ----------------------------------------------------------------------------

CONFIG = """\
model_list:
  - model_name: chat
    litellm_params: {model: deepseek/deepseek-chat}
    model_info: {id: ds-1}
  - model_name: chat
    litellm_params: {model: mistral/mistral-large-latest}
    model_info: {id: ml-1}
"""


def test_a_misspelled_model_is_told_did_you_mean_from_its_group_not_to_add_a_price(tmp_path):
    _write(tmp_path, "config.yaml", CONFIG)
    _write(tmp_path, "policy.yaml", "version: 1\nroutes:\n  chat:\n" + GOOD_RULE.replace("deepseek/deepseek-chat", "deepseek/deepseek-chatt"))
    err = _input_error(_cli("check", "policy.yaml", "--config", "config.yaml", cwd=tmp_path))
    assert ("policy.yaml:5: routes.chat[0].cost_threshold.use: no deployment of group 'chat' is "
            "'deepseek/deepseek-chatt' (did you mean 'deepseek/deepseek-chat'?)") in err
    assert "price" not in err
    # a deployment id is suggested too
    _write(tmp_path, "policy.yaml", "version: 1\nroutes:\n  chat:\n" + GOOD_RULE.replace("otherwise: mistral/mistral-large-latest", "otherwise: ml-11"))
    err = _input_error(_cli("check", "policy.yaml", "--config", "config.yaml", cwd=tmp_path))
    assert "no deployment of group 'chat' is 'ml-11' (did you mean 'ml-1'?)" in err


def test_without_the_config_a_misspelled_model_is_told_did_you_mean_from_the_price_map(tmp_path):
    _write(tmp_path, "policy.yaml", "version: 1\nroutes:\n  chat:\n" + GOOD_RULE.replace("deepseek/deepseek-chat", "deepseek/deepseek-chatt"))
    err = _input_error(_cli("check", "policy.yaml", cwd=tmp_path))
    assert "policy.yaml:5: routes.chat[0].cost_threshold.use: no known price for model 'deepseek/deepseek-chatt'" in err
    assert "did you mean 'deepseek/deepseek-chat'?" in err
    assert "Hint: check the name against the group's deployments" in err


def test_the_price_hint_stays_for_a_model_that_is_in_its_group(tmp_path):
    """A deployment of the group whose model LiteLLM does not price: the name is right, the price is
    what is missing."""
    _write(tmp_path, "config.yaml", CONFIG.replace("mistral/mistral-large-latest", "acme/house-model-7b"))
    _write(tmp_path, "policy.yaml", "version: 1\nroutes:\n  chat:\n" + GOOD_RULE.replace("mistral/mistral-large-latest", "acme/house-model-7b"))
    err = _input_error(_cli("check", "policy.yaml", "--config", "config.yaml", cwd=tmp_path))
    assert "deployment ml-1 (acme/house-model-7b) of group 'chat' has no known price" in err
    assert "Hint: add 'models: {acme/house-model-7b:" in err and "did you mean" not in err


def test_attach_says_did_you_mean_for_a_misspelled_model():
    from litellm import Router

    import litellm_payg

    router = Router(model_list=[
        {"model_name": "chat", "litellm_params": {"model": "deepseek/deepseek-chat", "mock_response": "x"}, "model_info": {"id": "ds-1"}},
        {"model_name": "chat", "litellm_params": {"model": "mistral/mistral-large-latest", "mock_response": "x"}, "model_info": {"id": "ml-1"}},
    ])
    policy = yaml.safe_load("version: 1\nroutes:\n  chat:\n" + GOOD_RULE.replace("mistral/mistral-large-latest", "mistral/mistral-large-lates"))
    with pytest.raises(PolicyError) as info:
        litellm_payg.attach(router, policy)
    assert "no deployment of group 'chat' is 'mistral/mistral-large-lates' (did you mean 'mistral/mistral-large-latest'?)" in str(info.value)
    assert "price" not in str(info.value)


# -- the proxy at start ---------------------------------------------------------------------------

from proxy_fixtures import litellm_proxy_factory  # noqa: E402,F401  (fixture)

PROXY_CONFIG = {
    "model_list": yaml.safe_load(CONFIG)["model_list"],
    "litellm_settings": {"callbacks": ["litellm_payg.proxy_handler"]},
}
for _d in PROXY_CONFIG["model_list"]:
    _d["litellm_params"].update(api_key="not-used", mock_response="hi")


@pytest.fixture(scope="module")
def misconfigured_proxies(litellm_proxy_factory):  # noqa: F811
    bad_option = 'version: 1\nledger: "sqlite:///payg-ledger.db?synchronus=full"\nroutes: {}\n'
    bad_model = "version: 1\nledger: memory://\nroutes:\n  chat:\n" + GOOD_RULE.replace("deepseek/deepseek-chat", "deepseek/deepseek-chatt")
    started = [litellm_proxy_factory(PROXY_CONFIG, name=name, files={"payg-policy.yaml": text})
               for name, text in (("bad-option", bad_option), ("bad-model", bad_model))]
    return [proxy.wait_ready() for proxy in started]


@pytest.mark.parametrize("which, words", [
    (0, "payg-policy.yaml:2: ledger: SQLite ledger URL 'sqlite:///payg-ledger.db?synchronus=full': unknown option "
        "'synchronus' (did you mean 'synchronous'?); accepted: batch_s, synchronous"),
    (1, "payg-policy.yaml:6: routes.chat[0].cost_threshold.use: no deployment of group 'chat' is "
        "'deepseek/deepseek-chatt' (did you mean 'deepseek/deepseek-chat'?)"),
], ids=["ledger option", "misspelled model"])
def test_the_proxy_logs_the_mistake_at_start_and_answers_with_it(misconfigured_proxies, which, words):
    import httpx

    proxy = misconfigured_proxies[which]
    log = proxy.wait_for_log(words)
    assert "litellm_payg:ERROR" in log and words in log
    response = httpx.post(f"{proxy.base_url}/v1/chat/completions", timeout=30,
                          headers={"Authorization": f"Bearer {proxy.master_key}"},
                          json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 500
    assert words in response.json()["error"]["message"]
    assert response.headers.get("x-should-retry") == "false"  # a misconfiguration: retrying does not help
