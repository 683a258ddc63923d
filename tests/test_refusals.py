"""A budget refusal through LiteLLM's real Router is final and says what a client needs to stop:
``num_retries == 0`` (the Router's own retries), the proxy's answer (``headers`` with
``x-should-retry: false`` and a ``retry-after`` only for a window that resets, ``type``
``budget_exceeded``, ``provider_specific_fields.payg`` with the rule), also when the refusal comes
on a fallback hop. ``test_refusals_proxy.py`` checks the same through a real proxy and the OpenAI SDK.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from routing_helpers import DEEPSEEK, MISTRAL, attached, deployment

from litellm_payg.adapter.litellm_errors import BudgetExceeded

MESSAGES = [{"role": "user", "content": "Please tell me what the status of my order number 12345 is today."}]


def _policy(budgets, **extra):
    groups = extra.pop("groups", ("chat",))
    return {"version": 1, "ledger": "memory://", "budgets": budgets,
            "routes": {g: [{"quality_floor": {"min_quality": 0}}] for g in groups},
            "models": {DEEPSEEK: {"quality": 1}, MISTRAL: {"quality": 1}, "openai/gpt-4o-mini": {"quality": 1}}, **extra}


def _counting_admits(engine) -> list[str]:
    admits: list[str] = []
    admit = engine.spend.admit
    engine.spend.admit = lambda request, *a, **k: admits.append(request.group) or admit(request, *a, **k)
    return admits


async def test_a_daily_cap_refusal_is_not_retried_and_carries_the_proxy_answer():
    policy = _policy([{"name": "team-daily", "scope": "team:*", "window": "day", "limit_usd": 1e-9}])
    with attached([deployment("chat", DEEPSEEK, "ds")], policy, num_retries=3, retry_after=0) as (router, engine):
        admits = _counting_admits(engine)
        with pytest.raises(BudgetExceeded) as info:
            await router.acompletion(model="chat", messages=MESSAGES, max_tokens=20, metadata={"team": "support"})
    assert admits == ["chat"]  # one pick: the Router did not retry
    exc = info.value
    assert exc.num_retries == 0 and exc.status_code == 429
    assert exc.type == "budget_exceeded"
    headers = exc.headers
    assert headers["x-should-retry"] == "false"
    until_reset = (exc.resets_at - datetime.now(timezone.utc)).total_seconds()
    assert 0 < int(headers["retry-after"]) <= 86400 and int(headers["retry-after"]) == pytest.approx(until_reset, abs=2)
    payg = exc.provider_specific_fields["payg"]
    assert payg["code"] == "budget_exceeded" and payg["rule"] == "cap" and payg["budget"] == "team-daily"
    assert payg["scope"] == "team:support" and payg["window"] == "day" and payg["limit_usd"] == 1e-9
    assert payg["retry_after_s"] == int(headers["retry-after"])
    # the proxy adds its own headers to what it reads: each read is a new dict
    exc.headers["x-litellm-call-id"] = "x"
    assert "x-litellm-call-id" not in exc.headers


@pytest.mark.parametrize("budget", [
    {"name": "rolling", "scope": "global", "window": "rolling:1h", "limit_usd": 1e-9},
    {"name": "run", "scope": "session:*", "window": "session:30m", "limit_usd": 1e-9},
], ids=["rolling window", "run cap"])
async def test_no_retry_after_where_waiting_has_no_known_end(budget):
    with attached([deployment("chat", DEEPSEEK, "ds")], _policy([budget]), num_retries=3, retry_after=0) as (router, engine):
        with pytest.raises(BudgetExceeded) as info:
            await router.acompletion(model="chat", messages=MESSAGES, max_tokens=20, litellm_session_id="r1")
    exc = info.value
    assert exc.headers == {"x-should-retry": "false"}
    assert exc.provider_specific_fields["payg"]["retry_after_s"] is None


async def test_a_runs_max_requests_refusal_names_its_rule_and_has_no_retry_after():
    budget = {"name": "per-run", "scope": "session:*", "window": "session:30m", "limit_usd": 10, "max_requests": 1}
    with attached([deployment("chat", DEEPSEEK, "ds")], _policy([budget]), num_retries=3, retry_after=0) as (router, engine):
        await router.acompletion(model="chat", messages=MESSAGES, max_tokens=20, litellm_session_id="r2")
        admits = _counting_admits(engine)
        with pytest.raises(BudgetExceeded) as info:
            await router.acompletion(model="chat", messages=MESSAGES, max_tokens=20, litellm_session_id="r2")
    assert admits == ["chat"]
    exc = info.value
    assert exc.num_retries == 0 and exc.headers == {"x-should-retry": "false"}
    payg = exc.provider_specific_fields["payg"]
    assert (payg["rule"], payg["count"], payg["count_limit"], payg["scope"]) == ("max_requests", 1, 1, "session:r2")


async def test_a_refusal_on_a_fallback_hop_reaches_the_caller_as_the_refusal():
    """``first`` fails (nothing listens on port 9), the Router falls back to ``capped``, whose budget
    refuses. LiteLLM's Router raises the first group's error (a 500 a client retries); the governed
    door raises the refusal instead, with that error as its cause."""
    policy = _policy([{"name": "capped-daily", "scope": "group:capped", "window": "day", "limit_usd": 1e-9}],
                     groups=("first", "capped"))
    model_list = [
        {"model_name": "first", "litellm_params": {"model": "openai/gpt-4o-mini", "api_key": "sk-unused",
                                                    "api_base": "http://127.0.0.1:9/v1"}, "model_info": {"id": "first-1"}},
        deployment("capped", DEEPSEEK, "ds"),
    ]
    with attached(model_list, policy, num_retries=0, fallbacks=[{"first": ["capped"]}]) as (router, engine):
        admits = _counting_admits(engine)
        with pytest.raises(BudgetExceeded) as info:
            await router.acompletion(model="first", messages=MESSAGES, max_tokens=20)
    assert admits == ["first", "capped"]
    exc = info.value
    assert exc.budget == "capped-daily" and exc.headers["x-should-retry"] == "false"
    assert exc.__cause__ is not None and "Connection error" in str(exc.__cause__)


def test_retry_after_counts_from_now_and_is_at_least_one_second():
    now = datetime(2026, 1, 1, 23, 59, 30, tzinfo=timezone.utc)
    exc = BudgetExceeded(budget="b", scope="global", window="day", limit_usd=1, resets_at=now + timedelta(seconds=29.2))
    assert exc.retry_after_s(now) == 30
    assert exc.retry_after_s(now + timedelta(seconds=40)) == 1  # a reset just passed: try again soon, not never
