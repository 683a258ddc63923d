"""What is remembered of a group's candidate set (``CandidateSet.memo``) changes nothing a decision
says: ``quality_floor`` on a set (its drops and price orders planned once, ``core/price_order.py``)
and on a plain list of the same candidates give the same step, count the prompt in the same cases;
``cost_threshold`` and ``feasible`` too; over random prices (ties, crossings near the prompt's
bound, unpriced candidates), bars, tiers, hints and sizes.
"""

from __future__ import annotations

import random
import re

import pytest

from litellm_payg.core.decision import Candidate, CandidateSet, RouteRequest, memo_of
from litellm_payg.core.feasibility import feasible
from litellm_payg.core.price_order import PriceOrder
from litellm_payg.default_plugins.cost_threshold import CostThreshold, CostThresholdOptions
from litellm_payg.default_plugins.quality_floor import QualityFloor, QualityFloorOptions
from litellm_payg.rules import RuleContext

PRICES = [1e-7, 1.5e-7, 2e-7, 2.5e-7, 4e-7, 6e-7, 1e-6, 2.5e-6, 3e-6, 1e-5]


def _candidates(rng: random.Random, n: int) -> list[Candidate]:
    out = []
    for i in range(n):
        priced = rng.random() > 0.05
        out.append(Candidate(
            f"d{i}", f"p/m{i % 7}", "p", "g",
            rng.choice(PRICES) if priced else None, rng.choice(PRICES) if priced else None,
            quality=None if rng.random() < 0.1 else rng.choice([0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95]),
            litellm_max_input_tokens=rng.choice([None, 8_000, 32_000, 128_000]), order=rng.choice([None, None, 1]),
        ))
    return out


def _request(rng: random.Random, counted: list[int]) -> RouteRequest:
    tokens = rng.choice([0, 1, 5, 40, 90, 200, 700, 3_000, 20_000, 150_000])
    bound = rng.choice([None, tokens, tokens + rng.randint(0, 50), tokens * 3 + 17])

    def count() -> int:
        counted.append(tokens)
        return tokens

    return RouteRequest(group="g", prompt_tokens=count if rng.random() < 0.8 else tokens,
                        output_tokens=rng.choice([0, 1, 64, 256, 4_000]),
                        min_quality=rng.choice([None, None, 0.75, 0.9]), prompt_tokens_at_most=bound)


def _outcome(step) -> tuple:
    return ([c.deployment_id for c in step.kept], list(step.dropped), step.note)


@pytest.mark.parametrize("seed", range(40))
def test_quality_floor_on_a_candidate_set_decides_as_on_a_list(seed: int) -> None:
    rng = random.Random(seed)
    tiers = rng.choice([[], [{"up_to_prompt_tokens": 100, "min_quality": 0.6}],
                        [{"up_to_prompt_tokens": 50, "min_quality": 0.5}, {"up_to_prompt_tokens": 5_000, "min_quality": 0.7}]])
    rule = QualityFloor(QualityFloorOptions(min_quality=rng.choice([0.6, 0.8, 0.9]), tiers=tiers),
                        RuleContext(group="g", field="routes.g[0].quality_floor"))
    candidates = _candidates(rng, rng.choice([2, 5, 20, 60]))
    group = CandidateSet(candidates)
    _decides_on_the_set_as_on_the_list(rng, rule, candidates, group, 60)
    assert memo_of(group), "nothing was remembered of the set"


def _decides_on_the_set_as_on_the_list(rng: random.Random, rule, candidates, group: CandidateSet, times: int) -> None:
    """``times`` random requests: the rule's step (and whether it counted the prompt) on ``group`` is
    its step on a plain list of the same candidates; an error on the list is the same error on the set."""
    for _ in range(times):
        state = rng.getstate()
        plain_counted: list[int] = []
        try:
            plain = _outcome(rule.apply(_request(rng, plain_counted), list(candidates)))
        except ValueError as exc:  # e.g. an unpriced candidate above the bar: the same error on a set
            rng.setstate(state)
            with pytest.raises(ValueError, match=re.escape(str(exc).split("(")[0])):
                rule.apply(_request(rng, []), group)
            continue
        rng.setstate(state)
        set_counted: list[int] = []
        assert _outcome(rule.apply(_request(rng, set_counted), group)) == plain
        assert set_counted == plain_counted, "the set counted the prompt where the list did not, or the reverse"


@pytest.mark.parametrize("seed", range(30))
def test_cost_threshold_on_a_candidate_set_decides_as_on_a_list(seed: int) -> None:
    rng = random.Random(seed)
    candidates = _candidates(rng, rng.choice([2, 6, 25]))
    if rng.random() < 0.5:  # every `use` deployment at one price, so the prompt's size cannot matter
        candidates = [c if c.model != "p/m0" else Candidate(c.deployment_id, c.model, "p", "g", 1e-7, 2e-7)
                      for c in candidates]
    rule = CostThreshold(CostThresholdOptions(use="p/m0", max_usd_per_1k_tokens=rng.choice([0.0002, 0.001, 0.01]),
                                              otherwise=rng.sample(["p/m1", "p/m2", "m3", "d4"], rng.randint(1, 3))),
                         RuleContext(group="g", field="routes.g[0].cost_threshold"))
    _decides_on_the_set_as_on_the_list(rng, rule, candidates, CandidateSet(candidates), 20)


@pytest.mark.parametrize("seed", range(20))
def test_a_price_order_is_the_sort_at_every_size_it_answers_for(seed: int) -> None:
    rng = random.Random(seed)
    candidates = [c for c in _candidates(rng, rng.choice([3, 10, 40])) if c.input_usd_per_token is not None]
    o = rng.choice([0, 1, 100, 1_000])
    order = PriceOrder(candidates, o)
    answered = 0
    for _ in range(200):
        lo = rng.choice([0, 1, rng.randint(0, 5_000)])
        hi = lo + rng.choice([0, 0, 1, rng.randint(0, 10_000)])
        found = order.at(lo, hi)
        for p in {lo, hi, (lo + hi) // 2, rng.randint(lo, hi)}:
            at_p = sorted(candidates, key=lambda c: c.estimate_usd(p, o))
            if found is not None:
                assert list(found) == at_p, (lo, hi, p)
        if order.crosses(lo, hi):
            assert sorted(candidates, key=lambda c: c.estimate_usd(lo, o)) != sorted(
                candidates, key=lambda c: c.estimate_usd(hi, o))
        answered += found is not None
    # with no output tokens, equal input prices tie at every size: it leaves those to the sort
    assert answered or o == 0, "the order never answered"


@pytest.mark.parametrize("seed", range(10))
def test_feasible_reads_a_candidate_set_as_a_list(seed: int) -> None:
    rng = random.Random(seed)
    candidates = _candidates(rng, rng.choice([2, 8, 30]))
    group = CandidateSet(candidates)
    for _ in range(30):
        state = rng.getstate()
        a = feasible(_request(rng, []), list(candidates))
        rng.setstate(state)
        b = feasible(_request(rng, []), group)
        assert (a is None) == (b is None)
        if a is not None:
            assert ([c.deployment_id for c in a.kept], list(a.dropped), a.note) == (
                [c.deployment_id for c in b.kept], list(b.dropped), b.note)


def test_the_adapter_hands_one_set_per_deployments_and_a_new_one_when_they_change() -> None:
    from routing_helpers import attached

    model_list = [{"model_name": "chat", "litellm_params": {"model": model, "mock_response": "hi", "api_key": "sk-x"},
                   "model_info": {"id": dep}} for model, dep in (("deepseek/deepseek-chat", "a"), ("gpt-4o-mini", "b"))]
    policy = {"version": 1, "models": {"deepseek/deepseek-chat": {"quality": 0.8}, "gpt-4o-mini": {"quality": 0.9}},
              "routes": {"chat": [{"quality_floor": {"min_quality": 0.5}}]}}
    with attached(model_list, policy) as (router, engine):
        adapter = engine.adapter
        deployments = [dict(d) for d in model_list]
        first = adapter._candidates_for(deployments)
        assert type(first) is CandidateSet and [c.deployment_id for c in first] == ["a", "b"]
        assert adapter._candidates_for([dict(d) for d in model_list]) is first, "the same deployments: the same set"
        reversed_ = adapter._candidates_for(deployments[::-1])
        assert [c.deployment_id for c in reversed_] == ["b", "a"] and reversed_ is not first
        adapter._load(deployments)  # the router's deployments were read again: new candidates, new sets
        again = adapter._candidates_for(deployments)
        assert again is not first and again[0] is adapter._candidates["a"]
