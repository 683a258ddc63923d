"""litellm-payg inside a real LiteLLM proxy process (``litellm --config ...``), driven by the OpenAI SDK.

Two proxies boot at once for the whole module:

* ``good``: the seed policy ``policies/cost-threshold.yaml`` exactly as shipped, found through
  ``LITELLM_PAYG_POLICY`` set under ``environment_variables:`` in config.yaml;
* ``broken``: the same policy with a negative threshold, found as ``payg-policy.yaml`` next to
  config.yaml.

Deployments answer with ``mock_response`` texts, so nothing leaves the machine and the served
deployment is visible in the body as well as in LiteLLM's ``x-litellm-model-id`` header.
"""

from __future__ import annotations

import json
import sys
import time
import types
from pathlib import Path

import pytest
import yaml

from proxy_fixtures import RunningProxy, litellm_proxy_factory, require_proxy_deps  # noqa: F401  (fixture)

REPO_ROOT = Path(__file__).resolve().parents[1]
SEED_POLICY = REPO_ROOT / "policies" / "cost-threshold.yaml"

DEEPSEEK = "deepseek/deepseek-chat"
MISTRAL = "mistral/mistral-large-latest"
# A price rise over LiteLLM's bundled DeepSeek price (to $0.55/M in, $2.19/M out), set on the
# deployment: with the bundled $0.28/M in, $0.42/M out DeepSeek is never over $0.0015/1K.
DEEPSEEK_IN = 5.5e-07
DEEPSEEK_OUT = 2.19e-06
FROM_DEEPSEEK = "served by the deepseek deployment"
FROM_MISTRAL = "served by the mistral-large deployment"


def _model_list() -> list[dict]:
    return [
        {
            "model_name": "chat",
            "litellm_params": {
                "model": DEEPSEEK,
                "api_key": "not-used-mock-response",
                "mock_response": FROM_DEEPSEEK,
                "input_cost_per_token": DEEPSEEK_IN,
                "output_cost_per_token": DEEPSEEK_OUT,
            },
        },
        {
            "model_name": "chat",
            "litellm_params": {"model": MISTRAL, "api_key": "not-used-mock-response", "mock_response": FROM_MISTRAL},
        },
    ]


def _threshold() -> float:
    (rule,) = yaml.safe_load(SEED_POLICY.read_text())["routes"]["chat"]
    return float(rule["cost_threshold"]["max_usd_per_1k_tokens"])


def _usd_per_1k_on_deepseek(messages: list[dict], max_tokens: int) -> float:
    """The request's blended price per 1K tokens on DeepSeek, as the policy defines it, with prompt
    tokens counted by LiteLLM. Counted for both models of the group: the verdict must not depend on
    which one's tokenizer is used."""
    import litellm

    prices = []
    for model in (DEEPSEEK, MISTRAL):
        prompt = litellm.token_counter(model=model, messages=messages)
        prices.append((prompt * DEEPSEEK_IN + max_tokens * DEEPSEEK_OUT) / (prompt + max_tokens) * 1000)
    limit = _threshold()
    assert (prices[0] <= limit) == (prices[1] <= limit), f"verdict depends on the tokenizer: {prices} vs {limit}"
    return prices[0]


SHORT_PROMPT = [{"role": "user", "content": "Write a haiku about the sea."}]
SHORT_MAX_TOKENS = 200  # mostly output: DeepSeek's dearer output price dominates
LONG_PROMPT = [{
    "role": "user",
    "content": "Summarise the following meeting notes in one sentence.\n"
    + "\n".join(f"- Item {i}: the team reviewed the quarterly budget, the vendor contracts and the hiring plan."
                for i in range(1, 21)),
}]
LONG_MAX_TOKENS = 32  # mostly prompt: DeepSeek's cheap input price dominates


@pytest.fixture(scope="module")
def proxies(litellm_proxy_factory) -> dict[str, RunningProxy]:  # noqa: F811
    broken_policy = SEED_POLICY.read_text().replace("max_usd_per_1k_tokens: 0.0015", "max_usd_per_1k_tokens: -0.0015")
    assert "-0.0015" in broken_policy
    t0 = time.monotonic()
    good = litellm_proxy_factory(
        {
            "model_list": _model_list(),
            "litellm_settings": {"callbacks": ["litellm_payg.proxy_handler"]},
            "environment_variables": {"LITELLM_PAYG_POLICY": str(SEED_POLICY)},
        },
        name="good",
        cold=True,  # the `litellm` console script itself, not a fork of the warm zygote (proxy_zygote.py)
    )
    broken = litellm_proxy_factory(
        {"model_list": _model_list(), "litellm_settings": {"callbacks": ["litellm_payg.proxy_handler"]}},
        name="broken",
        files={"payg-policy.yaml": broken_policy},
    )
    budget = litellm_proxy_factory(
        {
            "model_list": _model_list() + [{
                "model_name": "premium",
                "litellm_params": {"model": MISTRAL, "api_key": "not-used-mock-response", "mock_response": FROM_MISTRAL},
            }],
            "litellm_settings": {"callbacks": ["litellm_payg.proxy_handler"]},
            "router_settings": {"fallbacks": [{"chat": ["premium"]}]},
        },
        name="budget",
        files={"payg-policy.yaml": BUDGET_POLICY},
    )
    good.wait_ready()
    broken.wait_ready()
    budget.wait_ready()
    print(f"\nproxies ready: good {good.ready_after_s:.1f}s, broken {broken.ready_after_s:.1f}s, "
          f"budget {budget.ready_after_s:.1f}s, all {time.monotonic() - t0:.1f}s")
    return {"good": good, "broken": broken, "budget": budget}


# Room for exactly one small request on the `chat` group today; `chat` falls back to `premium`,
# which the budget does not cover: a block must not be routed around through that fallback.
BUDGET_POLICY = """\
version: 1
ledger: sqlite:///payg-ledger.db
routes:
  chat:
    - cost_threshold:
        use: deepseek/deepseek-chat
        max_usd_per_1k_tokens: 0.01
        otherwise: mistral/mistral-large-latest
budgets:
  - name: chat-daily
    scope: group:chat
    window: day
    limit_usd: 0.00008
    on_exceed: block
"""


def _client(proxy: RunningProxy):
    import openai

    return openai.OpenAI(base_url=f"{proxy.base_url}/v1", api_key=proxy.master_key, max_retries=0, timeout=30)


def _chat(proxy: RunningProxy, messages: list[dict], max_tokens: int):
    raw = _client(proxy).chat.completions.with_raw_response.create(model="chat", messages=messages, max_tokens=max_tokens)
    return raw.headers, raw.parse()


def test_under_the_threshold_is_served_by_deepseek(proxies):
    proxy = proxies["good"]
    price = _usd_per_1k_on_deepseek(LONG_PROMPT, LONG_MAX_TOKENS)
    assert price <= _threshold(), f"test setup: the long prompt should be under the threshold, is {price}"

    headers, completion = _chat(proxy, LONG_PROMPT, LONG_MAX_TOKENS)

    assert completion.choices[0].message.content == FROM_DEEPSEEK
    assert headers["x-litellm-model-name"] == DEEPSEEK
    assert headers["x-payg-chosen-model"] == DEEPSEEK
    assert headers["x-payg-chosen"] == headers["x-litellm-model-id"]
    decision = json.loads(headers["x-payg-decision"])
    assert decision["group"] == "chat"
    assert decision["dropped"] == []
    assert decision["output_tokens"] == LONG_MAX_TOKENS
    assert len(decision["order"]) == 2 and decision["order"][0] == headers["x-litellm-model-id"]  # Mistral is the fallback


def test_over_the_threshold_is_served_by_mistral_large(proxies):
    proxy = proxies["good"]
    price = _usd_per_1k_on_deepseek(SHORT_PROMPT, SHORT_MAX_TOKENS)
    assert price > _threshold(), f"test setup: the short prompt should be over the threshold, is {price}"

    headers, completion = _chat(proxy, SHORT_PROMPT, SHORT_MAX_TOKENS)

    assert completion.choices[0].message.content == FROM_MISTRAL
    assert headers["x-litellm-model-name"] == MISTRAL
    assert headers["x-payg-chosen-model"] == MISTRAL
    assert headers["x-payg-chosen"] == headers["x-litellm-model-id"]
    decision = json.loads(headers["x-payg-decision"])
    (drop,) = decision["dropped"]
    assert drop["model"] == DEEPSEEK and drop["by"] == "cost_threshold"
    assert "max_usd_per_1k_tokens" in drop["reason"]
    assert f"${price:.6f}/1K" in drop["reason"]  # the proxy priced it exactly as the test did

    log = proxy.wait_for_log("payg decision group=chat trace=")
    lines = [line for line in log.splitlines() if "payg decision group=chat" in line and f"({MISTRAL})" in line.split("chosen=")[1].split(" order=")[0]]
    assert lines, "no 'payg decision' line choosing Mistral Large in the proxy log"
    assert "over max_usd_per_1k_tokens" in lines[-1]


def test_policy_is_loaded_and_bound_at_startup_log(proxies):
    log = proxies["good"].log()
    assert f"litellm-payg: policy {SEED_POLICY} loaded (groups: chat)" in log
    assert "ERROR" not in "\n".join(line for line in log.splitlines() if "litellm_payg" in line)


def test_a_broken_policy_refuses_requests_naming_the_file_and_field(proxies):
    import openai

    proxy = proxies["broken"]
    policy_file = proxy.workdir / "payg-policy.yaml"
    field = "routes.chat[0].cost_threshold.max_usd_per_1k_tokens"

    with pytest.raises(openai.InternalServerError) as excinfo:
        _chat(proxy, SHORT_PROMPT, SHORT_MAX_TOKENS)
    message = str(excinfo.value)
    assert field in message and "greater than 0" in message and "-0.0015" in message
    assert "payg-policy.yaml" in message

    log = proxy.log()
    error_lines = [line for line in log.splitlines() if "litellm_payg:ERROR" in line]
    assert error_lines, "the proxy log has no litellm_payg ERROR line"
    assert "cannot load its policy" in error_lines[0]
    assert f"{policy_file.resolve()}:" in log and field in log  # file:line: field: message
    # no request was routed without the policy
    assert FROM_DEEPSEEK not in log and FROM_MISTRAL not in log
    assert "payg decision" not in log


# -- in-process: finding the policy, following the proxy's Router ---------------------------------


def test_policy_is_found_next_to_the_config_or_a_clear_error(monkeypatch, tmp_path):
    from litellm_payg.core.errors import PolicyError
    from litellm_payg.adapter.proxy import POLICY_ENV, find_policy_path

    config = tmp_path / "config.yaml"
    config.write_text("model_list: []\n")
    monkeypatch.delenv(POLICY_ENV, raising=False)
    monkeypatch.setitem(sys.modules, "litellm.proxy.proxy_server", types.SimpleNamespace(user_config_file_path=str(config)))

    with pytest.raises(PolicyError) as excinfo:
        find_policy_path()
    assert POLICY_ENV in str(excinfo.value) and str(tmp_path / "payg-policy.yaml") in str(excinfo.value)

    (tmp_path / "payg-policy.yaml").write_text(SEED_POLICY.read_text())
    assert find_policy_path() == (tmp_path / "payg-policy.yaml").resolve()

    monkeypatch.setenv(POLICY_ENV, str(SEED_POLICY))
    assert find_policy_path() == SEED_POLICY.resolve()


async def test_rebinds_when_the_proxy_router_changes(monkeypatch):
    """Deployments added at runtime (``/model/new``, DB models) are checked against the policy on the
    next request; a deployment the cost rule cannot price makes requests fail, not pass unrouted."""
    require_proxy_deps()  # the pre-call hook raises fastapi's HTTPException
    import litellm
    from fastapi import HTTPException
    from litellm.types.router import Deployment, LiteLLM_Params

    from litellm_payg.adapter import litellm_versions
    from litellm_payg.adapter.proxy import ProxyPaygRouting

    router = litellm.Router(model_list=_model_list())
    server = types.SimpleNamespace(llm_router=None, user_config_file_path=None)
    monkeypatch.setitem(sys.modules, "litellm.proxy.proxy_server", server)
    handler = ProxyPaygRouting(SEED_POLICY)
    assert handler.error is None

    await handler.async_pre_call_hook(None, None, {"model": "chat"}, "completion")  # no router yet: no-op
    server.llm_router = router
    await handler.async_pre_call_hook(None, None, {"model": "chat"}, "completion")
    assert len(handler._candidates) == 2

    litellm_versions.add_deployment(router, Deployment(
        model_name="chat",
        litellm_params=LiteLLM_Params(model="openai/my-unpriced-finetune", api_key="x", mock_response="?"),
        model_info={"id": "unpriced-1"},
    ))
    with pytest.raises(HTTPException) as excinfo:
        await handler.async_pre_call_hook(None, None, {"model": "chat"}, "completion")
    assert excinfo.value.status_code == 500
    assert "unpriced-1" in excinfo.value.detail and "routes.chat[0].cost_threshold" in excinfo.value.detail

    litellm_versions.delete_deployment(router, "unpriced-1")
    await handler.async_pre_call_hook(None, None, {"model": "chat"}, "completion")
    assert handler.error is None and len(handler._candidates) == 2


def test_a_budget_block_reaches_the_openai_sdk_as_http_429_naming_the_budget(proxies):
    import openai

    proxy = proxies["budget"]
    headers, completion = _chat(proxy, SHORT_PROMPT, 20)  # the first one fits
    assert completion.choices[0].message.content == FROM_DEEPSEEK
    with pytest.raises(openai.RateLimitError) as info:
        _chat(proxy, SHORT_PROMPT, 20)
    assert info.value.status_code == 429
    message = str(info.value)
    assert "budget 'chat-daily' (group:chat, day) exceeded" in message
    assert "limit $0.000080" in message and "resets at" in message
    assert FROM_MISTRAL not in message  # not served by the `premium` fallback either


async def test_the_proxy_handler_installs_validators_and_context_fallbacks_like_attach(monkeypatch, tmp_path):
    """``validate:`` and ``failover.on.context_window: larger_context`` need more than the filter
    callback (a guardrail, a context-window fallback alias): the proxy handler sets them up too."""
    require_proxy_deps()
    import litellm

    from litellm_payg.adapter import litellm_versions
    from litellm_payg.adapter.routing import LARGER_CONTEXT_SUFFIX, ResponseGuard
    from litellm_payg.adapter.proxy import ProxyPaygRouting

    policy = tmp_path / "payg-policy.yaml"
    policy.write_text(SEED_POLICY.read_text() + "ledger: memory://\nfailover: {}\nvalidate: [non_empty]\n")
    model_list = _model_list()
    # DeepSeek answers with nothing but whitespace (non_empty strips it). Not "": LiteLLM before
    # 1.109.0 takes an empty mock_response for none and calls the real provider.
    model_list[0]["litellm_params"]["mock_response"] = " "
    router = litellm.Router(model_list=model_list, num_retries=2, retry_after=0)
    server = types.SimpleNamespace(llm_router=router, user_config_file_path=None)
    monkeypatch.setitem(sys.modules, "litellm.proxy.proxy_server", server)
    handler = ProxyPaygRouting(policy)
    litellm.logging_callback_manager.add_litellm_callback(handler)
    try:
        await handler.async_pre_call_hook(None, None, {"model": "chat"}, "completion")
        assert any(isinstance(cb, ResponseGuard) and cb.adapter is handler for cb in litellm.callbacks)
        assert {"chat": ["chat" + LARGER_CONTEXT_SUFFIX]} in litellm_versions.context_window_fallbacks(router)
        response = await router.acompletion(model="chat", messages=LONG_PROMPT, max_tokens=LONG_MAX_TOKENS)
        assert response.choices[0].message.content == FROM_MISTRAL  # the empty answer was rejected
    finally:
        handler.uninstall()
    assert not any(isinstance(cb, ResponseGuard) and cb.adapter is handler for cb in litellm.callbacks)
