"""Budget ledgers: where reservations and spend live.

``open_ledger(url)`` picks the backend from the URL scheme so deployment is a
config change, not a code change:

* ``memory://`` -- one process, nothing persisted
* ``sqlite:///relative/path.db`` or ``sqlite:////abs/path.db`` -- several
  processes on one host, survives restarts (``?synchronous=full`` optional)
* ``redis://host:port/db`` (or ``rediss://``) -- several replicas
  (``?prefix=...`` sets the key prefix, default ``payg:``)
"""

from __future__ import annotations

from litellm_payg.stores.ledger.base import (
    Bucket,
    Ledger,
    LedgerError,
    LedgerUnavailable,
    ReserveResult,
    SpendRecord,
    Usage,
)

from litellm_payg.stores.schemes import ACCEPTED_SCHEMES, StoreURLError, parse_store_url

__all__ = [
    "ACCEPTED_SCHEMES",
    "Bucket",
    "Ledger",
    "LedgerError",
    "LedgerUnavailable",
    "ReserveResult",
    "SpendRecord",
    "Usage",
    "open_ledger",
    "open_replay_ledger",
]


def open_ledger(url: str, must_exist: bool = False) -> Ledger:
    """Open the ledger a URL names (``stores.schemes``); raises LedgerError for a bad URL.

    ``must_exist`` is for commands that only read (``report``, ``budgets``): a mistyped SQLite path
    is then an error instead of a new, empty ledger and a $0 report."""
    try:
        parsed = parse_store_url(url, "ledger", must_exist=must_exist)
    except StoreURLError as e:
        raise LedgerError(str(e)) from None
    if parsed.kind == "memory":
        from litellm_payg.stores.ledger.memory import MemoryLedger

        return MemoryLedger(url)
    if parsed.kind == "sqlite":
        from litellm_payg.stores.ledger.sqlite import SqliteLedger

        batch_s = parsed.options.get("batch_s")  # checked by parse_store_url
        return SqliteLedger(parsed.path, url=url, synchronous=parsed.options.get("synchronous", "normal"),
                            batch_s=None if batch_s is None else float(batch_s))
    from litellm_payg.stores.ledger.redis import RedisLedger

    return RedisLedger(url)


def open_replay_ledger() -> Ledger:
    """The ledger a what-if replay counts budgets on (``memory.ReplayLedger``): the memory ledger's
    budgets, without a record per charge, an answered request reserved and settled in one pass."""
    from litellm_payg.stores.ledger.memory import ReplayLedger

    return ReplayLedger()
