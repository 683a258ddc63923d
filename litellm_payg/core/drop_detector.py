"""Noticing a cell's quality drop within tens of answers: Page's one-sided CUSUM. Pure math.

Forgetting by half-life (``core/quality.py``) notices a model that degraded only as its old good
answers fade: with a long half-life, hundreds or thousands of answers after the drop. A drop
detector per cell watches every answer instead. Each moves a statistic

    S <- max(0, S + x·ln(p1/p0) + (1 - x)·ln((1 - p1)/(1 - p0)))

the log-likelihood ratio of "the pass rate is now ``p1``" against "it is ``p0``", for an answer
``x`` (1 passed, 0 failed). ``p0`` is the cell's estimate before the answer (its posterior mean,
the declared quality as its prior); ``p1`` is the route's bar (the highest bar below ``p0``: a cell
already at or below every bar is not tested, ``S`` stays 0). At the estimate ``S`` drifts down and
keeps coming back to 0; once the rate has fallen to the bar or below, it climbs. ``S >= h`` is an
**alarm**. Under "no change", ``exp(S)`` is the CUSUM of a likelihood ratio with mean 1, so an
alarm comes at most once per ``e^h`` answers on average (Lorden; Wald's bound on each run): the
threshold of a false alarm rate ``r`` per answer is ``h = ln(1/r)`` (:func:`threshold_for`).
A drop from 0.95 to 0.70 against a bar of 0.85 adds 0.25 an answer on average: ``h = ln(10^6)``
(13.8) is reached in about 55 answers.

On an alarm the cell keeps only the evidence since ``S`` last left 0 (the change point's estimate,
:attr:`Watch.since`) and forgets the rest: its interval, held narrow by the old good answers, now
stands on what the model does since the drop, so its bound falls below the bar and routing moves
away; exploration decides whether it comes back.

A score in [0, 1] goes through the same formula, ``x`` weighting the two terms: ``exp`` of the
step is convex in ``x``, so at mean ``p0`` its mean is still at most 1 and the bound holds.
Nothing here imports a store; the stores apply :func:`observe` in one atomic step with the tally.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from litellm_payg.core.quality import UNIFORM, Tally

#: how close to 1 an estimate is taken (a cell that never failed, without a prior, is not certain)
MAX_BASELINE = 1.0 - 1e-6


@dataclass(frozen=True, slots=True)
class DropTest:
    """How one cell's answers are tested: against the route's ``bars`` (ascending), alarming at
    ``threshold``, with the estimate's prior as ``a0`` passes and ``b0`` failures."""

    bars: tuple[float, ...]
    threshold: float
    a0: float
    b0: float

    def bar_below(self, p0: float) -> float | None:
        """The bar a drop from ``p0`` is tested against: the highest bar below it, or None."""
        below = [b for b in self.bars if 0 < b < p0]
        return max(below) if below else None


@dataclass(frozen=True, slots=True)
class Watch:
    """A cell's detector: the statistic ``stat``, the evidence ``since`` it last left 0, how many
    ``alarms`` it raised (the last at ``alarm_t``) and how many answers they ``forgot`` in all."""

    stat: float = 0.0
    since: Tally = field(default_factory=Tally)
    alarms: int = 0
    alarm_t: float | None = None
    forgot: int = 0

    def as_list(self) -> list:
        """The stores' encoding (JSON): ``[stat, [t, w, s, ss, n], alarms, alarm_t, forgot]``."""
        s = self.since
        return [self.stat, [s.t, s.w, s.s, s.ss, s.n], self.alarms, self.alarm_t, self.forgot]

    @classmethod
    def from_list(cls, raw: Sequence) -> "Watch":
        stat, (t, w, s, ss, n), alarms, alarm_t, forgot = raw
        return cls(float(stat), Tally(float(t), float(w), float(s), float(ss), int(n)), int(alarms),
                   None if alarm_t is None else float(alarm_t), int(forgot))


class Observed(NamedTuple):
    """A cell after one answer: its tally, its detector, and whether this answer raised an alarm."""

    tally: Tally
    watch: Watch
    alarm: bool = False


def threshold_for(false_alarm_rate: float) -> float:
    """``h = ln(1/r)``: at the estimate, at most one false alarm per ``1/r`` answers on average."""
    if not 0 < false_alarm_rate < 1:
        raise ValueError(f"a false alarm rate is in (0, 1), got {false_alarm_rate!r}")
    return -math.log(false_alarm_rate)


def prior_counts(kind: str, prior: float | None, prior_weight: float) -> tuple[float, float]:
    """The pseudo passes and failures a cell's estimate starts from, as ``core.quality`` computes
    it (a pass rate: its Beta prior; a score: ``prior_weight`` answers at the declared quality)."""
    if kind == "pass":
        if prior is not None and prior_weight > 0:
            a0, b0 = prior * prior_weight, (1 - prior) * prior_weight
            if min(a0, b0) < 0.5:
                a0, b0 = a0 + 0.5, b0 + 0.5
            return a0, b0
        return UNIFORM, UNIFORM
    if prior is not None and prior_weight > 0:
        return prior * prior_weight, (1 - prior) * prior_weight
    return 0.0, 0.0


def baseline(tally: Tally, a0: float, b0: float) -> float | None:
    """The cell's estimate ``p0`` (None without evidence or prior)."""
    total = a0 + b0 + tally.w
    if total <= 0:
        return None
    return min(MAX_BASELINE, max(0.0, (a0 + tally.s) / total))


def step(value: float, p0: float, p1: float) -> float:
    """The log-likelihood ratio of one answer ``value``: rate ``p1`` against rate ``p0``."""
    return value * math.log(p1 / p0) + (1 - value) * math.log((1 - p1) / (1 - p0))


def observe(tally: Tally, watch: Watch, value: float, now: float, half_life_s: float | None,
            test: DropTest | None) -> Observed:
    """The cell after one more answer ``value`` at ``now``: the tally with it, the statistic moved
    (unless ``test`` is None: no detection), and on an alarm the tally cut back to ``since``."""
    after = tally.add(value, now, half_life_s)
    if test is None:
        return Observed(after, watch)
    p0 = baseline(tally.at(now, half_life_s) if now >= tally.t else tally, test.a0, test.b0)
    p1 = None if p0 is None else test.bar_below(p0)
    stat = 0.0 if p1 is None else max(0.0, watch.stat + step(value, p0, p1))  # type: ignore[arg-type]
    if stat <= 0:
        return Observed(after, Watch(0.0, Tally(now), watch.alarms, watch.alarm_t, watch.forgot))
    since = watch.since.add(value, now, half_life_s)
    if stat < test.threshold:
        return Observed(after, Watch(stat, since, watch.alarms, watch.alarm_t, watch.forgot))
    return Observed(since, Watch(0.0, Tally(now), watch.alarms + 1, now, watch.forgot + after.n - since.n), True)


__all__ = ["DropTest", "Observed", "Watch", "baseline", "observe", "prior_counts", "step", "threshold_for"]
