"""Who a request belongs to, from LiteLLM's own request identity.

In the proxy, the authenticated key decides (``user_api_key_*`` fields the proxy writes into the
request metadata after auth); a field the client sends cannot change it. In the SDK, the caller is
trusted: ``user=`` and ``metadata={"user": ..., "team": ..., "tags": [...]}``.

Client *hints* (``metadata["payg_hints"]``) are sanitised here: they may only tighten a policy.
"""

from __future__ import annotations

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


def _str(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


def identity_of(request_kwargs: Mapping[str, Any], metadata: Mapping[str, Any]) -> RequestIdentity:
    tags_value = metadata.get("tags") or ()
    tags = tuple(str(t) for t in tags_value) if isinstance(tags_value, (list, tuple)) else ()
    if metadata.get("user_api_key_hash") or metadata.get("user_api_key"):
        return RequestIdentity(
            user=_str(metadata.get("user_api_key_user_id")) or _str(metadata.get("user_api_key_end_user_id")),
            team=_str(metadata.get("user_api_key_team_id")),
            api_key=_str(metadata.get("user_api_key_hash") or metadata.get("user_api_key")),
            tags=tags,
            via_proxy=True,
        )
    return RequestIdentity(
        user=_str(request_kwargs.get("user")) or _str(metadata.get("user")),
        team=_str(metadata.get("team")),
        api_key=_str(metadata.get("api_key")),
        tags=tags,
        via_proxy=False,
    )


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
