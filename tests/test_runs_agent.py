"""Agent runs, round two, through LiteLLM's real Router: a run id that the policy requires
(``sessions.required``), a loop guard that sees an agent's loop of repeated tool calls in a
conversation that grows each turn (``loop_counts``), run budgets that apply to some requests only
(``when:``), and ``when:`` mistakes reported at their own line.

Deployments answer with ``mock_response`` (10 prompt + 20 completion tokens) at prices set on them.
"""

from __future__ import annotations

import json

import litellm
import pytest
from routing_helpers import attached, deployment, settled

from litellm_payg.adapter.litellm_errors import BudgetExceeded
from litellm_payg.core.errors import PolicyError
from litellm_payg.core.runs import loop_marks
from litellm_payg.policy.load import load_policy

DEAR = "mistral/mistral-large-latest"
PRICE = {"input_cost_per_token": 1e-5, "output_cost_per_token": 1e-5}
COST = 30 * 1e-5


def _policy(run: dict | None = None, sessions: dict | None = None, budgets: list | None = None) -> dict:
    policy: dict = {"version": 1, "ledger": "memory://", "routes": {"agent": []}}
    if run is not None:
        policy["budgets"] = [{"name": "per-run", "scope": "session:*", "window": "session:30m", "limit_usd": 1.0, **run}]
    if budgets is not None:
        policy["budgets"] = budgets
    if sessions is not None:
        policy["sessions"] = sessions
    return policy


def _deployments() -> list[dict]:
    return [deployment("agent", DEAR, "dear", **PRICE)]


def agent_turns(turns: int, *, args: dict | None = None, result: str = "no results", vary_result: bool = False):
    """The conversation an agent stuck in a loop sends, turn by turn: each turn it calls the same
    tool with the same arguments, gets the same result, and the conversation grows by both (plus a
    line of its own thinking that differs each turn)."""
    messages: list[dict] = [{"role": "system", "content": "You are a research agent."},
                            {"role": "user", "content": "Find the 2025 revenue of ACME Corp."}]
    yield list(messages)  # the first request: no tool call yet
    for turn in range(turns - 1):
        call_id = f"call_{turn}"
        messages.append({"role": "assistant", "content": f"Thinking, step {turn}: let me search.",
                         "tool_calls": [{"id": call_id, "type": "function", "function": {
                             "name": "web_search", "arguments": json.dumps(args or {"q": "ACME revenue 2025"})}}]})
        messages.append({"role": "tool", "tool_call_id": call_id,
                         "content": f"{result} {turn}" if vary_result else result})
        yield list(messages)


async def _send(router, messages, run: str | None = "run-1", **kw):
    extra = {"litellm_session_id": run} if run is not None else {}
    return await router.acompletion(model="agent", messages=messages, max_tokens=20, **extra, **kw)


# -- sessions.required --------------------------------------------------------------------------


async def test_a_request_without_a_run_id_is_refused_when_the_policy_requires_one():
    policy = _policy({"max_requests": 50}, sessions={"required": True, "id_from": ["litellm_session_id", "metadata.run"]})
    with attached(_deployments(), policy) as (router, engine):
        with pytest.raises(litellm.BadRequestError) as info:
            await _send(router, [{"role": "user", "content": "hi"}], run=None)
        message = str(info.value)
        assert info.value.status_code == 400
        assert "names no run, and the policy requires one (sessions.required)" in message
        assert "the litellm_session_id field or metadata.run" in message
        assert engine.spend.ledger.open_reservations() == 0
        await _send(router, [{"role": "user", "content": "hi"}])  # with one: served
        await router.acompletion(model="agent", messages=[{"role": "user", "content": "hi"}], max_tokens=20,
                                 metadata={"run": "job-2"})
        await settled(engine)
        assert engine.run_status("job-2").requests == 1


async def test_sessions_required_by_when_applies_to_the_requests_it_matches():
    policy = _policy({"max_requests": 50}, sessions={"required": {"tags": ["agent"]}})
    with attached(_deployments(), policy) as (router, engine):
        await _send(router, [{"role": "user", "content": "hi"}], run=None)  # not an agent: no run needed
        with pytest.raises(litellm.BadRequestError, match="sessions.required"):
            await _send(router, [{"role": "user", "content": "hi"}], run=None, metadata={"tags": ["agent"]})
        await _send(router, [{"role": "user", "content": "hi"}], metadata={"tags": ["agent"]})
        await settled(engine)


async def test_without_sessions_required_a_request_without_a_run_id_is_served():
    with attached(_deployments(), _policy({"max_requests": 50})) as (router, engine):
        await _send(router, [{"role": "user", "content": "hi"}], run=None)
        await settled(engine)


# -- the loop guard sees agent loops ------------------------------------------------------------


async def test_an_agent_repeating_a_tool_call_in_a_growing_conversation_is_stopped_at_n():
    policy = _policy({"loop_guard": 3, "loop_counts": ["prompt", "tool_call", "tool_result"]})
    with attached(_deployments(), policy) as (router, engine):
        turns = agent_turns(6)
        served = 0
        with pytest.raises(BudgetExceeded) as info:
            for messages in turns:
                await _send(router, messages)
                served += 1
        # request 1 has no tool call yet; requests 2 and 3 carry the call as their newest turn (1st
        # and 2nd time); request 4 would be its 3rd: refused
        assert served == 3
        exc = info.value
        assert exc.rule == "loop" and exc.count == 2 and exc.count_limit == 3
        message = str(exc)
        assert "run 'run-1' (budget 'per-run', session:30m) refused by the loop guard: the same tool call web_search(args sha256:" in message
        assert "was already seen 2 times in this run (loop_guard: 3)" in message
        await settled(engine)
        assert engine.run_status("run-1").requests == 3


async def test_the_whole_prompt_guard_alone_does_not_see_the_agent_loop():
    """What the issue measured: the conversation is never the same twice, so ``loop_guard`` on the
    prompt alone serves every turn of the loop."""
    with attached(_deployments(), _policy({"loop_guard": 3})) as (router, engine):
        for messages in agent_turns(6):
            await _send(router, messages)
        await settled(engine)
        assert engine.run_status("run-1").requests == 6


async def test_the_same_call_with_a_new_result_each_time_is_counted_by_tool_call_not_tool_result():
    turns = list(agent_turns(5, vary_result=True))
    with attached(_deployments(), _policy({"loop_guard": 3, "loop_counts": ["tool_result"]})) as (router, engine):
        for messages in turns:
            await _send(router, messages)  # a new result each turn: the agent is getting somewhere
        await settled(engine)
    with attached(_deployments(), _policy({"loop_guard": 3, "loop_counts": ["tool_call"]})) as (router, engine):
        with pytest.raises(BudgetExceeded, match="the same tool call web_search"):
            for messages in turns:
                await _send(router, messages)
        await settled(engine)


async def test_the_tool_result_pair_is_named_in_the_refusal():
    with attached(_deployments(), _policy({"loop_guard": 2, "loop_counts": ["tool_result"]})) as (router, engine):
        turns = agent_turns(4)
        await _send(router, next(turns))
        await _send(router, next(turns))
        with pytest.raises(BudgetExceeded) as info:
            await _send(router, next(turns))
        assert "the same tool call web_search(args sha256:" in str(info.value)
        assert "with the same result (sha256:" in str(info.value)
        await settled(engine)


async def test_repeated_identical_assistant_outputs_are_a_loop():
    with attached(_deployments(), _policy({"loop_guard": 3, "loop_counts": ["output"]})) as (router, engine):
        messages = [{"role": "user", "content": "Write the report."}]
        await _send(router, messages)
        for turn in range(2):
            messages = messages + [{"role": "assistant", "content": "I need more information."},
                                   {"role": "user", "content": f"Go on ({turn})."}]
            await _send(router, messages)
        messages = messages + [{"role": "assistant", "content": "I need more information."},
                               {"role": "user", "content": "Go on (again)."}]
        with pytest.raises(BudgetExceeded, match=r"the same assistant output \(sha256:[0-9a-f]{8}\) was already seen 2 times"):
            await _send(router, messages)
        await settled(engine)


def test_loop_marks_read_only_the_newest_turn_and_ignore_key_order_of_arguments():
    a = [{"role": "assistant", "tool_calls": [{"id": "1", "function": {"name": "f", "arguments": '{"a": 1, "b": 2}'}}]},
         {"role": "tool", "tool_call_id": "1", "content": "r"}]
    b = [{"role": "user", "content": "older"}, {"role": "assistant", "content": "older answer"},
         {"role": "assistant", "tool_calls": [{"id": "9", "function": {"name": "f", "arguments": '{"b":2,"a":1}'}}]},
         {"role": "tool", "tool_call_id": "9", "content": "r"}]
    kinds = frozenset({"tool_call", "tool_result", "output"})
    assert [m.key for m in loop_marks(a, kinds)] == [m.key for m in loop_marks(b, kinds)]
    assert [m.kind for m in loop_marks(a, kinds)] == ["tool_call", "tool_result"]  # no output: it called a tool
    other = [{**a[0], "tool_calls": [{"id": "1", "function": {"name": "f", "arguments": '{"a": 2}'}}]}, a[1]]
    assert loop_marks(other, kinds)[0].key != loop_marks(a, kinds)[0].key
    two_same = [{"role": "assistant", "tool_calls": [a[0]["tool_calls"][0], {**a[0]["tool_calls"][0], "id": "2"}]}]
    assert len(loop_marks(two_same, frozenset({"tool_call"}))) == 1  # counted once per request
    assert loop_marks([{"role": "user", "content": "hi"}], kinds) == ()
    assert loop_marks(a, frozenset()) == ()


@pytest.mark.parametrize("budget,words", [
    ({"loop_counts": ["tool_call"]}, "set loop_guard"),
    ({"loop_guard": 3, "loop_counts": ["tool_calls"]}, "budgets[0].loop_counts[0]: Input should be 'prompt'"),
    ({"loop_guard": 3, "loop_counts": []}, "budgets[0].loop_counts: Tuple should have at least 1 item"),
    ({"loop_guard": 3, "loop_counts": ["output", "output"]}, "must not repeat"),
])
def test_loop_counts_mistakes_are_policy_errors(budget, words):
    with pytest.raises(PolicyError) as info:
        load_policy(_policy({"limit_usd": 1, **budget}))
    assert words in str(info.value)


def test_when_and_loop_counts_are_for_run_budgets_only():
    budget = {"scope": "user:*", "window": "day", "limit_usd": 1, "when": {"tags": ["x"]}}
    with pytest.raises(PolicyError, match="when apply to run budgets only"):
        load_policy(_policy(budgets=[budget]))


# -- `when:` mistakes at their own line -----------------------------------------------------------

BAD_WHENS = """\
version: 1
routes: {}
sessions:
  required:
    metadata.user: x
budgets:
  - name: per-run
    scope: session:*
    window: session:30m
    limit_usd: 1
    when:
      colour: red
    final_reserve:
      share: 0.1
      when:
        metadata.step: final
        metadata.team: ops
"""


def test_when_mistakes_outside_routes_are_reported_at_their_own_line_and_field(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(BAD_WHENS)
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    text = str(info.value)
    assert f"{path}:17: budgets[0].final_reserve.when.metadata.team: metadata.team is written by the client" in text
    assert f"{path}:12: budgets[0].when.colour: unknown condition 'colour'" in text
    assert f"{path}:5: sessions.required.metadata.user: metadata.user is written by the client" in text
    assert "(top level)" not in text


# -- run budgets with `when:` -----------------------------------------------------------------------


async def test_two_keys_with_different_run_limits_in_one_policy():
    """Two agents (in Python, ``metadata.api_key`` is the caller's key): one's runs may spend two
    answers, the other's five."""
    budgets = [
        {"name": "scout-run", "scope": "session:*", "window": "session:30m", "limit_usd": 2.5 * COST,
         "when": {"key": "scout"}},
        {"name": "writer-run", "scope": "session:*", "window": "session:30m", "limit_usd": 5.5 * COST,
         "when": {"key": "writer"}},
    ]
    with attached(_deployments(), _policy(budgets=budgets)) as (router, engine):
        async def served(key: str) -> int:
            n = 0
            try:
                for i in range(10):
                    await _send(router, [{"role": "user", "content": f"{key} {i}"}], run="r", metadata={"api_key": key})
                    await settled(engine)
                    n += 1
            except BudgetExceeded as exc:
                assert exc.budget == f"{key}-run" and exc.rule == "cap", str(exc)
            return n

        assert await served("scout") == 2
        assert await served("writer") == 5
        # another key is under neither run budget
        for i in range(7):
            await _send(router, [{"role": "user", "content": f"other {i}"}], run="r", metadata={"api_key": "other"})
        await settled(engine)


# -- a downgrade step never takes a step below the floor it keeps, nor below the client's hint ------

CHEAP = "deepseek/deepseek-chat"


def _steps_policy() -> dict:
    return {
        "version": 1, "ledger": "memory://",
        "models": {CHEAP: {"quality": 0.7}, DEAR: {"quality": 0.95}},
        "routes": {"agent": [
            {"when": {"metadata.step": "plan"}, "quality_floor": {"min_quality": 0.9}},  # holds by default
            {"quality_floor": {"min_quality": 0.9, "keep_past_downgrade": False}},  # the policy lets it go lower
        ]},
        "budgets": [{"name": "per-run", "scope": "session:*", "window": "session:30m", "limit_usd": 10 * COST,
                     "downgrade": [{"at": 0.5, "min_quality": 0.6}]}],
    }


async def test_a_plan_step_keeps_its_floor_past_a_downgrade_step_and_a_hint_is_kept_too():
    from routing_helpers import served_by

    model_list = [deployment("agent", CHEAP, "cheap", input_cost_per_token=1e-6, output_cost_per_token=1e-6),
                  deployment("agent", DEAR, "dear", **PRICE)]
    with attached(model_list, _steps_policy()) as (router, engine):
        async def step(name: str, i: int, **meta) -> str:
            response = await _send(router, [{"role": "user", "content": f"{name} {i}"}],
                                   metadata={"step": name, **meta})
            await settled(engine)
            return served_by(response)

        assert [await step("act", i) for i in range(5)] == ["dear"] * 5  # half the run's budget: past the step
        assert await step("act", 5) == "cheap"  # the downgrade step (0.6) for a step the policy lets go below its floor
        assert await step("plan", 6) == "dear"  # plan keeps its 0.9 past the downgrade step
        assert await step("act", 7, payg_hints={"min_quality": 0.9}) == "dear"  # the client's hint only tightens
        assert await step("act", 8) == "cheap"


def test_keep_past_downgrade_is_a_checked_option():
    policy = _steps_policy()
    policy["routes"]["agent"][0]["quality_floor"]["keep_past_downgrade"] = "sometimes"
    with pytest.raises(PolicyError, match="keep_past_downgrade"):
        load_policy(policy)


def test_loop_marks_read_anthropic_messages_and_responses_input_alike():
    kinds = frozenset({"tool_call", "tool_result"})
    anthropic = [{"role": "user", "content": "find it"},
                 {"role": "assistant", "content": [{"type": "text", "text": "searching"},
                                                   {"type": "tool_use", "id": "tu1", "name": "web_search",
                                                    "input": {"q": "x"}}]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "tu1", "content": "none"}]}]
    responses = [{"role": "user", "content": "find it"},
                 {"type": "function_call", "call_id": "c1", "name": "web_search", "arguments": '{"q": "x"}'},
                 {"type": "function_call_output", "call_id": "c1", "output": "none"}]
    chat = [{"role": "user", "content": "find it"},
            {"role": "assistant", "tool_calls": [{"id": "k", "function": {"name": "web_search", "arguments": '{"q":"x"}'}}]},
            {"role": "tool", "tool_call_id": "k", "content": "none"}]
    marks = [tuple(m.key for m in loop_marks(m, kinds)) for m in (anthropic, responses, chat)]
    assert len(marks[0]) == 2 and marks[0] == marks[1] == marks[2]  # the same call and result, whatever the format


async def test_mint_gives_no_run_to_a_request_without_a_key():
    """``sessions.mint`` mints from the authenticated key only: a request without one (the SDK's, unless
    its code sets a key) still has to name its run when one is required."""
    import dataclasses

    from litellm_payg.core.identity import RequestIdentity, minted_session

    nobody = RequestIdentity(user=None, team=None, api_key=None, tags=(), via_proxy=False)
    assert minted_session(None) is None and minted_session(nobody) is None
    assert minted_session(dataclasses.replace(nobody, api_key="ab" * 32)) == "key-run-" + "ab" * 8
    policy = {"version": 1, "ledger": "memory://", "routes": {"agent": []},
              "sessions": {"required": True, "mint": True},
              "budgets": [{"scope": "session:*", "window": "session:30m", "limit_usd": 1}]}
    with attached([deployment("agent", DEAR, "dear", **PRICE)], policy) as (router, engine):
        with pytest.raises(litellm.BadRequestError, match="sessions.required"):
            await router.acompletion(model="agent", messages=[{"role": "user", "content": "hi"}],
                                     mock_response="x")


async def test_explain_shows_the_runs_downgrade_step_and_the_floor_that_held(tmp_path, capsys):
    """``litellm-payg explain --session`` reads the run from the policy's ledger: past the downgrade step
    it says so, and for the ``plan`` step it names the floor that held (the route's, then a hint's)."""
    import yaml

    from litellm_payg.tools import cli

    model_list = [deployment("agent", CHEAP, "cheap", input_cost_per_token=1e-6, output_cost_per_token=1e-6),
                  deployment("agent", DEAR, "dear", **PRICE)]
    policy = {**_steps_policy(), "ledger": f"sqlite:///{tmp_path}/ledger.db"}
    with attached(model_list, policy) as (router, engine):
        for i in range(5):  # half the run's budget: past its step
            await _send(router, [{"role": "user", "content": f"act {i}"}], metadata={"step": "act"})
            await settled(engine)
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))

    def explain(*extra: str) -> str:
        capsys.readouterr()
        assert cli.main(["explain", str(path), "--model", "agent", "--prompt-tokens", "10", "--max-tokens", "20",
                         "--session", "run-1", *extra]) == 0
        return capsys.readouterr().out

    plan = explain("--metadata", "step=plan")
    assert "past its downgrade step at 0.5" in plan
    assert "the step's bar 0.6 is raised to 0.9: the floor this request keeps (the route's quality_floor) holds" in plan
    act = explain("--metadata", "step=act")
    assert "past its downgrade step at 0.5" in act and "raised" not in act
    hinted = explain("--metadata", "step=act", "--min-quality", "0.9")
    assert "raised to 0.9: the floor this request keeps (the client's min_quality hint) holds" in hinted
