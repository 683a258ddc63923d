"""Repairs for LiteLLM defects that make a billed answer's usage go missing or come out wrong.

The plugin's promise is that the spend it settles is what the provider billed. A few provider
answers defeat LiteLLM 1.110.2 before the plugin sees them, so the promise cannot be kept by the
callback alone:

* ``groq_service_tier``: ``GroqChatConfig.transform_response`` reads ``service_tier`` without a
  default, so a Groq answer without that field (Groq's format before mid-2025, and any
  OpenAI-compatible Groq gateway that drops it) fails as ``APIConnectionError`` *after* Groq
  billed it: the caller sees an error and the spend is never recorded.
* ``groq_stream_usage``: Groq's streams put the usage on the last chunk under ``x_groq.usage``
  (always) and only sometimes as a top-level ``usage``; LiteLLM reads only the latter, so a
  streamed Groq call is priced on LiteLLM's own token estimate instead of Groq's counts.

Each repair is applied only if a probe shows the installed LiteLLM still has the defect (it runs
the real LiteLLM code on a synthetic answer, offline), so moving the pin to a LiteLLM that fixed it
applies nothing, and ``tests/test_litellm_fixes.py`` then says which repair to delete. Each repair
changes only the defective case: an answer that LiteLLM already reads is left exactly as it was.
:func:`apply` is called by ``attach`` and the proxy handler; :func:`applied` says what it did.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("litellm_payg")

_applied: dict[str, str] = {}  # repair name -> what it repairs (for `litellm-payg plugins` and tests)
_checked = False


def _groq_answer(**extra: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-probe", "object": "chat.completion", "created": 0, "model": "llama3-8b-8192",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
        **extra,
    }


def _transform_groq(transform: Callable[..., Any], body: dict[str, Any]) -> Any:
    """Run a GroqChatConfig.transform_response on ``body`` the way LiteLLM's HTTP handler does."""
    import httpx
    from litellm.litellm_core_utils.litellm_logging import Logging
    from litellm.llms.groq.chat.transformation import GroqChatConfig
    from litellm.types.utils import ModelResponse

    request = httpx.Request("POST", "https://api.groq.com/openai/v1/chat/completions")
    raw = httpx.Response(200, content=json.dumps(body).encode(), request=request,
                         headers={"content-type": "application/json"})
    logging_obj = Logging(model="llama3-8b-8192", messages=[], stream=False, call_type="completion",
                          start_time=0, litellm_call_id="payg-probe", function_id="payg-probe")
    return transform(GroqChatConfig(), model="llama3-8b-8192", raw_response=raw, model_response=ModelResponse(),
                     logging_obj=logging_obj, request_data={}, messages=[], optional_params={},
                     litellm_params={}, encoding=None)


def groq_service_tier_defect(transform: Callable[..., Any] | None = None) -> bool:
    """True if ``transform`` (default: LiteLLM's current one) fails on a Groq answer without
    ``service_tier``."""
    from litellm.llms.groq.chat.transformation import GroqChatConfig

    try:
        _transform_groq(transform or GroqChatConfig.transform_response, _groq_answer())
    except AttributeError as exc:
        return "service_tier" in str(exc)
    return False


def _with_json_field(response: Any, key: str, value: Any) -> Any:
    """``response`` with ``key`` added to its JSON object body (an unparsable body is returned as is,
    for LiteLLM to report)."""
    import httpx

    try:
        body = response.json()
    except ValueError:
        return response
    if not isinstance(body, dict):
        return response
    body.setdefault(key, value)
    headers = [(k, v) for k, v in response.headers.items() if k.lower() not in ("content-encoding", "content-length")]
    return httpx.Response(response.status_code, headers=headers, content=json.dumps(body).encode(),
                          request=response.request, extensions=response.extensions)


def _fix_groq_service_tier() -> None:
    from litellm.llms.groq.chat.transformation import GroqChatConfig

    original = GroqChatConfig.transform_response

    @functools.wraps(original)
    def transform_response(self: Any, model: str, raw_response: Any, *args: Any, **kwargs: Any) -> Any:
        # LiteLLM builds the response from the body's JSON, so the missing field goes into the
        # body, as null: LiteLLM's own mapping turns a null service_tier into "auto".
        if b'"service_tier"' not in raw_response.content:
            raw_response = _with_json_field(raw_response, "service_tier", None)
        return original(self, model, raw_response, *args, **kwargs)

    transform_response.__payg_original__ = original  # type: ignore[attr-defined]
    GroqChatConfig.transform_response = transform_response  # type: ignore[method-assign]


_GROQ_FINAL_CHUNK = {
    "id": "chatcmpl-probe", "object": "chat.completion.chunk", "created": 0, "model": "llama3-8b-8192",
    "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
    "x_groq": {"id": "req_probe", "usage": {"prompt_tokens": 18, "completion_tokens": 73, "total_tokens": 91}},
}


def groq_stream_usage_defect(parser: Callable[..., Any] | None = None) -> bool:
    """True if ``parser`` (default: LiteLLM's current Groq chunk parser) drops the usage a Groq
    stream reports under ``x_groq.usage``."""
    from litellm.llms.groq.chat.transformation import GroqChatCompletionStreamingHandler

    handler = GroqChatCompletionStreamingHandler(streaming_response=iter(()), sync_stream=True)
    chunk = (parser or GroqChatCompletionStreamingHandler.chunk_parser)(handler, json.loads(json.dumps(_GROQ_FINAL_CHUNK)))
    usage = getattr(chunk, "usage", None)
    return getattr(usage, "completion_tokens", None) != 73


def _fix_groq_stream_usage() -> None:
    from litellm.llms.groq.chat.transformation import GroqChatCompletionStreamingHandler

    original = GroqChatCompletionStreamingHandler.chunk_parser

    @functools.wraps(original)
    def chunk_parser(self: Any, chunk: dict) -> Any:
        groq_usage = (chunk.get("x_groq") or {}).get("usage") if isinstance(chunk, dict) else None
        if groq_usage and not chunk.get("usage"):
            # Only the token counts: Groq's timing fields (queue_time, prompt_time...) are not usage.
            chunk = {**chunk, "usage": {k: v for k, v in groq_usage.items() if k.endswith(("_tokens", "_details"))}}
        return original(self, chunk)

    chunk_parser.__payg_original__ = original  # type: ignore[attr-defined]
    GroqChatCompletionStreamingHandler.chunk_parser = chunk_parser  # type: ignore[method-assign]


REPAIRS: dict[str, tuple[str, Callable[[], bool], Callable[[], None]]] = {
    "groq_service_tier": (
        "a Groq answer without service_tier no longer fails after it billed",
        groq_service_tier_defect, _fix_groq_service_tier),
    "groq_stream_usage": (
        "a Groq stream is priced on the usage Groq reports under x_groq.usage",
        groq_stream_usage_defect, _fix_groq_stream_usage),
}


def apply() -> dict[str, str]:
    """Apply each repair whose defect the installed LiteLLM still has (once per process); return
    the repairs in effect. A probe that itself fails (LiteLLM moved the code it exercises) applies
    nothing and says so in the log, rather than break ``attach``."""
    global _checked
    if _checked:
        return dict(_applied)
    _checked = True
    for name, (what, has_defect, fix) in REPAIRS.items():
        try:
            needed = has_defect()
        except Exception as exc:  # noqa: BLE001 - a probe must never take attach down
            logger.warning("litellm-payg: could not check LiteLLM for the %s defect (%s); not repaired", name, exc)
            continue
        if needed:
            fix()
            _applied[name] = what
            logger.debug("litellm-payg: repaired LiteLLM defect %s: %s", name, what)
    return dict(_applied)


def applied() -> dict[str, str]:
    """The repairs in effect in this process (name -> what it repairs)."""
    return dict(_applied)
