"""The one way litellm-payg opens a Redis connection, for the ledger and the health store alike.

Both stores take a ``redis://`` URL with a ``?prefix=`` option and need the same short timeouts and
bounded pool; the factory lives here, beside neither, so the health store does not import the
ledger's Redis backend (and its Lua scripts) to get a client. Imported only when a Redis URL is used.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis as redis_lib
from redis.backoff import NoBackoff
from redis.retry import Retry

#: the key prefix when a URL does not set ``?prefix=``
DEFAULT_PREFIX = "payg:"


def connect(url: str) -> tuple[redis_lib.Redis, str]:
    """A Redis client for a ledger/health URL, and the key prefix it names (``?prefix=``, default
    ``payg:``). Short timeouts so an outage is reported rather than waited on, and a bounded,
    *blocking* pool: a burst of hundreds of threads queues for a connection instead of failing
    with "Too many connections". Raises ``ValueError`` for a malformed URL.

    Fail fast: every request under ``fail_closed`` waits for this client when Redis is down, so a
    connect gets 0.5 s (a LAN or same-region Redis connects in milliseconds; override with
    ``?socket_connect_timeout=``) and no client-side retries -- set explicitly because redis-py's
    defaults have changed between releases (3 retries with backoff in some). An outage is the
    spend layer's to handle (``on_ledger_error``), not the client's to wait out."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    prefix = query.pop("prefix", DEFAULT_PREFIX)
    query.pop("batch_s", None)  # the ledger's own option (stores/ledger/batching.py), not the client's
    query.setdefault("socket_connect_timeout", "0.5")
    query.setdefault("socket_timeout", "5")
    query.setdefault("max_connections", "50")
    pool = redis_lib.BlockingConnectionPool.from_url(
        urlunsplit(parts._replace(query=urlencode(query))), timeout=10, retry=Retry(NoBackoff(), 0)
    )
    return redis_lib.Redis(connection_pool=pool, retry=Retry(NoBackoff(), 0)), prefix
