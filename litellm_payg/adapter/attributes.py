"""The door for declared request attributes: where LiteLLM keeps what a scope kind reads.

A client-asserted one (``metadata_field``) is read from the request's metadata field it names.

A scope kind declared with ``key_field`` (``core/scopes.py``: ``request_attribute("org",
key_field="org_id", ...)``) is a field of the authenticated key. LiteLLM's wire format for it is
known here and nowhere below the adapter:

* at the proxy, the key LiteLLM authenticated (``UserAPIKeyAuth``) has it as an attribute of that
  name (``user_api_key_dict.org_id``), handed to the plugin's pre-call hook;
* a request that reached the Router without that hook carries what LiteLLM's auth wrote into its
  metadata, ``user_api_key_<field>`` (``user_api_key_org_id``), next to ``user_api_key_hash``;
* in the SDK there is no key: the calling code is the operator's, so its ``metadata[<kind name>]``
  (``metadata={"org": ...}``) is trusted, as ``metadata.user`` is for ``user:``.

Never from a field the client writes at the proxy: with LiteLLM's key fields present, the client's
own ``metadata.org`` is ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from litellm_payg.core.scopes import ScopeRegistry

#: the metadata fields LiteLLM's proxy auth writes: their presence says the request came through it
_PROXY_MARKS = ("user_api_key_hash", "user_api_key")


def door_attributes(scopes: ScopeRegistry, metadata: Mapping[str, Any], key: Any = None) -> tuple[tuple[str, str], ...]:
    """The declared request attributes of a request, as kept (bounded labels), for
    ``RequestIdentity.attrs``. A key-sourced one from ``key`` (the proxy's ``UserAPIKeyAuth``) when
    given, else from the proxy's metadata fields, else (the SDK) from the calling code's metadata;
    a client-asserted one from its metadata field."""
    kinds = scopes.door_filled()
    if not kinds:
        return ()
    via_proxy = key is not None or any(metadata.get(mark) for mark in _PROXY_MARKS)
    raw: dict[str, Any] = {}
    for kind in kinds:
        if kind.key_field is None:
            value = metadata.get(kind.metadata_field)  # type: ignore[arg-type]
            raw[kind.name] = value if isinstance(value, (str, int)) and not isinstance(value, bool) else None
        elif key is not None:
            raw[kind.name] = getattr(key, kind.key_field, None)
        elif via_proxy:
            raw[kind.name] = metadata.get(f"user_api_key_{kind.key_field}")
        else:
            raw[kind.name] = metadata.get(kind.name)
    if all(value is None for value in raw.values()) and not any(k.many or k.normalize for k in kinds):
        return ()  # the usual request names none: request_fields would keep nothing of a single None
    attrs = scopes.request_fields(raw).get("attrs", {})
    return tuple(sorted(attrs.items()))
