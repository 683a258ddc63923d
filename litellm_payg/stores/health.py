"""Deployment health: a circuit breaker and a latency tracker per deployment, shareable by replicas.

Circuit breaker (per deployment id)::

    closed --(`failures` failures within `within_s`)--> open
    open   --(`open_s` elapsed)--> half_open          (computed lazily from the stored open_until)
    half_open: `allow()` hands out at most `half_open_probes` concurrent probe slots
    half_open --(a recorded success)--> closed
    half_open --(a recorded failure)--> open again for `open_s`

A probe slot that never reports back (an abandoned stream produces no outcome in LiteLLM) is freed
after ``probe_timeout_s`` (default ``open_s``). Outcomes recorded while the breaker is *open* (late
answers of requests sent before it opened) do not change its state; in half-open, any recorded
outcome counts as the probe's.

Latency tracker: the last ``max_samples`` latencies and times-to-first-token of *successful*
attempts per deployment, of which those younger than ``window_s`` count; ``p95`` is the nearest-rank
95th percentile and is ``None`` below ``min_samples`` samples (one slow call is not a trend).

Backends, chosen by URL like ``open_ledger`` (the same URL as the ledger works: own tables/keys):

* ``memory://`` — one process
* ``sqlite:///relative.db`` / ``sqlite:////abs.db`` — processes on one host; every operation is one
  ``BEGIN IMMEDIATE`` transaction
* ``redis://host:port/db`` (``?prefix=``, default ``payg:``) — replicas; every operation is one Lua
  script (one round trip), so two replicas cannot both take the last probe slot.

Every method takes an optional ``now`` (epoch seconds); without it the store's ``clock`` is used,
which tests replace with a fake one.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Sequence

from litellm_payg.core.breaker import BreakerConfig, BreakerState, HealthError, LatencyConfig, p95  # re-exported here
from litellm_payg.core.snapshot import DeploymentHealth, State, is_slow  # the pure half, re-exported here
from litellm_payg.stores.ledger.base import redact_url
from litellm_payg.stores.schemes import StoreURLError, parse_store_url


class HealthUnavailable(HealthError):
    """The backend could not be reached; the caller decides fail-open/closed."""


class HealthStore(ABC):
    """Circuit breakers and latency samples per deployment id. Sync and thread-safe."""

    url: str

    def __init__(self, breaker: BreakerConfig | None, latency: LatencyConfig | None,
                 clock: Callable[[], float] | None) -> None:
        self.breaker = breaker or BreakerConfig()
        self.latency = latency or LatencyConfig()
        self.clock = clock or time.time

    def _now(self, now: float | None) -> float:
        return self.clock() if now is None else float(now)

    @abstractmethod
    def allow(self, deployment_id: str, now: float | None = None) -> bool:
        """May a request go to this deployment now? True when closed; when half-open, True only if a
        probe slot is free — and then the slot is *claimed* (release it by ``record``ing the
        outcome). False when open or when every probe slot is taken."""

    @abstractmethod
    def record(self, deployment_id: str, ok: bool, latency_s: float | None = None, ttft_s: float | None = None,
               now: float | None = None) -> State:
        """Record one attempt's outcome; returns the breaker state after it. Latency and
        time-to-first-token are kept for successful attempts only."""

    @abstractmethod
    def snapshot(self, deployment_ids: Sequence[str], now: float | None = None) -> dict[str, DeploymentHealth]:
        """Health of several deployments, read in one round trip, without changing anything."""

    @abstractmethod
    def reset(self, deployment_id: str | None = None) -> None:
        """Forget one deployment's (or every deployment's) breaker and samples."""

    @abstractmethod
    def close(self) -> None:
        """Release connections/handles."""

    def state(self, deployment_id: str, now: float | None = None) -> DeploymentHealth:
        return self.snapshot([deployment_id], now)[deployment_id]

    def slow(self, deployment_id: str, max_latency_ms: float | None, max_ttft_ms: float | None = None,
             now: float | None = None) -> bool:
        """Whether the deployment's p95 latency exceeds ``max_latency_ms`` (or its p95
        time-to-first-token exceeds ``max_ttft_ms``). False while there are too few samples."""
        return is_slow(self.state(deployment_id, now), max_latency_ms, max_ttft_ms)

    def __enter__(self) -> "HealthStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    def _health(self, dep: str, b: BreakerState, lat: list[float], ttft: list[float], now: float) -> DeploymentHealth:
        phase = b.phase(now)
        enough = self.latency.min_samples
        return DeploymentHealth(
            deployment_id=dep,
            state=phase,
            failures=len(b.live_failures(now, self.breaker)) if phase == "closed" else 0,
            opened_at=b.opened_at,
            open_until=b.open_until,
            opened_by=b.opened_by,
            probes_in_flight=len(b.live_probes(now, self.breaker)) if phase == "half_open" else 0,
            probes_allowed=self.breaker.half_open_probes,
            latency_p95_s=p95(lat) if len(lat) >= enough else None,
            ttft_p95_s=p95(ttft) if len(ttft) >= enough else None,
            latency_samples=len(lat),
            ttft_samples=len(ttft),
        )


def _check_sample(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    if not (math.isfinite(value) and value >= 0):
        raise HealthError(f"{name} must be a finite number >= 0, got {value!r}")
    return value


# -- memory ------------------------------------------------------------------------------------------


class MemoryHealth(HealthStore):
    def __init__(self, url: str = "memory://", breaker: BreakerConfig | None = None,
                 latency: LatencyConfig | None = None, clock: Callable[[], float] | None = None) -> None:
        super().__init__(breaker, latency, clock)
        self.url = url
        self._lock = threading.Lock()
        self._breakers: dict[str, BreakerState] = {}
        self._samples: dict[tuple[str, str], deque[tuple[float, float]]] = {}

    def _window(self, dep: str, kind: str, now: float) -> list[float]:
        floor = now - self.latency.window_s
        return [v for t, v in self._samples.get((dep, kind), ()) if t > floor]

    def allow(self, deployment_id, now=None):
        now = self._now(now)
        with self._lock:
            return self._breakers.setdefault(deployment_id, BreakerState()).allow(now, self.breaker)

    def record(self, deployment_id, ok, latency_s=None, ttft_s=None, now=None):
        now = self._now(now)
        latency_s, ttft_s = _check_sample("latency_s", latency_s), _check_sample("ttft_s", ttft_s)
        with self._lock:
            state = self._breakers.setdefault(deployment_id, BreakerState()).record(bool(ok), now, self.breaker)
            if ok:
                for kind, value in (("lat", latency_s), ("ttft", ttft_s)):
                    if value is not None:
                        q = self._samples.setdefault((deployment_id, kind), deque(maxlen=self.latency.max_samples))
                        q.append((now, value))
            return state

    def snapshot(self, deployment_ids, now=None):
        now = self._now(now)
        with self._lock:
            return {d: self._health(d, self._breakers.get(d) or BreakerState(), self._window(d, "lat", now),
                                    self._window(d, "ttft", now), now)
                    for d in deployment_ids}

    def reset(self, deployment_id=None):
        with self._lock:
            if deployment_id is None:
                self._breakers.clear()
                self._samples.clear()
            else:
                self._breakers.pop(deployment_id, None)
                for kind in ("lat", "ttft"):
                    self._samples.pop((deployment_id, kind), None)

    def close(self):
        pass


# -- SQLite ------------------------------------------------------------------------------------------

_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS health_breakers (
    dep TEXT PRIMARY KEY,
    failures TEXT NOT NULL,     -- JSON [ts, ...] of failures while closed
    opened_at REAL,
    open_until REAL,
    opened_by TEXT,
    probes TEXT NOT NULL        -- JSON [ts, ...] of claimed half-open probe slots
);
CREATE TABLE IF NOT EXISTS health_samples (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    dep TEXT NOT NULL,
    kind TEXT NOT NULL,         -- 'lat' | 'ttft'
    ts REAL NOT NULL,
    value REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS health_samples_dep ON health_samples (dep, kind, seq);
"""


class SqliteHealth(HealthStore):
    """Breakers and samples in their own tables (the ledger's file can be shared)."""

    def __init__(self, path: str, url: str | None = None, breaker: BreakerConfig | None = None,
                 latency: LatencyConfig | None = None, clock: Callable[[], float] | None = None,
                 busy_timeout_s: float = 30.0) -> None:
        super().__init__(breaker, latency, clock)
        self.url = url or f"sqlite:///{path}"
        self._lock = threading.Lock()
        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self._db = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            with self._tx() as db:
                for stmt in _SQLITE_SCHEMA.split(";"):
                    if stmt.strip():
                        db.execute(stmt)
        except (sqlite3.Error, OSError) as e:
            raise HealthUnavailable(f"cannot open SQLite health store {self.url}: {e}") from e

    class _Tx:
        def __init__(self, store: "SqliteHealth", write: bool) -> None:
            self.store, self.write = store, write

        def __enter__(self) -> sqlite3.Connection:
            self.store._lock.acquire()
            try:
                self.store._db.execute("BEGIN IMMEDIATE" if self.write else "BEGIN")
            except sqlite3.Error as e:
                self.store._lock.release()
                raise HealthUnavailable(f"SQLite health store {self.store.url} unavailable: {e}") from e
            return self.store._db

        def __exit__(self, et, ev, tb) -> None:
            db = self.store._db
            try:
                if et is None:
                    db.execute("COMMIT")
                elif db.in_transaction:
                    db.execute("ROLLBACK")
            except sqlite3.Error as e:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise HealthUnavailable(f"SQLite health store {self.store.url}: commit failed: {e}") from e
            finally:
                self.store._lock.release()
            if isinstance(ev, sqlite3.Error):
                raise HealthUnavailable(f"SQLite health store {self.store.url} unavailable: {ev}") from ev

    def _tx(self, write: bool = True) -> "SqliteHealth._Tx":
        return SqliteHealth._Tx(self, write)

    @staticmethod
    def _load(db: sqlite3.Connection, dep: str) -> BreakerState:
        row = db.execute("SELECT failures, opened_at, open_until, opened_by, probes FROM health_breakers WHERE dep = ?",
                         (dep,)).fetchone()
        if row is None:
            return BreakerState()
        return BreakerState(json.loads(row[0]), row[1], row[2], row[3], json.loads(row[4]))

    @staticmethod
    def _save(db: sqlite3.Connection, dep: str, b: BreakerState) -> None:
        db.execute(
            "INSERT INTO health_breakers (dep, failures, opened_at, open_until, opened_by, probes) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(dep) DO UPDATE SET failures = excluded.failures, "
            "opened_at = excluded.opened_at, open_until = excluded.open_until, opened_by = excluded.opened_by, "
            "probes = excluded.probes",
            (dep, json.dumps(b.failures), b.opened_at, b.open_until, b.opened_by, json.dumps(b.probes)),
        )

    def _window(self, db: sqlite3.Connection, dep: str, kind: str, now: float) -> list[float]:
        rows = db.execute(
            "SELECT value FROM (SELECT ts, value FROM health_samples WHERE dep = ? AND kind = ? "
            "ORDER BY seq DESC LIMIT ?) WHERE ts > ?",
            (dep, kind, self.latency.max_samples, now - self.latency.window_s),
        ).fetchall()
        return [r[0] for r in rows]

    def allow(self, deployment_id, now=None):
        now = self._now(now)
        with self._tx() as db:
            b = self._load(db, deployment_id)
            if b.phase(now) == "closed":
                return True
            allowed = b.allow(now, self.breaker)
            self._save(db, deployment_id, b)
            return allowed

    def record(self, deployment_id, ok, latency_s=None, ttft_s=None, now=None):
        now = self._now(now)
        latency_s, ttft_s = _check_sample("latency_s", latency_s), _check_sample("ttft_s", ttft_s)
        with self._tx() as db:
            b = self._load(db, deployment_id)
            state = b.record(bool(ok), now, self.breaker)
            self._save(db, deployment_id, b)
            if ok:
                for kind, value in (("lat", latency_s), ("ttft", ttft_s)):
                    if value is None:
                        continue
                    db.execute("INSERT INTO health_samples (dep, kind, ts, value) VALUES (?, ?, ?, ?)",
                               (deployment_id, kind, now, value))
                    db.execute(
                        "DELETE FROM health_samples WHERE dep = ? AND kind = ? AND (ts <= ? OR seq IN ("
                        "SELECT seq FROM health_samples WHERE dep = ? AND kind = ? ORDER BY seq DESC "
                        "LIMIT -1 OFFSET ?))",
                        (deployment_id, kind, now - self.latency.window_s, deployment_id, kind,
                         self.latency.max_samples),
                    )
            return state

    def snapshot(self, deployment_ids, now=None):
        now = self._now(now)
        with self._tx(write=False) as db:
            return {d: self._health(d, self._load(db, d), self._window(db, d, "lat", now),
                                    self._window(db, d, "ttft", now), now)
                    for d in deployment_ids}

    def reset(self, deployment_id=None):
        with self._tx() as db:
            if deployment_id is None:
                db.execute("DELETE FROM health_breakers")
                db.execute("DELETE FROM health_samples")
            else:
                db.execute("DELETE FROM health_breakers WHERE dep = ?", (deployment_id,))
                db.execute("DELETE FROM health_samples WHERE dep = ?", (deployment_id,))

    def close(self):
        with self._lock:
            self._db.close()


# -- Redis ---------------------------------------------------------------------------------------------
# Per deployment, under the prefix P: ``P hb:<id>`` hash (f failures JSON, oa opened_at, ou open_until,
# ob opened_by, pr probes JSON) and ``P hl:<id>`` / ``P ht:<id>`` lists of "ts value" samples, newest
# first. Keys get relative TTLs, so a deployment that stops being used disappears on its own.
# Times are the callers' clocks (replicas NTP-synchronised), passed as strings (repr of a float).

_REDIS_PRELUDE = r"""
local function arr(s)
  if not s or s == '' then return {} end
  local t = cjson.decode(s)
  if type(t) ~= 'table' then return {} end
  return t
end
local function enc(t) if #t == 0 then return '[]' end return cjson.encode(t) end
local function newer(t, floor)
  local out = {}
  for _, v in ipairs(t) do if tonumber(v) > floor then out[#out + 1] = v end end
  return out
end
local function phase(ou, now)
  if not ou then return 'closed' end
  if now < tonumber(ou) then return 'open' end
  return 'half_open'
end
"""

# KEYS: breaker   ARGV: now, probes_allowed, probe_ttl_s, ttl_ms
_REDIS_ALLOW = _REDIS_PRELUDE + r"""
local now = tonumber(ARGV[1])
local ou = redis.call('HGET', KEYS[1], 'ou')
local ph = phase(ou, now)
if ph == 'closed' then return 1 end
if ph == 'open' then return 0 end
local probes = newer(arr(redis.call('HGET', KEYS[1], 'pr')), now - tonumber(ARGV[3]))
if #probes >= tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'pr', enc(probes))
  return 0
end
probes[#probes + 1] = ARGV[1]
redis.call('HSET', KEYS[1], 'pr', enc(probes))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""

# KEYS: breaker, lat list, ttft list
# ARGV: now, ok, latency|'' , ttft|'', failures, within_s, open_s, max_samples, ttl_ms, samples_ttl_ms
_REDIS_RECORD = _REDIS_PRELUDE + r"""
local now = tonumber(ARGV[1])
local ok = ARGV[2] == '1'
local b = KEYS[1]
local h = redis.call('HMGET', b, 'f', 'ou')
local ph = phase(h[2], now)
if ph == 'closed' then
  local f = newer(arr(h[1]), now - tonumber(ARGV[6]))
  if not ok then
    f[#f + 1] = ARGV[1]
    if #f >= tonumber(ARGV[5]) then
      redis.call('HSET', b, 'f', '[]', 'pr', '[]', 'oa', ARGV[1], 'ou', tostring(now + tonumber(ARGV[7])), 'ob', 'failures')
      ph = 'open'
    else
      redis.call('HSET', b, 'f', enc(f))
    end
  elseif h[1] then
    redis.call('HSET', b, 'f', enc(f))
  end
  if h[1] or not ok then redis.call('PEXPIRE', b, ARGV[9]) end
elseif ph == 'half_open' then
  if ok then
    redis.call('DEL', b)
    ph = 'closed'
  else
    redis.call('HSET', b, 'f', '[]', 'pr', '[]', 'oa', ARGV[1], 'ou', tostring(now + tonumber(ARGV[7])), 'ob', 'probe')
    redis.call('PEXPIRE', b, ARGV[9])
    ph = 'open'
  end
end
if ok then
  for i, v in ipairs({ARGV[3], ARGV[4]}) do
    if v ~= '' then
      redis.call('LPUSH', KEYS[1 + i], ARGV[1] .. ' ' .. v)
      redis.call('LTRIM', KEYS[1 + i], 0, tonumber(ARGV[8]) - 1)
      redis.call('PEXPIRE', KEYS[1 + i], ARGV[10])
    end
  end
end
return ph
"""

# KEYS: (breaker, lat, ttft) per deployment   ARGV: now, window_s
_REDIS_SNAPSHOT = _REDIS_PRELUDE + r"""
local now = tonumber(ARGV[1])
local floor = now - tonumber(ARGV[2])
local out = {}
for i = 1, #KEYS, 3 do
  local h = redis.call('HMGET', KEYS[i], 'f', 'oa', 'ou', 'ob', 'pr')
  local row = {h[1] or '[]', h[2] or '', h[3] or '', h[4] or '', h[5] or '[]'}
  for j = 1, 2 do
    local vals = {}
    for _, s in ipairs(redis.call('LRANGE', KEYS[i + j], 0, -1)) do
      local sp = string.find(s, ' ', 1, true)
      if tonumber(string.sub(s, 1, sp - 1)) > floor then vals[#vals + 1] = string.sub(s, sp + 1) end
    end
    row[#row + 1] = vals
  end
  out[#out + 1] = row
end
return out
"""



class RedisHealth(HealthStore):
    def __init__(self, url: str, breaker: BreakerConfig | None = None, latency: LatencyConfig | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        import redis as redis_lib

        super().__init__(breaker, latency, clock)
        self._errors = redis_lib
        from litellm_payg.stores.redis_client import connect

        self.url = redact_url(url)
        try:
            self._r, self.prefix = connect(url)
        except ValueError as e:
            raise HealthError(f"bad Redis health URL {self.url}: {e}") from e
        self._allow = self._r.register_script(_REDIS_ALLOW)
        self._record = self._r.register_script(_REDIS_RECORD)
        self._snapshot = self._r.register_script(_REDIS_SNAPSHOT)

    def _keys(self, dep: str) -> list[str]:
        return [f"{self.prefix}hb:{dep}", f"{self.prefix}hl:{dep}", f"{self.prefix}ht:{dep}"]

    def _call(self, script, keys, args):
        try:
            return script(keys=keys, args=args)
        except (self._errors.ConnectionError, self._errors.TimeoutError) as e:
            raise HealthUnavailable(f"Redis health store {self.url} unavailable: {e}") from e
        except self._errors.RedisError as e:
            raise HealthError(f"Redis health store {self.url} error: {e}") from e

    def _breaker_ttl_ms(self) -> str:
        cfg = self.breaker
        return str(int(math.ceil((max(cfg.within_s, cfg.open_s + cfg.probe_ttl_s) + 60) * 1000)))

    def allow(self, deployment_id, now=None):
        now = self._now(now)
        cfg = self.breaker
        return bool(self._call(self._allow, self._keys(deployment_id)[:1],
                               [repr(now), cfg.half_open_probes, repr(float(cfg.probe_ttl_s)), self._breaker_ttl_ms()]))

    def record(self, deployment_id, ok, latency_s=None, ttft_s=None, now=None):
        now = self._now(now)
        latency_s, ttft_s = _check_sample("latency_s", latency_s), _check_sample("ttft_s", ttft_s)
        cfg, lat = self.breaker, self.latency
        state = self._call(self._record, self._keys(deployment_id), [
            repr(now), "1" if ok else "0", "" if latency_s is None else repr(latency_s),
            "" if ttft_s is None else repr(ttft_s), cfg.failures, repr(float(cfg.within_s)), repr(float(cfg.open_s)),
            lat.max_samples, self._breaker_ttl_ms(), str(int(math.ceil((lat.window_s + 60) * 1000))),
        ])
        return state.decode() if isinstance(state, bytes) else state

    def snapshot(self, deployment_ids, now=None):
        now = self._now(now)
        deployment_ids = list(deployment_ids)
        if not deployment_ids:
            return {}
        keys = [k for d in deployment_ids for k in self._keys(d)]
        rows = self._call(self._snapshot, keys, [repr(now), repr(float(self.latency.window_s))])
        out = {}
        for dep, row in zip(deployment_ids, rows):
            f, oa, ou, ob, pr = (x.decode() if isinstance(x, bytes) else x for x in row[:5])
            b = BreakerState(
                failures=[float(t) for t in json.loads(f)],
                opened_at=float(oa) if oa else None,
                open_until=float(ou) if ou else None,
                opened_by=ob or None,
                probes=[float(t) for t in json.loads(pr)],
            )
            out[dep] = self._health(dep, b, [float(v) for v in row[5]], [float(v) for v in row[6]], now)
        return out

    def reset(self, deployment_id=None):
        try:
            if deployment_id is not None:
                self._r.delete(*self._keys(deployment_id))
                return
            for pattern in ("hb:*", "hl:*", "ht:*"):
                batch = list(self._r.scan_iter(match=self.prefix + pattern, count=500))
                if batch:
                    self._r.delete(*batch)
        except (self._errors.ConnectionError, self._errors.TimeoutError) as e:
            raise HealthUnavailable(f"Redis health store {self.url} unavailable: {e}") from e

    def close(self):
        self._r.close()
        self._r.connection_pool.disconnect()


# -- URL --------------------------------------------------------------------------------------------------


def open_health(url: str, breaker: BreakerConfig | None = None, latency: LatencyConfig | None = None,
                clock: Callable[[], float] | None = None) -> HealthStore:
    """Open the health store a URL names (the same schemes as ``open_ledger``: ``stores.schemes``)."""
    try:
        parsed = parse_store_url(url, "health")
    except StoreURLError as e:
        raise HealthError(str(e)) from None
    if parsed.kind == "memory":
        return MemoryHealth(url, breaker, latency, clock)
    if parsed.kind == "sqlite":
        return SqliteHealth(parsed.path, url=url, breaker=breaker, latency=latency, clock=clock)
    return RedisHealth(url, breaker, latency, clock)
