"""``simulate`` tells the ``payg_outcome`` observers what a live Router's attempts tell them.

The same requests go through ``simulate`` and through a real LiteLLM Router (``mock_response``),
each with a recording plugin registered on its policy's plugin manager. DeepSeek, the route's
first choice, fails every attempt with a server error (the live deployment's mock raises LiteLLM's
``InternalServerError``, the traffic's fault is ``server_error: 1.0``): each request fails on it
and fails over to Mistral until DeepSeek's circuit breaker opens, then Mistral serves it at once.
Both sides must report the same attempts, in the same order: deployment, ok or failed, cost and
token counts. Before simulate drove the request's attempt object, its observers heard nothing.
"""

from __future__ import annotations

import asyncio
import json

import litellm
import pytest
import yaml

import litellm_payg
from litellm_payg.policy.load import load_policy
from litellm_payg.tools.simulate import parse_traffic, simulate

from routing_helpers import settled

DS, ML = "deepseek/deepseek-chat", "mistral/mistral-large-latest"
# 10 prompt tokens by LiteLLM's counter, as many as its mock usage reports (and 20 completion tokens)
MESSAGES = [{"role": "user", "content": "one two three"}]
PROMPT, COMPLETION, MAX_TOKENS = 10, 20, 20
REQUESTS = 6
MODEL_LIST = [
    {"model_name": "chat", "litellm_params": {"model": DS, "api_key": "sk-not-used", "mock_response": "litellm.InternalServerError"},
     "model_info": {"id": "ds"}},
    {"model_name": "chat", "litellm_params": {"model": ML, "api_key": "sk-not-used", "mock_response": "ok"},
     "model_info": {"id": "ml"}},
]
POLICY = {
    "version": 1, "ledger": "memory://",
    "routes": {"chat": [{"cost_threshold": {"use": DS, "max_usd_per_1k_tokens": 0.0015, "otherwise": ML}}]},
    "failover": {"circuit_breaker": {"failures": 3, "within_s": 3600, "open_s": 3600, "half_open_probes": 1}},
}


class Outcomes:
    """A plugin that keeps every outcome it is told of."""

    def __init__(self) -> None:
        self.seen: list = []

    @litellm_payg.hookimpl
    def payg_outcome(self, outcome):
        self.seen.append(outcome)


def _rows(outcomes: list) -> list[tuple]:
    return [(o.group, o.deployment_id, o.model, o.ok, o.error is None, o.prompt_tokens, o.completion_tokens,
             o.usage_estimated) for o in outcomes]


async def _live(heard: Outcomes) -> None:
    policy = load_policy(POLICY)
    policy.plugin_manager.register(heard)
    router = litellm.Router(model_list=MODEL_LIST, num_retries=2, retry_after=0, disable_cooldowns=True)
    engine = litellm_payg.attach(router, policy)
    try:
        for _ in range(REQUESTS):
            response = await router.acompletion(model="chat", messages=MESSAGES, max_tokens=MAX_TOKENS)
            assert response._hidden_params["model_id"] == "ml"
            await settled(engine)
    finally:
        engine.detach()


def _simulated(heard: Outcomes, config: str):
    policy = load_policy(POLICY)
    policy.plugin_manager.register(heard)
    line = {"name": "chat", "group": "chat", "prompt_tokens": PROMPT, "completion_tokens": COMPLETION,
            "max_tokens": MAX_TOKENS, "count": REQUESTS, "time": "2025-01-01T10:00:00Z/2025-01-01T10:01:00Z",
            "faults": [{"deployment": DS, "server_error": 1.0}]}
    return simulate(policy, parse_traffic(json.dumps(line), "traffic.jsonl"), config=config, start=1735689600.0,
                    period_days=1)


def test_simulate_tells_the_outcome_observers_what_a_live_router_does(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"model_list": MODEL_LIST}))
    live, simulated = Outcomes(), Outcomes()
    asyncio.run(_live(live))
    result = _simulated(simulated, str(config))

    # 3 failed tries on DeepSeek (the third opens its breaker), each followed by Mistral's answer,
    # then Mistral alone: 9 attempts
    expected = [("ds", False), ("ml", True)] * 3 + [("ml", True)] * (REQUESTS - 3)
    assert [(o.deployment_id, o.ok) for o in live.seen] == expected
    assert _rows(simulated.seen) == _rows(live.seen)
    assert [o.cost_usd for o in simulated.seen] == pytest.approx([o.cost_usd for o in live.seen], rel=1e-12, abs=0)
    assert [o.cost_usd > 0 for o in live.seen] == [ok for _, ok in expected]
    assert all(isinstance(o.decision, dict) and o.decision["chosen"] == o.deployment_id for o in simulated.seen)
    assert sum(result.served_by_class) == REQUESTS
    assert result.breaker_opened == {"ds": 1}
