"""Observers see the pick that was made: ``payg_decision`` (and the decision log, the metrics and
the stamped decision built on it) fires once per attempt with the deployment that attempt went to,
after failover, circuit breakers and budget reservation narrowed the rules' order."""

from __future__ import annotations

import logging

import prometheus_client

from routing_helpers import DEEPSEEK, MISTRAL, Recorder, attached, deployment, served_by, settled
from test_metrics import _value

MESSAGES = [{"role": "user", "content": "My router keeps dropping the connection every evening, what can I do?"}]
ROUTER = {"num_retries": 2, "retry_after": 0, "disable_cooldowns": True}


def _model_list(s):
    return [
        {"model_name": "chat", "litellm_params": {"model": DEEPSEEK, "api_key": "sk-test", "api_base": s.url("deepseek")}, "model_info": {"id": "ds"}},
        {"model_name": "chat", "litellm_params": {"model": MISTRAL, "api_key": "sk-test", "api_base": s.url("mistral")}, "model_info": {"id": "ml"}},
    ]


def _policy(**extra):
    return {"version": 1, "ledger": "memory://",
            "routes": {"chat": [{"cost_threshold": {"use": DEEPSEEK, "max_usd_per_1k_tokens": 0.0015, "otherwise": MISTRAL}}]},
            **extra}


async def test_a_retry_is_reported_with_the_deployment_it_went_to(standin, caplog):
    standin.fail("deepseek", status=500, times=1)
    recorder = Recorder()
    policy = _policy(failover={"on": {"server_error": "next"}}, plugins=["litellm_payg.adapter.metrics"])

    def decisions(chosen):
        return _value(prometheus_client.generate_latest().decode(), "litellm_payg_decisions_total", group="chat", chosen=chosen) or 0

    before = {d: decisions(d) for d in ("ds", "ml")}
    with attached(_model_list(standin), policy, **ROUTER) as (router, engine):
        engine.pm.register(recorder)
        with caplog.at_level(logging.INFO, logger="litellm_payg"):
            response = await router.acompletion(model="chat", messages=MESSAGES)
        await settled(engine)
    assert {d: decisions(d) - before[d] for d in ("ds", "ml")} == {"ds": 1, "ml": 1}
    assert served_by(response) == "ml"
    attempts = [o.deployment_id for o in recorder.outcomes]
    assert attempts == ["ds", "ml"], attempts
    assert [d.chosen.deployment_id for d in recorder.decisions] == attempts
    second = recorder.decisions[1]
    assert [(d.deployment_id, d.reason) for d in second.dropped] == [("ds", "already tried for this request")]
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("payg decision")]
    assert [line.split("chosen=")[1].split()[0] for line in logged] == ["ds", "ml"], logged


async def test_a_budget_refusal_at_reservation_is_reported_with_the_deployment_that_served():
    """A ``downgrade`` budget with no room for ds refuses it when the reservation is made; the
    request goes to ml, and the observers say ml, with the budget's reason for ds."""
    one = 10 * 2.8e-07 + 20 * 4.2e-07
    policy = {"version": 1, "ledger": "memory://",
              "routes": {"chat": [{"quality_floor": {"min_quality": 0}}]},
              "models": {DEEPSEEK: {"quality": 1}, MISTRAL: {"quality": 1}},
              "budgets": [{"name": "ds-cap", "scope": "deployment:ds", "window": "day", "limit_usd": one / 2,
                           "on_exceed": "downgrade"}]}
    recorder = Recorder()
    with attached([deployment("chat", DEEPSEEK, "ds"), deployment("chat", MISTRAL, "ml")], policy) as (router, engine):
        engine.pm.register(recorder)
        # leave the refusal to the reservation itself: without the headroom filter, the decision keeps ds
        engine.pm.unregister(name="litellm_payg.default_plugins.budget_guard")
        served = [served_by(await router.acompletion(model="chat", messages=MESSAGES, max_tokens=20)) for _ in range(3)]
        await settled(engine)
    assert served == ["ml", "ml", "ml"]
    assert [d.chosen.deployment_id for d in recorder.decisions] == served
    assert all(any(d.deployment_id == "ds" and d.by == "budget" for d in dec.dropped) for dec in recorder.decisions)
