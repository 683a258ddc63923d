"""``payg_outcome`` is skipped on the caller's path only when nothing would hear it (the built-in
decision log with its logger below INFO, no pluggy monitoring): whoever listens, from whenever
they start listening, still hears every outcome."""

from __future__ import annotations

import logging

from routing_helpers import Recorder, attached, deployment

MESSAGES = [{"role": "user", "content": "hi"}]


def _policy(tmp_path) -> dict:
    return {"version": 1, "ledger": f"sqlite:///{tmp_path}/ledger.db"}


async def test_an_observer_registered_after_unheard_outcomes_hears_the_next_ones(tmp_path):
    # the decision log is silent below INFO; an earlier test in the process may have lowered the
    # package logger's threshold to INFO (caplog), so this test sets the level it needs
    package_logger = logging.getLogger("litellm_payg")
    level = package_logger.level
    package_logger.setLevel(logging.WARNING)
    try:
        await _observer_registered_later(tmp_path)
    finally:
        package_logger.setLevel(level)


async def _observer_registered_later(tmp_path):
    with attached([deployment("chat", "openai/gpt-4o-mini", "d1")], _policy(tmp_path)) as (router, engine):
        assert not engine.adapter.attempts.outcome_heard()
        await router.acompletion(model="chat", messages=MESSAGES)
        recorder = Recorder()
        engine.pm.register(recorder)
        try:
            await router.acompletion(model="chat", messages=MESSAGES)
            await router.acompletion(model="chat", messages=MESSAGES)
        finally:
            engine.pm.unregister(recorder)
        assert [(o.ok, o.deployment_id) for o in recorder.outcomes] == [(True, "d1"), (True, "d1")]
        assert all(o.cost_usd > 0 for o in recorder.outcomes)


async def test_the_decision_log_still_logs_outcomes_at_info(tmp_path, caplog):
    with attached([deployment("chat", "openai/gpt-4o-mini", "d1")], _policy(tmp_path)) as (router, engine):
        with caplog.at_level(logging.INFO, logger="litellm_payg"):
            await router.acompletion(model="chat", messages=MESSAGES)
    assert any("payg outcome group=chat" in r.getMessage() and "deployment=d1" in r.getMessage() for r in caplog.records)


async def test_pluggy_monitoring_sees_every_outcome(tmp_path):
    seen = []
    with attached([deployment("chat", "openai/gpt-4o-mini", "d1")], _policy(tmp_path)) as (router, engine):
        undo = engine.pm.add_hookcall_monitoring(
            lambda hook_name, impls, kwargs: seen.append(hook_name), lambda *args: None)
        try:
            await router.acompletion(model="chat", messages=MESSAGES)
        finally:
            undo()
    assert "payg_outcome" in seen
