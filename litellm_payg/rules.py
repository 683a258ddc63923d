"""What a rule is: the protocol every route rule follows, built-in or third-party.

A rule type is a class registered through the ``payg_register_rules`` hook. A policy file names it
in a route (``- cost_threshold: {...}``); its options are validated with the class's ``Options``
pydantic model, and the engine applies the rules of a route in order, each seeing the candidates the
previous one kept, in the order it left them.

Any rule entry may carry a condition, ``when:`` (:class:`When`), next to its rule type::

    - when: {metadata.step: plan}
      quality_floor: {min_quality: 0.9}

The engine, not the rule, decides whether a rule applies to a request (``Engine.rules_for``): the
conditioned entries whose ``when`` matches, in policy order; when none matches, the unconditioned
entries. A rule type needs nothing to support it; ``context.when`` tells a rule its own condition.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from litellm_payg.core.bounds import MAX_TOKENS
from litellm_payg.core.decision import Candidate, RouteRequest, Step
from litellm_payg.core.model_facts import ModelFacts
from litellm_payg.core.scopes import BUILTIN, ScopeKind, ScopeRegistry


class RuleOptions(BaseModel):
    """Base for rule options: unknown keys are an error, so a typo never passes silently."""

    # allow_inf_nan=False: no rule option, built-in or a plugin's, can be nan or infinite
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


@dataclass(frozen=True)
class RuleContext:
    """What a rule may know besides its options: its route and the policy's per-model facts."""

    group: str
    field: str  # dotted path of the rule in the policy, for error messages: routes.chat[0].cost_threshold
    models: Mapping[str, ModelFacts] = field(default_factory=dict)
    #: the entry's ``when:`` condition (None: the rule is unconditioned); the engine applies it
    when: "When | None" = None


def matches(ref: str, candidate: Candidate) -> bool:
    """Whether a model reference in a policy names this candidate.

    A reference is a deployment id (``model_info.id``), a LiteLLM model string
    (``deepseek/deepseek-chat``) or the same without its provider prefix (``deepseek-chat``).
    """
    if ref == candidate.deployment_id or ref == candidate.model:
        return True
    _, _, bare = candidate.model.partition("/")
    return bool(bare) and ref == bare


class Rule:
    """Base class for rule types. Subclasses set ``name`` and ``Options`` and implement ``apply``."""

    name: ClassVar[str]
    Options: ClassVar[type[RuleOptions]]
    #: True when the rule compares prices: every deployment it can reach must have a known price.
    needs_prices: ClassVar[bool] = False
    #: True when ``apply`` takes the decision's :class:`~litellm_payg.core.snapshot.Snapshot` as a
    #: third argument, ``apply(request, candidates, snapshot)`` (what ``quality_floor``'s measured mode
    #: judges: ``snapshot.quality``); the snapshot may be None (a caller without one)
    reads_snapshot: ClassVar[bool] = False

    def __init__(self, options: RuleOptions, context: RuleContext):
        self.options = options
        self.context = context

    def model_refs(self) -> Sequence[tuple[str, str]]:
        """``(field, reference)`` for every model the options name, so a load can check they exist."""
        return ()

    def apply(self, request: RouteRequest, candidates: Sequence[Candidate]) -> Step:
        raise NotImplementedError


@dataclass(frozen=True)
class RuleSpec:
    """A rule as a policy file names it, validated but not yet bound to a router."""

    name: str
    options: RuleOptions
    field: str
    line: int | None
    rule_type: type[Rule]
    when: "When | None" = None

    def build(self, group: str, models: Mapping[str, Any]) -> Rule:
        return self.rule_type(self.options, RuleContext(group=group, field=self.field, models=models, when=self.when))


# -- conditions: ``when:`` ---------------------------------------------------------------------------
#
# A ``when`` is a mapping of keys to values; every key must match (and), and a list of values
# matches any of them (or). What each key reads, and who can write it:
#
# * ``metadata.<field>``: a scalar field of the request's metadata (client-written in the proxy);
# * ``prompt_tokens: {min: , max: }``: an inclusive range of the request's prompt tokens (read only
#   when a condition has this key);
# * every scope kind's ``when`` key (``core/scopes.py``, registered through ``payg_register_scopes``):
#   ``user``, ``team``, ``key`` and ``org`` are the AUTHENTICATED identity (read from the proxy's key;
#   in Python, the calling code's metadata), never a field of the request body; ``tags`` the request's
#   tags (client-asserted; the key's tags merged with the request's; any of them matches);
#   ``session`` its session id (``wire.identity.session_of``); ``group`` the model group the request is
#   routed in (``RouteRequest.group``; a fallback hop's own group), for conditions outside a route
#   (run budgets, ``sessions.required``).

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
    def parse(cls, raw: Any, scopes: ScopeRegistry | None = None) -> "When":
        """Validate a policy's ``when:``; raises :class:`WhenError` naming the key at fault.
        ``scopes``: the policy's scope kinds, whose ``when`` keys are conditions (default: the
        built-in kinds)."""
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
                if name.startswith("payg_") or name.startswith("user_api_key"):
                    raise WhenError((key,), f"metadata field {name!r} is not a condition: it is litellm-payg's or LiteLLM's own")
                if name in _REFUSED_METADATA:
                    raise WhenError((key,), f"metadata.{name} is written by the client in the proxy", hint=_REFUSED_METADATA[name])
            elif key == "metadata":
                raise WhenError((key,), "conditions on metadata name one field each",
                                hint="write 'metadata.step: plan' instead of 'metadata: {step: plan}'")
            elif scopes.by_when(key) is None:
                hint = "use 'key:'" if key in ("api_key", "user_api_key") else None
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
