"""Measured quality: what the evidence about one cell says, with its uncertainty. Pure math.

A *cell* is (route, deployment, class, metric): the class is what the policy's ``quality.class_by``
reads of a request (``metadata.step``, a tag), ``""`` when it reads nothing. Evidence about a cell is
kept as a :class:`Tally`: sums weighted by age, so that with a half-life ``h`` an observation ``h``
seconds old counts half as much as a new one. Forgetting is what lets a model that degrades be
noticed: its old good answers fade, and its interval widens again when nobody uses it.

Two kinds of metric, from the same tally (``w`` is the decayed count, ``s`` the decayed sum of
values, ``ss`` of their squares):

* a pass rate (every value 0 or 1): a Beta posterior, ``Beta(a0 + s, b0 + w - s)``;
* a score (any value in [0, 1]): its mean and the variance of that mean.

The policy's declared ``quality`` (``models:``) is a prior of ``prior_weight`` pseudo-observations:
it decides while evidence is thin and is outweighed as evidence comes in. The interval is
``mean ± z·sd`` (normal approximation, clipped to [0, 1]); routing judges a candidate on its lower
bound (:func:`verdict`). Nothing here imports LiteLLM or a store.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from statistics import NormalDist

#: the prior of a cell without a declared quality: Beta(1, 1), uniform
UNIFORM = 1.0


@dataclass(frozen=True, slots=True)
class Tally:
    """Age-weighted evidence of one cell, as of time ``t``: ``w`` observations' weight, ``s`` the
    weighted sum of values, ``ss`` of squares, ``n`` the raw count (never decayed, for display)."""

    t: float = 0.0
    w: float = 0.0
    s: float = 0.0
    ss: float = 0.0
    n: int = 0

    def at(self, now: float, half_life_s: float | None) -> "Tally":
        """The same evidence as seen at ``now``: every weight multiplied by ``0.5 ** (age / h)``."""
        f = decay(now - self.t, half_life_s)
        if f == 1.0:
            return Tally(max(now, self.t), self.w, self.s, self.ss, self.n)
        return Tally(now, self.w * f, self.s * f, self.ss * f, self.n)

    def add(self, value: float, now: float, half_life_s: float | None, weight: float = 1.0) -> "Tally":
        """With one more observation of ``value`` made at ``now`` (an older ``now`` than ``t``
        counts it at its age's weight, so replicas writing out of order agree)."""
        if now >= self.t:
            base = self.at(now, half_life_s)
            k = weight
        else:
            base = self
            k = weight * decay(self.t - now, half_life_s)
        return Tally(base.t, base.w + k, base.s + k * value, base.ss + k * value * value, self.n + 1)

    def __add__(self, other: "Tally") -> "Tally":
        raise TypeError("use merge(tallies, now, half_life_s): tallies of different ages do not add")


def decay(age_s: float, half_life_s: float | None) -> float:
    """The weight left to evidence ``age_s`` old (1 without a half-life: nothing is forgotten)."""
    if half_life_s is None or age_s <= 0:
        return 1.0
    return 0.5 ** (age_s / half_life_s)


def merge(tallies: Iterable[Tally], now: float, half_life_s: float | None) -> Tally:
    """Several cells' evidence as one (every class of a deployment), seen at ``now``."""
    w = s = ss = 0.0
    n = 0
    for t in tallies:
        at = t.at(now, half_life_s)
        w, s, ss, n = w + at.w, s + at.s, ss + at.ss, n + at.n
    return Tally(now, w, s, ss, n)


@dataclass(frozen=True, slots=True)
class Estimate:
    """A cell's quality: ``mean`` in [``lo``, ``hi``] at the chosen confidence, from ``n`` raw
    observations of effective weight ``weight`` (after forgetting) and the declared ``prior``."""

    mean: float
    lo: float
    hi: float
    n: int
    weight: float
    prior: float | None
    sd: float = 0.0

    def chance_above(self, bar: float) -> float:
        """How likely the true quality is at least ``bar`` (normal approximation of the posterior):
        what an unsure candidate's share of the exploration budget is weighted by."""
        if self.sd <= 0:
            return 1.0 if self.mean >= bar else 0.0
        return 1.0 - NormalDist(self.mean, self.sd).cdf(bar)

    def as_dict(self) -> dict[str, float | int | None]:
        return {"mean": round(self.mean, 6), "lo": round(self.lo, 6), "hi": round(self.hi, 6), "n": self.n,
                "weight": round(self.weight, 3), "prior": self.prior}


def z_for(confidence: float) -> float:
    """The one-sided normal quantile of a confidence (0.95 -> 1.645)."""
    if not 0.5 <= confidence < 1:
        raise ValueError(f"confidence must be in [0.5, 1), got {confidence!r}")
    return NormalDist().inv_cdf(confidence)


def pass_rate(tally: Tally, prior: float | None, prior_weight: float, z: float) -> Estimate:
    """The Beta posterior of a pass rate: ``Beta(q·k + s, (1-q)·k + w - s)`` with the declared quality
    ``q`` as ``k = prior_weight`` pseudo-observations (half an observation more on each side when
    either would be under half), ``Beta(1 + s, 1 + w - s)`` without one. Without evidence the mean is
    the declared quality itself, so the declared order stands until evidence moves it."""
    if prior is not None and prior_weight > 0:
        a0, b0 = prior * prior_weight, (1 - prior) * prior_weight
        if min(a0, b0) < 0.5:  # a prior of 1.0 (or 0) alone would be certain: keep it a belief
            a0, b0 = a0 + 0.5, b0 + 0.5
    else:
        a0 = b0 = UNIFORM
    a = a0 + tally.s
    b = b0 + max(0.0, tally.w - tally.s)
    mean = a / (a + b)
    sd = math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
    return Estimate(mean, max(0.0, mean - z * sd), min(1.0, mean + z * sd), tally.n, tally.w, prior, sd)


def score(tally: Tally, prior: float | None, prior_weight: float, z: float) -> Estimate:
    """The mean of a score in [0, 1] and the sd of that mean: the declared quality counts as
    ``prior_weight`` observations at ``q`` with the widest variance a [0, 1] score can have (1/4)."""
    k = prior_weight if prior is not None else 0.0
    q = prior if prior is not None else 0.5
    w = tally.w + k
    if w <= 0:
        return Estimate(0.5, 0.0, 1.0, tally.n, 0.0, prior, 0.5)
    mean = (tally.s + k * q) / w
    second = (tally.ss + k * (q * q + 0.25)) / w
    var = max(second - mean * mean, 1e-9)
    sd = math.sqrt(var / max(w, 1.0))
    return Estimate(mean, max(0.0, mean - z * sd), min(1.0, mean + z * sd), tally.n, tally.w, prior, sd)


def estimate(tally: Tally, kind: str, prior: float | None, prior_weight: float, z: float) -> Estimate:
    """:func:`pass_rate` for ``kind == "pass"``, :func:`score` for ``"score"``."""
    if kind == "pass":
        return pass_rate(tally, prior, prior_weight, z)
    if kind == "score":
        return score(tally, prior, prior_weight, z)
    raise ValueError(f"unknown metric kind {kind!r}: expected 'pass' or 'score'")


def verdict(est: Estimate, bar: float) -> str:
    """``"meets"`` when the lower bound clears the bar, ``"below"`` when the upper bound is under
    it, ``"unsure"`` while the interval straddles it (what exploration spends on)."""
    if est.lo >= bar:
        return "meets"
    if est.hi < bar:
        return "below"
    return "unsure"


def check_value(kind: str, value: object) -> float:
    """A feedback or validator value as a number, or ValueError naming what was wrong."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if kind == "pass":
        if value in (0, 1):
            return float(value)  # type: ignore[arg-type]
        raise ValueError(f"a pass/fail metric takes true or false (or 1/0), got {value!r}")
    if isinstance(value, (int, float)) and math.isfinite(value) and 0 <= value <= 1:
        return float(value)
    raise ValueError(f"a score metric takes a number in [0, 1], got {value!r}")


def class_of(request: object, class_by: str | None) -> str:
    """The class a request's evidence is kept under: the value of ``class_by`` (``metadata.<field>``
    or ``tags``, sorted and joined) as a string, ``""`` when the policy or the request has none."""
    if not class_by:
        return ""
    if class_by == "tags":
        return ",".join(sorted(str(t) for t in getattr(request, "tags", ()) or ()))
    metadata = getattr(request, "metadata", None) or {}
    value = metadata.get(class_by.split(".", 1)[1])
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)[:200] if isinstance(value, (str, int, float)) else ""


@dataclass(frozen=True, slots=True)
class Evidence:
    """One observation a ``payg_answer_checked`` implementation returns about the answer it saw:
    ``value`` of ``metric`` (true/false for a pass metric, a number in [0, 1] for a score), and
    where it came from (``source``, kept in the evidence log). The hook only says it; the runtime
    records it for the answering deployment, in the request's class, when the policy collects
    evidence (``runtime/answers.py``): a plugin never writes the evidence store itself."""

    metric: str
    value: object
    source: str = "plugin"


#: a cell's key: (deployment id, class, metric)
CellKey = tuple[str, str, str]


@dataclass(frozen=True)
class QualityView:
    """What one decision knows of a route's evidence (read before it, like the rest of a
    ``Snapshot``): the cells' tallies aged to ``now``, how to judge them, and the dollars the
    route's exploration has spent in its current window."""

    now: float
    tallies: "Mapping[CellKey, Tally]"
    kinds: "Mapping[str, str]"
    prior_weight: float
    z: float
    class_by: str | None = None
    explore_spent_usd: float = 0.0

    def estimate(self, deployment_id: str, declared: float | None, cls: str, metric: str) -> Estimate:
        """The estimate of a deployment on ``metric`` for class ``cls``: that class's evidence only
        (a model good at one kind of request may not be at another), every class's together when
        ``cls`` is ``""`` (a request the policy's ``class_by`` finds nothing in)."""
        if cls:
            tally = self.tallies.get((deployment_id, cls, metric)) or Tally(self.now)
        else:
            tally = merge((t for (d, _, m), t in self.tallies.items() if d == deployment_id and m == metric), self.now, None)
        prior = declared if declared is not None and 0.0 <= declared <= 1.0 else None
        return estimate(tally, self.kinds.get(metric, "pass"), prior, self.prior_weight, self.z)


__all__ = ["CellKey", "Estimate", "Evidence", "QualityView", "Tally", "class_of", "check_value", "decay", "estimate", "merge", "pass_rate", "score", "verdict", "z_for"]
