"""``litellm-payg what-if POLICY --from SOURCE``: what a policy would have done to the traffic you served.

Each request of the history (``whatif_history.py``: a JSONL export, the plugin's own ledger;
``whatif_postgres.py``: LiteLLM's spend logs), in time order, goes through the runtime's lifecycle
(``runtime/lifecycle.py``, as ``simulate`` and live traffic do): ``Lifecycle.pick`` on a memory
ledger driven by a clock set to the request's recorded start time, so budgets, their windows,
reservations and run budgets (by the recorded session) act as they would have; then ``succeeded``
with the request's cost on the deployment picked. Failover does not apply: every replayed request
was answered. The cost is the recorded tokens (prompt, completion, cache reads and writes) at the
picked deployment's price: LiteLLM's ``cost_per_token`` (``HistoryPricer``). A request the history
cannot reprice (no usage recorded, a picked model with no price, a group with no deployment) is
counted and listed, never guessed.

Compared: what was paid (the recorded spend), what the policy would have paid, and the oracle (per
request the cheapest deployment meeting the policy's quality bar, ``simulate``'s definition), per
day, team, key, model group and model; the requests the policy blocked or downgraded and whose they
were; the biggest single differences.

Memory: the history is streamed; what is kept grows with the number of distinct days, teams, keys,
groups and models, the ledger's live budget buckets (one per scope value and window, idle session
buckets expire), the caches (bounded, each cleared when full: prices, quality bars per group, the
rows' (day, team, key, group, model) combinations and who they are, at most ``_PRICE_CACHE`` =
20,000 entries each; ``quality_floor``'s remembered answers, 20,000 per rule) and the ``--top`` and
``LISTED`` examples, not with the rows. The ledger keeps no record per charge and books an answered
request in one pass (``stores.ledger.memory.ReplayLedger``, the memory ledger's budgets). Postgres
rows are read 10,000 to a result, at most two such batches ahead (``whatif_postgres``). Measured
(``bench/whatif.py``): a million generated rows replay in about 70 MB above the loaded process.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import gc
import heapq
import io
import json
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from litellm_payg.core.decision import CandidateSet
from litellm_payg.tools.money import usd
from litellm_payg.tools.simulate import Pricer, _Clock, _Progress
from litellm_payg.tools.whatif_history import (
    Filters,
    HistoryRow,
    WhatIfInputError,
    iso,
    parse_time,
    read_jsonl,
    read_ledger,
)

LISTED = 100  # examples kept per list (unpriced, blocked, downgraded)
DEFAULT_TOP = 10
_LINEAR_UP_TO = 100_000  # prompt tokens below every tiered price's threshold (128k, 200k): rates are linear
_PRICE_CACHE = 20_000  # exact (non-linear) prices kept, at most (and quality bars by prompt size)
_NO_BAR = object()
_NOT_PRICED = object()


# -- prices -------------------------------------------------------------------------------------


class HistoryPricer(Pricer):
    """``simulate``'s pricer, at a request's recorded tokens with its cache reads and writes.

    LiteLLM's ``cost_per_token`` costs about half a millisecond a call, too much for millions of
    rows of distinct sizes; its price is linear in each kind of token below the long-context tiers,
    so each deployment's per-token rates are read from LiteLLM once (a call per kind of token) and a
    request is their sum. A request over ``_LINEAR_UP_TO`` prompt tokens, or with reasoning tokens
    on a model that prices them apart, is asked of LiteLLM itself (cached). A deployment whose price
    the policy or the config overrides is priced by LiteLLM with that price (cache tokens at the
    input price, as LiteLLM's custom pricing does)."""

    def __init__(self, candidates: Sequence[Any], policy_models: Mapping[str, Any] | None = None):
        super().__init__(candidates, policy_models)
        self._models = policy_models or {}
        self._rates: dict[str, tuple[float, float, float, float] | None] = {}
        self._reasoning_apart: dict[str, bool] = {}
        self._exact: dict[tuple, float] = {}
        #: per deployment: (its rates or None, priced by a custom price, reasoning tokens priced apart)
        self._fast: dict[str, tuple[tuple[float, float, float, float] | None, bool, bool]] = {}
        #: charge_all's plans, by the candidates' identities (``_plan``; the candidates kept in it)
        self._plans: dict[tuple[int, ...], tuple] = {}

    def add(self, candidate: Any) -> None:
        """A deployment seen after construction (history-built model lists grow as rows arrive)."""
        if candidate.deployment_id not in self.source:
            other = Pricer([candidate], self._models)
            self.source.update(other.source)
            self._custom.update(other._custom)
            self.policy_overridden.update(other.policy_overridden)
            self._by_id[candidate.deployment_id] = candidate

    def _call(self, candidate: Any, p: int, c: int, read: int = 0, write: int = 0, reasoning: int = 0) -> float:
        import litellm

        custom = self._custom.get(candidate.deployment_id)
        quiet, litellm.suppress_debug_info = litellm.suppress_debug_info, True
        try:
            if custom is not None:
                a, b = litellm.cost_per_token(model=candidate.model, prompt_tokens=p, completion_tokens=c,
                                              custom_cost_per_token=custom)  # type: ignore[arg-type]
            elif reasoning:
                usage = litellm.Usage(prompt_tokens=p, completion_tokens=c, total_tokens=p + c,
                                      prompt_tokens_details={"cached_tokens": read},
                                      completion_tokens_details={"reasoning_tokens": reasoning},
                                      cache_creation_input_tokens=write, cache_read_input_tokens=read)
                a, b = litellm.cost_per_token(model=candidate.model, prompt_tokens=p, completion_tokens=c, usage_object=usage)
            else:
                a, b = litellm.cost_per_token(model=candidate.model, prompt_tokens=p, completion_tokens=c,
                                              cache_read_input_tokens=read, cache_creation_input_tokens=write)
        finally:
            litellm.suppress_debug_info = quiet
        return float(a) + float(b)

    def rates(self, candidate: Any) -> tuple[float, float, float, float] | None:
        """USD per (uncached prompt, completion, cache-read, cache-write) token, from LiteLLM."""
        dep = candidate.deployment_id
        if dep in self._rates:
            return self._rates[dep]
        if not candidate.priced:
            self._rates[dep] = None
            return None
        from litellm_payg.stores.prices import model_info

        k = 1000
        rin = self._call(candidate, k, 0) / k
        rout = self._call(candidate, 0, k) / k
        rread = self._call(candidate, k, 0, read=k) / k
        rwrite = self._call(candidate, k, 0, write=k) / k
        self._rates[dep] = (rin, rout, rread, rwrite)
        info = model_info(candidate.model) or {}
        self._reasoning_apart[dep] = self._custom.get(dep) is None and bool(info.get("output_cost_per_reasoning_token"))
        return self._rates[dep]

    def charge(self, candidate: Any, row: HistoryRow) -> float | None:
        """The row's recorded tokens at this deployment's price; None when it has no price."""
        dep = candidate.deployment_id
        fast = self._fast.get(dep)
        if fast is None:  # the deployment's rates and how they apply, looked up once (called per row and deployment)
            r = self.rates(candidate)
            fast = self._fast[dep] = (r, self._custom.get(dep) is not None, bool(self._reasoning_apart.get(dep)))
        r, custom, apart = fast
        if r is None:
            return None
        p, c = row.prompt_tokens or 0, row.completion_tokens or 0
        read, write = row.cache_read_tokens, row.cache_write_tokens
        if p > _LINEAR_UP_TO or (apart and row.reasoning_tokens):
            key = (dep, p, c, read, write, row.reasoning_tokens)
            v = self._exact.get(key)
            if v is None:
                if len(self._exact) >= _PRICE_CACHE:
                    self._exact.clear()
                v = self._exact[key] = self._call(candidate, p, c, read, write, row.reasoning_tokens)
            return v
        if custom:
            return p * r[0] + c * r[1]
        return max(0, p - read - write) * r[0] + c * r[1] + read * r[2] + write * r[3]

    def _plan(self, candidates: Sequence[Any]) -> tuple | None:
        """``(candidates kept, any prices reasoning tokens apart, ((deployment id, rates, custom), ...))``
        for a set whose every deployment has linear rates, else None (``charge_all``)."""
        entries = []
        apart = False
        for cand in candidates:
            fast = self._fast.get(cand.deployment_id)
            if fast is None:
                self.charge(cand, _ZERO_ROW)  # works out the deployment's rates (the row's tokens are not read)
                fast = self._fast.get(cand.deployment_id)
            if fast is None or fast[0] is None:
                return None
            apart = apart or fast[2]
            entries.append((cand.deployment_id, fast[0], fast[1]))
        return tuple(candidates), apart, tuple(entries)

    def charge_all(self, candidates: Sequence[Any], row: HistoryRow) -> dict[str, float | None]:
        """:meth:`charge` of each candidate, by deployment id: the row's tokens read once, and the
        linear case (most rows) priced here, with the same arithmetic (the oracle prices every
        deployment meeting the bar, on every row)."""
        p, c = row.prompt_tokens or 0, row.completion_tokens or 0
        read, write, reasoning = row.cache_read_tokens, row.cache_write_tokens, row.reasoning_tokens
        linear = p <= _LINEAR_UP_TO
        uncached = max(0, p - read - write)
        out: dict[str, float | None] = {}
        if linear:
            # every candidate's rates, read once per candidate set (the oracle's set is the same few
            # lists on every row): the same arithmetic as below, without a lookup per candidate
            key = tuple(map(id, candidates))
            plan = self._plans.get(key)
            if plan is None:
                plan = self._plan(candidates)
                if plan is not None:
                    if len(self._plans) >= _PRICE_CACHE:
                        self._plans.clear()
                    self._plans[key] = plan
            if plan is not None and not (reasoning and plan[1]):
                for dep, r, custom in plan[2]:
                    out[dep] = p * r[0] + c * r[1] if custom else uncached * r[0] + c * r[1] + read * r[2] + write * r[3]
                return out
        fast_of = self._fast
        for cand in candidates:
            fast = fast_of.get(cand.deployment_id)
            if fast is None or not linear or (fast[2] and reasoning) or fast[0] is None:
                out[cand.deployment_id] = self.charge(cand, row)
                continue
            r = fast[0]
            out[cand.deployment_id] = p * r[0] + c * r[1] if fast[1] else uncached * r[0] + c * r[1] + read * r[2] + write * r[3]
        return out


#: a row with no tokens: what ``HistoryPricer._plan`` works a deployment's rates out with
_ZERO_ROW = HistoryRow("", 0.0, "", "", None, 0, 0)


# -- the replay ---------------------------------------------------------------------------------


class _ReplayLedger:
    """The ledger a replay runs on (``stores.ledger.memory.ReplayLedger``): the memory ledger's budgets,
    without a record per charge (a million kept ``SpendRecord`` s would make memory grow with the
    history), a request answered at once reserved and settled in one pass."""

    @staticmethod
    def make() -> Any:
        from litellm_payg.stores.ledger import open_replay_ledger

        return open_replay_ledger()


class _Identity:
    """What the lifecycle shuffles a group without a route with: nothing. The history already holds
    the Router's shuffle: the deployment that served the request, put first (``_candidates``)."""

    @staticmethod
    def sample(seq: Sequence[Any], k: int) -> list[Any]:
        return list(seq)[:k]


@dataclass(slots=True)
class Totals:
    requests: int = 0
    actual: float = 0.0
    policy: float = 0.0
    oracle: float = 0.0
    #: the oracle over the requests the policy served (a blocked request costs the policy nothing)
    oracle_served: float = 0.0
    blocked: int = 0
    downgraded: int = 0
    unpriced: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "actual_usd": self.actual, "policy_usd": self.policy,
                "oracle_usd": self.oracle, "oracle_served_usd": self.oracle_served, "blocked": self.blocked, "downgraded": self.downgraded,
                "unpriced": self.unpriced}


@dataclass
class WhatIfResult:
    policy_source: str
    history_source: str
    totals: Totals = field(default_factory=Totals)
    by: dict[str, dict[str, Totals]] = field(default_factory=dict)  # dimension -> value -> totals
    blocked: dict[tuple[str, str], int] = field(default_factory=dict)  # (budget or reason, whose) -> requests
    downgraded: dict[tuple[str, str], int] = field(default_factory=dict)
    blocked_examples: list[dict[str, Any]] = field(default_factory=list)
    unpriced: dict[str, int] = field(default_factory=dict)  # reason -> requests
    unpriced_examples: list[dict[str, Any]] = field(default_factory=list)
    biggest: list[dict[str, Any]] = field(default_factory=list)
    moved: dict[tuple[str, str], int] = field(default_factory=dict)  # (model paid for, model the policy picked)
    skipped_failed: int = 0
    first: float | None = None
    last: float | None = None
    elapsed_s: float = 0.0
    deployments: dict[str, list[str]] = field(default_factory=dict)
    prices: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return self.totals.requests + self.totals.unpriced

    def as_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy_source, "history": self.history_source,
            "period": {"first": iso(self.first) if self.first is not None else None,
                       "last": iso(self.last) if self.last is not None else None},
            "totals": self.totals.as_dict(),
            **{f"by_{dim}": {k: t.as_dict() for k, t in sorted(v.items())} for dim, v in self.by.items()},
            "blocked": [{"by": b, "whose": w, "requests": n} for (b, w), n in sorted(self.blocked.items())],
            "blocked_examples": self.blocked_examples,
            "downgraded": [{"by": b, "whose": w, "requests": n} for (b, w), n in sorted(self.downgraded.items())],
            "moved": [{"paid_for": a, "policy_picked": b, "requests": n} for (a, b), n in sorted(self.moved.items())],
            "unpriced": {"requests": self.totals.unpriced, "by_reason": dict(self.unpriced), "listed": self.unpriced_examples},
            "biggest_differences": self.biggest,
            "deployments": self.deployments, "prices": self.prices,
            "elapsed_s": self.elapsed_s,
        }


DIMENSIONS = ("day", "team", "key", "group", "model")


def _whose(row: HistoryRow) -> str:
    ids = (row.team, row.key, row.user)
    found = _WHOSE.get(ids)
    if found is None:
        parts = [f"team {row.team}" if row.team else None, f"key {row.key}" if row.key else None,
                 f"user {row.user}" if row.user else None]
        if len(_WHOSE) >= _PRICE_CACHE:
            _WHOSE.clear()
        found = _WHOSE[ids] = ", ".join(p for p in parts if p) or "(no team, key or user)"
    return found


#: who a row is, in words, by (team, key, user): said for every blocked or downgraded row (bounded)
_WHOSE: dict[tuple[str | None, str | None, str | None], str] = {}


def replay(
    policy: Any,
    rows: Iterable[HistoryRow],
    *,
    history_source: str = "<history>",
    candidates_by_group: Mapping[str, Sequence[Any]] | None = None,
    seen_deployments: Iterable[tuple[str, str, str | None]] = (),
    top: int = DEFAULT_TOP,
    progress: bool = False,
    ledger: Any = None,
) -> WhatIfResult:
    """Replay ``rows`` (in time order) through ``policy`` (a path or a loaded Policy).

    ``candidates_by_group``: the deployments (a LiteLLM config's model list); without it, each
    group's deployments are the models the policy's route names plus ``seen_deployments``
    ((group, model, deployment id) the history used) and any model a row names that neither had.
    ``ledger``: what the budgets are counted on (default: a fresh ``stores.ledger.memory.ReplayLedger``;
    the tests pass the plain memory ledger to show both give the same answer).

    The objects that exist before the replay are left out of the garbage collector's passes
    while it runs (``_old_objects_frozen``)."""
    with _old_objects_frozen():
        return _replay(policy, rows, history_source=history_source, candidates_by_group=candidates_by_group,
                       seen_deployments=seen_deployments, top=top, progress=progress, ledger=ledger)


@contextlib.contextmanager
def _old_objects_frozen() -> Iterator[None]:
    """``gc.freeze()`` for the length of a replay, ``gc.unfreeze()`` after it, and the young
    generation collected every ``_YOUNG`` allocations (not 700) meanwhile.

    Why: a million rows made about fifteen full collections, and a full one walks every object the
    process holds: LiteLLM's model map and the rest, about 380,000 objects, 0.16 s each. Frozen, the
    objects that were there before the replay are not walked; those the replay makes are collected
    as usual. A row lives for a few batches (read ahead, then replayed): collected every 700
    allocations, the rows waiting in the read-ahead queue were promoted to the older generations and
    walked there again. The collector's time in a million-row replay with a block budget: 2.6 s
    before, 0.65 s so (CPU seconds, gc.callbacks). Nothing is done when the collector is off or
    something else has frozen objects (it may mean them to stay frozen: a process about to fork).
    A cycle among the old objects that becomes garbage during the replay is collected after it."""
    if not gc.isenabled() or gc.get_freeze_count():
        yield
        return
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(max(thresholds[0], _YOUNG), *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


#: the young generation's threshold during a replay (``_old_objects_frozen``)
_YOUNG = 10_000


def _replay(
    policy: Any,
    rows: Iterable[HistoryRow],
    *,
    history_source: str,
    candidates_by_group: Mapping[str, Sequence[Any]] | None,
    seen_deployments: Iterable[tuple[str, str, str | None]],
    top: int,
    progress: bool,
    ledger: Any,
) -> WhatIfResult:
    from litellm_payg.adapter.deployments import candidates_named_by_policy
    from litellm_payg.core.errors import BudgetRefused, NoDeploymentLeft
    from litellm_payg.policy.load import Policy, load_policy
    from litellm_payg.runtime.engine import Engine
    from litellm_payg.runtime import store_access
    from litellm_payg.runtime.lifecycle import Lifecycle
    from litellm_payg.stores.prices import candidate_from_deployment

    loaded: Policy = policy if isinstance(policy, Policy) else load_policy(policy)
    clock = _Clock(0.0)
    engine = Engine(loaded, ledger=ledger if ledger is not None else _ReplayLedger.make(), clock=clock)
    from_config = candidates_by_group is not None
    cands: dict[str, list[Any]] = {g: list(cs) for g, cs in (candidates_by_group or {}).items()}
    if not from_config:
        for g, cs in candidates_named_by_policy(engine).items():
            cands[g] = list(cs)
    by_id: dict[str, dict[str, Any]] = {g: {c.deployment_id: c for c in cs} for g, cs in cands.items()}
    by_model: dict[str, dict[str, Any]] = {g: {c.model: c for c in cs} for g, cs in cands.items()}
    pricer = HistoryPricer([c for cs in cands.values() for c in cs], loaded.models)
    scopes = store_access.scopes(engine)  # a history row's declared request attributes (org...) reach RouteRequest.attrs
    door_filled = scopes.door_filled()

    def add_seen(group: str, model: str, dep: str | None) -> Any:
        known = by_model.setdefault(group, {}).get(model)
        if known is not None:
            return known
        c = candidate_from_deployment({"model_name": group, "litellm_params": {"model": model},
                                       "model_info": {"id": model}}, loaded.models)
        cands.setdefault(group, []).append(c)
        by_model[group][model] = c
        by_id.setdefault(group, {})[model] = c
        pricer.add(c)
        return c

    if not from_config:
        for g, m, d in seen_deployments:
            add_seen(g, m, d)

    lifecycle = Lifecycle(engine, rng=_Identity())  # type: ignore[arg-type]
    expected_out = engine.expected_output_tokens(None)
    result = WhatIfResult(policy_source=loaded.source or "<policy>", history_source=history_source)
    by = result.by = {d: {} for d in DIMENSIONS}
    dims = tuple(by[d] for d in DIMENSIONS)  # in the order of DIMENSIONS: day, team, key, group, model
    totals = result.totals
    biggest: list[tuple[float, int, dict[str, Any]]] = []
    order_cache: dict[tuple[str, str], list[Any]] = {}
    #: quality bars by group and prompt tokens, for routes without ``when:`` (the bar is the prompt size's)
    conditioned = {g: any(rule.context.when is not None for rule in rules) for g, rules in engine.routes.items()}
    bars: dict[str, dict[int, float | None]] = {}
    eligible_cache: dict[tuple[str, int, float | None], list[Any]] = {}
    day_names: dict[int, str] = {}
    bar_progress = _Progress(None, progress, verb="replaying")
    began = time.perf_counter()
    n = 0

    def unpriced(row: HistoryRow, reason: str) -> None:
        totals.unpriced += 1
        result.unpriced[reason] = result.unpriced.get(reason, 0) + 1
        if len(result.unpriced_examples) < LISTED:
            result.unpriced_examples.append({"request_id": row.request_id, "time": iso(row.ts), "group": row.group,
                                             "model": row.model, "spend_usd": row.spend_usd, "reason": reason})

    # looked up once, not on every row
    make_request = _request_maker()
    pick, succeeded, released = lifecycle.pick, lifecycle.succeeded, lifecycle.released
    charge_all, charge_one = pricer.charge_all, pricer.charge
    door_names = tuple(kind.name for kind in door_filled)
    request_fields = scopes.request_fields
    blocked_counts, downgraded_counts, moved = result.blocked, result.downgraded, result.moved
    #: the five Totals a row adds to (its day, team, key, group and model), by those values: a busy
    #: history repeats a few thousand combinations, and one lookup replaces five (bounded)
    combos: dict[tuple, tuple[Totals, Totals, Totals, Totals, Totals]] = {}
    day_n, day_start, day_end = 0, 0.0, 0.0  # the day (days since the epoch) the last row fell in, and its bounds

    for row in rows:
        n += 1
        if not n & 0x3FFF:
            bar_progress.update(n)
        ts = row.ts
        if result.first is None:
            result.first = ts
        result.last = ts
        if row.status not in ("success", ""):
            result.skipped_failed += 1
            continue
        prompt = row.prompt_tokens
        if prompt is None or row.completion_tokens is None or prompt + row.completion_tokens <= 0:  # not row.has_usage
            unpriced(row, "no usage recorded (prompt and completion tokens unknown)")
            continue
        group, model = row.group, row.model
        if not from_config and model not in by_model.get(group, ()):
            add_seen(group, model, row.deployment)
        group_cands = cands.get(group)
        if not group_cands:
            unpriced(row, f"no deployment for model group {group!r} in the config")
            continue
        actual = by_id[group].get(row.deployment or "") or by_model[group].get(model)
        order_key = (group, actual.deployment_id if actual else "")
        ordered = order_cache.get(order_key)
        if ordered is None:  # the deployment that served it first: what the Router's shuffle gave
            # one CandidateSet per order: what the rules work out from the candidates alone is kept in
            # its memo, as the adapter's set is on a live group's every pick
            ordered = CandidateSet([actual] + [c for c in group_cands if c is not actual] if actual else group_cands)
            order_cache[order_key] = ordered
        clock.now = ts
        attrs: dict[str, Any] = {}
        for name in door_names:
            v = getattr(row, name, None)
            if v is not None:
                attrs = request_fields({k: x for k in door_names if (x := getattr(row, k, None)) is not None}).get("attrs", {})
                break
        request = make_request(group, prompt, expected_out, row.user, row.team, row.key, row.tags, row.end_user,
                               row.session, row.request_id, attrs)
        # the oracle: the cheapest deployment (at this request's real tokens) meeting the policy's bar;
        # a route without ``when:`` sets a bar from the prompt's size alone, so it is kept per size
        if conditioned.get(group, False):
            bar = _quality_bar(engine, request)
        else:
            by_size = bars.get(group)
            if by_size is None:
                by_size = bars[group] = {}
            bar = by_size.get(prompt, _NO_BAR)
            if bar is _NO_BAR:
                if len(by_size) >= _PRICE_CACHE:
                    by_size.clear()
                bar = by_size[prompt] = _quality_bar(engine, request)
        eligible_key = (group, len(group_cands), bar)
        eligible = eligible_cache.get(eligible_key)
        if eligible is None:
            eligible = eligible_cache[eligible_key] = [
                c for c in group_cands if bar is None or (c.quality is not None and c.quality >= bar)]
        oracle = None
        priced = charge_all(eligible, row)
        for v in priced.values():
            if v is not None and (oracle is None or v < oracle):
                oracle = v
        rid = f"whatif-{n}"
        policy_cost = 0.0
        blocked_by = None
        downgraded_by: set[str] | None = None
        picked_model = None
        try:
            picked = pick(request, ordered, rid)
        except BudgetRefused as exc:
            blocked_by = exc.budget or "budget"
            # its traceback holds the frames that raised it, and they hold it: a cycle per blocked row
            # for the garbage collector, unless broken here (nothing reads the traceback)
            exc.__traceback__ = None
        except NoDeploymentLeft as exc:
            blocked_by = "no deployment left"
            exc.__traceback__ = None
        else:
            chosen = picked.candidate
            dep = chosen.deployment_id
            charge = priced.get(dep, _NOT_PRICED)
            if charge is _NOT_PRICED:
                charge = charge_one(chosen, row)
            if charge is None:
                released(rid)
                unpriced(row, f"the policy picked {chosen.model}, which has no price")
                continue
            succeeded(picked, dep, charge)
            policy_cost = charge
            picked_model = chosen.model
            decided = picked.decided
            if decided is not None:
                for d in decided.dropped:
                    if d.by == "budget":
                        if downgraded_by is None:
                            downgraded_by = set()
                        downgraded_by.add(d.budget or "budget")
            skipped = picked.admission.skipped
            if skipped:
                if downgraded_by is None:
                    downgraded_by = set()
                for d in skipped:
                    downgraded_by.add(d.budget or "budget")
        whose = _whose(row) if blocked_by is not None or downgraded_by else ""
        if blocked_by is not None:
            totals.blocked += 1
            k = (blocked_by, whose)
            blocked_counts[k] = blocked_counts.get(k, 0) + 1
            if len(result.blocked_examples) < LISTED:
                result.blocked_examples.append({"request_id": row.request_id, "time": iso(ts), "by": blocked_by,
                                                "whose": whose, "spend_usd": row.spend_usd})
        if downgraded_by:
            totals.downgraded += 1
            for b in downgraded_by:
                k = (b, whose)
                downgraded_counts[k] = downgraded_counts.get(k, 0) + 1
        if picked_model is not None and picked_model != model:
            mk = (model, picked_model)
            moved[mk] = moved.get(mk, 0) + 1
        oracle_cost = oracle if oracle is not None else policy_cost
        spend = row.spend_usd
        if not day_start <= ts < day_end:  # int(ts // 86400), worked out when the row leaves the last one's day
            day_n = int(ts // 86400)
            day_start, day_end = day_n * 86400.0, (day_n + 1) * 86400.0
        team, key = row.team, row.key
        combo_key = (day_n, team, key, group, model)
        five = combos.get(combo_key)
        if five is None:
            day = day_names.get(day_n)
            if day is None:
                day = day_names[day_n] = iso(day_n * 86400.0)[:10]
            found = []
            for values, value in zip(dims, (day, team or "-", key or "-", group, model)):
                t = values.get(value)
                if t is None:
                    t = values[value] = Totals()
                found.append(t)
            if len(combos) >= _PRICE_CACHE:
                combos.clear()
            five = combos[combo_key] = tuple(found)  # type: ignore[assignment]
        # each of the five in turn, in the order of DIMENSIONS, with the same float additions as one
        # Totals per value would get row by row
        served = blocked_by is None
        for t in five:
            t.requests += 1
            t.actual += spend
            t.policy += policy_cost
            t.oracle += oracle_cost
            if served:
                t.oracle_served += oracle_cost
            else:
                t.blocked += 1
            if downgraded_by:
                t.downgraded += 1
        totals.requests += 1
        totals.actual += spend
        totals.policy += policy_cost
        totals.oracle += oracle_cost
        if served:
            totals.oracle_served += oracle_cost
        diff = policy_cost - spend
        if top and (len(biggest) < top or abs(diff) > biggest[0][0]):
            item = (abs(diff), n, {"request_id": row.request_id, "time": iso(ts), "group": group,
                                   "whose": whose or _whose(row), "paid_model": model, "paid_usd": spend,
                                   "policy_model": picked_model or f"blocked ({blocked_by})",
                                   "policy_usd": policy_cost, "difference_usd": diff})
            if len(biggest) < top:
                heapq.heappush(biggest, item)
            else:
                heapq.heapreplace(biggest, item)
    for dim, v in by.items():
        for t in v.values():  # per-row sums in float: round off the 1e-17s of a long sum of small numbers
            t.actual, t.policy, t.oracle, t.oracle_served = (
                round(x, 12) for x in (t.actual, t.policy, t.oracle, t.oracle_served))
    totals.actual, totals.policy, totals.oracle, totals.oracle_served = (
        round(x, 12) for x in (totals.actual, totals.policy, totals.oracle, totals.oracle_served))
    result.unpriced.update({"failed in history (not replayed)": result.skipped_failed} if result.skipped_failed else {})
    result.biggest = [d for _, _, d in sorted(biggest, key=lambda x: (-x[0], x[1]))]
    result.elapsed_s = time.perf_counter() - began
    bar_progress.update(n, final=True)
    result.deployments = {g: [f"{c.model} ({c.deployment_id})" if c.model != c.deployment_id else c.model for c in cs]
                          for g, cs in sorted(cands.items())}
    result.prices = [
        {"group": g, "deployment": c.deployment_id, "model": c.model, "quality": c.quality,
         "usd_per_1m": None if (r := pricer.rates(c)) is None else
         {"input": r[0] * 1e6, "output": r[1] * 1e6, "cache_read": r[2] * 1e6, "cache_write": r[3] * 1e6},
         "source": pricer.source.get(c.deployment_id)}
        for g, cs in sorted(cands.items()) for c in cs
    ]
    store_access.close_spend(engine)
    return result


def _request_maker() -> Any:
    """``make(group, prompt_tokens, output_tokens, user, team, api_key, tags, end_user, session,
    trace_id, attrs)``: the ``RouteRequest`` its constructor builds from these (every other field at
    its default), without the keyword processing: a copy of a default request's fields, then the
    row's (about 1 us less a row; ``tests/test_whatif.py`` compares the two). A mutable default
    (``metadata``) is a copy of its own in each request, as the constructor's."""
    from litellm_payg.core.decision import RouteRequest

    template = dict(vars(RouteRequest("", 0, 0)))
    given = ("group", "prompt_tokens", "output_tokens", "user", "team", "api_key", "tags", "end_user", "session",
             "trace_id", "attrs")
    missing = [k for k in given if k not in template]
    if missing:  # a field renamed: fail here, not with a request missing it
        raise AssertionError(f"RouteRequest has no field(s) {missing}")
    fresh = tuple(k for k, v in template.items() if k not in given and isinstance(v, (dict, list, set)))
    new = object.__new__

    def make(group: str, prompt_tokens: int, output_tokens: int, user: str | None, team: str | None,
             api_key: str | None, tags: tuple[str, ...], end_user: str | None, session: str | None,
             trace_id: str | None, attrs: dict[str, str]) -> Any:
        request = new(RouteRequest)
        d = request.__dict__
        d.update(template)
        d["group"] = group
        d["prompt_tokens"] = prompt_tokens
        d["output_tokens"] = output_tokens
        d["user"] = user
        d["team"] = team
        d["api_key"] = api_key
        d["tags"] = tags
        d["end_user"] = end_user
        d["session"] = session
        d["trace_id"] = trace_id
        d["attrs"] = attrs
        for k in fresh:
            d[k] = template[k].copy()
        return request

    return make


def _quality_bar(engine: Any, request: Any) -> float | None:
    """The highest quality bar the rules applying to this request set (``simulate.quality_bar``).
    Not cached: it depends on the request's size and fields, which rarely repeat in real traffic."""
    route = engine.routes.get(request.group)
    if not route:
        return None
    bars = [rule.bar_for(request.prompt_tokens) for rule in engine.rules_for(request, route) if hasattr(rule, "bar_for")]
    return max(bars) if bars else None


# -- sources ------------------------------------------------------------------------------------


@dataclass
class Source:
    """Where the history comes from: its rows (streamed) and the deployments it used."""

    label: str
    rows: Iterator[HistoryRow]
    deployments: list[tuple[str, str, str | None]]


def open_source(source: str, filters: Filters, with_deployments: bool = True) -> Source:
    """A history source from ``--from``: a Postgres URL (LiteLLM's spend logs), a ledger URL
    (``sqlite://``, ``redis://``, ``rediss://``) or a JSONL file."""
    from litellm_payg.tools import whatif_postgres

    scheme = source.split("://", 1)[0] if "://" in source else ""
    if whatif_postgres.is_postgres_url(source):
        deps = whatif_postgres.deployments_in(source, filters) if with_deployments else []
        return Source(whatif_postgres.redact(source), whatif_postgres.read_spend_logs(source, filters), deps)
    if scheme in ("sqlite", "redis", "rediss", "memory"):
        return Source(source, read_ledger(source, filters), [])
    if scheme:
        raise WhatIfInputError(f"--from {source!r}: unknown scheme {scheme!r}; expected postgresql:// (LiteLLM's spend logs), "
                               "sqlite:// or redis:// (the plugin's ledger), or a JSONL file")
    if not Path(source).is_file():
        raise WhatIfInputError(f"--from {source}: no such file (expected a JSONL export, or a postgresql://, sqlite:// or redis:// URL)")
    if with_deployments:
        # one pass for the deployments (only when there is no config), one for the replay: the file is never held
        deps = sorted({(r.group, r.model, r.deployment) for r in read_jsonl(source, filters)}, key=str)
    else:
        deps = []
    return Source(source, read_jsonl(source, filters), deps)


# -- output -------------------------------------------------------------------------------------


def _ratio(a: float, b: float) -> str:
    return f"{(a - b) / b * 100:+.1f}%" if b > 0 else "-"


def format_table(result: WhatIfResult, top: int = DEFAULT_TOP) -> str:
    t = result.totals
    out = [f"litellm-payg what-if: {result.policy_source} on {result.history_source}",
           f"{result.rows:,} requests from {iso(result.first) if result.first else '-'} to {iso(result.last) if result.last else '-'}"
           f" ({t.requests:,} replayed, {t.unpriced:,} not priced"
           + (f", {result.skipped_failed:,} failed in history and passed over" if result.skipped_failed else "") + ")", ""]
    header = f"{'':<28} {'requests':>10} {'paid':>16} {'policy':>16} {'change':>9} {'oracle':>16}"
    out += [header, "-" * len(header),
            f"{'total':<28} {t.requests:>10,} {usd(t.actual):>16} {usd(t.policy):>16} {_ratio(t.policy, t.actual):>9} {usd(t.oracle):>16}"]
    if t.blocked:
        out.append(f"{'  served by the policy':<28} {t.requests - t.blocked:>10,} {'':>16} {usd(t.policy):>16} {'':>9} "
                   f"{usd(t.oracle_served):>16}  (the oracle over the requests the policy did not block)")
    out.append("")
    for dim in DIMENSIONS:
        values = result.by.get(dim) or {}
        out.append(f"per {dim}:")
        for name, v in sorted(values.items()) if dim == "day" else sorted(values.items(), key=lambda kv: -kv[1].actual)[:50]:
            out.append(f"  {name[:26]:<26} {v.requests:>10,} {usd(v.actual):>16} {usd(v.policy):>16} "
                       f"{_ratio(v.policy, v.actual):>9} {usd(v.oracle):>16}")
        out.append("")
    out.append(f"Blocked by the policy: {t.blocked:,} request(s); downgraded: {t.downgraded:,}")
    for (b, w), n in sorted(result.blocked.items(), key=lambda kv: -kv[1]):
        out.append(f"  blocked by {b!r}: {n:,} of {w}")
    for (b, w), n in sorted(result.downgraded.items(), key=lambda kv: -kv[1]):
        out.append(f"  downgraded by {b!r}: {n:,} of {w}")
    if result.moved:
        out.append("Moved by the policy (model paid for -> model the policy picks):")
        for (a, b), n in sorted(result.moved.items(), key=lambda kv: -kv[1]):
            out.append(f"  {a} -> {b}: {n:,}")
    out.append("")
    out.append(f"Not priced: {t.unpriced:,} request(s) (listed, not guessed)")
    for reason, n in sorted(result.unpriced.items()):
        out.append(f"  {reason}: {n:,}")
    for e in result.unpriced_examples[:top]:
        out.append(f"    {e['request_id']} at {e['time']} ({e['group']}, {e['model']}, paid {usd(e['spend_usd'])}): {e['reason']}")
    out.append("")
    out.append(f"Biggest single differences (policy - paid), top {len(result.biggest)}:")
    for d in result.biggest:
        out.append(f"  {d['request_id']} at {d['time']} [{d['group']}, {d['whose']}]: paid {usd(d['paid_usd'])} on {d['paid_model']}, "
                   f"policy {usd(d['policy_usd'])} on {d['policy_model']} ({'+' if d['difference_usd'] >= 0 else ''}{usd(d['difference_usd'])})")
    out.append("")
    out.append("Deployments: " + "; ".join(f"{g}: {', '.join(ds)}" for g, ds in result.deployments.items()))
    out.append("paid = the spend the history recorded; policy = the recorded tokens (cache reads/writes included) at the price "
               "of the deployment the policy picks (LiteLLM's cost_per_token); oracle = per request the cheapest deployment "
               "meeting the policy's quality bar (a lower bound)")
    out.append(f"replayed {result.rows:,} rows in {result.elapsed_s:.1f} s ({result.rows / max(result.elapsed_s, 1e-9):,.0f} rows/s)")
    return "\n".join(out)


def write_csv(result: WhatIfResult, path: str) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["section", "name", "requests", "paid_usd", "policy_usd", "oracle_usd", "blocked", "downgraded"])
    t = result.totals
    w.writerow(["total", "", t.requests, f"{t.actual:.10f}", f"{t.policy:.10f}", f"{t.oracle:.10f}", t.blocked, t.downgraded])
    for dim in DIMENSIONS:
        for name, v in sorted(result.by.get(dim, {}).items()):
            w.writerow([dim, name, v.requests, f"{v.actual:.10f}", f"{v.policy:.10f}", f"{v.oracle:.10f}", v.blocked, v.downgraded])
    for (b, who), n in sorted(result.blocked.items()):
        w.writerow(["blocked", f"{b}: {who}", n, "", "", "", n, ""])
    for (b, who), n in sorted(result.downgraded.items()):
        w.writerow(["downgraded", f"{b}: {who}", n, "", "", "", "", n])
    for reason, n in sorted(result.unpriced.items()):
        w.writerow(["unpriced", reason, n, "", "", "", "", ""])
    Path(path).write_text(buf.getvalue(), encoding="utf-8")


def daily_chart_svg(days: Mapping[str, Totals], width: int = 1000, height: int = 320) -> str:
    """Daily cost, paid vs policy (vs oracle): one line each, with a dot per day (a single day is
    three dots, not three invisible one-point lines), inline SVG, no script."""
    from html import escape

    names = sorted(days)
    left, right, top, bottom = 80, 20, 20, 60
    pw, ph = width - left - right, height - top - bottom
    vmax = max([max(d.actual, d.policy, d.oracle) for d in days.values()] + [1e-12])
    step = pw / max(1, len(names) - 1)
    x0 = left + (pw / 2 if len(names) == 1 else 0)

    def xy(i: int, v: float) -> str:
        return f"{x0 + i * step:.1f},{top + ph - v / vmax * ph:.1f}"

    parts = [f'<svg id="chart-daily" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">',
             f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="#888"/>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="#888"/>']
    for k in range(5):
        v = vmax * k / 4
        y = top + ph - ph * k / 4
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{escape(usd(v))}</text>')
    series = (("paid", "actual", "#d62728"), ("policy", "policy", "#1f77b4"), ("oracle", "oracle", "#2ca02c"))
    for label, attr, colour in series:
        pts = " ".join(xy(i, getattr(days[d], attr)) for i, d in enumerate(names))
        parts.append(f'<polyline class="series-{label}" fill="none" stroke="{colour}" stroke-width="2" points="{pts}"/>')
        for i, d in enumerate(names):
            x, y = xy(i, getattr(days[d], attr)).split(",")
            parts.append(f'<circle class="point point-{label}" cx="{x}" cy="{y}" r="3" fill="{colour}">'
                         f'<title>{escape(d)} {label}: {escape(usd(getattr(days[d], attr)))}</title></circle>')
    for i, d in enumerate(names):
        if len(names) <= 16 or i % max(1, len(names) // 10) == 0:
            parts.append(f'<text x="{x0 + i * step:.1f}" y="{top + ph + 16}" text-anchor="middle" font-size="10">{escape(d[5:])}</text>')
    for j, (label, _, colour) in enumerate(series):
        parts.append(f'<rect x="{left + j * 110}" y="{height - 22}" width="12" height="12" fill="{colour}"/>'
                     f'<text x="{left + j * 110 + 16}" y="{height - 12}" font-size="12">{label}</text>')
    parts.append("</svg>")
    return "".join(parts)


def write_html(result: WhatIfResult, path: str) -> None:
    from html import escape

    from litellm_payg.tools.report import html_page, html_table

    t = result.totals

    def rows_of(dim: str) -> list[list[str]]:
        items = result.by.get(dim, {}).items()
        ordered = sorted(items) if dim == "day" else sorted(items, key=lambda kv: -kv[1].actual)
        return [[k, f"{v.requests:,}", usd(v.actual), usd(v.policy), _ratio(v.policy, v.actual), usd(v.oracle),
                 f"{v.blocked:,}", f"{v.downgraded:,}"] for k, v in ordered]

    head = ["", "requests", "paid", "policy", "change", "oracle", "blocked", "downgraded"]
    body = [
        f"<h1>What-if: {escape(Path(result.policy_source).name)} on {escape(result.history_source)}</h1>",
        f"<p>{result.rows:,} requests, {t.requests:,} replayed, {t.unpriced:,} not priced. "
        f"Paid {escape(usd(t.actual))}; the policy would have paid {escape(usd(t.policy))} ({_ratio(t.policy, t.actual)}); "
        f"oracle {escape(usd(t.oracle))}.</p>",
        "<h2>Daily cost: paid vs policy</h2>", daily_chart_svg(result.by.get("day", {})),
        *(f"<h2>Per {dim}</h2>" + html_table(head, rows_of(dim)) for dim in DIMENSIONS),
        "<h2>Blocked and downgraded</h2>",
        html_table(["what", "budget", "whose", "requests"],
                   [["blocked", b, w, f"{n:,}"] for (b, w), n in sorted(result.blocked.items())]
                   + [["downgraded", b, w, f"{n:,}"] for (b, w), n in sorted(result.downgraded.items())] or [["(none)", "", "", "0"]]),
        "<h2>Not priced</h2>",
        html_table(["reason", "requests"], [[r, f"{n:,}"] for r, n in sorted(result.unpriced.items())] or [["(none)", "0"]]),
        "<h2>Biggest single differences</h2>",
        html_table(["request", "time", "whose", "paid", "on", "policy", "on"],
                   [[d["request_id"], d["time"], d["whose"], usd(d["paid_usd"]), d["paid_model"], usd(d["policy_usd"]),
                     d["policy_model"]] for d in result.biggest]),
    ]
    Path(path).write_text(html_page("litellm-payg what-if", "\n".join(body)), encoding="utf-8")


# -- CLI ----------------------------------------------------------------------------------------


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("what-if", help="replay your own traffic (LiteLLM's spend logs, the ledger, JSONL) through a policy")
    p.add_argument("policy", metavar="POLICY")
    p.add_argument("--from", dest="source", required=True, metavar="SOURCE",
                   help="postgresql://... (the proxy's DATABASE_URL: LiteLLM_SpendLogs), sqlite:///... or redis://... "
                        "(the plugin's ledger), or a JSONL file")
    p.add_argument("--config", help="a LiteLLM config.yaml whose model_list gives the deployments (default: the models "
                                    "the policy names plus those the history used)")
    p.add_argument("--since", help="ISO time: only requests that started at or after it")
    p.add_argument("--until", help="ISO time: only requests that started before it")
    p.add_argument("--team", help="only this team's requests")
    p.add_argument("--key", help="only this key's requests (the hashed key, as LiteLLM logs it)")
    p.add_argument("--model-group", help="only this model group's requests")
    p.add_argument("--tag", help="only requests with this tag")
    p.add_argument("--top", type=int, default=DEFAULT_TOP, help=f"biggest differences to list (default {DEFAULT_TOP})")
    p.add_argument("--csv", metavar="FILE", help="also write the figures as CSV")
    p.add_argument("--html", metavar="FILE", help="also write a self-contained HTML report with the daily chart")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--export-jsonl", metavar="FILE", help="also write the history read (after the filters) as JSONL")
    p.add_argument("--progress", action="store_true", help="show progress even when stderr is not a terminal")
    p.set_defaults(func=run)
    return p


def _tee(rows: Iterator[HistoryRow], out: Any) -> Iterator[HistoryRow]:
    for row in rows:
        out.write(json.dumps(row.as_json(), separators=(",", ":")) + "\n")
        yield row


def run(args: argparse.Namespace) -> int:
    import litellm

    filters = Filters(
        since=parse_time(args.since, "--since") if args.since else None,
        until=parse_time(args.until, "--until") if args.until else None,
        team=args.team, key=args.key, group=args.model_group, tag=args.tag,
    )
    if args.top < 0:
        raise WhatIfInputError("--top must be >= 0")
    # LiteLLM prints its provider list to stdout for a model it cannot place (a deployment of your own):
    # that would break --json, and the row says what it could not price anyway
    quiet, litellm.suppress_debug_info = litellm.suppress_debug_info, True
    try:
        return _run(args, filters)
    finally:
        litellm.suppress_debug_info = quiet


def _run(args: argparse.Namespace, filters: Filters) -> int:
    from litellm_payg.adapter.deployments import candidates_from_config
    from litellm_payg.policy.load import load_policy

    policy = load_policy(args.policy)
    by_group = candidates_from_config(args.config, policy) if args.config else None
    source = open_source(args.source, filters, with_deployments=by_group is None)
    rows: Iterator[HistoryRow] = source.rows
    export = open(args.export_jsonl, "w", encoding="utf-8") if args.export_jsonl else None  # noqa: SIM115
    try:
        if export is not None:
            rows = _tee(rows, export)
        result = replay(policy, rows, history_source=source.label, candidates_by_group=by_group,
                        seen_deployments=source.deployments, top=args.top, progress=args.progress or sys.stderr.isatty())
    finally:
        if export is not None:
            export.close()
    if args.csv:
        write_csv(result, args.csv)
    if args.html:
        write_html(result, args.html)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        print(format_table(result, args.top))
    return 0


__all__ = ["HistoryPricer", "WhatIfResult", "open_source", "replay", "usd", "add_parser", "run"]
