"""The one table of store URL schemes: which backends exist and how a URL names one.

The ledger (``open_ledger``), the health store (``open_health``) and the policy schema's ``ledger:``
check all read a URL through :func:`parse_store_url`, so a new backend or option is one entry here.
It parses only: opening a connection is the backend's business.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

#: scheme -> backend kind; what an error lists as accepted
SCHEMES = {"memory": "memory", "sqlite": "sqlite", "redis": "redis", "rediss": "redis"}
ACCEPTED_SCHEMES = ("memory://", "sqlite:///<path>", "redis://host:port/db", "rediss://host:port/db")
#: the query options a SQLite URL accepts (others are an error naming them); a Redis URL's options
#: (``prefix`` and the client's own) are the Redis client's to check
SQLITE_OPTIONS = frozenset({"synchronous", "batch_s"})


#: the largest ``batch_s`` a SQLite URL may ask for (``stores/ledger/batching.py``)
MAX_BATCH_S = 60.0


def check_batch_s(value: object, where: str) -> float:
    """``batch_s`` as a number of seconds from 0 to ``MAX_BATCH_S``, or ValueError naming ``where``."""
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        seconds = -1.0
    if isinstance(value, bool) or not 0 <= seconds <= MAX_BATCH_S:
        raise ValueError(f"{where}: batch_s must be a number of seconds from 0 to {MAX_BATCH_S:g} "
                         f"(how long a record without a budget may wait to be written with others), got {value!r}")
    return seconds


class StoreURLError(ValueError):
    """A store URL that names no backend, or names one wrongly; the message says which part."""


@dataclass(frozen=True)
class StoreURL:
    """A parsed store URL: the backend ``kind``, the SQLite ``path`` (relative or absolute, as
    written), and the query ``options``."""

    url: str
    kind: str
    path: str = ""
    options: dict[str, str] = field(default_factory=dict)


def parse_store_url(url: object, what: str = "store", must_exist: bool = False) -> StoreURL:
    """Read ``url`` as a ``what`` ("ledger", "health") URL, or raise :class:`StoreURLError`.

    ``must_exist`` (SQLite only): the file must already be there — for commands that only read, so
    a mistyped path is an error instead of a new, empty store."""
    if not isinstance(url, str) or "://" not in url:
        raise StoreURLError(f"{what} URL {url!r} has no scheme; accepted: {', '.join(ACCEPTED_SCHEMES)}")
    scheme, rest = url.split("://", 1)
    kind = SCHEMES.get(scheme.lower())
    if kind is None:
        raise StoreURLError(f"unknown {what} URL scheme {scheme.lower()!r} in {url!r}; accepted: {', '.join(ACCEPTED_SCHEMES)}")
    if kind == "memory":
        return StoreURL(url, kind)
    if kind == "redis":
        if not urlsplit(url).hostname:
            raise StoreURLError(f"Redis {what} URL {url!r} needs a host, e.g. redis://127.0.0.1:6379/0")
        options = dict(parse_qsl(urlsplit(url).query))
        if "batch_s" in options:
            try:
                check_batch_s(options["batch_s"], f"Redis {what} URL {url!r}")
            except ValueError as e:
                raise StoreURLError(str(e)) from None
        return StoreURL(url, kind, options=options)
    # sqlite:///rel.db -> "/rel.db" after the scheme: strip one slash; sqlite:////abs.db keeps its own
    path_part, _, query = rest.partition("?")
    if not path_part.startswith("/") or len(path_part) < 2:
        raise StoreURLError(f"SQLite {what} URL {url!r} must look like sqlite:///relative.db or sqlite:////abs/path.db")
    options = dict(parse_qsl(query))
    unknown = set(options) - SQLITE_OPTIONS
    if unknown:
        raise StoreURLError(f"SQLite {what} URL {url!r}: unknown option(s) {sorted(unknown)}; accepted: {', '.join(sorted(SQLITE_OPTIONS))}")
    if "batch_s" in options:
        try:
            check_batch_s(options["batch_s"], f"SQLite {what} URL {url!r}")
        except ValueError as e:
            raise StoreURLError(str(e)) from None
    path = path_part[1:]
    if must_exist and not os.path.isfile(path):
        raise StoreURLError(f"no {what} at {url!r}: {os.path.abspath(path)} does not exist")
    return StoreURL(url, kind, path, options)
