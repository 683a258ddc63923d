"""The budget ledger interface shared by every backend.

The rule every backend implements is *reserve, then settle*:

* ``reserve`` atomically adds a pessimistic estimate to every bucket a request
  falls under, and refuses (changing nothing) if any enforced bucket would end
  up with ``spent + reserved + amount > limit``. Refusing only in that case is
  what keeps a burst from "phantom blocking": a reservation never fails
  because of money that is not actually committed.
* ``settle`` replaces the estimate by the real cost; ``release`` drops it when
  the call did not bill.
* a reservation that is neither settled nor released before its TTL (its
  process died, its stream was abandoned) is charged *in full* by the next
  ``reserve``/``expire`` that sees it. Dropping it silently would let a crash
  loop spend without ever being counted.

Money is stored as integer nano-dollars so that counters never accumulate
float error and compare exactly; the amount passed to ``settle`` is also kept
verbatim (as a float) in the spend records so reports can be reconciled with
LiteLLM's own cost to well under 1e-9 USD.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

from litellm_payg.core.bounds import MAX_USD
from litellm_payg.core.buckets import Bucket, BucketState, Usage  # re-exported: the data every backend counts
from litellm_payg.core.errors import InvalidAmount

NANOS_PER_USD = 1_000_000_000

#: the largest amount (a charge, a reservation or a limit) a ledger stores: 1e18 nano-dollars, so
#: a counter (a signed 64-bit integer in SQLite and Redis) keeps 9x headroom for counters that
#: count past their limit (alert budgets, track-only buckets)
MAX_AMOUNT_USD = MAX_USD

#: Rolling windows are kept as this many time slices. A charge stays counted
#: for at least the window length and at most one slice longer, i.e. the
#: approximation always errs on the side of *more* spend, never less.
ROLLING_SLICES = 60


class LedgerError(ValueError):
    """A ledger was misused or misconfigured (bad URL, bad amount, ...)."""


class LedgerUnavailable(LedgerError):
    """The backend could not be reached; the caller decides fail-open/closed."""


_FRESH: Any = object()  # ``ReserveResult(usage=...)`` not given: a dict of its own


@dataclass(frozen=True)
class ReserveResult:
    ok: bool
    reservation_id: str
    refused_by: str | None = None
    #: usage of every bucket BEFORE this reservation (also when refused)
    usage: dict[str, Usage] = field(default_factory=dict)
    #: why ``refused_by`` refused: ``limit`` (its limit, grants included), ``closed`` (an operator
    #: closed it, ``Ledger.adjust``) or ``age`` (its ``max_age_s``, grants included, has passed)
    refused_rule: str | None = None

    def __init__(self, ok: bool, reservation_id: str, refused_by: str | None = None,
                 usage: dict[str, Usage] = _FRESH, refused_rule: str | None = None) -> None:  # type: ignore[assignment]
        # written out: one is built on every reservation, and a generated frozen __init__ costs twice this
        vars(self).update(ok=ok, reservation_id=reservation_id, refused_by=refused_by,
                          usage={} if usage is _FRESH else usage, refused_rule=refused_rule)


@dataclass(frozen=True)
class SpendRecord:
    """One settled (or expired-and-charged) charge, for reports."""

    ts: float
    reservation_id: str
    amount_usd: float
    buckets: tuple[str, ...]
    #: deployment, model, provider, group, user, team, key, tags, kind
    #: ("settled" | "expired")
    attrs: dict


class Ledger(ABC):
    """Abstract budget ledger; every method is synchronous and thread-safe."""

    url: str
    #: whether ``records`` gives back what was settled (every backend's does). A ledger that keeps
    #: none (a what-if replay's) says so, and callers may leave the records' attributes out.
    keeps_records: bool = True

    @abstractmethod
    def reserve(
        self,
        reservation_id: str,
        buckets: Sequence[Bucket],
        amount_usd: float,
        ttl_s: float,
        now: float | None = None,
        attrs: Mapping | None = None,
    ) -> ReserveResult:
        """Atomically reserve ``amount_usd`` on every bucket, or on none.

        Expired reservations are charged first so that the decision is made
        against everything that was really committed. Reserving an id that is
        already open is idempotent (returns ok without reserving twice), which
        makes a retry after a lost reply safe.
        """

    @abstractmethod
    def settle(
        self,
        reservation_id: str,
        actual_usd: float,
        now: float | None = None,
        attrs: Mapping | None = None,
        units: int | None = None,
    ) -> bool:
        """Replace the reservation by the real cost.

        Returns False (and charges nothing) if the reservation is unknown --
        already settled, released or expired-and-charged -- so a retried
        settle can never double charge. A reservation past its TTL that no
        sweep has charged yet is still settled with its real cost.

        ``units``: what the call used of a bucket reserved with ``units`` (a run's tokens); None
        charges such a bucket the units it reserved (their bound).
        """

    @abstractmethod
    def state(self, buckets: Sequence[Bucket], now: float | None = None) -> dict[str, BucketState]:
        """Everything the ledger keeps of each bucket (usage, grants, closed mark, first and last
        activity, note), read in one round trip: what a run's status is made of."""

    @abstractmethod
    def adjust(
        self,
        buckets: Sequence[Bucket],
        *,
        grant: Mapping[str, float] | None = None,
        grant_s: Mapping[str, float] | None = None,
        close: bool | None = None,
        note: str | None = None,
        now: float | None = None,
    ) -> bool:
        """An operator's change to live session counters, in one atomic step: ``grant`` adds to a
        bucket's limit (by key, in its units: USD, requests, tokens), ``grant_s`` to its
        ``max_age_s``, ``close`` marks every bucket closed (True) or open again (False), ``note``
        is kept on every bucket (a run's last refusal). Changes nothing and returns False unless
        every bucket is live (a counter of a run that is active: one the ledger has, not idle past
        its ``idle_s``), so a mistyped or forged run id cannot create state. What it changed is read by every
        later reservation inside its own atomic step (all replicas alike) and forgotten when the
        counter starts afresh."""

    def record(
        self,
        reservation_id: str,
        buckets: Sequence[Bucket],
        amount_usd: float,
        ttl_s: float,
        now: float | None = None,
        attrs: Mapping | None = None,
    ) -> None:
        """Book a charge that was admitted without a reservation (a policy without budgets, or
        ``fail_open`` while the ledger was down): a reservation of ``amount_usd`` that settles at
        once, whatever the buckets' limits say (the call has billed). An id still open is settled
        with ``amount_usd``, as :meth:`settle` would.

        This default is :meth:`reserve` then :meth:`settle`; a backend may do both in one step
        (the SQLite ledger does: one transaction instead of two, on every request of a policy
        without budgets)."""
        unenforced = [replace(b, enforce=False) for b in buckets]
        self.reserve(reservation_id, unenforced, amount_usd, ttl_s, now=now, attrs=attrs)
        self.settle(reservation_id, amount_usd, now=now, attrs=attrs)

    @abstractmethod
    def release(self, reservation_id: str) -> bool:
        """Drop a reservation without charging (the call did not bill)."""

    @abstractmethod
    def usage(self, buckets: Sequence[Bucket], now: float | None = None) -> dict[str, Usage]:
        """Current spent/reserved of each bucket, read in one round trip."""

    @abstractmethod
    def expire(self, now: float | None = None) -> int:
        """Charge every reservation past its TTL in full; return how many."""

    @abstractmethod
    def records(self, since: float | None = None) -> list[SpendRecord]:
        """Settled history (settled and expired charges), oldest first."""

    @abstractmethod
    def claim_once(self, key: str, ttl_s: float, now: float | None = None) -> bool:
        """True the first time ``key`` is claimed (until ``ttl_s`` passes), False after.

        Shared by every process on the ledger, so "fire this alert once per threshold per window"
        holds across replicas.
        """

    @abstractmethod
    def open_reservations(self) -> int:
        """Number of reservations neither settled, released nor expired."""

    @abstractmethod
    def close(self) -> None:
        """Release connections/handles. The ledger is unusable afterwards."""

    def __enter__(self) -> "Ledger":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


# -- helpers shared by the backends ---------------------------------------


def redact_url(url: str) -> str:
    """The URL without its password, for messages and ``repr``."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = f"{parts.username or ''}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def to_nanos(usd: float, what: str = "amount_usd") -> int:
    """Convert a USD float to integer nano-dollars, rejecting nonsense before any write.

    Negative, non-finite or too large amounts raise :class:`InvalidAmount` (not a
    ``LedgerError``: the ledger is fine, the amount is not). A negative "cost" would let a buggy
    caller free budget it never reserved; nan/inf cannot be an integer; above ``MAX_AMOUNT_USD``
    a counter could overflow SQLite's or Redis's 64-bit integers.
    """
    if type(usd) is float and 0.0 <= usd <= MAX_AMOUNT_USD:  # the usual case, in one test (nan and inf fail it)
        return int(round(usd * NANOS_PER_USD))
    if isinstance(usd, bool) or not isinstance(usd, (int, float)):
        raise InvalidAmount(f"{what} must be a number, got {usd!r}")
    if not math.isfinite(usd) or usd < 0:
        raise InvalidAmount(f"{what} must be a finite number >= 0, got {usd!r}")
    if usd > MAX_AMOUNT_USD:
        raise InvalidAmount(f"{what} must be at most {MAX_AMOUNT_USD:g} USD (what a ledger counter can hold), got {usd!r}")
    return int(round(usd * NANOS_PER_USD))


def from_nanos(nanos: int) -> float:
    return nanos / NANOS_PER_USD


def limit_nanos(bucket: Bucket) -> int | None:
    """The refusal threshold of a bucket, or None if it never refuses."""
    if not bucket.enforce or bucket.limit_usd is None:
        return None
    return to_nanos(bucket.limit_usd, "limit_usd")


def slice_width(rolling_s: float) -> float:
    return rolling_s / ROLLING_SLICES


def slice_index(ts: float, rolling_s: float) -> int:
    """Index of the time slice ``ts`` falls in for a rolling window."""
    return math.floor(ts / slice_width(rolling_s))


def oldest_live_slice(now: float, rolling_s: float) -> int:
    """Slices with an index >= this are still inside the rolling window.

    Slice k covers [k*w, (k+1)*w); keeping it while ``now - rolling_s`` has not
    passed its *end* means a charge is never forgotten early.
    """
    return math.floor((now - rolling_s) / slice_width(rolling_s))


#: what a request adds to a ``counts`` bucket (one request, stored as one unit = $1)
UNIT_NANOS = NANOS_PER_USD


def bucket_amount(bucket: Bucket, amount: int) -> int:
    """What a reservation of ``amount`` nano-dollars adds to ``bucket``."""
    if bucket.counts:
        return UNIT_NANOS * bucket.units if bucket.units is not None else UNIT_NANOS
    return amount


def spec_amount(counts: bool, units: int | None, amount: int, used: int | None = None) -> int:
    """What a charge of ``amount`` nano-dollars adds to a bucket stored as ``(counts, units)``:
    ``used`` units (the call's own count) when the bucket was reserved with units and the caller
    says, else what it reserved."""
    if not counts:
        return amount
    if units is None:
        return UNIT_NANOS
    return UNIT_NANOS * (units if used is None else max(0, int(used)))


def check_units(units: int | None) -> None:
    if units is not None and (isinstance(units, bool) or not isinstance(units, int) or not 0 <= units <= 10**9):
        raise InvalidAmount(f"units must be a whole number from 0 to 1e9, got {units!r}")


def idle_over(idle_s: float | None, last: float | None, now: float) -> bool:
    """Whether a session counter last active at ``last`` has been idle its ``idle_s`` at ``now``."""
    return idle_s is not None and last is not None and now - last >= idle_s


def bucket_spec(b: Bucket) -> list:
    """How a reservation remembers one of its buckets (JSON): key, rolling_s, expires_at, idle_s,
    counts, and the units it reserved (a ``units`` bucket; else none)."""
    spec = [b.key, b.rolling_s, b.expires_at, b.idle_s, bool(b.counts)]
    if b.counts and b.units is not None:
        spec.append(int(b.units))
    return spec


def spec_parts(spec: Sequence) -> tuple:
    """``(key, rolling_s, expires_at, idle_s, counts, units)`` of a stored spec (older ones have
    3 or 5 parts)."""
    key, rolling_s, expires_at = spec[0], spec[1], spec[2]
    idle_s = spec[3] if len(spec) > 3 else None
    counts = bool(spec[4]) if len(spec) > 4 else False
    units = int(spec[5]) if len(spec) > 5 and spec[5] is not None else None
    return key, rolling_s, expires_at, idle_s, counts, units


def check_buckets(buckets: Sequence[Bucket]) -> None:
    if not buckets:
        return
    keys = [b.key for b in buckets]
    if len(set(keys)) != len(keys):
        raise LedgerError(f"duplicate bucket keys in one reservation: {keys}")
    for b in buckets:
        if not b.key:
            raise LedgerError("bucket key must be a non-empty string")
        if b.rolling_s is not None and not (b.rolling_s > 0 and math.isfinite(b.rolling_s)):
            raise LedgerError(f"bucket {b.key!r}: rolling_s must be > 0, got {b.rolling_s!r}")
        if b.idle_s is not None and not (b.idle_s > 0 and math.isfinite(b.idle_s) and b.rolling_s is None):
            raise LedgerError(f"bucket {b.key!r}: idle_s must be > 0 (and not on a rolling bucket), got {b.idle_s!r}")
        if b.max_age_s is not None and not (b.idle_s is not None and b.max_age_s > 0 and math.isfinite(b.max_age_s)):
            raise LedgerError(f"bucket {b.key!r}: max_age_s must be > 0, on a session counter, got {b.max_age_s!r}")
        if b.units is not None:
            if not b.counts:
                raise LedgerError(f"bucket {b.key!r}: units are for a counts bucket")
            check_units(b.units)


def age_over(max_age_s: float | None, granted_s: float, first: float | None, now: float) -> bool:
    """Whether a session counter first active at ``first`` is past its ``max_age_s`` (plus what
    was granted) at ``now``; a counter not yet active starts now."""
    return max_age_s is not None and first is not None and now - first >= max_age_s + granted_s


def check_ttl(ttl_s: float) -> None:
    if type(ttl_s) is float and 0.0 < ttl_s < math.inf:  # the usual case, in one test (nan fails it): every charge
        return
    if not (isinstance(ttl_s, (int, float)) and math.isfinite(ttl_s) and ttl_s > 0):
        raise LedgerError(f"ttl_s must be a finite number > 0, got {ttl_s!r}")


def clock(now: float | None) -> float:
    return time.time() if now is None else float(now)


#: bucket tuples that passed ``check_buckets``, by the identities of their buckets (each tuple kept, so
#: no identity is reused while it is here): a budget's buckets are the same objects for a whole window
#: (``SpendControl.buckets`` caches them), and a frozen ``Bucket`` that passed once passes again
_CHECKED: dict[tuple[int, ...], tuple[Bucket, ...]] = {}


def charge_args(buckets: Sequence[Bucket], amount_usd: float, ttl_s: float,
                now: float | None) -> tuple[tuple[Bucket, ...], int, float]:
    """A reservation's arguments checked before anything is written, as every backend takes them:
    the buckets as a tuple, the amount in nanodollars, the time (``now`` or the wall clock)."""
    buckets = tuple(buckets)
    if buckets:
        ids = tuple(map(id, buckets))
        if ids not in _CHECKED:
            check_buckets(buckets)
            if all(type(b) is Bucket for b in buckets):  # frozen: what passed once passes again
                if len(_CHECKED) >= 10_000:
                    _CHECKED.clear()
                _CHECKED[ids] = buckets
    # called on every charge (a what-if replay: every row): check_ttl's and to_nanos's usual case
    # inline (a float in range), a float ``now`` as it is; anything else through them, as before
    if not (type(ttl_s) is float and 0.0 < ttl_s < math.inf):
        check_ttl(ttl_s)
    if type(amount_usd) is float and 0.0 <= amount_usd <= MAX_AMOUNT_USD:
        amount = int(round(amount_usd * NANOS_PER_USD))
    else:
        amount = to_nanos(amount_usd)
    return buckets, amount, now if type(now) is float else clock(now)


def clean_attrs(attrs: Mapping | None) -> dict[str, Any]:
    """Attributes as a JSON-friendly dict (tags tuples become lists)."""
    out: dict[str, Any] = {}
    for k, v in (attrs or {}).items():
        out[str(k)] = list(v) if isinstance(v, (tuple, set, frozenset)) else v
    return out
