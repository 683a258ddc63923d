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
#: the query options a SQLite URL accepts (others are an error naming them)
SQLITE_OPTIONS = frozenset({"synchronous", "batch_s"})
#: the values of a SQLite URL's ``synchronous`` (SQLite's own PRAGMA levels, any case)
SQLITE_SYNCHRONOUS = ("off", "normal", "full", "extra")
#: the plugin's own options of a Redis URL; the rest of its query goes to redis-py
#: (:func:`redis_client_options`), and anything else is an error naming the accepted ones
REDIS_OPTIONS = frozenset({"prefix", "batch_s"})


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


def redis_client_options(tls: bool = False) -> frozenset[str]:
    """The query options redis-py takes from a ``redis://`` (``tls``: ``rediss://``) URL: those its
    URL parser converts from text, ``client_name``, and for ``rediss://`` the TLS settings of its
    SSL connection (read from the installed redis-py, so a release that adds one is accepted).
    Empty when redis-py is not installed (the URL then fails when it is opened, saying so)."""
    import inspect

    try:
        from redis import connection
    except ImportError:
        return frozenset()
    names = {name for name in getattr(connection, "URL_QUERY_ARGUMENT_PARSERS", {}) if tls or not name.startswith("ssl_")}
    names.add("client_name")
    if tls:
        names.update(name for name in inspect.signature(connection.SSLConnection.__init__).parameters
                     if name.startswith("ssl_"))
    return frozenset(names)


def _check_redis_values(options: dict[str, str], what: str) -> None:
    """Each option redis-py converts from text (a number, a flag) must convert, or StoreURLError
    naming it: checked here so that ``check`` finds it, not the first connection."""
    try:
        from redis.connection import URL_QUERY_ARGUMENT_PARSERS as parsers
    except ImportError:
        return
    for name, value in options.items():
        parser = parsers.get(name)
        if parser is None:
            continue
        try:
            parser(value)
        except (TypeError, ValueError):
            raise StoreURLError(f"{what}: option {name!r} has an invalid value {value!r}") from None


def _unknown_options(given: dict[str, str], accepted: frozenset[str], what: str, shown: str) -> StoreURLError | None:
    """An error naming each unknown option with its closest accepted one, or None."""
    import difflib

    unknown = sorted(set(given) - accepted)
    if not unknown:
        return None
    named = []
    for option in unknown:
        close = difflib.get_close_matches(option, sorted(accepted), n=1, cutoff=0.6)
        named.append(f"{option!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return StoreURLError(f"{what}: unknown option {', '.join(named)}; accepted: {shown}")


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


def _redacted(url: str) -> str:
    """``url`` without its password (error messages reach logs and terminals)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


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
        client = redis_client_options(tls=scheme.lower() == "rediss")
        if client:
            unknown = _unknown_options(
                options, REDIS_OPTIONS | client, f"Redis {what} URL {_redacted(url)!r}",
                f"{', '.join(sorted(REDIS_OPTIONS))} (litellm-payg's), and redis-py's connection options "
                f"({', '.join(sorted(client))})")
            if unknown is not None:
                raise unknown
            _check_redis_values(options, f"Redis {what} URL {_redacted(url)!r}")
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
    unknown = _unknown_options(options, SQLITE_OPTIONS, f"SQLite {what} URL {url!r}", ", ".join(sorted(SQLITE_OPTIONS)))
    if unknown is not None:
        raise unknown
    if "batch_s" in options:
        try:
            check_batch_s(options["batch_s"], f"SQLite {what} URL {url!r}")
        except ValueError as e:
            raise StoreURLError(str(e)) from None
    if options.get("synchronous", "normal").lower() not in SQLITE_SYNCHRONOUS:
        raise StoreURLError(f"SQLite {what} URL {url!r}: option 'synchronous' has an invalid value "
                            f"{options['synchronous']!r}; accepted: {', '.join(SQLITE_SYNCHRONOUS)}")
    path = path_part[1:]
    if must_exist and not os.path.isfile(path):
        raise StoreURLError(f"no {what} at {url!r}: {os.path.abspath(path)} does not exist")
    return StoreURL(url, kind, path, options)
