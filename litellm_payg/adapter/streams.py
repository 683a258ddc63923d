"""A governed stream is settled when its last event is read, or when it is dropped unread.

Why: LiteLLM charges a stream on its success log, which it schedules as a task (or on its logging
worker) when the stream ends; a script whose event loop closes right after it read the last event
never runs it, and a stream the caller stops reading produces no success and no failure event at
all. Either way the reservation stayed open until it expired and was then charged in full.

How: the door (:meth:`PaygRouting.answered`) hands the Router's stream to
:func:`settle_when_read`, which returns the *same object* with its class swapped for a subclass
whose ``__anext__`` watches what LiteLLM's own iteration yields and settles the attempt at the
stream's end. The object and its type's ancestry stay LiteLLM's, so the proxy's own checks on it
(``isinstance(response, CustomStreamWrapper)``, which arms its deferred stream guardrails; a
Responses stream's ``BaseResponsesAPIStreamingIterator``) still hold: a wrapper object would break
them. One mechanism for three stream families, each with a reader that knows where its usage is:

* chat and text completions (``CustomStreamWrapper``): the answer LiteLLM assembles from the chunks
  (``litellm.stream_chunk_builder``: the provider's usage, or LiteLLM's count where it sent none),
  settled when LiteLLM's iteration ends (``StopAsyncIteration``);
* the Responses API (``Router.aresponses(stream=True)``): the ``response`` of its terminal
  ``response.completed`` / ``response.incomplete`` event, settled as that event is read, at the
  bill LiteLLM stamped on its usage (its calculator's price);
* Anthropic ``/v1/messages`` (``Router.aanthropic_messages(stream=True)``, raw SSE bytes): the usage
  of ``message_start`` and ``message_delta``, assembled by LiteLLM's own usage reader, settled as
  ``message_stop`` is read.

The charge is the one every answer gets (:meth:`PaygRouting.settle_answer`). A stream dropped
before its end (garbage-collected, or the interpreter exits) is charged what was streamed until
then (the prompt plus the events read, as LiteLLM's token counter counts them), marked ``usage:
estimated`` and ``abandoned: stream_dropped``: the same rule as LiteLLM's proxy billing of a client
that hangs up, and never $0 (the prompt is always counted; with nothing countable, the
reservation). A stream LiteLLM's cache replayed is charged $0, marked ``cache_hit``. A stream that
raises (or a Responses stream that ends ``response.failed``) is left to the failure paths (the
failure hook and log), which know why it failed. Whichever settles first (this, or LiteLLM's later
success log) pops the reservation; the other finds none and charges nothing.
"""

from __future__ import annotations

import atexit
import json
import logging
import threading
import weakref
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import litellm
from litellm.litellm_core_utils.streaming_handler import CustomStreamWrapper

from litellm_payg.adapter import charges, litellm_versions
from litellm_payg.wire.request_checks import api_of
from litellm_payg.runtime import store_access

logger = logging.getLogger("litellm_payg")

#: the record's ``abandoned`` attribute for a stream the calling code stopped reading and dropped
DROPPED = "stream_dropped"

#: the API whose streams are Anthropic ``/v1/messages`` SSE (told apart by the door that returned
#: them: a ``generateContent`` stream also yields bytes, in another format)
ANTHROPIC_MESSAGES = "anthropic_messages"


class _Reader:
    """What one family of streams needs to be settled: it sees each item the caller reads and
    says when the answer is complete, and what was answered. Holds no reference to the stream
    (the finalizer that settles a dropped stream must not keep it alive)."""

    def __init__(self, stream: Any, request: Mapping[str, Any]) -> None:
        self.first_read: datetime | None = None

    def observe(self, item: Any) -> bool | None:
        """Note an item the caller read: True when it ends the answer (settle now), None when it
        ends the stream as a failure (the failure log settles it), else False."""
        return False

    def answer(self, watch: "_Watch", stream: Any) -> Any:
        """The whole answer, once the stream ended (``stream`` is the stream object); None if there is none."""
        return None

    def partial_answer(self) -> Any:
        """What was streamed of a dropped stream, as an answer LiteLLM can price; None: count it
        (:meth:`streamed_tokens`)."""
        return None

    def cost(self, watch: "_Watch", answer: Any, candidate: Any) -> float | None:
        """LiteLLM's cost of the whole answer."""
        return charges.attempt_cost({"litellm_logging_obj": watch.logging_obj}, answer, candidate)

    def streamed_tokens(self, watch: "_Watch", model: str) -> tuple[int | None, int]:
        """The prompt (None: not known from the stream) and completion tokens of what was read."""
        return None, 0


class _ChatReader(_Reader):
    """``CustomStreamWrapper``: LiteLLM keeps what was streamed in its own ``chunks`` list and
    assembles the answer from it (``litellm.stream_chunk_builder``)."""

    def __init__(self, stream: CustomStreamWrapper, request: Mapping[str, Any]) -> None:
        super().__init__(stream, request)
        self.chunks = stream.chunks  # LiteLLM's own list of what was streamed, appended as it goes
        self.messages = request.get("messages") or getattr(stream, "messages", None)

    def observe(self, item: Any) -> bool | None:
        return False  # the end is LiteLLM's StopAsyncIteration: it assembles the answer then

    def assembled(self) -> Any:
        messages = self.messages if isinstance(self.messages, list) else None
        return litellm.stream_chunk_builder(chunks=list(self.chunks), messages=messages) if self.chunks else None

    def answer(self, watch: "_Watch", stream: Any) -> Any:
        return self.assembled()

    def partial_answer(self) -> Any:
        return self.assembled()  # LiteLLM's count of the chunks read (its own rule for a client that hangs up)


#: Responses API events whose ``delta`` is generated text the provider bills as output
_RESPONSES_OUTPUT_DELTAS = frozenset({
    "response.output_text.delta", "response.refusal.delta", "response.function_call_arguments.delta",
    "response.custom_tool_call_input.delta", "response.reasoning_text.delta", "response.reasoning_summary_text.delta",
})
_RESPONSES_ANSWERED = frozenset({"response.completed", "response.incomplete"})


class _ResponsesReader(_Reader):
    """``Router.aresponses(stream=True)``: the terminal event carries the whole ``response`` with
    the provider's usage (LiteLLM's estimate where the provider sent none), on which LiteLLM
    stamps its bill (``usage.cost``) before yielding it."""

    def __init__(self, stream: Any, request: Mapping[str, Any]) -> None:
        super().__init__(stream, request)
        self.final: Any = None
        self.generated: list[str] = []

    def observe(self, item: Any) -> bool | None:
        kind = getattr(item, "type", None)
        if kind in _RESPONSES_OUTPUT_DELTAS:
            delta = getattr(item, "delta", None)
            if isinstance(delta, str):
                self.generated.append(delta)
            return False
        if kind in _RESPONSES_ANSWERED:
            self.final = getattr(item, "response", None)
            return self.final is not None
        if kind == "response.failed":
            return None
        return False

    def answer(self, watch: "_Watch", stream: Any) -> Any:
        if self.final is None and stream is not None:  # ended without our seeing it (a held event)
            completed = getattr(stream, "completed_response", None)
            if getattr(completed, "type", None) in _RESPONSES_ANSWERED:
                self.final = getattr(completed, "response", None)
        return self.final

    def cost(self, watch: "_Watch", answer: Any, candidate: Any) -> float | None:
        usage = charges.attribute(answer, "usage")
        billed = getattr(usage, "cost", None)  # LiteLLM's bill, stamped by its stream iterator
        if isinstance(billed, (int, float)) and not isinstance(billed, bool):
            return float(billed)
        return super().cost(watch, answer, candidate)

    def streamed_tokens(self, watch: "_Watch", model: str) -> tuple[int | None, int]:
        text = "".join(self.generated)
        return None, int(litellm.token_counter(model=model, text=text, count_response_tokens=True)) if text else 0


class _AnthropicReader(_Reader):
    """``Router.aanthropic_messages(stream=True)``: Anthropic's SSE bytes, usage in ``message_start``
    (input, cache reads and writes) and ``message_delta`` (output so far, cumulative). The events are
    parsed as they are read (an event may be split across byte chunks), to see ``message_stop`` and
    the text streamed; the usage is assembled by LiteLLM's own reader of those events."""

    def __init__(self, stream: Any, request: Mapping[str, Any]) -> None:
        super().__init__(stream, request)
        self.raw: list[bytes] = []
        self.pending = b""
        self.usage: dict[str, Any] = {}
        self.generated: list[str] = []

    def observe(self, item: Any) -> bool | None:
        if isinstance(item, str):
            item = item.encode()
        if isinstance(item, Mapping):  # an adapter that yields parsed events
            return self._event(item)
        if not isinstance(item, (bytes, bytearray)):
            return False
        self.raw.append(bytes(item))
        self.pending += bytes(item).replace(b"\r\n", b"\n")
        done = False
        while b"\n\n" in self.pending:
            frame, self.pending = self.pending.split(b"\n\n", 1)
            for line in frame.split(b"\n"):
                if line.startswith(b"data:"):
                    try:
                        event = json.loads(line[5:].strip())
                    except ValueError:
                        continue
                    if isinstance(event, Mapping):
                        done = self._event(event) or done
        return done

    def _event(self, event: Mapping[str, Any]) -> bool:
        kind = event.get("type")
        if kind == "message_start":
            usage = (event.get("message") or {}).get("usage")
            if isinstance(usage, Mapping):
                self.usage.update(usage)
        elif kind == "message_delta":
            usage = event.get("usage")
            if isinstance(usage, Mapping):
                self.usage.update({k: v for k, v in usage.items() if v is not None})
        elif kind == "content_block_delta":
            delta = event.get("delta") or {}
            for key in ("text", "partial_json", "thinking"):
                if isinstance(delta.get(key), str):
                    self.generated.append(delta[key])
        return kind == "message_stop"

    def answer(self, watch: "_Watch", stream: Any) -> Any:
        if not self.usage:
            return None
        # the usage as sent, ``message_delta`` (cumulative) over ``message_start``: LiteLLM's reader
        # takes the input counts from ``message_start`` only, and LiteLLM's own bridge from another
        # provider's API sends them in ``message_delta`` (``message_start`` says 0)
        merged = json.dumps(self.usage)
        events = [f'event: message_start\ndata: {{"type": "message_start", "message": {{"usage": {merged}}}}}\n\n',
                  f'event: message_delta\ndata: {{"type": "message_delta", "delta": {{}}, "usage": {merged}}}\n\n']
        answer = litellm_versions.anthropic_stream_usage([e.encode() for e in events], str(watch.model or ""))
        return answer if answer is not None else {"usage": dict(self.usage)}  # a LiteLLM without that reader

    def cost(self, watch: "_Watch", answer: Any, candidate: Any) -> float | None:
        if isinstance(answer, Mapping):
            return None  # no LiteLLM response to price: the deployment's price for the tokens
        # as LiteLLM's success log prices it (its Anthropic pass-through handler): its calculator on
        # the assembled usage, with the deployment's own prices where it has some
        return litellm_versions.completion_cost(answer, str(watch.model or (candidate.model if candidate else "")),
                                                watch.deployment_id)

    def streamed_tokens(self, watch: "_Watch", model: str) -> tuple[int | None, int]:
        prompt = None
        if "input_tokens" in self.usage:
            prompt = sum(int(self.usage.get(k) or 0) for k in ("input_tokens", "cache_read_input_tokens",
                                                                "cache_creation_input_tokens"))
        text = "".join(self.generated)
        counted = int(litellm.token_counter(model=model, text=text, count_response_tokens=True)) if text else 0
        return prompt, max(counted, int(self.usage.get("output_tokens") or 0))


def _reader_class(response: Any, api: str | None) -> type[_Reader] | None:
    if isinstance(response, CustomStreamWrapper):
        return _ChatReader
    if _RESPONSES_STREAM is not None and isinstance(response, _RESPONSES_STREAM):
        return _ResponsesReader
    if api_of(api) == ANTHROPIC_MESSAGES and hasattr(type(response), "__anext__"):
        return _AnthropicReader
    return None


try:
    from litellm.responses.streaming_iterator import BaseResponsesAPIStreamingIterator as _RESPONSES_STREAM
except ImportError:  # pragma: no cover - every supported LiteLLM has it
    _RESPONSES_STREAM = None  # type: ignore[assignment,misc]


def is_stream(response: Any, api: str | None = None) -> bool:
    """Whether ``response`` (answered by the Router method ``api``) is a stream this module settles:
    a chat or text completion, Responses API or Anthropic messages stream."""
    return _reader_class(response, api) is not None


class _Watch:
    """What settling one stream needs, held apart from the stream object so that the finalizer
    that settles a dropped stream does not keep the stream alive."""

    __slots__ = ("adapter", "state", "deployment_id", "reader", "messages", "tools", "logging_obj", "model",
                 "metadata", "cache_hit", "started", "settled", "finalizer", "__weakref__")

    def __init__(self, adapter: Any, state: Any, stream: Any, request: Mapping[str, Any], reader: _Reader):
        self.adapter = weakref.ref(adapter)
        self.state = state
        hidden = getattr(stream, "_hidden_params", None) or {}
        self.deployment_id = None if hidden.get("model_id") is None else str(hidden["model_id"])
        self.reader = reader
        self.messages = request.get("messages") or getattr(stream, "messages", None)
        self.tools = charges.tools_of(request)
        self.logging_obj = getattr(stream, "logging_obj", None)
        self.model = hidden.get("litellm_model_name") or getattr(stream, "model", None)
        self.metadata = [m for m in (request.get("metadata"), request.get("litellm_metadata")) if isinstance(m, Mapping)]
        self.cache_hit = charges.served_from_cache(stream)
        started = getattr(self.logging_obj, "start_time", None) or getattr(stream, "start_time", None)
        self.started = started if isinstance(started, datetime) else datetime.now()
        self.settled = False
        self.finalizer: weakref.finalize | None = None

    def first_read(self) -> datetime | None:
        first = getattr(self.logging_obj, "completion_start_time", None)
        return first if isinstance(first, datetime) else self.reader.first_read


class _SettlesWhenRead:
    """Mixed in before a LiteLLM stream class (see the module docstring)."""

    _payg_watch: _Watch

    async def __anext__(self) -> Any:
        watch = self._payg_watch
        try:
            item = await super().__anext__()  # type: ignore[misc]
        except StopAsyncIteration:
            _settle(watch, finished=True, stream=self)
            raise
        except Exception:  # not a cancelled read (no failure LiteLLM reports): that one settles when dropped
            _forget(watch)  # a failure: the failure hook or log settles it, knowing why
            raise
        if watch.settled:
            return item
        if watch.reader.first_read is None:
            watch.reader.first_read = datetime.now()
        try:
            ended = watch.reader.observe(item)
        except Exception:  # noqa: BLE001 - reading must not break the caller's stream; the end settles it
            logger.debug("litellm-payg: could not read a stream event", exc_info=True)
            ended = False
        if ended is None:
            _forget(watch)  # the stream ended in a failure event: LiteLLM's failure log settles it
        elif ended:
            _settle(watch, finished=True, stream=self)
        return item


_CLASSES: dict[type, type] = {}
#: streams armed and not settled yet, settled at interpreter exit (see :func:`_settle_dropped_at_exit`)
_ARMED: set[_Watch] = set()
_ARMED_LOCK = threading.Lock()


def _settling_class(cls: type) -> type:
    sub = _CLASSES.get(cls)
    if sub is None:
        sub = _CLASSES[cls] = type(cls.__name__, (_SettlesWhenRead, cls), {
            "__module__": cls.__module__,
            "__qualname__": getattr(cls, "__qualname__", cls.__name__),
            "__doc__": f"{cls.__doc__ or cls.__name__}\n\n(settled by litellm-payg when its last event is read)",
        })
    return sub


def settle_when_read(adapter: Any, state: Any, stream: Any, request: Mapping[str, Any], api: str | None = None) -> Any:
    """Arm ``stream`` (returned as is) to settle its attempt when its last event is read, or when
    it is dropped before that (see the module docstring). ``api`` is the Router method that
    returned it."""
    reader_class = _reader_class(stream, api)
    if reader_class is None or isinstance(stream, _SettlesWhenRead):
        return stream  # not one this module reads, or armed already
    watch = _Watch(adapter, state, stream, request, reader_class(stream, request))
    if watch.deployment_id is None:
        return stream  # not one the Router stamped: LiteLLM's success log settles it
    try:
        stream.__class__ = _settling_class(type(stream))
    except TypeError:  # a class whose layout forbids it (a LiteLLM release's slotted stream)
        logger.debug("litellm-payg: cannot watch a %s; LiteLLM's success log settles it", type(stream).__name__)
        return stream
    stream._payg_watch = watch
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
    engines = {}
    for watch in armed:
        adapter = watch.adapter()
        _settle(watch, finished=False, stream=None)
        if adapter is not None:
            engines.setdefault(store_access.ledger_identity(adapter.engine), adapter.engine)  # one flush per ledger
    for engine in engines.values():
        try:
            store_access.flush(engine)
        except Exception:  # noqa: BLE001 - exit must go on; the ledger logged what it could not write
            logger.exception("litellm-payg: could not write a dropped stream's record at exit")


def _settle(watch: _Watch, finished: bool, stream: Any) -> None:
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


def _charge(adapter: Any, watch: _Watch, finished: bool, stream: Any) -> None:
    state, deployment_id = watch.state, watch.deployment_id
    if stream is not None:  # a fallback may have moved the stream to another deployment
        hidden = getattr(stream, "_hidden_params", None) or {}
        deployment_id = str(hidden.get("model_id") or deployment_id)
    if not state.reservations.get(deployment_id):
        return  # settled already (LiteLLM's success log came first)
    reserved = adapter.attempts.of(state).open_usd(deployment_id)
    candidate = adapter._candidates.get(deployment_id)
    model = str((candidate.model if candidate else None) or watch.model or "")
    reader = watch.reader
    answer = reader.answer(watch, stream) if finished else reader.partial_answer()
    if finished and answer is None and not isinstance(reader, _ChatReader):
        finished = False  # it ended without its answer (no terminal event): charged as what was streamed
    if answer is not None:
        prompt_tokens, completion_tokens = charges.answer_tokens(answer)

        def litellm_cost() -> float | None:
            return reader.cost(watch, answer, candidate)
    else:
        streamed_prompt, completion_tokens = reader.streamed_tokens(watch, model)
        prompt_tokens = streamed_prompt if streamed_prompt is not None else adapter._prompt_tokens(state)

        def litellm_cost() -> float | None:
            # the prompt was sent, and billed, and what was read of the answer; else the reservation
            return charges.streamed_cost(candidate, model, prompt_tokens, completion_tokens, reserved)

    started = watch.started
    charge = adapter.settle_answer(
        state, deployment_id, answer, prompt_tokens, completion_tokens, litellm_cost=litellm_cost,
        messages=watch.messages, tools=watch.tools, model=watch.model,
        latency=_since(started, datetime.now()) if finished else None,
        ttft=_since(started, watch.first_read()), cache_hit=watch.cache_hit, abandoned=None if finished else DROPPED,
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
