"""Conformance (a): real provider recordings, replayed through LiteLLM *and* the plugin, settle the
exact cost.

Every recording in ``../shared/provider-recordings/`` (real HTTP traffic captured by other projects'
test suites; see its SOURCES.md) is replayed through a LiteLLM ``Router`` with one deployment for the
recording's model, governed by ``litellm_payg.attach`` with a ``memory://`` ledger. For each recorded
request:

* a **success** must settle exactly one ledger record whose amount equals, to 1e-9 USD, the cost of
  the *recorded* usage — computed here independently of the plugin: ``litellm.completion_cost`` on
  the response LiteLLM returned (after checking that LiteLLM's token counts are the ones on the wire),
  or, for a model LiteLLM's bundled price map does not know, plain arithmetic on the usage parsed
  from the recorded body with the price this file gives the deployment;
* an **error** must raise with the recorded HTTP status and charge nothing: no record, nothing left
  reserved.

The recordings are read in place (never copied into this repo). vcrpy matches on method + path only
(hosts differ per provider ``api_base``; request bodies differ between LiteLLM versions).
``EXPECTATIONS`` lists every recording: a new file in the folder without an entry fails
``test_every_recording_has_an_expectation``.

Two things stand between LiteLLM 1.110.2 and three of the recordings, and both are explicit here:

* Groq's older formats (no ``service_tier``; usage only under ``x_groq.usage`` in streams) hit
  LiteLLM defects that ``litellm_payg.adapter.litellm_fixes`` repairs when the plugin is attached, as it is
  for users; ``tests/test_litellm_fixes.py`` pins each defect in LiteLLM's own code.
* The Gemini stream was recorded without ``?alt=sse`` and LiteLLM always asks for SSE, so the player
  re-frames that one body as the SSE stream Gemini sends for such a request
  (:func:`as_requested_with_sse`; the objects and their usage are untouched, and the expected cost is
  computed from the body as recorded).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

import litellm
import pytest
import vcr
import vcr.errors
from litellm import Router
from shared_recordings import (
    RECORDINGS,
    body_text,
    load,
    read_only_persister,
    require_recordings,
)

import litellm_payg

MESSAGES = [{"role": "user", "content": "Replay of a recorded request."}]
TOLERANCE_USD = 1e-9
GROUP = "conformance"


# -- the expectations, one per recording ---------------------------------------------------------


@dataclass(frozen=True)
class Given:
    """A per-token price this file gives a deployment LiteLLM cannot price (not in its bundled map).
    It goes into the deployment's ``litellm_params`` (where LiteLLM's response_cost reads it)."""

    input: float
    output: float
    cache_write: float | None = None
    cache_read: float | None = None

    def params(self) -> dict[str, float]:
        out = {"input_cost_per_token": self.input, "output_cost_per_token": self.output}
        if self.cache_write is not None:
            out["cache_creation_input_token_cost"] = self.cache_write
        if self.cache_read is not None:
            out["cache_read_input_token_cost"] = self.cache_read
        return out


@dataclass(frozen=True)
class Expect:
    model: str  # the deployment's litellm_params.model
    wire: str  # openai | anthropic | gemini: how to read the usage from the recorded body
    outcomes: tuple[int, ...]  # the HTTP status each replayed request gets, in order
    stream: bool = False
    api_base: str | None = None
    price: Given | None = None  # None: LiteLLM's bundled price map prices it
    raised_as: int | None = None  # the status_code LiteLLM's exception mapping gives a recorded error
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def successes(self) -> int:
        return sum(1 for s in self.outcomes if s == 200)


DEEPSEEK_BASE = "https://api.deepseek.com"  # recorded without LiteLLM's default /beta path prefix
# Prices for models absent from LiteLLM 1.110.2's bundled map (provider list prices at recording time).
CLAUDE_35_SONNET = Given(3e-06, 1.5e-05, cache_write=3.75e-06, cache_read=3e-07)
CLAUDE_SONNET_4 = Given(3e-06, 1.5e-05, cache_write=3.75e-06, cache_read=3e-07)
GROQ_LLAMA3_8B = Given(5e-08, 8e-08)
GROQ_LLAMA3_70B = Given(5.9e-07, 7.9e-07)
OPENROUTER_GPT5_MINI = Given(2.5e-07, 2e-06)  # OpenRouter's reported usage.cost is checked against it
OPENROUTER_O3 = Given(2e-06, 8e-06)
OPENROUTER_FREE = Given(0.0, 0.0)

EXPECTATIONS: dict[str, Expect] = {
    # ---- successes
    "openai/chat-cached-nonstream-gpt41.yaml": Expect("openai/gpt-4.1", "openai", (200, 200)),
    "openai/chat-o3mini-reasoning-tokens.yaml": Expect("openai/o3-mini", "openai", (200,)),
    "anthropic/messages-prompt-cache-write-then-read-gzip.yaml": Expect(
        "anthropic/claude-3-5-sonnet-20240620", "anthropic", (200, 200), price=CLAUDE_35_SONNET),
    "anthropic/messages-stream-thinking.yaml": Expect(
        "anthropic/claude-sonnet-4-5", "anthropic", (200,), stream=True,
        extra={"thinking": {"type": "enabled", "budget_tokens": 1024}, "max_tokens": 8192}),
    "deepseek/chat-reasoner-cache-hit-miss.yaml": Expect(
        "deepseek/deepseek-reasoner", "openai", (200, 200, 200), api_base=DEEPSEEK_BASE),
    "deepseek/chat-reasoner-stream.yaml": Expect(
        "deepseek/deepseek-reasoner", "openai", (200,), stream=True, api_base=DEEPSEEK_BASE),
    "gemini/generateContent-implicit-cache-multi-turn.yaml": Expect(
        "gemini/gemini-2.5-flash", "gemini", (200,) * 6),
    "gemini/generateContent-thinking-tokens.yaml": Expect("gemini/gemini-2.5-flash", "gemini", (200,)),
    "gemini/streamGenerateContent-json-array-gzip.yaml": Expect(
        # LiteLLM asks for v1alpha on "latest"/3.x models; the recording is v1beta (api_base pins it).
        "gemini/gemini-flash-latest", "gemini", (200,), stream=True,
        # Recorded without ?alt=sse (a JSON array); replayed as the SSE stream LiteLLM asks for.
        api_base="https://generativelanguage.googleapis.com/v1beta"),
    "groq/chat-nonstream-gzip.yaml": Expect(
        # Groq's 2024 format (no service_tier): read thanks to litellm_fixes.groq_service_tier
        "groq/llama3-8b-8192", "openai", (200,) * 6, price=GROQ_LLAMA3_8B),
    "groq/chat-stream-x_groq-usage.yaml": Expect(
        # usage only under x_groq.usage: read thanks to litellm_fixes.groq_stream_usage
        "groq/llama3-8b-8192", "openai", (200,), stream=True, price=GROQ_LLAMA3_8B),
    "mistral/chat-nonstream-gzip.yaml": Expect("mistral/mistral-tiny", "openai", (200,)),
    "openrouter/chat-usage-with-cost.yaml": Expect(
        "openrouter/openai/gpt-5-mini", "openai", (200, 200), price=OPENROUTER_GPT5_MINI),
    "openrouter/chat-stream-reasoning-with-cost.yaml": Expect(
        "openrouter/openai/o3", "openai", (200,), stream=True, price=OPENROUTER_O3),
    "openrouter/chat-nonstream-keepalive-whitespace.yaml": Expect(
        # In LiteLLM's map under "openrouter/deepseek/deepseek-r1", but get_model_info() (which the
        # plugin's price lookup and quality_floor use) does not resolve it: priced explicitly.
        "openrouter/deepseek/deepseek-r1", "openai", (200,), price=Given(5.5e-07, 2.19e-06)),
    # ---- errors (a 429-then-200 recording is both: the first request fails, the second succeeds)
    "anthropic/messages-429-rate-limit-then-200.yaml": Expect("anthropic/claude-haiku-4-5", "anthropic", (429, 200)),
    "openai/chat-401-invalid-api-key.yaml": Expect("openai/gpt-4o", "openai", (401,)),
    "openai/chat-401-invalid-api-key-stream.yaml": Expect("openai/gpt-4o", "openai", (401,), stream=True),
    "openai/chat-400-context-length-exceeded.yaml": Expect("openai/gpt-4o-mini", "openai", (400,)),
    "anthropic/messages-401-invalid-x-api-key.yaml": Expect(
        "anthropic/claude-sonnet-4-0", "anthropic", (401,), price=CLAUDE_SONNET_4),
    "anthropic/messages-500-api-error.yaml": Expect("anthropic/claude-sonnet-4-5-20250929", "anthropic", (500,)),
    "anthropic/messages-400-prompt-too-long-via-pydantic-gateway.yaml": Expect(
        "anthropic/claude-haiku-4-5", "anthropic", (400,), api_base="https://gateway.pydantic.dev/proxy/anthropic"),
    # LiteLLM maps Gemini's 400 API_KEY_INVALID to AuthenticationError (401) and its 503 to
    # InternalServerError (500): the exception's status_code is LiteLLM's, not the wire's.
    "gemini/generateContent-400-api-key-invalid.yaml": Expect("gemini/gemini-2.5-flash", "gemini", (400,), raised_as=401),
    "gemini/generateContent-503-model-overloaded.yaml": Expect("gemini/gemini-2.5-pro", "gemini", (503,), raised_as=500),
    "groq/chat-401-invalid-api-key.yaml": Expect("groq/llama3-70b-8192", "openai", (401,), price=GROQ_LLAMA3_70B),
    "mistral/chat-401-unauthorized.yaml": Expect("mistral/mistral-large-latest", "openai", (401,)),
    "mistral/chat-400-context-too-large.yaml": Expect("mistral/mistral-small-latest", "openai", (400,)),
    "openrouter/chat-429-upstream-rate-limited.yaml": Expect(
        "openrouter/google/gemini-2.0-flash-exp:free", "openai", (429, 429, 429), price=OPENROUTER_FREE),
}


def _params() -> list[Any]:
    out = []
    for name, exp in sorted(EXPECTATIONS.items()):
        out.append(pytest.param(name, id=name.removesuffix(".yaml")))
    return out


# -- reading recordings in place -----------------------------------------------------------------


def as_requested_with_sse(request: Any, response: dict[str, Any]) -> None:
    """Re-frame a Gemini stream recorded *without* ``?alt=sse`` as the SSE stream Gemini sends
    when a client asks ``?alt=sse``, as LiteLLM always does.

    Without ``alt=sse`` Gemini streams one JSON array of ``GenerateContentResponse`` objects; with
    it, the same objects, one per ``data:`` event (Gemini's documented REST behaviour, and the shape
    our stand-in is checked against in ``test_standin_conformance``). The recorded objects go
    through unchanged, usage included; only the framing changes, and the recorded request is
    given ``alt=sse`` so the ``framing`` matcher still requires LiteLLM to ask for SSE. A JSON-array
    body is otherwise a request LiteLLM never makes: replayed as recorded it reads as an empty
    stream (``test_gemini_json_array_framing_is_what_litellm_cannot_read`` pins that)."""
    if not request.path.endswith(":streamGenerateContent") or ("alt", "sse") in request.query:
        return
    text = body_text(response)
    if not text.lstrip().startswith("["):
        return
    objects = json.loads(text)
    response["body"]["string"] = "".join(f"data: {json.dumps(o, separators=(',', ':'))}\r\n\r\n" for o in objects).encode()
    response["headers"] = {k: v for k, v in response["headers"].items() if k.lower() not in ("content-encoding", "content-length")}
    response["headers"]["Content-Type"] = ["text/event-stream"]
    request.uri = request.uri + ("&" if "?" in request.uri else "?") + "alt=sse"


def _same_framing(incoming: Any, recorded: Any) -> None:
    """vcrpy matcher: an SSE request is answered only by an SSE recording, and vice versa."""
    assert (("alt", "sse") in incoming.query) == (("alt", "sse") in recorded.query)


def _vcr(raw: bool = False, match_on: tuple[str, ...] = ("method", "path", "framing")) -> vcr.VCR:
    """A player for the recordings, in place: Gemini streams recorded without ``?alt=sse`` are
    re-framed as SSE (:func:`as_requested_with_sse`) unless ``raw``."""
    player = vcr.VCR(record_mode="none", match_on=match_on)
    player.register_matcher("framing", _same_framing)
    player.register_persister(read_only_persister(None if raw else as_requested_with_sse))
    return player


@dataclass
class WireUsage:
    """Usage as the provider put it on the wire (LiteLLM-independent)."""

    prompt: int  # every input token: uncached + cache reads + cache writes (+ Gemini tool-use prompt)
    completion: int  # every output token, reasoning/thinking included
    cache_read: int = 0
    cache_write: int = 0
    reported_cost: float | None = None  # OpenRouter's own usage.cost

    def priced(self, price: Given) -> float:
        uncached = self.prompt - self.cache_read - self.cache_write
        return (uncached * price.input + self.cache_read * (price.cache_read if price.cache_read is not None else price.input)
                + self.cache_write * (price.cache_write if price.cache_write is not None else price.input)
                + self.completion * price.output)


def _json_objects(text: str) -> list[dict[str, Any]]:
    stripped = text.strip()
    if stripped.startswith(("{", "[")):
        parsed = json.loads(stripped)
        return parsed if isinstance(parsed, list) else [parsed]
    out = []
    for line in text.splitlines():
        if line.startswith("data:") and line[5:].strip() not in ("", "[DONE]"):
            out.append(json.loads(line[5:]))
    return out


def wire_usage(wire: str, text: str) -> WireUsage:
    objects = _json_objects(text)
    if wire == "openai":
        usage = next(u for o in reversed(objects) if (u := o.get("usage") or (o.get("x_groq") or {}).get("usage")))
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or usage.get("prompt_cache_hit_tokens") or 0
        return WireUsage(usage["prompt_tokens"], usage["completion_tokens"], cache_read=cached,
                         reported_cost=usage.get("cost"))
    if wire == "anthropic":
        usage: dict[str, Any] = {}
        for o in objects:
            usage.update((o.get("message") or {}).get("usage") or {})
            usage.update({k: v for k, v in (o.get("usage") or {}).items() if v is not None})
        cr, cw = usage.get("cache_read_input_tokens") or 0, usage.get("cache_creation_input_tokens") or 0
        return WireUsage(usage["input_tokens"] + cr + cw, usage["output_tokens"], cache_read=cr, cache_write=cw)
    if wire == "gemini":
        meta = next(o["usageMetadata"] for o in reversed(objects) if o.get("usageMetadata"))
        return WireUsage(
            meta.get("promptTokenCount", 0) + meta.get("toolUsePromptTokenCount", 0),
            meta.get("candidatesTokenCount", 0) + meta.get("thoughtsTokenCount", 0),
            cache_read=meta.get("cachedContentTokenCount", 0),
        )
    raise AssertionError(f"unknown wire format {wire!r}")


# -- the replay ----------------------------------------------------------------------------------


def _policy(exp: Expect) -> dict[str, Any]:
    return {
        "version": 1,
        "ledger": "memory://",
        "routes": {GROUP: [{"quality_floor": {"min_quality": 0}}]},  # governed: reserve, settle, record
        "models": {exp.model: {"quality": 1}},
    }


def _router(exp: Expect) -> Router:
    params: dict[str, Any] = {"model": exp.model, "api_key": "sk-test-not-a-key"}
    if exp.api_base:
        params["api_base"] = exp.api_base
    if exp.price:
        params.update(exp.price.params())
    return Router(model_list=[{"model_name": GROUP, "litellm_params": params, "model_info": {"id": "recorded"}}],
                  num_retries=0)


async def _settled_since(engine: Any, before: int, want: int, timeout: float = 10.0) -> list[Any]:
    """LiteLLM's callbacks run on its background worker: wait until nothing is reserved and the
    expected number of records has landed (or the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        records = engine.spend.ledger.records()[before:]
        if engine.spend.ledger.open_reservations() == 0 and len(records) >= want:
            return records
        if time.monotonic() > deadline:
            return records
        await asyncio.sleep(0.02)


async def _call(router: Router, exp: Expect) -> Any:
    kwargs: dict[str, Any] = {"model": GROUP, "messages": MESSAGES, **exp.extra}
    if exp.stream:
        stream = await router.acompletion(stream=True, stream_options={"include_usage": True}, **kwargs)
        chunks = [chunk async for chunk in stream]
        return litellm.stream_chunk_builder(chunks, messages=MESSAGES)
    return await router.acompletion(**kwargs)


def _expected_cost(exp: Expect, response: Any, wire: WireUsage) -> float:
    if exp.price is not None:
        # LiteLLM cannot price this model from its bundled map: the price given to the deployment
        # above, applied to the recorded usage.
        return wire.priced(exp.price)
    # LiteLLM prices it: its own cost function on the response it parsed, once the token counts it
    # parsed are checked against the wire (so a mis-parse cannot make both sides agree on a wrong cost).
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (wire.prompt, wire.completion)
    cached = getattr(response.usage.prompt_tokens_details, "cached_tokens", None) or 0
    assert cached == wire.cache_read
    return litellm.completion_cost(completion_response=response)


@pytest.mark.parametrize("name", _params())
async def test_recording_settles_its_exact_cost(name: str) -> None:
    require_recordings()
    exp = EXPECTATIONS[name]
    player = _vcr()
    _, responses = load(name)
    served = [r for r in responses if r["status"]["code"] in exp.outcomes]  # drops Gemini's fileSearch calls etc.
    router = _router(exp)
    engine = litellm_payg.attach(router, _policy(exp))
    try:
        with player.use_cassette(str(RECORDINGS / name)) as cassette:
            for i, status in enumerate(exp.outcomes):
                before = len(engine.spend.ledger.records())
                if status != 200:
                    with pytest.raises(Exception) as caught:
                        await _call(router, exp)
                    raised = exp.raised_as or status
                    assert getattr(caught.value, "status_code", None) == raised, f"request {i}: {caught.value!r}"
                    await asyncio.sleep(0.2)  # let a (wrong) late settle land before looking
                    records = await _settled_since(engine, before, want=0)
                    assert records == [], f"request {i} failed with {status} but was charged: {records}"
                    assert engine.spend.ledger.open_reservations() == 0, f"request {i} left a reservation open"
                    continue
                response = await _call(router, exp)
                wire = wire_usage(exp.wire, body_text(served[i]))
                expected = _expected_cost(exp, response, wire)
                if wire.reported_cost is not None:
                    # OpenRouter bills the upstream list price: the given price reproduces its own figure
                    assert abs(wire.reported_cost - expected) <= TOLERANCE_USD
                records = await _settled_since(engine, before, want=1)
                assert len(records) == 1, f"request {i}: expected one settled record, got {records}"
                assert engine.spend.ledger.open_reservations() == 0
                record = records[0]
                assert record.attrs["deployment"] == "recorded" and record.attrs["group"] == GROUP
                assert expected > 0
                assert abs(record.amount_usd - expected) <= TOLERANCE_USD, (
                    f"request {i}: settled ${record.amount_usd!r}, recorded usage costs ${expected!r}")
            # every recorded chat interaction was answered from the recording, once (Gemini's 503 file
            # also holds fileSearchStores calls that are not chat requests)
            assert cassette.play_count == len(exp.outcomes)
    finally:
        engine.detach()


async def test_gemini_json_array_framing_is_what_litellm_cannot_read() -> None:
    """Why the Gemini stream is re-framed: replayed byte for byte (a JSON array answering a request
    without ``alt=sse``), LiteLLM reads no chunk of it. Pins that: if LiteLLM learns to read the
    array framing, this fails and the re-framing can go."""
    require_recordings()
    name = "gemini/streamGenerateContent-json-array-gzip.yaml"
    exp = EXPECTATIONS[name]
    router = _router(exp)
    with _vcr(raw=True).use_cassette(str(RECORDINGS / name), allow_playback_repeats=True) as cassette:
        # LiteLLM asks for alt=sse, which the raw recording does not answer
        with pytest.raises(vcr.errors.CannotOverwriteExistingCassetteException, match="_same_framing"):
            await _call(router, exp)
        assert cassette.play_count == 0
    # ...and given the array anyway (matched on path alone), LiteLLM reads an empty stream.
    with _vcr(raw=True, match_on=("method", "path")).use_cassette(str(RECORDINGS / name)):
        response = await _call(router, exp)
    assert not (response.choices[0].message.content or "")
    wire = wire_usage("gemini", body_text(load(name)[1][0]))
    assert (wire.prompt, wire.completion) == (11, 293)  # what the recording does carry


def test_every_recording_has_an_expectation() -> None:
    require_recordings()
    on_disk = {str(p.relative_to(RECORDINGS)) for p in RECORDINGS.glob("*/*.yaml")}
    assert on_disk, f"no recordings under {RECORDINGS}"
    missing = sorted(on_disk - set(EXPECTATIONS))
    stale = sorted(set(EXPECTATIONS) - on_disk)
    assert not missing, f"recordings without an expectation in EXPECTATIONS (add one): {missing}"
    assert not stale, f"expectations for recordings that are gone: {stale}"


@pytest.mark.parametrize("wire,text,expected", [
    ("openai", '{"usage": {"prompt_tokens": 10, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 4}}}',
     WireUsage(10, 5, cache_read=4)),
    ("openai", 'data: {"choices": []}\n\ndata: {"x_groq": {"usage": {"prompt_tokens": 3, "completion_tokens": 2}}}\n\ndata: [DONE]\n',
     WireUsage(3, 2)),
    ("anthropic", '{"usage": {"input_tokens": 4, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 0, "output_tokens": 7}}',
     WireUsage(104, 7, cache_write=100)),
    ("gemini", '{"usageMetadata": {"promptTokenCount": 32, "toolUsePromptTokenCount": 720, "candidatesTokenCount": 341, "thoughtsTokenCount": 103}}',
     WireUsage(752, 444)),
])
def test_wire_usage_reader(wire, text, expected):
    assert wire_usage(wire, text) == expected
