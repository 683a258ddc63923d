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


def test_quality_gauges_per_route_deployment_and_class_with_bounded_class_labels():
    """The estimate, lower bound and answers per route x deployment x class, as the engine judges
    them; a client cannot grow the series: past MAX_QUALITY_CLASSES classes the rest are one "other"."""
    from litellm_payg.adapter import metrics
    from litellm_payg.core.decision import Candidate, RouteRequest
    from litellm_payg.core.quality import merge
    from litellm_payg.policy.load import load_policy
    from litellm_payg.runtime.engine import Engine

    group = "metrics-quality"  # a group name no other test uses: the registry is process-wide
    policy = load_policy({
        "version": 1, "ledger": "memory://", "plugins": ["litellm_payg.adapter.metrics"],
        "models": {DEEPSEEK: {"quality": 0.9}},
        "quality": {"class_by": "metadata.step", "half_life_s": None, "refresh_s": 0},
        "routes": {group: [{"quality_floor": {"min_quality": 0.85, "measured": {}}}]},
    })
    engine = Engine(policy)
    cand = Candidate("mq-ds", DEEPSEEK, "deepseek", group, 1e-6, 1e-6, quality=0.9)
    engine.decide(RouteRequest(group=group, prompt_tokens=10, output_tokens=10), [cand])  # the engine is now known
    for i in range(40):
        engine.quality.record(group, "mq-ds", "valid", i % 4 != 0, cls="plan")  # 30 of 40 pass
    long_class = "x" * 5000
    for i in range(30):
        engine.quality.record(group, "mq-ds", "valid", True, cls=long_class)
    extra = [f"step-{k:02d}" for k in range(metrics.MAX_QUALITY_CLASSES + 5)]  # 2..26 answers each
    for k, cls in enumerate(extra):
        for _ in range(k + 2):
            engine.quality.record(group, "mq-ds", "valid", True, cls=cls)

    text = prometheus_client.generate_latest().decode()
    view = engine.quality.view(group, time.time())
    plan = view.estimate("mq-ds", 0.9, "plan", "valid")  # what quality_floor judges a "plan" request on
    assert plan.n == 40
    assert _value(text, "litellm_payg_quality_answers", group=group, deployment="mq-ds", **{"class": "plan"}) == 40
    assert _value(text, "litellm_payg_quality_estimate", group=group, **{"class": "plan"}) == pytest.approx(plan.mean)
    assert _value(text, "litellm_payg_quality_lower_bound", group=group, **{"class": "plan"}) == pytest.approx(plan.lo)
    assert plan.mean == pytest.approx((9 + 30) / (10 + 40))  # Beta(0.9 x 10 + 30, 0.1 x 10 + 10)

    classes = {dict(re.findall(r'(\w+)="([^"]*)"', line))["class"]
               for line in text.splitlines() if line.startswith("litellm_payg_quality_answers{") and f'group="{group}"' in line}
    assert len(classes) == metrics.MAX_QUALITY_CLASSES + 1 and "other" in classes
    assert max(len(c) for c in classes) <= 256 and any(c.startswith("xxx") and "sha256:" in c for c in classes)
    # kept: the busiest 20 (plan 40, the long one 30, step-24..step-07 with 26..9); merged: step-00..step-06
    merged = [f"step-{k:02d}" for k in range(7)]
    assert not classes & set(merged)
    assert _value(text, "litellm_payg_quality_answers", group=group, **{"class": "other"}) == sum(k + 2 for k in range(7))
    other = merge([view.tallies[("mq-ds", c, "valid")] for c in merged], view.now, None)
    from litellm_payg.core.quality import pass_rate
    assert _value(text, "litellm_payg_quality_lower_bound", group=group, **{"class": "other"}) == pytest.approx(
        pass_rate(other, 0.9, 10, view.z).lo)
