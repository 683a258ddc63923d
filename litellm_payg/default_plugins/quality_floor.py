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
import operator

from pydantic import Field, field_validator

from litellm_payg import hookimpl
from litellm_payg.core.bounds import MAX_USD, Score, Seconds, Tokens
from litellm_payg.core.decision import Candidate, Step
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
        #: the declared mode's answers (kept, dropped, note) for a counted prompt, by the candidates'
        #: identities, the prompt and output sizes and the request's own bar (``apply``)
        self._answers: dict[tuple, tuple] = {}
        self._answers_for = options

    def _below(self, quality: float, bar: float) -> str:
        reason = self._reasons.get((quality, bar))
        if reason is None:
            if len(self._reasons) > 10_000:
                self._reasons.clear()
            reason = self._reasons[(quality, bar)] = f"quality {quality:g} is below the bar {bar:g}"
        return reason

    def _limits(self) -> tuple[tuple[int, ...], tuple[float, ...]]:
        """The tiers' ``up_to_prompt_tokens`` and the bars (each tier's, then ``min_quality``), read
        off the options once (pydantic attribute reads on every decision cost more than the rule)."""
        options = self.options
        cached = self.__dict__.get("_limits_of")
        if cached is None or cached[0] is not options:  # the options are frozen; a rule given others reads them again
            cached = self._limits_of = (options, tuple(t.up_to_prompt_tokens for t in options.tiers),
                                        tuple(t.min_quality for t in options.tiers) + (options.min_quality,))
        return cached[1], cached[2]

    def tier_of(self, prompt_tokens: int) -> int:
        """The index of the tier a prompt size falls in (``len(tiers)``: above every tier)."""
        ups = self._limits()[0]
        for i, up in enumerate(ups):
            if prompt_tokens <= up:
                return i
        return len(ups)

    def bar_for(self, prompt_tokens: int) -> float:
        cached = self.__dict__.get("_limits_of")  # _limits(), without its call: read on every decision
        ups, bars = cached[1:] if cached is not None and cached[0] is self.options else self._limits()
        for i, up in enumerate(ups):
            if prompt_tokens <= up:
                return bars[i]
        return bars[-1]

    def apply(self, request, candidates, snapshot=None):
        if self.options.measured is not None:
            view = getattr(snapshot, "quality", None)
            if view is not None:
                return self._measured(request, candidates, view)
        counted = request.prompt_counted
        if counted:  # what _size_for concludes for a counted prompt, without its range
            p, ordered = request.prompt_tokens, None
            # the declared bar and the cheapest-first order are a function of these alone: a group's
            # candidates are the same objects on every decision and its prompt sizes repeat, so the
            # answer is remembered (frozen Candidates only, kept so no identity is reused; bounded),
            # and given back in lists of its own
            key = (tuple(map(id, candidates)), p, request.output_tokens, request.min_quality)
            answers = self._answers
            if self._answers_for is not self.options:  # other options: other answers
                answers.clear()
                self._answers_for = self.options
            found = answers.get(key)
            if found is not None:
                return Step(list(found[1]), list(found[2]), found[3])
        else:
            p, ordered = self._size_for(request, candidates)
        bar = self.bar_for(p)  # _bar, inlined
        if request.min_quality is not None and request.min_quality > bar:
            bar = request.min_quality
        o = request.output_tokens
        kept, dropped = [], []
        for c in candidates:
            q = c.quality
            if q is None:
                dropped.append(Step.drop(c, f"no quality score for {c.model} in the policy's models:", self.name))
            elif q < bar:
                dropped.append(Step.drop(c, self._below(q, bar), self.name))
            elif ordered is None:
                ip, op = c.input_usd_per_token, c.output_usd_per_token
                # Candidate.estimate_usd's arithmetic, inlined (once per candidate per decision); it
                # raises, saying which deployment, for one without a price
                kept.append((p * ip + o * op if ip is not None and op is not None else c.estimate_usd(p, o), c))
        if ordered is None:
            kept.sort(key=_first)
            ordered = [c for _, c in kept]
        note = self._notes.get(bar)
        if note is None:
            if len(self._notes) > 10_000:
                self._notes.clear()
            note = self._notes[bar] = f"quality_floor: bar {bar:g}, cheapest first"
        if counted and all(type(c) is Candidate for c in candidates):
            if len(answers) >= 20_000:
                answers.clear()
            answers[key] = (tuple(candidates), tuple(ordered), tuple(dropped), note)
        return Step(ordered, dropped, note)

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


_first = operator.itemgetter(0)


@hookimpl
def payg_register_rules(register):
    register(QualityFloor)
