"""A proxy client that goes away in the middle of a stream: the answer is charged what LiteLLM's
proxy counted of it before the client left (prompt plus the chunks streamed), marked as an
estimate, and nothing stays reserved.

The deployment streams from the stand-in provider with a pause before every chunk
(``slow_stream``), so the client can read a few chunks and hang up while the provider is still
sending; the proxy then bills the partial stream (``client_disconnected``).
"""

from __future__ import annotations

import time

import httpx
import pytest
import yaml
from proxy_fixtures import litellm_proxy_factory  # noqa: F401  (fixture)
from trust_helpers import AUTH_MODULE, AUTH_MODULE_NAME, LedgerView, auth, new_key, wait_until

MODEL = "openai/gpt-4o-mini"
IN_PRICE, OUT_PRICE = 1e-06, 2e-06
WORDS = 60  # one chunk per word


@pytest.fixture(scope="module")
def proxy(litellm_proxy_factory, _standin_server):  # noqa: F811
    policy = {"version": 1, "ledger": "sqlite:///payg-ledger.db",
              "budgets": [{"scope": "global", "window": "day", "limit_usd": 10}]}
    config = {
        "model_list": [{"model_name": "chat", "litellm_params": {
            "model": MODEL, "api_key": "sk-test", "api_base": _standin_server.url("openai"),
            "input_cost_per_token": IN_PRICE, "output_cost_per_token": OUT_PRICE}, "model_info": {"id": "slow"}}],
        "litellm_settings": {"callbacks": ["litellm_payg.proxy_handler"]},
        "general_settings": {"custom_auth": f"{AUTH_MODULE_NAME}.user_api_key_auth"},
    }
    running = litellm_proxy_factory(config, name="disconnect", files={
        "payg-policy.yaml": yaml.safe_dump(policy), f"{AUTH_MODULE_NAME}.py": AUTH_MODULE}).wait_ready()
    view = LedgerView(running.workdir)
    yield running, view
    view.close()


def test_a_client_that_disconnects_mid_stream_is_charged_the_streamed_part_as_an_estimate(proxy, standin):
    running, ledger = proxy
    standin.reply("openai", text=" ".join(f"w{i}" for i in range(WORDS)))
    standin.fail("openai", "slow_stream", delay_ms=100, times=None)
    key = new_key(label="leaver")
    body = {"model": "chat", "messages": [{"role": "user", "content": "count for me"}], "max_tokens": 500,
            "stream": True, "stream_options": {"include_usage": True}}
    read = 0
    with httpx.Client(base_url=running.base_url, timeout=30, trust_env=False) as client:
        with client.stream("POST", "/v1/chat/completions", json=body, headers=auth(key)) as resp:
            assert resp.status_code == 200
            for line in resp.iter_lines():
                if line.startswith("data: {"):
                    read += 1
                if read == 3:
                    break  # hang up while the provider is still streaming
    started = time.monotonic()
    assert wait_until(lambda: len(ledger.records(key=key)) == 1, timeout=10), (
        f"no record for the disconnected stream after {time.monotonic() - started:.1f}s; open: {ledger.open()}")
    (record,) = ledger.records(key=key)
    assert record.attrs.get("abandoned") == "client_disconnected" and record.attrs.get("usage") == "estimated", record.attrs
    full_reservation = 500 * OUT_PRICE
    assert 0 < record.amount_usd < full_reservation, (record.amount_usd, full_reservation)
    assert record.amount_usd < WORDS * OUT_PRICE + 50 * IN_PRICE  # less than the whole answer would have cost
    assert ledger.left_open_since(0, timeout=3) == 0
