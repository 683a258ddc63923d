"""A fake provider that bills what it receives: the ground truth the cap is tested against.

Why: the plugin's ledger can only be checked against what a provider *would have billed*, and a
provider bills the request it receives, not the one the client sent through the proxy. LiteLLM
rewrites requests on the way (``extra_body`` merged into the body, ``max_tokens`` turned into
``max_completion_tokens``, ``deployment_id`` into the Azure URL, ...), so a hostile client can make
the provider do more than the plugin reserved. This server plays an OpenAI-compatible provider (and
Anthropic's Messages API) and, for every request it receives, computes the bill a real provider
would charge, from the body it actually got:

* prompt tokens: LiteLLM's token counter over everything billable in the body -- ``messages`` and
  ``tools`` (LiteLLM's chat counter), and the JSON text of ``functions``, ``prompt``, ``input``,
  ``instructions``, ``system`` (a token-id list counts one token per id);
* completion tokens: every token the request allowed -- the largest of ``max_tokens``,
  ``max_completion_tokens`` and ``max_output_tokens`` it received (``default_output_tokens`` when
  none), generated in full (``output_share`` of it, rounded up, when a test wants less), times ``n``;
  a limit above the model's ``max_output_tokens`` is refused with a 400, as providers do, and not
  billed;
* the price: LiteLLM's price map for the model it was asked for (``input_cost_per_token``/
  ``output_cost_per_token``; ``input_cost_per_character`` for text-to-speech), or ``prices`` given
  to the constructor. An unknown model is a 404, not billed.

It answers with a real usage block consistent with that bill (the generated text is exactly that
many tokens of " ok" per choice), streams (SSE) when the body it received says ``stream: true``
-- whatever the client that sent it expected -- and executes a batch (``/v1/files`` +
``/v1/batches``) by billing each of its lines at the batch price. ``bills`` is everything billed,
in order; ``total_usd`` their sum.

Stdlib + LiteLLM only (LiteLLM's token counter and price map are the real parts); test-only, so it
lives under ``tests/``.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import litellm

#: the bundled price map as LiteLLM ships it (what ``LITELLM_LOCAL_MODEL_COST_MAP=True`` loads), read
#: once from its file: a provider's prices are not changed by the Routers a test process builds
#: (a Router registers its deployments' ``model_info`` prices into ``litellm.model_cost`` under
#: their model names, so the process-wide map is not a provider's price list after other tests)
_PRICE_LIST: dict[str, Any] = json.loads(
    (Path(litellm.__file__).parent / "model_prices_and_context_window_backup.json").read_text(encoding="utf-8"))

#: the text-bearing fields a provider bills as prompt, besides chat ``messages``/``tools``
PROMPT_FIELDS = ("functions", "prompt", "input", "instructions", "system")
LIMIT_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
WORD = " ok"  # one token in every tokenizer LiteLLM uses for these models


class Refused(Exception):
    """The provider refuses the request (not billed): an HTTP status and a message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Bill:
    """One billed provider call."""

    seq: int
    path: str
    model: str
    prompt_tokens: int
    completion_tokens: int  # all choices
    usd: float
    stream: bool
    body: Any = field(repr=False)
    headers: dict[str, str] = field(repr=False, default_factory=dict)


@dataclass(frozen=True)
class Received:
    """One request received, billed or not."""

    seq: int
    path: str
    status: int
    body: Any = field(repr=False)


def _count_text(model: str, value: Any) -> int:
    """Tokens of one billable field: a string's text, a token-id list's length, else its JSON text."""
    if value is None:
        return 0
    if isinstance(value, str):
        return litellm.token_counter(model=model, text=value, count_response_tokens=True) if value else 0
    if isinstance(value, list) and value and all(isinstance(x, int) and not isinstance(x, bool) for x in value):
        return len(value)
    if isinstance(value, list) and value and all(isinstance(x, list) for x in value):
        return sum(_count_text(model, x) for x in value)
    if isinstance(value, list) and all(isinstance(x, str) for x in value):
        return sum(_count_text(model, x) for x in value)
    return _count_text(model, json.dumps(value, default=str))


def prompt_tokens(model: str, body: dict[str, Any]) -> int:
    """What a provider bills as prompt for ``body``: messages and tools by LiteLLM's chat counter
    (the JSON text when it cannot read them), plus every other billable field."""
    tokens = 0
    messages, tools = body.get("messages"), body.get("tools")
    if messages is not None or tools is not None:
        try:
            tokens += litellm.token_counter(model=model, messages=messages if isinstance(messages, list) else [],
                                            tools=tools if isinstance(tools, list) else None)
            if messages is not None and not isinstance(messages, list):
                tokens += _count_text(model, messages)
        except Exception:  # noqa: BLE001 - a shape the counter cannot read is still text the provider reads
            tokens += _count_text(model, messages) + _count_text(model, tools)
    for name in PROMPT_FIELDS:
        tokens += _count_text(model, body.get(name))
    return max(tokens, 1)


class BillingProvider:
    """The fake provider, on 127.0.0.1 in a background thread. ``url`` is the ``api_base`` to give
    LiteLLM (``.../v1``; Azure deployments use ``origin``; Anthropic ones ``origin`` too)."""

    def __init__(self, *, prices: dict[str, dict[str, float]] | None = None, default_output_tokens: int = 16,
                 output_share: float = 1.0, stream_deltas: int = 1, stream_pause_s: float = 0.0) -> None:
        #: a Responses or Anthropic stream sends its text in this many delta events, each written
        #: (and flushed) ``stream_pause_s`` after the one before: a reader can stop part-way
        self.stream_deltas = max(1, stream_deltas)
        self.stream_pause_s = stream_pause_s
        self.prices = dict(prices or {})
        self.default_output_tokens = default_output_tokens
        self.output_share = output_share
        self._lock = threading.Lock()
        self._bills: list[Bill] = []
        self._received: list[Received] = []
        self._files: dict[str, bytes] = {}
        self._batches: dict[str, dict[str, Any]] = {}
        self._seq = 0
        self._answer_override: bytes | None = None
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------------
    def __enter__(self) -> "BillingProvider":
        handler = type("_Bound", (_Handler,), {"provider": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="billing-provider", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def origin(self) -> str:
        assert self._server is not None, "use `with BillingProvider() as p:`"
        return f"http://127.0.0.1:{self._server.server_port}"

    @property
    def url(self) -> str:
        return self.origin + "/v1"

    def answer_with(self, body: Any) -> None:
        """Bill every request as usual, but answer HTTP 200 with ``body`` (JSON-encoded unless
        bytes) instead of a well-formed answer: a provider answer LiteLLM fails to read after the
        provider billed it. ``None`` restores normal answers."""
        self._answer_override = None if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()

    # -- observation ---------------------------------------------------------------------------------
    @property
    def bills(self) -> list[Bill]:
        with self._lock:
            return list(self._bills)

    @property
    def received(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    def mark(self) -> int:
        """A position in the request sequence: ``bills_since(mark)`` is what was billed after it."""
        with self._lock:
            return self._seq

    def bills_since(self, mark: int) -> list[Bill]:
        with self._lock:
            return [b for b in self._bills if b.seq >= mark]

    @property
    def total_usd(self) -> float:
        return sum(b.usd for b in self.bills)

    # -- pricing ---------------------------------------------------------------------------------------
    def price(self, model: str, *, azure: bool = False) -> dict[str, float]:
        if model in self.prices:
            return self.prices[model]
        for name in ((f"azure/{model}", model) if azure else (model,)):
            info = _PRICE_LIST.get(name)
            if info:
                return info
        raise Refused(404, f"The model `{model}` does not exist or you do not have access to it.")

    def bill(self, path: str, model: str, body: dict[str, Any], headers: dict[str, str], *, azure: bool = False,
             batch: bool = False) -> Bill:
        """Price one request as received (raises :class:`Refused` for what a provider refuses)."""
        info = self.price(model, azure=azure)
        if "input_cost_per_character" in info and "input_cost_per_token" not in info:
            text = body.get("input")
            if not isinstance(text, str):
                raise Refused(400, "'input' must be a string")
            return self._record(path, model, len(text), 0, len(text) * info["input_cost_per_character"], body, headers)
        stream = body.get("stream") is True
        prompt = prompt_tokens(model, body)
        completion = 0 if path.endswith("/embeddings") else self.completion_tokens(model, body, info)
        suffix = "_batches" if batch else ""
        in_price = info.get("input_cost_per_token" + suffix, info.get("input_cost_per_token", 0.0))
        out_price = info.get("output_cost_per_token" + suffix, info.get("output_cost_per_token", 0.0))
        return self._record(path, model, prompt, completion, prompt * in_price + completion * out_price, body,
                            headers, stream=stream)

    def completion_tokens(self, model: str, body: dict[str, Any], info: dict[str, Any]) -> int:
        """Every output token the body allows, times ``n``; a provider's 400 for a bad limit or n."""
        limits = []
        for name in LIMIT_FIELDS:
            value = body.get(name)
            if value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise Refused(400, f"Invalid '{name}': expected an integer >= 1, got {value!r}")
            limits.append(value)
        limit = max(limits) if limits else self.default_output_tokens
        ceiling = info.get("max_output_tokens") or info.get("max_tokens")
        if isinstance(ceiling, int) and limit > ceiling:
            raise Refused(400, f"max_tokens is too large: {limit}. This model supports at most {ceiling} "
                               "completion tokens.")
        n = body.get("n", 1)
        if n is None:
            n = 1
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 128:
            raise Refused(400, f"Invalid 'n': expected an integer in [1, 128], got {n!r}")
        return math.ceil(limit * self.output_share) * n

    def _record(self, path: str, model: str, prompt: int, completion: int, usd: float, body: Any,
                headers: dict[str, str], stream: bool = False) -> Bill:
        with self._lock:
            bill = Bill(self._seq - 1, path, model, prompt, completion, usd, stream, body, headers)
            self._bills.append(bill)
            return bill

    def _receive(self, path: str, status: int, body: Any) -> None:
        with self._lock:
            self._received.append(Received(self._seq - 1, path, status, body))

    def _next_seq(self) -> None:
        with self._lock:
            self._seq += 1


# -- the wire ---------------------------------------------------------------------------------------------

_AZURE = re.compile(r"^/openai/deployments/(?P<dep>[^/]+)/(?P<op>chat/completions|completions|embeddings|audio/speech)$")


def _text(tokens: int) -> str:
    return WORD.strip() + WORD * (tokens - 1) if tokens > 0 else ""


def _pieces(text: str, n: int) -> list[str]:
    """``text`` cut into ``n`` consecutive pieces (fewer if it is shorter), at word starts."""
    words = text.split(" ")
    size = max(1, -(-len(words) // n))
    return [" ".join(words[i:i + size]) + (" " if i + size < len(words) else "") for i in range(0, len(words), size)]


def _usage(bill: Bill) -> dict[str, Any]:
    return {"prompt_tokens": bill.prompt_tokens, "completion_tokens": bill.completion_tokens,
            "total_tokens": bill.prompt_tokens + bill.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0}}


def _choices(bill: Bill, body: dict[str, Any]) -> tuple[int, int]:
    n = body.get("n") or 1
    return n, (bill.completion_tokens // n if n else 0)


class _Handler(BaseHTTPRequestHandler):
    provider: BillingProvider
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, obj: Any, content_type: str = "application/json") -> None:
        data = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str, anthropic: bool = False) -> None:
        if anthropic:
            self._send(status, {"type": "error", "error": {"type": "invalid_request_error", "message": message}})
        else:
            self._send(status, {"error": {"message": message, "type": "invalid_request_error", "param": None,
                                          "code": None}})

    def _sse(self, frames: list[str]) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("connection", "close")
        self.end_headers()
        self.close_connection = True
        try:
            for i, frame in enumerate(frames):
                if i and self.provider.stream_pause_s:
                    self.wfile.flush()
                    time.sleep(self.provider.stream_pause_s)
                self.wfile.write(frame.encode())
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_GET(self) -> None:  # noqa: N802
        path = urlsplit(self.path).path
        p = self.provider
        m = re.match(r"^/v1/(files|batches)/([^/]+)(/content)?$", path)
        if m and m.group(1) == "files" and m.group(2) in p._files:
            if m.group(3):
                self._send(200, p._files[m.group(2)], "application/octet-stream")
            else:
                self._send(200, _file_object(m.group(2), p._files[m.group(2)]))
            return
        if m and m.group(1) == "batches" and m.group(2) in p._batches:
            self._send(200, p._batches[m.group(2)])
            return
        self._error(404, f"no such object: {path}")

    def do_POST(self) -> None:  # noqa: N802
        p = self.provider
        p._next_seq()
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        path = urlsplit(self.path).path
        headers = {k.lower(): v for k, v in self.headers.items()}
        anthropic = path == "/v1/messages"
        if path == "/v1/files":
            file_id = "file-" + uuid.uuid4().hex[:24]
            with p._lock:
                p._files[file_id] = raw
            p._receive(path, 200, None)
            self._send(200, _file_object(file_id, raw))
            return
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            p._receive(path, 400, raw[:200])
            self._error(400, "We could not parse the JSON body of your request.", anthropic)
            return
        if not isinstance(body, dict):
            p._receive(path, 400, body)
            self._error(400, "The request body must be a JSON object.", anthropic)
            return
        try:
            self._serve(path, body, headers)
        except Refused as e:
            p._receive(path, e.status, body)
            self._error(e.status, str(e), anthropic)

    def _serve(self, path: str, body: dict[str, Any], headers: dict[str, str]) -> None:
        p = self.provider
        if path == "/v1/batches":
            self._batch(body, headers)
            return
        azure = _AZURE.match(path)
        model = azure.group("dep") if azure else body.get("model")
        if not isinstance(model, str) or not model:
            raise Refused(400, "you must provide a model parameter")
        op = ("/" + azure.group("op")) if azure else path.removeprefix("/v1")
        if op not in ("/chat/completions", "/completions", "/embeddings", "/responses", "/audio/speech", "/messages"):
            raise Refused(404, f"path {path} not found")
        if op == "/messages" and not isinstance(body.get("max_tokens"), int):
            raise Refused(400, "max_tokens: Field required")
        bill = p.bill(path, model, body, headers, azure=bool(azure))
        p._receive(path, 200, body)
        if p._answer_override is not None:
            self._send(200, p._answer_override)
            return
        if op == "/audio/speech":
            self._send(200, b"ID3" + b"\0" * 64, "audio/mpeg")
        elif op == "/embeddings":
            items = body.get("input")
            count = len(items) if isinstance(items, list) and items and not isinstance(items[0], int) else 1
            self._send(200, {"object": "list", "model": model,
                             "data": [{"object": "embedding", "index": i, "embedding": [0.0] * 8} for i in range(count)],
                             "usage": {"prompt_tokens": bill.prompt_tokens, "total_tokens": bill.prompt_tokens}})
        elif op == "/messages":
            self._messages(bill, model, body)
        elif op == "/responses":
            self._responses(bill, model, body)
        else:
            self._chat(bill, model, body, text_completion=(op == "/completions"))

    def _chat(self, bill: Bill, model: str, body: dict[str, Any], text_completion: bool) -> None:
        n, each = _choices(bill, body)
        cid = "chatcmpl-" + uuid.uuid4().hex[:24]
        created = int(time.time())
        if bill.stream:
            obj = "text_completion" if text_completion else "chat.completion.chunk"
            frames = []
            for i in range(n):
                piece = {"index": i, "text": _text(each), "finish_reason": None} if text_completion else {
                    "index": i, "delta": {"role": "assistant", "content": _text(each)}, "finish_reason": None}
                frames.append({"id": cid, "object": obj, "created": created, "model": model, "choices": [piece]})
            for i in range(n):
                end = {"index": i, "text": "", "finish_reason": "length"} if text_completion else {
                    "index": i, "delta": {}, "finish_reason": "length"}
                frames.append({"id": cid, "object": obj, "created": created, "model": model, "choices": [end]})
            if (body.get("stream_options") or {}).get("include_usage") is True:
                frames.append({"id": cid, "object": obj, "created": created, "model": model, "choices": [],
                               "usage": _usage(bill)})
            self._sse([f"data: {json.dumps(f)}\n\n" for f in frames] + ["data: [DONE]\n\n"])
            return
        if text_completion:
            choices = [{"index": i, "text": _text(each), "finish_reason": "length", "logprobs": None} for i in range(n)]
            obj = "text_completion"
        else:
            choices = [{"index": i, "message": {"role": "assistant", "content": _text(each), "refusal": None},
                        "finish_reason": "length", "logprobs": None} for i in range(n)]
            obj = "chat.completion"
        self._send(200, {"id": cid, "object": obj, "created": created, "model": model, "choices": choices,
                         "usage": _usage(bill), "system_fingerprint": "fp_billing"})

    def _messages(self, bill: Bill, model: str, body: dict[str, Any]) -> None:
        usage = {"input_tokens": bill.prompt_tokens, "output_tokens": bill.completion_tokens,
                 "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
        mid = "msg_" + uuid.uuid4().hex[:24]
        text = _text(bill.completion_tokens)
        if bill.stream:
            start = {"type": "message_start", "message": {"id": mid, "type": "message", "role": "assistant",
                     "model": model, "content": [], "stop_reason": None, "stop_sequence": None,
                     "usage": {**usage, "output_tokens": 1}}}
            events = [("message_start", start),
                      ("content_block_start", {"type": "content_block_start", "index": 0,
                                               "content_block": {"type": "text", "text": ""}}),
                      *(("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                 "delta": {"type": "text_delta", "text": piece}})
                        for piece in _pieces(text, self.provider.stream_deltas)),
                      ("content_block_stop", {"type": "content_block_stop", "index": 0}),
                      ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "max_tokens",
                                         "stop_sequence": None}, "usage": {"output_tokens": bill.completion_tokens}}),
                      ("message_stop", {"type": "message_stop"})]
            self._sse([f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events])
            return
        self._send(200, {"id": mid, "type": "message", "role": "assistant", "model": model,
                         "content": [{"type": "text", "text": text}], "stop_reason": "max_tokens",
                         "stop_sequence": None, "usage": usage})

    def _responses(self, bill: Bill, model: str, body: dict[str, Any]) -> None:
        rid = "resp_" + uuid.uuid4().hex[:24]
        text = _text(bill.completion_tokens)
        message = {"type": "message", "id": "msg_" + uuid.uuid4().hex[:24], "status": "completed", "role": "assistant",
                   "content": [{"type": "output_text", "text": text, "annotations": []}]}
        response = {"id": rid, "object": "response", "created_at": int(time.time()), "status": "completed",
                    "model": model, "output": [message], "parallel_tool_calls": True, "tool_choice": "auto",
                    "tools": [], "error": None, "incomplete_details": None, "instructions": None, "metadata": {},
                    "temperature": 1.0, "top_p": 1.0, "max_output_tokens": body.get("max_output_tokens"),
                    "previous_response_id": None, "reasoning": {"effort": None, "summary": None},
                    "text": {"format": {"type": "text"}}, "truncation": "disabled",
                    "usage": {"input_tokens": bill.prompt_tokens, "output_tokens": bill.completion_tokens,
                              "total_tokens": bill.prompt_tokens + bill.completion_tokens,
                              "input_tokens_details": {"cached_tokens": 0},
                              "output_tokens_details": {"reasoning_tokens": 0}}}
        if bill.stream:
            events = [{"type": "response.created", "response": {**response, "status": "in_progress", "output": [],
                                                                "usage": None}},
                      *({"type": "response.output_text.delta", "item_id": message["id"], "output_index": 0,
                         "content_index": 0, "delta": piece} for piece in _pieces(text, self.provider.stream_deltas)),
                      {"type": "response.completed", "response": response}]
            self._sse([f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events])
            return
        self._send(200, response)

    def _batch(self, body: dict[str, Any], headers: dict[str, str]) -> None:
        """Run a batch at once: every line of its input file is billed at the batch price."""
        p = self.provider
        raw = p._files.get(str(body.get("input_file_id")))
        if raw is None:
            raise Refused(400, f"input_file_id {body.get('input_file_id')!r} not found")
        lines = [json.loads(line) for line in re.findall(rb'\{"custom_id".*\}', raw)]
        for line in lines:
            request = line.get("body") or {}
            try:
                p.bill(str(line.get("url")), str(request.get("model")), request, headers, batch=True)
            except Refused:
                continue  # a line the provider refuses is not billed
        batch_id = "batch_" + uuid.uuid4().hex[:24]
        obj = {"id": batch_id, "object": "batch", "endpoint": body.get("endpoint"), "errors": None,
               "input_file_id": body.get("input_file_id"), "completion_window": body.get("completion_window", "24h"),
               "status": "completed", "output_file_id": None, "error_file_id": None, "created_at": int(time.time()),
               "request_counts": {"total": len(lines), "completed": len(lines), "failed": 0},
               "metadata": body.get("metadata")}
        with p._lock:
            p._batches[batch_id] = obj
        p._receive("/v1/batches", 200, body)
        self._send(200, obj)


def _file_object(file_id: str, raw: bytes) -> dict[str, Any]:
    return {"id": file_id, "object": "file", "bytes": len(raw), "created_at": int(time.time()),
            "filename": "batch.jsonl", "purpose": "batch", "status": "processed", "status_details": None}
