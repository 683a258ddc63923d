"""``quality_floor``: the cheapest deployment whose quality is at least a bar.

::

    models:
      deepseek/deepseek-chat: {quality: 0.80}
      mistral/mistral-large-latest: {quality: 0.90}
    routes:
      chat:
        - quality_floor: {min_quality: 0.85}

A bar can depend on the request's size: ``tiers`` lists ``{up_to_prompt_tokens: N, min_quality: Q}``
entries; the first tier whose ``up_to_prompt_tokens`` is at least the request's prompt tokens sets
the bar, and ``min_quality`` applies above every tier (short FAQ-style requests can go to a cheap
model while long ones need a capable one)::

        - quality_floor:
            min_quality: 0.85
            tiers: [{up_to_prompt_tokens: 500, min_quality: 0.6}]

Quality scores come from the policy's ``models:`` section. A request may *raise* the bar through its
metadata (``metadata={"payg_hints": {"min_quality": 0.9}}``), never lower it. Kept candidates are
ordered cheapest first for this request, so the next-cheapest is the fallback. The bar holds when a
run budget's downgrade step is in force too (see ``core/runs.downgrade``), unless the entry says
``keep_past_downgrade: false``: a step the policy lets a run's downgrade take below its bar.

**Measured quality** (``measured:``): the bar is judged on the evidence the policy's ``quality:``
section keeps (validators, feedback), per deployment and class, instead of the declared number::

        - quality_floor:
            min_quality: 0.85
            measured: {metric: valid, explore_usd: 0.05, explore_window_s: 3600}

A candidate whose *lower* confidence bound clears the bar qualifies; one whose upper bound is below
it is dropped; one whose interval still straddles the bar is *unsure*. Qualified candidates go
cheapest first; after them (and alone while none qualifies: thin evidence), the unsure ones whose
declared quality and estimate both meet the bar, cheapest first, as the declared mode would.
**Exploration**: an unsure candidate cheaper than the pick is tried first (``attrs.quality_explore``;
its estimated cost is charged to the route's window by the built-in ``payg_decision`` observer)
while the window's exploration spend stays within ``explore_usd`` times the candidate's chance of
clearing the bar (so a promising newcomer gets most of the budget, a model already measured near
the bottom a sliver); the most promising such candidate is tried. Exploration stops by itself for
a candidate once its interval no longer straddles the bar. A model added to the group without a
declared quality starts unsure, so it earns its way in (or out) on evidence alone. Forgetting
(``quality.half_life_s``) widens an unused candidate's interval again over time; a drop detector per
cell (``quality.drop_false_alarm_rate``, ``core/drop_detector.py``) makes a candidate whose rate
fell to the bar forget its evidence from before the drop within tens of answers.
"""

from __future__ import annotations

import math

from pydantic import Field, field_validator

from litellm_payg import hookimpl
from litellm_payg.core.bounds import MAX_USD, Score, Seconds, Tokens
from litellm_payg.core.decision import Step, memo_of
from litellm_payg.core.price_order import PriceOrder
from litellm_payg.core.quality import class_of, verdict
from litellm_payg.rules import Rule, RuleOptions


class Tier(RuleOptions):
    up_to_prompt_tokens: Tokens
    min_quality: Score


class MeasuredOptions(RuleOptions):
    #: the metric judged (one of ``quality.metrics``; default the validators' ``valid``)
    metric: str = "valid"
    #: dollars per route per window that exploration may spend on unsure candidates (0: none)
    explore_usd: float = Field(0.0, ge=0, le=MAX_USD)
    explore_window_s: Seconds = 3600


class QualityFloorOptions(RuleOptions):
    min_quality: Score
    #: judge the bar on measured quality (see the module's docstring); None: the declared scores
    measured: MeasuredOptions | None = None
    tiers: list[Tier] = Field(default_factory=list)
    #: a run budget's ``downgrade`` step sets the route's rules aside but never takes the requests
    #: this rule applies to below this rule's bar (a ``plan`` step that must stay capable), unless
    #: the policy says so for this step: ``false``
    keep_past_downgrade: bool = True

    @field_validator("tiers")
    @classmethod
    def _ascending(cls, tiers: list[Tier]) -> list[Tier]:
        sizes = [t.up_to_prompt_tokens for t in tiers]
        if sizes != sorted(set(sizes)):
            raise ValueError("tiers must be in ascending, distinct up_to_prompt_tokens order")
        return tiers


class QualityFloor(Rule):
    name = "quality_floor"
    Options = QualityFloorOptions
    needs_prices = True
    reads_snapshot = True

    def __init__(self, options, context):
        super().__init__(options, context)
        # drop reasons by (quality, bar): the same few strings on every pick, formatted once
        self._reasons: dict[tuple[float, float], str] = {}
        #: the decision's note by bar, formatted once too
        self._notes: dict[float, str] = {}

    def _below(self, quality: float, bar: float) -> str:
        reason = self._reasons.get((quality, bar))
        if reason is None:
            if len(self._reasons) > 10_000:
                self._reasons.clear()
            reason = self._reasons[(quality, bar)] = f"quality {quality:g} is below the bar {bar:g}"
        return reason

    def tier_of(self, prompt_tokens: int) -> int:
        """The index of the tier a prompt size falls in (``len(tiers)``: above every tier)."""
        for i, tier in enumerate(self.options.tiers):
            if prompt_tokens <= tier.up_to_prompt_tokens:
                return i
        return len(self.options.tiers)

    def bar_for(self, prompt_tokens: int) -> float:
        i = self.tier_of(prompt_tokens)
        return self.options.tiers[i].min_quality if i < len(self.options.tiers) else self.options.min_quality

    def apply(self, request, candidates, snapshot=None):
        view = getattr(snapshot, "quality", None)
        if self.options.measured is not None and view is not None:
            return self._measured(request, candidates, view)
        memo = memo_of(candidates)
        if memo is not None:  # a group's candidate set: what depends on it alone is worked out once
            step = self._planned(request, candidates, memo)
            if step is not None:
                return step
        p, ordered = self._size_for(request, candidates)
        bar = self._bar(request, p)
        o = request.output_tokens
        kept, dropped = self._split(candidates, bar)
        if ordered is None:
            ordered = sorted(kept, key=lambda c: c.estimate_usd(p, o))
        return Step(ordered, dropped, self._note(bar))

    def _split(self, candidates, bar: float) -> tuple[list, list]:
        """The candidates that clear ``bar`` (in their order), and a drop for each that does not: no
        quality score in the policy, or a score below the bar."""
        kept, dropped = [], []
        for c in candidates:
            if c.quality is None:
                dropped.append(Step.drop(c, f"no quality score for {c.model} in the policy's models:", self.name))
            elif c.quality < bar:
                dropped.append(Step.drop(c, self._below(c.quality, bar), self.name))
            else:
                kept.append(c)
        return kept, dropped

    def _note(self, bar: float) -> str:
        note = self._notes.get(bar)
        if note is None:
            if len(self._notes) > 10_000:
                self._notes.clear()
            note = self._notes[bar] = f"quality_floor: bar {bar:g}, cheapest first"
        return note

    def _planned(self, request, candidates, memo) -> Step | None:
        """:meth:`apply`'s step from what is remembered of a candidate set (:meth:`_plan`): the
        same drops and the same order, by the same steps (the bound first, the count if the bound
        cannot decide), without sorting where the order of the set is known for the size. None when
        a kept candidate has no price (the plain path then says so)."""
        o = request.output_tokens
        bounds = request.prompt_range()
        if bounds is not None and bounds[0] != bounds[1]:
            lo, hi = bounds
            if self.tier_of(lo) == self.tier_of(hi):
                bar = self._bar(request, lo)
                dropped, order = self._plan(candidates, memo, bar, o)
                if order is not None and not order.crosses(lo, hi):  # crossing inside: the size matters, count
                    ordered = order.at(lo, hi)
                    if ordered is None:  # a crossing near an end: sort at both ends, as _size_for does
                        kept = order.candidates
                        at_hi = sorted(kept, key=lambda c: hi * c.input_usd_per_token + o * c.output_usd_per_token)
                        if sorted(kept, key=lambda c: lo * c.input_usd_per_token + o * c.output_usd_per_token) == at_hi:
                            ordered = at_hi
                    if ordered is not None:
                        return Step(list(ordered), list(dropped), self._note(bar))
        p = request.prompt_tokens
        bar = self._bar(request, p)
        dropped, order = self._plan(candidates, memo, bar, o)
        if order is None:
            return None
        ordered = order.at(p, p)
        if ordered is None:
            ordered = sorted(order.candidates, key=lambda c: c.estimate_usd(p, o))
        return Step(list(ordered), list(dropped), self._note(bar))

    def _plan(self, candidates, memo, bar: float, o: int) -> tuple[tuple, PriceOrder | None]:
        """What :meth:`apply` works out from the candidates, the bar and the output size alone: the
        drops (in the candidates' order) and the kept candidates' :class:`PriceOrder` (None when one
        of them has no price). Kept in the set's memo, per rule, bar and output size."""
        key = (self, bar, o)
        plan = memo.get(key)
        if plan is None:
            kept, dropped = self._split(candidates, bar)
            priced = all(c.input_usd_per_token is not None and c.output_usd_per_token is not None for c in kept)
            plan = (tuple(dropped), PriceOrder(kept, o) if priced else None)
            if len(memo) >= 512:  # bars (hints) and output sizes (max_tokens) vary: bounded
                memo.clear()
            memo[key] = plan
        return plan

    def _measured(self, request, candidates, view):
        """The bar judged on each candidate's lower confidence bound (see the module docstring)."""
        opts = self.options.measured
        p, o = request.prompt_tokens, request.output_tokens
        bar = self._bar(request, p)
        cls = class_of(request, view.class_by)
        meets, unsure, dropped, seen, bounds = [], [], [], [], {}
        for c in candidates:
            est = view.estimate(c.deployment_id, c.quality, cls, opts.metric)
            judged = verdict(est, bar)
            seen.append(f"{c.deployment_id} {est.mean:.3f} [{est.lo:.3f}, {est.hi:.3f}] n={est.n} {judged}")
            bounds[c.deployment_id] = _judged_on(judged, est, bar, opts.metric)
            if judged == "below":
                dropped.append(Step.drop(c, f"measured {opts.metric} {est.mean:.3f}, upper bound {est.hi:.3f} "
                                            f"(n={est.n}) is below the bar {bar:g}", self.name))
            elif judged == "meets":
                meets.append((c.estimate_usd(p, o), c))
            else:
                unsure.append((c.estimate_usd(p, o), c, est))
        meets.sort(key=lambda ec: ec[0])
        unsure.sort(key=lambda ec: ec[0])
        declared = [(e, c) for e, c, est in unsure if est.mean >= bar and c.quality is not None and c.quality >= bar]
        ordered = [c for _, c in meets] + [c for _, c in declared]
        attrs = {}
        head = meets[0][0] if meets else (declared[0][0] if declared else math.inf)
        # an unsure candidate cheaper than the pick may be tried while the window's spend stays within
        # its share of the budget: the budget times its chance of clearing the bar, so a promising
        # newcomer gets most of it and a model already shown near-hopeless only a sliver
        spent = view.explore_spent_usd
        eligible = [(est.chance_above(bar), -e, c) for e, c, est in unsure
                    if e < head and spent + e <= opts.explore_usd * est.chance_above(bar)]
        explored = max(eligible, key=lambda t: (t[0], t[1]))[2] if eligible else None
        if explored is not None:
            ordered = [explored] + [c for c in ordered if c is not explored]
            attrs["quality_explore"] = explored.deployment_id
        kept = set(id(c) for c in ordered)
        for _, c, _ in unsure:
            if id(c) not in kept:
                dropped.append(Step.drop(c, f"measured {opts.metric} not yet shown to clear the bar {bar:g} "
                                            "(its interval straddles it; no exploration budget or not cheaper)", self.name))
        how = "lower bounds" if meets else "declared quality (evidence still thin)"
        note = (f"quality_floor: bar {bar:g} on measured {opts.metric}{' class ' + cls if cls else ''}, judged on {how}"
                + (f"; exploring {explored.deployment_id}" if explored is not None else "") + "; " + "; ".join(seen))
        return Step(ordered, dropped, note, attrs, bounds)

    def _bar(self, request, prompt_tokens: int) -> float:
        bar = self.bar_for(prompt_tokens)
        if request.min_quality is not None and request.min_quality > bar:
            bar = request.min_quality
        return bar

    def _size_for(self, request, candidates) -> tuple[int, list | None]:
        """The prompt size to decide with, and the kept candidates' order when it is already known:
        the request's count (order None: sorted by the caller), or, when the bar and the
        cheapest-first order come out the same for every size the prompt may have
        (``request.prompt_range()``: up to a bound known without counting), the bound itself and
        that order, so the prompt is not counted.

        Why that is exact: the sort is stable, so ``a`` comes before ``b`` at size ``p`` when
        ``a``'s estimate minus ``b``'s is below zero at ``p`` (at most zero if ``a`` came first). That
        difference is linear in ``p``: if it has that sign at both ends of the range, it has it
        everywhere between. So when the sorted order is the same at both ends, it is the order at the
        real size, ties included."""
        bounds = request.prompt_range()
        if bounds is None or bounds[0] == bounds[1]:
            return request.prompt_tokens, None
        lo, hi = bounds
        if self.tier_of(lo) != self.tier_of(hi):  # tiers are intervals: one tier at both ends, one in between
            return request.prompt_tokens, None
        bar = self._bar(request, lo)
        o = request.output_tokens
        kept = [c for c in candidates if c.quality is not None and c.quality >= bar]
        if not all(c.input_usd_per_token is not None and c.output_usd_per_token is not None for c in kept):
            return request.prompt_tokens, None
        at_hi = sorted(kept, key=lambda c: hi * c.input_usd_per_token + o * c.output_usd_per_token)
        if sorted(kept, key=lambda c: lo * c.input_usd_per_token + o * c.output_usd_per_token) != at_hi:
            return request.prompt_tokens, None
        return hi, at_hi


def _judged_on(judged: str, est, bar: float, metric: str) -> str:
    """The bound a candidate was judged on, in words (``explain`` prints it beside its verdict)."""
    measured = f"(measured {metric} {est.mean:.3f}, n={est.n})"
    if judged == "meets":
        return f"lower bound {est.lo:.3f} clears the bar {bar:g} {measured}"
    if judged == "below":
        return f"upper bound {est.hi:.3f} is below the bar {bar:g} {measured}"
    return f"interval [{est.lo:.3f}, {est.hi:.3f}] straddles the bar {bar:g} {measured}"



@hookimpl
def payg_register_rules(register):
    register(QualityFloor)
