"""The billing fake provider (``tests/billing_provider.py``) bills what it receives, through
LiteLLM's real provider clients. Expected amounts are worked out here from LiteLLM's token counter
and price map, independently of the fake's own arithmetic where it matters (n, limits, prices)."""

from __future__ import annotations

import json

import httpx
import litellm
import openai
import pytest

from billing_provider import BillingProvider, prompt_tokens

MESSAGES = [{"role": "user", "content": "What is the status of order 12345, please?"}]
KEY = {"api_key": "sk-test"}


@pytest.fixture
def provider():
    with BillingProvider() as p:
        yield p


def _price(model: str) -> tuple[float, float]:
    info = litellm.model_cost[model]
    return info["input_cost_per_token"], info["output_cost_per_token"]


async def test_a_chat_is_billed_every_allowed_output_token_times_n_and_reports_that_usage(provider):
    response = await litellm.acompletion(model="openai/gpt-4o-mini", messages=MESSAGES, max_tokens=7, n=3,
                                         api_base=provider.url, **KEY)
    [bill] = provider.bills
    prompt = litellm.token_counter(model="gpt-4o-mini", messages=MESSAGES)
    inp, out = _price("gpt-4o-mini")
    assert (bill.prompt_tokens, bill.completion_tokens) == (prompt, 21)
    assert bill.usd == pytest.approx(prompt * inp + 21 * out, rel=1e-12)
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (prompt, 21)
    assert len(response.choices) == 3
    # the answer's text is exactly what the usage says was generated
    assert all(litellm.token_counter(model="gpt-4o-mini", text=c.message.content, count_response_tokens=True) == 7
               for c in response.choices)
    assert response._hidden_params["response_cost"] == pytest.approx(bill.usd, rel=1e-9)


async def test_what_extra_body_changes_is_what_is_billed(provider):
    """LiteLLM merges ``extra_body`` into what it sends: the fake bills the merged body."""
    await litellm.acompletion(model="openai/gpt-4o-mini", messages=MESSAGES, max_tokens=1, api_base=provider.url,
                              extra_body={"max_tokens": 900, "n": 2}, **KEY)
    [bill] = provider.bills
    assert bill.completion_tokens == 1800
    assert bill.body["max_tokens"] == 900


async def test_the_largest_output_limit_received_is_billed(provider):
    await litellm.acompletion(model="openai/o3-mini", messages=MESSAGES, max_tokens=1, max_completion_tokens=500,
                              api_base=provider.url, **KEY)
    assert provider.bills[-1].completion_tokens == 500


async def test_a_stream_the_client_did_not_expect_is_billed(provider):
    with pytest.raises(openai.APIError):
        await litellm.acompletion(model="openai/gpt-4o-mini", messages=MESSAGES, max_tokens=5, api_base=provider.url,
                                  extra_body={"stream": True}, **KEY)
    [bill] = provider.bills
    assert bill.stream and bill.completion_tokens == 5 and bill.usd > 0


async def test_what_a_provider_refuses_is_not_billed(provider):
    with pytest.raises(litellm.BadRequestError, match="max_tokens is too large"):
        await litellm.acompletion(model="openai/gpt-4o-mini", messages=MESSAGES, max_tokens=10**6,
                                  api_base=provider.url, **KEY)
    with pytest.raises(litellm.NotFoundError):
        await litellm.acompletion(model="openai/no-such-model", messages=MESSAGES, api_base=provider.url, **KEY)
    assert provider.bills == [] and [r.status for r in provider.received] == [400, 404]


def test_every_billable_field_counts_as_prompt():
    functions = [{"name": "f", "description": "word " * 300, "parameters": {"type": "object", "properties": {}}}]
    base = prompt_tokens("gpt-4o-mini", {"messages": MESSAGES})
    assert prompt_tokens("gpt-4o-mini", {"messages": MESSAGES, "functions": functions}) > base + 300
    assert prompt_tokens("gpt-4o-mini", {"input": [1, 2, 3, 4]}) == 4
    assert prompt_tokens("gpt-4o-mini", {"input": ["a b c", "d e f"], "instructions": "x y"}) >= 6
    # a messages value the chat counter cannot read is still text the provider reads
    assert prompt_tokens("gpt-4o-mini", {"messages": "word " * 50}) >= 50


async def test_embeddings_responses_messages_and_azure_are_billed_at_the_model_asked_for(provider):
    await litellm.aembedding(model="openai/text-embedding-3-small", input=["one two", "three"], api_base=provider.url,
                             **KEY)
    await litellm.aresponses(model="openai/gpt-4o-mini", input="hi there", max_output_tokens=20, api_base=provider.url,
                             **KEY)
    await litellm.acompletion(model="anthropic/claude-haiku-4-5", messages=MESSAGES, max_tokens=9,
                              api_base=provider.origin, **KEY)
    await litellm.acompletion(model="azure/gpt-4o", messages=MESSAGES, max_tokens=9, api_base=provider.origin,
                              api_version="2024-10-21", **KEY)
    emb, resp, anth, azure = provider.bills
    assert emb.completion_tokens == 0 and emb.usd == pytest.approx(emb.prompt_tokens * _price("text-embedding-3-small")[0])
    assert resp.completion_tokens == 20
    assert anth.model == "claude-haiku-4-5" and anth.completion_tokens == 9
    assert azure.model == "gpt-4o" and azure.usd == pytest.approx(
        azure.prompt_tokens * _price("azure/gpt-4o")[0] + 9 * _price("azure/gpt-4o")[1])
    assert provider.total_usd == pytest.approx(sum(b.usd for b in (emb, resp, anth, azure)))


async def test_speech_is_billed_per_character(provider):
    await litellm.aspeech(model="openai/tts-1", input="hello world", voice="alloy", api_base=provider.url, **KEY)
    [bill] = provider.bills
    assert bill.usd == pytest.approx(len("hello world") * litellm.model_cost["tts-1"]["input_cost_per_character"])


def test_a_batch_bills_each_line_at_the_batch_price(provider):
    lines = [{"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 100}} for i in range(3)]
    jsonl = "\n".join(json.dumps(line) for line in lines).encode()
    with httpx.Client(base_url=provider.url, trust_env=False) as client:
        file_id = client.post("/files", files={"file": ("b.jsonl", jsonl)}, data={"purpose": "batch"}).json()["id"]
        batch = client.post("/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions",
                                              "completion_window": "24h"}).json()
    assert batch["status"] == "completed" and batch["request_counts"]["total"] == 3
    bills = provider.bills
    info = litellm.model_cost["gpt-4o-mini"]
    assert len(bills) == 3
    assert all(b.usd == pytest.approx(b.prompt_tokens * info["input_cost_per_token_batches"]
                                      + 100 * info["output_cost_per_token_batches"]) for b in bills)


def test_bills_since_a_mark_are_the_requests_after_it(provider):
    litellm.completion(model="openai/gpt-4o-mini", messages=MESSAGES, max_tokens=3, api_base=provider.url, **KEY)
    mark = provider.mark()
    litellm.completion(model="openai/gpt-4o-mini", messages=MESSAGES, max_tokens=4, api_base=provider.url, **KEY)
    assert [b.completion_tokens for b in provider.bills_since(mark)] == [4]


async def test_a_governed_speech_answer_is_recorded_at_what_the_provider_billed(provider):
    """Billed means recorded for speech: the provider bills every character of ``input``, while
    LiteLLM's own speech cost leaves whitespace out; the ledger holds the bill (not 80% of it)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from routing_helpers import attached, settled

    text = "word " * 40  # 200 characters, 40 of them spaces
    deployment = {"model_name": "speech", "litellm_params": {"model": "openai/tts-1", "api_base": provider.url, **KEY},
                  "model_info": {"id": "tts"}}
    policy = {"version": 1, "ledger": "memory://",  # no route: the budget governs the group
              "budgets": [{"name": "all", "scope": "global", "window": "day", "limit_usd": 10}]}
    with attached([deployment], policy) as (router, engine):
        await router.aspeech(model="speech", input=text, voice="alloy")
        await settled(engine)
        [record] = engine.spend.ledger.records()
    [bill] = provider.bills
    assert bill.usd == pytest.approx(len(text) * litellm.model_cost["tts-1"]["input_cost_per_character"], rel=1e-12)
    assert record.amount_usd == pytest.approx(bill.usd, rel=1e-9), (record.amount_usd, bill.usd)
