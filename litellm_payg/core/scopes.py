"""The scope kinds a budget can be written for (``scope: <kind>:<value>``), declared once each.

A :class:`ScopeKind` is the one declaration of a request attribute (or of a deployment's): its name,
where its value is read from (``source``: the deployment, the authenticated key, the client), who
wrote it (``trusted``: the operator's config and the authenticated key; a client-written label can
be varied at will by a hostile client, so a cap on it bounds honest runaway use, never an attacker),
the spend-record attribute that keeps it, and the names it has in the policy language (``when:``
conditions, ``sticky_by``). Everything that lists kinds reads a :class:`ScopeRegistry`: budget
scopes, ``when:``, ``sticky_by``, the spend records (what ``report``, ``replay`` and the pytest
plugin's ``spend()`` filter on), the metrics' budget gauges, ``explain``'s flags and ``simulate``'s
traffic fields.

Kinds are registered through the ``payg_register_scopes`` hook (``hookspecs.py``); the built-in
ones by ``default_plugins/scopes.py``, like the built-in rules. A policy's registry is built from
its own plugin manager (``plugins.scope_registry``). The definitions of the built-in kinds are kept
here, as data, so that the core's pure functions (a :class:`~litellm_payg.core.budgets.Budget`
built without a policy, ``buckets_for``) have a registry to fall back to (:data:`BUILTIN`).

A kind whose value is an attribute of the request that :class:`RouteRequest` has no field for is
kept in ``RouteRequest.attrs`` under its name (:func:`request_attribute`): the adapter fills it at
the door from where the declaration says (``key_field``: a field of the authenticated key), and
``simulate`` from a traffic line's field of the same name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from litellm_payg.core.decision import Candidate, RouteRequest
from litellm_payg.core.identity import bounded_label, key_hash

#: where a kind's value comes from
SOURCES = ("deployment", "request", "key", "client")


@dataclass(frozen=True, eq=False)
class ScopeKind:
    """One kind of budget scope: one attribute of a request sent to a deployment."""

    name: str  #: as written in a policy: ``<name>:<value>`` (``*``: each value separately)
    read: Callable[[RouteRequest, Candidate | None], tuple[str, ...]]  #: the request's values (none: not covered)
    record: str  #: the spend-record attribute holding the value(s)
    trusted: bool  #: False: the client writes it (see the module docstring)
    doc: str
    #: ``deployment`` (the deployment the request is sent to), ``request`` (the request as routed:
    #: its group, its run), ``key`` (the authenticated key), ``client`` (what the client asserts)
    source: str = "request"
    #: for ``source: key``: the authenticated key's field the value is read from (the adapter maps it
    #: to LiteLLM's key object and to the fields its proxy writes into the request's metadata)
    key_field: str | None = None
    #: for a client-asserted attribute of the request: the request metadata's field it is read from
    metadata_field: str | None = None
    #: the RouteRequest field the value is kept in; None: ``RouteRequest.attrs[name]``
    field: str | None = None
    #: its key in a ``when:`` condition; None: not a condition
    when: str | None = None
    #: the request's own value, as ``when:`` and ``sticky_by`` compare it (None: ``read(request, None)``)
    value: Callable[[RouteRequest], str | None] | None = None
    #: several values per request (tags): a traffic line gives a list
    many: bool = False
    #: deployment kinds: the values a router has (``Engine.check_deployments`` refuses a budget that
    #: names another one), from its candidates by group
    router_values: Callable[[Mapping[str, Sequence[Candidate]]], Iterable[str]] | None = None
    #: deployment kinds: said after a budget that names a value the router does not have
    hint: str | None = None
    #: how a raw value given at the door becomes the kept one (None: a bounded label)
    normalize: Callable[[Any], str | None] | None = None

    def request_value(self, request: RouteRequest) -> str | None:
        """The request's own value (``when:``, ``sticky_by``): the first of its values, or None."""
        if self.value is not None:
            return self.value(request)
        values = self.read(request, None)
        return values[0] if values else None

    def kept(self, raw: Any) -> str | None:
        """A raw value given at the door (the key's field, a traffic line's), as it is kept."""
        if self.normalize is not None:
            return self.normalize(raw)
        return None if raw in (None, "") else bounded_label(str(raw))


def one(value: Any) -> tuple[str, ...]:
    """A single value as a kind's values: empty when there is none."""
    return () if value in (None, "") else (str(value),)


def request_attribute(name: str, *, doc: str, key_field: str | None = None, metadata_field: str | None = None,
                      when: bool = True, record: str | None = None) -> ScopeKind:
    """A kind whose value is a request attribute kept in ``RouteRequest.attrs[name]``: the one
    declaration of that attribute. Exactly one of ``key_field`` (read from the authenticated key's
    field of that name: trusted) and ``metadata_field`` (read from the request's metadata: the
    client asserts it)."""
    if (key_field is None) == (metadata_field is None):
        raise ValueError(f"request attribute {name!r}: give key_field (the authenticated key's) or "
                         "metadata_field (the client's), one of them")
    if metadata_field is not None and (metadata_field.startswith("payg_") or not metadata_field):
        raise ValueError(f"request attribute {name!r}: metadata.{metadata_field} is litellm-payg's own")
    return ScopeKind(name, lambda r, c: one(r.attrs.get(name)), record or name, key_field is not None, doc,
                     source="key" if key_field else "client", key_field=key_field, metadata_field=metadata_field,
                     when=name if when else None)


class ScopeRegistry(Mapping[str, ScopeKind]):
    """The scope kinds one policy knows, by name (``global`` is always there: it is no kind)."""

    def __init__(self, kinds: Iterable[ScopeKind] = ()):
        self._kinds: dict[str, ScopeKind] = {}
        self._door: list[ScopeKind] | None = None  # door_filled(), worked out once: read on every request
        for kind in kinds:
            self.add(kind)

    def add(self, kind: ScopeKind) -> None:
        if kind.name == "global" or kind.name in self._kinds and self._kinds[kind.name] is not kind:
            raise ValueError(f"scope kind {kind.name!r} is registered twice")
        if kind.source not in SOURCES:
            raise ValueError(f"scope kind {kind.name!r}: source must be one of {', '.join(SOURCES)}, got {kind.source!r}")
        self._kinds[kind.name] = kind
        self._door = None

    def __getitem__(self, name: str) -> ScopeKind:
        return self._kinds[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._kinds)

    def __len__(self) -> int:
        return len(self._kinds)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._kinds)

    def attributes(self) -> list[ScopeKind]:
        """The kinds that are attributes of the request, not of the deployment it is sent to."""
        return [k for k in self._kinds.values() if k.source in ("key", "client")]

    def door_filled(self) -> list[ScopeKind]:
        """The kinds the adapter fills into ``RouteRequest.attrs`` at the door (from the
        authenticated key, or the client's metadata)."""
        if self._door is None:
            self._door = [k for k in self._kinds.values() if k.field is None and (k.key_field or k.metadata_field)]
        return self._door

    def by_when(self, key: str) -> ScopeKind | None:
        return next((k for k in self._kinds.values() if k.when == key), None)

    def when_keys(self) -> tuple[str, ...]:
        return tuple(k.when for k in self._kinds.values() if k.when is not None)

    def values_of(self, kind: str, request: RouteRequest, candidate: Candidate | None) -> tuple[str, ...]:
        """The values of scope ``kind`` a request sent to ``candidate`` has (``global``: one, always)."""
        if kind == "global":
            return ("global",)
        return self._kinds[kind].read(request, candidate)

    def values_key(self, request: RouteRequest, candidate: Candidate | None,
                   kinds: tuple[str, ...] | None = None) -> tuple[tuple[str, ...], ...]:
        """The values of every kind in ``kinds`` (default: all of them), as one hashable key: two
        requests with the same key fall under the same buckets of budgets written only for those
        kinds (``SpendControl`` caches the buckets by it, with the kinds its budgets use: a budget's
        buckets depend on the request through its own kind's values and nothing else)."""
        if kinds is None:
            return tuple(kind.read(request, candidate) for kind in self._kinds.values())
        if len(kinds) == 1:  # a policy's budgets written for one kind (a team's, a key's): read on every reservation
            return (self._kinds[kinds[0]].read(request, candidate),)
        return tuple(self._kinds[k].read(request, candidate) for k in kinds)

    def identity_key(self, request: RouteRequest) -> tuple[Any, ...]:
        """Who a request is, as the metrics' budget gauges remember it: every request attribute but
        its run (one gauge per run would grow without bound)."""
        return (request.group, *(k.read(request, None) for k in self.attributes() if k.name != "session"))

    def record_attrs(self, request: RouteRequest, candidate: Candidate) -> dict[str, Any]:
        """The spend record's attributes: every kind's value(s) under its ``record`` name."""
        out: dict[str, Any] = {}
        for kind in self._kinds.values():
            values = kind.read(request, candidate)
            if values:
                out[kind.record] = list(values) if kind.many else values[0]
        return out

    def record_attr_of(self, kind: str) -> str:
        """The spend-record attribute a ``kind:value`` filter reads (``api_key`` is accepted for ``key``)."""
        kind = {"api_key": "key"}.get(kind, kind)
        if kind not in self._kinds:
            raise ValueError(f"unknown scope kind {kind!r}; expected one of {', '.join(self._kinds)}")
        return self._kinds[kind].record

    def request_fields(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """The door: RouteRequest keyword arguments from raw attribute values by kind name (a
        traffic line's, ``explain``'s flags, what the adapter read from the key). Each value is kept
        as its declaration says (a bounded label, a key's hash); a kind without a RouteRequest field
        goes to ``attrs``."""
        out: dict[str, Any] = {}
        attrs: dict[str, str] = {}
        for name, value in raw.items():
            kind = self._kinds.get(name)
            if kind is None or kind.source not in ("key", "client"):
                raise ValueError(f"{name!r} is not a request attribute; expected one of "
                                 f"{', '.join(k.name for k in self.attributes())}")
            if kind.many:
                kept: Any = tuple(v for v in (kind.kept(x) for x in (value or ())) if v is not None)
            else:
                kept = kind.kept(value)
            if kind.field is not None:
                out[kind.field] = kept
            elif kept is not None:
                attrs[name] = kept
        if attrs:
            out["attrs"] = attrs
        return out


def _run_of(r: RouteRequest, c: Candidate | None) -> tuple[str, ...]:
    return one(r.run or r.session)


#: the built-in kinds, registered by ``default_plugins/scopes.py`` (see the module docstring)
BUILTIN_KINDS: tuple[ScopeKind, ...] = (
    ScopeKind("provider", lambda r, c: one(c and c.provider), "provider", True, "the deployment's provider",
              source="deployment", router_values=lambda by: sorted({c.provider for cs in by.values() for c in cs}),
              hint="Name one of the router's providers, or 'provider:*' for each one separately."),
    ScopeKind("model", lambda r, c: one(c and c.model), "model", True, "the deployment's LiteLLM model string",
              source="deployment", router_values=lambda by: sorted({c.model for cs in by.values() for c in cs}),
              hint="A model scope names the LiteLLM model string exactly, provider prefix included."),
    ScopeKind("group", lambda r, c: one(r.group), "group", True, "the model group the client asked for",
              source="request", field="group", when="group", router_values=lambda by: sorted(by),
              hint="Name one of the router's groups, or 'group:*' for each one separately."),
    ScopeKind("deployment", lambda r, c: one(c and c.deployment_id), "deployment", True, "the deployment id",
              source="deployment", router_values=lambda by: sorted({c.deployment_id for cs in by.values() for c in cs}),
              hint="A deployment scope names a model_info.id: give the deployment a stable one in the LiteLLM config "
                   "(a generated id changes whenever its parameters do)."),
    ScopeKind("user", lambda r, c: one(r.user), "user", True, "the authenticated key's user",
              source="key", key_field="user_id", field="user", when="user"),
    ScopeKind("team", lambda r, c: one(r.team), "team", True, "the authenticated key's team",
              source="key", key_field="team_id", field="team", when="team"),
    ScopeKind("key", lambda r, c: one(r.api_key), "key", True, "the authenticated key (its hash)",
              source="key", key_field="token", field="api_key", when="key", normalize=key_hash),
    ScopeKind("end_user", lambda r, c: one(r.end_user), "end_user", False,
              "the end user the client names (the OpenAI `user` field)", source="client", field="end_user"),
    ScopeKind("tag", lambda r, c: tuple(dict.fromkeys(t for t in r.tags if t)), "tags", False,
              "each tag the client sends (metadata.tags)", source="client", field="tags", when="tags", many=True),
    ScopeKind("session", _run_of, "session", False,
              "the run the request belongs to: the session id the request names (LiteLLM's, or where the "
              "policy's `sessions.id_from` says, see wire.identity.session_of)",
              source="client", field="session", when="session", value=lambda r: r.session),
)

#: the built-in kinds alone: what a Budget built without a policy knows
BUILTIN = ScopeRegistry(BUILTIN_KINDS)

# -- the former module-level table, kept for code written against it (the built-in kinds only) ------
SCOPE_REGISTRY: Mapping[str, ScopeKind] = BUILTIN
SCOPE_KINDS: tuple[str, ...] = BUILTIN.names


def scope_values(kind: str, request: RouteRequest, candidate: Candidate | None,
                 scopes: ScopeRegistry = BUILTIN) -> tuple[str, ...]:
    """The values of scope ``kind`` a request sent to ``candidate`` has (``global``: one, always)."""
    return scopes.values_of(kind, request, candidate)


def scope_values_key(request: RouteRequest, candidate: Candidate | None,
                     scopes: ScopeRegistry = BUILTIN, kinds: tuple[str, ...] | None = None) -> tuple[tuple[str, ...], ...]:
    return scopes.values_key(request, candidate, kinds)


def record_attrs(request: RouteRequest, candidate: Candidate, scopes: ScopeRegistry = BUILTIN) -> dict[str, Any]:
    return scopes.record_attrs(request, candidate)


def record_attr_of(kind: str, scopes: ScopeRegistry = BUILTIN) -> str:
    return scopes.record_attr_of(kind)
