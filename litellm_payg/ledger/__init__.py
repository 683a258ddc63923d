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

import os

from urllib.parse import parse_qsl, urlsplit

from .base import (
    Bucket,
    Ledger,
    LedgerError,
    LedgerUnavailable,
    ReserveResult,
    SpendRecord,
    Usage,
)

ACCEPTED_SCHEMES = ("memory://", "sqlite:///<path>", "redis://host:port/db", "rediss://host:port/db")

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
]


def open_ledger(url: str, must_exist: bool = False) -> Ledger:
    """Open the ledger a URL names; raises LedgerError for unknown schemes.

    ``must_exist`` is for commands that only read (``report``, ``budgets``): a mistyped SQLite path
    is then an error instead of a new, empty ledger and a $0 report."""
    if not isinstance(url, str) or "://" not in url:
        raise LedgerError(f"ledger URL {url!r} has no scheme; accepted: {', '.join(ACCEPTED_SCHEMES)}")
    scheme, rest = url.split("://", 1)
    scheme = scheme.lower()
    if scheme == "memory":
        from .memory import MemoryLedger

        return MemoryLedger(url)
    if scheme == "sqlite":
        # sqlite:///rel.db -> "/rel.db" after the scheme: strip one slash;
        # sqlite:////abs.db keeps its leading slash.
        path_part, _, query = rest.partition("?")
        if not path_part.startswith("/") or len(path_part) < 2:
            raise LedgerError(f"SQLite ledger URL {url!r} must look like sqlite:///relative.db or sqlite:////abs/path.db")
        opts = dict(parse_qsl(query))
        unknown = set(opts) - {"synchronous"}
        if unknown:
            raise LedgerError(f"SQLite ledger URL {url!r}: unknown option(s) {sorted(unknown)}; accepted: synchronous")
        from .sqlite import SqliteLedger

        if must_exist and not os.path.isfile(path_part[1:]):
            raise LedgerError(f"no ledger at {url!r}: {os.path.abspath(path_part[1:])} does not exist")
        return SqliteLedger(path_part[1:], url=url, synchronous=opts.get("synchronous", "normal"))
    if scheme in ("redis", "rediss"):
        if not urlsplit(url).hostname and "unix" not in scheme:
            raise LedgerError(f"Redis ledger URL {url!r} needs a host, e.g. redis://127.0.0.1:6379/0")
        from .redis import RedisLedger

        return RedisLedger(url)
    raise LedgerError(f"unknown ledger URL scheme {scheme!r} in {url!r}; accepted: {', '.join(ACCEPTED_SCHEMES)}")
