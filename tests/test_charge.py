"""``core.charge.charge``: how an attempt's usage becomes its ledger charge, per provenance.

The function is pure (no LiteLLM: the adapter and the simulator pass LiteLLM's cost in), so each
rule is pinned here with plain numbers; the adapter's compositions (``adapter/charges.py``) and the
simulator's ``Pricer`` are checked to go through it.
"""

from __future__ import annotations

import pytest

from litellm_payg.core.charge import Charge, Provenance, Tariff, Usage, charge, used_tokens
from litellm_payg.core.decision import Candidate

IN, OUT = 1e-6, 4e-6  # USD per prompt / completion token
PRICED = Tariff(IN, OUT, reserved_usd=0.5)
POLICY = Tariff(IN, OUT, policy_priced=True, reserved_usd=0.5)
UNPRICED = Tariff(reserved_usd=0.5)


def candidate(price_source: str | None = "litellm", priced: bool = True) -> Candidate:
    return Candidate("d1", "openai/gpt-4o-mini", "openai", "chat", IN if priced else None, OUT if priced else None,
                     price_source=price_source)


# -- exact: the provider's own counts ---------------------------------------------------------------


def test_exact_usage_is_charged_litellms_cost():
    c = charge(Usage(100, 50, litellm_cost=0.123), PRICED)
    assert (c.cost, c.basis, c.estimated, c.abandoned) == (0.123, "litellm", False, False)
    assert c.attrs == {"prompt_tokens": 100, "completion_tokens": 50}


def test_exact_usage_on_a_deployment_the_policy_prices_is_charged_the_policys_price():
    c = charge(Usage(100, 50, litellm_cost=0.123), POLICY)
    assert c.cost == pytest.approx(100 * IN + 50 * OUT) and c.basis == "price"


def test_exact_billed_tokens_litellm_priced_at_zero_are_charged_the_deployments_price():
    for litellm_cost in (0.0, None):
        c = charge(Usage(100, 50, litellm_cost=litellm_cost), PRICED)
        assert c.cost == pytest.approx(100 * IN + 50 * OUT) and c.basis == "price" and not c.estimated


def test_exact_completion_without_a_prompt_count_litellm_priced_at_zero_is_charged_the_completion():
    """A usage block with completion tokens and no prompt count, LiteLLM's cost $0, on a priced
    deployment: the completion at the deployment's price (what the adapter charged before the
    charge function; the merge of that function first charged $0 here)."""
    c = charge(Usage(None, 50, litellm_cost=0.0), PRICED)
    assert c.cost == pytest.approx(50 * OUT) and c.basis == "price"


def test_exact_zero_from_litellm_with_no_price_of_its_own_stays_zero():
    c = charge(Usage(100, 50, litellm_cost=0.0), UNPRICED)
    assert (c.cost, c.basis, c.estimated) == (0.0, "litellm", False)


def test_exact_usage_nothing_prices_is_charged_the_reservation_marked_an_estimate():
    c = charge(Usage(None, None), UNPRICED)  # e.g. an image answer LiteLLM priced nowhere
    assert (c.cost, c.basis, c.estimated) == (0.5, "reservation", True)
    assert c.attrs == {"usage": "estimated"}
    assert charge(Usage(None, None), Tariff()).cost == 0.0


def test_cache_hit_is_charged_nothing_whatever_the_usage():
    c = charge(Usage(100, 50, litellm_cost=0.3, cache_hit=True), POLICY)
    assert (c.cost, c.basis, c.cache_hit) == (0.0, "cache", True)
    assert c.attrs == {"cache_hit": "true"}


def test_a_speech_model_is_charged_every_input_character_when_that_is_more():
    tariff = Tariff(IN, OUT, input_usd_per_character=1e-5)
    c = charge(Usage(0, 0, litellm_cost=1e-4, characters=11), tariff)
    assert c.cost == pytest.approx(11e-5) and c.basis == "characters"
    assert charge(Usage(0, 0, litellm_cost=1.0, characters=11), tariff).cost == 1.0


def test_token_details_reach_the_ledger_attributes():
    c = charge(Usage(100, 50, litellm_cost=0.1, cache_read_tokens=60, reasoning_tokens=20), PRICED)
    assert c.attrs == {"prompt_tokens": 100, "completion_tokens": 50, "cache_read_tokens": 60, "reasoning_tokens": 20}
    assert used_tokens(c) == 150


# -- estimated: the plugin's own count ------------------------------------------------------------


def test_estimated_usage_is_charged_the_deployments_price_over_litellms():
    c = charge(Usage(100, 50, Provenance.ESTIMATED, litellm_cost=9.0), PRICED)
    assert c.cost == pytest.approx(100 * IN + 50 * OUT) and c.basis == "price" and c.estimated
    assert c.attrs == {"usage": "estimated", "prompt_tokens": 100, "completion_tokens": 50}


def test_estimated_usage_without_a_price_is_charged_litellms_price_else_the_reservation():
    assert charge(Usage(100, 50, Provenance.ESTIMATED, litellm_cost=0.02), UNPRICED).cost == 0.02
    c = charge(Usage(100, 50, Provenance.ESTIMATED), UNPRICED)
    assert (c.cost, c.basis, c.estimated, c.priced) == (0.5, "reservation", True, False)
    c = charge(Usage(None, 50, Provenance.ESTIMATED), PRICED)  # the prompt could not be counted
    assert (c.cost, c.basis) == (0.5, "reservation")
    assert charge(Usage(100, 50, Provenance.ESTIMATED), Tariff()).basis == "nothing"


# -- abandoned: a stream left before its end --------------------------------------------------------


def test_abandoned_stream_is_charged_what_was_streamed_marked_with_why():
    c = charge(Usage(100, 7, Provenance.ABANDONED, abandoned_because="dropped"), PRICED)
    assert c.cost == pytest.approx(100 * IN + 7 * OUT) and c.basis == "price"
    assert c.abandoned and not c.estimated
    assert c.attrs == {"usage": "estimated", "abandoned": "dropped", "prompt_tokens": 100, "completion_tokens": 7}
    assert charge(Usage(100, 7, Provenance.ABANDONED, litellm_cost=0.01), PRICED).cost == 0.01
    assert charge(Usage(100, 7, Provenance.ABANDONED, litellm_cost=0.01), POLICY).basis == "price"


def test_abandoned_stream_nothing_prices_is_charged_its_reservation():
    c = charge(Usage(None, 7, Provenance.ABANDONED), UNPRICED)
    assert (c.cost, c.basis, c.abandoned) == (0.5, "reservation", True)


# -- the tariff and the callers -------------------------------------------------------------------


def test_the_tariff_of_a_candidate():
    assert Tariff.of(candidate(), 0.2) == Tariff(IN, OUT, False, None, 0.2)
    assert Tariff.of(candidate("policy")).policy_priced
    assert not Tariff.of(candidate(priced=False)).priced
    assert Tariff.of(None, 0.3) == Tariff(reserved_usd=0.3)


def test_the_adapters_compositions_are_the_charge():
    from litellm_payg.adapter import charges

    assert charges.Charge is Charge
    assert charges.streamed_cost(candidate(priced=False), "no-such/model", 100, 5, 0.7) == 0.7
    assert charges.streamed_cost(candidate(), "openai/gpt-4o-mini", None, 5, 0.7) == 0.7
    assert charges.streamed_cost(candidate(), "openai/gpt-4o-mini", 100, 5, 0.7) == pytest.approx(100 * IN + 5 * OUT)


def test_an_answer_with_its_usage_is_charged_by_the_charge_function():
    from litellm_payg.adapter import charges

    def never():
        raise AssertionError("LiteLLM's cost is not asked for a deployment the policy prices")

    policy = charges.answer_charge(candidate("policy"), "openai/gpt-4o-mini", 100, 50, never)
    assert (policy.cost, policy.basis) == (pytest.approx(100 * IN + 50 * OUT), "price")
    assert charges.answer_charge(candidate(), "m", 100, 50, lambda: 0.25).cost == 0.25
    # LiteLLM's $0 for billed tokens: the deployment's price
    assert charges.answer_charge(candidate(), "m", 100, 50, lambda: 0.0).cost == pytest.approx(100 * IN + 50 * OUT)
    # LiteLLM's $0 and no price of the deployment's: LiteLLM's price map, else $0 (not the reservation)
    mapped = charges.answer_charge(candidate(priced=False), "openai/gpt-4o-mini", 100, 50, lambda: None)
    assert mapped.cost == pytest.approx(charges.litellm_price("openai/gpt-4o-mini", 100, 50)) and mapped.cost > 0
    unknown = charges.answer_charge(candidate(priced=False), "no-such/model", 100, 50, lambda: None)
    assert (unknown.cost, unknown.estimated) == (0.0, False)
    cached = charges.answer_charge(candidate(), "m", 100, 50, never, cache_hit=True)
    assert (cached.cost, cached.cache_hit) == (0.0, True)
    speech = Candidate("d1", "openai/tts-1", "openai", "speech", None, None, price_source="litellm",
                       input_usd_per_character=1e-5)
    assert charges.answer_charge(speech, "openai/tts-1", None, None, lambda: 0.0001, characters=100).cost == pytest.approx(1e-3)


def test_an_estimate_falls_back_to_the_reservation():
    from litellm_payg.adapter import charges

    assert charges.estimated_charge(candidate(), "m", 100, 50, 0.5).cost == pytest.approx(100 * IN + 50 * OUT)
    assert charges.estimated_charge(candidate(), "m", 100, 50, 0.5, countable=False).cost == 0.5
    unpriced = charges.estimated_charge(candidate(priced=False), "no-such/model", 100, 50, 0.5)
    assert (unpriced.cost, unpriced.basis, unpriced.estimated) == (0.5, "reservation", True)
    assert charges.reported_charge(candidate(), "m", 0, 0, 0.5).cost == 0.5  # nothing reported: the reservation
    assert charges.reported_charge(candidate(), "m", 100, 50, 0.5).cost == pytest.approx(100 * IN + 50 * OUT)


def test_an_answered_failure_is_charged_the_highest_of_prompt_reservation_and_streamed():
    from litellm_payg.adapter import charges

    prompt = 100 * IN
    billed, what = charges.failed_answer_charge(candidate(), 100, None, None)
    assert (billed.cost, what, billed.prompt_tokens, billed.completion_tokens) == (pytest.approx(prompt), "prompt", 100, None)
    billed, what = charges.failed_answer_charge(candidate(), 100, 0.5, None)
    assert (billed.cost, what, billed.estimated) == (0.5, "reservation", True)
    billed, what = charges.failed_answer_charge(candidate(), 100, 0.5, (100, 40, 0.9))
    assert (billed.cost, what, billed.completion_tokens) == (0.9, "streamed", 40)
    # the policy's price, not LiteLLM's cost, prices what a policy-priced deployment streamed
    billed, what = charges.failed_answer_charge(candidate("policy"), 100, None, (100, 40, 0.9))
    assert (billed.cost, what) == (pytest.approx(100 * IN + 40 * OUT), "streamed")
    assert charges.failed_answer_charge(candidate(priced=False), None, None, None)[0].cost == 0.0


def test_the_simulator_charges_through_the_same_function(monkeypatch):
    # LiteLLM's cost function stands in for a real response's cost; the rules are core.charge's:
    # a deployment the policy prices is charged the policy's price, whatever LiteLLM says
    import litellm

    from litellm_payg.tools.sim_pricing import Pricer

    monkeypatch.setattr(litellm, "cost_per_token", lambda **kwargs: (0.25, 0.5))
    by_litellm, by_policy = candidate("litellm"), Candidate("d2", "my/fine-tune", "my", "chat", IN, OUT, price_source="policy")
    pricer = Pricer([by_litellm, by_policy], {})
    assert pricer.cost(by_litellm, 1000, 200) == 0.75
    assert pricer.cost(by_policy, 1000, 200) == pytest.approx(1000 * IN + 200 * OUT)
    assert pricer.cost(by_policy, 1000, 200) == charge(Usage(1000, 200, litellm_cost=0.75), Tariff.of(by_policy)).cost
