"""Who a request belongs to, and which of it a client can forge.

The ``user:``, ``team:`` and ``key:`` budget scopes are only as strong as the identity behind them,
so they come from the **authenticated key** and nothing else:

* In the proxy, from the key LiteLLM authenticated (``UserAPIKeyAuth``: its user id, team id and
  hashed key), handed to the plugin's pre-call hook (:func:`identity_from_key`). A request that
  somehow reached the Router without that hook falls back to the ``user_api_key_*`` fields LiteLLM
  itself writes into the metadata after auth, never to a client field.
* In the SDK there is no key: the calling code is the operator's, so ``metadata={"user": ...,
  "team": ..., "api_key": ...}`` is trusted there (:func:`identity_of`).

The OpenAI ``user`` field is the client's *claim* of who its end user is. It has its own scope,
``end_user:``, useful for an application that names its customers and caps each one, but it never
stands in for ``user:``: a client that sends a new ``user`` per request gets a new ``end_user``
bucket, and still spends from its key's, user's and team's. Request tags are client-asserted too
(LiteLLM merges the key's tags with the request's), so a ``tag:`` budget caps honest traffic, not a
hostile client.

Client *hints* (``metadata["payg_hints"]``) are sanitised here: they may only tighten a policy.

Every label read here is bounded (:func:`bounded_label`, :data:`MAX_TAGS`): labels end up in the
plugin's memory, in ledger bucket keys and in every spend record. A run is the session id of the key
that started it (:func:`run_of`, ``sessions.owner``).
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


def _str(value: Any) -> str | None:
    return None if value in (None, "") else bounded_label(str(value))


def _tags(metadata: Mapping[str, Any]) -> tuple[str, ...]:
    value = metadata.get("tags") or ()
    if not isinstance(value, (list, tuple)):
        return ()
    if len(value) > MAX_TAGS:
        raise LabelError(f"litellm-payg: metadata.tags: at most {MAX_TAGS} tags per request, got {len(value)}",
                         "metadata.tags")
    return tuple(bounded_label(str(t)) for t in value)


def key_hash(key: Any) -> str | None:
    """The key as it may be stored and reported: LiteLLM's hash (sha256 hex) of a raw ``sk-`` key,
    or the value as given when it is already a hash or an alias."""
    text = None if key in (None, "") else str(key)
    if text is not None and text.startswith("sk-"):
        return hashlib.sha256(text.encode()).hexdigest()
    return None if text is None else bounded_label(text)


def identity_from_key(user_api_key_dict: Any, data: Mapping[str, Any], metadata: Mapping[str, Any]) -> RequestIdentity:
    """A proxy request's identity, from the key LiteLLM authenticated (its ``UserAPIKeyAuth``).

    The end user is the one LiteLLM resolved for the key (``end_user_id``: the body's ``user``, or
    a header the operator mapped), else the body's ``user``."""
    return RequestIdentity(
        user=_str(getattr(user_api_key_dict, "user_id", None)),
        team=_str(getattr(user_api_key_dict, "team_id", None)),
        api_key=key_hash(getattr(user_api_key_dict, "token", None) or getattr(user_api_key_dict, "api_key", None)),
        tags=_tags(metadata),
        via_proxy=True,
        end_user=_str(getattr(user_api_key_dict, "end_user_id", None)) or _str(data.get("user")),
    )


def identity_of(request_kwargs: Mapping[str, Any], metadata: Mapping[str, Any]) -> RequestIdentity:
    """A request's identity when no pre-call hook read the key: the proxy's own ``user_api_key_*``
    metadata fields when present, else the SDK caller's ``metadata`` (see the module docstring)."""
    end_user = _str(request_kwargs.get("user"))
    if metadata.get("user_api_key_hash") or metadata.get("user_api_key"):
        return RequestIdentity(
            user=_str(metadata.get("user_api_key_user_id")),
            team=_str(metadata.get("user_api_key_team_id")),
            api_key=key_hash(metadata.get("user_api_key_hash") or metadata.get("user_api_key")),
            tags=_tags(metadata),
            via_proxy=True,
            end_user=_str(metadata.get("user_api_key_end_user_id")) or end_user,
        )
    return RequestIdentity(
        user=_str(metadata.get("user")),
        team=_str(metadata.get("team")),
        api_key=_str(metadata.get("api_key")),
        tags=_tags(metadata),
        via_proxy=False,
        end_user=end_user,
    )


#: where the session id is read from when the policy does not say (``sessions: {id_from: [...]}``)
DEFAULT_SESSION_SOURCES: tuple[str, ...] = ("litellm_session_id", "metadata.session_id")

_SESSION_FIELDS = ("litellm_session_id", "litellm_trace_id")


def check_session_source(source: str) -> str:
    """A valid ``sessions.id_from`` entry: ``litellm_session_id``, ``litellm_trace_id`` (request
    fields), ``metadata.<field>`` or ``header:<name>`` (a request header, at the proxy). ValueError
    otherwise."""
    if source in _SESSION_FIELDS:
        return source
    kind, sep, name = source.partition(".") if source.startswith("metadata.") else source.partition(":")
    if sep and name.strip() and kind in ("metadata", "header") and name == name.strip():
        if kind == "metadata" and (name.startswith("payg_") or name.startswith("user_api_key")):
            raise ValueError(f"metadata.{name} is litellm-payg's or LiteLLM's own field, not a session id")
        return source
    raise ValueError(
        f"a session id source is litellm_session_id, litellm_trace_id, metadata.<field> or header:<name>, got {source!r}")


def _header(request_kwargs: Mapping[str, Any], name: str) -> Any:
    psr = request_kwargs.get("proxy_server_request")
    headers = psr.get("headers") if isinstance(psr, Mapping) else None
    if not isinstance(headers, Mapping):
        return None
    wanted = name.lower()
    return next((v for k, v in headers.items() if isinstance(k, str) and k.lower() == wanted), None)


def session_of(request_kwargs: Mapping[str, Any], metadata: Mapping[str, Any],
               sources: tuple[str, ...] = DEFAULT_SESSION_SOURCES) -> str | None:
    """The session a request says it belongs to: the first of ``sources`` it has (by default
    LiteLLM's ``litellm_session_id``, a request field, else ``metadata["session_id"]``, which
    LiteLLM reads the same way; a policy may name others: ``sessions: {id_from: [...]}``, see
    :func:`check_session_source`). Client-asserted, like tags: it labels a request (``when:
    {session: ...}``, a run budget), it never authorises anything.

    The one place a request's session is read."""
    for source in sources:
        if source in _SESSION_FIELDS:
            value = request_kwargs.get(source)
        elif source.startswith("metadata."):
            value = metadata.get(source.split(".", 1)[1])
        else:
            value = _header(request_kwargs, source.split(":", 1)[1])
        if isinstance(value, (str, int)) and not isinstance(value, bool) and value != "":
            return bounded_label(str(value))
    return None


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


def hints_of(metadata: Mapping[str, Any]) -> Hints:
    """``metadata["payg_hints"]``: ``min_quality`` (a number) raises the quality bar; ``models`` (a
    list of model names) narrows the candidates. Anything else is ignored: a hint is never trusted
    to widen what the policy allows."""
    raw = metadata.get("payg_hints")
    if not isinstance(raw, Mapping):
        return Hints(None, None)
    mq = raw.get("min_quality")
    min_quality = float(mq) if isinstance(mq, (int, float)) and not isinstance(mq, bool) else None
    models_raw = raw.get("models")
    models = (
        frozenset(str(m) for m in models_raw)
        if isinstance(models_raw, (list, tuple)) and models_raw
        else None
    )
    return Hints(min_quality, models)
