"""Helpers for tests/test_trust_boundary.py: a proxy whose callers are told apart by their bearer key
(``general_settings.custom_auth``, no database), HTTP calls as a hostile client makes them, and reads
of the proxy's SQLite ledger.

The custom auth module (written next to ``config.yaml``) reads the caller from the key itself::

    sk-payg.<user>.<team>.<nonce>      e.g. sk-payg.ursula..a1b2 (user ursula, no team)

An empty ``<user>`` or ``<team>`` means the key has none; anything else is a 401. LiteLLM hashes the
key (sha256, as for its own virtual keys): the plugin sees ``user_api_key_hash`` = :func:`key_hash`,
``user_api_key_user_id`` = user, ``user_api_key_team_id`` = team.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from litellm_payg.stores.ledger import open_ledger
from litellm_payg.stores.ledger.base import Ledger, SpendRecord

AUTH_MODULE_NAME = "payg_trust_auth"
AUTH_MODULE = '''\
"""custom_auth for the trust-boundary tests: ``sk-payg.<user>.<team>.<nonce>``."""
from fastapi import HTTPException
from litellm.proxy._types import UserAPIKeyAuth


async def user_api_key_auth(request, api_key: str) -> UserAPIKeyAuth:
    key = (api_key or "").removeprefix("Bearer ").strip()
    parts = key.split(".")
    if len(parts) != 4 or parts[0] != "sk-payg":
        raise HTTPException(status_code=401, detail="unknown key")
    _, user, team, _nonce = parts
    return UserAPIKeyAuth(api_key=key, user_id=user or None, team_id=team or None)
'''


def new_key(user: str = "", team: str = "", label: str = "k") -> str:
    """A fresh key (own ``key:`` bucket) for ``user``/``team`` (empty: the key has none)."""
    assert "." not in user + team + label
    return f"sk-payg.{user}.{team}.{label}-{uuid.uuid4().hex[:10]}"


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def auth(key: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **headers}


def post(base_url: str, path: str, body: Any, key: str, headers: dict[str, str] | None = None,
         timeout: float = 30) -> httpx.Response:
    with httpx.Client(base_url=base_url, timeout=timeout, trust_env=False) as client:
        return client.post(path, json=body, headers=auth(key, **(headers or {})))


def short(resp: httpx.Response, n: int = 300) -> str:
    return f"HTTP {resp.status_code}: {resp.text[:n]!r}"


def wait_until(predicate: Callable[[], bool], timeout: float = 2.0, step: float = 0.05) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` passes (settling runs on LiteLLM's background
    logging worker, milliseconds to a second after the answer); its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return predicate()
        time.sleep(step)


class LedgerView:
    """The proxy's SQLite ledger, read from the test process (WAL: safe next to the proxy)."""

    def __init__(self, workdir: Path, filename: str = "payg-ledger.db"):
        self.url = f"sqlite:///{workdir / filename}"
        self._ledger: Ledger | None = None

    @property
    def ledger(self) -> Ledger:
        if self._ledger is None:
            self._ledger = open_ledger(self.url)
        return self._ledger

    def records(self, **attrs: Any) -> list[SpendRecord]:
        """Settled records whose attrs have every given value (``key=`` is compared to the hash)."""
        if "key" in attrs:
            attrs["key"] = key_hash(attrs["key"])
        return [r for r in self.ledger.records() if all(r.attrs.get(k) == v for k, v in attrs.items())]

    def open(self) -> int:
        return self.ledger.open_reservations()

    def left_open_since(self, before: int, timeout: float = 1.5) -> int:
        """How many more reservations are open than ``before`` once settling had its time (0 when a
        scenario left nothing reserved)."""
        wait_until(lambda: self.open() <= before, timeout)
        return max(0, self.open() - before)

    def close(self) -> None:
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None
