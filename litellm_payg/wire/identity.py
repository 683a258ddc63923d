"""Where LiteLLM keeps who a request belongs to, and which session it names: read into the
plugin's own :class:`~litellm_payg.core.identity.RequestIdentity` and session id.

The identity comes from the **authenticated key** and nothing else:

* In the proxy, from the key LiteLLM authenticated (``UserAPIKeyAuth``: its user id, team id and
  hashed key), handed to the plugin's pre-call hook (:func:`identity_from_key`). A request that
  somehow reached the Router without that hook falls back to the ``user_api_key_*`` fields LiteLLM
  itself writes into the metadata after auth, never to a client field.
* In the SDK there is no key: the calling code is the operator's, so ``metadata={"user": ...,
  "team": ..., "api_key": ...}`` is trusted there (:func:`identity_of`).

The OpenAI ``user`` field is the client's claim of its end user (``end_user:``), and LiteLLM
merges the key's tags with the request's ``metadata.tags``: both are client-asserted.

The session id is read from LiteLLM's ``litellm_session_id`` request field, ``metadata.session_id``
or where the policy's ``sessions.id_from`` says (:func:`session_of`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from litellm_payg.core.identity import MAX_TAGS, LabelError, RequestIdentity, bounded_label, key_hash

#: the metadata keys LiteLLM's proxy auth writes (``user_api_key_hash``, ``user_api_key_user_id``...):
#: never a client's session id or request attribute
LITELLM_METADATA_PREFIX = "user_api_key"


def _label(value: Any) -> str | None:
    return None if value in (None, "") else bounded_label(str(value))


def _tags(metadata: Mapping[str, Any]) -> tuple[str, ...]:
    value = metadata.get("tags") or ()
    if not isinstance(value, (list, tuple)):
        return ()
    if len(value) > MAX_TAGS:
        raise LabelError(f"litellm-payg: metadata.tags: at most {MAX_TAGS} tags per request, got {len(value)}",
                         "metadata.tags")
    return tuple(bounded_label(str(t)) for t in value)


def identity_from_key(user_api_key_dict: Any, data: Mapping[str, Any], metadata: Mapping[str, Any]) -> RequestIdentity:
    """A proxy request's identity, from the key LiteLLM authenticated (its ``UserAPIKeyAuth``).

    The end user is the one LiteLLM resolved for the key (``end_user_id``: the body's ``user``, or
    a header the operator mapped), else the body's ``user``."""
    return RequestIdentity(
        user=_label(getattr(user_api_key_dict, "user_id", None)),
        team=_label(getattr(user_api_key_dict, "team_id", None)),
        api_key=key_hash(getattr(user_api_key_dict, "token", None) or getattr(user_api_key_dict, "api_key", None)),
        tags=_tags(metadata),
        via_proxy=True,
        end_user=_label(getattr(user_api_key_dict, "end_user_id", None)) or _label(data.get("user")),
    )


def identity_of(request_kwargs: Mapping[str, Any], metadata: Mapping[str, Any]) -> RequestIdentity:
    """A request's identity when no pre-call hook read the key: the proxy's own ``user_api_key_*``
    metadata fields when present, else the SDK caller's ``metadata`` (see the module docstring)."""
    end_user = _label(request_kwargs.get("user"))
    if metadata.get("user_api_key_hash") or metadata.get("user_api_key"):
        return RequestIdentity(
            user=_label(metadata.get("user_api_key_user_id")),
            team=_label(metadata.get("user_api_key_team_id")),
            api_key=key_hash(metadata.get("user_api_key_hash") or metadata.get("user_api_key")),
            tags=_tags(metadata),
            via_proxy=True,
            end_user=_label(metadata.get("user_api_key_end_user_id")) or end_user,
        )
    return RequestIdentity(
        user=_label(metadata.get("user")),
        team=_label(metadata.get("team")),
        api_key=_label(metadata.get("api_key")),
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
        if kind == "metadata" and (name.startswith("payg_") or name.startswith(LITELLM_METADATA_PREFIX)):
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
