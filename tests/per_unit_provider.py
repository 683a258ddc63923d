"""A fake provider for the answers billed per unit, not per token: OpenAI image generation,
transcription and moderation, Cohere rerank. Each answers in its provider's wire format, through
LiteLLM's real clients, so LiteLLM prices the answer as it would a real one (per image, per second
of audio, per search). Stdlib only; test-only."""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: the seconds of audio a transcription answer reports (``verbose_json``), which LiteLLM bills
AUDIO_SECONDS = 12.5


class PerUnitProvider:
    """``with PerUnitProvider() as p:`` ``p.url`` is the ``api_base`` (OpenAI: ``.../v1``; Cohere:
    ``p.origin``). ``p.paths`` lists the paths it answered, in order."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def __enter__(self) -> "PerUnitProvider":
        handler = type("_Bound", (_Handler,), {"provider": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def origin(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_port}"

    @property
    def url(self) -> str:
        return self.origin + "/v1"


class _Handler(BaseHTTPRequestHandler):
    provider: PerUnitProvider
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, obj: Any, status: int = 200) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        path = self.path.split("?", 1)[0]
        with self.provider._lock:
            self.provider.paths.append(path)
        body: Any = {}
        if self.headers.get("content-type", "").startswith("application/json"):
            body = json.loads(raw or b"{}")
        if path.endswith("/images/generations"):
            n = int(body.get("n") or 1)
            self._send({"created": int(time.time()), "data": [{"url": f"https://example.invalid/{i}.png",
                                                               "revised_prompt": body.get("prompt")} for i in range(n)]})
        elif path.endswith("/audio/transcriptions"):
            self._send({"task": "transcribe", "language": "english", "duration": AUDIO_SECONDS, "text": "hello there",
                        "segments": []})
        elif path.endswith("/moderations"):
            self._send({"id": "modr-" + uuid.uuid4().hex[:8], "model": body.get("model") or "omni-moderation-latest",
                        "results": [{"flagged": False, "categories": {}, "category_scores": {}}]})
        elif path.endswith("/rerank"):
            docs = body.get("documents") or []
            self._send({"id": uuid.uuid4().hex, "results": [{"index": i, "relevance_score": 1.0 / (i + 1)}
                                                             for i in range(len(docs))],
                        "meta": {"api_version": {"version": "2"}, "billed_units": {"search_units": 1}}})
        else:
            self._send({"error": {"message": f"path {path} not found", "type": "invalid_request_error"}}, 404)
