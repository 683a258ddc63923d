"""Strict cassette matching: a recorded answer serves only the request it answered.

Matching on method, host and path alone (what vcrpy needs when the body differs between LiteLLM
versions) lets any recording on the same endpoint answer any request: a test of one prompt passes
against the answer to another. The matchers here compare what decides an answer instead -- the
model, the messages (or ``input``/``prompt``), the output limit, ``stream`` and the sampling/tool
parameters -- after normalising what LiteLLM and the providers' formats vary: the JSON body is
parsed (key order and whitespace do not count), Anthropic and Gemini bodies are read into OpenAI
chat form, ``max_completion_tokens``/``maxOutputTokens`` count as ``max_tokens``, a content list of
text parts equals the joined text and a ``None``-valued key equals an absent one. Headers, ``user``,
``metadata`` and ``stream_options`` do not change an answer and are not compared.

Each field is its own vcrpy matcher, so vcrpy's "no recorded interaction matches it" error ranks
the recordings by how many fields agree and says, for the closest ones, which field differs and
how (``messages[0].content: sent '...', recorded '...'``).

Use it with vcrpy: ``register(my_vcr)`` then ``match_on=STRICT_MATCH_ON``. ``ENDPOINT_MATCH_ON``
(method, host, path) is the loose mode, for a user who chooses to accept any recording of the
endpoint; ``resolve_match_on`` reads the ``strict``/``endpoint`` shorthands the plugin and the
``replay`` command accept.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

__all__ = ["ANSWER_FIELDS", "STRICT_MATCH_ON", "ENDPOINT_MATCH_ON", "MATCH_MODES", "register", "resolve_match_on",
           "answer_fields", "tag_origin"]

#: answer-changing request parameters compared by the ``params`` matcher (beyond model, messages,
#: max_tokens and stream); a key absent from both sides agrees.
ANSWER_PARAMS = (
    "temperature", "top_p", "top_k", "n", "stop", "stop_sequences", "seed", "presence_penalty",
    "frequency_penalty", "logit_bias", "logprobs", "top_logprobs", "tools", "tool_choice", "functions",
    "function_call", "response_format", "reasoning_effort", "thinking", "modalities", "dimensions",
    "encoding_format", "safetyConfig", "safetySettings", "toolConfig",
)
_GEMINI_GEN_PARAMS = {"temperature": "temperature", "topP": "top_p", "topK": "top_k", "candidateCount": "n",
                      "stopSequences": "stop", "seed": "seed", "responseMimeType": "response_format",
                      "responseSchema": "response_format_schema"}

#: the fields a strict match compares, each a vcrpy matcher of that name
ANSWER_FIELDS = ("model", "messages", "max_tokens", "stream", "params")
STRICT_MATCH_ON = ("method", "scheme", "host", "path", *ANSWER_FIELDS)
ENDPOINT_MATCH_ON = ("method", "host", "path")
MATCH_MODES = {"strict": STRICT_MATCH_ON, "endpoint": ENDPOINT_MATCH_ON}

_CACHE_ATTR = "_payg_answer_fields"
_ORIGIN_ATTR = "_payg_origin"
_ABSENT = "<absent>"


def resolve_match_on(match_on: str | Sequence[str] | None) -> tuple[str, ...]:
    """``None``/``"strict"`` -> :data:`STRICT_MATCH_ON`; ``"endpoint"`` -> :data:`ENDPOINT_MATCH_ON`;
    a comma-separated string or a sequence -> those vcrpy matcher names (vcrpy's own plus
    :data:`ANSWER_FIELDS`), checked here so a typo is an error naming it, not a silent loose match."""
    if match_on is None:
        return STRICT_MATCH_ON
    if isinstance(match_on, str):
        if match_on in MATCH_MODES:
            return MATCH_MODES[match_on]
        match_on = [m.strip() for m in match_on.split(",") if m.strip()]
    names = tuple(match_on)
    known = set(_VCR_MATCHERS) | set(ANSWER_FIELDS)
    unknown = [m for m in names if m not in known]
    if unknown or not names:
        raise ValueError(
            f"match_on {list(names)!r}: unknown matcher {', '.join(map(repr, unknown)) or '(none given)'}; "
            f"expected 'strict', 'endpoint' or names from {', '.join(sorted(known))}"
        )
    return names


_VCR_MATCHERS = ("method", "uri", "scheme", "host", "port", "path", "query", "raw_body", "body", "headers")


# -- reading a request -----------------------------------------------------------------------------


def _json_body(body: Any) -> Any:
    if isinstance(body, (bytes, bytearray)):
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if not isinstance(body, str) or not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


def _text(content: Any) -> Any:
    """A list of text-only parts (OpenAI, Anthropic, Gemini) is the same prompt as their joined text."""
    if isinstance(content, list) and content and all(
        isinstance(p, Mapping) and set(p) - {"type", "cache_control"} == {"text"} for p in content
    ):
        return "\n".join(str(p["text"]) for p in content)
    return content


def _clean(value: Any) -> Any:
    """Drop ``None``-valued keys at every depth (LiteLLM writes some as null, a provider omits them)."""
    if isinstance(value, Mapping):
        return {k: _clean(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _message(m: Any) -> Any:
    if not isinstance(m, Mapping):
        return m
    out = dict(_clean(m))
    if "content" in out:
        out["content"] = _text(out["content"])
    if "parts" in out:  # Gemini
        out["content"] = _text(out.pop("parts"))
        out["role"] = "assistant" if out.get("role") == "model" else out.get("role", "user")
    return out


def answer_fields(method: str, uri: str, body: Any) -> dict[str, Any]:
    """The answer-deciding fields of one request (see the module docstring); a body that is not a
    JSON object is compared whole, as ``params.body``."""
    data = _json_body(body)
    path = urlsplit(uri).path
    if not isinstance(data, Mapping):
        raw = body.decode("utf-8", "replace") if isinstance(body, (bytes, bytearray)) else body
        return {"model": None, "messages": None, "max_tokens": None, "stream": False, "params": {"body": raw or None}}
    params = {k: _clean(data[k]) for k in ANSWER_PARAMS if data.get(k) is not None}
    if ":generateContent" in path or ":streamGenerateContent" in path:  # Gemini: model in the path
        gen = data.get("generationConfig") or {}
        params.update({_GEMINI_GEN_PARAMS[k]: _clean(v) for k, v in gen.items() if k in _GEMINI_GEN_PARAMS and v is not None})
        messages = [_message(c) for c in data.get("contents") or []]
        system = data.get("systemInstruction") or data.get("system_instruction")
        if system:
            messages.insert(0, {"role": "system", "content": _text(system.get("parts"))})
        return {"model": path.rsplit("/", 1)[-1].split(":", 1)[0], "messages": messages,
                "max_tokens": gen.get("maxOutputTokens"), "stream": ":streamGenerateContent" in path, "params": params}
    if "messages" in data:
        messages = [_message(m) for m in data.get("messages") or []]
        if data.get("system"):  # Anthropic
            messages.insert(0, {"role": "system", "content": _text(data["system"])})
    else:  # embeddings, text completions, Responses API
        messages = next((_clean(data[k]) for k in ("input", "prompt") if data.get(k) is not None), None)
    max_tokens = next((data[k] for k in ("max_completion_tokens", "max_tokens", "max_output_tokens")
                       if data.get(k) is not None), None)
    return {"model": data.get("model"), "messages": messages, "max_tokens": max_tokens,
            "stream": bool(data.get("stream")), "params": params}


def _fields_of(request: Any) -> dict[str, Any]:
    cached = getattr(request, _CACHE_ATTR, None)
    if cached is None:
        cached = answer_fields(request.method, request.uri, request.body)
        try:
            setattr(request, _CACHE_ATTR, cached)
        except AttributeError:
            pass
    return cached


def tag_origin(requests: Iterable[Any], where: Callable[[int], str]) -> None:
    """Name each recorded request (``where(index)``, e.g. ``support.yaml#2``) so a mismatch message
    says which recording it compared with."""
    for i, request in enumerate(requests):
        try:
            setattr(request, _ORIGIN_ATTR, where(i))
        except AttributeError:
            pass


# -- the matchers --------------------------------------------------------------------------------


def _short(value: Any, limit: int = 120) -> str:
    text = _ABSENT if value is None else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _first_difference(sent: Any, recorded: Any, where: str) -> tuple[str, Any, Any]:
    """The path to the first place two JSON values differ, and the values there."""
    if isinstance(sent, Mapping) and isinstance(recorded, Mapping):
        for key in sorted(set(sent) | set(recorded), key=str):
            if sent.get(key) != recorded.get(key):
                return _first_difference(sent.get(key), recorded.get(key), f"{where}.{key}")
    if isinstance(sent, list) and isinstance(recorded, list):
        for i, (a, b) in enumerate(zip(sent, recorded)):
            if a != b:
                return _first_difference(a, b, f"{where}[{i}]")
        if len(sent) != len(recorded):
            return f"{where}.length", len(sent), len(recorded)
    return where, sent, recorded


def _matcher(name: str) -> Callable[[Any, Any], None]:
    def match(sent: Any, recorded: Any) -> None:
        a, b = _fields_of(sent).get(name), _fields_of(recorded).get(name)
        if a == b:
            return
        where, x, y = _first_difference(a, b, name)
        origin = getattr(recorded, _ORIGIN_ATTR, None)
        raise AssertionError(f"{where}: sent {_short(x)}, recorded {_short(y)}"
                             + (f" (recording {origin})" if origin else ""))

    match.__name__ = name
    match.__qualname__ = name
    return match


MATCHERS = {name: _matcher(name) for name in ANSWER_FIELDS}


def register(vcr: Any) -> Any:
    """Register the answer-field matchers on a ``vcr.VCR`` (returns it)."""
    for name, fn in MATCHERS.items():
        vcr.register_matcher(name, fn)
    return vcr
