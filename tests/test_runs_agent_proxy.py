"""Agent runs, round two, inside a real LiteLLM proxy (``litellm --config ...``), driven by the
OpenAI SDK: a run id the policy requires (a 400 naming where to send it), an agent's loop of
repeated tool calls in a growing conversation stopped at N, and two agents (keys) with different
run limits in one policy, each response saying the tightest run budget and all of them.

Deployments answer with ``mock_response`` (10 prompt + 20 completion tokens): 3e-4 USD an answer.
"""

from __future__ import annotations

import uuid

import pytest
import yaml

from proxy_fixtures import RunningProxy, litellm_proxy_factory  # noqa: F401  (fixture)
from test_runs_agent import agent_turns
from trust_helpers import AUTH_MODULE, AUTH_MODULE_NAME, key_hash, new_key

DEAR = "mistral/mistral-large-latest"
COST = 30 * 1e-5
SCOUT, WRITER = new_key(label="scout"), new_key(label="writer")
POLICY = {
    "version": 1,
    "ledger": "sqlite:///payg-ledger.db",
    "models": {"deepseek/deepseek-chat": {"quality": 0.7}, DEAR: {"quality": 0.95}},
    "routes": {"agent": [], "steps": [
        {"when": {"metadata.step": "plan"}, "quality_floor": {"min_quality": 0.9}},  # holds past a downgrade step
        {"quality_floor": {"min_quality": 0.9, "keep_past_downgrade": False}},  # may go below it
    ]},
    "sessions": {"id_from": ["header:x-agent-run", "litellm_session_id"], "required": True},
    "budgets": [
        # every run: a loop guard that sees repeated tool calls, and a generous cap
        {"name": "any-run", "scope": "session:*", "window": "session:30m", "limit_usd": 100 * COST,
         "loop_guard": 3, "loop_counts": ["prompt", "tool_call", "tool_result"]},
        # two agents, two run limits
        {"name": "scout-run", "scope": "session:*", "window": "session:30m", "limit_usd": 2.5 * COST,
         "when": {"key": key_hash(SCOUT)}},
        {"name": "writer-run", "scope": "session:*", "window": "session:30m", "limit_usd": 5.5 * COST,
         "when": {"key": key_hash(WRITER)}},
        # the "steps" agent: past half its run's budget, a downgrade step
        {"name": "steps-run", "scope": "session:*", "window": "session:30m", "limit_usd": 10 * COST,
         "downgrade": [{"at": 0.5, "min_quality": 0.6}], "when": {"tags": ["steps"]}},
    ],
}
CONFIG = {
    "model_list": [{
        "model_name": "agent",
        "litellm_params": {"model": DEAR, "api_key": "not-used-mock-response", "mock_response": "answered",
                           "input_cost_per_token": 1e-5, "output_cost_per_token": 1e-5},
        "model_info": {"id": "dear"},
    }] + [{
        "model_name": "steps",
        "litellm_params": {"model": model, "api_key": "not-used-mock-response", "mock_response": f"answered by {dep}",
                           "input_cost_per_token": price, "output_cost_per_token": price},
        "model_info": {"id": dep},
    } for model, dep, price in (("deepseek/deepseek-chat", "steps-cheap", 1e-6), (DEAR, "steps-dear", 1e-5))],
    "litellm_settings": {"callbacks": ["litellm_payg.adapter.proxy.handler"]},
    "general_settings": {"custom_auth": f"{AUTH_MODULE_NAME}.user_api_key_auth"},
}


@pytest.fixture(scope="module")
def proxy(litellm_proxy_factory) -> RunningProxy:  # noqa: F811
    return litellm_proxy_factory(
        CONFIG, name="runs-agent",
        files={"payg-policy.yaml": yaml.safe_dump(POLICY, sort_keys=False), f"{AUTH_MODULE_NAME}.py": AUTH_MODULE},
    ).wait_ready()


def _client(proxy: RunningProxy, key: str | None = None):
    import openai

    return openai.OpenAI(base_url=f"{proxy.base_url}/v1", api_key=key or new_key(label="agent"), max_retries=0,
                         timeout=30)


def _ask(client, run: str | None, messages: list[dict]):
    raw = client.chat.completions.with_raw_response.create(
        model="agent", messages=messages, max_tokens=20,
        extra_headers={"x-agent-run": run} if run is not None else None)
    return raw.headers


def _run() -> str:
    return f"run-{uuid.uuid4().hex[:8]}"


def test_a_request_without_a_run_id_is_refused_with_a_400_naming_where_to_send_it(proxy):
    import openai

    client = _client(proxy)
    with pytest.raises(openai.BadRequestError) as info:
        _ask(client, None, [{"role": "user", "content": "hi"}])
    assert info.value.status_code == 400
    message = str(info.value)
    assert "names no run, and the policy requires one (sessions.required)" in message
    assert "the x-agent-run header or the litellm_session_id field" in message
    headers = _ask(client, _run(), [{"role": "user", "content": "hi"}])  # with one: served
    assert headers["x-payg-run-requests"] == "1"


def test_an_agent_loop_of_repeated_tool_calls_in_a_growing_conversation_is_stopped_at_n(proxy):
    import openai

    client, run = _client(proxy), _run()
    served = 0
    with pytest.raises(openai.RateLimitError) as info:
        for messages in agent_turns(6):
            _ask(client, run, messages)
            served += 1
    assert served == 3  # the call is the newest turn of requests 2, 3 and 4: the 3rd time is refused
    message = str(info.value)
    assert info.value.status_code == 429
    assert f"run '{run}' (budget 'any-run', session:30m) refused by the loop guard: the same tool call web_search(args sha256:" in message
    assert "was already seen 2 times in this run (loop_guard: 3)" in message
    # another search is no loop
    _ask(client, run, list(agent_turns(3, args={"q": "ACME annual report"}))[-1][:3])


def test_two_agents_with_different_run_limits_in_one_policy(proxy):
    import openai

    def served(key: str, budget: str) -> tuple[int, list]:
        client, run, headers = _client(proxy, key), _run(), []
        for i in range(10):
            try:
                headers.append(_ask(client, run, [{"role": "user", "content": f"task {i}"}]))
            except openai.RateLimitError as exc:
                assert f"(budget '{budget}', session:30m) refused by its cap" in str(exc), str(exc)
                return i, headers
        return 10, headers

    n, headers = served(SCOUT, "scout-run")
    assert n == 2
    # the tightest run budget in the x-payg-run-* headers, every one in x-payg-run-budgets
    assert headers[0]["x-payg-run-budget"] == "scout-run"
    assert float(headers[0]["x-payg-run-limit-usd"]) == pytest.approx(2.5 * COST)
    assert [b.split("=")[0] for b in headers[0]["x-payg-run-budgets"].split(",")] == ["scout-run", "any-run"]
    n, headers = served(WRITER, "writer-run")
    assert n == 5
    assert headers[-1]["x-payg-run-budget"] == "writer-run"
    # a third key is under the generous run budget only
    n, headers = served(new_key(label="other"), "any-run")
    assert n == 10 and headers[-1]["x-payg-run-budget"] == "any-run"
    assert headers[-1]["x-payg-run-budgets"].startswith("any-run=")


def test_a_plan_step_keeps_its_floor_past_a_downgrade_step(proxy):
    client, run = _client(proxy), _run()

    def step(name: str, i: int) -> str:
        raw = client.chat.completions.with_raw_response.create(
            model="steps", messages=[{"role": "user", "content": f"{name} {i}"}], max_tokens=20,
            extra_headers={"x-agent-run": run}, extra_body={"metadata": {"step": name, "tags": ["steps"]}})
        return raw.headers["x-payg-chosen"]

    assert [step("act", i) for i in range(5)] == ["steps-dear"] * 5  # half the run's budget
    assert step("act", 5) == "steps-cheap"  # the downgrade step
    assert step("plan", 6) == "steps-dear"  # plan keeps its 0.9 floor past it
