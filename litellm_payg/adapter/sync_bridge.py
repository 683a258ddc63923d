"""Serve synchronous calls through the async path, on one background event loop.

LiteLLM's ``Router.completion`` (sync) skips ``async_filter_deployments``, so a policy attached to a
Router would silently not govern sync calls. Rather than refuse them, the adapter replaces the
router's ``completion`` with one that runs ``acompletion`` on this loop and waits: the same filter,
callbacks, retries and fallbacks apply. One long-lived loop (not ``asyncio.run`` per call) keeps
LiteLLM's cached async HTTP clients valid between calls.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    """A daemon thread running an event loop; ``run`` blocks the caller until a coroutine finishes."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def _ensure(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="litellm-payg-sync", daemon=True)
                thread.start()
                self._loop = loop
            return self._loop

    def run(self, coro: Awaitable[T]) -> T:
        loop = self._ensure()
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            raise RuntimeError("litellm-payg: a sync Router call made from the bridge's own loop would deadlock")
        return asyncio.run_coroutine_threadsafe(coro, loop).result()  # type: ignore[arg-type]

    def iterate(self, stream: Any) -> Iterator[Any]:
        """Turn an async stream from ``acompletion(stream=True)`` into a sync iterator."""
        agen = stream.__aiter__()

        async def step() -> tuple[bool, Any]:
            try:
                return True, await agen.__anext__()
            except StopAsyncIteration:
                return False, None

        while True:
            more, chunk = self.run(step())
            if not more:
                return
            yield chunk


BRIDGE = LoopThread()
