"""An answer that reports no usage is charged an estimate, never silently $0.

Some OpenAI-compatible gateways and self-hosted servers answer a chat completion without a
``usage`` block. LiteLLM 1.110.2 then reports 0 tokens and a ``response_cost`` of 0.0, so settling
what LiteLLM says would record a billed call at $0 and let it escape every budget. The plugin
charges LiteLLM's token count of the request and the answer at the deployment's price instead,
logs a warning naming the deployment, and marks the ledger record ``usage: estimated``.

Everything runs through a real Router and LiteLLM's real provider clients against the stand-in
(``Reply(usage=False)``), offline. Expected amounts are computed here from ``litellm.token_counter``
and the price, independently of the plugin's code.
"""

from __future__ import annotations

import json
import logging

import httpx
import litellm
import pytest
from routing_helpers import Recorder, attached, settled
from services import BACKENDS, ledger_url
from standin_helpers import (
    OPENAI_STYLE,
    OWN_PRICE,
    ROUTER,
    STANDIN_MODELS,
    deployment_price,
    governed_policy,
    standin_deployment,
)

from litellm_payg.adapter import charges
from litellm_payg.adapter.litellm_errors import BudgetExceeded
from standin import StandIn

MESSAGES = [{"role": "user", "content": "Which of our plans includes priority support, and what does it cost per month?"}]
ANSWER = "The Business plan includes priority support; it costs 49 dollars per month, billed yearly."

# the deployment under test per stand-in provider (all OpenAI-style: Anthropic always sends usage,
# and LiteLLM itself refuses a Gemini answer without usageMetadata)
MODELS = {p: STANDIN_MODELS[p] for p in OPENAI_STYLE}


def _expected(model: str, price: tuple[float, float], text: str = ANSWER) -> tuple[int, int, float]:
    prompt = litellm.token_counter(model=model, messages=MESSAGES)
    completion = litellm.token_counter(model=model, text=text)
    return prompt, completion, prompt * price[0] + completion * price[1]


# -- the stand-in really answers without usage ------------------------------------------------------


@pytest.mark.parametrize("provider", sorted(MODELS))
async def test_litellm_reports_zero_usage_for_the_standin_answer_without_usage(standin, provider):
    """The premise: LiteLLM itself reports 0 tokens and $0 for these answers (if it ever counts
    them itself, the plugin's estimate is no longer needed and this says so)."""
    standin.reply(provider, text=ANSWER, usage=False)
    r = await litellm.acompletion(model=MODELS[provider], api_base=standin.url(provider), api_key="sk-test",
                                  messages=MESSAGES, num_retries=0, max_retries=0)
    assert r.choices[0].message.content == ANSWER
    usage = getattr(r, "usage", None)
    assert not getattr(usage, "prompt_tokens", None) and not getattr(usage, "completion_tokens", None)
    assert not r._hidden_params.get("response_cost")
    body = standin.requests(provider)[-1]
    assert body.outcome == "ok"


def test_anthropic_answers_always_carry_usage(standin):
    with pytest.raises(ValueError, match="Anthropic's Messages API always reports usage"):
        standin.reply("anthropic", usage=False)


def _post(s: StandIn, provider: str, **body) -> httpx.Response:
    if provider == "gemini":
        op = "streamGenerateContent?alt=sse" if body.pop("stream", False) else "generateContent"
        return httpx.post(f"{s.url('gemini')}/models/gemini-2.5-flash:{op}",
                          json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}, timeout=10)
    return httpx.post(f"{s.url(provider)}/chat/completions",
                      json={"model": "m", "messages": [{"role": "user", "content": "hi"}], **body}, timeout=10)


@pytest.mark.parametrize("provider", [*sorted(MODELS), "gemini"])
def test_standin_sends_no_usage_anywhere_when_told(standin, provider):
    """``Reply(usage=False)``: no usage in the body, nor in any stream frame, even when the request
    asks for stream usage; the answer text is unchanged. By default usage is sent."""
    usage_keys = ("usage", "usageMetadata", "prompt_tokens", "promptTokenCount")
    asks = {} if provider == "gemini" else {"stream_options": {"include_usage": True}}
    assert any(k in _post(standin, provider).text for k in usage_keys)  # the default still sends it
    standin.reply(provider, text=ANSWER, usage=False)
    body = _post(standin, provider)
    assert body.status_code == 200 and not any(k in body.text for k in usage_keys), body.text
    assert ANSWER in body.text
    stream = _post(standin, provider, stream=True, **asks)
    assert stream.status_code == 200
    frames = [json.loads(line[len("data: "):]) for line in stream.text.splitlines() if line.startswith("data: {")]
    assert len(frames) > 2
    for frame in frames:
        assert frame.get("usage") is None and "usageMetadata" not in frame, frame
        assert "usage" not in (frame.get("x_groq") or {}), frame
    if provider == "gemini":
        streamed = "".join(p["text"] for f in frames for c in f["candidates"] for p in c["content"]["parts"])
    else:
        streamed = "".join((c.get("delta") or {}).get("content") or "" for f in frames for c in f.get("choices") or [])
    assert streamed == ANSWER


async def test_litellm_refuses_a_gemini_answer_without_usage_metadata(standin):
    """Why Gemini is not among the providers above: LiteLLM raises an error naming the missing
    ``usageMetadata`` instead of answering with zero usage."""
    standin.reply("gemini", text=ANSWER, usage=False)
    with pytest.raises(litellm.BadRequestError, match="usageMetadata"):
        await litellm.acompletion(model="gemini/gemini-2.5-flash", api_base=standin.url("gemini"), api_key="sk-test",
                                  messages=MESSAGES, num_retries=0, max_retries=0)


# -- non-stream: charged an estimate ------------------------------------------------------------------


@pytest.mark.parametrize("provider", sorted(MODELS))
async def test_answer_without_usage_is_charged_an_estimate(standin, warnings_seen, provider):
    standin.reply(provider, text=ANSWER, usage=False)
    model = MODELS[provider]
    prompt, completion, cost = _expected(model, deployment_price(provider))
    with attached([standin_deployment(standin, provider)], governed_policy(), **ROUTER) as (router, engine):
        recorder = Recorder()
        engine.pm.register(recorder)
        response = await router.acompletion(model="chat", messages=MESSAGES)
        await settled(engine)
        records = engine.spend.ledger.records()
        assert engine.spend.ledger.open_reservations() == 0
    assert response.choices[0].message.content == ANSWER
    assert len(records) == 1
    record = records[0]
    assert cost > 0
    assert record.amount_usd == pytest.approx(cost, rel=0, abs=1e-12)
    assert record.attrs["usage"] == "estimated" and record.attrs["deployment"] == "d1"
    [outcome] = recorder.outcomes
    assert outcome.ok and outcome.usage_estimated
    assert (outcome.prompt_tokens, outcome.completion_tokens) == (prompt, completion)
    assert outcome.cost_usd == pytest.approx(cost, rel=0, abs=1e-12)
    warned = [r.getMessage() for r in warnings_seen.records if r.levelno == logging.WARNING]
    assert any(
        f"{model} (deployment d1) answered without a usage block" in m
        and f"({prompt} prompt + {completion} completion tokens by LiteLLM's token counter)" in m
        for m in warned
    ), warned


@pytest.mark.parametrize("backend", BACKENDS)
async def test_the_estimate_mark_is_kept_by_every_ledger(standin, tmp_path, backend):
    standin.reply("mistral", text=ANSWER, usage=False)
    provider = "mistral"
    model = MODELS[provider]
    _, _, cost = _expected(model, deployment_price(provider))
    with attached([standin_deployment(standin, "mistral")], governed_policy(ledger_url(backend, tmp_path)), **ROUTER) as (router, engine):
        await router.acompletion(model="chat", messages=MESSAGES)
        await settled(engine)
        [record] = engine.spend.ledger.records()
    assert record.amount_usd == pytest.approx(cost, rel=0, abs=1e-12)
    assert record.attrs["usage"] == "estimated" and record.attrs["kind"] == "settled"


@pytest.mark.parametrize("where", ["deployment", "policy"])
async def test_the_estimate_uses_the_deployments_own_price(standin, where):
    """A price set on the deployment (``litellm_params``) or in the policy (``models:``) wins over
    LiteLLM's price map, as it does for the reservation and for a normal answer."""
    standin.reply("mistral", text=ANSWER, usage=False)
    provider = "mistral"
    model = MODELS[provider]
    params = OWN_PRICE if where == "deployment" else {}
    policy = governed_policy()
    if where == "policy":
        policy["models"]["d1"] = {"quality": 1, "input_usd_per_1k": OWN_PRICE["input_cost_per_token"] * 1000,
                                   "output_usd_per_1k": OWN_PRICE["output_cost_per_token"] * 1000}
    _, _, cost = _expected(model, (OWN_PRICE["input_cost_per_token"], OWN_PRICE["output_cost_per_token"]))
    with attached([standin_deployment(standin, "mistral", **params)], policy, **ROUTER) as (router, engine):
        await router.acompletion(model="chat", messages=MESSAGES)
        await settled(engine)
        [record] = engine.spend.ledger.records()
    assert record.amount_usd == pytest.approx(cost, rel=1e-9, abs=1e-12)
    assert record.amount_usd != pytest.approx(_expected(model, deployment_price(provider))[2], rel=1e-6)


async def test_the_estimate_counts_against_a_budget(standin):
    """The estimate is spend: with a cap that has room for one reservation plus half the estimate,
    the first answer (no usage) fills it and the second request is blocked. Had the first answer
    been settled at $0, the second would be served."""
    standin.reply("mistral", text=ANSWER, usage=False)
    provider = "mistral"
    model = MODELS[provider]
    price = deployment_price(provider)
    _, _, cost = _expected(model, price)
    max_tokens = 200
    reservation = litellm.token_counter(model=model, messages=MESSAGES) * price[0] + max_tokens * price[1]
    cap = reservation + cost / 2
    policy = governed_policy(budgets=[{"name": "daily", "scope": "global", "window": "day", "limit_usd": cap, "on_exceed": "block"}])
    with attached([standin_deployment(standin, "mistral")], policy, **ROUTER) as (router, engine):
        await router.acompletion(model="chat", messages=MESSAGES, max_tokens=max_tokens)
        await settled(engine)
        with pytest.raises(BudgetExceeded) as info:
            await router.acompletion(model="chat", messages=MESSAGES, max_tokens=max_tokens)
        await settled(engine)
        records = engine.spend.ledger.records()
    assert info.value.budget == "daily"
    assert info.value.spent_usd == pytest.approx(cost, rel=0, abs=1e-9)
    assert [r.attrs["usage"] for r in records] == ["estimated"]
    assert standin.hits("mistral") == 1


async def test_without_an_estimate_the_reservation_is_charged(standin, warnings_seen, monkeypatch):
    """If LiteLLM cannot count the answer, the reservation (the pessimistic estimate the call was
    admitted with) is charged: the record is kept, and not at $0."""

    def broken(model, response):
        raise RuntimeError("tokenizer unavailable")

    monkeypatch.setattr(charges, "count_completion", broken)
    standin.reply("mistral", text=ANSWER, usage=False)
    provider = "mistral"
    model = MODELS[provider]
    price = deployment_price(provider)
    reservation = litellm.token_counter(model=model, messages=MESSAGES) * price[0] + 100 * price[1]
    with attached([standin_deployment(standin, "mistral")], governed_policy(), **ROUTER) as (router, engine):
        await router.acompletion(model="chat", messages=MESSAGES, max_tokens=100)
        await settled(engine)
        [record] = engine.spend.ledger.records()
    assert record.amount_usd == pytest.approx(reservation, rel=0, abs=1e-12) and record.amount_usd > 0
    assert record.attrs["usage"] == "estimated"
    assert any("answered without a usage block and no estimate could be made" in r.getMessage()
               and "tokenizer unavailable" in r.getMessage() and "deployment d1" in r.getMessage()
               for r in warnings_seen.records)


async def test_an_unpriced_deployment_keeps_its_record_and_says_why(standin, warnings_seen):
    """A deployment with no price anywhere (LiteLLM's map has no OpenRouter models) cannot be
    bounded: under a budget it is refused (never reserved at $0), or reserved at the policy's
    ``requests.unbounded_reserve_usd``, which an answer without usage is then charged: the record
    is written, marked, and the warning says the price is unknown."""
    standin.reply("openrouter", text=ANSWER, usage=False)
    dep = standin_deployment(standin, "openrouter")
    for key in OWN_PRICE:
        del dep["litellm_params"][key]
    # no price-comparing route (the policy would refuse an unpriced deployment); a budget makes it governed
    budgets = [{"scope": "global", "window": "day", "limit_usd": 1, "on_exceed": "alert"}]
    with attached([dep], governed_policy(routes={}, budgets=budgets), **ROUTER) as (router, engine):
        with pytest.raises(litellm.BadRequestError, match="cannot bound the cost"):
            await router.acompletion(model="chat", messages=MESSAGES)
        assert standin.hits("openrouter") == 0
    policy = governed_policy(routes={}, budgets=budgets, requests={"unbounded_reserve_usd": 0.01})
    with attached([dep], policy, **ROUTER) as (router, engine):
        await router.acompletion(model="chat", messages=MESSAGES)
        await settled(engine)
        [record] = engine.spend.ledger.records()
    assert record.amount_usd == pytest.approx(0.01) and record.attrs["usage"] == "estimated"
    assert any("openrouter/openai/gpt-4o-mini (deployment d1) answered without a usage block" in r.getMessage()
               and "the deployment has no known price" in r.getMessage() for r in warnings_seen.records)


async def test_rejected_and_inline_charged_answers_without_usage_are_estimated(standin):
    """The inline-charge path: DeepSeek's answer is cut off (``length``) and rejected by the
    validators, then Mistral answers; LiteLLM logs no success event for Mistral's answer, so it is
    charged inline. Neither reports usage; both are charged their estimate."""
    standin.reply("deepseek", text=ANSWER, usage=False)
    standin.reply("mistral", text=ANSWER, usage=False)
    standin.fail("deepseek", "length")
    model_list = [standin_deployment(standin, "deepseek", "ds"), standin_deployment(standin, "mistral", "ml")]
    policy = governed_policy(validate=[{"finish_reason_not": "length"}])
    policy["routes"] = {"chat": [{"cost_threshold": {"use": MODELS["deepseek"], "max_usd_per_1k_tokens": 0.01,
                                                     "otherwise": MODELS["mistral"]}}]}
    with attached(model_list, policy, num_retries=2, retry_after=0, disable_cooldowns=True) as (router, engine):
        recorder = Recorder()
        engine.pm.register(recorder)
        response = await router.acompletion(model="chat", messages=MESSAGES)
        await settled(engine)
        records = engine.spend.ledger.records()
    assert response._hidden_params["model_id"] == "ml"
    charged = {r.attrs["deployment"]: r for r in records}
    assert set(charged) == {"ds", "ml"}
    for dep_id, provider in (("ds", "deepseek"), ("ml", "mistral")):
        model = MODELS[provider]
        _, _, cost = _expected(model, deployment_price(provider))
        assert charged[dep_id].amount_usd == pytest.approx(cost, rel=0, abs=1e-12) and cost > 0
        assert charged[dep_id].attrs["usage"] == "estimated"
    by_dep = {o.deployment_id: o for o in recorder.outcomes}
    assert not by_dep["ds"].ok and by_dep["ds"].usage_estimated
    assert by_dep["ml"].ok and by_dep["ml"].usage_estimated
    assert by_dep["ml"].cost_usd == pytest.approx(charged["ml"].amount_usd, rel=0, abs=1e-12)


# -- not misfiring -----------------------------------------------------------------------------------


async def test_a_normal_answer_is_not_marked_estimated(standin, warnings_seen):
    standin.reply("mistral", text=ANSWER, prompt_tokens=40, completion_tokens=15)
    provider = "mistral"
    price = deployment_price(provider)
    with attached([standin_deployment(standin, "mistral")], governed_policy(), **ROUTER) as (router, engine):
        recorder = Recorder()
        engine.pm.register(recorder)
        await router.acompletion(model="chat", messages=MESSAGES)
        await settled(engine)
        [record] = engine.spend.ledger.records()
    assert "usage" not in record.attrs
    assert record.amount_usd == pytest.approx(40 * price[0] + 15 * price[1], rel=0, abs=1e-12)
    [outcome] = recorder.outcomes
    assert not outcome.usage_estimated and (outcome.prompt_tokens, outcome.completion_tokens) == (40, 15)
    assert not [r for r in warnings_seen.records if "usage block" in r.getMessage()]


@pytest.mark.parametrize("provider", sorted(MODELS))
async def test_a_stream_without_usage_is_not_flagged_and_settles_litellms_figure(standin, warnings_seen, provider):
    """LiteLLM counts a stream that reported no usage itself (its token counter on the messages and
    the streamed text) and prices it; that is what is settled, not marked as the plugin's estimate."""
    standin.reply(provider, text=ANSWER, usage=False)
    model = MODELS[provider]
    prompt, completion, cost = _expected(model, deployment_price(provider))
    with attached([standin_deployment(standin, provider)], governed_policy(), **ROUTER) as (router, engine):
        recorder = Recorder()
        engine.pm.register(recorder)
        stream = await router.acompletion(model="chat", messages=MESSAGES, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        await settled(engine)
        [record] = engine.spend.ledger.records()
    assert text == ANSWER
    assert "usage" not in record.attrs
    [outcome] = recorder.outcomes
    assert not outcome.usage_estimated
    assert (outcome.prompt_tokens, outcome.completion_tokens) == (prompt, completion)
    assert record.amount_usd == pytest.approx(cost, rel=1e-9, abs=1e-12) and cost > 0
    assert not [r for r in warnings_seen.records if "usage block" in r.getMessage()]
