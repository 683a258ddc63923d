"""The ledger a what-if replay runs on: the memory ledger's budgets, without its per-charge costs.

A replay (``whatif.py``) answers every request it admits at once: ``Lifecycle.pick`` reserves the
estimate, ``succeeded`` settles the real cost (or ``release`` frees it), on the same clock reading,
before the next row. On the memory ledger that is two passes over the request's buckets (add the
estimate to ``reserved``, take it off again and add the cost to ``spent``), a ``_Reservation``, a
push on the expiry heap, the record's attributes cleaned twice and a ``SpendRecord`` kept per
charge: a million of those would make memory grow with the history.

:class:`ReplayLedger` is :class:`~litellm_payg.stores.ledger.memory.MemoryLedger` with its *newest*
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

from __future__ import annotations

import heapq
from collections.abc import Sequence

from litellm_payg.stores.ledger.base import (
    Bucket,
    ReserveResult,
    bucket_amount,
    check_buckets,
    check_ttl,
    clock,
    limit_nanos,
    to_nanos,
)
from litellm_payg.stores.ledger.memory import MemoryLedger, _Reservation


class _Held:
    __slots__ = ("rid", "amount", "buckets", "now", "ttl_s")

    def __init__(self, rid: str, amount: int, buckets: tuple[Bucket, ...], now: float, ttl_s: float):
        self.rid, self.amount, self.buckets, self.now, self.ttl_s = rid, amount, buckets, now, ttl_s


class ReplayLedger(MemoryLedger):
    """A memory ledger for a replay: the newest reservation held aside, no spend records (see the module)."""

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
        buckets = tuple(buckets)
        check_buckets(buckets)
        check_ttl(ttl_s)
        amount = to_nanos(amount_usd)
        now = clock(now)
        with self._lock:
            self._check_open()
            self._apply_held()
            self._expire(now)
            if reservation_id in self._res:
                return ReserveResult(True, reservation_id, None, self._usage(buckets, now))
            for b in buckets:
                lim = limit_nanos(b)
                if lim is None:
                    continue
                c = self._counters.get(b.key)
                used = 0 if c is None else c.spent_at(now) + c.reserved
                if used + bucket_amount(b, amount) > lim:
                    return ReserveResult(False, reservation_id, b.key, self._usage(buckets, now))
            self._held = _Held(reservation_id, amount, buckets, now, ttl_s)
            # ``usage`` (before the reservation) is left empty on success: admission reads it only
            # when refused, and computing it is a dict of Usage per bucket per row
            return ReserveResult(True, reservation_id, None, {})

    def settle(self, reservation_id, actual_usd, now=None, attrs=None):
        actual = to_nanos(actual_usd, "actual_usd")
        now = clock(now)
        with self._lock:
            h = self._held
            if h is None or h.rid != reservation_id:
                self._apply_held()
                h = None
            else:
                self._check_open()
                self._held = None
                # reserve then settle, in one pass: each bucket woken at the reservation's time and
                # at this one, the estimate added to ``reserved`` and taken off again (no change),
                # the cost added to ``spent``. Past its TTL too: the memory ledger settles a
                # reservation no sweep has charged yet with its real cost, and nothing swept here.
                for b in h.buckets:
                    c = self._counter(b)
                    c.wake(h.now)
                    c.wake(now)
                    c.add(bucket_amount(b, actual), now)
                return True
        return super().settle(reservation_id, actual_usd, now=now, attrs=attrs)

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
        with self._lock:
            held = self._held is not None or reservation_id in self._res
        if held:  # an open id is settled, as the memory ledger's record would
            with self._lock:
                self._apply_held()
            return super().record(reservation_id, buckets, amount_usd, ttl_s, now=now, attrs=attrs)
        buckets = tuple(buckets)
        check_buckets(buckets)
        check_ttl(ttl_s)
        actual = to_nanos(amount_usd)
        now = clock(now)
        with self._lock:
            self._check_open()
            self._expire(now)
            for b in buckets:
                c = self._counter(b)
                c.wake(now)
                c.add(bucket_amount(b, actual), now)
        return None

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

    def _charge(self, rid, res, amount, amount_usd, ts, kind, now):
        # the memory ledger's charge, without the SpendRecord (a replay never reads its records)
        for b in res.buckets:
            c = self._counter(b)
            c.wake(now)
            c.reserved = max(0, c.reserved - bucket_amount(b, res.amount))
            c.add(bucket_amount(b, amount), ts)

    def records(self, since=None):
        return []


__all__ = ["ReplayLedger"]
