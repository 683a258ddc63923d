"""Records without a budget, waiting in memory to be written to a ledger together.

A policy without budgets reserves nothing: each answer is booked with ``Ledger.record`` and no
buckets, a row for ``report`` and ``replay`` that no admission reads. Written one by one, on the
event loop that serves the requests, those writes were the largest cost the plugin added to a
request (``bench/README.md``, "Fourth look"): a SQLite transaction whose every statement gives up the
GIL and has to win it back from LiteLLM's executor thread, or two Redis round trips. So the SQLite
and Redis ledgers keep them here and write them in one go:

* at most ``batch_s`` seconds after the first one waits (a writer thread, one per ledger, started on
  the first record and woken by it: starting a ``threading.Timer`` per batch cost the request that
  armed it a thread start, about a millisecond on a busy event loop), or at once when
  ``BATCH_ROWS`` wait;
* before any other call of the same ledger (the ledger calls :meth:`WaitingRecords.write_with` first), so
  nothing in the process reads around them; at ``close()``; at interpreter exit;
* a write that fails puts them back (:meth:`WaitingRecords.write_with`) for the next try;
* a forked child forgets its parent's (the parent writes them; the child would book each twice).

What a process killed outright (SIGKILL, an OS crash) loses is the last ``batch_s`` of unbudgeted
records; reservations and settles of budgeted requests never wait here.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable

logger = logging.getLogger("litellm_payg")

#: how long an unbudgeted record may wait to be written with others
DEFAULT_BATCH_S = 0.25
#: this many waiting records are written at once, without waiting for the writer thread
BATCH_ROWS = 256

#: every WaitingRecords that may hold records: written at exit, forgotten in a forked child
_ALL: "weakref.WeakSet[WaitingRecords]" = weakref.WeakSet()


class WaitingRecords:
    """The waiting records of one ledger, and the writer thread that writes them.

    ``write_all`` is the ledger's own "write what waits now" (``flush(quiet=True)``): it writes the
    rows its way through :meth:`write_with`, which puts them back on failure. The writer thread and
    the exit hook call it; it must not raise."""

    def __init__(self, batch_s: float, write_all: Callable[[], None]):
        self.batch_s = float(batch_s)
        self._write_all = write_all
        self._rows: list[tuple] = []
        self._lock = threading.Lock()
        #: set when records wait for the writer thread (cleared when it starts its wait)
        self._due = threading.Event()
        self._writer: threading.Thread | None = None
        self._closed = False

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, row: tuple) -> bool:
        """Keep ``row`` to be written later; True when the batch is full and should be written now."""
        with self._lock:
            self._rows.append(row)
            waiting = len(self._rows)
            if waiting == 1 and not self._closed:
                _ALL.add(self)
                self._arm()
        return waiting >= BATCH_ROWS

    def take(self) -> list[tuple]:
        """The waiting rows, now the caller's to write (empty when none wait). The writer thread,
        if it is waiting for them, finds nothing to write when its time comes."""
        with self._lock:
            rows, self._rows = self._rows, []
        return rows

    def write_with(self, write_rows: Callable[[list[tuple]], None]) -> None:
        """Take the waiting rows and write them with ``write_rows`` (the ledger's own batch write);
        if it raises, the rows wait again and the error goes on. Nothing waiting: nothing is done,
        not even a lock taken (every call of the ledger comes here first)."""
        if not self._rows:
            return
        rows = self.take()
        if not rows:
            return
        try:
            write_rows(rows)
        except BaseException:
            self.put_back(rows)
            raise

    def put_back(self, rows: list[tuple]) -> None:
        """Rows whose write failed: first in line for the next write, a batch later at the latest."""
        if not rows:
            return
        with self._lock:
            self._rows[:0] = rows
            if not self._closed:
                self._arm()

    def close(self) -> None:
        """No more timed writes (the writer thread ends); what still waits is the caller's to write."""
        with self._lock:
            self._closed = True
        self._due.set()  # wakes the writer, which sees it is closed and ends
        _ALL.discard(self)

    def _arm(self) -> None:  # under _lock
        """Records wait: the writer thread writes them ``batch_s`` from now. It is started on first
        use (and again in a forked child); after that, waking it is all an arming costs."""
        if self._writer is None:
            due = self._due
            # the thread holds this object weakly while idle (an unclosed ledger may still be freed;
            # freeing it wakes the thread to end) and strongly while records wait (they get written)
            ref = weakref.ref(self, lambda _: due.set())
            self._writer = threading.Thread(target=_write_when_due, args=(ref, due), name="litellm-payg-records",
                                            daemon=True)
            self._writer.start()
        self._due.set()

    def _forget_after_fork(self) -> None:
        self._lock = threading.Lock()  # it may have been held by another thread of the parent
        self._rows = []
        self._due = threading.Event()
        self._writer = None  # the parent's writer thread does not exist in the child


def _write_when_due(ref: "weakref.ReferenceType[WaitingRecords]", due: threading.Event) -> None:
    """A ledger's writer thread: wait until records wait, give them ``batch_s`` to gather, write
    them (``write_all``, which never raises); end when the records are closed or freed."""
    while True:
        due.wait()
        due.clear()  # a record added from now on sets it again, for the next round
        records = ref()
        if records is None or records._closed:
            return
        time.sleep(records.batch_s)
        if not records._closed:
            records._write_all()
        del records  # idle: held weakly again


@atexit.register
def _write_all_at_exit() -> None:
    for waiting in list(_ALL):
        try:
            waiting._write_all()
        except Exception:  # noqa: BLE001 - exit must go on; the ledger logged what it could not write
            logger.exception("litellm-payg: could not write waiting records at exit")


def _forget_the_parents_records() -> None:
    for waiting in list(_ALL):
        waiting._forget_after_fork()


os.register_at_fork(after_in_child=_forget_the_parents_records)
