"""The judged sample: a share of answers also sent to an unsure candidate and judged, inside a dollar cap.

LiteLLM's real Router, with deployments answering through LiteLLM's own ``mock_response`` (priced
per token like any other deployment) and a judge model answering the same way.
"""

from __future__ import annotations

import asyncio

import pytest

from litellm_payg.adapter.judge import judged, sampled
from litellm_payg.stores.evidence import cell_key

from routing_helpers import attached, settled

CHEAP, MID = "deepseek/deepseek-chat", "mistral/mistral-large-latest"


def _dep(model: str, dep_id: str, price: float) -> dict:
    return {"model_name": "chat", "litellm_params": {"model": model, "api_key": "not-used", "mock_response": f"answer of {dep_id}",
                                                     "input_cost_per_token": price, "output_cost_per_token": price},
            "model_info": {"id": dep_id}}


def _policy(max_usd: float, reserve_usd: float, judge_says: str = "PASS") -> dict:
    return {
        "version": 1, "ledger": "memory://",
        "models": {MID: {"quality": 0.95}},  # the newcomer (CHEAP) has no declared quality: unsure
        "quality": {"judge": {"model": "openai/gpt-4o-mini", "share": 1.0, "max_usd": max_usd, "reserve_usd": reserve_usd,
                              "max_tokens": 50,
                              "litellm_params": {"mock_response": judge_says, "api_key": "not-used"}}},
        "routes": {"chat": [{"quality_floor": {"min_quality": 0.85, "measured": {}}}]},
    }


def test_sampling_and_verdict_parsing():
    ids = [f"req-{i}" for i in range(2000)]
    share = sum(sampled(i, 0.1) for i in ids) / len(ids)
    assert 0.07 < share < 0.13 and sampled("req-1", 0.1) == sampled("req-1", 0.1)
    assert judged("PASS") is True and judged(" fail.") is False and judged("maybe") is None


async def test_200_concurrent_requests_keep_the_judged_sample_inside_its_dollar_cap():
    reserve = 0.001
    cap = 2 * reserve  # a sample reserves $0.001 and costs about $0.00003: the 200 together would cost about $0.005
    model_list = [_dep(CHEAP, "new", 1e-7), _dep(MID, "mid", 1e-6)]
    with attached(model_list, _policy(cap, reserve)) as (router, engine):
        answers = await asyncio.gather(*[
            router.acompletion(model="chat", messages=[{"role": "user", "content": f"question {i}"}]) for i in range(200)])
        assert {a._hidden_params["model_id"] for a in answers} == {"mid"}  # the newcomer only gets judged
        adapter = engine.adapter
        await adapter.judge.drain()
        await settled(engine)
        judged_records = [r for r in engine.spend.ledger.records() if r.attrs.get("purpose") == "judge"]
        spent = sum(r.amount_usd for r in judged_records)
        assert 1 <= len(judged_records) < 200 and 0 < spent <= cap
        assert 200 * min(r.amount_usd for r in judged_records) > cap  # without the cap, the 200 would be over it
        assert all(r.attrs["deployment"] == "new" for r in judged_records)
        tally = engine.quality.store.tallies("chat")[cell_key("new", "", "judged")]
        assert tally.n == len(judged_records) and tally.s == pytest.approx(tally.w)  # the judge said PASS each time
        # the sample's calls are charged at what LiteLLM prices them: candidate (1e-7 a token) and judge
        assert all(r.amount_usd <= reserve for r in judged_records)


async def test_a_fail_verdict_is_evidence_against_the_candidate():
    model_list = [_dep(CHEAP, "new", 1e-7), _dep(MID, "mid", 1e-6)]
    with attached(model_list, _policy(1.0, 0.001, judge_says="FAIL")) as (router, engine):
        for i in range(3):
            await router.acompletion(model="chat", messages=[{"role": "user", "content": f"q{i}"}])
        await engine.adapter.judge.drain()
        await settled(engine)
        tally = engine.quality.store.tallies("chat")[cell_key("new", "", "judged")]
    assert tally.n == 3 and tally.s == 0.0
