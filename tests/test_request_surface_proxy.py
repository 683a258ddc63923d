"""The cap holds by construction, through a real LiteLLM proxy (the Router side, with the bound checked
against LiteLLM's final provider body, is tests/test_request_surface.py).

A hostile client's HTTP bodies (issue #19): ``extra_body`` in the JSON body, ``deployment_id`` on an
Azure group, ``max_tokens: 1`` next to ``max_completion_tokens: 5000`` on an o-series model, speech
on a per-character price. Each is refused with a 400 naming the field, or reserved at a bound that
covers what the stand-in provider was sent (a cap just below the bound refuses it before anything is
sent; one just above lets it through and the stand-in shows the cap it received). Ordinary OpenAI
SDK requests pass.
"""

from __future__ import annotations

import httpx
import pytest
import yaml

from proxy_fixtures import MASTER_KEY, litellm_proxy_factory  # noqa: F401  (fixture)

from standin import StandIn
from trust_helpers import LedgerView, short

MESSAGES = [{"role": "user", "content": "Please tell me what the status of my order number 12345 is today."}]
O3_OUT = 4.4e-06  # o3-mini's bundled output price per token
TTS_PER_CHAR = 1.5e-05  # tts-1's bundled price per character
SPEECH_TEXT = "Your order 12345 has shipped and will arrive on Tuesday. " * 40  # 2,360 characters: $0.0354


@pytest.fixture(scope="module")
def standin():
    with StandIn() as s:
        yield s


def _config(s: StandIn) -> dict:
    def dep(group, dep_id, model, **params):
        return {"model_name": group, "model_info": {"id": dep_id},
                "litellm_params": {"model": model, "api_key": "sk-test", **params}}

    return {
        "model_list": [
            dep("chat", "mini", "openai/gpt-4o-mini", api_base=s.url("openai")),
            dep("reasoning", "o3", "openai/o3-mini", api_base=s.url("openai")),
            dep("cheap", "az", "azure/gpt-4o-mini", api_base="https://example-resource.openai.azure.com",
                api_version="2024-10-21"),
            dep("voice", "tts", "openai/tts-1", api_base="http://127.0.0.1:9/v1"),
        ],
        "router_settings": {"num_retries": 0},
        "litellm_settings": {"callbacks": ["litellm_payg.proxy_handler"]},
    }


POLICY = {
    "version": 1,
    "ledger": "sqlite:///payg-ledger.db",
    "routes": {group: [{"quality_floor": {"min_quality": 0}}] for group in ("chat", "reasoning", "cheap")},
    "models": {m: {"quality": 1} for m in ("openai/gpt-4o-mini", "openai/o3-mini", "azure/gpt-4o-mini")},
    "budgets": [
        {"name": "all", "scope": "global", "window": "day", "limit_usd": 10, "on_exceed": "block"},
        # 5,000 o3-mini output tokens ($0.022) do not fit; 1,000 ($0.0044) do
        {"name": "reasoning", "scope": "group:reasoning", "window": "day", "limit_usd": 0.01, "on_exceed": "block"},
        {"name": "voice", "scope": "group:voice", "window": "day", "limit_usd": 0.01, "on_exceed": "block"},
    ],
}


@pytest.fixture(scope="module")
def proxy(litellm_proxy_factory, standin):  # noqa: F811
    running = litellm_proxy_factory(_config(standin), name="surface",
                                    files={"payg-policy.yaml": yaml.safe_dump(POLICY, sort_keys=False)}).wait_ready()
    view = LedgerView(running.workdir)
    yield running, view
    view.close()


def _post(proxy, path, body) -> httpx.Response:
    running, _ = proxy
    with httpx.Client(base_url=running.base_url, timeout=60, trust_env=False) as client:
        return client.post(path, json=body, headers={"Authorization": f"Bearer {MASTER_KEY}"})


@pytest.mark.parametrize("extra_body,named", [
    ({"max_tokens": 5000}, "extra_body.max_tokens"),
    ({"n": 8}, "extra_body.n"),
    ({"stream": True}, "extra_body.stream"),
    ("text", "extra_body"),
])
def test_extra_body_in_the_json_body_is_a_400_naming_it(proxy, standin, extra_body, named):
    before = standin.hits("openai")
    resp = _post(proxy, "/v1/chat/completions",
                 {"model": "chat", "messages": MESSAGES, "max_tokens": 5, "extra_body": extra_body})
    assert resp.status_code == 400 and repr(named) in resp.text, short(resp)
    assert standin.hits("openai") == before


def test_deployment_id_on_an_azure_group_is_a_400(proxy):
    resp = _post(proxy, "/v1/chat/completions",
                 {"model": "cheap", "messages": MESSAGES, "max_tokens": 5, "deployment_id": "gpt-4o-expensive"})
    assert resp.status_code == 400 and "'deployment_id'" in resp.text, short(resp)


def test_o_series_max_completion_tokens_is_what_is_reserved(proxy, standin):
    """LiteLLM sends o3-mini only ``max_completion_tokens``: 5,000 of them at $4.40/M do not fit a
    $0.01 cap, whatever ``max_tokens: 1`` says; 1,000 do, and the stand-in shows what was sent."""
    before = standin.hits("openai", model="o3-mini")
    resp = _post(proxy, "/v1/chat/completions",
                 {"model": "reasoning", "messages": MESSAGES, "max_tokens": 1, "max_completion_tokens": 5000})
    assert resp.status_code == 429, short(resp)
    assert standin.hits("openai", model="o3-mini") == before
    resp = _post(proxy, "/v1/chat/completions",
                 {"model": "reasoning", "messages": MESSAGES, "max_tokens": 1, "max_completion_tokens": 1000})
    assert resp.status_code == 200, short(resp)
    body = standin.requests("openai", model="o3-mini")[-1].body
    assert body.get("max_completion_tokens") == 1000 and 1000 * O3_OUT <= 0.01


def test_speech_is_reserved_per_character(proxy):
    """tts-1 at $15 per 1M characters: 2,360 characters ($0.035) do not fit a $0.01 cap. Reserved at
    $0, the request went to the provider (here: nothing listens, a 500)."""
    resp = _post(proxy, "/v1/audio/speech", {"model": "voice", "input": SPEECH_TEXT, "voice": "alloy"})
    assert resp.status_code == 429, short(resp)
    assert "voice" in resp.text


def test_ordinary_openai_sdk_requests_pass(proxy, standin):
    import openai

    running, view = proxy
    client = openai.OpenAI(base_url=running.base_url + "/v1", api_key=MASTER_KEY, max_retries=0,
                           http_client=httpx.Client(trust_env=False))
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}]
    answer = client.chat.completions.create(
        model="chat", messages=MESSAGES, max_tokens=20, user="end-user-1", seed=7, temperature=0.2, top_p=0.9,
        logprobs=True, top_logprobs=2, response_format={"type": "json_object"}, tools=tools, tool_choice="auto",
        stop=["\n\n"], extra_headers={"x-request-tag": "a"}, metadata={"session": "s1"},
    )
    assert answer.choices
    stream = client.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=20, stream=True,
                                            stream_options={"include_usage": True})
    assert list(stream)
    # the SDK's own extra_body is merged into the JSON body's top level: an ordinary field there
    merged = client.chat.completions.create(model="chat", messages=MESSAGES, extra_body={"max_tokens": 9})
    assert merged.choices
    assert standin.requests("openai", model="gpt-4o-mini")[-1].body.get("max_tokens") == 9


def test_an_azure_sdk_path_with_its_api_version_query_passes(proxy, standin):
    """Every Azure OpenAI SDK sends ``?api-version=``; the proxy copies it into the body as
    ``api_version``. That copy picks the API version of the deployment the policy chose, so it is
    accepted; an ``api_version`` the client writes in the body is not (test_request_surface.py)."""
    before = standin.hits("openai", model="gpt-4o-mini")
    resp = _post(proxy, "/openai/deployments/chat/chat/completions?api-version=2024-10-21",
                 {"messages": MESSAGES, "max_tokens": 5})
    assert resp.status_code == 200, short(resp)
    assert standin.hits("openai", model="gpt-4o-mini") == before + 1
    # (on that path the proxy overwrites a body api_version with the query's: nothing to refuse)
    resp = _post(proxy, "/v1/chat/completions",
                 {"model": "chat", "messages": MESSAGES, "max_tokens": 5, "api_version": "2025-01-01-preview"})
    assert resp.status_code == 400 and "'api_version'" in resp.text, short(resp)
