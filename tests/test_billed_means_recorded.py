"""Billed means recorded (issue #19 item 4): an attempt that reached the provider and was billed is
charged, whatever error LiteLLM reports afterwards.

A governed Router's deployments point at the billing fake provider (``billing_provider.py``), which
bills each request and then answers HTTP 200 with a body LiteLLM cannot turn into a response: an
empty object, ``choices`` that is not a list of choices, a ``usage`` that is not an object, a bare
JSON string or ``null`` (chat), a Responses body without ``output`` (LiteLLM raises ``APIError`` with
status 200), an Anthropic message whose ``content`` is not a list (an error inside its client's
``transform_response``). LiteLLM raises; the provider billed. For every case the ledger holds a
record at least as large as the provider's bill (the request's reservation, marked estimated: the
answer carried no usage LiteLLM could read), and nothing is left reserved.

On the base commit of this file these answers were classified as failures before any answer
(``server status``, ``connection``, ``unknown``) and released: 0 ledger records for a billed call.
"""

from __future__ import annotations

from typing import Any

import pytest
from routing_helpers import attached, settled

from billing_provider import BillingProvider

MESSAGES = [{"role": "user", "content": "What is the status of order 12345, please?"}]
MAX_TOKENS = 40

CHAT_BODIES: dict[str, Any] = {
    "empty object": {},
    "choices not a list": {"choices": "x", "usage": {"prompt_tokens": 3, "completion_tokens": 5}},
    "choices of strings": {"choices": ["x"]},
    "usage not an object": {"id": "a", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
                            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                                         "finish_reason": "stop"}], "usage": "lots"},
    "a JSON string": "hello",
    "null": None,
}


@pytest.fixture
def fake():
    with BillingProvider() as p:
        yield p


def _policy(model: str) -> dict:
    return {"version": 1, "ledger": "memory://", "routes": {"g": [{"quality_floor": {"min_quality": 0}}]},
            "models": {model: {"quality": 1}}}


def _deployment(fake: BillingProvider, model: str) -> dict:
    base = fake.origin if model.startswith("anthropic/") else fake.url
    return {"model_name": "g", "litellm_params": {"model": model, "api_key": "sk-test", "api_base": base},
            "model_info": {"id": "d1"}}


async def _billed_and_recorded(fake: BillingProvider, model: str, answer: Any, call) -> None:
    fake.answer_with(b"null" if answer is None else answer)
    with attached([_deployment(fake, model)], _policy(model), num_retries=0, disable_cooldowns=True) as (router, engine):
        with pytest.raises(Exception) as raised:
            await call(router)
        await settled(engine)
        records = engine.spend.ledger.records()
    [bill] = fake.bills
    assert bill.usd > 0
    assert records, f"the provider billed ${bill.usd:.6f} and the ledger has nothing ({type(raised.value).__name__}: " \
                     f"{str(raised.value)[:200]})"
    [record] = records
    assert record.amount_usd >= bill.usd - 1e-12, (record.amount_usd, bill.usd)
    assert record.attrs.get("usage") == "estimated" and record.attrs.get("failed"), record.attrs


@pytest.mark.parametrize("answer", list(CHAT_BODIES))
async def test_a_chat_answer_litellm_cannot_read_is_recorded(fake, answer):
    await _billed_and_recorded(fake, "openai/gpt-4o-mini", CHAT_BODIES[answer],
                               lambda r: r.acompletion(model="g", messages=MESSAGES, max_tokens=MAX_TOKENS))


@pytest.mark.parametrize("answer", [{}, {"id": "r", "output": 5}], ids=["empty object", "output not a list"])
async def test_a_responses_answer_litellm_cannot_read_is_recorded(fake, answer):
    await _billed_and_recorded(fake, "openai/gpt-4o-mini", answer,
                               lambda r: r.aresponses(model="g", input="order 12345?", max_output_tokens=MAX_TOKENS))


@pytest.mark.parametrize("answer", [{}, {"id": "m", "type": "message", "role": "assistant", "content": 5,
                                         "usage": {"input_tokens": 3, "output_tokens": 5}}],
                         ids=["empty object", "content not a list"])
async def test_an_anthropic_answer_litellm_cannot_read_is_recorded(fake, answer):
    await _billed_and_recorded(fake, "anthropic/claude-haiku-4-5", answer,
                               lambda r: r.acompletion(model="g", messages=MESSAGES, max_tokens=MAX_TOKENS))
