"""The quality evidence stores the tests run against: memory, a SQLite file and a real Redis.

One fixture for ``tests/test_quality.py`` and ``tests/test_drop_detector.py``: the Redis variant gets
a key prefix of its own, deleted afterwards, and skips with a reason where no Redis runs (fails
under ``CI``), as every Redis test does (``services.fresh_redis_prefix``).
"""

from __future__ import annotations

import pytest

from services import fresh_redis_prefix


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store_url(request, tmp_path):
    if request.param == "memory":
        yield "memory://"
    elif request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/evidence.db"
    else:
        with fresh_redis_prefix() as url:
            yield url
