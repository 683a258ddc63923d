"""Response validators over LiteLLM ModelResponses, including real ones parsed from the stand-in."""

from __future__ import annotations

import json
from types import SimpleNamespace

import litellm
import pytest
from pydantic import ValidationError

from litellm_payg.adapter.failures import FailureClass, InvalidResponseError, classify
from litellm_payg.policy.validators import build_validators, check, payg_validate_response, problems_of, validators_for

MODELS = {
    "openai": "openai/gpt-4o-mini",
    "mistral": "mistral/mistral-large-latest",
    "anthropic": "anthropic/claude-haiku-4-5",
    "gemini": "gemini/gemini-2.5-flash",
}
MESSAGES = [{"role": "user", "content": "hi"}]
SCHEMA = {"type": "object", "required": ["answer", "confidence"],
          "properties": {"answer": {"type": "string"}, "confidence": {"type": "number", "maximum": 1}}}


def _resp(content, finish_reason="stop", tool_calls=None, n=1) -> litellm.ModelResponse:
    message = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return litellm.ModelResponse(choices=[{"index": i, "message": message, "finish_reason": finish_reason}
                                          for i in range(n)], model="m")


@pytest.fixture
def schema_dir(tmp_path):
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "answer.json").write_text(json.dumps(SCHEMA))
    return tmp_path


def test_non_empty():
    v = build_validators(["non_empty"])
    assert problems_of(_resp("hello"), v) == []
    assert problems_of(_resp("  \n"), v) == ["non_empty: empty completion: no text and no tool calls"]
    assert problems_of(_resp(None), v) == ["non_empty: empty completion: no text and no tool calls"]
    call = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    assert problems_of(_resp(None, "tool_calls", tool_calls=call), v) == []
    assert problems_of(litellm.ModelResponse(choices=[], model="m"), v) == ["non_empty: the response has no choices"]


def test_finish_reason_not():
    v = build_validators([{"finish_reason_not": "length"}])
    assert problems_of(_resp("cut", "length"), v) == [
        "finish_reason_not: length: finish_reason is 'length' (the answer was cut off by the token limit)"]
    assert problems_of(_resp("fine", "stop"), v) == []
    many = build_validators([{"finish_reason_not": ["length", "content_filter"]}])
    assert len(problems_of(_resp("x", "content_filter", n=2), many)) == 2


def test_json_schema(schema_dir):
    v = build_validators([{"json_schema": "schemas/answer.json"}], base_dir=schema_dir)
    assert problems_of(_resp('{"answer": "42", "confidence": 0.9}'), v) == []
    assert problems_of(_resp('```json\n{"answer": "42", "confidence": 0.9}\n```'), v) == []
    assert problems_of(_resp("The answer is 42."), v) == [
        "json_schema: schemas/answer.json: not JSON: Expecting value at line 1 column 1"]
    got = problems_of(_resp('{"answer": 42, "confidence": 3}'), v)
    assert got == ["json_schema: schemas/answer.json: does not match schemas/answer.json at $.answer: 42 is not of type 'string'",
                   "json_schema: schemas/answer.json: does not match schemas/answer.json at $.confidence: 3 is greater than the maximum of 1"]


def test_bad_specs_fail_at_build_time(schema_dir):
    with pytest.raises(ValidationError):
        build_validators(["not_a_validator"])
    with pytest.raises(ValidationError):
        build_validators([{"finish_reason_not": "length", "extra": 1}])
    with pytest.raises(ValueError, match="cannot read"):
        build_validators([{"json_schema": "schemas/missing.json"}], base_dir=schema_dir)
    (schema_dir / "bad.json").write_text('{"type": 12}')
    with pytest.raises(ValueError, match="not a valid JSON Schema"):
        build_validators([{"json_schema": "bad.json"}], base_dir=schema_dir)


def test_check_raises_an_invalid_response_error():
    v = build_validators(["non_empty", {"finish_reason_not": "length"}])
    check(_resp("ok"), v)
    with pytest.raises(InvalidResponseError) as caught:
        check(_resp("", "length"), v, model="deepseek/deepseek-chat", deployment_id="ds")
    assert len(caught.value.problems) == 2 and caught.value.deployment_id == "ds"
    assert classify(caught.value) is FailureClass.INVALID_RESPONSE
    assert str(caught.value).startswith("invalid response from deepseek/deepseek-chat: non_empty: empty completion")


def test_hookimpl_uses_the_policy_validate_list(schema_dir):
    policy = SimpleNamespace(validate=["non_empty"], source=str(schema_dir / "policy.yaml"))
    assert payg_validate_response(response=_resp(""), policy=policy) == [
        "non_empty: empty completion: no text and no tool calls"]
    assert payg_validate_response(response=_resp("x"), policy=policy) is None
    # relative schema paths resolve against the policy file's folder
    policy2 = SimpleNamespace(validate=[{"json_schema": "schemas/answer.json"}], source=str(schema_dir / "policy.yaml"))
    assert len(validators_for(policy2)) == 1
    assert validators_for(SimpleNamespace()) == []

    class Hand:  # a hand-made policy object that can be weakly referenced: built once, kept while it lives
        validate = ["non_empty"]

    hand = Hand()
    assert validators_for(hand) is validators_for(hand) and len(validators_for(hand)) == 1


# -- real responses, parsed by LiteLLM's provider clients from the stand-in -----------------------------



async def _call(s, provider, stream):
    r = await litellm.acompletion(model=MODELS[provider], api_base=s.url(provider), api_key="sk-test",
                                  messages=MESSAGES, stream=stream, num_retries=0, max_retries=0)
    if stream:
        chunks = [c async for c in r]
        r = litellm.stream_chunk_builder(chunks, messages=MESSAGES)
    s.clear(provider)
    return r


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("provider", list(MODELS))
async def test_standin_answers(standin, provider, stream):
    v = build_validators(["non_empty", {"finish_reason_not": "length"}])
    assert problems_of(await _call(standin, provider, stream), v) == []
    standin.fail(provider, "empty")
    assert problems_of(await _call(standin, provider, stream), v) == [
        "non_empty: empty completion: no text and no tool calls"]
    # Anthropic's stop_reason max_tokens and Gemini's MAX_TOKENS reach us as "length"
    standin.fail(provider, "length")
    assert problems_of(await _call(standin, provider, stream), v) == [
        "finish_reason_not: length: finish_reason is 'length' (the answer was cut off by the token limit)"]
