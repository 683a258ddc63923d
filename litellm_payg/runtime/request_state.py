"""The plugin's own state for one request, kept where no client can write it.

LiteLLM calls the plugin several times per request (a pick per attempt, a failure hook per failed
attempt, a success log at the end), and each call gets the request's metadata dict. The state
that ties those calls together (reservations, attempts, the prompt's token count, the identity read
from the authenticated key, the decision) used to live *in* that dict, where a client could write
it: a shared ``litellm_trace_id`` made hundreds of requests share one reservation, and a forged
``payg_prompt_tokens`` let a huge prompt through a cap.

Now the plugin mints an id on first sight of a request (the OS's CSPRNG: unguessable, never sent to the
client) and keeps the state in a map keyed by it. The only thing written into metadata is that id,
under :data:`REQUEST_KEY`, so later calls can find the state again. A client cannot forge the key
(the proxy refuses client ``payg_*`` keys, :mod:`litellm_payg.wire.request_checks`), and an id the map
does not know, or one minted for another request (checked against LiteLLM's trace id), starts a
new state instead of joining one.

Which of LiteLLM's metadata dicts carries the id is the adapter's to read
(:func:`litellm_payg.adapter.request_metadata.metadata_of`): this module knows only the key.
"""

from __future__ import annotations

import collections
import os
import threading
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any


#: the metadata key holding the plugin's request id (the only state-bearing key it writes)
REQUEST_KEY = "payg_request"


@dataclass
class RequestState:
    """Everything the plugin knows about one request, across its attempts."""

    id: str
    #: LiteLLM's trace id (stable across retries and fallback hops; the client may set it, so it
    #: labels the request and tells a reused metadata dict apart, never keys a reservation)
    trace_id: str | None
    #: who sent it, from the authenticated key (proxy) or the calling code (SDK); set once
    identity: Any = None
    #: the prompt's tokens, counted once by the plugin, when something first needs them
    prompt_tokens: int | None = None
    #: counts the prompt (a zero-argument callable the adapter sets on the first pick) and keeps
    #: the count in ``prompt_tokens``; not called until a rule, a budget or a charge reads the size
    count_prompt: Any = None
    #: deployment ids picked so far, one per attempt
    attempts: list[str] = field(default_factory=list)
    #: open reservation ids per deployment, oldest first (attempts of a request are sequential)
    reservations: dict[str, list[str]] = field(default_factory=dict)
    #: (deployment id, exception, its diagnosed ``Failure``) of the last failed attempt, for the
    #: next pick's failover step (``runtime.attempt.Attempt``)
    last_failure: tuple[str, BaseException, Any] | None = None
    #: an error that ends the request (a budget block, a ``fail`` failover, a down ledger): raised
    #: again on every later hop so LiteLLM's retries and fallbacks cannot route around it
    final_error: BaseException | None = None
    #: the RouteRequest of the last pick, for the response validators
    request: Any = None
    #: the last pick's decision as stamped for observers (``payg_decision``), once :attr:`decision`
    #: was read; until then :attr:`decided` holds the Decision it is made from
    _decision: dict[str, Any] | None = None
    #: the last pick's Decision, until :attr:`decision` first reads it: the stamp (a dict per pick)
    #: is made only when something reads it (a simulated request's nothing does, unless an
    #: observer hears its outcome)
    decided: Any = None
    #: picks made so far (each gets its own reservation id)
    picks: int = 0
    #: LiteLLM call ids of attempts the failure hook already handled
    handled_calls: set[str] = field(default_factory=set)
    #: (deployment id, reservation id) of the last pick until LiteLLM sends the attempt
    unsent: tuple[str, str] | None = None
    #: the request went through a Router door (see ``PaygRouting.open_request``)
    entered: bool = False
    #: the request was answered; the state is kept only for late readers (response headers)
    finished: bool = False
    #: the API it entered through (``request_checks.api_of``), None when no door said
    api: str | None = None
    #: a speech request's input characters, read at the door
    characters: int | None = None
    #: the run id ``sessions.mint`` gave this request (it named none), for the response header
    minted_run: str | None = None
    #: the proxy has built the request's response headers: once answered too, nothing reads it
    headers_sent: bool = False

    @property
    def decision(self) -> dict[str, Any] | None:
        """The last pick's decision as stamped for observers (``Decision.as_dict(compact=True)``)."""
        if self.decided is not None:
            self._decision, self.decided = self.decided.as_dict(compact=True), None
        return self._decision

    @decision.setter
    def decision(self, value: dict[str, Any] | None) -> None:
        self._decision, self.decided = value, None

    def next_reservation_id(self) -> str:
        """A reservation id no other request can produce, and no other pick of this one: the
        plugin's id plus the pick's number (a released lookahead pick does not give its number back)."""
        self.picks += 1
        return f"{self.id}:{self.picks - 1}"

    def add_reservation(self, deployment_id: str, reservation_id: str) -> None:
        self.attempts.append(deployment_id)
        self.reservations.setdefault(deployment_id, []).append(reservation_id)

    def pop_reservation(self, deployment_id: str) -> str | None:
        """The oldest open reservation for ``deployment_id``, or None when it is already settled."""
        open_ = self.reservations.get(deployment_id)
        return open_.pop(0) if open_ else None

    @property
    def open_reservations(self) -> int:
        return sum(map(len, self.reservations.values())) if self.reservations else 0


class _RequestIds:
    """Request ids: 16 bytes from the operating system's CSPRNG each (what ``secrets.token_hex(16)``
    gives), taken from a pool of 256 ids' worth read at once.

    Why a pool: one ``os.urandom`` per request is a system call on the event loop for every request
    (and, in a governed Router, a cold one: about 10 us measured there, against 0.4 us in a loop).
    The bytes are as unguessable either way. A forked child (a proxy worker) reads its own pool
    (``os.register_at_fork``, not a ``getpid`` per id, which is a system call too): inheriting the
    parent's would mint the parent's next ids, and ids name reservations in a shared ledger.
    Thread-safe (every adapter's states mint from one pool)."""

    POOL = 16 * 256

    def __init__(self) -> None:
        self._pool = b""
        self._at = 0
        self._lock = threading.Lock()

    def next(self) -> str:
        with self._lock:
            at = self._at
            if at + 16 > len(self._pool):
                self._pool, at = os.urandom(self.POOL), 0
            self._at = at + 16
            pool = self._pool
        return pool[at:at + 16].hex()

    def forget(self) -> None:
        """In a forked child: the parent's pool is the parent's (and its lock may have been held)."""
        self._pool, self._at, self._lock = b"", 0, threading.Lock()


_ids = _RequestIds()
os.register_at_fork(after_in_child=_ids.forget)  # no getpid per id: getpid is a system call too


class RequestStates:
    """The live requests of one policy: a bounded map from the plugin's request id to its state.

    Bounded because a request may never report back (an abandoned stream, a crashed worker): the
    oldest state is dropped past ``limit``; its reservation then expires in the ledger on its own.
    The adapter forgets a request's state when it ends in an error and once it was answered and
    settled (at the proxy, also once its response headers read it); :meth:`finished` keeps an
    answered one that still waits for such a late reader among the last ``finished_limit``: kept
    for long, 20,000 decisions would sit in the heap and make every full garbage collection of the
    process slower.
    Thread-safe: the sync bridge and LiteLLM's logging worker call in from other threads.
    """

    def __init__(self, limit: int = 20_000, finished_limit: int = 2_000):
        self.limit = limit
        self.finished_limit = finished_limit
        self._states: collections.OrderedDict[str, RequestState] = collections.OrderedDict()
        self._finished: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._states)

    def find(self, metadata: Mapping[str, Any] | None, trace_id: str | None = None) -> RequestState | None:
        """The state of the request ``metadata`` belongs to, or None (not seen yet, not ours, or
        forgotten). With ``trace_id``, a state minted for another trace is not returned: the caller
        reused a metadata dict that carries an earlier request's id."""
        if not metadata:
            return None
        rid = metadata.get(REQUEST_KEY)
        if type(rid) is not str and not isinstance(rid, str):
            return None
        # no lock: one dict read is atomic, and every hook of every request comes here (about
        # five times per request); the lock guards the map's changes (mint, finished, forget)
        state = self._states.get(rid)
        if state is None or (trace_id is not None and state.trace_id is not None and state.trace_id != trace_id):
            return None
        return state

    def mint(self, metadata: MutableMapping[str, Any], trace_id: str | None, identity: Any = None) -> RequestState:
        """Start the state of a new request and stamp its id on ``metadata``."""
        state = RequestState(id=_ids.next(), trace_id=trace_id, identity=identity)
        with self._lock:
            self._states[state.id] = state
            while len(self._states) > self.limit:
                self._states.popitem(last=False)
        metadata[REQUEST_KEY] = state.id
        return state

    def finished(self, state: RequestState) -> None:
        """``state``'s request was answered: keep it among the last ``finished_limit`` finished."""
        state.finished = True
        with self._lock:
            self._finished[state.id] = None
            while len(self._finished) > self.finished_limit:
                self._states.pop(self._finished.popitem(last=False)[0], None)

    def finished_and_forgotten(self, state: RequestState) -> None:
        """``state``'s request was answered and nothing reads it later: :meth:`finished` then
        :meth:`forget` in one step (one lock, nothing kept among the finished)."""
        state.finished = True
        with self._lock:
            self._states.pop(state.id, None)
            self._finished.pop(state.id, None)

    def forget(self, state: RequestState) -> None:
        with self._lock:
            self._states.pop(state.id, None)
            self._finished.pop(state.id, None)
