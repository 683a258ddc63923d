"""In-process ledger: one lock around plain dicts.

For a single process (tests, a lone proxy, benchmarks' baseline). Nothing
survives a restart, so caps restart from zero; use sqlite/redis when that
matters. ``ReplayLedger`` (``open_replay_ledger``) is its variant for a
what-if replay: the same budgets, no records, an answered request booked in
one pass.
"""

from __future__ import annotations

import heapq
import math
import threading
from dataclasses import dataclass, field
from typing import Sequence

from litellm_payg.stores.ledger.base import (
    MAX_AMOUNT_USD,
    charge_args,
    Bucket,
    BucketState,
    Ledger,
    LedgerError,
    ReserveResult,
    SpendRecord,
    Usage,
    age_over,
    bucket_amount,
    check_buckets,
    check_units,
    spec_amount,
    check_ttl,
    idle_over,
    clean_attrs,
    clock,
    from_nanos,
    oldest_live_slice,
    slice_index,
    to_nanos,
)


@dataclass
class _Counter:
    rolling_s: float | None
    expires_at: float | None
    spent: int = 0
    reserved: int = 0
    slices: dict[int, int] = field(default_factory=dict)
    idle_s: float | None = None
    last: float | None = None  # a session counter's last activity
    first: float | None = None  # ... and its first, since it last started afresh
    granted: int = 0  # an operator's grant on top of the limit (Ledger.adjust)
    granted_s: float = 0.0  # ... on top of a max_age_s
    closed: bool = False
    note: str | None = None

    def live(self, now: float) -> bool:
        """A session counter not idle past its time (any other counter is live while it exists)."""
        return not idle_over(self.idle_s, self.last, now)

    def spent_at(self, now: float) -> int:
        if idle_over(self.idle_s, self.last, now):
            return 0
        if self.rolling_s is None:
            return self.spent
        floor = oldest_live_slice(now, self.rolling_s)
        return sum(v for i, v in self.slices.items() if i >= floor)

    def wake(self, now: float) -> None:
        """A session counter is active at ``now``: idle past its ``idle_s``, it starts afresh."""
        if self.idle_s is None:
            return
        if self.last is None or idle_over(self.idle_s, self.last, now):
            self.spent, self.granted, self.granted_s, self.closed, self.note = 0, 0, 0.0, False, None
            self.first = now
        if self.last is None or now > self.last:
            self.last = now

    def add(self, amount: int, ts: float) -> None:
        """Charge at ``ts``; rolling buckets also drop slices that aged out."""
        if self.rolling_s is None:
            self.spent += amount
            return
        floor = oldest_live_slice(ts, self.rolling_s)
        for idx in [i for i in self.slices if i < floor]:
            del self.slices[idx]
        idx = slice_index(ts, self.rolling_s)
        self.slices[idx] = self.slices.get(idx, 0) + amount


@dataclass
class _Reservation:
    amount: int
    expires_at: float
    buckets: tuple[Bucket, ...]
    attrs: dict


class MemoryLedger(Ledger):
    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._lock = threading.Lock()
        self._counters: dict[str, _Counter] = {}
        self._res: dict[str, _Reservation] = {}
        self._expiry: list[tuple[float, str]] = []  # heap; stale entries skipped
        self._records: list[SpendRecord] = []
        self._claims: dict[str, float] = {}
        self._closed = False

    # -- internals (lock held) ------------------------------------------

    def _counter(self, b: Bucket) -> _Counter:
        c = self._counters.get(b.key)
        if c is None:
            c = self._counters[b.key] = _Counter(b.rolling_s, b.expires_at, idle_s=b.idle_s)
        elif b.expires_at is not None and (c.expires_at is None or b.expires_at > c.expires_at):
            c.expires_at = b.expires_at
        return c

    def _charge(self, rid: str, res: _Reservation, amount: int, amount_usd: float, ts: float, kind: str,
                now: float, units: int | None = None) -> None:
        for b in res.buckets:
            c = self._counter(b)
            c.wake(now)
            c.reserved = max(0, c.reserved - bucket_amount(b, res.amount))
            c.add(spec_amount(b.counts, b.units, amount, units), ts)
        attrs = dict(res.attrs, kind=kind)
        self._records.append(SpendRecord(ts, rid, amount_usd, tuple(b.key for b in res.buckets), attrs))

    def _expire(self, now: float) -> int:
        n = 0
        while self._expiry and self._expiry[0][0] <= now:
            exp, rid = heapq.heappop(self._expiry)
            res = self._res.get(rid)
            if res is None or res.expires_at != exp:
                continue
            del self._res[rid]
            self._charge(rid, res, res.amount, from_nanos(res.amount), res.expires_at, "expired", now)
            n += 1
        return n

    def _usage(self, buckets: Sequence[Bucket], now: float) -> dict[str, Usage]:
        out = {}
        for b in buckets:
            c = self._counters.get(b.key)
            if c is None:
                out[b.key] = Usage(0.0, 0.0)
            else:
                out[b.key] = Usage(from_nanos(c.spent_at(now)), from_nanos(c.reserved),
                                   from_nanos(c.granted) if c.live(now) else 0.0)
        return out

    def _refusal(self, buckets: Sequence[Bucket], amount: int, now: float) -> tuple[str, str] | None:
        """``(bucket key, rule)`` of the first bucket that refuses a reservation of ``amount``:
        one closed first, then one past its age, then one over its limit (grants included)."""
        # by position, not by key: a reservation's keys are distinct (``check_buckets``); run on every
        # reservation (every what-if row under a budget), so plain loops, not comprehensions
        get = self._counters.get
        if len(buckets) == 1:  # one budget (a team's day): the same checks, in the same order, for it alone
            b = buckets[0]
            c = get(b.key)
            lc = c if c is not None and (c.idle_s is None or c.live(now)) else None
            if lc is not None:
                if lc.closed:
                    return b.key, "closed"
                if b.max_age_s is not None and age_over(b.max_age_s, lc.granted_s, lc.first, now):
                    return b.key, "age"
            if not b.enforce or b.limit_usd is None:
                return None
            if c is None:
                used = 0
            elif c.idle_s is None and c.rolling_s is None:
                used = c.spent + c.reserved
            else:
                used = c.spent_at(now) + c.reserved
            granted = lc.granted if lc is not None else 0
            if used + (bucket_amount(b, amount) if b.counts else amount) > to_nanos(b.limit_usd, "limit_usd") + granted:
                return b.key, "limit"
            return None
        found = []
        aged = None  # the first bucket past its age: refuses only when none is closed
        for b in buckets:
            c = get(b.key)
            # live: any counter but a session's idle past its time (``_Counter.live``)
            lc = c if c is not None and (c.idle_s is None or c.live(now)) else None
            if lc is not None:
                if lc.closed:
                    return b.key, "closed"
                if aged is None and b.max_age_s is not None and age_over(b.max_age_s, lc.granted_s, lc.first, now):
                    aged = b.key
            found.append((b, c, lc))
        if aged is not None:
            return aged, "age"
        for b, c, lc in found:
            if not b.enforce or b.limit_usd is None:  # limit_nanos(b) is None: it never refuses
                continue
            lim = to_nanos(b.limit_usd, "limit_usd")
            if c is None:
                used = 0
            elif c.idle_s is None and c.rolling_s is None:  # a calendar or lifetime counter: what it has spent
                used = c.spent + c.reserved
            else:
                used = c.spent_at(now) + c.reserved
            granted = lc.granted if lc is not None else 0
            if used + (bucket_amount(b, amount) if b.counts else amount) > lim + granted:
                return b.key, "limit"
        return None

    def _check_open(self) -> None:
        if self._closed:
            raise LedgerError(f"ledger {self.url} is closed")

    # -- interface --------------------------------------------------------

    def reserve(self, reservation_id, buckets, amount_usd, ttl_s, now=None, attrs=None):
        buckets, amount, now = charge_args(buckets, amount_usd, ttl_s, now)
        with self._lock:
            self._check_open()
            self._expire(now)
            before = self._usage(buckets, now)
            if reservation_id in self._res:
                return ReserveResult(True, reservation_id, None, before)
            refused = self._refusal(buckets, amount, now)
            if refused is not None:
                return ReserveResult(False, reservation_id, refused[0], before, refused[1])
            for b in buckets:
                c = self._counter(b)
                c.wake(now)
                c.reserved += bucket_amount(b, amount)
            exp = now + ttl_s
            self._res[reservation_id] = _Reservation(amount, exp, buckets, clean_attrs(attrs))
            heapq.heappush(self._expiry, (exp, reservation_id))
            return ReserveResult(True, reservation_id, None, before)

    def settle(self, reservation_id, actual_usd, now=None, attrs=None, units=None):
        actual = to_nanos(actual_usd, "actual_usd")
        check_units(units)
        now = clock(now)
        with self._lock:
            self._check_open()
            res = self._res.pop(reservation_id, None)
            if res is None:
                return False
            res.attrs.update(clean_attrs(attrs))
            self._charge(reservation_id, res, actual, float(actual_usd), now, "settled", now, units)
            return True

    def state(self, buckets, now=None):
        now = clock(now)
        buckets = tuple(buckets)
        with self._lock:
            self._check_open()
            usage = self._usage(buckets, now)
            out = {}
            for b in buckets:
                c = self._counters.get(b.key)
                if c is None or not c.live(now):
                    out[b.key] = BucketState(usage[b.key])
                else:
                    out[b.key] = BucketState(usage[b.key], c.granted_s, c.closed, c.first, c.last, c.note, live=True)
            return out

    def adjust(self, buckets, *, grant=None, grant_s=None, close=None, note=None, now=None):
        now = clock(now)
        buckets = tuple(buckets)
        adds = {k: to_nanos(v, "grant") for k, v in (grant or {}).items()}
        adds_s = {k: float(to_nanos(v, "grant_s")) / 1e9 for k, v in (grant_s or {}).items()}
        with self._lock:
            self._check_open()
            found = [self._counters.get(b.key) for b in buckets]
            if not found or any(c is None or c.idle_s is None or not c.live(now) for c in found):
                return False
            for b, c in zip(buckets, found):
                c.granted += adds.get(b.key, 0)
                c.granted_s += adds_s.get(b.key, 0.0)
                if close is not None:
                    c.closed = bool(close)
                if note is not None:
                    c.note = note
            return True

    def release(self, reservation_id):
        with self._lock:
            self._check_open()
            res = self._res.pop(reservation_id, None)
            if res is None:
                return False
            for b in res.buckets:
                c = self._counter(b)
                c.reserved = max(0, c.reserved - bucket_amount(b, res.amount))
            return True

    def usage(self, buckets, now=None):
        now = clock(now)
        with self._lock:
            self._check_open()
            return self._usage(tuple(buckets), now)

    def expire(self, now=None):
        now = clock(now)
        with self._lock:
            self._check_open()
            n = self._expire(now)
            # garbage collect finished calendar buckets nobody still reserves on
            # and session counters idle past their idle_s (they read as empty already)
            for key in [k for k, c in self._counters.items()
                        if c.reserved == 0 and ((c.expires_at is not None and c.expires_at <= now)
                                                or idle_over(c.idle_s, c.last, now))]:
                del self._counters[key]
            return n

    def records(self, since=None):
        with self._lock:
            self._check_open()
            recs = self._records if since is None else [r for r in self._records if r.ts >= since]
            return sorted(recs, key=lambda r: r.ts)

    def claim_once(self, key, ttl_s, now=None):
        check_ttl(ttl_s)
        now = clock(now)
        with self._lock:
            self._check_open()
            until = self._claims.get(key)
            if until is not None and until > now:
                return False
            self._claims[key] = now + ttl_s
            return True

    def open_reservations(self):
        with self._lock:
            return len(self._res)

    def close(self):
        with self._lock:
            self._closed = True


# -- the ledger of a what-if replay ----------------------------------------------------------------


class _Held:
    __slots__ = ("rid", "amount", "buckets", "now", "ttl_s")

    def __init__(self, rid: str, amount: int, buckets: tuple[Bucket, ...], now: float, ttl_s: float):
        self.rid, self.amount, self.buckets, self.now, self.ttl_s = rid, amount, buckets, now, ttl_s


class ReplayLedger(MemoryLedger):
    """The ledger a what-if replay runs on: the memory ledger's budgets, without its per-charge costs.

    A replay (``whatif.py``) answers every request it admits at once: ``Lifecycle.pick`` reserves the
    estimate, ``succeeded`` settles the real cost (or ``release`` frees it), on the same clock reading,
    before the next row. On the memory ledger that is two passes over the request's buckets (add the
    estimate to ``reserved``, take it off again and add the cost to ``spent``), a ``_Reservation``, a
    push on the expiry heap, the record's attributes cleaned twice and a ``SpendRecord`` kept per
    charge: a million of those would make memory grow with the history.

    A ``ReplayLedger`` is a :class:`MemoryLedger` with its *newest*
    reservation held aside instead: ``reserve`` makes the same refusal check, against the same counters,
    and on success only notes the reservation (id, amount, buckets, when). Its own ``settle`` then charges
    the counters in one pass (each bucket woken at the reservation's time and at the settlement's, as
    the two steps would); its own ``release`` forgets it. Anything else that reads or changes the
    counters first applies it as the memory ledger would have (``_apply_held``), so a second reservation
    while one is held, a usage read, ``expire`` and ``open_reservations`` see exactly what they would
    on the memory ledger. Budgets, windows, idle sessions and refusals are therefore the memory
    ledger's, only the answered-at-once case is cheaper (``tests/test_whatif.py`` replays a budgeted
    month on both ledgers and compares every figure). No ``SpendRecord`` is kept: a replay reads its
    budgets' usage, never its records, and the attributes a record would carry are not cleaned.
    """

    #: the replay reads budgets, never records: a caller may leave a record's attributes out
    keeps_records = False

    def __init__(self, url: str = "memory://replay") -> None:
        super().__init__(url)
        self._held: _Held | None = None

    # -- the held reservation (lock held) ---------------------------------------------------------

    def _apply_held(self) -> None:
        """Make the held reservation an ordinary one, exactly as ``MemoryLedger.reserve`` would have."""
        h = self._held
        if h is None:
            return
        self._held = None
        for b in h.buckets:
            c = self._counter(b)
            c.wake(h.now)
            c.reserved += bucket_amount(b, h.amount)
        exp = h.now + h.ttl_s
        self._res[h.rid] = _Reservation(h.amount, exp, h.buckets, {})
        heapq.heappush(self._expiry, (exp, h.rid))

    # -- what a replay calls ----------------------------------------------------------------------

    def reserve(self, reservation_id, buckets, amount_usd, ttl_s, now=None, attrs=None):
        buckets, amount, now = charge_args(buckets, amount_usd, ttl_s, now)
        with self._lock:
            if self._closed:
                self._check_open()  # raises
            if self._held is not None:
                self._apply_held()
            if self._expiry and self._expiry[0][0] <= now:  # what ``_expire`` looks at first (on every row)
                self._expire(now)
            if reservation_id in self._res:
                return ReserveResult(True, reservation_id, None, self._usage(buckets, now))
            refused = self._refusal(buckets, amount, now)  # the memory ledger's: closed, age, limit + grant
            if refused is not None:
                return ReserveResult(False, reservation_id, refused[0], self._usage(buckets, now), refused[1])
            self._held = _Held(reservation_id, amount, buckets, now, ttl_s)
            # ``usage`` (before the reservation) is left empty on success: admission reads it only
            # when refused, and computing it is a dict of Usage per bucket per row
            return ReserveResult(True, reservation_id, None, {})

    def settle(self, reservation_id, actual_usd, now=None, attrs=None, units=None):
        actual = to_nanos(actual_usd, "actual_usd")
        if units is not None:
            check_units(units)
        now = now if type(now) is float else clock(now)
        with self._lock:
            h = self._held
            if h is None or h.rid != reservation_id:
                self._apply_held()
                h = None
            else:
                if self._closed:
                    self._check_open()  # raises
                self._held = None
                # reserve then settle, in one pass: each bucket woken at the reservation's time and
                # at this one, the estimate added to ``reserved`` and taken off again (no change),
                # the cost added to ``spent``. Past its TTL too: the memory ledger settles a
                # reservation no sweep has charged yet with its real cost, and nothing swept here.
                for b in h.buckets:
                    c = self._counter(b)
                    if c.idle_s is not None:  # only a session counter wakes (``_Counter.wake``)
                        c.wake(h.now)
                        c.wake(now)
                    if b.counts or c.rolling_s is not None:
                        c.add(spec_amount(b.counts, b.units, actual, units), now)
                    else:
                        c.spent += actual  # _Counter.add of dollars to a calendar or lifetime counter
                return True
        return super().settle(reservation_id, actual_usd, now=now, attrs=attrs, units=units)

    def release(self, reservation_id):
        with self._lock:
            h = self._held
            if h is None or h.rid != reservation_id:
                self._apply_held()
            else:
                self._check_open()
                self._held = None
                for b in h.buckets:  # what reserve did, less the money: the counters exist, woken at its time
                    self._counter(b).wake(h.now)
                return True
        return super().release(reservation_id)

    def record(self, reservation_id, buckets, amount_usd, ttl_s, now=None, attrs=None):
        """A charge admitted without a reservation (a policy without budgets): reserve (unenforced)
        and settle at once, as ``Ledger.record`` does, in one pass."""
        # checked before the lock, held or not: a held reservation is applied by whatever reads next,
        # so an invalid call leaves the same state either way (one lock per charge, every row)
        if (not buckets and type(amount_usd) is float and 0.0 <= amount_usd <= MAX_AMOUNT_USD and type(ttl_s) is float
                and 0.0 < ttl_s < math.inf and type(now) is float):
            # what charge_args accepts as it is, for a charge no budget counts (every row of a replay
            # without budgets): with nothing held or open to expire, nothing changes
            with self._lock:
                if self._held is None and reservation_id not in self._res and not self._expiry:
                    if self._closed:
                        self._check_open()  # raises
                    return None
        given_now = now
        buckets, actual, now = charge_args(buckets, amount_usd, ttl_s, now)
        with self._lock:
            if self._held is None and reservation_id not in self._res:
                if self._closed:
                    self._check_open()  # raises
                if not buckets and not self._expiry:
                    return None  # no budget counts it and nothing is open to expire: nothing to change
                self._expire(now)
                for b in buckets:
                    c = self._counter(b)
                    c.wake(now)
                    c.add(bucket_amount(b, actual), now)
                return None
            self._apply_held()  # an open id is settled, as the memory ledger's record would
        return super().record(reservation_id, buckets, amount_usd, ttl_s, now=given_now, attrs=attrs)

    # -- everything else sees the held reservation as an ordinary one -----------------------------

    def usage(self, buckets: Sequence[Bucket], now=None):
        with self._lock:
            self._apply_held()
        return super().usage(buckets, now)

    def expire(self, now=None):
        with self._lock:
            self._apply_held()
        return super().expire(now)

    def open_reservations(self):
        with self._lock:
            self._apply_held()
        return super().open_reservations()

    def _charge(self, rid, res, amount, amount_usd, ts, kind, now, units=None):
        # the memory ledger's charge, without the SpendRecord (a replay never reads its records)
        for b in res.buckets:
            c = self._counter(b)
            c.wake(now)
            c.reserved = max(0, c.reserved - bucket_amount(b, res.amount))
            c.add(spec_amount(b.counts, b.units, amount, units), ts)

    def records(self, since=None):
        return []
