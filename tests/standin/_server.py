"""The stand-in HTTP server and its Python API (:class:`StandIn`)."""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterable, Literal, get_args
from urllib.parse import parse_qs, urlsplit

from standin import _wire
from standin._wire import Answer, Usage

FaultKind = Literal[
    "server_error",  # 500 in the provider's error shape
    "rate_limit",  # 429 with a Retry-After header
    "auth",  # 401 (Gemini: 400 API_KEY_INVALID, as Google answers a bad key)
    "context_length",  # 400 "prompt too long" in the provider's words
    "overloaded",  # Anthropic 529 overloaded_error; Gemini/others 503
    "unavailable",  # 503
    "bad_gateway",  # plain-text 502 from a proxy in front of the provider (not JSON)
    "slow",  # sleep delay_ms, then answer normally
    "slow_first_chunk",  # send headers, wait delay_ms, then stream (non-stream: like slow)
    "slow_stream",  # stream, waiting delay_ms before every chunk after the first (non-stream: like slow)
    "empty",  # HTTP 200 with an empty completion (no text, 0 completion tokens)
    "length",  # HTTP 200, finish_reason "length" (Anthropic max_tokens, Gemini MAX_TOKENS)
    "invalid_json",  # HTTP 200 with a truncated JSON body / a garbled stream chunk
    "stream_error",  # HTTP 200 stream that carries an error event after the first chunk
    "stream_for_json",  # a whole answer streamed (and billed) to a request that asked for JSON
    "stream_for_json_usage",  # the same, its last chunk reporting the usage
    "status",  # any other HTTP status, JSON error body in the provider's shape
]
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)
_KIND_BY_STATUS = {500: "server_error", 429: "rate_limit", 401: "auth", 400: "context_length",
                   529: "overloaded", 503: "unavailable", 502: "bad_gateway"}
PROVIDERS: tuple[str, ...] = tuple(_wire.FLAVOR)


@dataclass(frozen=True)
class Reply:
    """What a successful call answers. ``None`` token counts follow the documented default rule.

    Default rule (deterministic, no tokenizer): ``prompt_tokens`` = number of whitespace-separated
    words in the request's message/system text, at least 1; ``completion_tokens`` = words in
    ``text`` + ``reasoning_tokens``. ``cached_tokens``/``cache_write_tokens`` are part of the
    prompt; ``reasoning_tokens`` part of the completion (OpenAI's convention; each wire format
    re-splits them as its provider does). ``cost`` is only sent by OpenRouter (``usage.cost``);
    when ``None`` it is ``prompt*1e-6 + completion*2e-6`` USD.

    ``usage=False`` answers a success *without any usage block*, as some OpenAI-compatible
    gateways and self-hosted servers do: OpenAI-style bodies and streams carry no ``usage`` (even
    when ``stream_options.include_usage`` asks for it; Groq also no ``x_groq.usage``), Gemini no
    ``usageMetadata``. It exists to test that such an answer is still charged (see
    ``tests/test_missing_usage.py``). Anthropic is refused (``ValueError`` from
    :meth:`StandIn.reply`): its Messages API always reports usage (``usage`` is a required field of
    every message, and of ``message_start``/``message_delta`` in a stream), so a stand-in Anthropic
    answer without it would imitate no real provider.
    """

    text: str = "Hello from the stand-in."
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    finish_reason: Literal["stop", "length"] = "stop"
    cost: float | None = None
    model: str | None = None  # the model name reported back; default: the requested one
    usage: bool = True  # False: no usage block at all (see above; not for Anthropic)


@dataclass(frozen=True)
class Fault:
    """One scheduled misbehaviour. Built by :meth:`StandIn.fail`; exposed for introspection."""

    kind: str
    status: int | None = None
    retry_after: float | None = None
    delay_ms: int = 0
    message: str | None = None


@dataclass(frozen=True)
class Hit:
    """One request the stand-in received (recorded before any fault is applied)."""

    provider: str
    model: str | None
    path: str
    stream: bool
    body: Any
    headers: dict[str, str]
    outcome: str  # "ok" or the fault kind served


@dataclass
class _Entry:
    fault: Fault
    remaining: int | None  # None: every call until cleared


_DEFAULT_MESSAGES: dict[str, dict[str, str]] = {
    "openai": {
        "server_error": "The server had an error while processing your request. Sorry about that!",
        "rate_limit": "Rate limit reached for requests. Please try again in 2s.",
        "auth": "Incorrect API key provided: sk-test. You can find your API key at https://platform.openai.com/account/api-keys.",
        "context_length": "This model's maximum context length is 128000 tokens. However, your messages resulted in 150008 tokens. Please reduce the length of the messages.",
        "overloaded": "The engine is currently overloaded, please try again later.",
        "unavailable": "The engine is currently overloaded, please try again later.",
    },
    "mistral": {
        "context_length": "Prompt contains 150004 tokens and 0 draft tokens, too large for model with 131072 maximum context length",
        "rate_limit": "Requests rate limit exceeded",
    },
    "groq": {"auth": "Invalid API Key"},
    "deepseek": {"auth": "Authentication Fails, Your api key: ****test is invalid"},
    "openrouter": {"rate_limit": "Provider returned error", "auth": "No auth credentials found"},
    "anthropic": {
        "server_error": "Internal server error",
        "rate_limit": "This request would exceed the rate limit for your organization of 50,000 input tokens per minute.",
        "auth": "invalid x-api-key",
        "context_length": "prompt is too long: 200027 tokens > 200000 maximum",
        "overloaded": "Overloaded",
        "unavailable": "Overloaded",
    },
    "gemini": {
        "server_error": "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
        "rate_limit": "You exceeded your current quota, please check your plan and billing details.",
        "auth": "API key not valid. Please pass a valid API key.",
        "context_length": "The input token count (1048580) exceeds the maximum number of tokens allowed (1048576).",
        "overloaded": "The model is overloaded. Please try again later.",
        "unavailable": "The model is overloaded. Please try again later.",
    },
}


def _message(provider: str, kind: str, status: int) -> str:
    for name in (provider, _wire.FLAVOR[provider], "openai"):
        if kind in _DEFAULT_MESSAGES.get(name, {}):
            return _DEFAULT_MESSAGES[name][kind]
    return f"stand-in: HTTP {status}"


def _status_for(provider: str, kind: str, status: int | None) -> int:
    if status is not None:
        return status
    flavor = _wire.FLAVOR[provider]
    return {
        "server_error": 500,
        "rate_limit": 429,
        "auth": 400 if flavor == "gemini" else 401,
        "context_length": 400,
        "overloaded": 529 if flavor == "anthropic" else 503,
        "unavailable": 503,
        "bad_gateway": 502,
        "stream_error": {"anthropic": 529, "gemini": 503}.get(flavor, 500),
    }.get(kind, 500)


_GEMINI_PATH = re.compile(r"/models/(?P<model>[^/:]+):(?P<op>generateContent|streamGenerateContent)$")


def _words(obj: Any) -> int:
    """Words in every ``text``/``content`` string of a request body (the default prompt rule)."""
    if isinstance(obj, str):
        return len(obj.split())
    if isinstance(obj, list):
        return sum(_words(x) for x in obj)
    if isinstance(obj, dict):
        return sum(_words(v) for k, v in obj.items() if k in ("messages", "content", "text", "parts",
                                                                "contents", "system", "system_instruction",
                                                                "systemInstruction"))
    return 0


class StandIn:
    """A fault-injecting stand-in for LLM providers, on 127.0.0.1 in a background thread.

    Why: the project's routing, budget and failover code must be exercised through LiteLLM's
    *real* provider clients (their URL building, header names, error mapping and stream parsing
    are exactly what breaks in production), but tests cannot reach providers. The stand-in serves
    each provider's wire format under its own path prefix, so one server plays all of them::

        with StandIn() as s:
            await litellm.acompletion(model="deepseek/deepseek-chat", api_base=s.url("deepseek"), ...)
            s.fail("deepseek", status=500, times=5)      # next 5 DeepSeek calls answer 500
            s.fail("anthropic", "overloaded")            # next call answers 529
            s.reply("mistral", text="hi", prompt_tokens=100)
            assert s.hits("deepseek") == 6

    Faults queue per provider (optionally per model) and are consumed in order, one per request;
    a model-specific fault is used before a provider-wide one. Everything is thread-safe.
    ``aliases`` adds extra providers with an existing provider's wire format, e.g.
    ``StandIn(aliases={"deepseek-eu": "deepseek"})`` for two deployments with separate schedules.
    """

    def __init__(self, *, aliases: dict[str, str] | None = None, chunk_words: int = 1) -> None:
        self._lock = threading.Lock()
        self._wire_of: dict[str, str] = {p: p for p in PROVIDERS}
        for alias, target in (aliases or {}).items():
            if target not in PROVIDERS:
                raise ValueError(f"alias {alias!r}: unknown provider {target!r}; expected one of {PROVIDERS}")
            self._wire_of[alias] = target
        self._faults: dict[tuple[str, str | None], deque[_Entry]] = {}
        self._replies: dict[tuple[str, str | None], Reply] = {}
        self._hits: list[Hit] = []
        self._chunk_words = chunk_words
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "StandIn":
        if self._server is not None:
            return self
        handler = type("_BoundHandler", (_Handler,), {"standin": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="payg-standin", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        assert self._thread is not None
        self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> "StandIn":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ addresses
    @property
    def origin(self) -> str:
        if self._server is None:
            raise RuntimeError("StandIn is not running: use `with StandIn() as s:` or call start()")
        return f"http://127.0.0.1:{self._server.server_port}"

    def url(self, provider: str) -> str:
        """The ``api_base`` to hand LiteLLM for ``provider``.

        It ends with the path of LiteLLM's default api_base for that provider (e.g.
        ``/deepseek/beta``, ``/gemini/v1beta``), so requests arrive on the provider's real path.
        """
        wire = self._wire(provider)
        return f"{self.origin}/{provider}" + urlsplit(_wire.DEFAULT_API_BASE[wire]).path

    def real_uri(self, uri: str) -> str:
        """Map a URI requested from this stand-in back to the provider's real URI."""
        for name, wire in self._wire_of.items():
            prefix = f"{self.origin}/{name}/"
            if uri.startswith(prefix):
                real = urlsplit(_wire.DEFAULT_API_BASE[wire])
                return f"{real.scheme}://{real.netloc}/" + uri[len(prefix):]
        return uri

    # ------------------------------------------------------------------ behaviour
    def reply(self, provider: str, model: str | None = None, **fields: Any) -> Reply:
        """Set what successful calls answer (for one model, or provider-wide). See :class:`Reply`."""
        self._wire(provider)
        unknown = set(fields) - set(Reply.__dataclass_fields__)
        if unknown:
            raise TypeError(f"unknown Reply field(s) {sorted(unknown)}; valid: {sorted(Reply.__dataclass_fields__)}")
        r = Reply(**fields)
        if not r.usage and _wire.FLAVOR[self._wire(provider)] == "anthropic":
            raise ValueError(f"{provider}: Reply(usage=False) is not available for the Anthropic wire format: "
                             "Anthropic's Messages API always reports usage")
        with self._lock:
            self._replies[(provider, model)] = r
        return r

    def fail(
        self,
        provider: str,
        kind: str | None = None,
        *,
        status: int | None = None,
        times: int | None = 1,
        model: str | None = None,
        retry_after: float | None = None,
        delay_ms: int = 0,
        message: str | None = None,
    ) -> Fault:
        """Schedule a fault for the next ``times`` calls (``None``: every call until :meth:`clear`).

        Give a ``kind`` (see ``FAULT_KINDS``) or just a ``status``: 500, 429, 401, 400, 529, 503
        and 502 map to their kinds; any other status sends the provider's JSON error shape.
        ``rate_limit`` sets ``Retry-After`` to ``retry_after`` (default 1 s) and, for OpenAI-style
        providers, the ``x-ratelimit-reset-requests`` header. ``slow``/``slow_first_chunk``/
        ``slow_stream`` use ``delay_ms``.
        """
        self._wire(provider)
        if kind is None:
            if status is None:
                raise TypeError("fail() needs a kind or a status")
            kind = _KIND_BY_STATUS.get(status, "status")
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {', '.join(FAULT_KINDS)}")
        if kind in ("slow", "slow_first_chunk", "slow_stream") and delay_ms <= 0:
            raise ValueError(f"fault {kind!r} needs delay_ms > 0")
        if times is not None and times < 1:
            raise ValueError(f"times must be >= 1 or None, got {times}")
        if kind == "rate_limit" and retry_after is None:
            retry_after = 1
        fault = Fault(kind=kind, status=status, retry_after=retry_after, delay_ms=delay_ms, message=message)
        with self._lock:
            self._faults.setdefault((provider, model), deque()).append(_Entry(fault, times))
        return fault

    def delay(self, provider: str, ms: int, *, times: int | None = 1, model: str | None = None,
              first_chunk: bool = False) -> Fault:
        """Shorthand for a ``slow`` (or ``slow_first_chunk``) fault."""
        return self.fail(provider, "slow_first_chunk" if first_chunk else "slow", delay_ms=ms, times=times,
                         model=model)

    def pending(self, provider: str, model: str | None = None) -> list[tuple[Fault, int | None]]:
        """Faults still queued for exactly (provider, model), with their remaining counts."""
        with self._lock:
            return [(e.fault, e.remaining) for e in self._faults.get((provider, model), ())]

    def clear(self, provider: str | None = None) -> None:
        """Drop scheduled faults and replies (for one provider, or all)."""
        with self._lock:
            for store in (self._faults, self._replies):
                for key in [k for k in store if provider is None or k[0] == provider]:
                    del store[key]

    def reset(self) -> None:
        """Drop faults, replies and hit records."""
        self.clear()
        with self._lock:
            self._hits.clear()

    # ------------------------------------------------------------------ observation
    def requests(self, provider: str | None = None, *, model: str | None = None,
                 path: str | None = None) -> list[Hit]:
        """Requests received, oldest first, filtered by provider, model and/or exact path."""
        with self._lock:
            return [h for h in self._hits if (provider is None or h.provider == provider)
                    and (model is None or h.model == model) and (path is None or h.path == path)]

    def hits(self, provider: str | None = None, *, model: str | None = None, path: str | None = None) -> int:
        """How many requests matched; counts every attempt, failed or not."""
        return len(self.requests(provider, model=model, path=path))

    # ------------------------------------------------------------------ internals
    def _wire(self, provider: str) -> str:
        try:
            return self._wire_of[provider]
        except KeyError:
            raise ValueError(f"unknown provider {provider!r}; expected one of {sorted(self._wire_of)}") from None

    def _take_fault(self, provider: str, model: str | None) -> Fault | None:
        with self._lock:
            for key in ((provider, model), (provider, None)):
                queue = self._faults.get(key)
                if queue:
                    entry = queue[0]
                    if entry.remaining is not None:
                        entry.remaining -= 1
                        if entry.remaining == 0:
                            queue.popleft()
                    return entry.fault
        return None

    def _reply_for(self, provider: str, model: str | None) -> Reply:
        with self._lock:
            return self._replies.get((provider, model)) or self._replies.get((provider, None)) or Reply()

    def _record(self, hit: Hit) -> None:
        with self._lock:
            self._hits.append(hit)

    def _answer(self, provider: str, wire: str, model: str, body: Any, fault: Fault | None,
                include_usage: bool) -> Answer:
        r = self._reply_for(provider, model)
        text = r.text
        finish = r.finish_reason
        if fault is not None and fault.kind == "empty":
            text = ""
        if fault is not None and fault.kind == "length":
            finish = "length"
        words = text.split()
        if fault is not None and fault.kind == "empty":
            completion = r.reasoning_tokens
        else:
            completion = r.completion_tokens if r.completion_tokens is not None else len(words) + r.reasoning_tokens
        prompt = r.prompt_tokens if r.prompt_tokens is not None else max(1, _words(body))
        if r.cached_tokens + r.cache_write_tokens > prompt:
            raise ValueError(f"cached ({r.cached_tokens}) + cache_write ({r.cache_write_tokens}) tokens "
                             f"exceed prompt tokens ({prompt})")
        cost = r.cost if r.cost is not None else prompt * 1e-6 + completion * 2e-6
        usage = Usage(prompt=prompt, completion=completion, cached=r.cached_tokens,
                      cache_write=r.cache_write_tokens, reasoning=r.reasoning_tokens, cost=cost)
        n = max(1, self._chunk_words)
        chunks = tuple(" ".join(words[i:i + n]) if i == 0 else " " + " ".join(words[i:i + n])
                       for i in range(0, len(words), n))
        return Answer(provider=wire, model=r.model or model, text=text, usage=usage, finish_reason=finish,
                      chunks=chunks, include_usage=include_usage, send_usage=r.usage)


class _Handler(BaseHTTPRequestHandler):
    standin: StandIn  # set on the per-server subclass
    protocol_version = "HTTP/1.1"
    server_version = "payg-standin/1"

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    # ---------------------------------------------------------------- plumbing
    def _send(self, status: int, body: bytes, content_type: str = "application/json",
              headers: Iterable[tuple[str, str]] = ()) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, status: int, obj: Any, headers: Iterable[tuple[str, str]] = ()) -> None:
        self._send(status, json.dumps(obj).encode(), headers=headers)

    def _start_stream(self, content_type: str) -> None:
        self.send_response(200)
        self.send_header("content-type", content_type)
        self.send_header("cache-control", "no-cache")
        self.send_header("connection", "close")  # body ends when the connection closes
        self.end_headers()
        self.close_connection = True

    def _write(self, text: str) -> None:
        self.wfile.write(text.encode())
        self.wfile.flush()

    # ---------------------------------------------------------------- dispatch
    def do_POST(self) -> None:  # noqa: N802 (http.server naming)
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        split = urlsplit(self.path)
        parts = split.path.split("/", 2)
        provider = parts[1] if len(parts) > 1 else ""
        rest = "/" + (parts[2] if len(parts) > 2 else "")
        s = self.standin
        wire = s._wire_of.get(provider)
        if wire is None:
            self._send(404, f"stand-in: unknown provider prefix {provider!r}".encode(), "text/plain")
            return
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            self._send_json(400, _wire.error_body(wire, 400, "request body is not JSON"))
            return
        flavor = _wire.FLAVOR[wire]
        query = parse_qs(split.query)
        if flavor == "gemini":
            m = _GEMINI_PATH.search(rest)
            if m is None:
                self._send_json(404, _wire.error_body(wire, 404, f"path {rest} not found"))
                return
            model = m.group("model")
            stream = m.group("op") == "streamGenerateContent"
        elif flavor == "anthropic":
            if not rest.rstrip("/").endswith("/v1/messages"):
                self._send_json(404, _wire.error_body(wire, 404, f"path {rest} not found"))
                return
            model, stream = body.get("model"), bool(body.get("stream"))
        else:
            if not rest.rstrip("/").endswith("/chat/completions"):
                self._send_json(404, _wire.error_body(wire, 404, f"path {rest} not found"))
                return
            model, stream = body.get("model"), bool(body.get("stream"))

        fault = s._take_fault(provider, model)
        if fault is not None and fault.kind in ("stream_for_json", "stream_for_json_usage"):
            # what ``extra_body: {"stream": true}`` once made a provider do behind LiteLLM's back (the
            # plugin now refuses that field): the body LiteLLM reads as JSON is an SSE stream
            stream = True
            if fault.kind == "stream_for_json_usage":
                body = {**body, "stream_options": {"include_usage": True}}
        s._record(Hit(provider=provider, model=model, path=split.path, stream=stream, body=body,
                      headers={k.lower(): v for k, v in self.headers.items()},
                      outcome=fault.kind if fault else "ok"))
        if fault is not None and fault.kind == "slow":
            time.sleep(fault.delay_ms / 1000)
        if fault is not None and fault.kind in ("slow_first_chunk", "slow_stream") and not stream:
            time.sleep(fault.delay_ms / 1000)
        if fault is not None and self._serve_error(wire, fault):
            return

        include_usage = bool((body.get("stream_options") or {}).get("include_usage")) or (
            wire == "openrouter" and bool((body.get("usage") or {}).get("include")))
        answer = s._answer(provider, wire, model or "unknown", body, fault, include_usage)
        garbled = fault is not None and fault.kind == "invalid_json"
        if not stream:
            obj = {"openai": _wire.openai_body, "anthropic": _wire.anthropic_body,
                   "gemini": _wire.gemini_body}[flavor](answer)
            data = json.dumps(obj).encode()
            self._send(200, data[: len(data) // 2] if garbled else data)
            return
        self._serve_stream(wire, flavor, answer, fault, sse=(query.get("alt") == ["sse"]))

    def _serve_error(self, wire: str, fault: Fault) -> bool:
        """Answer an HTTP-level fault; False when the fault shapes a 200 answer instead."""
        if fault.kind in ("slow", "slow_first_chunk", "slow_stream", "empty", "length", "invalid_json", "stream_error",
                          "stream_for_json", "stream_for_json_usage"):
            return False
        status = _status_for(wire, fault.kind, fault.status)
        if fault.kind == "bad_gateway":
            # What nginx/Cloudflare in front of a provider sends: HTML/plain text, not JSON.
            self._send(status, b"<html><head><title>502 Bad Gateway</title></head><body>"
                               b"<center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center>"
                               b"</body></html>\r\n", "text/html")
            return True
        message = fault.message or _message(wire, fault.kind, status)
        headers: list[tuple[str, str]] = []
        if fault.kind == "rate_limit":
            headers.append(("retry-after", f"{fault.retry_after:g}"))
            if _wire.FLAVOR[wire] == "openai":
                headers.append(("x-ratelimit-reset-requests", f"{fault.retry_after:g}s"))
        if _wire.FLAVOR[wire] == "anthropic":
            headers.append(("x-should-retry", "true" if status in (429, 500, 529) else "false"))
        self._send_json(status, _wire.error_body(wire, status, message), headers)
        return True

    def _serve_stream(self, wire: str, flavor: str, answer: Answer, fault: Fault | None, *, sse: bool) -> None:
        kind = fault.kind if fault else None
        if flavor == "gemini":
            chunks = _wire.gemini_stream_chunks(answer)
            if sse:
                frames = [_wire.sse(c, sep="\r\n\r\n") for c in chunks]
            else:  # streamed JSON array, as Google sends without alt=sse
                frames = ["[" + json.dumps(chunks[0], indent=2)] + [
                    "\n,\r\n" + json.dumps(c, indent=2) for c in chunks[1:]] + ["\n]"]
            content_type = "text/event-stream" if sse else "application/json; charset=UTF-8"
        elif flavor == "anthropic":
            frames = list(_wire.anthropic_stream(answer))
            content_type = "text/event-stream; charset=utf-8"
        else:
            frames = list(_wire.openai_stream(answer))
            content_type = "text/event-stream"
        self._start_stream(content_type)
        try:
            if kind == "slow_first_chunk":
                time.sleep(fault.delay_ms / 1000)  # type: ignore[union-attr]
            for i, frame in enumerate(frames):
                if kind == "slow_stream" and i > 0:
                    time.sleep(fault.delay_ms / 1000)  # type: ignore[union-attr]
                if kind == "stream_error" and i == 2:
                    status = _status_for(wire, "stream_error", fault.status)  # type: ignore[union-attr]
                    msg = fault.message or _message(wire, "overloaded" if status in (503, 529) else "server_error",  # type: ignore[union-attr]
                                                    status)
                    self._write(_wire.stream_error_frame(wire, status, msg))
                    return
                if kind == "invalid_json" and i == 2:
                    self._write(frame[: len(frame) // 2] + "\n\n")
                    continue
                self._write(frame)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up on the stream: that is its right
