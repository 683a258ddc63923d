"""The condition language: ``when:``, a request's match against the policy's conditions.

One language serves every place a policy conditions something on the request: a rule entry of a
route (``Engine.rules_for``), a run budget's ``when``, ``sessions.required``, ``simulate`` and
``explain``. It reads the plugin's own request (:class:`~litellm_payg.core.decision.RouteRequest`)
and the scope kinds' ``when`` keys (:mod:`litellm_payg.core.scopes`), nothing of LiteLLM's: the
metadata fields the platform itself writes are refused by the caller, which names them
(``When.parse(..., reserved_metadata=...)``; the policy loader passes LiteLLM's, from ``wire/``).

A ``when`` is a mapping of keys to values; every key must match (and), and a list of values matches
any of them (or). What each key reads, and who can write it:

* ``metadata.<field>``: a scalar field of the request's metadata (client-written in the proxy);
* ``prompt_tokens: {min: , max: }``: an inclusive range of the request's prompt tokens (read only
  when a condition has this key);
* every scope kind's ``when`` key (``core/scopes.py``, registered through ``payg_register_scopes``):
  ``user``, ``team``, ``key`` and ``org`` are the AUTHENTICATED identity (read from the proxy's key;
  in Python, the calling code's metadata), never a field of the request body; ``tags`` the request's
  tags (client-asserted; the key's tags merged with the request's; any of them matches);
  ``session`` its session id (``wire.identity.session_of``); ``group`` the model group the request is
  routed in (``RouteRequest.group``; a fallback hop's own group), for conditions outside a route
  (run budgets, ``sessions.required``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from litellm_payg.core.bounds import MAX_TOKENS
from litellm_payg.core.decision import RouteRequest
from litellm_payg.core.scopes import BUILTIN, ScopeKind, ScopeRegistry

#: the metadata field prefix a condition may never read: the plugin's own state
OWN_METADATA_PREFIX = "payg_"

#: the keys a ``when`` knows besides the scope kinds'
_OWN_KEYS = ("metadata.<field>", "prompt_tokens")
_METADATA_FIELD = re.compile(r"^[A-Za-z0-9_\-]+$")
#: metadata fields a ``when`` may not read, and what to write instead: in the proxy a client writes
#: them, so a condition on them would let it pick its routing as if it were another user or team
_REFUSED_METADATA = {
    "user": "use 'user:' (the authenticated key's user; in Python, this same metadata field)",
    "team": "use 'team:' (the authenticated key's team; in Python, this same metadata field)",
    "api_key": "use 'key:' (the authenticated key's hash; in Python, this same metadata field)",
    "tags": "use 'tags:'",
}


class WhenError(ValueError):
    """A ``when:`` the policy cannot use: ``path`` is where, below ``when``."""

    def __init__(self, path: tuple[str, ...], message: str, hint: str | None = None):
        super().__init__(message)
        self.path = path
        self.message = message
        self.hint = hint


def _norm(value: Any) -> str:
    """A scalar as the string conditions compare: YAML's ``true`` and JSON's ``true`` agree."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _show(values: Sequence[str]) -> str:
    return values[0] if len(values) == 1 else "one of " + ", ".join(values)


@dataclass(frozen=True)
class Condition:
    """One key of a ``when``: ``key`` as written, and its values (any of them matches)."""

    key: str
    values: tuple[str, ...] = ()
    min: int | None = None  # prompt_tokens only
    max: int | None = None
    #: the scope kind a key names (``user``, ``tags``, ``org``...), None for metadata and prompt_tokens
    kind: ScopeKind | None = field(default=None, compare=False)

    def check(self, request: RouteRequest) -> str | None:
        """Why this condition matches ``request`` (e.g. ``metadata.step=plan``), or None."""
        key = self.key
        if key == "prompt_tokens":
            tokens = request.prompt_tokens  # read only here: counting may be lazy
            if (self.min is None or tokens >= self.min) and (self.max is None or tokens <= self.max):
                return f"prompt_tokens={tokens} in {self._range()}"
            return None
        if self.kind is not None and self.kind.many:
            have = self.kind.read(request, None)
            hit = next((t for t in self.values if t in have), None)
            return None if hit is None else f"{key} has {hit}"
        got = self.value_of(request)
        return f"{key}={got}" if got is not None and got in self.values else None

    def value_of(self, request: RouteRequest) -> str | None:
        """The request's value for this key, as compared (None: the request has none)."""
        if self.key.startswith("metadata."):
            value = request.metadata.get(self.key.split(".", 1)[1]) if request.metadata else None
            # only a scalar is compared: a list or mapping is no value of the field
            return _norm(value) if isinstance(value, (str, int, float, bool)) else None
        return None if self.kind is None else self.kind.request_value(request)

    def describe(self, request: RouteRequest) -> str:
        """The request's value for this key, for a decision that no condition matched."""
        if self.key == "prompt_tokens":
            return f"prompt_tokens={request.prompt_tokens}"
        if self.kind is not None and self.kind.many:
            return f"{self.key}=[{', '.join(self.kind.read(request, None))}]"
        got = self.value_of(request)
        return f"{self.key}={got}" if got is not None else f"no {self.key}"

    def _range(self) -> str:
        return f"[{'' if self.min is None else self.min}, {'' if self.max is None else self.max}]"

    def __str__(self) -> str:
        if self.key == "prompt_tokens":
            return f"prompt_tokens in {self._range()}"
        return f"{self.key}={_show(self.values)}"


@dataclass(frozen=True)
class When:
    """A rule entry's condition: every one of ``conditions`` must match."""

    conditions: tuple[Condition, ...]

    def check(self, request: RouteRequest) -> str | None:
        """Why ``request`` matches (``metadata.step=plan, team=ops``), or None when it does not."""
        why = []
        for condition in self.conditions:
            reason = condition.check(request)
            if reason is None:
                return None
            why.append(reason)
        return ", ".join(why)

    def __str__(self) -> str:
        return ", ".join(str(c) for c in self.conditions)

    @classmethod
    def parse(cls, raw: Any, scopes: ScopeRegistry | None = None,
              reserved_metadata: tuple[str, ...] = (OWN_METADATA_PREFIX,)) -> "When":
        """Validate a policy's ``when:``; raises :class:`WhenError` naming the key at fault.
        ``scopes``: the policy's scope kinds, whose ``when`` keys are conditions (default: the
        built-in kinds). ``reserved_metadata``: the prefixes of the metadata fields no condition
        reads, the plugin's own and the ones the platform writes after auth."""
        scopes = BUILTIN if scopes is None else scopes
        if not isinstance(raw, Mapping):
            raise WhenError((), f"expected a mapping of conditions, e.g. {{metadata.step: plan}}, got {type(raw).__name__}")
        if not raw:
            raise WhenError((), "an empty 'when' would match every request",
                            hint="leave 'when:' out for a rule that applies to every request")
        conditions = []
        for key, value in raw.items():
            key = str(key)
            if key == "prompt_tokens":
                conditions.append(_parse_range(key, value))
                continue
            if key.startswith("metadata."):
                name = key.split(".", 1)[1]
                if not _METADATA_FIELD.match(name):
                    raise WhenError((key,), "expected metadata.<field>, a field name of letters, digits, '_' or '-'")
                if name.startswith((OWN_METADATA_PREFIX, *reserved_metadata)):
                    raise WhenError((key,), f"metadata field {name!r} is not a condition: it is litellm-payg's or LiteLLM's own")
                if name in _REFUSED_METADATA:
                    raise WhenError((key,), f"metadata.{name} is written by the client in the proxy", hint=_REFUSED_METADATA[name])
            elif key == "metadata":
                raise WhenError((key,), "conditions on metadata name one field each",
                                hint="write 'metadata.step: plan' instead of 'metadata: {step: plan}'")
            elif scopes.by_when(key) is None:
                hint = "use 'key:'" if key.endswith("api_key") else None
                known = (*scopes.when_keys(), *_OWN_KEYS)
                raise WhenError((key,), f"unknown condition {key!r}; expected one of {', '.join(known)}", hint=hint)
            kind = None if key.startswith("metadata.") else scopes.by_when(key)
            conditions.append(Condition(key, _parse_values(key, value, kind), kind=kind))
        return cls(tuple(conditions))


def _parse_values(key: str, value: Any, kind: ScopeKind | None = None) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise WhenError((key,), "an empty list matches no request; give at least one value")
    out = []
    for i, item in enumerate(items):
        where = (key, i) if isinstance(value, list) else (key,)
        if item is None or isinstance(item, (Mapping, list)) or not isinstance(item, (str, int, float, bool)):
            raise WhenError(where, f"expected a value (a string or number) or a list of them, got {_type(item)}")
        if isinstance(item, float) and item != item:  # nan never equals anything
            raise WhenError(where, "expected a value (a string or number), got nan")
        if kind is not None and not kind.many and isinstance(item, bool):
            raise WhenError(where, f"expected a {key} id (a string), got {item!r}")
        out.append(_norm(item))
    return tuple(dict.fromkeys(out))


def _parse_range(key: str, value: Any) -> Condition:
    if not isinstance(value, Mapping):
        raise WhenError((key,), f"expected a range {{min: N, max: M}} (either may be left out), got {_type(value)}")
    unknown = sorted(str(k) for k in value if k not in ("min", "max"))
    if unknown:
        raise WhenError((key, unknown[0]), "unknown field; expected min and/or max")
    if not value:
        raise WhenError((key,), "give min, max or both")
    bounds: dict[str, int] = {}
    for name in ("min", "max"):
        if name not in value:
            continue
        n = value[name]
        if isinstance(n, bool) or not isinstance(n, int):
            raise WhenError((key, name), f"expected a whole number of tokens, got {_type(n)}")
        if not 0 <= n <= MAX_TOKENS:
            raise WhenError((key, name), f"expected 0 to {MAX_TOKENS:,} tokens, got {n}")
        bounds[name] = n
    lo, hi = bounds.get("min"), bounds.get("max")
    if lo is not None and hi is not None and lo > hi:
        raise WhenError((key,), f"min ({lo}) is greater than max ({hi}): no request can match")
    return Condition(key, min=lo, max=hi)


def _type(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, (str, int, float, bool)):
        return f"{type(value).__name__} {value!r}"
    return type(value).__name__
