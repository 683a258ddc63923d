"""Who a request belongs to, as the plugin keeps it, and what may be done with it.

The ``user:``, ``team:`` and ``key:`` budget scopes are only as strong as the identity behind them,
so a :class:`RequestIdentity` is filled from the **authenticated key** and nothing else: in the
proxy, the key LiteLLM authenticated; in the SDK, where there is no key, the calling code's own
metadata (the calling code is the operator's). Where LiteLLM keeps those fields is its wire format,
read in :mod:`litellm_payg.wire.identity`; this module names none of it.

The end user (the OpenAI ``user`` field) is the client's *claim* of who its end user is. It has its
own scope, ``end_user:``, and never stands in for ``user:``. Request tags are client-asserted too,
so a ``tag:`` budget caps honest traffic, not a hostile client.

Client *hints* (``payg_hints``, the plugin's own metadata key) are sanitised here: they may only
tighten a policy.

Every label is bounded (:func:`bounded_label`, :data:`MAX_TAGS`): labels end up in the plugin's
memory, in ledger bucket keys and in every spend record. A run is the session id of the key that
started it (:func:`run_of`, ``sessions.owner``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class RequestIdentity:
    user: str | None
    team: str | None
    api_key: str | None
    tags: tuple[str, ...]
    via_proxy: bool
    #: the end user the client names (the OpenAI ``user`` field): client-asserted
    end_user: str | None = None
    #: the declared request attributes read from the key (``core/scopes.py``: ``request_attribute``
    #: with a ``key_field``, e.g. ``org``), by kind name; the adapter reads them (``adapter/attributes.py``)
    attrs: tuple[tuple[str, str], ...] = ()


#: the longest label (user, team, key, end user, tag, session id, trace id) kept as sent; a longer
#: one is kept as a prefix and a hash of the whole (:func:`bounded_label`)
MAX_LABEL_CHARS = 256
#: the most tags a request may carry (LiteLLM's key tags merged with the request's); more is refused
MAX_TAGS = 64
_DIGEST_CHARS = 32  # 128 bits of sha256: two labels that differ stay apart
_MARK = "...sha256:"


class LabelError(ValueError):
    """A request's labels cannot be kept bounded (too many tags): refused, naming ``field``."""

    def __init__(self, message: str, field: str):
        super().__init__(message)
        self.field = field


def bounded_label(text: str) -> str:
    """``text`` if it is at most :data:`MAX_LABEL_CHARS` long; else its first characters, then
    ``...sha256:`` and 32 hex digits of the whole text's hash, :data:`MAX_LABEL_CHARS` in all.

    Labels are client-asserted (``user``, session ids, tags) and end up in the plugin's memory, in
    ledger bucket keys and in every spend record: a 1 MB ``user`` made 782 KB records. The hash
    keeps two long labels apart (their buckets and runs stay separate) and the prefix keeps the
    label readable in reports."""
    if len(text) <= MAX_LABEL_CHARS:
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:_DIGEST_CHARS]
    return f"{text[:MAX_LABEL_CHARS - len(_MARK) - _DIGEST_CHARS]}{_MARK}{digest}"


def key_hash(key: Any) -> str | None:
    """The key as it may be stored and reported: LiteLLM's hash (sha256 hex) of a raw ``sk-`` key,
    or the value as given when it is already a hash or an alias."""
    text = None if key in (None, "") else str(key)
    if text is not None and text.startswith("sk-"):
        return hashlib.sha256(text.encode()).hexdigest()
    return None if text is None else bounded_label(text)


#: the prefix of a run id the plugin minted for a key (``sessions.mint``)
MINTED_PREFIX = "key-run-"


def minted_session(who: RequestIdentity | None) -> str | None:
    """The run id ``sessions.mint`` gives a request that names none: one per authenticated key
    (``key-run-<16 hex of its hash>``), so a client that cannot send a run id still has its requests
    counted in one run, which ends when it idles out like any run. None without a key (the SDK:
    the calling code sends its own ids). Read from the authenticated key only, never the request."""
    if who is None or not who.api_key:
        return None
    return f"{MINTED_PREFIX}{who.api_key[:16]}"


#: ``sessions.owner``: whose a run is
RUN_OWNERS = ("key", "team", "shared")


def run_of(session: str | None, who: RequestIdentity | None, owner: str = "key") -> str | None:
    """The run a request with ``session`` counts in: the session id qualified by the run's owner,
    ``<session>@key:<16 hex>`` (the key that sent it, by its hash) or ``<session>@team:<team>``.

    A session id is the client's to choose, so without the owner a key that names another key's
    session id (seen: guessed, or read from a log) would spend from that run, advance its counters
    and read its spend in the response headers. With ``owner: team`` the keys of one team share
    their runs (a key without a team owns its runs alone); ``shared`` is the session id as sent,
    for deployments where one run really spans keys. A request with no key (the SDK, where the
    calling code is trusted) is the session id as sent."""
    if not session:
        return session
    if owner == "shared" or who is None:
        return session
    if owner == "team" and who.team:
        return f"{session}@team:{who.team}"
    if who.api_key:
        return f"{session}@key:{who.api_key[:16]}"
    if who.team:
        return f"{session}@team:{who.team}"
    if who.user:
        return f"{session}@user:{who.user}"
    return session


def session_in(run: str) -> str:
    """The session id a run id (:func:`run_of`) was made from: what the client sent, for messages."""
    head, sep, owner = run.rpartition("@")
    return head if sep and owner.startswith(("key:", "team:", "user:")) else run


@dataclass(frozen=True, slots=True)
class Hints:
    min_quality: float | None
    models: frozenset[str] | None


_NO_HINTS = Hints(None, None)


def hints_of(metadata: Mapping[str, Any]) -> Hints:
    """``metadata["payg_hints"]``: ``min_quality`` (a number) raises the quality bar; ``models`` (a
    list of model names) narrows the candidates. Anything else is ignored: a hint is never trusted
    to widen what the policy allows."""
    raw = metadata.get("payg_hints")
    if raw is None:  # the usual request: no hints (one shared value, it is immutable)
        return _NO_HINTS
    if not isinstance(raw, Mapping):
        return _NO_HINTS
    mq = raw.get("min_quality")
    min_quality = float(mq) if isinstance(mq, (int, float)) and not isinstance(mq, bool) else None
    models_raw = raw.get("models")
    models = (
        frozenset(str(m) for m in models_raw)
        if isinstance(models_raw, (list, tuple)) and models_raw
        else None
    )
    return Hints(min_quality, models)
