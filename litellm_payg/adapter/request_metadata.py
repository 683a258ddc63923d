"""Which of a LiteLLM request's metadata dicts is the request's: the one the plugin's id is on.

LiteLLM passes a request's metadata as ``metadata`` or ``litellm_metadata`` depending on the kind of
request (:data:`litellm_payg.wire.request_checks.METADATA_FIELDS`); the plugin stamps its request id
(:data:`litellm_payg.runtime.request_state.REQUEST_KEY`) on one of them at the door, and every later
hook finds the request's state through it. Reading LiteLLM's field names is the adapter's job, so this
lives here, not beside the state map in ``runtime/``.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

from litellm_payg.runtime.request_state import REQUEST_KEY
from litellm_payg.wire.request_checks import METADATA_FIELDS


def metadata_of(data: Mapping[str, Any]) -> MutableMapping[str, Any] | None:
    """The request's metadata dict: the one that carries the plugin's id if any does, else the
    first LiteLLM uses for this kind of request (``metadata`` or ``litellm_metadata``)."""
    first = None
    for name in METADATA_FIELDS:  # on every hook of every request: plain dicts checked first
        m = data.get(name)
        if type(m) is dict or (m is not None and isinstance(m, MutableMapping)):
            if REQUEST_KEY in m:
                return m
            if first is None:
                first = m
    return first
