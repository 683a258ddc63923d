"""The services the tests talk to over a real connection, once: Redis (127.0.0.1:6379) and the
ledger URL of each backend.

Without Redis the Redis tests skip with the reason, except when ``CI`` is set: CI's machine runs a
Redis server, so there a missing one is a failure, never a silent skip.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
#: every ledger backend, for tests parametrised over them
BACKENDS = ("memory", "sqlite", "redis")


def require_redis(url: str | None = None) -> None:
    """Skip the calling test when Redis does not answer (fail instead when ``CI`` is set)."""
    import redis

    target = url or f"redis://{REDIS_HOST}:{REDIS_PORT}/0"
    try:
        redis.Redis.from_url(target, socket_connect_timeout=1).ping()
    except Exception as exc:  # noqa: BLE001 - any failure to reach Redis means "no Redis here"
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but Redis at {target} is unreachable: {exc}")
        pytest.skip(f"no Redis at {target} ({exc}); CI runs these tests")


def redis_url(db: int = 0) -> str:
    """A Redis URL with a key prefix of its own (after :func:`require_redis`)."""
    require_redis(f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}")
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}?prefix=payg-test-{uuid.uuid4().hex[:8]}:"


@contextmanager
def fresh_redis_prefix() -> Iterator[str]:
    """A Redis URL (db 0) with a key prefix unique to the caller, its keys deleted afterwards."""
    require_redis()
    import redis

    prefix = f"payg-test:{uuid.uuid4().hex}:"
    try:
        yield f"redis://{REDIS_HOST}:{REDIS_PORT}/0?prefix={prefix}"
    finally:
        r = redis.Redis(host=REDIS_HOST, port=REDIS_PORT)
        keys = list(r.scan_iter(match=prefix + "*"))
        if keys:
            r.delete(*keys)
        r.close()


def ledger_url(backend: str, tmp_path: Any) -> str:
    """A fresh ledger URL for ``backend`` (one of :data:`BACKENDS`)."""
    return {"memory": lambda: "memory://", "sqlite": lambda: f"sqlite:///{tmp_path}/ledger.db", "redis": redis_url}[backend]()
