"""Prometheus metrics for litellm-payg, in the registry the LiteLLM proxy already serves.

Enable it by naming it in the policy (needs ``prometheus_client``, the ``metrics`` extra)::

    plugins: [litellm_payg.adapter.metrics]

The LiteLLM proxy serves ``/metrics`` from ``prometheus_client``'s default ``REGISTRY`` when its
``prometheus`` callback is on (``litellm/proxy/proxy_server.py``; in multiprocess mode it builds a
``MultiProcessCollector`` instead, which only sees metrics written to ``PROMETHEUS_MULTIPROC_DIR``).
These metrics are registered in that default registry, so the same scrape returns them:

* ``litellm_payg_requests_total{group,deployment,model,status}`` and
  ``litellm_payg_cost_usd_total{group,deployment,model}``: every attempt LiteLLM reported, with its
  real ``response_cost`` (the ``payg_outcome`` hook);
* ``litellm_payg_decisions_total{group,chosen}`` and ``litellm_payg_dropped_total{group,by}``: every
  routing decision and every candidate it dropped, by the rule or filter that dropped it
  (``payg_decision``);
* ``litellm_payg_budget_spend_usd``, ``..._reserved_usd``, ``..._limit_usd``, ``..._remaining_usd``
  ``{budget,scope,window,on_exceed}``: each budget's current window, read from the ledger at scrape
  time (one ``usage`` call per policy) for every scope value the process has routed for, and the
  global ones always;
* ``litellm_payg_breaker_state{deployment,state}`` (1 for the current state) when the policy has a
  health store (``engine.health``);
* ``litellm_payg_quality_estimate``, ``..._quality_lower_bound``, ``..._quality_answers``
  ``{group,deployment,class,metric}``: measured quality per route x deployment x class (the estimate,
  the lower bound routing judges on, the answers observed), read from the evidence store at scrape
  time (the engine's cached view, ``quality.refresh_s``) for every route the process has routed
  for, when the policy keeps evidence. A class is what a request says (``quality.class_by``), so
  its label is bounded: at most :data:`MAX_QUALITY_CLASSES` classes per route keep their own series
  (those with the most answers), the rest are merged into ``class="other"``, and each value is cut
  to 256 characters with a hash (``identity.bounded_label``); no class is ``class="*"``.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from datetime import datetime, timezone
from typing import Any

try:
    from prometheus_client import REGISTRY, Counter
    from prometheus_client.core import GaugeMetricFamily
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "litellm_payg.adapter.metrics needs prometheus_client: pip install 'litellm-payg[metrics]' (or prometheus_client)"
    ) from exc

from litellm_payg import hookimpl
from litellm_payg.runtime import store_access

logger = logging.getLogger("litellm_payg")

#: per route, at most this many classes get their own quality series; the rest are merged into "other"
MAX_QUALITY_CLASSES = 20
#: the class label of the merged series, and of evidence kept without a class
OTHER_CLASS, NO_CLASS = "other", "*"

#: at most this many distinct identities (group and every declared request attribute) are remembered per policy for
#: budget gauges; beyond it, new ones are not added (the counters are unaffected)
MAX_IDENTITIES = 10_000


def _counter(name: str, doc: str, labels: list[str]) -> Counter:
    existing = REGISTRY._names_to_collectors.get(name) or REGISTRY._names_to_collectors.get(name + "_total")
    if existing is not None:  # the module was re-imported (importlib.reload, a second import path)
        return existing  # type: ignore[return-value]
    return Counter(name, doc, labels)


REQUESTS = _counter("litellm_payg_requests", "Attempts LiteLLM reported for governed requests", ["group", "deployment", "model", "status"])
COST = _counter("litellm_payg_cost_usd", "Real cost (LiteLLM response_cost) of governed requests, USD", ["group", "deployment", "model"])
DECISIONS = _counter("litellm_payg_decisions", "Routing decisions made by litellm-payg", ["group", "chosen"])
DROPPED = _counter("litellm_payg_dropped", "Candidates dropped by a routing decision, by who dropped them", ["group", "by"])


class _Seen:
    """What one engine has routed for: identities and each group's candidates."""

    def __init__(self) -> None:
        self.identities: dict[tuple[Any, ...], Any] = {}  # identity key -> a bare RouteRequest
        self.candidates: dict[str, tuple[Any, ...]] = {}


_ENGINES: "weakref.WeakKeyDictionary[Any, _Seen]" = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


@hookimpl(tryfirst=True)
def payg_filter_candidates(request, candidates, engine):
    """Not a filter: learns which engine (policy) routes which identities, for the budget gauges.

    It takes the (deprecated) ``engine`` rather than the snapshot on purpose: the engine is only
    the key of a weak dict here, never read during the decision. The collector reads that engine's
    ledger and health store later, at scrape time, which a snapshot (a value of one moment) cannot
    give; keying on the engine also lets its entry go away with it."""
    seen = _ENGINES.get(engine)
    if seen is None:
        with _LOCK:
            seen = _ENGINES.setdefault(engine, _Seen())
    if request.group not in seen.candidates:
        seen.candidates[request.group] = tuple(candidates)
    # who the request is, by every request attribute the policy's scope kinds declare (no run: one
    # gauge per run would grow without bound); kept as a bare request the collector reads buckets for
    key = store_access.scopes(engine).identity_key(request)
    if key not in seen.identities and len(seen.identities) < MAX_IDENTITIES:
        seen.identities[key] = _bare(request)
    return None


def _bare(request):
    """``request`` with only what says who it is: no prompt (never counted here), no run, no metadata."""
    import dataclasses

    return dataclasses.replace(request, prompt_tokens=0, output_tokens=0, prompt_tokens_at_most=None, metadata={},
                               session=None, run=None, trace_id=None, prompt_hash=None, loop_marks=(), needs=None)


@hookimpl
def payg_decision(request, decision):
    chosen = decision.chosen
    DECISIONS.labels(request.group, chosen.deployment_id if chosen else "none").inc()
    for d in decision.dropped:
        DROPPED.labels(request.group, d.by).inc()


@hookimpl
def payg_outcome(outcome):
    labels = (outcome.group or "", outcome.deployment_id or "unknown", outcome.model or "unknown")
    REQUESTS.labels(*labels, "ok" if outcome.ok else "error").inc()
    if outcome.cost_usd:
        COST.labels(*labels).inc(outcome.cost_usd)


class BudgetCollector:
    """Reads every known policy's budgets from its ledger at scrape time."""

    def describe(self) -> list:
        return []  # nothing is collected at registration time

    def collect(self):
        from litellm_payg.core.decision import RouteRequest

        fams = {
            name: GaugeMetricFamily(f"litellm_payg_budget_{name}", doc, labels=["budget", "scope", "window", "on_exceed"])
            for name, doc in (
                ("spend_usd", "Spend charged in the budget's current window, USD"),
                ("reserved_usd", "In-flight reservations in the budget's current window, USD"),
                ("limit_usd", "The budget's limit, USD"),
                ("remaining_usd", "Limit minus spend minus in-flight reservations (>= 0), USD"),
            )
        }
        breaker = GaugeMetricFamily("litellm_payg_breaker_state", "Circuit breaker state per deployment (1 = current)", labels=["deployment", "state"])
        now = time.time()
        when = datetime.fromtimestamp(now, timezone.utc)
        with _LOCK:
            engines = list(_ENGINES.items())
        for engine, seen in engines:
            if store_access.has_budgets(engine):
                seen_requests = [(RouteRequest("", 0, 0), None)] + [
                    (request, c)
                    for request in list(seen.identities.values())
                    for c in seen.candidates.get(request.group, ())
                ]
                try:
                    usage = store_access.budget_usage(engine, seen_requests, now, when)
                except Exception as exc:  # a scrape must not fail because the ledger is down
                    logger.warning("litellm-payg metrics: cannot read budget usage: %s", exc)
                    usage = []
                for bb, u in usage:
                    key = bb.bucket.key
                    kind = bb.budget.scope.split(":", 1)[0]
                    labels = [
                        bb.budget.name or key.split("|", 1)[0],
                        "global" if kind == "global" else f"{kind}:{bb.scope_value}",
                        bb.budget.window,
                        bb.budget.on_exceed,
                    ]
                    limit = bb.budget.limit_usd
                    fams["spend_usd"].add_metric(labels, u.spent_usd)
                    fams["reserved_usd"].add_metric(labels, u.reserved_usd)
                    fams["limit_usd"].add_metric(labels, limit)
                    fams["remaining_usd"].add_metric(labels, max(0.0, limit - u.spent_usd - u.reserved_usd))
            ids = sorted({c.deployment_id for cs in seen.candidates.values() for c in cs})
            try:
                snap = store_access.breaker_states(engine, ids, now)
            except Exception as exc:
                logger.warning("litellm-payg metrics: cannot read breaker state: %s", exc)
                snap = {}
            for dep, h in sorted((snap or {}).items()):
                for state in ("closed", "open", "half_open"):
                    breaker.add_metric([dep, state], 1.0 if h.state == state else 0.0)
        yield from fams.values()
        yield breaker


def _quality_cells(view: Any) -> dict[tuple[str, str, str], Any]:
    """The view's tallies by (deployment, class label, metric), with classes past the route's
    :data:`MAX_QUALITY_CLASSES` busiest merged into ``other`` (a client chooses its class: the
    number of series must not be the client's to grow)."""
    from litellm_payg.core.identity import bounded_label
    from litellm_payg.core.quality import merge

    answers: dict[str, int] = {}
    for (_, cls, _), t in view.tallies.items():
        if cls:
            answers[cls] = answers.get(cls, 0) + t.n
    kept = set(sorted(answers, key=lambda c: (-answers[c], c))[:MAX_QUALITY_CLASSES])
    grouped: dict[tuple[str, str, str], list[Any]] = {}
    for (dep, cls, metric), t in view.tallies.items():
        label = NO_CLASS if not cls else (bounded_label(cls) if cls in kept else OTHER_CLASS)
        grouped.setdefault((dep, label, metric), []).append(t)
    return {key: ts[0] if len(ts) == 1 else merge(ts, view.now, None) for key, ts in grouped.items()}


class QualityCollector:
    """Reads every known policy's measured quality at scrape time (see the module docstring)."""

    def describe(self) -> list:
        return []

    def collect(self):
        from litellm_payg.core.quality import estimate

        labels = ["group", "deployment", "class", "metric"]
        fams = {
            "estimate": GaugeMetricFamily("litellm_payg_quality_estimate", "Measured quality estimate (declared quality as prior)", labels=labels),
            "lower_bound": GaugeMetricFamily("litellm_payg_quality_lower_bound", "Lower confidence bound of measured quality: what routing judges the bar on", labels=labels),
            "answers": GaugeMetricFamily("litellm_payg_quality_answers", "Answers observed (raw count, before forgetting)", labels=labels),
        }
        now = time.time()
        with _LOCK:
            engines = list(_ENGINES.items())
        for engine, seen in engines:
            quality = getattr(engine, "quality", None)
            if quality is None or not quality.collecting:
                continue
            for group, candidates in sorted(seen.candidates.items()):
                try:
                    view = quality.view(group, now)
                except Exception as exc:  # a scrape must not fail because the store is down
                    logger.warning("litellm-payg metrics: cannot read measured quality: %s", exc)
                    view = None
                if view is None:
                    continue
                declared = {c.deployment_id: c.quality for c in candidates}
                for (dep, cls, metric), tally in sorted(_quality_cells(view).items()):
                    prior = declared.get(dep)
                    prior = prior if prior is not None and 0.0 <= prior <= 1.0 else None
                    est = estimate(tally, view.kinds.get(metric, "pass"), prior, view.prior_weight, view.z)
                    values = [group, dep, cls, metric]
                    fams["estimate"].add_metric(values, est.mean)
                    fams["lower_bound"].add_metric(values, est.lo)
                    fams["answers"].add_metric(values, est.n)
        yield from fams.values()


COLLECTOR = BudgetCollector()
if not any(isinstance(c, BudgetCollector) for c in list(REGISTRY._collector_to_names)):
    REGISTRY.register(COLLECTOR)
QUALITY_COLLECTOR = QualityCollector()
if not any(isinstance(c, QualityCollector) for c in list(REGISTRY._collector_to_names)):
    REGISTRY.register(QUALITY_COLLECTOR)
