"""SQLite ledger: survives restarts, safe for several processes on one host.

Every phase is one ``BEGIN IMMEDIATE`` transaction: the write lock is taken
*before* reading the counters, so two processes cannot both read "room left"
and both reserve it. WAL mode lets readers proceed meanwhile. With
``synchronous=NORMAL`` (the default here) a committed transaction survives a
process crash (SIGKILL); only an OS crash/power loss can lose the last
commits -- pass ``?synchronous=full`` to trade throughput for that too.

Within one process a single connection is shared under a lock; sqlite3
connections are not meant to be used by several threads at once and one
connection per thread would mean hundreds of file handles in a burst.

**The file going away.** An open connection keeps writing to its file's inode
even after the path was removed or replaced, so spend would go to a file
nobody can see again. Every call first compares ``os.stat(path)`` with the
(device, inode) the connection opened (one ``stat``, about a microsecond; the
inode cannot be reused while the connection holds it open). When they differ:

1. the detached file's content is copied, with SQLite's backup API, to
   ``<path>.detached-<UTC time>-<pid>`` beside it (nothing since the last backup is
   lost, whether the removal was an accident or a restore over it), its open
   reservations are kept in memory, and the connection is closed;
2. that call raises ``LedgerUnavailable`` (logged at ERROR naming the path),
   and so does every call while the path is missing: the spend layer applies
   ``on_ledger_error`` (fail_open keeps the charges in memory to replay,
   fail_closed refuses);
3. as soon as a file is at the path again (a restored backup, the
   ``.detached-`` copy moved back, or an empty file the operator created) the
   next call opens it, carries the kept open reservations into it so their
   settles still charge, and carries on; replayed charges follow.

A missing file is never silently recreated empty by a running process: that
would reset every budget to $0 with no one having asked for it.

**Records without a budget are written in batches** (``batching.py``): they wait
in memory and are written together, in one transaction of a few statements, at
most ``batch_s`` seconds later (the URL's ``?batch_s=``, default 0.25; ``0``
writes each at once, and so does ``?synchronous=full`` unless ``batch_s`` is
given too). Every other call of this ledger writes them first; another process
(``report``, ``budgets``) sees them up to ``batch_s`` late.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
import weakref
from typing import Sequence

from litellm_payg.stores.ledger.batching import DEFAULT_BATCH_S, WaitingRecords
from litellm_payg.stores.schemes import SQLITE_SYNCHRONOUS, check_batch_s
from litellm_payg.stores.ledger.base import (
    charge_args,
    Bucket,
    BucketState,
    Ledger,
    LedgerError,
    LedgerUnavailable,
    ReserveResult,
    SpendRecord,
    Usage,
    age_over,
    bucket_amount,
    bucket_spec,
    check_units,
    spec_amount,
    check_ttl,
    idle_over,
    spec_parts,
    clean_attrs,
    clock,
    from_nanos,
    limit_nanos,
    oldest_live_slice,
    slice_index,
    to_nanos,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS buckets (
    key TEXT PRIMARY KEY,
    spent INTEGER NOT NULL DEFAULT 0,      -- nano-USD, calendar buckets
    reserved INTEGER NOT NULL DEFAULT 0,   -- nano-USD
    rolling_s REAL,
    expires_at REAL,
    idle_s REAL,                           -- session counters: spend reads 0 once idle this long
    last_at REAL,                          -- session counters: last reservation or charge
    first_at REAL,                         -- ... and the first since it last started afresh
    granted INTEGER NOT NULL DEFAULT 0,    -- an operator's grant on top of the limit (adjust)
    granted_s REAL NOT NULL DEFAULT 0,     -- ... on top of a max_age_s
    closed INTEGER NOT NULL DEFAULT 0,     -- an operator closed it (adjust)
    note TEXT                              -- the last note written on it (a run's last refusal)
);
CREATE TABLE IF NOT EXISTS slices (        -- rolling buckets' time slices
    key TEXT NOT NULL,
    idx INTEGER NOT NULL,
    nanos INTEGER NOT NULL,
    PRIMARY KEY (key, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS reservations (
    id TEXT PRIMARY KEY,
    amount INTEGER NOT NULL,
    expires_at REAL NOT NULL,
    buckets TEXT NOT NULL,                 -- JSON [[key, rolling_s, expires_at, idle_s, counts], ...]
    attrs TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS reservations_expiry ON reservations (expires_at);
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    reservation_id TEXT NOT NULL,
    amount_usd REAL NOT NULL,
    buckets TEXT NOT NULL,
    attrs TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_ts ON records (ts);
CREATE TABLE IF NOT EXISTS claims (        -- claim_once: alert thresholds fired this window
    key TEXT PRIMARY KEY,
    until REAL NOT NULL
);
"""

_SYNC_MODES = set(SQLITE_SYNCHRONOUS)  # also checked when the URL is read (stores/schemes.py)
#: the open SQLite ledgers: a forked child gets fresh locks (a parent's thread may have held one)
_OPEN: "weakref.WeakSet[SqliteLedger]" = weakref.WeakSet()


def _fresh_locks_in_the_child() -> None:
    for ledger in list(_OPEN):
        ledger._lock = threading.Lock()


os.register_at_fork(after_in_child=_fresh_locks_in_the_child)

logger = logging.getLogger("litellm_payg")

#: one encoder for every record's attributes: ``json.dumps(..., default=str)`` builds a new one per call
_ATTRS_ENCODER = json.JSONEncoder(default=str)


def _attrs_json(attrs: dict) -> str:
    return _ATTRS_ENCODER.encode(attrs)


def _ident(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _refusal(buckets: Sequence[Bucket], rows: dict[str, tuple], amount: int, now: float) -> tuple[str, str] | None:
    """``(bucket key, rule)`` of the first bucket that refuses a reservation of ``amount``, given
    their :meth:`SqliteLedger._rows`: one closed first, then one past its age, then one over its
    limit (grants included)."""
    for b in buckets:
        if rows[b.key][4]:
            return b.key, "closed"
    for b in buckets:
        row = rows[b.key]
        if row[8] and age_over(b.max_age_s, float(row[3] or 0.0), row[5], now):
            return b.key, "age"
    for b in buckets:
        lim = limit_nanos(b)
        row = rows[b.key]
        if lim is not None and row[0] + row[1] + bucket_amount(b, amount) > lim + row[2]:
            return b.key, "limit"
    return None


class SqliteLedger(Ledger):
    def __init__(self, path: str, url: str | None = None, synchronous: str = "normal",
                 busy_timeout_s: float = 30.0, batch_s: float | None = None) -> None:
        self.url = url or f"sqlite:///{path}"
        if synchronous.lower() not in _SYNC_MODES:
            raise LedgerError(f"{self.url}: synchronous must be one of {sorted(_SYNC_MODES)}, got {synchronous!r}")
        if batch_s is None:
            batch_s = 0.0 if synchronous.lower() in ("full", "extra") else DEFAULT_BATCH_S
        try:
            batch_s = check_batch_s(batch_s, self.url)
        except ValueError as e:
            raise LedgerError(str(e)) from None
        #: unbudgeted records waiting to be written together (``batching.py``)
        self._waiting = WaitingRecords(batch_s, lambda: self.flush(quiet=True))
        self.path = path
        self._synchronous = synchronous
        self._busy_timeout_s = busy_timeout_s
        self._lock = threading.Lock()
        #: (st_dev, st_ino) of the file the connection has open; None while detached (see module doc)
        self._file: tuple[int, int] | None = None
        #: open reservations of a detached file, carried into the next file at the path
        self._carried: list[tuple] = []
        self._companions: dict[str, tuple[int, int] | None] = {}
        try:
            parent = os.path.dirname(os.path.abspath(path))
            os.makedirs(parent, exist_ok=True)
            self._open()
        except (sqlite3.Error, OSError) as e:
            raise LedgerUnavailable(f"cannot open SQLite ledger {self.url}: {e}") from e
        _OPEN.add(self)

    def _open(self) -> None:
        db = sqlite3.connect(self.path, timeout=self._busy_timeout_s, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self._synchronous.upper()}")
            with SqliteLedger._Tx(db, self.url):
                for stmt in _SCHEMA.split(";"):
                    if stmt.strip():
                        db.execute(stmt)
                # a file written before session counters existed gains their columns
                have = {row[1] for row in db.execute("PRAGMA table_info(buckets)")}
                for column, kind in (("idle_s", "REAL"), ("last_at", "REAL"), ("first_at", "REAL"),
                                     ("granted", "INTEGER NOT NULL DEFAULT 0"), ("granted_s", "REAL NOT NULL DEFAULT 0"),
                                     ("closed", "INTEGER NOT NULL DEFAULT 0"), ("note", "TEXT")):
                    if column not in have:
                        db.execute(f"ALTER TABLE buckets ADD COLUMN {column} {kind}")
            st = os.stat(self.path)
        except BaseException:
            db.close()
            raise
        self._db, self._file = db, (st.st_dev, st.st_ino)
        self._companions = {suffix: _ident(self.path + suffix) for suffix in ("-wal", "-shm")}

    # -- the file under the connection (module docstring) -----------------

    def _check_file(self) -> None:
        """Raise LedgerUnavailable unless the connection's file is still the one at ``path``;
        reopen the path once a file is there again. Called under ``_lock`` by every operation."""
        try:
            st = os.stat(self.path)
            here: tuple[int, int] | None = (st.st_dev, st.st_ino)
        except FileNotFoundError:
            here = None
        except OSError as e:
            raise LedgerUnavailable(f"SQLite ledger {self.url}: cannot stat {self.path}: {e}") from e
        if here is not None and here == self._file:
            return
        if self._file is not None:
            self._detach(removed=here is None)
        if here is None:
            raise LedgerUnavailable(
                f"SQLite ledger file {os.path.abspath(self.path)} is missing; restore it (or create an empty "
                "file there to start afresh) and the ledger resumes"
            )
        self._reattach()

    def _detach(self, removed: bool) -> None:
        what = "removed" if removed else "replaced by another file"
        saved = base = f"{self.path}.detached-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{os.getpid()}"
        n = 1
        while os.path.exists(saved):  # never overwrite an earlier copy (several connections, one file)
            n += 1
            saved = f"{base}-{n}"
        try:
            self._carried = self._db.execute(
                "SELECT id, amount, expires_at, buckets, attrs FROM reservations").fetchall()
            copy = sqlite3.connect(saved)
            try:
                self._db.backup(copy)
            finally:
                copy.close()
            kept = f"its content was saved to {os.path.abspath(saved)}"
        except (sqlite3.Error, OSError) as e:
            kept = f"its content could NOT be saved ({e}); {len(self._carried)} open reservations are kept in memory"
        try:
            self._db.close()
        except sqlite3.Error:
            pass
        self._file = None
        # SQLite keeps the -wal/-shm of an unlinked database file: left there, they would be
        # "recovered" into whatever file is put at the path next. Remove them only if they are still
        # the very files this connection used (a restored backup's own -wal is left alone).
        for suffix, ident in self._companions.items():
            if ident is not None and _ident(self.path + suffix) == ident:
                try:
                    os.remove(self.path + suffix)
                except OSError:
                    pass
        logger.error(
            "litellm-payg: SQLite ledger file %s was %s while in use; %s. Nothing more is written to the "
            "old file: calls fail as a ledger outage (on_ledger_error applies) until a file is at the path "
            "again, then the ledger reopens it and carries %d open reservation(s) into it.",
            os.path.abspath(self.path), what, kept, len(self._carried),
        )
        raise LedgerUnavailable(f"SQLite ledger file {os.path.abspath(self.path)} was {what} while in use; {kept}")

    def _reattach(self) -> None:
        try:
            self._open()
        except (sqlite3.Error, OSError) as e:
            raise LedgerUnavailable(f"SQLite ledger {self.url}: cannot open the file now at {self.path}: {e}") from e
        carried, self._carried = self._carried, []
        with self._tx_unchecked() as db:
            # Skip what the new file already has, open or already charged: another process on the
            # same file may have reattached first and settled it (one scan of records, once).
            known: set[str] = set()
            ids = [row[0] for row in carried]
            for i in range(0, len(ids), 500):
                marks = ",".join("?" * len(ids[i:i + 500]))
                for table, column in (("reservations", "id"), ("records", "reservation_id")):
                    known.update(r[0] for r in db.execute(
                        f"SELECT {column} FROM {table} WHERE {column} IN ({marks})", ids[i:i + 500]))
            for rid, amount, expires_at, bucket_json, attrs in carried:
                if rid in known:
                    continue
                for spec in json.loads(bucket_json):
                    key, rolling_s, bexp, idle_s, counts, units = spec_parts(spec)
                    self._touch(db, key, rolling_s, bexp, idle_s)
                    db.execute("UPDATE buckets SET reserved = reserved + ? WHERE key = ?",
                               (spec_amount(counts, units, amount), key))
                db.execute("INSERT INTO reservations (id, amount, expires_at, buckets, attrs) VALUES (?, ?, ?, ?, ?)",
                           (rid, amount, expires_at, bucket_json, attrs))
        logger.warning("litellm-payg: SQLite ledger reopened %s (carried %d open reservation(s) into it)",
                       os.path.abspath(self.path), len(carried))

    # -- transaction helper -----------------------------------------------

    class _Tx:
        def __init__(self, db: sqlite3.Connection, url: str) -> None:
            self.db, self.url = db, url

        def __enter__(self) -> sqlite3.Connection:
            try:
                self.db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as e:
                raise LedgerUnavailable(f"SQLite ledger {self.url} unavailable: {e}") from e
            return self.db

        def __exit__(self, et, ev, tb) -> None:
            if et is None:
                try:
                    self.db.execute("COMMIT")
                    return
                except sqlite3.Error as e:
                    self.db.execute("ROLLBACK")
                    raise LedgerUnavailable(f"SQLite ledger {self.url}: commit failed: {e}") from e
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            if isinstance(ev, sqlite3.Error):
                raise LedgerUnavailable(f"SQLite ledger {self.url} unavailable: {ev}") from ev

    def _tx(self) -> "SqliteLedger._Tx":
        self._check_file()
        return SqliteLedger._Tx(self._db, self.url)

    def _tx_after_waiting(self) -> "SqliteLedger._Tx":
        """A transaction for a call, once the waiting records are written (under ``_lock``), so
        no call of this ledger reads around them."""
        self._write_waiting()
        return self._tx()

    def _tx_unchecked(self) -> "SqliteLedger._Tx":
        return SqliteLedger._Tx(self._db, self.url)

    # -- internals (inside a transaction) ---------------------------------

    @staticmethod
    def _touch(db: sqlite3.Connection, key: str, rolling_s: float | None, expires_at: float | None,
               idle_s: float | None = None) -> None:
        db.execute(
            "INSERT INTO buckets (key, rolling_s, expires_at, idle_s) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(key) DO UPDATE SET expires_at = CASE "
            " WHEN excluded.expires_at IS NULL THEN buckets.expires_at "
            " WHEN buckets.expires_at IS NULL OR excluded.expires_at > buckets.expires_at "
            "  THEN excluded.expires_at ELSE buckets.expires_at END",
            (key, rolling_s, expires_at, idle_s),
        )

    @staticmethod
    def _wake(db: sqlite3.Connection, key: str, now: float) -> None:
        """A session counter is active at ``now``: idle past its ``idle_s``, it starts afresh."""
        fresh = "(last_at IS NULL OR :now - last_at >= idle_s)"
        db.execute(
            f"UPDATE buckets SET spent = CASE WHEN {fresh} THEN 0 ELSE spent END, "
            f"granted = CASE WHEN {fresh} THEN 0 ELSE granted END, "
            f"granted_s = CASE WHEN {fresh} THEN 0 ELSE granted_s END, "
            f"closed = CASE WHEN {fresh} THEN 0 ELSE closed END, "
            f"note = CASE WHEN {fresh} THEN NULL ELSE note END, "
            f"first_at = CASE WHEN {fresh} THEN :now ELSE first_at END, "
            "last_at = CASE WHEN last_at IS NULL OR :now > last_at THEN :now ELSE last_at END "
            "WHERE key = :key AND idle_s IS NOT NULL",
            {"now": now, "key": key},
        )

    @staticmethod
    def _spent(db: sqlite3.Connection, key: str, rolling_s: float | None, spent: int, now: float) -> int:
        if rolling_s is None:
            return spent
        floor = oldest_live_slice(now, rolling_s)
        row = db.execute("SELECT COALESCE(SUM(nanos), 0) FROM slices WHERE key = ? AND idx >= ?",
                         (key, floor)).fetchone()
        return row[0]

    def _read(self, db: sqlite3.Connection, buckets: Sequence[Bucket], now: float) -> dict[str, tuple[int, int]]:
        return {key: (row[0], row[1]) for key, row in self._rows(db, buckets, now).items()}

    def _rows(self, db: sqlite3.Connection, buckets: Sequence[Bucket], now: float) -> dict[str, tuple]:
        """Per bucket: ``(spent, reserved, granted, granted_s, closed, first_at, last_at, note, live)``,
        what an idle session counter has of them reading as a fresh one's."""
        out = {}
        for b in buckets:
            row = db.execute("SELECT spent, reserved, rolling_s, idle_s, last_at, granted, granted_s, closed, "
                             "first_at, note FROM buckets WHERE key = ?", (b.key,)).fetchone()
            if row is None:
                out[b.key] = (0, 0, 0, 0.0, False, None, None, None, False)
            elif idle_over(row[3], row[4], now):
                out[b.key] = (0, row[1], 0, 0.0, False, None, None, None, False)
            else:
                out[b.key] = (self._spent(db, b.key, row[2], row[0], now), row[1], row[5], row[6], bool(row[7]),
                              row[8], row[4], row[9], True)
        return out

    def _charge(self, db, rid: str, amount: int, bucket_json: str, reserved: int,
                amount_usd: float, ts: float, kind: str, attrs: dict, now: float, units: int | None = None) -> None:
        specs = json.loads(bucket_json)
        for spec in specs:
            key, rolling_s, expires_at, idle_s, counts, reserved_units = spec_parts(spec)
            self._touch(db, key, rolling_s, expires_at, idle_s)
            self._wake(db, key, now)
            mine = spec_amount(counts, reserved_units, amount, units)
            reserved_here = spec_amount(counts, reserved_units, reserved)
            if rolling_s is None:
                db.execute("UPDATE buckets SET reserved = MAX(0, reserved - ?), spent = spent + ? WHERE key = ?",
                           (reserved_here, mine, key))
            else:
                db.execute("UPDATE buckets SET reserved = MAX(0, reserved - ?) WHERE key = ?", (reserved_here, key))
                db.execute("INSERT INTO slices (key, idx, nanos) VALUES (?, ?, ?) "
                           "ON CONFLICT(key, idx) DO UPDATE SET nanos = nanos + excluded.nanos",
                           (key, slice_index(ts, rolling_s), mine))
                db.execute("DELETE FROM slices WHERE key = ? AND idx < ?",
                           (key, oldest_live_slice(ts, rolling_s)))
        attrs = dict(attrs, kind=kind)
        db.execute("INSERT INTO records (ts, reservation_id, amount_usd, buckets, attrs) VALUES (?, ?, ?, ?, ?)",
                   (ts, rid, amount_usd, json.dumps([s[0] for s in specs]), _attrs_json(attrs)))

    def _expire(self, db, now: float) -> int:
        rows = db.execute("SELECT id, amount, expires_at, buckets, attrs FROM reservations WHERE expires_at <= ?",
                          (now,)).fetchall()
        for rid, amount, exp, bjson, ajson in rows:
            db.execute("DELETE FROM reservations WHERE id = ?", (rid,))
            self._charge(db, rid, amount, bjson, amount, from_nanos(amount), exp, "expired", json.loads(ajson), now)
        return len(rows)

    # -- interface --------------------------------------------------------

    def reserve(self, reservation_id, buckets, amount_usd, ttl_s, now=None, attrs=None):
        buckets, amount, now = charge_args(buckets, amount_usd, ttl_s, now)
        with self._lock, self._tx_after_waiting() as db:
            self._expire(db, now)
            cur = self._rows(db, buckets, now)
            before = {k: Usage(from_nanos(row[0]), from_nanos(row[1]), from_nanos(row[2])) for k, row in cur.items()}
            if db.execute("SELECT 1 FROM reservations WHERE id = ?", (reservation_id,)).fetchone():
                return ReserveResult(True, reservation_id, None, before)
            refused = _refusal(buckets, cur, amount, now)
            if refused is not None:
                return ReserveResult(False, reservation_id, refused[0], before, refused[1])
            for b in buckets:
                self._touch(db, b.key, b.rolling_s, b.expires_at, b.idle_s)
                self._wake(db, b.key, now)
                db.execute("UPDATE buckets SET reserved = reserved + ? WHERE key = ?", (bucket_amount(b, amount), b.key))
            specs = json.dumps([bucket_spec(b) for b in buckets])
            db.execute("INSERT INTO reservations (id, amount, expires_at, buckets, attrs) VALUES (?, ?, ?, ?, ?)",
                       (reservation_id, amount, now + ttl_s, specs, json.dumps(clean_attrs(attrs), default=str)))
            return ReserveResult(True, reservation_id, None, before)

    def settle(self, reservation_id, actual_usd, now=None, attrs=None, units=None):
        actual = to_nanos(actual_usd, "actual_usd")
        check_units(units)
        now = clock(now)
        with self._lock:
            self._write_waiting()
            with self._tx() as db:
                return self._settle_in(db, reservation_id, actual, float(actual_usd), now, clean_attrs(attrs), units)

    def _settle_in(self, db, reservation_id: str, actual: int, actual_usd: float, now: float, attrs: dict,
                   units: int | None = None) -> bool:
        row = db.execute("SELECT amount, buckets, attrs FROM reservations WHERE id = ?", (reservation_id,)).fetchone()
        if row is None:
            return False
        db.execute("DELETE FROM reservations WHERE id = ?", (reservation_id,))
        merged = dict(json.loads(row[2]), **attrs)
        self._charge(db, reservation_id, actual, row[1], row[0], actual_usd, now, "settled", merged, now, units)
        return True

    def state(self, buckets, now=None):
        rows = self._read(tuple(buckets), clock(now))
        return {k: BucketState(Usage(from_nanos(r[0]), from_nanos(r[1]), from_nanos(r[2])), float(r[3] or 0.0), r[4],
                               r[5], r[6], r[7], live=r[8]) for k, r in rows.items()}

    def adjust(self, buckets, *, grant=None, grant_s=None, close=None, note=None, now=None):
        now = clock(now)
        buckets = tuple(buckets)
        adds = {k: to_nanos(v, "grant") for k, v in (grant or {}).items()}
        adds_s = {k: to_nanos(v, "grant_s") / 1e9 for k, v in (grant_s or {}).items()}
        with self._lock, self._tx_after_waiting() as db:
            rows = [db.execute("SELECT idle_s, last_at FROM buckets WHERE key = ?", (b.key,)).fetchone() for b in buckets]
            if not rows or any(r is None or r[0] is None or r[1] is None or idle_over(r[0], r[1], now) for r in rows):
                return False
            for b in buckets:
                db.execute("UPDATE buckets SET granted = granted + ?, granted_s = granted_s + ?, "
                           "closed = COALESCE(?, closed), note = COALESCE(?, note) WHERE key = ?",
                           (adds.get(b.key, 0), adds_s.get(b.key, 0.0), None if close is None else int(bool(close)),
                            note, b.key))
            return True

    def record(self, reservation_id, buckets, amount_usd, ttl_s, now=None, attrs=None):
        """Without buckets (every request of a policy without budgets): ``reserve`` then ``settle``
        in one transaction, i.e. what they would write without the reservation row in between.
        With buckets (a fail-open admission, rare) it is the two calls, so whatever they do to
        buckets is done once, in one place."""
        buckets = tuple(buckets)
        if buckets:
            super().record(reservation_id, buckets, amount_usd, ttl_s, now=now, attrs=attrs)
            return
        check_ttl(ttl_s)
        row = (reservation_id, to_nanos(amount_usd), float(amount_usd), clock(now), clean_attrs(attrs))
        if self._waiting.batch_s <= 0:
            with self._lock:
                self._write_waiting()
                with self._tx() as db:
                    self._write_records(db, [row])
            return
        if self._waiting.add(row):  # the batch is full
            self.flush(quiet=True)

    def _write_records(self, db: sqlite3.Connection, rows: Sequence[tuple]) -> None:
        """Book bucket-less records (inside a transaction): each a reservation that settles at
        once, or, for an id still open (reserve is idempotent), that reservation settled.

        A handful of statements for the whole batch, not a few per row: each statement lets go of
        the GIL and must win it back from the threads serving requests (LiteLLM runs every call's
        ``completion`` in an executor thread), so a write made of many small statements takes far
        longer than its CPU time and slows those threads while it lasts."""
        self._expire(db, max(row[3] for row in rows))
        ids = [row[0] for row in rows]
        open_: set[str] = set()
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            open_.update(r[0] for r in db.execute(
                f"SELECT id FROM reservations WHERE id IN ({','.join('?' * len(chunk))})", chunk))
        booked = []
        for rid, amount, amount_usd, now, attrs in rows:
            if rid in open_:  # rare: settle that reservation, as settle does
                self._settle_in(db, rid, amount, amount_usd, now, attrs)
            else:  # what _charge writes for a reservation without buckets
                booked.append((now, rid, amount_usd, "[]", _attrs_json(dict(attrs, kind="settled"))))
        db.executemany("INSERT INTO records (ts, reservation_id, amount_usd, buckets, attrs) VALUES (?, ?, ?, ?, ?)", booked)

    def flush(self, quiet: bool = False) -> None:
        """Write the records waiting to be batched now. Raises ``LedgerUnavailable`` if they
        cannot be written (they keep waiting), unless ``quiet``, when it logs that instead."""
        with self._lock:
            try:
                self._write_waiting()
            except LedgerError as exc:
                if not quiet:
                    raise
                logger.warning("litellm-payg: SQLite ledger %s could not write %d waiting record(s) yet: %s",
                               self.url, len(self._waiting), exc)

    def _write_waiting(self) -> None:
        """Under ``_lock``: write the waiting records in one transaction; they wait again on failure."""
        self._waiting.write_with(self._write_batch)

    def _write_batch(self, rows: Sequence[tuple]) -> None:
        with self._tx() as db:
            self._write_records(db, rows)

    def release(self, reservation_id):
        with self._lock, self._tx_after_waiting() as db:
            row = db.execute("SELECT amount, buckets FROM reservations WHERE id = ?", (reservation_id,)).fetchone()
            if row is None:
                return False
            db.execute("DELETE FROM reservations WHERE id = ?", (reservation_id,))
            for spec in json.loads(row[1]):
                key, _rolling, _exp, _idle, counts, units = spec_parts(spec)
                db.execute("UPDATE buckets SET reserved = MAX(0, reserved - ?) WHERE key = ?",
                           (spec_amount(counts, units, row[0]), key))
            return True

    def usage(self, buckets, now=None):
        rows = self._read(tuple(buckets), clock(now))
        return {k: Usage(from_nanos(r[0]), from_nanos(r[1]), from_nanos(r[2])) for k, r in rows.items()}

    def _read(self, buckets: tuple[Bucket, ...], now: float) -> dict:
        """Every bucket's row (``_rows``) as of ``now``, after what waits to be written, in one read
        transaction so all of them come from one snapshot (``usage`` and ``state`` read it)."""
        with self._lock:
            self._write_waiting()
            self._check_file()
            try:
                self._db.execute("BEGIN")
                try:
                    return self._rows(self._db, buckets, now)
                finally:
                    self._db.execute("COMMIT")
            except sqlite3.Error as e:
                raise LedgerUnavailable(f"SQLite ledger {self.url} unavailable: {e}") from e

    def expire(self, now=None):
        now = clock(now)
        with self._lock, self._tx_after_waiting() as db:
            n = self._expire(db, now)
            # garbage collect finished calendar buckets nobody still reserves on
            # and session counters idle past their idle_s (they read as empty already)
            db.execute("DELETE FROM buckets WHERE reserved = 0 AND ((expires_at IS NOT NULL AND expires_at <= ?) "
                       "OR (idle_s IS NOT NULL AND last_at IS NOT NULL AND ? - last_at >= idle_s))", (now, now))
            db.execute("DELETE FROM slices WHERE key NOT IN (SELECT key FROM buckets)")
            return n

    def records(self, since=None):
        with self._lock:
            self._write_waiting()
            self._check_file()
            try:
                rows = self._db.execute(
                    "SELECT ts, reservation_id, amount_usd, buckets, attrs FROM records "
                    "WHERE ts >= ? ORDER BY ts, seq", (float("-inf") if since is None else since,)).fetchall()
            except sqlite3.Error as e:
                raise LedgerUnavailable(f"SQLite ledger {self.url} unavailable: {e}") from e
        return [SpendRecord(ts, rid, amt, tuple(json.loads(b)), json.loads(a)) for ts, rid, amt, b, a in rows]

    def claim_once(self, key, ttl_s, now=None):
        check_ttl(ttl_s)
        now = clock(now)
        with self._lock, self._tx_after_waiting() as db:
            row = db.execute("SELECT until FROM claims WHERE key = ?", (key,)).fetchone()
            if row is not None and row[0] > now:
                return False
            db.execute("INSERT OR REPLACE INTO claims (key, until) VALUES (?, ?)", (key, now + ttl_s))
            return True

    def open_reservations(self):
        with self._lock:
            self._write_waiting()
            self._check_file()
            try:
                return self._db.execute("SELECT COUNT(*) FROM reservations").fetchone()[0]
            except sqlite3.Error as e:
                raise LedgerUnavailable(f"SQLite ledger {self.url} unavailable: {e}") from e

    def close(self):
        with self._lock:
            self._waiting.close()
            try:
                self._write_waiting()
            except LedgerError as exc:
                lost = self._waiting.take()
                logger.error(
                    "litellm-payg: SQLite ledger %s closed with %d record(s) it could not write (%s); "
                    "they were: %s", self.url, len(lost), exc,
                    "; ".join(f"{rid} ${usd:.9f} at {ts}" for rid, _n, usd, ts, _a in lost),
                )
            _OPEN.discard(self)
            try:
                self._db.close()
            except sqlite3.Error:
                pass
