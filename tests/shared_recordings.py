"""Reading ../shared/provider-recordings in place: real provider HTTP recordings from public projects
(see its SOURCES.md), used as a conformance suite and never copied into this repo.

One place for what every test that reads them needs: where they are, skipping (or, with ``CI`` set,
failing) when the folder is absent, the folder's own ``load_cassette.py`` (it turns the pydantic-ai
variant into stock vcrpy), a response body as text, and a read-only vcrpy persister.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

RECORDINGS = Path(__file__).resolve().parents[1].parent / "shared" / "provider-recordings"


def require_recordings() -> None:
    """Skip the calling test where the folder is absent; fail it when ``CI`` is set."""
    if RECORDINGS.is_dir():
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but the provider recordings folder {RECORDINGS} is missing")
    pytest.skip(f"provider recordings not found at {RECORDINGS} (a sibling 'shared/' checkout); CI has them")


@functools.cache
def _loader() -> Any:
    spec = importlib.util.spec_from_file_location("_provider_recordings_loader", RECORDINGS / "load_cassette.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load(name: str | Path) -> tuple[list[Any], list[dict[str, Any]]]:
    """A recording's (vcrpy requests, response dicts), by path or by name under RECORDINGS."""
    require_recordings()
    return _loader().load(str(RECORDINGS / name))


def body_text(response: dict[str, Any]) -> str:
    """A recorded response body as text, gunzipped when it was recorded compressed."""
    body = response["body"]["string"]
    if isinstance(body, bytes):
        encoding = {k.lower(): v for k, v in response["headers"].items()}.get("content-encoding") or []
        if "gzip" in encoding:
            body = gzip.decompress(body)
        body = body.decode()
    return body


def read_only_persister(transform: Callable[[Any, dict[str, Any]], None] | None = None) -> type:
    """A vcrpy persister that loads recordings through :func:`load` (``transform(request, response)``
    applied to each interaction first, if given) and refuses to write."""

    class ReadOnlyRecordings:
        @staticmethod
        def load_cassette(cassette_path: Any, serializer: Any) -> Any:
            requests, responses = load(cassette_path)
            if transform is not None:
                for request, response in zip(requests, responses):
                    transform(request, response)
            return requests, responses

        @staticmethod
        def save_cassette(cassette_path: Any, cassette_dict: Any, serializer: Any) -> None:
            raise AssertionError(f"the shared recordings are read-only; refusing to write {cassette_path}")

    return ReadOnlyRecordings
