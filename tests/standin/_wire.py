"""Provider wire formats: success bodies, stream frames and error bodies.

Each function here turns plain numbers (a :class:`~standin.Reply` resolved into
token counts) into the exact JSON a provider sends. The shapes are copied from real recordings
(``../shared/provider-recordings``, checked by ``tests/test_standin_conformance.py``), not from
documentation, because LiteLLM's clients parse what providers send, not what they document.

Nothing here does I/O; ``_server`` decides *when* to send what.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, Iterator

# Wire families. Several providers speak OpenAI's chat-completions dialect with their own
# additions; ``FLAVOR`` says which dialect a provider name speaks.
OPENAI_STYLE = ("openai", "deepseek", "mistral", "groq", "openrouter")
FLAVOR: dict[str, str] = {
    **{name: "openai" for name in OPENAI_STYLE},
    "anthropic": "anthropic",
    "gemini": "gemini",
}

# The api_base LiteLLM uses when none is given. ``StandIn.url(p)`` is the stand-in origin +
# ``/<p>`` + this URL's path, so the path LiteLLM requests from the stand-in equals the real one
# after the prefix, and a recorded URI maps back by swapping the origin (see ``real_uri``).
DEFAULT_API_BASE: dict[str, str] = {
    "openai": "https://api.openai.com/v1",
    "deepseek": "https://api.deepseek.com/beta",
    "mistral": "https://api.mistral.ai/v1",
    "groq": "https://api.groq.com/openai/v1",
    "openrouter": "https://openrouter.ai/api/v1",
    "anthropic": "https://api.anthropic.com",
    "gemini": "https://generativelanguage.googleapis.com/v1beta",
}


@dataclass(frozen=True)
class Usage:
    """Token counts of one reply, provider-neutral.

    ``prompt`` includes ``cached`` and ``cache_write`` (OpenAI's convention); ``completion``
    includes ``reasoning``. Each wire function re-splits them the way its provider does (Anthropic
    reports ``input_tokens`` *excluding* cache reads/writes; Gemini reports thoughts separately
    from ``candidatesTokenCount``).
    """

    prompt: int
    completion: int
    cached: int = 0
    cache_write: int = 0
    reasoning: int = 0
    cost: float = 0.0  # only OpenRouter puts a price on the wire

    @property
    def total(self) -> int:
        return self.prompt + self.completion


@dataclass(frozen=True)
class Answer:
    """Everything a success response needs, already resolved from the Reply and the request."""

    provider: str
    model: str
    text: str
    usage: Usage
    finish_reason: str  # neutral: "stop" | "length"
    chunks: tuple[str, ...]  # the text split as the stream sends it
    include_usage: bool  # the request asked for stream usage (stream_options.include_usage)
    #: False: the answer carries no usage block at all (``Reply(usage=False)``), whatever was asked
    send_usage: bool = True


def _created() -> int:
    return int(time.time())


# --------------------------------------------------------------------------- OpenAI dialects


def _openai_id(provider: str) -> str:
    if provider in ("deepseek",):
        return str(uuid.uuid4())  # DeepSeek ids are bare UUIDs
    if provider == "mistral":
        return uuid.uuid4().hex  # Mistral: 32 hex chars, no prefix
    if provider == "groq":
        return f"chatcmpl-{uuid.uuid4()}"
    if provider == "openrouter":
        return f"gen-{_created()}-{uuid.uuid4().hex[:20]}"
    return "chatcmpl-" + uuid.uuid4().hex[:29]


def openai_usage(provider: str, u: Usage) -> dict[str, Any]:
    """The ``usage`` block of a chat completion, in each OpenAI-dialect provider's own shape."""
    if provider == "mistral":
        return {"prompt_tokens": u.prompt, "total_tokens": u.total, "completion_tokens": u.completion}
    if provider == "groq":
        # Groq adds server timings (seconds) next to the counts.
        return {
            "queue_time": 0.01,
            "prompt_tokens": u.prompt,
            "prompt_time": 0.002,
            "completion_tokens": u.completion,
            "completion_time": 0.03,
            "total_tokens": u.total,
            "total_time": 0.032,
        }
    if provider == "deepseek":
        return {
            "prompt_tokens": u.prompt,
            "completion_tokens": u.completion,
            "total_tokens": u.total,
            "prompt_tokens_details": {"cached_tokens": u.cached},
            "completion_tokens_details": {"reasoning_tokens": u.reasoning},
            "prompt_cache_hit_tokens": u.cached,
            "prompt_cache_miss_tokens": u.prompt - u.cached,
        }
    if provider == "openrouter":
        return {
            "prompt_tokens": u.prompt,
            "completion_tokens": u.completion,
            "total_tokens": u.total,
            "cost": u.cost,
            "is_byok": False,
            "prompt_tokens_details": {"cached_tokens": u.cached, "audio_tokens": 0, "video_tokens": 0},
            "cost_details": {
                "upstream_inference_cost": None,
                "upstream_inference_prompt_cost": 0.0,
                "upstream_inference_completions_cost": 0.0,
            },
            "completion_tokens_details": {"reasoning_tokens": u.reasoning, "image_tokens": 0},
        }
    return {
        "prompt_tokens": u.prompt,
        "completion_tokens": u.completion,
        "total_tokens": u.total,
        "prompt_tokens_details": {"cached_tokens": u.cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": u.reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _openrouter_cost_details(u: Usage, usage: dict[str, Any]) -> None:
    # Split the price like OpenRouter does: prompt and completion shares of the upstream cost.
    if u.total:
        usage["cost_details"]["upstream_inference_prompt_cost"] = u.cost * u.prompt / u.total
        usage["cost_details"]["upstream_inference_completions_cost"] = u.cost * u.completion / u.total


def openai_body(a: Answer) -> dict[str, Any]:
    """A non-streamed ``chat.completion`` body."""
    p = a.provider
    message: dict[str, Any] = {"role": "assistant", "content": a.text}
    if p == "openai":
        message.update({"refusal": None, "annotations": []})
    elif p == "openrouter":
        message.update({"refusal": None, "reasoning": None})
    elif p == "mistral":
        message["tool_calls"] = None
    choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": a.finish_reason}
    if p in ("openai", "deepseek", "groq", "openrouter"):
        choice["logprobs"] = None
    if p == "openrouter":
        choice["native_finish_reason"] = "completed" if a.finish_reason == "stop" else "max_output_tokens"
    usage = openai_usage(p, a.usage)
    if p == "openrouter":
        _openrouter_cost_details(a.usage, usage)
    body: dict[str, Any] = {
        "id": _openai_id(p),
        "object": "chat.completion",
        "created": _created(),
        "model": a.model,
        "choices": [choice],
        "usage": usage,
    }
    if not a.send_usage:
        del body["usage"]
    if p in ("openai", "deepseek", "groq"):
        body["system_fingerprint"] = "fp_standin"
    if p == "openai":
        body["service_tier"] = "default"
    if p == "groq":
        # Current Groq sends service_tier ("on_demand"); the 2024 recording lacks it, and LiteLLM
        # 1.110.2's Groq client fails (APIConnectionError) on a body without it.
        body["service_tier"] = "on_demand"
        body["x_groq"] = {"id": "req_" + uuid.uuid4().hex[:26]}
    if p == "openrouter":
        body["provider"] = "StandIn"
    return body


def openai_stream(a: Answer) -> Iterator[str]:
    """SSE frames (``data: {...}\\n\\n``) of a streamed chat completion, ending with ``[DONE]``.

    Where the usage goes differs by provider, as recorded:
    OpenAI/OpenRouter send it in an extra chunk after the finish chunk (OpenAI with
    ``choices: []``) and only when ``stream_options.include_usage`` is set (OpenRouter also when
    ``usage.include`` is, which LiteLLM always sends); DeepSeek puts ``"usage": null`` on every
    chunk and the counts on the finish chunk; Groq always reports them under ``x_groq.usage`` on
    the finish chunk; Mistral always puts ``usage`` on the finish chunk. Without ``send_usage`` none
    of these carries counts (DeepSeek keeps its ``"usage": null``).
    """
    p = a.provider
    cid = _openai_id(p)
    created = _created()

    def chunk(delta: dict[str, Any], finish: str | None, **extra: Any) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "delta": delta}
        if p != "mistral":
            choice["logprobs"] = None
        choice["finish_reason"] = finish
        if p == "openrouter":
            choice["native_finish_reason"] = None if finish is None else "completed"
        c: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": a.model}
        if p in ("openai", "deepseek", "groq"):
            c["system_fingerprint"] = "fp_standin"
        if p == "openrouter":
            c["provider"] = "StandIn"
        c["choices"] = [choice]
        if p == "deepseek":
            c["usage"] = None
        c.update(extra)
        return c

    if p == "openrouter":
        yield ": OPENROUTER PROCESSING\n\n"
    first_extra = {"x_groq": {"id": "req_" + uuid.uuid4().hex[:26]}} if p == "groq" else {}
    yield sse(chunk({"role": "assistant", "content": ""}, None, **first_extra))
    for piece in a.chunks:
        # OpenRouter repeats the role on every delta, as recorded.
        yield sse(chunk({"role": "assistant", "content": piece} if p == "openrouter" else {"content": piece}, None))

    usage = openai_usage(p, a.usage)
    if p == "openrouter":
        _openrouter_cost_details(a.usage, usage)
    if p == "groq":
        x_groq: dict[str, Any] = {"id": "req_" + uuid.uuid4().hex[:26]}
        if a.send_usage:
            x_groq["usage"] = usage
        yield sse(chunk({}, a.finish_reason, x_groq=x_groq))
    elif p == "mistral":
        yield sse(chunk({"content": ""}, a.finish_reason, **({"usage": usage} if a.send_usage else {})))
    elif p == "deepseek":
        final = chunk({"content": ""}, a.finish_reason)
        if a.include_usage and a.send_usage:
            final["usage"] = usage
        yield sse(final)
    else:
        yield sse(chunk({"content": ""} if p == "openrouter" else {}, a.finish_reason))
        if a.include_usage and a.send_usage:
            if p == "openrouter":
                tail = chunk({"role": "assistant", "content": ""}, None, usage=usage)
                tail["choices"][0]["native_finish_reason"] = None
            else:
                tail = chunk({}, None, usage=usage)
                tail["choices"] = []
            yield sse(tail)
    yield "data: [DONE]\n\n"


def sse(obj: dict[str, Any], event: str | None = None, sep: str = "\n\n") -> str:
    data = "data: " + json.dumps(obj, separators=(",", ":"))
    return (f"event: {event}\n{data}" if event else data) + sep


# --------------------------------------------------------------------------- Anthropic

_STOP_REASON = {"stop": "end_turn", "length": "max_tokens"}


def anthropic_usage(u: Usage, *, output: int | None = None) -> dict[str, Any]:
    return {
        # Anthropic's input_tokens excludes cache reads and writes.
        "input_tokens": u.prompt - u.cached - u.cache_write,
        "cache_creation_input_tokens": u.cache_write,
        "cache_read_input_tokens": u.cached,
        "cache_creation": {"ephemeral_5m_input_tokens": u.cache_write, "ephemeral_1h_input_tokens": 0},
        "output_tokens": u.completion if output is None else output,
        "service_tier": "standard",
    }


def anthropic_body(a: Answer) -> dict[str, Any]:
    return {
        "id": "msg_01" + uuid.uuid4().hex[:22],
        "type": "message",
        "role": "assistant",
        "model": a.model,
        "content": [{"type": "text", "text": a.text}] if a.text else [],
        "stop_reason": _STOP_REASON[a.finish_reason],
        "stop_sequence": None,
        "usage": anthropic_usage(a.usage),
    }


def anthropic_stream(a: Answer) -> Iterator[str]:
    """``event:``/``data:`` frames: message_start, ping, content_block_*, message_delta, message_stop.

    As recorded, message_start carries the input side with a small placeholder ``output_tokens``
    and message_delta the final counts.
    """
    start = anthropic_body(a)
    start.update({"content": [], "stop_reason": None, "usage": anthropic_usage(a.usage, output=1)})
    yield sse({"type": "message_start", "message": start}, "message_start")
    yield sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
              "content_block_start")
    yield sse({"type": "ping"}, "ping")
    for piece in a.chunks:
        yield sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}},
                  "content_block_delta")
    yield sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
    final = anthropic_usage(a.usage)
    del final["cache_creation"], final["service_tier"]  # message_delta's usage is the flat counts
    yield sse({"type": "message_delta", "delta": {"stop_reason": _STOP_REASON[a.finish_reason],
                                                  "stop_sequence": None}, "usage": final}, "message_delta")
    yield sse({"type": "message_stop"}, "message_stop")


# --------------------------------------------------------------------------- Gemini

_FINISH = {"stop": "STOP", "length": "MAX_TOKENS"}


def gemini_usage(u: Usage) -> dict[str, Any]:
    candidates = u.completion - u.reasoning  # Gemini counts thoughts apart from candidates
    m: dict[str, Any] = {
        "promptTokenCount": u.prompt,
        "candidatesTokenCount": candidates,
        "totalTokenCount": u.total,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": u.prompt}],
    }
    if u.cached:
        m["cachedContentTokenCount"] = u.cached
        m["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": u.cached}]
    if u.reasoning:
        m["thoughtsTokenCount"] = u.reasoning
    m["serviceTier"] = "standard"
    return m


def _gemini_chunk(a: Answer, rid: str, text: str, finish: str | None, usage: dict[str, Any]) -> dict[str, Any]:
    cand: dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "model"}}
    if finish:
        cand["finishReason"] = finish
    cand["index"] = 0
    out: dict[str, Any] = {"candidates": [cand], "usageMetadata": usage, "modelVersion": a.model, "responseId": rid}
    if not a.send_usage:
        del out["usageMetadata"]  # no usage block at all (``Reply(usage=False)``)
    return out


def gemini_body(a: Answer) -> dict[str, Any]:
    return _gemini_chunk(a, uuid.uuid4().hex[:22], a.text, _FINISH[a.finish_reason], gemini_usage(a.usage))


def gemini_stream_chunks(a: Answer) -> list[dict[str, Any]]:
    """The chunk objects; ``_server`` frames them as SSE (``alt=sse``) or as a JSON array.

    As recorded, each chunk repeats ``usageMetadata``; intermediate ones carry only the prompt
    count, the last one the full counts and ``finishReason``.
    """
    rid = uuid.uuid4().hex[:22]
    pieces = list(a.chunks) or [""]
    partial = {"promptTokenCount": a.usage.prompt, "totalTokenCount": a.usage.prompt,
               "promptTokensDetails": [{"modality": "TEXT", "tokenCount": a.usage.prompt}],
               "serviceTier": "standard"}
    out = [_gemini_chunk(a, rid, piece, None, partial) for piece in pieces[:-1]]
    out.append(_gemini_chunk(a, rid, pieces[-1], _FINISH[a.finish_reason], gemini_usage(a.usage)))
    return out


# --------------------------------------------------------------------------- errors

# (provider flavor or name, status) -> body. Shapes as recorded; messages are the providers' own.
_OPENAI_ERR = {
    400: ("invalid_request_error", "context_length_exceeded", "messages"),
    401: ("invalid_request_error", "invalid_api_key", None),
    429: ("requests", "rate_limit_exceeded", None),
    500: ("server_error", None, None),
    503: ("server_error", None, None),
}
_ANTHROPIC_ERR = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
_GEMINI_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def error_body(provider: str, status: int, message: str) -> dict[str, Any]:
    """The JSON error body ``provider`` sends with HTTP ``status``."""
    flavor = FLAVOR[provider]
    if flavor == "anthropic":
        return {
            "type": "error",
            "error": {"type": _ANTHROPIC_ERR.get(status, "api_error"), "message": message},
            "request_id": "req_011" + uuid.uuid4().hex[:21],
        }
    if flavor == "gemini":
        err: dict[str, Any] = {"code": status, "message": message, "status": _GEMINI_STATUS.get(status, "UNKNOWN")}
        if status == 400 and "API key" in message:
            err["details"] = [
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                 "domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}},
                {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US", "message": message},
            ]
        return {"error": err}
    if provider == "mistral":
        if status == 401:
            return {"message": "Unauthorized", "request_id": uuid.uuid4().hex}
        code = {400: "3051", 429: "1300", 500: "3000"}.get(status, str(status))
        kind = {400: "invalid_request_invalid_args", 429: "rate_limited"}.get(status, "internal_server_error")
        return {"object": "error", "message": message, "type": kind, "param": None, "code": code}
    if provider == "openrouter":
        body: dict[str, Any] = {"error": {"code": status, "message": message}}
        if status in (429, 502, 503):
            body["error"]["metadata"] = {"provider_name": "StandIn", "raw": message}
        body["user_id"] = "user_standin"
        return body
    etype, code, param = _OPENAI_ERR.get(status, ("server_error", None, None))
    if provider == "groq":  # Groq leaves out "param"
        return {"error": {"message": message, "type": etype, "code": code}}
    return {"error": {"message": message, "type": etype, "param": param, "code": code}}


def stream_error_frame(provider: str, status: int, message: str) -> str:
    """An error delivered *inside* an HTTP 200 stream (after some chunks were sent)."""
    flavor = FLAVOR[provider]
    body = error_body(provider, status, message)
    if flavor == "anthropic":
        del body["request_id"]
        return sse(body, "error")
    if flavor == "gemini":
        return sse(body, sep="\r\n\r\n")
    return sse(body)
