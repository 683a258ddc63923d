"""Prompts counted one message at a time (``stores/token_counts.py``) give LiteLLM's own count.

The routing path counts a chat prompt as the sum of remembered per-message counts plus the tools'
part. These tests hold that sum to ``litellm.token_counter`` on the whole prompt, on every bundled
tokenizer family, for random conversations that share messages (so remembered counts are reused),
with and without tools and system messages; and check the fall-backs: a message that is not plain
JSON, a tool list that is not, and a LiteLLM whose count is not a sum.
"""

from __future__ import annotations

import random
import string

import litellm
import pytest

from litellm_payg.stores import token_counts
from litellm_payg.stores.prices import count_request_tokens

# one model per tokenizer family LiteLLM counts offline (Llama's would download its tokenizer)
MODELS = ["deepseek/deepseek-chat", "mistral/mistral-large-latest", "gpt-4o-mini",
          "anthropic/claude-3-5-sonnet-20240620", "gemini/gemini-1.5-flash"]
ALPHABETS = [string.printable, "日本語のテキスト中文字符", "😀🎉👍🏽❤️", "ab ", " \n\t"]
TOOLS = [
    [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                       "required": ["city"]}}}],
    [{"type": "function", "function": {"name": "search", "parameters": {"type": "object", "properties": {
        "q": {"type": "string", "description": "what to look for"}, "n": {"type": "integer"}}}}},
     {"type": "function", "function": {"name": "noop"}}],
]


@pytest.fixture(autouse=True)
def _fresh():
    token_counts.forget()
    yield
    token_counts.forget()


def _message(rng: random.Random) -> dict:
    alphabet = rng.choice(ALPHABETS)
    text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 300)))
    kind = rng.random()
    if kind < 0.1:
        return {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "search", "arguments": '{"q": "%s"}' % text[:40]}}]}
    if kind < 0.2:
        return {"role": "tool", "tool_call_id": "call_1", "content": text}
    message = {"role": rng.choice(["user", "assistant", "system"]),
               "content": text if rng.random() < 0.7 else [{"type": "text", "text": text}]}
    if rng.random() < 0.15:
        message["name"] = "agent_" + str(rng.randint(0, 9))
    return message


@pytest.mark.parametrize("model", MODELS)
def test_the_sum_of_remembered_counts_is_litellms_count(model):
    rng = random.Random(model)
    pool = [_message(rng) for _ in range(25)]  # conversations share messages, as chat histories do
    pool.append({"role": "user", "content": "a long pasted document, " * 200})  # past SHORT_TEXT: by digest
    reused = 0
    for _ in range(60):
        messages = [rng.choice(pool) for _ in range(rng.randint(1, 6))]
        tools = rng.choice([None, None, *TOOLS])
        before = token_counts.remembered()["messages"]
        got = count_request_tokens(model, {"messages": messages, "tools": tools})
        want = int(litellm.token_counter(model=model, messages=messages, tools=tools))
        assert got == want, (messages, tools)
        reused += len(messages) - (token_counts.remembered()["messages"] - before)
    assert reused > 100  # the remembered counts were used, not only filled
    assert token_counts.remembered()["counted_whole"] == []  # the sums matched: no fall-back hid a miss


def test_a_message_that_is_not_plain_json_is_counted_whole():
    class Content(str):
        """A str subclass: JSON-encodable, but not a dict message."""

    messages = [litellm.Message(role="user", content="hello there"), {"role": "user", "content": Content("hi")}]
    want = int(litellm.token_counter(model="gpt-4o-mini", messages=messages))
    assert token_counts.count_chat_tokens("gpt-4o-mini", messages) == want
    assert token_counts.remembered()["messages"] == 0


def test_tools_that_are_not_plain_json_are_counted_whole():
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}, "extra": {1, 2}}]
    messages = [{"role": "user", "content": "hi"}]
    want = int(litellm.token_counter(model="gpt-4o-mini", messages=messages, tools=tools))
    assert token_counts.count_chat_tokens("gpt-4o-mini", messages, tools) == want


def test_a_litellm_whose_count_is_not_a_sum_is_asked_for_the_whole_count(monkeypatch):
    """Another LiteLLM release could count differently; the first prompt of each model is counted
    both ways, and a model whose sum is off is counted whole from then on."""
    real = litellm.token_counter

    def counts_one_more_for_the_whole(**kwargs):  # a count that is not the sum of its messages'
        n = real(**kwargs)
        return n + 1 if len(kwargs.get("messages") or ()) > 1 else n

    monkeypatch.setattr(litellm, "token_counter", counts_one_more_for_the_whole)
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]
    want = counts_one_more_for_the_whole(model="gpt-4o-mini", messages=messages)
    assert token_counts.count_chat_tokens("gpt-4o-mini", messages) == want
    assert token_counts.count_chat_tokens("gpt-4o-mini", messages) == want  # and stays whole
    assert token_counts.remembered()["counted_whole"] == ["gpt-4o-mini"]


def test_what_is_remembered_is_bounded(monkeypatch):
    monkeypatch.setattr(token_counts, "MAX_ENTRIES", 50)
    for i in range(200):
        token_counts.count_chat_tokens("gpt-4o-mini", [{"role": "user", "content": f"message {i}"}])
    assert token_counts.remembered()["messages"] == 50
