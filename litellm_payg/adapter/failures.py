"""What kind of failure an attempt ended with, so failover can react to the *kind*, not the provider.

``classify(exc)`` maps an exception LiteLLM raised (or our own :class:`InvalidResponseError`) to a
:class:`FailureClass`; ``diagnose(exc)`` also says which matcher fired, the provider's own HTTP
status when LiteLLM kept it, and ``retry_after_s``.

The mapping is a small ordered table (``MATCHERS``): the first matcher that accepts the exception
wins. Each matcher combines three kinds of evidence — the exception type, the HTTP status, and the
error message — because LiteLLM's mapping is incomplete and provider-dependent (1.110.2):

* Anthropic 529 ``overloaded_error`` becomes ``InternalServerError`` with ``status_code`` 500 and
  ``provider_status_code`` 529; Gemini's 503 ``UNAVAILABLE`` becomes ``InternalServerError`` 500
  with no provider status at all (only the message keeps "503"/"overloaded").
* Mistral's and OpenRouter's context-length 400s stay plain ``BadRequestError`` (OpenAI, DeepSeek,
  Groq, Anthropic and Gemini ones become ``ContextWindowExceededError``): detected by message.
* OpenRouter 5xx/502 come back as ``APIError`` with the status; Gemini's plain-text 502 as
  ``APIConnectionError`` 500; a garbled JSON body as ``APIError`` with status **200**,
  ``APIConnectionError`` or (Gemini) ``BadRequestError`` with status **422**.
* Every Gemini *streaming* error, even one answered before the first chunk, is wrapped in
  ``MidStreamFallbackError`` (whose ``status_code`` copies the original's, e.g. 429): the wrapped
  ``original_exception`` is classified instead.

``FailureClass.counts_against_deployment`` says whether a failure says something about the
deployment's health (feed it to the circuit breaker) or only about the request.

``Failure.answered`` says the attempt failed *after* the provider answered with HTTP 200, so the
provider has most likely billed at least the prompt (see :func:`diagnose`): a stream that broke
after it began, and a 200 whose body LiteLLM could not read (garbled JSON; a Gemini answer without
``usageMetadata``). An error status, a timeout or a connection failure before any answer is not.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import openai

from litellm_payg.core.failure import Failure, FailureClass, InvalidResponseError  # re-exported

__all__ = [
    "Failure",
    "FailureClass",
    "InvalidResponseError",
    "MATCHERS",
    "MALFORMED",
    "MID_STREAM",
    "Matcher",
    "classify",
    "diagnose",
    "diagnose_broken_stream",
    "retry_after",
    "timed_out_after_sending",
]


# -- evidence ------------------------------------------------------------------------------------


def _status(exc: BaseException) -> int | None:
    """The most specific HTTP status the exception carries: the provider's own, else LiteLLM's."""
    for attr in ("provider_status_code", "status_code"):
        value = getattr(exc, attr, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    response = getattr(exc, "response", None)
    value = getattr(response, "status_code", None)
    return value if isinstance(value, int) else None


def _message(exc: BaseException) -> str:
    parts = [str(exc)]
    body = getattr(exc, "body", None)
    if body and not isinstance(body, (bytes, bytearray)):
        parts.append(str(body))
    return "\n".join(parts)


def _named(*names: str) -> tuple[type, ...]:
    """LiteLLM exception classes by name (absent ones are skipped, so a rename cannot crash us)."""
    import litellm.exceptions as lex

    return tuple(getattr(lex, n) for n in names if isinstance(getattr(lex, n, None), type))


# -- the table -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Matcher:
    """One row of the table: a name (reported by ``diagnose``), the class it assigns, and the test.

    The test receives the exception, its status (``None`` if unknown) and its message.
    """

    name: str
    cls: FailureClass
    test: Callable[[BaseException, int | None, str], bool]


def of_type(*types: type | tuple[type, ...]) -> Callable[[BaseException, int | None, str], bool]:
    flat: tuple[type, ...] = tuple(t for group in types for t in (group if isinstance(group, tuple) else (group,)))
    return lambda exc, status, msg: isinstance(exc, flat)


def status_in(*codes: int | range) -> Callable[[BaseException, int | None, str], bool]:
    def test(exc: BaseException, status: int | None, msg: str) -> bool:
        return status is not None and any(status in c if isinstance(c, range) else status == c for c in codes)

    return test


def message_matches(pattern: str) -> Callable[[BaseException, int | None, str], bool]:
    rx = re.compile(pattern, re.IGNORECASE | re.DOTALL)
    return lambda exc, status, msg: rx.search(msg) is not None


def all_of(*tests: Callable[[BaseException, int | None, str], bool]) -> Callable[[BaseException, int | None, str], bool]:
    return lambda exc, status, msg: all(t(exc, status, msg) for t in tests)


CLIENT_ERROR = range(400, 500)
SERVER_STATUS = range(500, 600)

#: Provider wordings of "the prompt does not fit" (OpenAI/DeepSeek/Groq/OpenRouter, Mistral,
#: Anthropic, Gemini, and the generic ones several OpenAI-compatible servers use).
CONTEXT_WORDS = (
    r"maximum context length|context[ _-]?(length|window)[ _-]?exceeded|too large for model with \d+ maximum context"
    r"|prompt is too long|input token count .{0,40}exceeds the maximum|exceeds the context window"
    r"|reduce the length of the messages|context length of only \d+ tokens"
)
#: A key the provider refuses, said with a 400 (Gemini says API_KEY_INVALID with 400).
AUTH_WORDS = r"API[ _]KEY[ _]INVALID|API key not valid|invalid[ _]api[ _]key|incorrect api key"
#: 5xx the provider said in words only (Gemini's 503 arrives as a status-less 500).
OVERLOAD_WORDS = r"overloaded|\bUNAVAILABLE\b|\b50[234] (Bad Gateway|Service Unavailable|Gateway Time-?out)\b"
#: LiteLLM could not turn a provider's *successful* body into an answer: its Gemini (and Bedrock)
#: converter, which runs only on a 2xx body and reports its failure with a status of its own (422),
#: e.g. for a Gemini 200 without ``usageMetadata``.
CONVERTER_WORDS = r"Error converting to valid response block|usageMetadata not found in completion_response"
#: The provider answered but the body could not be parsed (garbled / truncated JSON, or no usage
#: block where LiteLLM requires one). LiteLLM's own wordings (1.110.2): "Empty or invalid response
#: from LLM endpoint" (its OpenAI client got a body that is not a chat completion, e.g. the SSE
#: stream a provider sends for ``extra_body: {"stream": true}``: a 500 carrying the whole billed
#: answer), "Invalid response object" (``convert_to_model_response_object`` refused a 2xx body),
#: "Unable to parse response" (its stream handler), "LiteLLM: provider returned a response with no
#: 'choices'" / "'choices' that is not a list", and the providers' "Failed to parse ... response" /
#: "Invalid JSON response" / "Error parsing response"; and an error raised inside a provider
#: client's ``transform_response`` (whose frames LiteLLM's message names, e.g. Anthropic's
#: ``TypeError`` on a ``content`` that is not a list), which only ever runs on a 2xx body.
MALFORMED_WORDS = (
    r"Unable to get json response|Unterminated string"
    r"|Expecting (value|property name|',' delimiter)|Invalid control character|Extra data: line"
    r"|Empty or invalid response from LLM endpoint|Invalid response object|Unable to parse response"
    r"|LiteLLM: provider returned (a response with no|'choices' that is not)"
    r"|Failed to parse [\w ]{0,40}response|Invalid JSON response|Error parsing response"
    r"|\bin[ +](transform_(parsed_)?response|convert_to_model_response_object)\b|"
    + CONVERTER_WORDS
)

#: Matcher names ``Failure.answered`` depends on.
MALFORMED = "malformed provider response"
MID_STREAM = "mid-stream error"

_TIMEOUTS = (openai.APITimeoutError, httpx.TimeoutException, asyncio.TimeoutError, TimeoutError)
_CONNECTION = (openai.APIConnectionError, httpx.TransportError, ConnectionError)

#: The table, in order: the first match wins. Order matters where evidence overlaps: a context
#: overflow and a bad key are both 400s; a garbled body can arrive as a 422 BadRequestError.
MATCHERS: tuple[Matcher, ...] = (
    Matcher("our validation", FailureClass.INVALID_RESPONSE, of_type(InvalidResponseError)),
    Matcher("context window (LiteLLM type)", FailureClass.CONTEXT_WINDOW, of_type(_named("ContextWindowExceededError"))),
    Matcher("rate limit", FailureClass.RATE_LIMIT, lambda e, s, m: s == 429 or isinstance(e, openai.RateLimitError)),
    Matcher("context window (message)", FailureClass.CONTEXT_WINDOW,
            all_of(status_in(CLIENT_ERROR), message_matches(CONTEXT_WORDS))),
    Matcher("auth (status)", FailureClass.AUTH, status_in(401, 402, 403)),
    Matcher("auth (type)", FailureClass.AUTH, of_type(openai.AuthenticationError, openai.PermissionDeniedError)),
    Matcher("auth (message)", FailureClass.AUTH, all_of(status_in(400), message_matches(AUTH_WORDS))),
    Matcher("timeout", FailureClass.SERVER_ERROR, of_type(_TIMEOUTS)),
    Matcher(MALFORMED, FailureClass.SERVER_ERROR, message_matches(MALFORMED_WORDS)),
    Matcher("connection", FailureClass.SERVER_ERROR, of_type(_CONNECTION)),
    Matcher("server status", FailureClass.SERVER_ERROR, status_in(SERVER_STATUS, 408)),
    Matcher("server (type)", FailureClass.SERVER_ERROR,
            of_type(openai.InternalServerError, _named("ServiceUnavailableError", "BadGatewayError"))),
    Matcher("overloaded (message)", FailureClass.SERVER_ERROR, message_matches(OVERLOAD_WORDS)),
    Matcher("bad request", FailureClass.BAD_REQUEST,
            lambda e, s, m: (s is not None and s in CLIENT_ERROR) or isinstance(e, openai.BadRequestError)),
)


# -- classification --------------------------------------------------------------------------------


def _wrapped(exc: BaseException) -> BaseException | None:
    """The provider error inside LiteLLM's MidStreamFallbackError, if any."""
    if type(exc).__name__ == "MidStreamFallbackError":
        inner = getattr(exc, "original_exception", None)
        if isinstance(inner, BaseException) and inner is not exc:
            return inner
    return None


def _match(exc: BaseException) -> tuple[FailureClass, str, int | None]:
    status, msg = _status(exc), _message(exc)
    for m in MATCHERS:
        if m.test(exc, status, msg):
            return m.cls, m.name, status
    return FailureClass.UNKNOWN, "unknown", status


#: Statuses LiteLLM reports for a body it could not parse: 200 (its own ``APIError``), none, or the
#: 500 its ``APIConnectionError``/``InternalServerError`` default to when the OpenAI SDK or httpx
#: choked on the JSON. A 4xx with the decoder's words is a real error answer (e.g. a FastAPI 422
#: "JSON decode error" about *our* request body): not answered.
_PARSE_FAILURE_STATUSES = (None, 200, 500)
_CONVERTER = re.compile(CONVERTER_WORDS, re.IGNORECASE)


def _unreadable_answer(name: str, status: int | None, msg: str) -> bool:
    """A 200 whose body LiteLLM could not read: the malformed-response matcher fired with a status
    LiteLLM makes up for a parse failure, or with the wording of its converter, which only ever
    sees a successful body (Gemini's 422 is LiteLLM's own, not Google's); or any error that carries
    HTTP 200 itself (LiteLLM's Responses API client raises ``APIError`` with status 200 and the body
    when it cannot build a response from it)."""
    if status == 200:
        return True
    return name == MALFORMED and (status in _PARSE_FAILURE_STATUSES or _CONVERTER.search(msg) is not None)


def _stream_began(exc: BaseException) -> bool:
    """LiteLLM's ``MidStreamFallbackError`` says the stream had handed the caller a chunk before it
    broke (``is_pre_first_chunk`` False, set from its stream wrapper's ``sent_first_chunk``): the
    provider had answered HTTP 200 and was streaming. Gemini's errors before the first chunk carry
    ``is_pre_first_chunk=True``."""
    return getattr(exc, "is_pre_first_chunk", True) is False


def _diagnose_stream(outer: BaseException, inner: BaseException, began: bool) -> Failure:
    """A stream that broke: the wrapped (provider's) error says what went wrong. An error the table
    does not know is still the deployment failing mid-answer (HTTP 200 then an error event)."""
    cls, name, status = _match(inner)
    msg = _message(inner)
    unreadable = _unreadable_answer(name, status, msg)
    if cls in (FailureClass.UNKNOWN, FailureClass.BAD_REQUEST) and _status(inner) in (None, 200):
        cls, name = FailureClass.SERVER_ERROR, MID_STREAM
    else:
        name = f"mid-stream: {name}"
    # Answered: the stream had begun, or the error came inside a 200 body (no status of its own), or
    # a chunk of the 200 stream could not be read. Not answered: an error Gemini's stream wrapper
    # raises before the first chunk with the HTTP status Google sent (429, 500, 503).
    answered = began or name == MID_STREAM or unreadable
    return Failure(cls, name, status if status is not None else _status(outer),
                   retry_after(inner) if retry_after(outer) is None else retry_after(outer), msg, answered)


def diagnose(exc: BaseException) -> Failure:
    """Classify ``exc`` and say why (matcher name), with the provider status, ``retry_after_s`` and
    whether the provider had already answered (``answered``)."""
    inner = _wrapped(exc)
    if inner is not None:
        return _diagnose_stream(exc, inner, _stream_began(exc))
    cls, name, status = _match(exc)
    msg = _message(exc)
    return Failure(cls, name, status, retry_after(exc), msg, _unreadable_answer(name, status, msg))


def diagnose_broken_stream(exc: BaseException) -> Failure:
    """``diagnose`` for the provider's own error of a stream known to have begun (answered) before
    it broke, as if LiteLLM had wrapped it in ``MidStreamFallbackError`` after the first chunk.

    LiteLLM's Router reports such a failure to the failure log with the wrapper already removed, so
    the evidence that the stream had begun comes from elsewhere (the partial usage LiteLLM recovered
    from the chunks)."""
    inner = _wrapped(exc)
    return _diagnose_stream(exc, inner if inner is not None else exc, True)


def timed_out_after_sending(exc: BaseException) -> bool:
    """Whether ``exc`` is a read timeout: the request had been sent whole and the provider was
    working on it (and may bill it) when the client stopped waiting. LiteLLM keeps httpx's own
    error in the chain under its ``Timeout`` (``Timeout <- OpenAIError <- APITimeoutError <-
    httpx.ReadTimeout``, 1.110.2); a connect, pool or write timeout never delivered the request and
    is not one."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 16:
        seen.add(id(current))
        if isinstance(current, httpx.ReadTimeout):
            return True
        if isinstance(current, (httpx.ConnectTimeout, httpx.PoolTimeout, httpx.WriteTimeout)):
            return False
        current = current.__cause__ or current.__context__
    return False


def classify(exc: BaseException) -> FailureClass:
    """The :class:`FailureClass` of an exception LiteLLM raised (or one of ours)."""
    return diagnose(exc).cls


# -- retry-after -------------------------------------------------------------------------------------

_RETRY_IN = re.compile(r"(?:try again|retry) in (\d+(?:\.\d+)?)\s*(ms|s|m)\b", re.IGNORECASE)
_RETRY_DELAY = re.compile(r'"retryDelay"\s*:\s*"(\d+(?:\.\d+)?)s"')


def _headers(exc: BaseException) -> list[Mapping[str, Any]]:
    found = []
    for h in (getattr(exc, "litellm_response_headers", None), getattr(getattr(exc, "response", None), "headers", None)):
        if h is not None and hasattr(h, "get"):
            found.append(h)
    return found


def _header_seconds(headers: Mapping[str, Any], now: float) -> float | None:
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(float(ms) / 1000.0, 0.0)
        except (TypeError, ValueError):
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        try:
            when = email.utils.parsedate_to_datetime(str(value))
        except (TypeError, ValueError):
            return None
        return max(when.timestamp() - now, 0.0)
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def retry_after(exc: BaseException, now: float | None = None) -> float | None:
    """Seconds the provider asked us to wait: ``retry-after-ms`` / ``retry-after`` (seconds or an
    HTTP date) response headers first, else the message ("try again in 2s", Gemini's
    ``"retryDelay": "17s"``). ``None`` when the provider did not say."""
    now = time.time() if now is None else now
    for headers in _headers(exc):
        seconds = _header_seconds(headers, now)
        if seconds is not None:
            return seconds
    msg = str(exc)
    m = _RETRY_IN.search(msg)
    if m:
        value, unit = float(m.group(1)), m.group(2).lower()
        return value / 1000.0 if unit == "ms" else value * 60.0 if unit == "m" else value
    m = _RETRY_DELAY.search(msg)
    if m:
        return float(m.group(1))
    return None
