"""The LiteLLM repairs (litellm_payg.adapter.litellm_fixes): each defect is still in the pinned LiteLLM's own
code (so the repair is needed), each repair fixes exactly its defect, and answers LiteLLM already
reads are left as they were.

conftest applies the repairs for the whole session (as ``attach`` does for a user), so the unrepaired
code is reached through ``__payg_original__``. When a LiteLLM upgrade fixes a defect, the
``*_still_in_litellm`` test here fails: delete that repair.
"""

from __future__ import annotations

import gzip
import json

import httpx
import pytest
from litellm.llms.groq.chat.transformation import (
    GroqChatCompletionStreamingHandler,
    GroqChatConfig,
)

import litellm_payg
from litellm_payg.adapter import litellm_fixes
from litellm_payg.adapter.litellm_fixes import (
    _GROQ_FINAL_CHUNK,
    _groq_answer,
    _transform_groq,
    groq_service_tier_defect,
    groq_stream_usage_defect,
)


def test_repairs_are_in_effect_once():
    assert set(litellm_fixes.apply()) == {"groq_service_tier", "groq_stream_usage"}
    assert litellm_fixes.applied() == litellm_fixes.apply()
    # applied once: the wrapped function is LiteLLM's own, not a wrapper of a wrapper
    for wrapped in (GroqChatConfig.transform_response, GroqChatCompletionStreamingHandler.chunk_parser):
        original = wrapped.__payg_original__
        assert not hasattr(original, "__payg_original__")
        assert original.__module__ == "litellm.llms.groq.chat.transformation"


def test_groq_service_tier_defect_still_in_litellm():
    original = GroqChatConfig.transform_response.__payg_original__
    assert groq_service_tier_defect(original), "LiteLLM reads a Groq answer without service_tier now: delete groq_service_tier"
    with pytest.raises(AttributeError, match="service_tier"):
        _transform_groq(original, _groq_answer())


def test_groq_stream_usage_defect_still_in_litellm():
    original = GroqChatCompletionStreamingHandler.chunk_parser.__payg_original__
    assert groq_stream_usage_defect(original), "LiteLLM reads x_groq.usage now: delete groq_stream_usage"


def test_groq_answer_without_service_tier_is_read():
    assert not groq_service_tier_defect()
    response = _transform_groq(GroqChatConfig.transform_response, _groq_answer())
    assert response.service_tier == "auto"  # LiteLLM's own mapping of a missing tier
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (3, 1)
    assert response.choices[0].message.content == "ok"


@pytest.mark.parametrize("tier,expected", [("flex", "flex"), ("on_demand", "auto"), (None, "auto")])
def test_groq_answer_with_service_tier_is_unchanged(tier, expected):
    repaired = _transform_groq(GroqChatConfig.transform_response, _groq_answer(service_tier=tier))
    original = _transform_groq(GroqChatConfig.transform_response.__payg_original__, _groq_answer(service_tier=tier))
    assert repaired.service_tier == original.service_tier == expected
    assert repaired.usage == original.usage


def test_gzip_answer_without_service_tier_is_read():
    """The repair rebuilds the body; a gzip-encoded one (as Groq sends) must not be decoded twice."""
    body = gzip.compress(json.dumps(_groq_answer()).encode())
    raw = httpx.Response(200, content=body, headers={"content-encoding": "gzip", "content-type": "application/json"},
                         request=httpx.Request("POST", "https://api.groq.com/openai/v1/chat/completions"))
    repaired = litellm_fixes._with_json_field(raw, "service_tier", None)
    assert repaired.json() == {**_groq_answer(), "service_tier": None}
    assert "content-encoding" not in repaired.headers


def test_unparsable_body_is_left_for_litellm_to_report():
    raw = httpx.Response(200, content=b"<html>gateway error</html>",
                         request=httpx.Request("POST", "https://api.groq.com/openai/v1/chat/completions"))
    assert litellm_fixes._with_json_field(raw, "service_tier", None) is raw


def _parse(chunk: dict) -> object:
    handler = GroqChatCompletionStreamingHandler(streaming_response=iter(()), sync_stream=True)
    return GroqChatCompletionStreamingHandler.chunk_parser(handler, json.loads(json.dumps(chunk)))


def test_groq_stream_usage_is_read_from_x_groq():
    usage = _parse(_GROQ_FINAL_CHUNK).usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (18, 73, 91)


def test_top_level_stream_usage_wins_over_x_groq():
    chunk = {**_GROQ_FINAL_CHUNK, "usage": {"prompt_tokens": 20, "completion_tokens": 80, "total_tokens": 100}}
    usage = _parse(chunk).usage
    assert (usage.prompt_tokens, usage.completion_tokens) == (20, 80)


def test_groq_timing_fields_are_not_usage():
    chunk = json.loads(json.dumps(_GROQ_FINAL_CHUNK))
    chunk["x_groq"]["usage"].update(queue_time=0.07, prompt_time=0.006, completion_time=0.02, total_time=0.03)
    usage = _parse(chunk).usage
    assert not hasattr(usage, "queue_time") and usage.completion_tokens == 73


def test_a_chunk_without_usage_is_unchanged():
    chunk = {**_GROQ_FINAL_CHUNK, "x_groq": {"id": "req_1"},
             "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}]}
    parsed = _parse(chunk)
    assert getattr(parsed, "usage", None) is None
    assert parsed.choices[0].delta.content == "hi"


def test_a_failing_probe_applies_nothing_and_attach_still_works(monkeypatch, caplog):
    """A LiteLLM that moved the probed code must not take ``attach`` down."""
    from litellm import Router

    def broken() -> bool:
        raise ImportError("no module named litellm.llms.groq")

    applied: list[str] = []
    monkeypatch.setattr(litellm_fixes, "_checked", False)
    monkeypatch.setattr(litellm_fixes, "_applied", {})
    monkeypatch.setattr(litellm_fixes, "REPAIRS", {"broken": ("never", broken, lambda: applied.append("x"))})
    router = Router(model_list=[{"model_name": "g", "litellm_params": {"model": "openai/gpt-4o-mini", "api_key": "x"},
                                 "model_info": {"id": "d"}}])
    engine = litellm_payg.attach(router, {"version": 1, "ledger": "memory://", "routes": {"g": [{"quality_floor": {"min_quality": 0}}]},
                                          "models": {"openai/gpt-4o-mini": {"quality": 1}}})
    try:
        assert applied == [] and litellm_fixes.applied() == {}
        assert "could not check LiteLLM for the broken defect" in caplog.text
    finally:
        engine.detach()
