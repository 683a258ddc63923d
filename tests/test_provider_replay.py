"""Provider traffic replayed through LiteLLM's real provider clients, from cassettes.

Each test makes a real ``litellm.acompletion`` call; vcrpy answers it from
``cassettes/test_provider_replay/<test>.yaml``. The assertions compare what LiteLLM parsed with
the raw wire bytes stored in the cassette (so they survive a live re-record) and check that
LiteLLM's cost equals the price-map arithmetic for the recorded usage — the number this project's
budgets settle with.

Recording: see tests/conftest.py (live, or ``PAYG_RECORD_AGAINST=standin``).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import litellm
import pytest

from standin import StandIn

CASSETTES = Path(__file__).resolve().parents[1] / "cassettes"
MESSAGES = [{"role": "user", "content": "Say hello in five words."}]


def _recorded_body(cassette: Any) -> str:
    """The one response body in the test's cassette: the recorded bytes while recording, the
    file's content on replay (pytest-recording's ``vcr`` fixture is the live Cassette)."""
    bodies = [resp["body"]["string"] for resp in cassette.responses]
    assert len(bodies) == 1, f"expected one interaction in the cassette, found {len(bodies)}"
    body = bodies[0]
    return body.decode() if isinstance(body, bytes) else body


def _recorded_json(cassette: Any) -> dict[str, Any]:
    return json.loads(_recorded_body(cassette))


def _recorded_stream(cassette: Any) -> list[dict[str, Any]]:
    body = _recorded_body(cassette)
    frames = [f[len("data: "):] for f in body.split("\n\n") if f.startswith("data: ")]
    assert frames[-1] == "[DONE]", "an OpenAI-style stream ends with data: [DONE]"
    return [json.loads(f) for f in frames[:-1]]


def _price(model: str, prompt: int, completion: int, cached: int = 0) -> float:
    info = litellm.model_cost[model]
    cache_read = info.get("cache_read_input_token_cost") or info["input_cost_per_token"]
    return ((prompt - cached) * info["input_cost_per_token"] + cached * cache_read
            + completion * info["output_cost_per_token"])


def _api_key(env: str) -> str:
    return os.environ.get(env, "sk-test-not-a-key")


# Stand-in replies used when recording with PAYG_RECORD_AGAINST=standin. Live recordings ignore them.
@pytest.fixture
def standin_replies(recording_standin: StandIn | None) -> None:
    if recording_standin is None:
        return
    recording_standin.reset()
    recording_standin.reply("deepseek", text="Hello there, friend, nice day!", prompt_tokens=1100,
                            cached_tokens=1024, completion_tokens=7)
    recording_standin.reply("mistral", text="Hello, how are you today?", prompt_tokens=12, completion_tokens=8)


vcr_test = [pytest.mark.vcr, pytest.mark.usefixtures("standin_replies")]


def _cassette_test(fn):
    for mark in vcr_test:
        fn = mark(fn)
    return fn


@_cassette_test
async def test_deepseek_chat(provider_api_base, vcr):
    # Pins: DeepSeek's default api_base is .../beta (path /beta/chat/completions), and its usage block
    # reports the prompt cache twice — prompt_cache_hit/miss_tokens and prompt_tokens_details.cached_tokens.
    # LiteLLM must price the hit tokens at the cache-read rate.
    r = await litellm.acompletion(model="deepseek/deepseek-chat", messages=MESSAGES,
                                  api_key=_api_key("DEEPSEEK_API_KEY"), api_base=provider_api_base("deepseek"))
    wire = _recorded_json(vcr)
    usage = wire["usage"]
    assert r.choices[0].message.content == wire["choices"][0]["message"]["content"]
    assert r.choices[0].message.content
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (usage["prompt_tokens"], usage["completion_tokens"])
    assert r.usage.prompt_tokens_details.cached_tokens == usage["prompt_cache_hit_tokens"]
    assert usage["prompt_cache_hit_tokens"] + usage["prompt_cache_miss_tokens"] == usage["prompt_tokens"]
    expected = _price("deepseek/deepseek-chat", usage["prompt_tokens"], usage["completion_tokens"],
                      usage["prompt_cache_hit_tokens"])
    assert litellm.completion_cost(r) == pytest.approx(expected, rel=1e-9)
    assert r._hidden_params["response_cost"] == pytest.approx(expected, rel=1e-9)


@_cassette_test
async def test_deepseek_chat_stream(provider_api_base, vcr):
    # Pins: DeepSeek streams put "usage": null on every chunk and the counts on the *finish* chunk
    # (no separate choices:[] usage chunk as OpenAI sends), and only when stream_options.include_usage.
    stream = await litellm.acompletion(model="deepseek/deepseek-chat", messages=MESSAGES, stream=True,
                                       stream_options={"include_usage": True},
                                       api_key=_api_key("DEEPSEEK_API_KEY"), api_base=provider_api_base("deepseek"))
    chunks = [c async for c in stream]
    r = litellm.stream_chunk_builder(chunks, messages=MESSAGES)
    wire = _recorded_stream(vcr)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in wire if c["choices"])
    usage = next(c["usage"] for c in wire if c.get("usage"))
    assert all("usage" in c for c in wire), "every DeepSeek chunk carries a usage key (null until the end)"
    assert r.choices[0].message.content == text and text
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (usage["prompt_tokens"], usage["completion_tokens"])
    expected = _price("deepseek/deepseek-chat", usage["prompt_tokens"], usage["completion_tokens"],
                      usage["prompt_cache_hit_tokens"])
    assert litellm.completion_cost(r) == pytest.approx(expected, rel=1e-9)


@_cassette_test
async def test_mistral_chat(provider_api_base, vcr):
    # Pins: Mistral's usage block is the bare three counts (no *_details, no cache fields) and its
    # ids are 32 hex chars without a prefix; message carries "tool_calls": null.
    r = await litellm.acompletion(model="mistral/mistral-large-latest", messages=MESSAGES,
                                  api_key=_api_key("MISTRAL_API_KEY"), api_base=provider_api_base("mistral"))
    wire = _recorded_json(vcr)
    usage = wire["usage"]
    assert set(usage) == {"prompt_tokens", "completion_tokens", "total_tokens"}
    assert re.fullmatch(r"[0-9a-f]{32}", wire["id"])
    assert r.choices[0].message.content == wire["choices"][0]["message"]["content"]
    assert r.choices[0].message.content
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (usage["prompt_tokens"], usage["completion_tokens"])
    expected = _price("mistral/mistral-large-latest", usage["prompt_tokens"], usage["completion_tokens"])
    assert litellm.completion_cost(r) == pytest.approx(expected, rel=1e-9)
    assert r._hidden_params["response_cost"] == pytest.approx(expected, rel=1e-9)


@_cassette_test
async def test_mistral_chat_stream(provider_api_base, vcr):
    # Pins: Mistral sends usage on the finish chunk of every stream without being asked (no
    # stream_options), and its chunks have no "logprobs" key; LiteLLM must still pick the usage up
    # instead of estimating tokens itself.
    stream = await litellm.acompletion(model="mistral/mistral-large-latest", messages=MESSAGES, stream=True,
                                       api_key=_api_key("MISTRAL_API_KEY"), api_base=provider_api_base("mistral"))
    chunks = [c async for c in stream]
    r = litellm.stream_chunk_builder(chunks, messages=MESSAGES)
    wire = _recorded_stream(vcr)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in wire if c["choices"])
    finish = [c for c in wire if c["choices"] and c["choices"][0].get("finish_reason")]
    assert len(finish) == 1 and "usage" in finish[0], "usage rides on the finish chunk"
    usage = finish[0]["usage"]
    assert r.choices[0].message.content == text and text
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (usage["prompt_tokens"], usage["completion_tokens"])
    expected = _price("mistral/mistral-large-latest", usage["prompt_tokens"], usage["completion_tokens"])
    assert litellm.completion_cost(r) == pytest.approx(expected, rel=1e-9)


@pytest.mark.vcr
@pytest.mark.default_cassette("test_mistral_chat.yaml")
async def test_another_prompt_is_not_answered_by_this_cassette(provider_api_base):
    # Strict matching (tests/conftest.py vcr_config): the cassette answers only the request it
    # recorded; another prompt fails naming the field that differs, instead of getting its answer.
    with pytest.raises(Exception) as failed:
        await litellm.acompletion(model="mistral/mistral-large-latest", messages=[{"role": "user", "content": "Bye."}],
                                  api_key=_api_key("MISTRAL_API_KEY"), api_base=provider_api_base("mistral"))
    assert 'messages[0].content: sent "Bye.", recorded "Say hello in five words."' in str(failed.value)


# ---------------------------------------------------------------------------------------------
# Not a vcr test: scans every cassette file in the repo.
_CREDENTIAL_PATTERNS = [
    re.compile(r"(?im)^\s*-?\s*['\"]?(authorization|x-api-key|api-key|x-goog-api-key)['\"]?\s*:"),
    re.compile(r"sk-(?!test-not-a-key)[A-Za-z0-9_-]{8,}"),  # OpenAI/DeepSeek/Anthropic-style keys
    re.compile(r"[?&]key="),
    re.compile(r"(?i)bearer\s+[A-Za-z0-9._-]{8,}"),
    re.compile(r"AIza[0-9A-Za-z_-]{20,}"),  # Google API keys
    re.compile(r"gsk_[0-9A-Za-z]{20,}"),  # Groq keys
]


def _credential_findings(text: str) -> list[str]:
    return [m.group(0) for p in _CREDENTIAL_PATTERNS for m in p.finditer(text)]


def test_no_credentials_in_cassettes():
    files = sorted(CASSETTES.rglob("*.yaml"))
    assert files, "no cassettes found: this test guards them, so they must exist"
    found = {str(f.relative_to(CASSETTES)): hits for f in files if (hits := _credential_findings(f.read_text()))}
    assert not found, f"credentials in cassettes: {found}"


@pytest.mark.parametrize("leak", [
    "    authorization:\n    - Bearer abc",
    "      x-api-key:\n      - sk-ant-api03-abcdefghijkl",
    "uri: https://generativelanguage.googleapis.com/v1beta/models/x:generateContent?key=AIzaSyA1234567890abcdefghij",
    "x-goog-api-key: [x]",
    "body: '{\"api_key\": \"sk-proj-abcdefghijklmnop\"}'",
])
def test_credential_scan_catches(leak):
    assert _credential_findings(leak)


def test_a_re_recorded_cassette_replays_strictly(tmp_path):
    # The README's re-recording command (offline, against the stand-in) in a copy of the project,
    # then the normal strict replay of what it wrote: a fresh recording matches its own test.
    import shutil
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    (tmp_path / "tests").mkdir()
    for name in ("conftest.py", "test_provider_replay.py"):
        shutil.copy(repo / "tests" / name, tmp_path / "tests" / name)
    shutil.copytree(repo / "tests" / "offline_guard", tmp_path / "tests" / "offline_guard")
    shutil.copytree(repo / "tests" / "standin", tmp_path / "tests" / "standin")  # the stand-in lives in tests/
    shutil.copy(repo / "pyproject.toml", tmp_path / "pyproject.toml")
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONPATH": str(repo)}
    env.pop("PYTEST_ADDOPTS", None)
    tests = ["tests/test_provider_replay.py", "-q", "-p", "no:cacheprovider", "-k", "chat and not another"]

    def pytest_run(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pytest", *tests, *args], cwd=tmp_path, env={**env, **extra},
                              capture_output=True, text=True, timeout=300)

    recorded = pytest_run("--record-mode=rewrite", PAYG_RECORD_AGAINST="standin")
    assert recorded.returncode == 0, recorded.stdout + recorded.stderr
    written = sorted(p.name for p in (tmp_path / "cassettes" / "test_provider_replay").glob("*.yaml"))
    assert written == ["test_deepseek_chat.yaml", "test_deepseek_chat_stream.yaml", "test_mistral_chat.yaml",
                       "test_mistral_chat_stream.yaml"]
    replayed = pytest_run()  # --record-mode=none (pyproject), strict match_on (conftest)
    assert replayed.returncode == 0 and "4 passed" in replayed.stdout, replayed.stdout + replayed.stderr
