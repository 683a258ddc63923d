"""``sessions.mint`` inside a real LiteLLM proxy, driven by the OpenAI SDK: a client that cannot send
a run id has its requests counted in its key's own minted run (said in ``x-payg-run-minted``), so a
policy that requires runs still caps it; another key's requests are another run; sending the minted
id back names the same run; and without ``mint`` the same request is a 400 (the required run)."""

from __future__ import annotations

import pytest
import yaml

from proxy_fixtures import RunningProxy, litellm_proxy_factory  # noqa: F401  (fixture)
from trust_helpers import AUTH_MODULE, AUTH_MODULE_NAME, new_key

POLICY = {
    "version": 1,
    "ledger": "sqlite:///payg-ledger.db",
    "routes": {"agent": []},
    "sessions": {"id_from": ["header:x-agent-run"], "required": True, "mint": True},
    "budgets": [{"name": "per-run", "scope": "session:*", "window": "session:30m", "limit_usd": 1.0,
                 "max_requests": 2}],
}
CONFIG = {
    "model_list": [{
        "model_name": "agent",
        "litellm_params": {"model": "mistral/mistral-large-latest", "api_key": "not-used-mock-response",
                           "mock_response": "answered", "input_cost_per_token": 1e-5, "output_cost_per_token": 1e-5},
        "model_info": {"id": "dear"},
    }],
    "litellm_settings": {"callbacks": ["litellm_payg.proxy_handler"]},
    "general_settings": {"custom_auth": f"{AUTH_MODULE_NAME}.user_api_key_auth"},
}


@pytest.fixture(scope="module")
def proxy(litellm_proxy_factory) -> RunningProxy:  # noqa: F811
    return litellm_proxy_factory(
        CONFIG, name="runs-mint",
        files={"payg-policy.yaml": yaml.safe_dump(POLICY, sort_keys=False), f"{AUTH_MODULE_NAME}.py": AUTH_MODULE},
    ).wait_ready()


def _ask(key: str, proxy: RunningProxy, run: str | None = None):
    import openai

    client = openai.OpenAI(base_url=f"{proxy.base_url}/v1", api_key=key, max_retries=0, timeout=30)
    raw = client.chat.completions.with_raw_response.create(
        model="agent", messages=[{"role": "user", "content": "hi"}], max_tokens=20,
        extra_headers={"x-agent-run": run} if run is not None else None)
    return raw.headers


def test_a_key_without_a_run_id_counts_in_its_minted_run(proxy):
    import openai

    alice, bob = new_key(label="alice"), new_key(label="bob")
    first = _ask(alice, proxy)
    minted = first["x-payg-run-minted"]
    assert minted.startswith("key-run-") and first["x-payg-run-requests"] == "1"
    second = _ask(alice, proxy)
    assert second["x-payg-run-minted"] == minted and second["x-payg-run-requests"] == "2"
    with pytest.raises(openai.RateLimitError) as info:  # the minted run's max_requests (2) holds
        _ask(alice, proxy)
    assert "max_requests" in str(info.value) or "requests" in str(info.value)
    with pytest.raises(openai.RateLimitError):  # the minted id sent back names the same run
        _ask(alice, proxy, run=minted)
    other = _ask(bob, proxy)  # another key: its own run
    assert other["x-payg-run-minted"] != minted and other["x-payg-run-requests"] == "1"
    named = _ask(bob, proxy, run="bob-task-1")  # a key that names its run is not minted one
    assert "x-payg-run-minted" not in named and named["x-payg-run-requests"] == "1"
