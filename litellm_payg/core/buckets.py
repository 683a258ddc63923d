"""What a ledger counts, as plain data: a budget counter (:class:`Bucket`) and its usage.

Kept in the core, not with the ledger backends, because the budget arithmetic (``budgets``,
``headroom``, ``snapshot``) is written in these terms and must not import a store.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Bucket:
    """One budget counter.

    ``key`` is the unique storage key (calendar keys embed their window start,
    so a new month is simply a new key). ``limit_usd`` is None for track-only
    counters. ``enforce`` makes ``reserve`` refuse on overshoot; non-enforced
    buckets (alert/downgrade budgets) are counted but never refuse.
    ``rolling_s`` marks a rolling window of that many seconds. ``expires_at``
    (epoch seconds) lets a backend garbage collect a finished calendar bucket.

    ``idle_s`` makes it a *session* counter (a run's): every reservation or charge on it
    marks it active, and once ``idle_s`` seconds pass without any, its spend counts as zero (the
    run starts afresh); amounts of reservations still open stay counted. The backend keeps the
    time of the last activity, in the caller's clock.

    ``counts`` makes it count requests, not dollars: every reservation on it adds one unit
    whatever its amount, and a settle (or an expiry charge) charges one unit. A unit is stored as
    $1, so ``limit_usd`` and its :class:`Usage` read as numbers of requests. Counted in the same
    atomic ledger call as the money, so a request cap holds under concurrency like a dollar cap.

    ``units`` (a ``counts`` bucket only) makes one reservation count that many units instead of one
    (a run's token counter: the request's bound of tokens), and its settle count the units the
    caller says were used (the answer's tokens), or the reserved units when it says none.

    ``max_age_s`` (a session counter only) refuses a reservation once that many seconds have passed
    since the counter's first activity in the run (a run's wall-clock cap); the backend keeps that
    time with the last activity.

    The ledger also keeps, per bucket, what an operator changed (``Ledger.adjust``): a grant that
    raises its limit (and its ``max_age_s``), and a *closed* mark that refuses every reservation
    on it; both are read inside the reservation and forgotten when a session counter starts afresh.
    """

    key: str
    limit_usd: float | None
    enforce: bool
    rolling_s: float | None = None
    expires_at: float | None = None
    idle_s: float | None = None
    counts: bool = False
    units: int | None = None
    max_age_s: float | None = None


@dataclass(frozen=True)
class Usage:
    spent_usd: float
    reserved_usd: float
    #: what an operator granted on top of the bucket's limit (``Ledger.adjust``), in its units
    granted_usd: float = 0.0


@dataclass(frozen=True)
class BucketState:
    """All a ledger keeps of one bucket (``Ledger.state``): its usage, the operator's grants and
    closed mark, a session counter's first and last activity (epoch seconds, the caller's clock)
    and the last note written on it (``Ledger.adjust``: a run's last refusal)."""

    usage: Usage
    granted_s: float = 0.0
    closed: bool = False
    first_at: float | None = None
    last_at: float | None = None
    note: str | None = None
    #: whether the ledger has the bucket at all (a session counter idle past its time has none)
    live: bool = False
