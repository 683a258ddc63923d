"""``plugins: [litellm_payg.adapter.metrics]``: Prometheus metrics in the default registry (the one the LiteLLM
proxy serves on /metrics), fed by a real Router's decisions and outcomes."""

from __future__ import annotations

import asyncio
import re
import time

import pytest

prometheus_client = pytest.importorskip("prometheus_client", reason="the metrics extra (prometheus_client) is not installed")

from routing_helpers import DEEPSEEK, MISTRAL, attached, deployment, settled  # noqa: E402

SHORT = [{"role": "user", "content": "hi"}]
LONG = [{"role": "user", "content": "please explain in detail why the printer is offline " * 10}]


def _value(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line[len(name):line.index("}") + 1]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None




async def test_metrics_from_real_router_traffic():
    group = "metrics-chat"  # a group name no other test uses: the registry is process-wide
    policy = {
        "version": 1,
        "ledger": "memory://",
        "plugins": ["litellm_payg.adapter.metrics"],
        "models": {DEEPSEEK: {"quality": 0.7}, MISTRAL: {"quality": 0.9}},
        "routes": {group: [{"quality_floor": {"min_quality": 0.85, "tiers": [{"up_to_prompt_tokens": 30, "min_quality": 0.6}]}}]},
        "budgets": [
            {"name": "metrics-global", "scope": "global", "window": "day", "limit_usd": 1.0},
            {"name": "metrics-user", "scope": "user:*", "window": "month", "limit_usd": 0.5, "on_exceed": "alert"},
        ],
    }
    model_list = [deployment(group, DEEPSEEK, "m-ds", "short answer"), deployment(group, MISTRAL, "m-ml", "long answer " * 10)]
    with attached(model_list, policy) as (router, engine):
        before = prometheus_client.generate_latest().decode()
        for messages in (SHORT, SHORT, LONG):
            await router.acompletion(model=group, messages=messages, metadata={"user": "carol"})
        await settled(engine)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            text = prometheus_client.generate_latest().decode()  # the default REGISTRY, as the proxy serves it
            if (_value(text, "litellm_payg_requests_total", deployment="m-ml", status="ok") or 0) >= 1:
                break
            await asyncio.sleep(0.05)
        records = engine.spend.ledger.records()
        spent = sum(r.amount_usd for r in records)
        assert spent > 0
        cost_ds = sum(r.amount_usd for r in records if r.attrs["deployment"] == "m-ds")
        cost_ml = sum(r.amount_usd for r in records if r.attrs["deployment"] == "m-ml")

    assert _value(before, "litellm_payg_requests_total", deployment="m-ds") is None
    assert _value(text, "litellm_payg_requests_total", group=group, deployment="m-ds", model=DEEPSEEK, status="ok") == 2
    assert _value(text, "litellm_payg_requests_total", group=group, deployment="m-ml", status="ok") == 1
    assert _value(text, "litellm_payg_cost_usd_total", deployment="m-ds") == pytest.approx(cost_ds, abs=1e-12)
    assert _value(text, "litellm_payg_cost_usd_total", deployment="m-ml") == pytest.approx(cost_ml, abs=1e-12)
    assert _value(text, "litellm_payg_decisions_total", group=group, chosen="m-ds") == 2
    # short requests keep both deployments (bar 0.6); the long one drops DeepSeek (0.7 < 0.85)
    assert _value(text, "litellm_payg_dropped_total", group=group, by="quality_floor") == 1
    assert _value(text, "litellm_payg_budget_spend_usd", budget="metrics-global", scope="global") == pytest.approx(spent, abs=1e-9)
    assert _value(text, "litellm_payg_budget_remaining_usd", budget="metrics-global", scope="global") == pytest.approx(1.0 - spent, abs=1e-9)
    assert _value(text, "litellm_payg_budget_limit_usd", budget="metrics-user", scope="user:carol") == 0.5
    assert _value(text, "litellm_payg_budget_spend_usd", budget="metrics-user", scope="user:carol") == pytest.approx(spent, abs=1e-9)
