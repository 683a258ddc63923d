"""``failures.classify`` against what LiteLLM really raises.

1. Every *error* recording in ``../shared/provider-recordings`` is replayed through LiteLLM's real
   provider client with vcrpy (matched on method + path only: the host may be a gateway and the
   request body is ours, not the recorded one) and the exception LiteLLM raises is classified. The
   expected class is written out per file. Each case also checks that the replayed response really
   reached LiteLLM (the cassette was played and the recorded message is in the exception), so a
   replay miss — which LiteLLM would report as a connection error — cannot pass as a server error.
2. The stand-in's faults, every kind, every provider, streaming and not.
3. Table-level cases LiteLLM does not produce from a recording (timeouts, HTTP dates, our own
   validation error).

Each also checks ``Failure.answered`` (the provider had answered HTTP 200 when the attempt failed):
true only for a stream that broke after it began and a 200 LiteLLM could not read, never for an
error status, a timeout or a refused connection.
"""

from __future__ import annotations

import asyncio
import email.utils
import socket
from dataclasses import dataclass
from typing import Any

import httpx
import litellm
import pytest
import vcr
from litellm.exceptions import (
    APIError,
    BadRequestError,
    InternalServerError,
    MidStreamFallbackError,
    NotFoundError,
    RateLimitError,
    Timeout,
)
from shared_recordings import RECORDINGS, load, read_only_persister, require_recordings

from litellm_payg.adapter.failures import (
    FailureClass,
    InvalidResponseError,
    classify,
    diagnose,
    diagnose_broken_stream,
    retry_after,
)
from standin import StandIn

MESSAGES = [{"role": "user", "content": "hi"}]
NO_RETRIES: dict[str, Any] = {"num_retries": 0, "max_retries": 0}


@dataclass(frozen=True)
class Recorded:
    file: str
    model: str
    expected: FailureClass
    #: a fragment of the recorded error body: proves the recorded response is what LiteLLM raised
    says: str
    api_base: str | None = None
    stream: bool = False
    retry_after_s: float | None = None


RECORDED_ERRORS = [
    Recorded("anthropic/messages-400-prompt-too-long-via-pydantic-gateway.yaml", "anthropic/claude-sonnet-4-5",
             FailureClass.CONTEXT_WINDOW, "prompt is too long: 200027 tokens > 200000 maximum",
             api_base="https://gateway.pydantic.dev/proxy/anthropic"),
    Recorded("anthropic/messages-401-invalid-x-api-key.yaml", "anthropic/claude-haiku-4-5",
             FailureClass.AUTH, "invalid x-api-key"),
    Recorded("anthropic/messages-429-rate-limit-then-200.yaml", "anthropic/claude-haiku-4-5",
             FailureClass.RATE_LIMIT, "50,000 input tokens per minute", retry_after_s=4.0),
    Recorded("anthropic/messages-500-api-error.yaml", "anthropic/claude-haiku-4-5",
             FailureClass.SERVER_ERROR, "Internal server error"),
    # Gemini answers a bad key with 400 INVALID_ARGUMENT; LiteLLM maps it to AuthenticationError.
    Recorded("gemini/generateContent-400-api-key-invalid.yaml", "gemini/gemini-2.5-flash",
             FailureClass.AUTH, "API key not valid"),
    # Gemini 503 surfaces as InternalServerError 500 with no provider status: only the words say 503.
    Recorded("gemini/generateContent-503-model-overloaded.yaml", "gemini/gemini-2.5-pro",
             FailureClass.SERVER_ERROR, "The model is overloaded"),
    Recorded("groq/chat-401-invalid-api-key.yaml", "groq/llama-3.3-70b-versatile",
             FailureClass.AUTH, "Invalid API Key"),
    # LiteLLM leaves Mistral's context 400 a plain BadRequestError: detected from the message.
    Recorded("mistral/chat-400-context-too-large.yaml", "mistral/mistral-large-latest",
             FailureClass.CONTEXT_WINDOW, "too large for model with 131072 maximum context length"),
    Recorded("mistral/chat-401-unauthorized.yaml", "mistral/mistral-large-latest",
             FailureClass.AUTH, "Unauthorized"),
    Recorded("openai/chat-400-context-length-exceeded.yaml", "openai/gpt-4o-mini",
             FailureClass.CONTEXT_WINDOW, "maximum context length is 128000 tokens"),
    Recorded("openai/chat-401-invalid-api-key-stream.yaml", "openai/gpt-4o",
             FailureClass.AUTH, "Incorrect API key provided", stream=True),
    Recorded("openai/chat-401-invalid-api-key.yaml", "openai/gpt-4o",
             FailureClass.AUTH, "Incorrect API key provided"),
    # No Retry-After header and no "try again in" in the words: retry_after stays unknown.
    Recorded("openrouter/chat-429-upstream-rate-limited.yaml", "openrouter/google/gemini-2.0-flash-exp:free",
             FailureClass.RATE_LIMIT, "temporarily rate-limited upstream"),
]


def _error_files() -> set[str]:
    """Recordings with at least one 4xx/5xx interaction: every one of them must be in the table."""
    require_recordings()
    out = set()
    for path in RECORDINGS.glob("*/*.yaml"):
        _, responses = load(path)
        if any(r["status"]["code"] >= 400 for r in responses):
            out.add(str(path.relative_to(RECORDINGS)))
    return out


def test_every_error_recording_has_an_expected_class():
    assert _error_files() == {r.file for r in RECORDED_ERRORS}


@pytest.mark.parametrize("case", RECORDED_ERRORS, ids=lambda c: c.file)
async def test_recorded_error(case: Recorded):
    require_recordings()
    replayer = vcr.VCR(record_mode="none", match_on=("method", "path"))
    replayer.register_persister(read_only_persister())
    with replayer.use_cassette(str(RECORDINGS / case.file)) as cassette:
        with pytest.raises(Exception) as caught:
            r = await litellm.acompletion(model=case.model, messages=MESSAGES, api_key="sk-test-not-a-key",
                                          api_base=case.api_base, stream=case.stream, **NO_RETRIES)
            if case.stream:
                async for _ in r:
                    pass
        assert cassette.play_count == 1, "the recorded error must be what LiteLLM saw (one interaction played)"
    failure = diagnose(caught.value)
    assert case.says in failure.message, f"{type(caught.value).__name__}: {caught.value}"
    assert failure.cls is case.expected, f"{failure} from {type(caught.value).__name__}: {caught.value}"
    assert failure.retry_after_s == case.retry_after_s
    # a recorded error status is an error answer, not a 200 that failed afterwards: nothing billed
    assert not failure.answered, failure


# -- the stand-in's faults -------------------------------------------------------------------------

from test_standin import MODELS  # noqa: E402  (one model per provider, as the stand-in tests use)

STANDIN_FAULTS: dict[str, FailureClass] = {
    "server_error": FailureClass.SERVER_ERROR,
    "rate_limit": FailureClass.RATE_LIMIT,
    "auth": FailureClass.AUTH,
    "context_length": FailureClass.CONTEXT_WINDOW,
    "overloaded": FailureClass.SERVER_ERROR,  # Anthropic 529, Gemini 503, others 503
    "unavailable": FailureClass.SERVER_ERROR,
    "bad_gateway": FailureClass.SERVER_ERROR,  # plain-text HTML 502 from a proxy
}



async def _call(s: StandIn, provider: str, stream: bool, **kw: Any) -> Any:
    r = await litellm.acompletion(model=MODELS[provider], api_base=s.url(provider), api_key="sk-test",
                                  messages=MESSAGES, stream=stream, **NO_RETRIES, **kw)
    if stream:
        return [c async for c in r]
    return r


async def _failure_of(s: StandIn, provider: str, stream: bool, **kw: Any) -> BaseException:
    with pytest.raises(Exception) as caught:
        await _call(s, provider, stream, **kw)
    s.clear(provider)
    return caught.value


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("provider", list(MODELS))
@pytest.mark.parametrize("kind", list(STANDIN_FAULTS))
async def test_standin_fault(standin, kind, provider, stream):
    standin.fail(provider, kind, retry_after=7 if kind == "rate_limit" else None)
    exc = await _failure_of(standin, provider, stream)
    failure = diagnose(exc)
    assert failure.cls is STANDIN_FAULTS[kind], f"{failure.matcher}: {type(exc).__name__}: {exc}"
    assert not failure.answered, failure  # an error status before any answer
    if kind == "rate_limit":
        # the Retry-After header (7) wins over the message's "try again in 2s"
        assert failure.retry_after_s == 7.0
    if kind == "overloaded" and provider == "anthropic":
        assert failure.status == 529  # LiteLLM's status_code says 500; provider_status_code keeps 529


@pytest.mark.parametrize("provider", list(MODELS))
async def test_standin_stream_error_chunk_is_a_server_error(standin, provider):
    # HTTP 200, one good chunk, then an error event: LiteLLM raises MidStreamFallbackError.
    standin.fail(provider, "stream_error")
    exc = await _failure_of(standin, provider, stream=True)
    assert isinstance(exc, MidStreamFallbackError)
    assert classify(exc) is FailureClass.SERVER_ERROR, str(exc)
    # answered: LiteLLM had handed the caller a chunk (is_pre_first_chunk False) or the error came
    # inside the 200 body without a status of its own. Anthropic's error event follows only
    # message_start, before any chunk, and carries 529: from the exception alone it is not told
    # apart from an error status (the adapter sees LiteLLM's partial usage for it, see
    # tests/test_answered_failures.py)
    assert diagnose(exc).answered is (provider != "anthropic"), (diagnose(exc), exc.is_pre_first_chunk)


@pytest.mark.parametrize("provider", list(MODELS))
async def test_standin_garbled_json_is_a_server_error(standin, provider):
    # Non-streaming only: a garbled *stream* chunk is silently skipped by most LiteLLM clients.
    standin.fail(provider, "invalid_json")
    exc = await _failure_of(standin, provider, stream=False)
    assert classify(exc) is FailureClass.SERVER_ERROR, f"{type(exc).__name__}: {exc}"
    # HTTP 200 with half a body: LiteLLM reports 200, 500 or (Gemini) 422, all its own statuses
    failure = diagnose(exc)
    assert failure.matcher == "malformed provider response" and failure.answered, failure


async def test_standin_gemini_answer_without_usage_metadata_is_an_unreadable_answer(standin):
    # LiteLLM refuses a Gemini 200 without usageMetadata with a BadRequestError (422, its own): the
    # provider answered, the answer is unreadable, the deployment is at fault (not the request)
    standin.reply("gemini", usage=False)
    exc = await _failure_of(standin, "gemini", stream=False)
    assert "usageMetadata not found" in str(exc)
    failure = diagnose(exc)
    assert failure.cls is FailureClass.SERVER_ERROR and failure.matcher == "malformed provider response", failure
    assert failure.answered


@pytest.mark.parametrize("status,expected", [(403, FailureClass.AUTH), (402, FailureClass.AUTH),
                                             (404, FailureClass.BAD_REQUEST), (422, FailureClass.BAD_REQUEST),
                                             (504, FailureClass.SERVER_ERROR)])
@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
async def test_standin_other_statuses(standin, provider, status, expected):
    standin.fail(provider, status=status)
    exc = await _failure_of(standin, provider, stream=False)
    assert classify(exc) is expected, f"{type(exc).__name__} {getattr(exc, 'status_code', None)}: {exc}"
    assert not diagnose(exc).answered


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
async def test_standin_timeout_is_a_server_error(standin, provider):
    standin.delay(provider, 1500)
    exc = await _failure_of(standin, provider, stream=False, timeout=0.3)
    assert classify(exc) is FailureClass.SERVER_ERROR, f"{type(exc).__name__}: {exc}"
    assert diagnose(exc).matcher in ("timeout", "server status"), diagnose(exc)
    assert not diagnose(exc).answered


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini", "mistral"])
async def test_connection_refused_is_a_server_error(provider):
    # LiteLLM reports a refused connection as InternalServerError "Connection error." for OpenAI,
    # as APIConnectionError for others: both are the deployment being unreachable.
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(Exception) as caught:
        await litellm.acompletion(model=MODELS[provider], api_base=f"http://127.0.0.1:{port}/v1",
                                  api_key="sk-test", messages=MESSAGES, **NO_RETRIES)
    assert classify(caught.value) is FailureClass.SERVER_ERROR, f"{type(caught.value).__name__}: {caught.value}"
    assert not diagnose(caught.value).answered


# -- the table itself ----------------------------------------------------------------------------------


def _resp(status: int, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, headers=headers, request=httpx.Request("POST", "https://x.test/v1"))


@pytest.mark.parametrize("exc,expected", [
    (InvalidResponseError(["empty completion"], model="m"), FailureClass.INVALID_RESPONSE),
    (Timeout("timed out", model="m", llm_provider="openai"), FailureClass.SERVER_ERROR),
    (httpx.ReadTimeout("read timed out"), FailureClass.SERVER_ERROR),
    (httpx.ConnectError("refused"), FailureClass.SERVER_ERROR),
    (asyncio.TimeoutError(), FailureClass.SERVER_ERROR),
    (ConnectionResetError(), FailureClass.SERVER_ERROR),
    (APIError(502, "<html>502 Bad Gateway</html>", "openrouter", "m"), FailureClass.SERVER_ERROR),
    (APIError(200, "Unable to get json response - Expecting value: line 1", "deepseek", "m"), FailureClass.SERVER_ERROR),
    (BadRequestError("Error converting to valid response block=Unterminated string", "m", "gemini"),
     FailureClass.SERVER_ERROR),
    (BadRequestError("usageMetadata not found in completion_response. Got={'candidates': []}", "m", "gemini"),
     FailureClass.SERVER_ERROR),
    (BadRequestError("API key not valid. Please pass a valid API key.", "m", "vertex_ai"), FailureClass.AUTH),
    (BadRequestError("Prompt contains 150004 tokens and 0 draft tokens, too large for model with 131072 "
                     "maximum context length", "m", "mistral"), FailureClass.CONTEXT_WINDOW),
    (BadRequestError("messages: must alternate roles", "m", "anthropic"), FailureClass.BAD_REQUEST),
    (NotFoundError("model not found", "m", "openai"), FailureClass.BAD_REQUEST),
    (InternalServerError("Overloaded", "anthropic", "m", provider_status_code=529), FailureClass.SERVER_ERROR),
    (RateLimitError("Please reduce the prompt length or try again later", "anthropic", "m"), FailureClass.RATE_LIMIT),
    (ValueError("something else"), FailureClass.UNKNOWN),
    (KeyError("x"), FailureClass.UNKNOWN),
], ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v))
def test_table(exc, expected):
    assert classify(exc) is expected, diagnose(exc)


@pytest.mark.parametrize("exc,answered", [
    # a 200 LiteLLM could not read: its own statuses (200, none, 500) or its converter's words
    (APIError(200, "Unable to get json response - Expecting value: line 1", "deepseek", "m"), True),
    (InternalServerError("OpenAIException - Unterminated string starting at: line 1", "openai", "m"), True),
    (BadRequestError("Error converting to valid response block=Unterminated string", "m", "gemini"), True),
    (BadRequestError("usageMetadata not found in completion_response. Got={}", "m", "gemini"), True),
    # a real error answer that happens to carry the JSON decoder's words (a FastAPI 400/422 about *our*
    # request body): classified as malformed, but it is an error status, not an answer
    (BadRequestError('{"detail":[{"type":"json_invalid","msg":"JSON decode error","ctx":{"error":"Expecting value"}}]}',
                     "m", "openai"), False),
    (InternalServerError("Overloaded", "anthropic", "m", provider_status_code=529), False),
    (APIError(502, "<html>502 Bad Gateway</html>", "openrouter", "m"), False),
    (RateLimitError("quota", "gemini", "m"), False),
    (Timeout("timed out", model="m", llm_provider="openai"), False),
    (httpx.ConnectError("refused"), False),
    (InvalidResponseError(["empty completion"], model="m"), False),  # charged where it is rejected
    (ValueError("something else"), False),
], ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v))
def test_answered(exc, answered):
    assert diagnose(exc).answered is answered, diagnose(exc)


def test_midstream_wrapping_classifies_the_wrapped_error():
    # Gemini wraps an error answered before the first chunk, with Google's own status: not answered
    inner = RateLimitError("quota", "gemini", "m", response=_resp(429, {"retry-after": "3"}))
    wrapped = MidStreamFallbackError("stream broke", model="m", llm_provider="gemini", original_exception=inner,
                                     is_pre_first_chunk=True)
    failure = diagnose(wrapped)
    assert failure.cls is FailureClass.RATE_LIMIT and failure.matcher == "mid-stream: rate limit"
    assert failure.retry_after_s == 3.0
    assert not failure.answered
    # the same error after the caller got a chunk: the provider had answered 200
    began = MidStreamFallbackError("stream broke", model="m", llm_provider="gemini", original_exception=inner,
                                   generated_content="Hel", is_pre_first_chunk=False)
    assert diagnose(began).cls is FailureClass.RATE_LIMIT and diagnose(began).answered
    # an error event without a status of its own came inside the 200 body
    unknown_inner = APIError(None, "The server had an error", "groq", "m")  # type: ignore[arg-type]
    in_body = MidStreamFallbackError("x", model="m", llm_provider="groq", original_exception=unknown_inner,
                                     is_pre_first_chunk=True)
    assert classify(in_body) is FailureClass.SERVER_ERROR
    assert diagnose(in_body).matcher == "mid-stream error" and diagnose(in_body).answered
    assert classify(MidStreamFallbackError("x", model="m", llm_provider="groq")) is FailureClass.SERVER_ERROR


def test_a_broken_stream_reported_unwrapped():
    """LiteLLM's Router logs a stream's failure with the provider's own error, unwrapped:
    ``diagnose_broken_stream`` reads it as the answered mid-stream failure it was."""
    failure = diagnose_broken_stream(APIError(None, "The server had an error", "openai", "m"))  # type: ignore[arg-type]
    assert failure.cls is FailureClass.SERVER_ERROR and failure.matcher == "mid-stream error" and failure.answered
    failure = diagnose_broken_stream(InternalServerError("Overloaded", "anthropic", "m", provider_status_code=529))
    assert failure.matcher == "mid-stream: server status" and failure.status == 529 and failure.answered


def test_retry_after_sources():
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 12, usegmt=True)
    assert retry_after(RateLimitError("x", "p", "m", response=_resp(429, {"retry-after": date})), now=now) == 12.0
    assert retry_after(RateLimitError("x", "p", "m", response=_resp(429, {"retry-after-ms": "250",
                                                                          "retry-after": "9"}))) == 0.25
    assert retry_after(RateLimitError("Please try again in 20ms.", "p", "m")) == 0.02
    assert retry_after(RateLimitError("Please try again in 1.5s.", "p", "m")) == 1.5
    assert retry_after(RateLimitError('quota {"retryDelay": "17s"}', "p", "m")) == 17.0
    assert retry_after(RateLimitError("slow down", "p", "m")) is None
    assert retry_after(ValueError("no headers at all")) is None


def test_counts_against_deployment():
    assert {c for c in FailureClass if c.counts_against_deployment} == {
        FailureClass.RATE_LIMIT, FailureClass.SERVER_ERROR, FailureClass.AUTH, FailureClass.INVALID_RESPONSE}


@pytest.mark.parametrize("message", [
    "OpenAIException - Empty or invalid response from LLM endpoint. Received: 'data: {}'. Check the reverse proxy",
    "Invalid response object Traceback (most recent call last): ...",
    "Unable to parse response. Original response: data: {",
    "Failed to parse Clarifai response: Expecting value",
    "Invalid JSON response: <html>",
    "Error parsing response: x, status_code=200",
])
@pytest.mark.parametrize("make", [
    lambda m: litellm.InternalServerError(message=m, llm_provider="openai", model="gpt-4o-mini"),
    lambda m: litellm.APIConnectionError(message=m, llm_provider="openai", model="gpt-4o-mini"),
], ids=["InternalServerError", "APIConnectionError"])
def test_litellm_wordings_for_an_answer_it_could_not_read_are_answered(message, make):
    """LiteLLM's own words for a provider answer it failed to read follow a call the provider billed
    (e.g. the SSE stream ``extra_body: {"stream": true}`` asks for, read as JSON): answered, so the
    attempt is charged. Its statuses for them are its own (500)."""
    failure = diagnose(make(message))
    assert failure.matcher == "malformed provider response" and failure.answered, failure


def test_a_client_error_status_with_parse_words_is_not_an_answer():
    exc = litellm.BadRequestError(message="Failed to parse request response body", llm_provider="openai", model="m")
    assert not diagnose(exc).answered
