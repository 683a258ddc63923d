"""The prompt's size bound (``prices.prompt_tokens_at_most``) and the decisions made with it.

``quality_floor`` orders candidates by this request's estimated cost, which depends on the prompt's
size; it skips LiteLLM's token counter when its bar and its order are the same for every size up to
a bound known from the text's bytes. Both halves are checked: the bound is never below LiteLLM's own
count (random texts, every bundled tokenizer family), and a decision made from the bound is exactly
the one made from the count (random candidates, prices, tiers and sizes).
"""

from __future__ import annotations

import random
import string

import litellm
import pytest

from litellm_payg.core.decision import Candidate, CandidateSet, RouteRequest
from litellm_payg.policy.load import load_policy
from litellm_payg.runtime.engine import Engine
from litellm_payg.stores.prices import count_request_tokens, prompt_tokens_at_most

# one model per tokenizer family LiteLLM counts with offline (Llama's would download its tokenizer)
MODELS = ["deepseek/deepseek-chat", "mistral/mistral-large-latest", "gpt-4o-mini",
          "anthropic/claude-3-5-sonnet-20240620", "gemini/gemini-1.5-flash"]
ALPHABETS = [string.printable, "日本語のテキスト中文字符", "😀🎉👍🏽❤️", "ab ", " \n\t", "ǅǆǇ ŀ ﬁ", "aaaa"]


def _random_messages(rng: random.Random) -> list[dict]:
    messages = []
    for _ in range(rng.randint(1, 5)):
        alphabet = rng.choice(ALPHABETS)
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 400)))
        message = {"role": rng.choice(["user", "assistant", "system"]),
                   "content": text if rng.random() < 0.7 else [{"type": "text", "text": text}]}
        if rng.random() < 0.2:
            message["name"] = "agent_" + str(rng.randint(0, 99))
        messages.append(message)
    return messages


@pytest.mark.parametrize("model", MODELS)
def test_the_bound_is_never_below_litellms_count(model):
    rng = random.Random(model)
    for _ in range(120):
        request = {"messages": _random_messages(rng)}
        bound = prompt_tokens_at_most(request)
        assert bound is not None
        count = count_request_tokens(model, request)
        assert count <= bound, (count, bound, request)


@pytest.mark.parametrize("request_", [
    {"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function", "function": {"name": "f"}}]},
    {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:..."}}]}]},
    {"messages": [{"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]}]},
    {"messages": [{"role": "user", "content": "hi"}], "system": "be brief"},
    {"input": "a Responses API prompt"},
    {"messages": []},
], ids=["tools", "image", "tool call", "system part", "responses input", "no messages"])
def test_no_bound_for_anything_but_plain_text_messages(request_):
    assert prompt_tokens_at_most(request_) is None


def _candidate(i: int, rng: random.Random, prices: list[tuple[float, float]]) -> Candidate:
    inp, out = rng.choice(prices)
    return Candidate(f"d{i}", f"m{i}", "p", "chat", inp, out, quality=rng.choice([None, 0.3, 0.5, 0.7, 0.9]))


def test_quality_floor_decides_from_the_bound_exactly_as_from_the_count():
    """Whatever the candidates, tiers, hint and sizes: the Step made without counting (when the rule
    chose not to count) equals the Step made with the count, and the rule counts whenever they could
    differ."""
    rng = random.Random(7)
    skipped = 0
    for trial in range(1500):
        # a few shared price pairs, so equal prices (several deployments of one model) are common
        prices = [(rng.choice([1, 2, 3, 5, 10, 15]) * 1e-7, rng.choice([1, 2, 4, 6, 10, 30]) * 1e-7) for _ in range(4)]
        candidates = [_candidate(i, rng, prices) for i in range(rng.randint(1, 8))]
        tiers = sorted(rng.sample([10, 50, 200, 800, 3000], rng.randint(0, 3)))
        policy = load_policy({"version": 1, "ledger": "memory://", "routes": {"chat": [{"quality_floor": {
            "min_quality": rng.choice([0.3, 0.6]),
            "tiers": [{"up_to_prompt_tokens": t, "min_quality": rng.choice([0.3, 0.5, 0.9])} for t in tiers]}}]}})
        rule = Engine(policy, ledger="memory://").routes["chat"][0]
        real = rng.choice([1, 7, 30, 120, 400, 900, 2500, 6000])
        bound = real + rng.choice([0, 1, 10, 100, 1000, 5000])
        output = rng.choice([16, 256, 1024])
        hint = rng.choice([None, None, 0.8])
        counted = []

        def count(real=real):
            counted.append(real)
            return real

        lazy = RouteRequest("chat", count, output, min_quality=hint, prompt_tokens_at_most=bound)
        exact = RouteRequest("chat", real, output, min_quality=hint)
        got, want = rule.apply(lazy, candidates), rule.apply(exact, candidates)
        assert [c.deployment_id for c in got.kept] == [c.deployment_id for c in want.kept], trial
        assert [(d.deployment_id, d.reason) for d in got.dropped] == [(d.deployment_id, d.reason) for d in want.dropped], trial
        assert got.note == want.note, trial
        skipped += not counted
    assert 100 < skipped < 1500  # both paths ran: some decisions skipped the count, some needed it


def test_quality_floor_remembers_its_answers_exactly():
    """What the rule works out from a group's candidates alone is remembered in its CandidateSet's
    memo (a replay and a live group repeat them): each answer equals a fresh rule's on a plain list,
    comes in lists of its own, and a rule given other options answers by them."""
    rng = random.Random(11)

    def rule_of(tiers, floor):
        return Engine(load_policy({"version": 1, "ledger": "memory://", "routes": {"chat": [{"quality_floor": {
            "min_quality": floor, "tiers": [{"up_to_prompt_tokens": t, "min_quality": q} for t, q in tiers]}}]}}),
            ledger="memory://").routes["chat"][0]

    prices = [(rng.choice([1, 2, 3, 5]) * 1e-7, rng.choice([1, 2, 4, 6]) * 1e-7) for _ in range(3)]
    groups = [CandidateSet([_candidate(i, rng, prices) for i in range(rng.randint(1, 6))]) for _ in range(3)]
    kept = rule_of([(500, 0.5)], 0.8)
    for trial in range(3000):
        candidates = rng.choice(groups)
        request = RouteRequest("chat", rng.choice([10, 300, 500, 501, 2000]), rng.choice([16, 256]),
                               min_quality=rng.choice([None, None, 0.7, 0.9]))
        got, want = kept.apply(request, candidates), rule_of([(500, 0.5)], 0.8).apply(request, list(candidates))
        assert (got.kept, got.dropped, got.note) == (want.kept, want.dropped, want.note), trial
        got.kept.append("changed by a caller")  # not seen by the next answer
        got.dropped.clear()
    assert all(group.memo for group in groups)  # worked out once per set, and given back
    other = rule_of([], 0.95)
    kept.options = other.options
    request = RouteRequest("chat", 300, 256)
    for candidates in groups:
        got, want = kept.apply(request, candidates), other.apply(request, list(candidates))
        assert (got.kept, got.dropped, got.note) == (want.kept, want.dropped, want.note)


def test_a_tier_between_the_ends_of_the_range_forces_the_count():
    """Tiers 0.6 up to 50 tokens, 0.9 up to 500, 0.6 above: a prompt bounded by 1,000 tokens has the
    same bar at both ends of its range and another in between, so the rule must count."""
    policy = load_policy({"version": 1, "ledger": "memory://", "routes": {"chat": [{"quality_floor": {
        "min_quality": 0.6, "tiers": [{"up_to_prompt_tokens": 50, "min_quality": 0.6},
                                      {"up_to_prompt_tokens": 500, "min_quality": 0.9}]}}]}})
    rule = Engine(policy, ledger="memory://").routes["chat"][0]
    candidates = [Candidate("cheap", "c", "p", "chat", 1e-7, 1e-7, quality=0.7),
                  Candidate("good", "g", "p", "chat", 1e-6, 1e-6, quality=0.95)]
    counted = []
    request = RouteRequest("chat", lambda: counted.append(1) or 200, 256, prompt_tokens_at_most=1000)
    step = rule.apply(request, candidates)
    assert counted == [1] and [c.deployment_id for c in step.kept] == ["good"]


def test_litellm_counts_framing_for_an_empty_message():
    """The range's lower end is 1 token: LiteLLM counts a message's framing even when it is empty."""
    for model in MODELS:
        assert litellm.token_counter(model=model, messages=[{"role": "user", "content": ""}]) >= 1
