"""The scope registry (``core/scopes.py``, filled through ``payg_register_scopes``): every budget
scope kind is declared once, and everything that names scopes — policy validation, bucket keys,
spend records, ``replay``/``spend()`` filters — reads it. The ``session`` kind was added to the registry alone; these tests show it works end to end
through a real Router: a ``session:*`` budget caps each run (LiteLLM's session id) on its own."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from routing_helpers import DEEPSEEK, attached, deployment, settled

from litellm_payg.adapter.litellm_errors import BudgetExceeded
from litellm_payg.core.budgets import Budget, all_buckets, split_bucket_key
from litellm_payg.core.decision import Candidate, RouteRequest
from litellm_payg.core.errors import PolicyError
from litellm_payg.core.scopes import SCOPE_KINDS
from litellm_payg.plugins import builtin_scopes
from litellm_payg.policy.load import load_policy
from litellm_payg.tools.replay import ReplayError, spend_of
from litellm_payg.tools.testing import spend

MESSAGES = [{"role": "user", "content": "Please tell me what the status of my order number 12345 is today."}]
MOCK_COST = 10 * 2.8e-07 + 20 * 4.2e-07  # LiteLLM's mock usage on deepseek-chat, bundled price

REQUEST = RouteRequest("chat", 10, 20, user="alice", team="support", api_key="hash1", end_user="cust-9",
                       tags=("prod", "batch"), session="run-1", attrs={"org": "acme"})
SCOPES = builtin_scopes()  # every kind the built-in plugins register
CANDIDATE = Candidate("ds", DEEPSEEK, "deepseek", "chat", 2.8e-07, 4.2e-07)


@pytest.mark.parametrize("kind", SCOPES.names)
def test_every_registered_kind_is_a_budget_scope_with_a_bucket_and_a_record(kind):
    """One registration is enough: the policy accepts ``<kind>:*``, the request's value
    gets its own bucket, and the spend record keeps it where reports and ``spend()`` look."""
    budget = Budget.model_validate({"scope": f"{kind}:*", "window": "day", "limit_usd": 1}, context={"scopes": SCOPES})
    values = SCOPES.values_of(kind, REQUEST, CANDIDATE)
    assert values, f"the sample request has no {kind} value: extend REQUEST"
    from datetime import datetime, timezone

    buckets = all_buckets([budget], REQUEST, CANDIDATE, datetime(2026, 11, 30, tzinfo=timezone.utc))
    assert [split_bucket_key(bb.bucket.key)[1] for bb in buckets] == [f"{kind}:{v}" for v in values]
    attrs = SCOPES.record_attrs(REQUEST, CANDIDATE)
    recorded = attrs[SCOPES.record_attr_of(kind)]
    assert (recorded if isinstance(recorded, list) else [recorded]) == list(values)


def test_the_registry_says_who_writes_each_value():
    client_written = {k for k, v in SCOPES.items() if not v.trusted}
    assert client_written == {"end_user", "tag", "session"}
    assert SCOPES["org"].trusted and SCOPES["org"].source == "key"


def test_an_unknown_kind_is_refused_naming_every_registered_one(tmp_path):
    with pytest.raises(ValidationError) as info:  # a Budget made without a policy knows the core's kinds
        Budget(scope="region:eu", window="day", limit_usd=1)
    assert "kind one of " + ", ".join(SCOPE_KINDS) in str(info.value)
    path = tmp_path / "policy.yaml"
    path.write_text("version: 1\nbudgets:\n  - {scope: 'region:eu', window: day, limit_usd: 1}\n")
    with pytest.raises(PolicyError) as info:  # a policy knows every kind its plugins register
        load_policy(path)
    assert "kind one of " + ", ".join(SCOPES.names) in str(info.value) and ", org " in str(info.value)
    with pytest.raises(ReplayError, match="unknown kind 'region'"):
        spend_of([], "region:eu")


async def test_a_session_budget_caps_each_run_on_its_own():
    """``session:*`` through a real Router: run-1 is blocked once its cap is spent, naming the run;
    run-2 starts with its own cap; the spend records say which run paid what."""
    cap = 3 * MOCK_COST  # a few requests: each reserves its pessimistic estimate (max_tokens), then settles
    policy = {"version": 1, "ledger": "memory://", "routes": {"chat": [{"quality_floor": {"min_quality": 0}}]},
              "models": {DEEPSEEK: {"quality": 1}},
              "budgets": [{"name": "per-run", "scope": "session:*", "window": "day", "limit_usd": cap}]}
    with attached([deployment("chat", DEEPSEEK, "ds")], policy) as (router, engine):
        served = 0
        with pytest.raises(BudgetExceeded) as info:
            for _ in range(10):
                await router.acompletion(model="chat", messages=MESSAGES, max_tokens=20, litellm_session_id="run-1")
                await settled(engine)
                served += 1
        refused = info.value
        assert served >= 2 and refused.spent_usd == pytest.approx(served * MOCK_COST, abs=1e-12)
        assert refused.spent_usd + refused.estimate_usd > cap  # refused only when the next one may not fit
        assert info.value.scope == "session:run-1" and "budget 'per-run' (session:run-1, day) exceeded" in str(info.value)
        await router.acompletion(model="chat", messages=MESSAGES, max_tokens=20, litellm_session_id="run-2")
        await settled(engine)
        records = engine.spend.ledger.records()
        assert spend(records, "session:run-1") == pytest.approx(served * MOCK_COST, abs=1e-12)
        assert spend(records, "session:run-2") == pytest.approx(MOCK_COST, abs=1e-12)
