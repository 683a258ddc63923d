"""The stand-in provider: fault schedule, hit counters, and every provider through LiteLLM's real clients."""

from __future__ import annotations

import json
import time

import httpx
import litellm
import pytest

from litellm.exceptions import MidStreamFallbackError

from standin import FAULT_KINDS, PROVIDERS, StandIn

MODELS = {
    "openai": "openai/gpt-4o-mini",
    "deepseek": "deepseek/deepseek-chat",
    "mistral": "mistral/mistral-large-latest",
    "groq": "groq/openai/gpt-oss-120b",
    "openrouter": "openrouter/openai/gpt-5-mini",
    "anthropic": "anthropic/claude-haiku-4-5",
    "gemini": "gemini/gemini-2.5-flash",
}
MESSAGES = [{"role": "user", "content": "one two three four five"}]



def _post(s: StandIn, provider: str, model: str = "m", **body):
    if provider == "gemini":
        url = f"{s.url('gemini')}/models/{model}:generateContent"
        payload = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}], **body}
    elif provider == "anthropic":
        url = f"{s.url('anthropic')}/v1/messages"
        payload = {"model": model, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], **body}
    else:
        url = f"{s.url(provider)}/chat/completions"
        payload = {"model": model, "messages": [{"role": "user", "content": "hi"}], **body}
    return httpx.post(url, json=payload, timeout=10)


async def _call(s: StandIn, provider: str, *, stream: bool = False, **kw):
    r = await litellm.acompletion(model=MODELS[provider], api_base=s.url(provider), api_key="sk-test",
                                  messages=MESSAGES, stream=stream, num_retries=0, max_retries=0, **kw)
    if not stream:
        return r
    chunks = [c async for c in r]
    return litellm.stream_chunk_builder(chunks, messages=MESSAGES)


def _model_cost(provider: str, prompt: int, completion: int, cached: int = 0, cache_write: int = 0) -> float:
    info = litellm.model_cost[MODELS[provider]] if MODELS[provider] in litellm.model_cost else \
        litellm.model_cost[MODELS[provider].split("/", 1)[1]]
    read = info.get("cache_read_input_token_cost") or info["input_cost_per_token"]
    write = info.get("cache_creation_input_token_cost") or info["input_cost_per_token"]
    return ((prompt - cached - cache_write) * info["input_cost_per_token"] + cached * read
            + cache_write * write + completion * info["output_cost_per_token"])


# ------------------------------------------------------------------ schedule and counters


def test_fail_times_then_recover(standin):
    standin.fail("deepseek", status=500, times=2)
    assert [_post(standin, "deepseek").status_code for _ in range(3)] == [500, 500, 200]
    assert standin.hits("deepseek") == 3
    assert [h.outcome for h in standin.requests("deepseek")] == ["server_error", "server_error", "ok"]


def test_model_fault_wins_over_provider_fault_and_queue_is_fifo(standin):
    standin.fail("groq", status=429, times=1)
    standin.fail("groq", status=401, times=1)
    standin.fail("groq", status=500, model="a")
    assert _post(standin, "groq", model="a").status_code == 500
    assert _post(standin, "groq", model="b").status_code == 429
    assert _post(standin, "groq", model="a").status_code == 401
    assert _post(standin, "groq", model="a").status_code == 200
    assert standin.hits("groq", model="a") == 3 and standin.hits("groq", model="b") == 1


def test_fail_until_cleared(standin):
    standin.fail("mistral", "unavailable", times=None)
    assert {_post(standin, "mistral").status_code for _ in range(4)} == {503}
    assert standin.pending("mistral")[0][1] is None
    standin.clear("mistral")
    assert _post(standin, "mistral").status_code == 200


def test_hits_by_path_and_reset(standin):
    _post(standin, "gemini", model="gemini-2.5-flash")
    _post(standin, "anthropic")
    assert standin.hits("gemini", path="/gemini/v1beta/models/gemini-2.5-flash:generateContent") == 1
    assert standin.hits("gemini", model="gemini-2.5-flash") == 1
    assert standin.hits() == 2
    standin.reset()
    assert standin.hits() == 0


def test_aliases_have_their_own_schedule(standin):
    with StandIn(aliases={"deepseek-eu": "deepseek"}) as s:
        s.fail("deepseek", status=500)
        assert s.url("deepseek-eu").endswith("/deepseek-eu/beta")
        assert httpx.post(f"{s.url('deepseek-eu')}/chat/completions", json={"model": "m", "messages": []}).status_code == 200
        assert s.hits("deepseek") == 0 and s.hits("deepseek-eu") == 1


def test_bad_arguments_name_the_valid_values(standin):
    with pytest.raises(ValueError, match="expected one of .*server_error"):
        standin.fail("deepseek", "explode")
    with pytest.raises(ValueError, match="unknown provider 'cohere'"):
        standin.fail("cohere", status=500)
    with pytest.raises(ValueError, match="delay_ms"):
        standin.fail("deepseek", "slow")
    with pytest.raises(TypeError, match="unknown Reply field"):
        standin.reply("deepseek", txt="x")
    assert set(FAULT_KINDS) >= {"rate_limit", "bad_gateway", "stream_error"}


def test_rate_limit_sends_retry_after(standin):
    standin.fail("openai", "rate_limit", retry_after=7)
    r = _post(standin, "openai")
    assert r.status_code == 429 and r.headers["retry-after"] == "7"
    assert r.json()["error"]["code"] == "rate_limit_exceeded"


@pytest.mark.parametrize("provider,status,shape", [
    ("anthropic", 529, lambda b: b["type"] == "error" and b["error"]["type"] == "overloaded_error"),
    ("gemini", 503, lambda b: b["error"]["status"] == "UNAVAILABLE"),
    ("deepseek", 503, lambda b: set(b["error"]) == {"message", "type", "param", "code"}),
])
def test_overloaded_status_and_shape(standin, provider, status, shape):
    standin.fail(provider, "overloaded")
    r = _post(standin, provider)
    assert r.status_code == status and shape(r.json())


def test_bad_gateway_is_plain_text(standin):
    standin.fail("anthropic", status=502)
    r = _post(standin, "anthropic")
    assert r.status_code == 502 and r.headers["content-type"] == "text/html" and "nginx" in r.text


def test_invalid_json_body(standin):
    standin.fail("openrouter", "invalid_json")
    r = _post(standin, "openrouter")
    assert r.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        r.json()


def test_slow_delays_the_answer(standin):
    standin.delay("mistral", 300)
    t0 = time.perf_counter()
    assert _post(standin, "mistral").status_code == 200
    assert time.perf_counter() - t0 >= 0.3


def test_slow_first_chunk_delays_the_body_not_the_headers(standin):
    standin.delay("groq", 400, first_chunk=True)
    url = f"{standin.url('groq')}/chat/completions"
    with httpx.stream("POST", url, json={"model": "m", "messages": [], "stream": True}, timeout=10) as r:
        t0 = time.perf_counter()
        assert r.status_code == 200  # headers arrived already
        first = next(r.iter_lines())
        assert time.perf_counter() - t0 >= 0.35 and first.startswith("data: ")


def test_default_usage_rule(standin):
    body = _post(standin, "openai").json()  # one word of prompt ("hi"), reply of 4 words
    assert (body["usage"]["prompt_tokens"], body["usage"]["completion_tokens"]) == (1, 4)


# ------------------------------------------------------------------ through LiteLLM's real clients


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_litellm_reads_text_usage_and_cost(standin, provider):
    standin.reply(provider, text="Plain answer.", prompt_tokens=1000, completion_tokens=200, cached_tokens=400,
                  cost=0.0123)
    r = await _call(standin, provider)
    assert r.choices[0].message.content == "Plain answer."
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (1000, 200)
    cost = r._hidden_params["response_cost"]
    if provider == "openrouter":
        assert cost == pytest.approx(0.0123)  # LiteLLM takes OpenRouter's usage.cost as is
    elif provider in ("mistral", "groq"):
        # Neither reports cached tokens on the wire: all 1000 prompt tokens are billed in full.
        assert cost == pytest.approx(_model_cost(provider, 1000, 200))
    else:
        assert r.usage.prompt_tokens_details.cached_tokens == 400
        assert cost == pytest.approx(_model_cost(provider, 1000, 200, cached=400))
    assert standin.hits(provider) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_litellm_stream(standin, provider):
    # Groq's counts arrive only under x_groq.usage: LiteLLM reads them through
    # litellm_fixes.groq_stream_usage (applied for the whole suite in conftest, as attach does).
    standin.reply(provider, text="Streamed reply in words.", prompt_tokens=50, completion_tokens=5)
    r = await _call(standin, provider, stream=True, stream_options={"include_usage": True})
    assert r.choices[0].message.content == "Streamed reply in words."
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (50, 5)
    assert standin.requests(provider)[0].stream


async def test_groq_stream_usage_without_include_usage(standin):
    # Groq reports x_groq.usage even when the client did not ask for stream usage.
    standin.reply("groq", text="Streamed reply in words.", prompt_tokens=5000, completion_tokens=900)
    r = await _call(standin, "groq", stream=True)
    assert r.choices[0].message.content == "Streamed reply in words."
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (5000, 900)


async def test_anthropic_cache_write_and_read(standin):
    standin.reply("anthropic", prompt_tokens=2000, cached_tokens=1500, cache_write_tokens=300, completion_tokens=10)
    r = await _call(standin, "anthropic")
    wire = _post(standin, "anthropic").json()["usage"]
    assert (wire["input_tokens"], wire["cache_read_input_tokens"], wire["cache_creation_input_tokens"]) == (200, 1500, 300)
    assert r.usage.prompt_tokens == 2000
    assert r._hidden_params["response_cost"] == pytest.approx(
        _model_cost("anthropic", 2000, 10, cached=1500, cache_write=300))


async def test_gemini_thoughts_count_as_output(standin):
    standin.reply("gemini", prompt_tokens=10, completion_tokens=120, reasoning_tokens=100)
    r = await _call(standin, "gemini")
    assert r.usage.completion_tokens == 120
    assert r.usage.completion_tokens_details.reasoning_tokens == 100


@pytest.mark.parametrize("provider,kind,exc", [
    ("deepseek", "server_error", litellm.InternalServerError),
    ("deepseek", "rate_limit", litellm.RateLimitError),
    ("mistral", "auth", litellm.AuthenticationError),
    ("gemini", "auth", litellm.AuthenticationError),  # Google answers a bad key with 400
    ("anthropic", "context_length", litellm.ContextWindowExceededError),
    ("openai", "context_length", litellm.ContextWindowExceededError),
    ("groq", "bad_gateway", litellm.BadGatewayError),
    ("anthropic", "overloaded", litellm.InternalServerError),  # 529 is mapped to a 500-class error
])
async def test_litellm_maps_faults(standin, provider, kind, exc):
    standin.fail(provider, kind)
    with pytest.raises(exc):
        await _call(standin, provider)
    assert standin.hits(provider) == 1  # num_retries=0: exactly one attempt reached the provider


async def test_mistral_context_length_is_not_a_context_window_error(standin):
    # Wire quirk pinned: Mistral's 400 "too large for model" body is not recognised by LiteLLM
    # 1.110.2, so context_window_fallbacks do not fire for Mistral — only a plain BadRequestError.
    standin.fail("mistral", "context_length")
    with pytest.raises(litellm.BadRequestError) as info:
        await _call(standin, "mistral")
    assert not isinstance(info.value, litellm.ContextWindowExceededError)


@pytest.mark.parametrize("provider", ["deepseek", "anthropic", "openai"])
async def test_stream_error_mid_stream(standin, provider):
    standin.fail(provider, "stream_error")
    with pytest.raises(MidStreamFallbackError):
        await _call(standin, provider, stream=True)


@pytest.mark.parametrize("provider", ["deepseek", "anthropic", "gemini"])
async def test_empty_and_length(standin, provider):
    standin.fail(provider, "empty")
    standin.fail(provider, "length")
    empty = await _call(standin, provider)
    assert not empty.choices[0].message.content and empty.usage.completion_tokens == 0
    cut = await _call(standin, provider)
    assert cut.choices[0].finish_reason == "length"


async def test_acompletion_num_retries_does_not_retry(standin):
    # Quirk pinned: in LiteLLM 1.110.2 a bare litellm.acompletion(num_retries=2) sends ONE request and
    # raises, while its error text claims "LiteLLM Retried: 2 times". Retrying is the Router's job;
    # our failover must not count on SDK-level num_retries.
    standin.fail("deepseek", status=503, times=2)
    with pytest.raises(litellm.ServiceUnavailableError, match="Retried: 2 times"):
        await litellm.acompletion(model=MODELS["deepseek"], api_base=standin.url("deepseek"), api_key="sk-test",
                                  messages=MESSAGES, num_retries=2)
    assert [h.outcome for h in standin.requests("deepseek")] == ["unavailable"]
