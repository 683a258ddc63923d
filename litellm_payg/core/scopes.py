"""The scope kinds a budget can be written for (``scope: <kind>:<value>``), defined once.

Each :class:`ScopeKind` says how it reads its value(s) from a request sent to a candidate, which
spend-record attribute keeps that value (what ``report``, ``replay`` and the pytest plugin's
``spend()`` filter on), and who wrote the value: the operator's config and the authenticated key
(trusted) or the client (a label a hostile client can vary at will, so a cap on it bounds honest
runaway use, never an attacker; the key/user/team caps do that). Budgets (``budgets.buckets_for``),
the spend records (``records_attrs``), metrics, reports and replay all read this table; adding a
scope is one entry here plus its test.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from litellm_payg.core.decision import Candidate, RouteRequest


@dataclass(frozen=True)
class ScopeKind:
    """One kind of budget scope."""

    name: str  #: as written in a policy: ``<name>:<value>`` (``*``: each value separately)
    read: Callable[[RouteRequest, Candidate | None], tuple[str, ...]]  #: the request's values (none: not covered)
    record: str  #: the spend-record attribute holding the value(s)
    trusted: bool  #: False: the client writes it (see the module docstring)
    doc: str


def _one(value: Any) -> tuple[str, ...]:
    return () if value in (None, "") else (str(value),)


SCOPE_REGISTRY: Mapping[str, ScopeKind] = {k.name: k for k in (
    ScopeKind("provider", lambda r, c: _one(c and c.provider), "provider", True, "the deployment's provider"),
    ScopeKind("model", lambda r, c: _one(c and c.model), "model", True, "the deployment's LiteLLM model string"),
    ScopeKind("group", lambda r, c: _one(r.group), "group", True, "the model group the client asked for"),
    ScopeKind("deployment", lambda r, c: _one(c and c.deployment_id), "deployment", True, "the deployment id"),
    ScopeKind("user", lambda r, c: _one(r.user), "user", True, "the authenticated key's user"),
    ScopeKind("team", lambda r, c: _one(r.team), "team", True, "the authenticated key's team"),
    ScopeKind("key", lambda r, c: _one(r.api_key), "key", True, "the authenticated key (its hash)"),
    ScopeKind("end_user", lambda r, c: _one(r.end_user), "end_user", False,
              "the end user the client names (the OpenAI `user` field)"),
    ScopeKind("tag", lambda r, c: tuple(dict.fromkeys(t for t in r.tags if t)), "tags", False,
              "each tag the client sends (metadata.tags)"),
    ScopeKind("session", lambda r, c: _one(r.run or r.session), "session", False,
              "the run the request belongs to: LiteLLM's session id (`litellm_session_id`, "
              "`metadata.session_id`; the proxy maps `x-litellm-trace-id` to it), or where the policy's "
              "`sessions.id_from` says, see identity.session_of"),
)}

SCOPE_KINDS: tuple[str, ...] = tuple(SCOPE_REGISTRY)


def scope_values(kind: str, request: RouteRequest, candidate: Candidate | None) -> tuple[str, ...]:
    """The values of scope ``kind`` a request sent to ``candidate`` has (``global``: one, always)."""
    if kind == "global":
        return ("global",)
    return SCOPE_REGISTRY[kind].read(request, candidate)


def scope_values_key(request: RouteRequest, candidate: Candidate | None,
                     kinds: tuple[str, ...] | None = None) -> tuple[tuple[str, ...], ...]:
    """The values of every scope kind in ``kinds`` (default: all of them), as one hashable key: two
    requests with the same key fall under the same buckets of budgets written only for those kinds
    (``SpendControl`` caches the buckets by it, with the kinds its budgets use: a budget's buckets
    depend on the request through its own kind's values and nothing else, ``budgets.buckets_for``)."""
    if kinds is None:
        return tuple(kind.read(request, candidate) for kind in SCOPE_REGISTRY.values())
    return tuple(SCOPE_REGISTRY[k].read(request, candidate) for k in kinds)


def record_attrs(request: RouteRequest, candidate: Candidate) -> dict[str, Any]:
    """The spend record's attributes: every scope's value(s) under its ``record`` name."""
    out: dict[str, Any] = {}
    for kind in SCOPE_REGISTRY.values():
        values = kind.read(request, candidate)
        if values:
            out[kind.record] = list(values) if kind.name == "tag" else values[0]
    return out


def record_attr_of(kind: str) -> str:
    """The spend-record attribute a ``kind:value`` filter reads (``api_key`` is accepted for ``key``)."""
    kind = {"api_key": "key"}.get(kind, kind)
    if kind not in SCOPE_REGISTRY:
        raise ValueError(f"unknown scope kind {kind!r}; expected one of {', '.join(SCOPE_KINDS)}")
    return SCOPE_REGISTRY[kind].record
