"""The runtime's half of measured quality: record evidence, read it into a decision's view.

:class:`QualityControl` owns the evidence store (``stores/evidence.py``, on the policy's ledger URL,
so replicas share it), writes every observation to it (what ``payg_answer_checked`` plugins say of
an answer, feedback, a judge) and
hands the engine a :class:`~litellm_payg.core.quality.QualityView` per route for its ``Snapshot``,
cached for ``quality.refresh_s`` of the engine's clock (a decision never waits on more than one
read per route per refresh). Exploration spend is counted here too: per route, per window, charged
for each pick ``quality_floor`` made to explore when the engine hands that pick to its observers.
The plugins' hooks get values (the decision, the answer's verdict) and return evidence; only this
runtime writes the store.

Each observation on a route with a measured ``quality_floor`` on its metric is also a step of the
cell's drop detector (``core/drop_detector.py``), tested against that route's bars with the
observed deployment's declared quality as the estimate's prior; the store moves it in the same
atomic step as the tally, and an alarm is logged.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from litellm_payg.core.drop_detector import DropTest, Observed, Watch, prior_counts, threshold_for
from litellm_payg.core.quality import Evidence, QualityView, Tally, check_value, z_for
from litellm_payg.stores.evidence import EvidenceError, EvidenceStore, cell_key, open_evidence, split_key

logger = logging.getLogger("litellm_payg")


class FeedbackRefused(ValueError):
    """Feedback that changes nothing: ``status`` is the HTTP status the proxy answers with (404 for
    an id this key did not get, 422 for a metric or value the policy does not take, 409 for a second
    rating of the same answer on the same metric)."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class QualityControl:
    def __init__(self, policy: Any, url: str | EvidenceStore, clock: Callable[[], float],
                 explore_windows: Mapping[str, float] | None = None) -> None:
        self.settings = policy.quality
        self._policy = policy
        self.clock = clock
        self._url = url
        self._store: EvidenceStore | None = url if isinstance(url, EvidenceStore) else None
        self._z = z_for(self.settings.confidence)
        #: routes whose rules judge measured quality, and each one's exploration window (seconds)
        self.explore_windows: dict[str, float] = dict(explore_windows or {})
        self._views: dict[str, tuple[float, QualityView]] = {}
        self._lock = threading.Lock()
        rate = getattr(self.settings, "drop_false_alarm_rate", None)
        #: the drop detectors' threshold (None: no detection)
        self._threshold = None if rate is None else threshold_for(rate)
        #: the bars a drop is tested against, per (route, metric): its measured quality_floors'
        self.bars: dict[tuple[str, str], tuple[float, ...]] = _measured_bars(policy)

    @property
    def store(self) -> EvidenceStore:
        if self._store is None:
            with self._lock:
                if self._store is None:
                    self._store = open_evidence(str(self._url), self.clock)
        return self._store

    @property
    def collecting(self) -> bool:
        """Whether answers' verdicts are kept as evidence: the policy has a ``quality:`` section or a
        rule that judges on evidence (otherwise a policy with ``validate:`` pays no store write)."""
        return bool(self.explore_windows) or bool(getattr(self._policy, "quality_configured", False))

    def measured(self, group: str) -> bool:
        """Whether a decision for ``group`` reads evidence (a ``quality_floor`` with ``measured``)."""
        return group in self.explore_windows

    def class_of(self, request: Any) -> str:
        from litellm_payg.core.quality import class_of

        return class_of(request, self.settings.class_by)

    # -- writing --------------------------------------------------------------------------------

    def record(self, group: str, deployment_id: str, metric: str, value: Any, *, cls: str = "",
               now: float | None = None, **attrs: Any) -> Tally:
        """Add one observation of ``metric`` (checked against its kind) for a deployment of a
        route; ``attrs`` (model, source, request id, arm, cost...) go to the evidence log."""
        kind = self.settings.kind(metric)
        number = check_value(kind, value)
        record = dict(attrs, deployment_id=deployment_id, cls=cls, metric=metric)
        key, now = cell_key(deployment_id, cls, metric), self.clock() if now is None else now
        test = self.drop_test(group, metric, kind, attrs.get("model"), deployment_id)
        if test is None:  # nothing judges this metric on a bar here (or detection is off): the tally alone
            out = Observed(self.store.add(group, key, number, self.settings.half_life_s, now=now, record=record), Watch())
        else:
            out = self.store.observe(group, key, number, self.settings.half_life_s, now=now, record=record, test=test)
        with self._lock:
            self._views.pop(group, None)  # this replica sees its own evidence at once
        if out.alarm:
            logger.warning("litellm-payg quality: %s's %s on route %r%s dropped toward the bar: its evidence from "
                           "before the change is forgotten (%d answers kept, alarm %d)", deployment_id, metric, group,
                           f" class {cls!r}" if cls else "", out.tally.n, out.watch.alarms)
        return out.tally

    def record_answer(self, request: Any, candidate: Any, evidence: Iterable[Evidence]) -> None:
        """Record what the ``payg_answer_checked`` plugins said of one answer, for the deployment
        (``candidate``) that gave it, in ``request``'s class, when the policy collects evidence
        (:attr:`collecting`). Something that cannot be recorded (not an :class:`Evidence`, a metric
        the policy does not take, a store that cannot be written) is logged, never raised: evidence
        is worth less than the request."""
        if not self.collecting:
            return
        cls: str | None = None
        for item in evidence:
            source = getattr(item, "source", None) or "plugin"
            try:
                if not isinstance(item, Evidence):
                    raise TypeError(f"payg_answer_checked returned {item!r}; expected litellm_payg.core.quality.Evidence")
                cls = self.class_of(request) if cls is None else cls
                self.record(candidate.group, candidate.deployment_id, item.metric, item.value, cls=cls,
                            model=candidate.model, source=source, trace_id=request.trace_id)
            except Exception as exc:  # noqa: BLE001 - evidence must never fail a request
                logger.warning("litellm-payg quality: could not record %s evidence: %s", source, exc)

    def charge_explored(self, decision: Any) -> None:
        """Charge a pick ``quality_floor`` made to explore (``decision.attrs["quality_explore"]`` is
        the deployment it chose to try) with its estimated cost to its route's exploration window.
        Called by the engine with every pick it gives its observers (``Engine.observe``); logged,
        never raised: it runs on the request path."""
        explored = decision.attrs.get("quality_explore") if decision.attrs else None
        chosen = decision.chosen
        if explored is None or chosen is None or chosen.deployment_id != explored or not chosen.priced:
            return
        request = decision.request
        try:
            self.charge_exploration(chosen.group, chosen.estimate_usd(request.prompt_tokens, request.output_tokens))
        except Exception as exc:  # noqa: BLE001 - must not raise on the request path
            logger.warning("litellm-payg quality: could not charge exploration: %s", exc)

    def drop_test(self, group: str, metric: str, kind: str, model: Any = None,
                  deployment_id: str | None = None) -> DropTest | None:
        """How an observation of ``metric`` on ``group`` moves its cell's drop detector: against
        the route's bars, with the declared quality of the deployment (its ``models:`` entry, found
        by deployment id, model or bare model name, as its candidate's) as the estimate's prior, as
        a decision computes it; None when nothing judges it on a bar or detection is off."""
        bars = self.bars.get((group, metric))
        if self._threshold is None or not bars:
            return None
        declared = getattr(_facts(self._policy.models, model, deployment_id), "quality", None)
        prior = declared if declared is not None and 0.0 <= declared <= 1.0 else None
        a0, b0 = prior_counts(kind, prior, self.settings.prior_weight)
        return DropTest(bars, self._threshold, a0, b0)

    def explore_key(self, group: str, now: float) -> tuple[str, float]:
        """The counter of ``group``'s current exploration window, and the seconds left in it."""
        window = self.explore_windows.get(group) or 3600.0
        index = math.floor(now / window)
        return f"explore{chr(31)}{group}{chr(31)}{int(window)}{chr(31)}{index}", (index + 1) * window - now

    def charge_exploration(self, group: str, usd: float, now: float | None = None) -> float:
        now = self.clock() if now is None else now
        key, left = self.explore_key(group, now)
        with self._lock:
            cached = self._views.get(group)
            if cached is not None:  # count it in the cached view too: no overspend between refreshes
                at, view = cached
                self._views[group] = (at, _with_spent(view, view.explore_spent_usd + usd))
        return self.store.spend(key, usd, max(left, 1.0))

    # -- feedback ---------------------------------------------------------------------------------

    def remember_answer(self, response_id: str, attrs: Mapping[str, Any]) -> None:
        """Keep the plugin's own record of an answer (route, deployment, model, the authenticated
        key, class, cost, split arm) under the response id its caller got."""
        self.store.remember(_answer_key(response_id), attrs, self.settings.feedback_ttl_s, now=self.clock())

    def feedback(self, response_id: str, metric: str, value: Any, api_key: str | None = None) -> Tally:
        """Record a rating of one answer. Which route and deployment it counts for comes from the
        plugin's record of the answer, never from the caller. ``api_key`` (the proxy's
        authenticated key): only the key that made the request may rate it. Raises
        :class:`FeedbackRefused` and changes nothing when the id is unknown (or another key's), the
        metric or value is not one the policy takes, or the answer was already rated on it."""
        if not isinstance(response_id, str) or not response_id or len(response_id) > 500:
            raise FeedbackRefused("response_id must be the id of a response this key received", 404)
        try:
            kind = self.settings.kind(metric) if isinstance(metric, str) else self.settings.kind(str(metric))
            number = check_value(kind, value)
        except ValueError as e:
            raise FeedbackRefused(str(e), 422) from None
        record = self.store.recall(_answer_key(response_id), now=self.clock())
        if record is None or (api_key is not None and record.get("api_key") != api_key):
            raise FeedbackRefused(f"no answer with response id {response_id!r} for this key (or it is older than "
                                  f"quality.feedback_ttl_s)", 404)
        rated = _answer_key(response_id) + chr(31) + metric
        # one atomic claim, not a read then a write: two ratings arriving at once (two threads, two
        # replicas on one Redis) cannot both see "not rated yet"
        if not self.store.claim(rated, {"value": number}, self.settings.feedback_ttl_s, now=self.clock()):
            raise FeedbackRefused(f"response {response_id!r} was already rated on {metric!r}", 409)
        try:
            return self.record(record["group"], record["deployment_id"], metric, number, cls=record.get("cls", ""),
                               model=record.get("model"), source="feedback", request_id=response_id,
                               cost_usd=record.get("cost_usd"), arm=record.get("arm"))
        except BaseException:
            self.store.release(rated)  # not recorded: the same rating may be sent again
            raise

    # -- reading --------------------------------------------------------------------------------

    def view(self, group: str, now: float) -> QualityView | None:
        """The route's evidence as a decision sees it (cached ``refresh_s``); None when the store
        cannot be read (the rule then falls back to the declared quality)."""
        with self._lock:
            cached = self._views.get(group)
        if cached is not None and now - cached[0] < self.settings.refresh_s and now >= cached[0]:
            return cached[1]
        try:
            raw = self.store.tallies(group)
            spent = self.store.spent(self.explore_key(group, now)[0])
        except EvidenceError as e:
            logger.warning("litellm-payg quality: evidence store unavailable, declared quality used: %s", e)
            return None
        h = self.settings.half_life_s
        tallies = {split_key(k): t.at(now, h) for k, t in raw.items()}
        view = QualityView(now, tallies, dict(self.settings.metrics), self.settings.prior_weight, self._z,
                           self.settings.class_by, spent)
        with self._lock:
            self._views[group] = (now, view)
        return view

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


def _facts(models: Mapping[str, Any], model: Any, deployment_id: str | None) -> Any:
    """The ``models:`` entry a deployment's candidate takes its declared quality from: the first of
    its deployment id, model string and bare model name the policy names (``stores.prices.facts_for``)."""
    refs = [deployment_id] if deployment_id else []
    if isinstance(model, str) and model:
        refs += [model] + ([model.split("/", 1)[1]] if "/" in model else [])
    return next((models[r] for r in refs if r in models), None)


def _measured_bars(policy: Any) -> dict[tuple[str, str], tuple[float, ...]]:
    """Every bar a measured ``quality_floor`` judges on, per (route, metric): its ``min_quality``
    and its tiers', ascending."""
    bars: dict[tuple[str, str], set[float]] = {}
    for group, specs in (getattr(policy, "routes", None) or {}).items():
        for spec in specs:
            measured = getattr(spec.options, "measured", None) if spec.name == "quality_floor" else None
            if measured is None:
                continue
            found = bars.setdefault((group, measured.metric), set())
            found.add(float(spec.options.min_quality))
            found.update(float(t.min_quality) for t in spec.options.tiers)
    return {key: tuple(sorted(b)) for key, b in bars.items()}


def _with_spent(view: QualityView, spent: float) -> QualityView:
    from dataclasses import replace

    return replace(view, explore_spent_usd=spent)


def _answer_key(response_id: str) -> str:
    return "answer" + chr(31) + response_id
