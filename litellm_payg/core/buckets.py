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
    """

    key: str
    limit_usd: float | None
    enforce: bool
    rolling_s: float | None = None
    expires_at: float | None = None


@dataclass(frozen=True)
class Usage:
    spent_usd: float
    reserved_usd: float
