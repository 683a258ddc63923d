"""Redis ledger: caps shared by several proxy replicas.

Records without a budget are written in batches (``batching.py``; ``?batch_s=``,
default 0.25 s, ``0`` for each at once): each batch is one MULTI/EXEC round trip
of the record's reserve and settle scripts, written before any other call of
the ledger. Every other phase (reserve / settle / release / usage / an expiry
sweep) is ONE Lua script, i.e. one atomic round trip: Redis runs scripts serially, so replicas
cannot interleave a read of "room left" with another replica's write, and a
crash between two commands cannot leave a half-applied reservation.

Layout under the key prefix ``P`` (``?prefix=`` in the URL, default
``payg:``):

* ``P b:<bucket key>`` hash: ``r`` reserved, ``s`` spent (calendar), and
  ``w<slice>`` fields for rolling windows; all integer nano-USD (a ``counts``
  bucket counts 1e9 per request). A session bucket also has ``l``, its last
  activity in the caller's clock: idle past its ``idle_s``, ``s`` reads 0.
* ``P res:<id>`` hash: amount, expiry, bucket specs, attrs of an open
  reservation. It has no TTL on purpose: an abandoned reservation must be
  *charged* by a sweep, never vanish.
* ``P exp`` sorted set of open reservation ids by expiry time.
* ``P rec`` sorted set of spend records (JSON) by timestamp.

Amounts are written with HINCRBY from decimal strings (exact 64-bit); Lua only
*compares* them as doubles, exact below 2**53 nano-USD (~9M USD per bucket).
Expiry sweeps touch bucket keys not declared in KEYS, so this targets a
single Redis (or a primary with replicas), not Redis Cluster. Times are the
caller's clock; replicas are assumed NTP-synchronised (a skew only shifts
when a dead reservation is charged, it never drops it).
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Sequence
from urllib.parse import parse_qsl, urlsplit

import redis as redis_lib

from litellm_payg.stores.ledger.batching import DEFAULT_BATCH_S, WaitingRecords
from litellm_payg.stores.redis_client import connect
from litellm_payg.stores.schemes import check_batch_s
from litellm_payg.stores.ledger.base import (
    charge_args,
    redact_url,
    Bucket,
    BucketState,
    Ledger,
    LedgerError,
    LedgerUnavailable,
    ReserveResult,
    SpendRecord,
    Usage,
    bucket_spec,
    check_units,
    check_ttl,
    clean_attrs,
    clock,
    from_nanos,
    limit_nanos,
    to_nanos,
)

logger = logging.getLogger("litellm_payg")

#: expired reservations charged per reserve() call (bounds script run time;
#: expire() loops until none are left)
EXPIRE_BATCH = 100

_PRELUDE = r"""
local P = ARGV[1]
local function nn(v) if v == cjson.null then return nil end return v end
local function fmt(n) return string.format('%d', n) end
local UNIT = '1000000000'
-- a session counter (idle seconds, field 'l' = last activity): idle past them, its spend reads 0
local function idle_over(bkey, idle, now)
  if idle == nil then return false end
  local l = redis.call('HGET', bkey, 'l')
  return l ~= false and l ~= nil and now - tonumber(l) >= idle
end
-- a session counter that starts (afresh): no spend, no operator grant or close, first activity now
local function wake(bkey, idle, now)
  if idle == nil then return end
  local l = redis.call('HGET', bkey, 'l')
  if (not l) or now - tonumber(l) >= idle then
    redis.call('HSET', bkey, 's', '0', 'f', string.format('%.17g', now))
    redis.call('HDEL', bkey, 'g', 'ga', 'x', 'n')
  end
  if (not l) or now > tonumber(l) then redis.call('HSET', bkey, 'l', string.format('%.17g', now)) end
end
local function live(bkey, idle, now)
  if idle == nil then return redis.call('EXISTS', bkey) == 1 end
  local l = redis.call('HGET', bkey, 'l')
  return l ~= false and l ~= nil and now - tonumber(l) < idle
end
local function units_of(n) if n == nil or n == cjson.null then return nil end n = fmt(n) if n == '0' then return '0' end return n .. '000000000' end
-- what a reservation of `amount` adds to spec s: a request (UNIT), its units (a token bound) or the amount
local function amount_on(s, amount)
  if s[5] == true then return units_of(s[6]) or UNIT end
  return amount
end
-- what a charge adds: a units bucket counts what the call used (`used`, '' = its reserved units)
local function used_on(s, amount, used)
  if s[5] == true and s[6] ~= nil and s[6] ~= cjson.null and used ~= nil and used ~= '' then return units_of(tonumber(used)) end
  return amount_on(s, amount)
end
local function granted_of(bkey, idle, now)
  if not live(bkey, idle, now) then return 0 end
  return tonumber(redis.call('HGET', bkey, 'g') or '0')
end
local function spent_of(bkey, rs, now, prune, idle)
  if idle_over(bkey, idle, now) then return 0 end
  if rs == nil then return tonumber(redis.call('HGET', bkey, 's') or '0') end
  local floor = math.floor((now - rs) / (rs / 60))
  local total = 0
  local h = redis.call('HGETALL', bkey)
  for i = 1, #h, 2 do
    local f = h[i]
    if string.sub(f, 1, 1) == 'w' then
      if tonumber(string.sub(f, 2)) >= floor then total = total + tonumber(h[i + 1])
      elseif prune then redis.call('HDEL', bkey, f) end
    end
  end
  return total
end
local function reserved_of(bkey) return tonumber(redis.call('HGET', bkey, 'r') or '0') end
local function decr_reserved(bkey, amt)
  if amt ~= '0' then
    if redis.call('HINCRBY', bkey, 'r', '-' .. amt) < 0 then redis.call('HSET', bkey, 'r', '0') end
  end
end
-- relative TTLs, so a skewed or fake caller clock never deletes live data
local function keep(bkey, rs, bexp, now, res_exp, idle)
  local secs
  if idle ~= nil then secs = math.max(res_exp - now, 0) + idle + 60
  elseif rs ~= nil then secs = math.max(now, res_exp) - now + rs + 2 * rs / 60 + 60
  elseif bexp ~= nil then secs = math.max(bexp - now, res_exp - now + 60, 60)
  else return end
  redis.call('PEXPIRE', bkey, fmt(math.ceil(secs * 1000)))
end
local function charge(rid, specs_json, reserved, amount, ts_str, kind, attrs_json, extra_json, amt_repr, now, used)
  local ts = tonumber(ts_str)
  for _, s in ipairs(cjson.decode(specs_json)) do
    local bkey = P .. 'b:' .. s[1]
    local rs = nn(s[2])
    local idle = nn(s[4])
    wake(bkey, idle, now)
    decr_reserved(bkey, amount_on(s, reserved))
    if rs == nil then
      redis.call('HINCRBY', bkey, 's', used_on(s, amount, used))
    else
      redis.call('HINCRBY', bkey, 'w' .. fmt(math.floor(ts / (rs / 60))), used_on(s, amount, used))
      spent_of(bkey, rs, ts, true, nil)
    end
    keep(bkey, rs, nn(s[3]), ts, ts, idle)
  end
  local member = '{"rid":' .. cjson.encode(rid) .. ',"kind":"' .. kind .. '","n":"' .. amount ..
    '","amt":' .. amt_repr .. ',"ts":' .. ts_str .. ',"b":' .. specs_json ..
    ',"t":' .. attrs_json .. ',"u":' .. extra_json .. '}'
  redis.call('ZADD', P .. 'rec', ts_str, member)
end
local function expire_due(now_str, batch)
  local due = redis.call('ZRANGEBYSCORE', P .. 'exp', '-inf', now_str, 'LIMIT', 0, batch)
  for _, rid in ipairs(due) do
    local rk = P .. 'res:' .. rid
    local h = redis.call('HMGET', rk, 'a', 'e', 'b', 't')
    redis.call('ZREM', P .. 'exp', rid)
    if h[1] then
      redis.call('DEL', rk)
      charge(rid, h[3], h[1], h[1], h[2], 'expired', h[4], '{}', 'null', tonumber(now_str))
    end
  end
  return #due
end
"""

# KEYS: exp, rec, res, bucket keys...   ARGV: P, now, amount, res_expiry, rid,
# specs_json, attrs_json, batch, limit per bucket ('' = never refuses), then max age per bucket ('' = none)
_RESERVE = _PRELUDE + r"""
local now = tonumber(ARGV[2])
expire_due(ARGV[2], tonumber(ARGV[8]))
local specs = cjson.decode(ARGV[6])
local n = #specs
local out, used, granted, alive = {}, {}, {}, {}
for i, s in ipairs(specs) do
  local idle = nn(s[4])
  local sp = spent_of(KEYS[3 + i], nn(s[2]), now, false, idle)
  local rv = reserved_of(KEYS[3 + i])
  alive[i] = idle ~= nil and live(KEYS[3 + i], idle, now)
  granted[i] = alive[i] and tonumber(redis.call('HGET', KEYS[3 + i], 'g') or '0') or 0
  out[#out + 1] = fmt(sp); out[#out + 1] = fmt(rv); out[#out + 1] = fmt(granted[i])
  used[i] = sp + rv
end
if redis.call('EXISTS', KEYS[3]) == 1 then return {1, 0, out, ''} end
for i, s in ipairs(specs) do
  if alive[i] and redis.call('HGET', KEYS[3 + i], 'x') == '1' then return {0, i, out, 'closed'} end
end
for i, s in ipairs(specs) do
  local age = ARGV[8 + n + i]
  if alive[i] and age ~= '' then
    local f = redis.call('HGET', KEYS[3 + i], 'f')
    local extra = tonumber(redis.call('HGET', KEYS[3 + i], 'ga') or '0')
    if f and now - tonumber(f) >= tonumber(age) + extra then return {0, i, out, 'age'} end
  end
end
for i, s in ipairs(specs) do
  local lim = ARGV[8 + i]
  if lim ~= '' and used[i] + tonumber(amount_on(s, ARGV[3])) > tonumber(lim) + granted[i] then return {0, i, out, 'limit'} end
end
local res_exp = tonumber(ARGV[4])
for i, s in ipairs(specs) do
  local idle = nn(s[4])
  wake(KEYS[3 + i], idle, now)
  local mine = amount_on(s, ARGV[3])
  if mine ~= '0' then redis.call('HINCRBY', KEYS[3 + i], 'r', mine) end
  keep(KEYS[3 + i], nn(s[2]), nn(s[3]), now, res_exp, idle)
end
redis.call('HSET', KEYS[3], 'a', ARGV[3], 'e', ARGV[4], 'b', ARGV[6], 't', ARGV[7])
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[5])
return {1, 0, out, ''}
"""

# KEYS: exp, rec, res   ARGV: P, now, actual nanos, actual repr, rid, attrs_json, units used ('' = not said)
_SETTLE = _PRELUDE + r"""
local h = redis.call('HMGET', KEYS[3], 'a', 'e', 'b', 't')
if not h[1] then return 0 end
redis.call('DEL', KEYS[3])
redis.call('ZREM', KEYS[1], ARGV[5])
charge(ARGV[5], h[3], h[1], ARGV[3], ARGV[2], 'settled', h[4], ARGV[6], ARGV[4], tonumber(ARGV[2]), ARGV[7])
return 1
"""

# KEYS: exp, res   ARGV: P, rid
_RELEASE = _PRELUDE + r"""
local h = redis.call('HMGET', KEYS[2], 'a', 'b')
if not h[1] then return 0 end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[1], ARGV[2])
for _, s in ipairs(cjson.decode(h[2])) do decr_reserved(P .. 'b:' .. s[1], amount_on(s, h[1])) end
return 1
"""

# KEYS: bucket keys   ARGV: P, now, specs_json
_USAGE = _PRELUDE + r"""
local now = tonumber(ARGV[2])
local out = {}
for i, s in ipairs(cjson.decode(ARGV[3])) do
  local idle = nn(s[4])
  out[#out + 1] = fmt(spent_of(KEYS[i], nn(s[2]), now, false, idle))
  out[#out + 1] = fmt(reserved_of(KEYS[i]))
  out[#out + 1] = fmt(idle ~= nil and granted_of(KEYS[i], idle, now) or 0)
end
return out
"""

# KEYS: bucket keys   ARGV: P, now, specs_json
# per bucket: spent, reserved, granted, granted seconds, closed, first, last, note, live ('' = none)
_STATE = _PRELUDE + r"""
local now = tonumber(ARGV[2])
local out = {}
for i, s in ipairs(cjson.decode(ARGV[3])) do
  local idle = nn(s[4])
  out[#out + 1] = fmt(spent_of(KEYS[i], nn(s[2]), now, false, idle))
  out[#out + 1] = fmt(reserved_of(KEYS[i]))
  if idle ~= nil and live(KEYS[i], idle, now) then
    local h = redis.call('HMGET', KEYS[i], 'g', 'ga', 'x', 'f', 'l', 'n')
    for j = 1, 6 do out[#out + 1] = h[j] or '' end
    out[#out + 1] = '1'
  else
    for j = 1, 6 do out[#out + 1] = '' end
    out[#out + 1] = ''
  end
end
return out
"""

# KEYS: bucket keys   ARGV: P, now, specs_json, close ('' | '0' | '1'), note ('' = none, else '=' .. note),
# then per bucket: grant nanos, grant seconds
_ADJUST = _PRELUDE + r"""
local now = tonumber(ARGV[2])
local specs = cjson.decode(ARGV[3])
if #specs == 0 then return 0 end
for i, s in ipairs(specs) do
  local idle = nn(s[4])
  if idle == nil or not live(KEYS[i], idle, now) then return 0 end
end
local n = #specs
for i, s in ipairs(specs) do
  if ARGV[5 + i] ~= '0' then redis.call('HINCRBY', KEYS[i], 'g', ARGV[5 + i]) end
  if ARGV[5 + n + i] ~= '0' then redis.call('HINCRBYFLOAT', KEYS[i], 'ga', ARGV[5 + n + i]) end
  if ARGV[4] ~= '' then redis.call('HSET', KEYS[i], 'x', ARGV[4]) end
  if ARGV[5] ~= '' then redis.call('HSET', KEYS[i], 'n', string.sub(ARGV[5], 2)) end
end
return 1
"""

# KEYS: exp, rec   ARGV: P, now, batch
_EXPIRE = _PRELUDE + r"""
return expire_due(ARGV[2], tonumber(ARGV[3]))
"""



class RedisLedger(Ledger):
    def __init__(self, url: str) -> None:
        self.url = redact_url(url)
        batch_s = dict(parse_qsl(urlsplit(url).query)).get("batch_s")
        try:
            batch_s = DEFAULT_BATCH_S if batch_s is None else check_batch_s(batch_s, f"Redis ledger URL {self.url}")
        except ValueError as e:
            raise LedgerError(str(e)) from None
        try:
            self._r, self.prefix = connect(url)
        except ValueError as e:
            raise LedgerError(f"bad Redis ledger URL {self.url}: {e}") from e
        #: records without a budget, written a batch at a time in one round trip (``batching.py``)
        self._waiting = WaitingRecords(batch_s, lambda: self.flush(quiet=True))
        self._writing = threading.Lock()  # one batch write at a time, so batches land in order
        self._reserve = self._r.register_script(_RESERVE)
        self._settle = self._r.register_script(_SETTLE)
        self._release = self._r.register_script(_RELEASE)
        self._usage = self._r.register_script(_USAGE)
        self._state = self._r.register_script(_STATE)
        self._adjust = self._r.register_script(_ADJUST)
        self._expire = self._r.register_script(_EXPIRE)
        self._lock = threading.Lock()  # only guards close()

    # -- helpers ------------------------------------------------------------

    def _k(self, suffix: str) -> str:
        return self.prefix + suffix

    def _call(self, script, keys, args):
        try:
            return script(keys=keys, args=[self.prefix, *args])
        except (redis_lib.ConnectionError, redis_lib.TimeoutError) as e:
            raise LedgerUnavailable(f"Redis ledger {self.url} unavailable: {e}") from e
        except redis_lib.RedisError as e:
            raise LedgerError(f"Redis ledger {self.url} error: {e}") from e

    @staticmethod
    def _specs(buckets: Sequence[Bucket]) -> str:
        return json.dumps([bucket_spec(b) for b in buckets], ensure_ascii=False)

    @staticmethod
    def _pairs(buckets: Sequence[Bucket], flat: list) -> dict[str, Usage]:
        """Usage from the scripts' ``spent, reserved, granted`` per bucket."""
        return {b.key: Usage(from_nanos(int(flat[3 * i])), from_nanos(int(flat[3 * i + 1])), from_nanos(int(flat[3 * i + 2])))
                for i, b in enumerate(buckets)}

    def _reserve_call(self, rid: str, buckets: Sequence[Bucket], amount: int, ttl_s: float, now: float,
                      attrs_json: str) -> tuple[list[str], list]:
        """The reserve script's keys and arguments (after the prefix)."""
        limits = ["" if (lim := limit_nanos(b)) is None else str(lim) for b in buckets]
        ages = ["" if b.max_age_s is None else repr(float(b.max_age_s)) for b in buckets]
        keys = [self._k("exp"), self._k("rec"), self._k("res:" + rid), *(self._k("b:" + b.key) for b in buckets)]
        return keys, [repr(now), str(amount), repr(now + ttl_s), rid, self._specs(buckets), attrs_json, EXPIRE_BATCH,
                      *limits, *ages]

    def _settle_call(self, rid: str, actual: int, actual_usd: float, now: float, attrs_json: str,
                     units: int | None = None) -> tuple[list[str], list]:
        """The settle script's keys and arguments (after the prefix)."""
        return ([self._k("exp"), self._k("rec"), self._k("res:" + rid)],
                [repr(now), str(actual), repr(float(actual_usd)), rid, attrs_json, "" if units is None else str(int(units))])

    def _record_calls(self, pipe, row: tuple) -> None:
        """What ``record`` without buckets is, ``reserve`` then ``settle``, queued on ``pipe``."""
        rid, amount_usd, ttl_s, now, attrs_json = row
        amount = to_nanos(amount_usd)
        for script, (keys, args) in ((self._reserve, self._reserve_call(rid, (), amount, ttl_s, now, attrs_json)),
                                     (self._settle, self._settle_call(rid, amount, amount_usd, now, attrs_json))):
            script(keys=keys, args=[self.prefix, *args], client=pipe)

    def _write_rows(self, rows: Sequence[tuple]) -> None:
        """Book waiting records in one round trip: a MULTI/EXEC pipeline, so a batch lands whole
        or not at all."""
        try:
            with self._r.pipeline(transaction=True) as pipe:
                for row in rows:
                    self._record_calls(pipe, row)
                pipe.execute()
        except (redis_lib.ConnectionError, redis_lib.TimeoutError) as e:
            raise LedgerUnavailable(f"Redis ledger {self.url} unavailable: {e}") from e
        except redis_lib.RedisError as e:
            raise LedgerError(f"Redis ledger {self.url} error: {e}") from e

    def _write_waiting(self, *, wait_for_writes: bool = False) -> None:
        """Write the waiting records (before any other call reads or writes); they wait again on failure.

        ``wait_for_writes`` (``flush``, ``close`` and so the exit hook): also wait for a batch another
        thread is writing. The writer thread takes its batch before it writes it, so "nothing waits"
        can mean "a write is under way"; returning then let the interpreter end, or ``close`` shut
        the pool, under that write, and its records were lost."""
        if not wait_for_writes and not len(self._waiting):
            return
        with self._writing:
            self._waiting.write_with(self._write_rows)

    def flush(self, quiet: bool = False) -> None:
        """Write the records waiting to be batched now. Raises ``LedgerUnavailable`` if they
        cannot be written (they keep waiting), unless ``quiet``, when it logs that instead."""
        try:
            self._write_waiting(wait_for_writes=True)
        except LedgerError as exc:
            if not quiet:
                raise
            logger.warning("litellm-payg: Redis ledger %s could not write %d waiting record(s) yet: %s",
                           self.url, len(self._waiting), exc)

    # -- interface --------------------------------------------------------

    def record(self, reservation_id, buckets, amount_usd, ttl_s, now=None, attrs=None):
        """Without buckets (every request of a policy without budgets): kept to be written with
        others, in one round trip (``batching.py``); with buckets, ``reserve`` then ``settle``."""
        buckets = tuple(buckets)
        if buckets:
            super().record(reservation_id, buckets, amount_usd, ttl_s, now=now, attrs=attrs)
            return
        check_ttl(ttl_s)
        to_nanos(amount_usd)  # refused now, not when the batch is written
        row = (reservation_id, float(amount_usd), ttl_s, clock(now),
               json.dumps(clean_attrs(attrs), default=str, ensure_ascii=False))
        if self._waiting.batch_s <= 0:
            self._write_waiting()
            self._write_rows([row])
        elif self._waiting.add(row):  # the batch is full
            self.flush(quiet=True)

    def reserve(self, reservation_id, buckets, amount_usd, ttl_s, now=None, attrs=None):
        self._write_waiting()
        buckets, amount, now = charge_args(buckets, amount_usd, ttl_s, now)
        keys, args = self._reserve_call(reservation_id, buckets, amount, ttl_s, now,
                                        json.dumps(clean_attrs(attrs), default=str, ensure_ascii=False))
        ok, refused, flat, rule = self._call(self._reserve, keys, args)
        before = self._pairs(buckets, flat)
        rule = rule.decode() if isinstance(rule, bytes) else rule
        return ReserveResult(bool(ok), reservation_id, buckets[refused - 1].key if refused else None, before,
                             rule or None)

    def settle(self, reservation_id, actual_usd, now=None, attrs=None, units=None):
        self._write_waiting()
        actual = to_nanos(actual_usd, "actual_usd")
        check_units(units)
        keys, args = self._settle_call(reservation_id, actual, actual_usd, clock(now),
                                       json.dumps(clean_attrs(attrs), default=str, ensure_ascii=False), units)
        return bool(self._call(self._settle, keys, args))

    def state(self, buckets, now=None):
        self._write_waiting()
        buckets = tuple(buckets)
        flat = self._call(self._state, [self._k("b:" + b.key) for b in buckets], [repr(clock(now)), self._specs(buckets)])
        flat = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in flat]
        out = {}
        for i, b in enumerate(buckets):
            spent, reserved, g, ga, x, f, last, note, alive = flat[9 * i:9 * i + 9]
            out[b.key] = BucketState(
                Usage(from_nanos(int(spent)), from_nanos(int(reserved)), from_nanos(int(g)) if g else 0.0),
                float(ga) if ga else 0.0, x == "1", float(f) if f else None, float(last) if last else None,
                note or None, live=alive == "1")
        return out

    def adjust(self, buckets, *, grant=None, grant_s=None, close=None, note=None, now=None):
        self._write_waiting()
        buckets = tuple(buckets)
        adds = [str(to_nanos((grant or {}).get(b.key, 0.0), "grant")) for b in buckets]
        adds_s = [repr(to_nanos((grant_s or {}).get(b.key, 0.0), "grant_s") / 1e9) for b in buckets]
        adds_s = ["0" if a == "0.0" else a for a in adds_s]
        args = [repr(clock(now)), self._specs(buckets), "" if close is None else ("1" if close else "0"),
                "" if note is None else "=" + note, *adds, *adds_s]
        return bool(self._call(self._adjust, [self._k("b:" + b.key) for b in buckets], args))

    def release(self, reservation_id):
        self._write_waiting()
        keys = [self._k("exp"), self._k("res:" + reservation_id)]
        return bool(self._call(self._release, keys, [reservation_id]))

    def usage(self, buckets, now=None):
        self._write_waiting()
        buckets = tuple(buckets)
        flat = self._call(self._usage, [self._k("b:" + b.key) for b in buckets],
                          [repr(clock(now)), self._specs(buckets)])
        return self._pairs(buckets, flat)

    def expire(self, now=None):
        self._write_waiting()
        now = clock(now)
        total = 0
        while True:
            n = self._call(self._expire, [self._k("exp"), self._k("rec")], [repr(now), 1000])
            total += n
            if n < 1000:
                return total

    def records(self, since=None):
        self._write_waiting()
        try:
            raw = self._r.zrangebyscore(self._k("rec"), "-inf" if since is None else repr(float(since)), "+inf")
        except (redis_lib.ConnectionError, redis_lib.TimeoutError) as e:
            raise LedgerUnavailable(f"Redis ledger {self.url} unavailable: {e}") from e
        out = []
        for m in raw:
            d = json.loads(m)
            attrs = d["t"] if isinstance(d["t"], dict) else {}
            if isinstance(d["u"], dict):
                attrs.update(d["u"])
            attrs["kind"] = d["kind"]
            amt = d["amt"] if d["amt"] is not None else from_nanos(int(d["n"]))
            out.append(SpendRecord(float(d["ts"]), d["rid"], float(amt), tuple(s[0] for s in d["b"]), attrs))
        return out

    def claim_once(self, key, ttl_s, now=None):
        self._write_waiting()
        check_ttl(ttl_s)
        try:
            return bool(self._r.set(self._k("claim:" + key), "1", nx=True, px=max(1, int(ttl_s * 1000))))
        except (redis_lib.ConnectionError, redis_lib.TimeoutError) as e:
            raise LedgerUnavailable(f"Redis ledger {self.url} unavailable: {e}") from e

    def open_reservations(self):
        self._write_waiting()
        try:
            return int(self._r.zcard(self._k("exp")))
        except (redis_lib.ConnectionError, redis_lib.TimeoutError) as e:
            raise LedgerUnavailable(f"Redis ledger {self.url} unavailable: {e}") from e

    def close(self):
        self._waiting.close()
        try:
            self._write_waiting(wait_for_writes=True)
        except LedgerError as exc:
            lost = self._waiting.take()
            logger.error("litellm-payg: Redis ledger %s closed with %d record(s) it could not write (%s); they were: %s",
                         self.url, len(lost), exc, "; ".join(f"{row[0]} ${row[1]:.9f} at {row[3]}" for row in lost))
        with self._lock:
            self._r.close()
            self._r.connection_pool.disconnect()
