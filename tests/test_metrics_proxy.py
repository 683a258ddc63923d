"""A real LiteLLM proxy serves the plugin's Prometheus metrics on ``/metrics`` when ``"prometheus"``
is in its callbacks, as the README's Prometheus paragraph says -- and not without it (LiteLLM mounts
the endpoint for its own Prometheus logger only)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
import yaml

pytest.importorskip("prometheus_client", reason="the metrics extra (prometheus_client) is not installed")

from proxy_fixtures import MASTER_KEY, RunningProxy, litellm_proxy_factory  # noqa: E402,F401  (fixture)

POLICY = {
    "version": 1,
    "ledger": "memory://",
    "plugins": ["litellm_payg.adapter.metrics"],
    "routes": {"chat": [{"cost_threshold": {"use": "deepseek/deepseek-chat", "max_usd_per_1k_tokens": 0.0015,
                                            "otherwise": "mistral/mistral-large-latest"}}]},
}


def _config(callbacks: list[str]) -> dict:
    return {
        "model_list": [
            {"model_name": "chat", "litellm_params": {"model": m, "api_key": "sk-not-a-key", "mock_response": "hi"},
             "model_info": {"id": dep}}
            for m, dep in (("deepseek/deepseek-chat", "ds"), ("mistral/mistral-large-latest", "ml"))
        ],
        "litellm_settings": {"callbacks": callbacks},
    }


@pytest.fixture(scope="module")
def proxies(litellm_proxy_factory) -> tuple[RunningProxy, RunningProxy]:  # noqa: F811
    files = {"payg-policy.yaml": yaml.safe_dump(POLICY, sort_keys=False)}
    with_prom = litellm_proxy_factory(_config(["litellm_payg.proxy_handler", "prometheus"]),
                                      name="with-prometheus", files=files)
    without = litellm_proxy_factory(_config(["litellm_payg.proxy_handler"]), name="without-prometheus", files=files)
    return with_prom.wait_ready(), without.wait_ready()


def _get(url: str) -> tuple[int, str]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {MASTER_KEY}"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def _chat(proxy: RunningProxy) -> None:
    body = json.dumps({"model": "chat", "messages": [{"role": "user", "content": "hello"}]}).encode()
    req = urllib.request.Request(f"{proxy.base_url}/v1/chat/completions", data=body, method="POST",
                                 headers={"Authorization": f"Bearer {MASTER_KEY}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        assert r.status == 200


def test_metrics_endpoint_needs_prometheus_in_the_callbacks(proxies):
    with_prom, without = proxies
    _chat(with_prom)
    _chat(without)
    status, text = _get(f"{with_prom.base_url}/metrics/")
    assert status == 200, text[:500]
    assert 'litellm_payg_requests_total{deployment="ds"' in text, text[:2000]
    assert "litellm_payg_decisions_total" in text
    status, _ = _get(f"{without.base_url}/metrics/")
    assert status == 404  # no "prometheus" callback: LiteLLM mounts no /metrics
