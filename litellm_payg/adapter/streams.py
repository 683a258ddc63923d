"""A governed stream is settled when its last chunk is read, or when it is dropped unread.

Why: LiteLLM charges a stream on its success log, which it schedules as a task when the stream
ends; a script whose event loop closes right after it read the last chunk never runs that task,
and a stream the caller stops reading produces no success and no failure event at all. Either way
the reservation stayed open until it expired and was then charged in full.

How: the door (:meth:`PaygRouting.answered`) hands the Router's stream to
:func:`settle_when_read`, which returns the *same object* with its class swapped for a subclass
whose ``__anext__`` settles the attempt when LiteLLM's own iteration ends (``StopAsyncIteration``,
after LiteLLM assembled the answer). The object and its type's ancestry stay LiteLLM's, so the
proxy's own checks on it (``isinstance(response, CustomStreamWrapper)``, which arms its deferred
stream guardrails) still hold: a wrapper object would break them.

The charge is the one every answer gets (:meth:`PaygRouting.settle_answer`), for the answer
LiteLLM assembles from the chunks (``litellm.stream_chunk_builder``: the provider's usage, or
LiteLLM's count where it sent none) priced by LiteLLM's cost calculator. A stream dropped before
its end (garbage-collected, or the interpreter exits) is charged what was streamed until then
(prompt plus the chunks read, as LiteLLM counts them), marked ``usage: estimated`` and
``abandoned: stream_dropped``: the same rule as LiteLLM's proxy billing of a client that hangs up,
and never $0 (the prompt is always counted; with nothing countable, the reservation). A stream
LiteLLM's cache replayed is charged $0, marked ``cache_hit``. A stream that raises is left to the
failure paths (the failure hook and log), which know why it failed.
"""

from __future__ import annotations

import atexit
import logging
import threading
import weakref
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import litellm
from litellm.litellm_core_utils.streaming_handler import CustomStreamWrapper

from litellm_payg.adapter import charges

logger = logging.getLogger("litellm_payg")

#: the record's ``abandoned`` attribute for a stream the calling code stopped reading and dropped
DROPPED = "stream_dropped"


def is_stream(response: Any) -> bool:
    """Whether ``response`` is a chat or text completion stream this module can settle."""
    return isinstance(response, CustomStreamWrapper)


class _Watch:
    """What settling one stream needs, held apart from the stream object so that the finalizer
    that settles a dropped stream does not keep the stream alive."""

    __slots__ = ("adapter", "state", "deployment_id", "chunks", "messages", "tools", "logging_obj", "model",
                 "metadata", "cache_hit", "settled", "finalizer", "__weakref__")

    def __init__(self, adapter: Any, state: Any, stream: CustomStreamWrapper, request: Mapping[str, Any]):
        self.adapter = weakref.ref(adapter)
        self.state = state
        hidden = getattr(stream, "_hidden_params", None) or {}
        self.deployment_id = None if hidden.get("model_id") is None else str(hidden["model_id"])
        self.chunks = stream.chunks  # LiteLLM's own list of what was streamed, appended as it goes
        self.messages = request.get("messages") or getattr(stream, "messages", None)
        self.tools = charges.tools_of(request)
        self.logging_obj = getattr(stream, "logging_obj", None)
        self.model = hidden.get("litellm_model_name") or getattr(stream, "model", None)
        self.metadata = [m for m in (request.get("metadata"), request.get("litellm_metadata")) if isinstance(m, Mapping)]
        self.cache_hit = charges.served_from_cache(stream)
        self.settled = False
        self.finalizer: weakref.finalize | None = None


class _SettlesWhenRead:
    """Mixed in before a LiteLLM stream class (see the module docstring)."""

    _payg_watch: _Watch

    async def __anext__(self) -> Any:
        try:
            return await super().__anext__()  # type: ignore[misc]
        except StopAsyncIteration:
            _settle(self._payg_watch, finished=True, stream=self)
            raise
        except Exception:  # not a cancelled read (no failure LiteLLM reports): that one settles when dropped
            _forget(self._payg_watch)  # a failure: the failure hook or log settles it, knowing why
            raise


_CLASSES: dict[type, type] = {}
#: streams armed and not settled yet, settled at interpreter exit (see :func:`_settle_dropped_at_exit`)
_ARMED: set[_Watch] = set()
_ARMED_LOCK = threading.Lock()


def _settling_class(cls: type) -> type:
    sub = _CLASSES.get(cls)
    if sub is None:
        sub = _CLASSES[cls] = type(cls.__name__, (_SettlesWhenRead, cls), {
            "__module__": cls.__module__,
            "__doc__": f"{cls.__doc__ or cls.__name__}\n\n(settled by litellm-payg when its last chunk is read)",
        })
    return sub


def settle_when_read(adapter: Any, state: Any, stream: CustomStreamWrapper, request: Mapping[str, Any]) -> CustomStreamWrapper:
    """Arm ``stream`` (returned as is) to settle its attempt when its last chunk is read, or when
    it is dropped before that (see the module docstring)."""
    watch = _Watch(adapter, state, stream, request)
    if watch.deployment_id is None or isinstance(stream, _SettlesWhenRead):
        return stream  # not one the Router stamped, or armed already: LiteLLM's success log settles it
    stream._payg_watch = watch  # type: ignore[attr-defined]
    stream.__class__ = _settling_class(type(stream))
    watch.finalizer = weakref.finalize(stream, _settle, watch, False, None)
    watch.finalizer.atexit = False  # at exit, _settle_dropped_at_exit settles it and writes the record
    with _ARMED_LOCK:
        _ARMED.add(watch)
    return stream


def _forget(watch: _Watch) -> None:
    watch.settled = True
    with _ARMED_LOCK:
        _ARMED.discard(watch)
    if watch.finalizer is not None:
        watch.finalizer.detach()


@atexit.register
def _settle_dropped_at_exit() -> None:
    """Settle the streams still unread when the interpreter exits, and write their records now:
    a ledger's waiting (batched) records are written by its own exit hook, which may already have
    run (exit hooks run in the reverse order of registration, and weakref's finalizers run in theirs)."""
    with _ARMED_LOCK:
        armed = list(_ARMED)
    ledgers = []
    for watch in armed:
        adapter = watch.adapter()
        _settle(watch, finished=False, stream=None)
        if adapter is not None:
            ledgers.append(adapter.engine.spend.ledger)
    for ledger in {id(ledger): ledger for ledger in ledgers}.values():
        flush = getattr(ledger, "flush", None)
        if flush is not None:
            try:
                flush(quiet=True)
            except Exception:  # noqa: BLE001 - exit must go on; the ledger logged what it could not write
                logger.exception("litellm-payg: could not write a dropped stream's record at exit")


def _settle(watch: _Watch, finished: bool, stream: CustomStreamWrapper | None) -> None:
    """Settle the stream's attempt: the whole answer (``finished``) or what was streamed of it."""
    if watch.settled:
        return
    _forget(watch)
    adapter = watch.adapter()
    if adapter is None:
        return
    if not finished and any(m.get("client_disconnected") is True for m in watch.metadata):
        return  # the proxy's client hung up: LiteLLM's proxy bills what was streamed, on its success log
    try:
        _charge(adapter, watch, finished, stream)
    except Exception:  # noqa: BLE001 - settling must not break the caller's stream; the log event is the fallback
        logger.warning("litellm-payg: could not settle a stream of deployment %s inline; LiteLLM's success log "
                       "will settle it", watch.deployment_id, exc_info=True)


def _charge(adapter: Any, watch: _Watch, finished: bool, stream: CustomStreamWrapper | None) -> None:
    state, deployment_id = watch.state, watch.deployment_id
    if stream is not None:  # a fallback may have moved the stream to another deployment
        hidden = getattr(stream, "_hidden_params", None) or {}
        deployment_id = str(hidden.get("model_id") or deployment_id)
    open_ = state.reservations.get(deployment_id)
    if not open_:
        return  # settled already (LiteLLM's success log came first)
    messages = watch.messages if isinstance(watch.messages, list) else None
    answer = litellm.stream_chunk_builder(chunks=list(watch.chunks), messages=messages) if watch.chunks else None
    prompt_tokens, completion_tokens = charges.answer_tokens(answer) if answer is not None else (None, None)
    candidate = adapter._candidates.get(deployment_id)
    reserved = adapter.engine.spend.reserved_usd(open_[0])

    def litellm_cost() -> float | None:
        if answer is not None:
            return charges.attempt_cost({"litellm_logging_obj": watch.logging_obj}, answer, candidate)
        # nothing streamed yet: the prompt was sent, and billed
        prompt = adapter._prompt_tokens(state)
        priced = None if prompt is None else charges.price_tokens(candidate, str(watch.model or ""), prompt, 0)
        return priced if priced else reserved

    started = getattr(watch.logging_obj, "start_time", None)
    first = getattr(watch.logging_obj, "completion_start_time", None)
    charge = adapter.settle_answer(
        state, deployment_id, answer, prompt_tokens, completion_tokens, litellm_cost=litellm_cost,
        messages=watch.messages, tools=watch.tools, model=watch.model,
        latency=_since(started, datetime.now()) if finished else None,
        ttft=_since(started, first), cache_hit=watch.cache_hit, abandoned=None if finished else DROPPED,
    )
    if charge is not None and not finished:
        logger.warning(
            "litellm-payg: a stream from deployment %s was dropped before its end; charged what was streamed, "
            "$%s (%s prompt + %s completion tokens), marked as an estimate",
            deployment_id, charges.usd(charge.cost), charge.prompt_tokens, charge.completion_tokens,
        )
    if not state.open_reservations:
        adapter._finish(state)


def _since(start: Any, end: Any) -> float | None:
    try:
        return max(0.0, (end - start).total_seconds())
    except (TypeError, AttributeError):
        return None
