"""The stand-in's wire formats against real provider recordings in ../shared/provider-recordings.

For each recording: every key the real body has (recursively; lists compared element-wise on
their first element) must be in the stand-in's body, except keys listed in ``OPTIONAL`` with the
reason the stand-in leaves them out. SSE framing (event/data lines, terminator) and error body
shapes per status are compared the same way. The recordings are read in place, never copied.
"""

from __future__ import annotations

import json
import os
from typing import Any

import httpx
import pytest
from shared_recordings import RECORDINGS, body_text, load

from standin import StandIn

if not RECORDINGS.is_dir():
    if os.environ.get("CI"):
        raise RuntimeError(f"../shared/provider-recordings not found at {RECORDINGS} (required when CI is set)")
    pytest.skip(f"../shared/provider-recordings not found: {RECORDINGS}", allow_module_level=True)

# Keys a real body has that the stand-in deliberately omits: dotted path (list index "*") -> why.
OPTIONAL: dict[str, str] = {
    "choices.*.message.tool_calls": "tool calls: the stand-in answers text only",
    "choices.*.message.reasoning_content": "DeepSeek reasoner-only field; stand-in plays deepseek-chat",
    "choices.*.message.reasoning_details": "OpenRouter reasoning-model detail, not priced",
    "choices.*.delta.reasoning_content": "DeepSeek reasoner-only field",
    "choices.*.delta.reasoning": "OpenRouter reasoning stream field",
    "choices.*.delta.reasoning_details": "OpenRouter reasoning stream field",
    "candidates.*.content.parts.*.thought": "Gemini thought-summary parts: only with includeThoughts",
    "candidates.*.content.parts.*.thoughtSignature": "opaque signature for thought replay",
    "candidates.*.content.parts.*.executableCode": "Gemini code-execution tool part",
    "candidates.*.content.parts.*.codeExecutionResult": "Gemini code-execution tool part",
    "candidates.*.content.parts.*.functionCall": "function-call part: the stand-in answers text only",
    "candidates.*.finishMessage": "only set when the model called a function",
    "usageMetadata.toolUsePromptTokenCount": "only with Gemini built-in tools (code execution)",
    "usageMetadata.toolUsePromptTokensDetails": "only with Gemini built-in tools",
    "message.content.*.thinking": "Anthropic extended-thinking block",
    "message.content.*.signature": "Anthropic extended-thinking block",
    "message.usage.inference_geo": "newer Anthropic field, not read by LiteLLM 1.110.2",
}


def _interactions(name: str):
    reqs, resps = load(name)
    return list(zip(reqs, resps))


def missing_keys(real: Any, ours: Any, path: str = "") -> list[str]:
    """Dotted paths present in ``real`` but absent from ``ours`` (and not in OPTIONAL)."""
    out: list[str] = []
    if isinstance(real, dict):
        if not isinstance(ours, dict):
            return [f"{path or '<root>'}: real is an object, stand-in sent {type(ours).__name__}"]
        for key, value in real.items():
            p = f"{path}.{key}" if path else key
            if p in OPTIONAL:
                continue
            if key not in ours:
                out.append(p)
            else:
                out += missing_keys(value, ours[key], p)
    elif isinstance(real, list) and real and isinstance(ours, list) and ours:
        # element i against the stand-in's element i (or its last, when the stand-in sends fewer)
        for i, item in enumerate(real):
            out += missing_keys(item, ours[min(i, len(ours) - 1)], f"{path}.*")
    return sorted(set(out))


def test_missing_keys_detects_a_dropped_field():
    real = {"usage": {"prompt_tokens": 1, "prompt_cache_hit_tokens": 0}, "choices": [{"logprobs": None}]}
    ours = {"usage": {"prompt_tokens": 1}, "choices": [{}]}
    assert missing_keys(real, ours) == ["choices.*.logprobs", "usage.prompt_cache_hit_tokens"]



def _ask(s: StandIn, provider: str, *, stream: bool = False, sse: bool = True, **reply: Any) -> httpx.Response:
    s.reply(provider, text="Two words.", prompt_tokens=600, completion_tokens=20, **reply)
    if provider == "gemini":
        op = "streamGenerateContent" if stream else "generateContent"
        url = f"{s.url('gemini')}/models/gemini-2.5-flash:{op}" + ("?alt=sse" if stream and sse else "")
        body: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    elif provider == "anthropic":
        url, body = f"{s.url('anthropic')}/v1/messages", {"model": "claude-haiku-4-5", "max_tokens": 9,
                                                           "messages": [{"role": "user", "content": "hi"}]}
    else:
        url, body = f"{s.url(provider)}/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    if stream and provider != "gemini":
        body["stream"] = True
        if provider != "groq":  # the Groq recording was made without stream_options
            body["stream_options"] = {"include_usage": True}
    return httpx.post(url, json=body, timeout=10)


# ------------------------------------------------------------------ non-streamed bodies

BODY_CASES = [
    ("openai", "openai/chat-cached-nonstream-gpt41.yaml", {"cached_tokens": 500}),
    ("openai", "openai/chat-o3mini-reasoning-tokens.yaml", {"reasoning_tokens": 10}),
    ("deepseek", "deepseek/chat-reasoner-cache-hit-miss.yaml", {"cached_tokens": 512, "reasoning_tokens": 5}),
    ("groq", "groq/chat-nonstream-gzip.yaml", {}),
    ("mistral", "mistral/chat-nonstream-gzip.yaml", {}),
    ("openrouter", "openrouter/chat-usage-with-cost.yaml", {}),
    ("openrouter", "openrouter/chat-nonstream-keepalive-whitespace.yaml", {}),
    ("anthropic", "anthropic/messages-prompt-cache-write-then-read-gzip.yaml", {"cached_tokens": 100, "cache_write_tokens": 50}),
    ("anthropic", "anthropic/messages-429-rate-limit-then-200.yaml", {}),
    ("gemini", "gemini/generateContent-thinking-tokens.yaml", {"reasoning_tokens": 10}),
    ("gemini", "gemini/generateContent-implicit-cache-multi-turn.yaml", {"cached_tokens": 300, "reasoning_tokens": 10}),
]


@pytest.mark.parametrize("provider,recording,reply", BODY_CASES, ids=[c[1] for c in BODY_CASES])
def test_body_has_every_real_key(standin, provider, recording, reply):
    ours = _ask(standin, provider, **reply)
    assert ours.status_code == 200
    checked = 0
    for _req, resp in _interactions(recording):
        if resp["status"]["code"] != 200:
            continue
        real = json.loads(body_text(resp).strip())  # OpenRouter pads bodies with keep-alive whitespace
        assert missing_keys(real, ours.json()) == []
        checked += 1
    assert checked


# ------------------------------------------------------------------ streams


def _sse_frames(text: str) -> list[list[str]]:
    """Split an SSE body into frames; each frame is its non-empty lines."""
    text = text.replace("\r\n", "\n")
    return [[ln for ln in f.split("\n") if ln] for f in text.split("\n\n") if f.strip()]


def _data(frames: list[list[str]]) -> list[Any]:
    out = []
    for f in frames:
        for ln in f:
            if ln.startswith("data: ") and ln != "data: [DONE]":
                out.append(json.loads(ln[len("data: "):]))
    return out


def _framing(frames: list[list[str]]) -> set[str]:
    """Which line kinds occur: 'event', 'data', 'comment'."""
    kinds = set()
    for f in frames:
        for ln in f:
            kinds.add("comment" if ln.startswith(":") else ln.split(":", 1)[0])
    return kinds


STREAM_CASES = [
    ("deepseek", "deepseek/chat-reasoner-stream.yaml"),
    ("groq", "groq/chat-stream-x_groq-usage.yaml"),
    ("openrouter", "openrouter/chat-stream-reasoning-with-cost.yaml"),
]


@pytest.mark.parametrize("provider,recording", STREAM_CASES, ids=[c[1] for c in STREAM_CASES])
def test_openai_style_stream(standin, provider, recording):
    (_req, resp), = _interactions(recording)
    real_frames, our_frames = _sse_frames(body_text(resp)), _sse_frames(_ask(standin, provider, stream=True).text)
    assert _framing(our_frames) == _framing(real_frames)
    assert our_frames[-1] == real_frames[-1] == ["data: [DONE]"]
    real, ours = _data(real_frames), _data(our_frames)
    # first chunk, a content chunk, and the chunk(s) carrying usage, compared key by key
    assert missing_keys(real[0], ours[0]) == []
    assert missing_keys(real[1], ours[1]) == []
    real_usage = [c for c in real if c.get("usage") or (c.get("x_groq") or {}).get("usage")]
    our_usage = [c for c in ours if c.get("usage") or (c.get("x_groq") or {}).get("usage")]
    assert len(real_usage) == len(our_usage) == 1
    assert missing_keys(real_usage[0], our_usage[0]) == []
    # where usage rides: on the finish chunk (DeepSeek, Groq) or on a chunk after it (OpenRouter)
    assert bool(real_usage[0]["choices"][0]["finish_reason"]) == bool(our_usage[0]["choices"][0]["finish_reason"])


def test_anthropic_stream(standin):
    (_req, resp), = _interactions("anthropic/messages-stream-thinking.yaml")
    real_frames = _sse_frames(body_text(resp))
    our_frames = _sse_frames(_ask(standin, "anthropic", stream=True).text)
    assert all(len(f) == 2 and f[0].startswith("event: ") and f[1].startswith("data: ") for f in our_frames)
    real_events = [f[0] for f in real_frames]
    our_events = [f[0] for f in our_frames]
    assert our_events[0] == real_events[0] == "event: message_start"
    assert our_events[-2:] == real_events[-2:] == ["event: message_delta", "event: message_stop"]
    assert set(our_events) == set(real_events)
    real_by_event = {f[0]: json.loads(f[1][6:]) for f in real_frames}
    our_by_event = {f[0]: json.loads(f[1][6:]) for f in our_frames}
    for event, real in real_by_event.items():
        if event == "event: content_block_delta":
            continue  # the recording's last delta is a thinking signature; text deltas checked below
        assert missing_keys(real, our_by_event[event]) == [], event
    text_delta = next(json.loads(f[1][6:]) for f in real_frames if '"text_delta"' in f[1])
    assert missing_keys(text_delta, our_by_event["event: content_block_delta"]) == []


def test_gemini_stream_json_array(standin):
    (_req, resp), = _interactions("gemini/streamGenerateContent-json-array-gzip.yaml")
    real_text, our_text = body_text(resp), _ask(standin, "gemini", stream=True, sse=False, reasoning_tokens=5).text
    real, ours = json.loads(real_text), json.loads(our_text)
    assert real_text.startswith("[{") and our_text.startswith("[{")
    assert "}\n,\r\n{" in real_text and "}\n,\r\n{" in our_text  # element separator as Google streams it
    assert real_text.rstrip().endswith("}\n]") and our_text.endswith("}\n]")
    assert missing_keys(real[-1], ours[-1]) == []
    assert missing_keys(real[0], ours[0]) == []


def test_gemini_stream_sse_carries_the_same_chunks(standin):
    frames = _sse_frames(_ask(standin, "gemini", stream=True).text)
    chunks = _data(frames)
    assert _framing(frames) == {"data"} and chunks[-1]["usageMetadata"]["candidatesTokenCount"] == 20


# ------------------------------------------------------------------ errors

ERROR_CASES = [
    ("openai", "auth", "openai/chat-401-invalid-api-key.yaml"),
    ("openai", "context_length", "openai/chat-400-context-length-exceeded.yaml"),
    ("groq", "auth", "groq/chat-401-invalid-api-key.yaml"),
    ("mistral", "auth", "mistral/chat-401-unauthorized.yaml"),
    ("mistral", "context_length", "mistral/chat-400-context-too-large.yaml"),
    ("openrouter", "rate_limit", "openrouter/chat-429-upstream-rate-limited.yaml"),
    ("anthropic", "rate_limit", "anthropic/messages-429-rate-limit-then-200.yaml"),
    ("anthropic", "auth", "anthropic/messages-401-invalid-x-api-key.yaml"),
    ("anthropic", "server_error", "anthropic/messages-500-api-error.yaml"),
    ("anthropic", "context_length", "anthropic/messages-400-prompt-too-long-via-pydantic-gateway.yaml"),
    ("gemini", "overloaded", "gemini/generateContent-503-model-overloaded.yaml"),
    ("gemini", "auth", "gemini/generateContent-400-api-key-invalid.yaml"),
]


@pytest.mark.parametrize("provider,kind,recording", ERROR_CASES, ids=[c[2] for c in ERROR_CASES])
def test_error_body_shape(standin, provider, kind, recording):
    real_resp = next(r for _q, r in _interactions(recording) if r["status"]["code"] >= 400)
    standin.fail(provider, kind)
    ours = _ask(standin, provider)
    assert ours.status_code == real_resp["status"]["code"]
    real, our_body = json.loads(body_text(real_resp)), ours.json()
    assert missing_keys(real, our_body) == []
    assert set(our_body) == set(real), "no extra top-level keys: clients branch on them"
    real_headers = {k.lower() for k in real_resp["headers"]}
    if "retry-after" in real_headers:
        assert "retry-after" in ours.headers
