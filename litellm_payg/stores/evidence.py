"""Quality evidence: age-weighted tallies per cell, shareable by replicas like the ledger.

What is kept, on the policy's ledger backend (the same URL works: own tables / keys):

* **tallies**: one :class:`~litellm_payg.core.quality.Tally` per cell (route, deployment, class,
  metric), updated in place with the half-life the caller passes (one atomic step per observation:
  a ``BEGIN IMMEDIATE`` transaction in SQLite, a Lua script in Redis);
* **drop detectors**: one :class:`~litellm_payg.core.drop_detector.Watch` per cell a caller tests
  (``test=``), moved in the same atomic step as the tally, which an alarm cuts back to the evidence
  since the change (``core/drop_detector.py``): replicas share one statistic per cell;
* **the evidence log**: every observation with its request id, model, class, source, split arm and
  the request's cost (what an A/B verdict is computed from), newest kept up to ``log_max``;
* **requests**: the plugin's own record of a request it routed (route, deployment, model, key,
  class, cost), by the response id the client got, so feedback names a request without saying
  which model served it (``remember``/``recall``, kept ``ttl_s``);
* **claims**: a key kept only by the first writer (``claim``: an insert the primary key refuses in
  SQLite, ``SET NX`` in Redis, under a lock in memory), so an answer is rated once per metric even
  when two replicas receive the same rating at once;
* **counters**: dollars spent in a window (exploration budgets), expiring with their window.

Backends: ``memory://`` (one process), ``sqlite:///path.db``, ``redis://host:port/db`` (``?prefix=``).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from litellm_payg.core.drop_detector import MAX_BASELINE, DropTest, Observed, Watch, observe
from litellm_payg.core.quality import Tally
from litellm_payg.stores.ledger.base import redact_url
from litellm_payg.stores.schemes import StoreURLError, parse_store_url

#: the separator of a cell's parts in a store key (never in a group, deployment id or class we write)
SEP = "\x1f"


class EvidenceError(RuntimeError):
    """The evidence store could not be read or written."""


def cell_key(deployment_id: str, cls: str, metric: str) -> str:
    return SEP.join((deployment_id, cls, metric))


def split_key(key: str) -> tuple[str, str, str]:
    dep, cls, metric = key.split(SEP)
    return dep, cls, metric


class EvidenceStore(ABC):
    url: str

    def __init__(self, clock: Callable[[], float] | None = None, log_max: int = 100_000) -> None:
        self.clock = clock or time.time
        self.log_max = log_max

    def _now(self, now: float | None) -> float:
        return self.clock() if now is None else float(now)

    def add(self, group: str, key: str, value: float, half_life_s: float | None, now: float | None = None,
            record: Mapping[str, Any] | None = None, test: DropTest | None = None) -> Tally:
        """Add one observation to a cell (and ``record`` to the log); returns the cell's tally after."""
        return self.observe(group, key, value, half_life_s, now, record, test).tally

    @abstractmethod
    def observe(self, group: str, key: str, value: float, half_life_s: float | None, now: float | None = None,
                record: Mapping[str, Any] | None = None, test: DropTest | None = None) -> Observed:
        """Add one observation to a cell and, with ``test``, move its drop detector in the same atomic
        step (an alarm cuts the tally back to the evidence since the change); returns both after."""

    @abstractmethod
    def tallies(self, group: str) -> dict[str, Tally]:
        """Every cell of a route, as last written (age them with ``Tally.at``)."""

    @abstractmethod
    def watches(self, group: str) -> dict[str, Watch]:
        """The drop detector of every cell of a route that has one."""

    @abstractmethod
    def log(self, group: str | None = None) -> list[dict[str, Any]]:
        """The evidence log, oldest first (one route's, or every route's)."""

    @abstractmethod
    def remember(self, request_id: str, attrs: Mapping[str, Any], ttl_s: float, now: float | None = None) -> None:
        """Keep the plugin's record of a request, by the id its caller got, for ``ttl_s``."""

    @abstractmethod
    def recall(self, request_id: str, now: float | None = None) -> dict[str, Any] | None:
        """The record :meth:`remember` kept, or None (unknown or expired)."""

    @abstractmethod
    def claim(self, key: str, attrs: Mapping[str, Any], ttl_s: float, now: float | None = None) -> bool:
        """Keep ``attrs`` under ``key`` for ``ttl_s`` only if nothing unexpired is kept there yet, in
        one atomic step (two replicas claiming at once: exactly one gets True). What makes a second
        rating of the same answer and metric a refusal rather than a race."""

    @abstractmethod
    def release(self, key: str) -> None:
        """Drop a claim (the write it guarded failed: the rating may be sent again)."""

    @abstractmethod
    def spend(self, key: str, usd: float, ttl_s: float) -> float:
        """Add ``usd`` to a window's counter (created to expire after ``ttl_s``); returns the total."""

    @abstractmethod
    def spent(self, key: str) -> float:
        """A window's counter (0 when absent or expired)."""

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


class MemoryEvidence(EvidenceStore):
    def __init__(self, url: str = "memory://", clock: Callable[[], float] | None = None, log_max: int = 100_000):
        super().__init__(clock, log_max)
        self.url = url
        self._lock = threading.Lock()
        self._cells: dict[str, dict[str, Tally]] = {}
        self._watches: dict[str, dict[str, Watch]] = {}
        self._log: deque[dict[str, Any]] = deque(maxlen=log_max)
        self._requests: dict[str, tuple[float, dict[str, Any]]] = {}
        self._counters: dict[str, tuple[float, float]] = {}

    def observe(self, group, key, value, half_life_s, now=None, record=None, test=None):
        now = self._now(now)
        with self._lock:
            cells = self._cells.setdefault(group, {})
            watches = self._watches.setdefault(group, {})
            out = observe(cells.get(key, Tally(now)), watches.get(key, Watch()), value, now, half_life_s, test)
            cells[key] = out.tally
            if test is not None:
                watches[key] = out.watch
            if record is not None:
                self._log.append(dict(record, ts=now, group=group, value=value))
            return out

    def tallies(self, group):
        with self._lock:
            return dict(self._cells.get(group, {}))

    def watches(self, group):
        with self._lock:
            return dict(self._watches.get(group, {}))

    def log(self, group=None):
        with self._lock:
            return [dict(r) for r in self._log if group is None or r["group"] == group]

    def remember(self, request_id, attrs, ttl_s, now=None):
        now = self._now(now)
        with self._lock:
            if len(self._requests) > 200_000:
                for rid in [r for r, (exp, _) in self._requests.items() if exp <= now]:
                    del self._requests[rid]
            self._requests[request_id] = (now + ttl_s, dict(attrs))

    def recall(self, request_id, now=None):
        now = self._now(now)
        with self._lock:
            found = self._requests.get(request_id)
            return dict(found[1]) if found is not None and found[0] > now else None

    def claim(self, key, attrs, ttl_s, now=None):
        now = self._now(now)
        with self._lock:
            found = self._requests.get(key)
            if found is not None and found[0] > now:
                return False
            self._requests[key] = (now + ttl_s, dict(attrs))
            return True

    def release(self, key):
        with self._lock:
            self._requests.pop(key, None)

    def spend(self, key, usd, ttl_s):
        now = self.clock()
        with self._lock:
            exp, total = self._counters.get(key, (now + ttl_s, 0.0))
            if exp <= now:
                exp, total = now + ttl_s, 0.0
            self._counters[key] = (exp, total + usd)
            return total + usd

    def spent(self, key):
        with self._lock:
            exp, total = self._counters.get(key, (0.0, 0.0))
            return total if exp > self.clock() else 0.0


_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS quality_cells (
    grp TEXT NOT NULL, cell TEXT NOT NULL,
    t REAL NOT NULL, w REAL NOT NULL, s REAL NOT NULL, ss REAL NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (grp, cell)
);
CREATE TABLE IF NOT EXISTS quality_watches (grp TEXT NOT NULL, cell TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (grp, cell));
CREATE TABLE IF NOT EXISTS quality_log (seq INTEGER PRIMARY KEY AUTOINCREMENT, grp TEXT NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS quality_requests (id TEXT PRIMARY KEY, expires REAL NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS quality_counters (key TEXT PRIMARY KEY, expires REAL NOT NULL, usd REAL NOT NULL)
"""


class SqliteEvidence(EvidenceStore):
    """Tallies and the log in their own tables (the ledger's file can be shared)."""

    def __init__(self, path: str, url: str | None = None, clock: Callable[[], float] | None = None,
                 log_max: int = 100_000, busy_timeout_s: float = 30.0) -> None:
        super().__init__(clock, log_max)
        self.url = url or f"sqlite:///{path}"
        self._lock = threading.Lock()
        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self._db = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            with self._lock:
                for stmt in _SQLITE_SCHEMA.split(";"):
                    if stmt.strip():
                        self._db.execute(stmt)
        except (sqlite3.Error, OSError) as e:
            raise EvidenceError(f"cannot open SQLite evidence store {self.url}: {e}") from e

    def _tx(self, fn: Callable[[sqlite3.Connection], Any], write: bool = True) -> Any:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    out = fn(self._db)
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
                return out
            except sqlite3.Error as e:
                raise EvidenceError(f"SQLite evidence store {self.url}: {e}") from e

    def observe(self, group, key, value, half_life_s, now=None, record=None, test=None):
        now = self._now(now)

        def tx(db: sqlite3.Connection) -> Observed:
            row = db.execute("SELECT t, w, s, ss, n FROM quality_cells WHERE grp = ? AND cell = ?", (group, key)).fetchone()
            watch = Watch()
            if test is not None:
                found = db.execute("SELECT body FROM quality_watches WHERE grp = ? AND cell = ?", (group, key)).fetchone()
                watch = Watch.from_list(json.loads(found[0])) if found else watch
            out = observe(Tally(*row) if row else Tally(now), watch, value, now, half_life_s, test)
            tally = out.tally
            db.execute("INSERT OR REPLACE INTO quality_cells VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (group, key, tally.t, tally.w, tally.s, tally.ss, tally.n))
            if test is not None:
                db.execute("INSERT OR REPLACE INTO quality_watches VALUES (?, ?, ?)",
                           (group, key, json.dumps(out.watch.as_list())))
            if record is not None:
                db.execute("INSERT INTO quality_log (grp, body) VALUES (?, ?)",
                           (group, json.dumps(dict(record, ts=now, group=group, value=value))))
                db.execute("DELETE FROM quality_log WHERE seq <= (SELECT MAX(seq) FROM quality_log) - ?", (self.log_max,))
            return out

        return self._tx(tx)

    def tallies(self, group):
        rows = self._tx(lambda db: db.execute("SELECT cell, t, w, s, ss, n FROM quality_cells WHERE grp = ?",
                                              (group,)).fetchall(), write=False)
        return {cell: Tally(t, w, s, ss, n) for cell, t, w, s, ss, n in rows}

    def watches(self, group):
        rows = self._tx(lambda db: db.execute("SELECT cell, body FROM quality_watches WHERE grp = ?",
                                              (group,)).fetchall(), write=False)
        return {cell: Watch.from_list(json.loads(body)) for cell, body in rows}

    def log(self, group=None):
        if group is None:
            rows = self._tx(lambda db: db.execute("SELECT body FROM quality_log ORDER BY seq").fetchall(), write=False)
        else:
            rows = self._tx(lambda db: db.execute("SELECT body FROM quality_log WHERE grp = ? ORDER BY seq",
                                                  (group,)).fetchall(), write=False)
        return [json.loads(body) for (body,) in rows]

    def remember(self, request_id, attrs, ttl_s, now=None):
        now = self._now(now)

        def tx(db: sqlite3.Connection) -> None:
            db.execute("INSERT OR REPLACE INTO quality_requests VALUES (?, ?, ?)", (request_id, now + ttl_s, json.dumps(dict(attrs))))
            db.execute("DELETE FROM quality_requests WHERE expires <= ?", (now,))

        self._tx(tx)

    def recall(self, request_id, now=None):
        now = self._now(now)
        row = self._tx(lambda db: db.execute("SELECT expires, body FROM quality_requests WHERE id = ?",
                                             (request_id,)).fetchone(), write=False)
        return json.loads(row[1]) if row is not None and row[0] > now else None

    def claim(self, key, attrs, ttl_s, now=None):
        now = self._now(now)

        def tx(db: sqlite3.Connection) -> bool:
            # one statement in a write transaction: the primary key makes a second claim a no-op
            # unless the first has expired (another handle on the file waits on the write lock)
            cur = db.execute("INSERT INTO quality_requests VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                             "expires = excluded.expires, body = excluded.body WHERE quality_requests.expires <= ?",
                             (key, now + ttl_s, json.dumps(dict(attrs)), now))
            return cur.rowcount == 1

        return self._tx(tx)

    def release(self, key):
        self._tx(lambda db: db.execute("DELETE FROM quality_requests WHERE id = ?", (key,)))

    def spend(self, key, usd, ttl_s):
        now = self.clock()

        def tx(db: sqlite3.Connection) -> float:
            row = db.execute("SELECT expires, usd FROM quality_counters WHERE key = ?", (key,)).fetchone()
            exp, total = (row if row is not None and row[0] > now else (now + ttl_s, 0.0))
            db.execute("INSERT OR REPLACE INTO quality_counters VALUES (?, ?, ?)", (key, exp, total + usd))
            return total + usd

        return self._tx(tx)

    def spent(self, key):
        now = self.clock()
        row = self._tx(lambda db: db.execute("SELECT expires, usd FROM quality_counters WHERE key = ?", (key,)).fetchone(),
                       write=False)
        return row[1] if row is not None and row[0] > now else 0.0

    def close(self):
        with self._lock:
            self._db.close()


# KEYS[1] the route's hash of cells, KEYS[2] its hash of drop detectors; ARGV: cell, value, now,
# half-life ("" for none), then the drop test ("" for none: the detector is left alone): threshold,
# the prior's a0 and b0, the route's bars. The same arithmetic as core.drop_detector.observe (and
# Tally.add in it), in one step so two replicas never lose an observation or a move of the statistic.
_REDIS_ADD = """
local value, now = tonumber(ARGV[2]), tonumber(ARGV[3])
local h = tonumber(ARGV[4])
local function add(c, x)
  local t, w, s, ss, n = c[1], c[2], c[3], c[4], c[5]
  local k = 1
  if now >= t then
    if h and now > t then
      local f = 0.5 ^ ((now - t) / h)
      w, s, ss = w * f, s * f, ss * f
    end
    t = now
  elseif h then
    k = 0.5 ^ ((t - now) / h)
  end
  return {t, w + k, s + k * x, ss + k * x * x, n + 1}
end
local cell = {now, 0, 0, 0, 0}
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if raw then cell = cjson.decode(raw) end
local after = add(cell, value)
local watch = cjson.null
local alarm = 0
if ARGV[5] ~= '' then
  local threshold, a0, b0 = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
  watch = {0, {0, 0, 0, 0, 0}, 0, cjson.null, 0}
  local wraw = redis.call('HGET', KEYS[2], ARGV[1])
  if wraw then watch = cjson.decode(wraw) end
  local bw, bs = cell[2], cell[3]
  if h and now > cell[1] then
    local f = 0.5 ^ ((now - cell[1]) / h)
    bw, bs = bw * f, bs * f
  end
  local p0, p1 = nil, nil
  if a0 + b0 + bw > 0 then
    p0 = math.min(""" + repr(MAX_BASELINE) + """, math.max(0, (a0 + bs) / (a0 + b0 + bw)))
    for i = 8, #ARGV do
      local b = tonumber(ARGV[i])
      if b > 0 and b < p0 and (p1 == nil or b > p1) then p1 = b end
    end
  end
  local stat = 0
  if p1 then
    stat = math.max(0, watch[1] + value * math.log(p1 / p0) + (1 - value) * math.log((1 - p1) / (1 - p0)))
  end
  if stat <= 0 then
    watch = {0, {now, 0, 0, 0, 0}, watch[3], watch[4], watch[5]}
  else
    local since = add(watch[2], value)
    if stat < threshold then
      watch = {stat, since, watch[3], watch[4], watch[5]}
    else
      watch = {0, {now, 0, 0, 0, 0}, watch[3] + 1, now, watch[5] + after[5] - since[5]}
      after = since
      alarm = 1
    end
  end
  redis.call('HSET', KEYS[2], ARGV[1], cjson.encode(watch))
end
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(after))
return cjson.encode({after, watch, alarm})
"""


class RedisEvidence(EvidenceStore):
    def __init__(self, url: str, clock: Callable[[], float] | None = None, log_max: int = 100_000) -> None:
        import redis as redis_lib

        from litellm_payg.stores.redis_client import connect

        super().__init__(clock, log_max)
        self._errors = redis_lib
        self.url = redact_url(url)
        try:
            self._r, self.prefix = connect(url)
        except ValueError as e:
            raise EvidenceError(f"bad Redis evidence URL {self.url}: {e}") from e
        self._add = self._r.register_script(_REDIS_ADD)

    def _call(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except self._errors.RedisError as e:
            raise EvidenceError(f"Redis evidence store {self.url}: {e}") from e

    def observe(self, group, key, value, half_life_s, now=None, record=None, test=None):
        now = self._now(now)
        args = [key, repr(float(value)), repr(now), "" if half_life_s is None else repr(half_life_s)]
        if test is not None:
            args += [repr(test.threshold), repr(test.a0), repr(test.b0), *(repr(float(b)) for b in test.bars)]
        else:
            args.append("")
        raw = self._call(lambda: self._add(keys=[f"{self.prefix}qc:{group}", f"{self.prefix}qw:{group}"], args=args))
        if record is not None:
            body = json.dumps(dict(record, ts=now, group=group, value=value))

            def push() -> None:
                pipe = self._r.pipeline()
                pipe.rpush(f"{self.prefix}ql", body)
                pipe.ltrim(f"{self.prefix}ql", -self.log_max, -1)
                pipe.execute()

            self._call(push)
        (t, w, s, ss, n), watch, alarm = json.loads(raw)
        return Observed(Tally(float(t), float(w), float(s), float(ss), int(n)),
                        Watch() if watch is None else Watch.from_list(watch), bool(alarm))

    def tallies(self, group):
        raw = self._call(lambda: self._r.hgetall(f"{self.prefix}qc:{group}"))
        out = {}
        for cell, body in raw.items():
            t, w, s, ss, n = json.loads(body)
            out[cell.decode() if isinstance(cell, bytes) else cell] = Tally(float(t), float(w), float(s), float(ss), int(n))
        return out

    def watches(self, group):
        raw = self._call(lambda: self._r.hgetall(f"{self.prefix}qw:{group}"))
        return {(cell.decode() if isinstance(cell, bytes) else cell): Watch.from_list(json.loads(body))
                for cell, body in raw.items()}

    def log(self, group=None):
        rows = [json.loads(b) for b in self._call(lambda: self._r.lrange(f"{self.prefix}ql", 0, -1))]
        return [r for r in rows if group is None or r.get("group") == group]

    def remember(self, request_id, attrs, ttl_s, now=None):
        self._call(lambda: self._r.set(f"{self.prefix}qr:{request_id}", json.dumps(dict(attrs)), px=max(1, int(ttl_s * 1000))))

    def recall(self, request_id, now=None):
        raw = self._call(lambda: self._r.get(f"{self.prefix}qr:{request_id}"))
        return None if raw is None else json.loads(raw)

    def claim(self, key, attrs, ttl_s, now=None):
        return bool(self._call(lambda: self._r.set(f"{self.prefix}qr:{key}", json.dumps(dict(attrs)),
                                                   px=max(1, int(ttl_s * 1000)), nx=True)))

    def release(self, key):
        self._call(lambda: self._r.delete(f"{self.prefix}qr:{key}"))

    def spend(self, key, usd, ttl_s):
        def tx() -> float:
            pipe = self._r.pipeline()
            pipe.incrbyfloat(f"{self.prefix}qx:{key}", usd)
            pipe.pexpire(f"{self.prefix}qx:{key}", max(1, int(ttl_s * 1000)), nx=True)
            total, _ = pipe.execute()
            return float(total)

        return self._call(tx)

    def spent(self, key):
        raw = self._call(lambda: self._r.get(f"{self.prefix}qx:{key}"))
        return 0.0 if raw is None else float(raw)

    def close(self):
        self._r.close()
        self._r.connection_pool.disconnect()


def open_evidence(url: str, clock: Callable[[], float] | None = None) -> EvidenceStore:
    """Open the evidence store a URL names (the same schemes as ``open_ledger``)."""
    try:
        parsed = parse_store_url(url, "evidence")
    except StoreURLError as e:
        raise EvidenceError(str(e)) from None
    if parsed.kind == "memory":
        return MemoryEvidence(url, clock)
    if parsed.kind == "sqlite":
        return SqliteEvidence(parsed.path, url=url, clock=clock)
    return RedisEvidence(url, clock)
