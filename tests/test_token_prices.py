"""A plain-token answer is charged at the deployment's per-token price instead of running LiteLLM's
calculator inline (``charges.TokenPrices``), and that charge is the same number LiteLLM's
calculator gives: checked here against ``litellm.completion_cost`` and against the cost LiteLLM
stamps on the Router's answer, over several models and price sources. Usage with parts the simple
price does not cover (cached, cache-write, reasoning, audio tokens) and tiered or service-tier
prices go to LiteLLM's calculator.
"""

from __future__ import annotations

import litellm
import pytest
from litellm.types.utils import CompletionTokensDetailsWrapper, PromptTokensDetailsWrapper
from routing_helpers import attached, deployment

from litellm_payg.adapter import charges
from litellm_payg.stores.prices import candidate_from_deployment

#: flat-priced in LiteLLM's bundled price map, several providers
FLAT_MODELS = [
    "openai/gpt-4o-mini",
    "gpt-4o",
    "deepseek/deepseek-chat",
    "mistral/mistral-large-latest",
    "together_ai/meta-llama/Llama-3.3-70B-Instruct-Turbo",
    "openai/o3-mini",
    "claude-haiku-4-5",
    "dashscope/qwen-turbo",  # has a reasoning-token price: plain usage has no reasoning tokens
]
SIZES = [(1, 0), (0, 1), (88, 20), (1234, 567), (100_000, 4000)]


def _response(model: str, prompt: int, completion: int, **usage: object) -> litellm.ModelResponse:
    return litellm.ModelResponse(
        model=model.split("/", 1)[-1],
        choices=[{"message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop", "index": 0}],
        usage=litellm.Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion, **usage),
    )


class _Calculator:
    """LiteLLM's ``completion_cost`` for the model, counting its calls."""

    def __init__(self, model: str):
        self.model, self.calls = model, 0

    def __call__(self, response: litellm.ModelResponse) -> float:
        self.calls += 1
        return float(litellm.completion_cost(completion_response=response, model=self.model))


def _priced(model: str) -> tuple[charges.TokenPrices, object]:
    d = deployment("chat", model, "d1")
    candidate = candidate_from_deployment(d, {})
    prices = charges.TokenPrices()
    prices.flat = frozenset({"d1"} if charges.flat_priced(candidate, d) else ())
    return prices, candidate


@pytest.mark.parametrize("model", FLAT_MODELS)
def test_the_deployment_price_of_plain_tokens_is_litellms_completion_cost(model):
    prices, candidate = _priced(model)
    assert prices.flat == {"d1"}, f"{model} should be flat-priced"
    calc = _Calculator(model)
    for prompt, completion in SIZES:
        response = _response(model, prompt, completion)
        charged = prices.cost({}, response, candidate, lambda r=response: calc(r))
        assert charged == litellm.completion_cost(completion_response=response, model=model), (model, prompt, completion)
    # the calculator ran once, to agree; every later answer was priced without it
    assert calc.calls == 1


@pytest.mark.parametrize("model", ["openai/gpt-4o-mini", "deepseek/deepseek-chat", "claude-haiku-4-5", "gpt-4o"])
@pytest.mark.parametrize("usage", [
    {"prompt_tokens_details": PromptTokensDetailsWrapper(cached_tokens=600)},
    {"completion_tokens_details": CompletionTokensDetailsWrapper(reasoning_tokens=300)},
    {"prompt_tokens_details": PromptTokensDetailsWrapper(audio_tokens=100)},
    {"cache_creation_input_tokens": 200},
    {"cache_read_input_tokens": 200},
], ids=["cached", "reasoning", "audio", "cache_write", "cache_read"])
def test_usage_with_parts_beyond_plain_tokens_is_priced_by_litellm(model, usage):
    prices, candidate = _priced(model)
    calc = _Calculator(model)
    plain = _response(model, 1000, 500)
    prices.cost({}, plain, candidate, lambda: calc(plain))  # the deployment's price is agreed
    response = _response(model, 1000, 500, **usage)
    assert charges.plain_tokens(response) is None
    before = calc.calls
    charged = prices.cost({}, response, candidate, lambda: calc(response))
    assert calc.calls == before + 1
    assert charged == litellm.completion_cost(completion_response=response, model=model)


def test_cached_tokens_cost_less_than_the_simple_price_so_the_fallback_matters():
    prices, candidate = _priced("openai/gpt-4o-mini")
    response = _response("openai/gpt-4o-mini", 1000, 500, prompt_tokens_details=PromptTokensDetailsWrapper(cached_tokens=800))
    assert litellm.completion_cost(completion_response=response, model="openai/gpt-4o-mini") < candidate.estimate_usd(1000, 500)


def test_explicit_zero_details_and_text_tokens_are_still_plain():
    response = _response("gpt-4o", 100, 50,
                         prompt_tokens_details=PromptTokensDetailsWrapper(cached_tokens=0, text_tokens=100),
                         completion_tokens_details=CompletionTokensDetailsWrapper(reasoning_tokens=0))
    assert charges.plain_tokens(response) == (100, 50)


def test_a_tiered_model_is_not_flat_priced():
    prices, _ = _priced("gemini/gemini-2.5-pro")  # input_cost_per_token_above_200k_tokens
    assert prices.flat == frozenset()


@pytest.mark.parametrize("field", [{"service_tier": "priority"}, {"web_search_options": {"search_context_size": "low"}}])
def test_a_request_that_asks_for_a_priced_option_is_priced_by_litellm(field):
    prices, candidate = _priced("gpt-4o")
    calc = _Calculator("gpt-4o")
    response = _response("gpt-4o", 100, 50)
    prices.cost({}, response, candidate, lambda: calc(response))
    prices.cost(field, response, candidate, lambda: calc(response))
    assert calc.calls == 2


def test_when_litellm_disagrees_its_price_is_charged_from_then_on():
    prices, candidate = _priced("gpt-4o")
    response = _response("gpt-4o", 100, 50)
    calls = []

    def calculator() -> float:
        calls.append(1)
        return candidate.estimate_usd(100, 50) * 2  # LiteLLM prices it some other way

    assert prices.cost({}, response, candidate, calculator) == candidate.estimate_usd(100, 50) * 2
    assert prices.cost({}, response, candidate, calculator) == candidate.estimate_usd(100, 50) * 2
    assert len(calls) == 2
    # another served model is another agreement
    other = _response("gpt-4o-2024-08-06", 100, 50)
    assert prices.cost({}, other, candidate, lambda: candidate.estimate_usd(100, 50)) == candidate.estimate_usd(100, 50)


@pytest.mark.parametrize("model,extra", [
    ("openai/gpt-4o-mini", {}),
    ("deepseek/deepseek-chat", {}),
    ("mistral/mistral-large-latest", {}),
    ("openai/gpt-4o-mini", {"input_cost_per_token": 3e-06, "output_cost_per_token": 7e-06}),  # the deployment's own price
])
async def test_a_router_answer_is_charged_what_litellm_stamps_on_it(tmp_path, monkeypatch, model, extra):
    runs = []
    real = charges.attempt_cost
    monkeypatch.setattr(charges, "attempt_cost", lambda *a, **k: runs.append(1) or real(*a, **k))
    policy = {"version": 1, "ledger": f"sqlite:///{tmp_path}/ledger.db",
              "budgets": [{"scope": "global", "window": "day", "limit_usd": 10}]}
    with attached([deployment("chat", model, "d1", "a short answer", **extra)], policy) as (router, engine):
        responses = [await router.acompletion(model="chat", messages=[{"role": "user", "content": "hi"}],
                                              mock_response=_response(model, 10 + 300 * i, 5 + 70 * i))
                     for i in range(4)]
        records = engine.spend.ledger.records()
    assert len(records) == 4
    assert len({r.usage.prompt_tokens for r in responses}) == 4  # four different sizes
    for record, response in zip(records, responses):
        assert record.amount_usd == pytest.approx(response._hidden_params["response_cost"], rel=1e-12, abs=1e-15)
        assert record.amount_usd > 0
    if extra:
        assert records[0].amount_usd == pytest.approx(
            responses[0].usage.prompt_tokens * 3e-06 + responses[0].usage.completion_tokens * 7e-06, rel=1e-12)
    assert len(runs) == 1  # LiteLLM's calculator ran inline for the first answer only


@pytest.mark.parametrize("usage", [
    {}, {"prompt_tokens_details": PromptTokensDetailsWrapper(cached_tokens=0, text_tokens=100)},
    {"prompt_tokens_details": PromptTokensDetailsWrapper(cached_tokens=600)},
    {"completion_tokens_details": CompletionTokensDetailsWrapper(reasoning_tokens=300)},
    {"cache_creation_input_tokens": 200}, {"cache_read_input_tokens": 200},
    {"prompt_tokens_details": PromptTokensDetailsWrapper(audio_tokens=100)},
], ids=["plain", "zero-details", "cached", "reasoning", "cache_write", "cache_read", "audio"])
def test_plain_tokens_report_no_cache_or_reasoning_tokens(usage):
    """The inline settle skips ``token_details`` for an answer ``plain_tokens`` accepts (the charge
    is handed its plain counts): such a usage reports none, and the usage read once gives what a
    fresh read gives."""
    response = _response("gpt-4o", 100, 50, **usage)
    read = charges.field_of(response, "usage")
    if charges.plain_tokens(response, read) is not None:
        assert charges.token_details(response) == {}
    assert charges.token_details(response, read) == charges.token_details(response)
    assert charges.answer_tokens(response, read) == charges.answer_tokens(response) == (100, 50)
    assert charges.plain_tokens(response, read) == charges.plain_tokens(response)
