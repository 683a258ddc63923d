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
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from typing import Sequence

from .base import (
    Bucket,
    Ledger,
    LedgerError,
    LedgerUnavailable,
    ReserveResult,
    SpendRecord,
    Usage,
    check_buckets,
    check_ttl,
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
    expires_at REAL
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
    buckets TEXT NOT NULL,                 -- JSON [[key, rolling_s, expires_at], ...]
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

_SYNC_MODES = {"off", "normal", "full", "extra"}


class SqliteLedger(Ledger):
    def __init__(self, path: str, url: str | None = None, synchronous: str = "normal",
                 busy_timeout_s: float = 30.0) -> None:
        self.url = url or f"sqlite:///{path}"
        if synchronous.lower() not in _SYNC_MODES:
            raise LedgerError(f"{self.url}: synchronous must be one of {sorted(_SYNC_MODES)}, got {synchronous!r}")
        self.path = path
        self._lock = threading.Lock()
        try:
            parent = os.path.dirname(os.path.abspath(path))
            os.makedirs(parent, exist_ok=True)
            self._db = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None,
                                       check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
            with self._tx():
                for stmt in _SCHEMA.split(";"):
                    if stmt.strip():
                        self._db.execute(stmt)
        except (sqlite3.Error, OSError) as e:
            raise LedgerUnavailable(f"cannot open SQLite ledger {self.url}: {e}") from e

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
        return SqliteLedger._Tx(self._db, self.url)

    # -- internals (inside a transaction) ---------------------------------

    @staticmethod
    def _touch(db: sqlite3.Connection, key: str, rolling_s: float | None, expires_at: float | None) -> None:
        db.execute(
            "INSERT INTO buckets (key, rolling_s, expires_at) VALUES (?, ?, ?) "
            "ON CONFLICT(key) DO UPDATE SET expires_at = CASE "
            " WHEN excluded.expires_at IS NULL THEN buckets.expires_at "
            " WHEN buckets.expires_at IS NULL OR excluded.expires_at > buckets.expires_at "
            "  THEN excluded.expires_at ELSE buckets.expires_at END",
            (key, rolling_s, expires_at),
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
        out = {}
        for b in buckets:
            row = db.execute("SELECT spent, reserved, rolling_s FROM buckets WHERE key = ?", (b.key,)).fetchone()
            if row is None:
                out[b.key] = (0, 0)
            else:
                out[b.key] = (self._spent(db, b.key, row[2], row[0], now), row[1])
        return out

    def _charge(self, db, rid: str, amount: int, bucket_json: str, reserved: int,
                amount_usd: float, ts: float, kind: str, attrs: dict) -> None:
        specs = json.loads(bucket_json)
        for key, rolling_s, expires_at in specs:
            self._touch(db, key, rolling_s, expires_at)
            if rolling_s is None:
                db.execute("UPDATE buckets SET reserved = MAX(0, reserved - ?), spent = spent + ? WHERE key = ?",
                           (reserved, amount, key))
            else:
                db.execute("UPDATE buckets SET reserved = MAX(0, reserved - ?) WHERE key = ?", (reserved, key))
                db.execute("INSERT INTO slices (key, idx, nanos) VALUES (?, ?, ?) "
                           "ON CONFLICT(key, idx) DO UPDATE SET nanos = nanos + excluded.nanos",
                           (key, slice_index(ts, rolling_s), amount))
                db.execute("DELETE FROM slices WHERE key = ? AND idx < ?",
                           (key, oldest_live_slice(ts, rolling_s)))
        attrs = dict(attrs, kind=kind)
        db.execute("INSERT INTO records (ts, reservation_id, amount_usd, buckets, attrs) VALUES (?, ?, ?, ?, ?)",
                   (ts, rid, amount_usd, json.dumps([s[0] for s in specs]), json.dumps(attrs, default=str)))

    def _expire(self, db, now: float) -> int:
        rows = db.execute("SELECT id, amount, expires_at, buckets, attrs FROM reservations WHERE expires_at <= ?",
                          (now,)).fetchall()
        for rid, amount, exp, bjson, ajson in rows:
            db.execute("DELETE FROM reservations WHERE id = ?", (rid,))
            self._charge(db, rid, amount, bjson, amount, from_nanos(amount), exp, "expired", json.loads(ajson))
        return len(rows)

    # -- interface --------------------------------------------------------

    def reserve(self, reservation_id, buckets, amount_usd, ttl_s, now=None, attrs=None):
        buckets = tuple(buckets)
        check_buckets(buckets)
        check_ttl(ttl_s)
        amount = to_nanos(amount_usd)
        now = clock(now)
        with self._lock, self._tx() as db:
            self._expire(db, now)
            cur = self._read(db, buckets, now)
            before = {k: Usage(from_nanos(s), from_nanos(r)) for k, (s, r) in cur.items()}
            if db.execute("SELECT 1 FROM reservations WHERE id = ?", (reservation_id,)).fetchone():
                return ReserveResult(True, reservation_id, None, before)
            for b in buckets:
                lim = limit_nanos(b)
                if lim is not None and sum(cur[b.key]) + amount > lim:
                    return ReserveResult(False, reservation_id, b.key, before)
            for b in buckets:
                self._touch(db, b.key, b.rolling_s, b.expires_at)
                db.execute("UPDATE buckets SET reserved = reserved + ? WHERE key = ?", (amount, b.key))
            specs = json.dumps([[b.key, b.rolling_s, b.expires_at] for b in buckets])
            db.execute("INSERT INTO reservations (id, amount, expires_at, buckets, attrs) VALUES (?, ?, ?, ?, ?)",
                       (reservation_id, amount, now + ttl_s, specs, json.dumps(clean_attrs(attrs), default=str)))
            return ReserveResult(True, reservation_id, None, before)

    def settle(self, reservation_id, actual_usd, now=None, attrs=None):
        actual = to_nanos(actual_usd, "actual_usd")
        now = clock(now)
        with self._lock, self._tx() as db:
            row = db.execute("SELECT amount, buckets, attrs FROM reservations WHERE id = ?",
                             (reservation_id,)).fetchone()
            if row is None:
                return False
            db.execute("DELETE FROM reservations WHERE id = ?", (reservation_id,))
            merged = dict(json.loads(row[2]), **clean_attrs(attrs))
            self._charge(db, reservation_id, actual, row[1], row[0], float(actual_usd), now, "settled", merged)
            return True

    def release(self, reservation_id):
        with self._lock, self._tx() as db:
            row = db.execute("SELECT amount, buckets FROM reservations WHERE id = ?", (reservation_id,)).fetchone()
            if row is None:
                return False
            db.execute("DELETE FROM reservations WHERE id = ?", (reservation_id,))
            for key, _rolling, _exp in json.loads(row[1]):
                db.execute("UPDATE buckets SET reserved = MAX(0, reserved - ?) WHERE key = ?", (row[0], key))
            return True

    def usage(self, buckets, now=None):
        now = clock(now)
        buckets = tuple(buckets)
        with self._lock:
            try:
                # one read transaction so all buckets are read from one snapshot
                self._db.execute("BEGIN")
                try:
                    cur = self._read(self._db, buckets, now)
                finally:
                    self._db.execute("COMMIT")
            except sqlite3.Error as e:
                raise LedgerUnavailable(f"SQLite ledger {self.url} unavailable: {e}") from e
        return {k: Usage(from_nanos(s), from_nanos(r)) for k, (s, r) in cur.items()}

    def expire(self, now=None):
        now = clock(now)
        with self._lock, self._tx() as db:
            n = self._expire(db, now)
            # garbage collect finished calendar buckets nobody still reserves on
            db.execute("DELETE FROM buckets WHERE expires_at IS NOT NULL AND expires_at <= ? AND reserved = 0",
                       (now,))
            db.execute("DELETE FROM slices WHERE key NOT IN (SELECT key FROM buckets)")
            return n

    def records(self, since=None):
        with self._lock:
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
        with self._lock, self._tx() as db:
            row = db.execute("SELECT until FROM claims WHERE key = ?", (key,)).fetchone()
            if row is not None and row[0] > now:
                return False
            db.execute("INSERT OR REPLACE INTO claims (key, until) VALUES (?, ?)", (key, now + ttl_s))
            return True

    def open_reservations(self):
        with self._lock:
            try:
                return self._db.execute("SELECT COUNT(*) FROM reservations").fetchone()[0]
            except sqlite3.Error as e:
                raise LedgerUnavailable(f"SQLite ledger {self.url} unavailable: {e}") from e

    def close(self):
        with self._lock:
            try:
                self._db.close()
            except sqlite3.Error:
                pass
