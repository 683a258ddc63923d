"""The prompt is counted (LiteLLM's token counter) only when something reads its size, at most once
per request, and where it is read the count is LiteLLM's real one.

Counting is the costliest part of a pick (more than the decision itself), and many policies never
need it: one without budgets whose rules do not price the request or look at its size. Through a
real Router (``mock_response``), every count of a chat prompt (``stores/token_counts.py``, which asks
``litellm.token_counter``) is counted.
"""

from __future__ import annotations

import litellm
import pytest

from routing_helpers import DEEPSEEK, MISTRAL, attached, deployment, prompt_tokens, served_by, settled
from litellm_payg.adapter.routing import DECISION_KEY

MESSAGES = [{"role": "user", "content": "Which of my two flights leaves first, the one at 9:40 or the 10:05?"}]
GPT_MINI = "gpt-4o-mini"


@pytest.fixture
def counter_calls(monkeypatch):
    """Every chat prompt the plugin counts while the fixture is active, as (model, messages).

    Counted where the plugin counts a prompt (``prices.count_request_tokens`` calls
    ``count_chat_tokens``), not per call of ``litellm.token_counter``: that one is asked once per
    message not seen before (``stores/token_counts.py``), so its calls say how much was new, not how
    often the prompt was counted."""
    from litellm_payg.stores import prices

    calls: list[tuple] = []
    real = prices.count_chat_tokens

    def counting(model, messages, tools=None):
        calls.append((model, messages))
        return real(model, messages, tools)

    monkeypatch.setattr(prices, "count_chat_tokens", counting)
    return calls


def _deployments():
    return [deployment("chat", DEEPSEEK, "ds"), deployment("chat", GPT_MINI, "mini"), deployment("chat", MISTRAL, "ml")]


# rules that order by something other than the request's size: arms by a hash of the user, a
# failover chain by position
SIZE_BLIND_ROUTES = {
    "split": [{"split": {"sticky_by": "user", "arms": [{"model": GPT_MINI, "weight": 50}, {"model": DEEPSEEK, "weight": 50}]}}],
    "failover_chain": [],
}
SIZE_BLIND_EXTRA = {"failover_chain": {"failover": {"chains": {"chat": [MISTRAL, DEEPSEEK]}}}}


@pytest.mark.parametrize("route", sorted(SIZE_BLIND_ROUTES))
async def test_a_policy_without_budgets_whose_rules_ignore_the_size_never_counts_the_prompt(route, counter_calls):
    policy = {"version": 1, "ledger": "memory://", "routes": {"chat": SIZE_BLIND_ROUTES[route]}, **SIZE_BLIND_EXTRA.get(route, {})}
    with attached(_deployments(), policy) as (router, engine):
        metadata: dict = {"user": "alice"}
        for _ in range(3):
            metadata = {"user": "alice"}
            response = await router.acompletion(model="chat", messages=MESSAGES, metadata=metadata)
            assert served_by(response) in {"ds", "mini", "ml"}
        await settled(engine)
        assert counter_calls == [], f"the prompt was counted {len(counter_calls)} time(s) though nothing read its size"
        # every request is still recorded, at LiteLLM's cost
        assert len(engine.spend.ledger.records()) == 3
        assert metadata[DECISION_KEY]["prompt_tokens"] is None  # not counted, so not stamped


QF_POLICY = {"version": 1, "ledger": "memory://", "routes": {"chat": [{"quality_floor": {"min_quality": 0.5}}]},
             "models": {DEEPSEEK: {"quality": 0.8}, GPT_MINI: {"quality": 0.7}, MISTRAL: {"quality": 0.9}}}
# DeepSeek ($0.28/$0.42 per M) is cheaper than gpt-4o-mini ($0.15/$0.60) below about 1.4 prompt tokens
# per expected output token (354 at the default 256): a long prompt may be on either side until it
# is counted, a short one is below whatever its exact count
LONG = [{"role": "user", "content": "Please compare these two itineraries for me. " * 60}]


async def test_a_rule_that_prices_the_request_does_not_count_a_prompt_too_short_to_change_its_order(counter_calls):
    """quality_floor orders by this request's estimated cost, which depends on the prompt's size;
    a short prompt's bound (its bytes plus framing) is below every point where two candidates swap,
    so the order is known without counting it."""
    with attached(_deployments(), QF_POLICY) as (router, engine):
        for _ in range(2):
            response = await router.acompletion(model="chat", messages=MESSAGES)
            assert served_by(response) == "ds"  # cheapest at any size up to the bound
        await settled(engine)
    assert counter_calls == []


async def test_a_rule_that_prices_the_request_counts_a_long_prompt_once_per_request(counter_calls):
    with attached(_deployments(), QF_POLICY) as (router, engine):
        metadata: dict = {}
        for _ in range(2):
            metadata = {}
            await router.acompletion(model="chat", messages=LONG, metadata=metadata)
        await settled(engine)
    assert len(counter_calls) == 2
    # counted with the first candidate's model, as LiteLLM counts it, and stamped on the decision
    assert metadata[DECISION_KEY]["prompt_tokens"] == prompt_tokens(DEEPSEEK, LONG)


async def test_a_budget_reserves_with_the_real_count(counter_calls):
    policy = {"version": 1, "ledger": "memory://",
              "budgets": [{"scope": "global", "window": "day", "limit_usd": 10}],
              "routes": {"chat": []}, "failover": {"chains": {"chat": [DEEPSEEK, MISTRAL]}}}
    with attached([deployment("chat", DEEPSEEK, "ds"), deployment("chat", MISTRAL, "ml")], policy) as (router, engine):
        reserved = []
        original = engine.spend.admit

        def admit(request, ordered, *args, **kwargs):
            admission = original(request, ordered, *args, **kwargs)
            reserved.append((request.prompt_tokens, admission.candidate, admission.estimate()))
            return admission

        engine.spend.admit = admit
        await router.acompletion(model="chat", messages=MESSAGES, max_tokens=40, metadata={"user": "bob"})
        await settled(engine)
    real = litellm.token_counter(model=DEEPSEEK, messages=MESSAGES)
    ((counted, candidate, estimate),) = reserved
    assert counted == real and len(counter_calls) == 1  # the plugin's one count
    assert candidate.deployment_id == "ds"
    assert estimate == pytest.approx(real * candidate.input_usd_per_token + 40 * candidate.output_usd_per_token, rel=1e-12)


# -- cost_threshold prices the request only when its size can change the outcome ---------------

COST_THRESHOLD = {"cost_threshold": {"use": DEEPSEEK, "max_usd_per_1k_tokens": 0.0015, "otherwise": MISTRAL}}


@pytest.mark.parametrize("raised,counted", [(False, 0), (True, 1)])
async def test_cost_threshold_counts_only_when_the_size_can_flip_it(raised, counted, counter_calls):
    """With the bundled price DeepSeek is under the threshold for any request; with the raised
    price, whether it is depends on the request's mix of prompt and output tokens."""
    from routing_helpers import chat_deployments

    policy = {"version": 1, "ledger": "memory://", "routes": {"chat": [COST_THRESHOLD]}}
    with attached(chat_deployments(raised_price=raised), policy) as (router, engine):
        metadata: dict = {}
        response = await router.acompletion(model="chat", messages=MESSAGES, metadata=metadata)
        await settled(engine)
    assert len(counter_calls) == counted
    assert metadata[DECISION_KEY]["order"][:1] == [served_by(response)]


def _threshold_cases():
    from litellm_payg.core.decision import Candidate

    def cand(i, model, inp, out):
        return Candidate(f"d{i}", model, model.split("/")[0], "chat", inp, out)

    cheap, dear, other = (DEEPSEEK, 2.8e-07, 4.2e-07), (DEEPSEEK, 5.5e-07, 2.19e-06), (MISTRAL, 2e-06, 6e-06)
    lists = {
        "one price each": [cand(0, *cheap), cand(1, *other), cand(2, GPT_MINI, 1.5e-07, 6e-07), cand(3, *cheap), cand(4, *other)],
        "use at two prices": [cand(0, *cheap), cand(1, *dear), cand(2, *other)],
        "otherwise at two prices": [cand(0, *cheap), cand(1, *other), cand(2, MISTRAL, 1e-06, 9e-06)],
        "use straddles": [cand(0, *dear), cand(1, *other)],
        "limit at a price": [cand(0, DEEPSEEK, 1.5e-06, 1e-07), cand(1, *other)],
        "no use": [cand(1, *other), cand(2, GPT_MINI, 1.5e-07, 6e-07)],
    }
    return lists


@pytest.mark.parametrize("name", sorted(_threshold_cases()))
@pytest.mark.parametrize("prompt", [0, 1, 88, 5000, 200_000])
@pytest.mark.parametrize("output", [0, 1, 256, 8000])
def test_cost_threshold_without_the_count_decides_as_with_it(name, prompt, output, monkeypatch):
    from litellm_payg.core.decision import RouteRequest
    from litellm_payg.default_plugins import cost_threshold
    from litellm_payg.policy.load import load_policy

    policy = load_policy({"version": 1, "routes": {"chat": [COST_THRESHOLD]}})
    from litellm_payg.runtime.engine import Engine

    rule = Engine(policy, ledger="memory://").routes["chat"][0]
    candidates = _threshold_cases()[name]
    reads = []
    request = RouteRequest("chat", lambda: reads.append(1) or prompt, output)
    fast = rule.apply(request, candidates)
    monkeypatch.setattr(cost_threshold, "_size_blind", lambda roles, limit: False)
    exact = rule.apply(RouteRequest("chat", prompt, output), candidates)
    assert [c.deployment_id for c in fast.kept] == [c.deployment_id for c in exact.kept]
    assert list(fast.dropped) == list(exact.dropped) and fast.note == exact.note
    if name == "one price each":
        assert reads == []  # decided without counting
