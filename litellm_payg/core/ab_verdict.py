"""An A/B split's verdict on quality and cost: promote the new arm, or how much longer to wait. Pure math.

Per arm, from the answers rated on one pass/fail metric: ``n``, the pass rate, the cost per request
and per passing request. The quality difference ``B - A`` gets an **anytime-valid** interval, so it
may be looked at after every request without inflating the error: each arm's pass rate has a
confidence *sequence* (Robbins' normal mixture for a mean of values in [0, 1], 1/2-sub-Gaussian),

    |S_n| < sqrt((n/4 + rho) * ln((n/4 + rho) / (rho * a^2)))      for every n, with probability 1 - a,

at ``a = alpha / 2`` per arm, and the difference's interval is the difference of the two. ``rho``
tunes where the sequence is tightest (``RHO``: around a few hundred answers).

The sentence: ``promote`` when B is within ``margin`` of A (the difference's lower bound is at
least ``-margin``) and cheaper per request (its cost interval lies below A's); ``drop`` when B is
worse by more than ``margin`` (the upper bound is below ``-margin``); otherwise ``not yet``, with
the answers per arm after which the interval would be narrow enough if the observed rates held.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

#: the normal mixture's precision: tightest near n = 4 * RHO / (e - 1) answers (~150)
RHO = 25.0


def cs_radius(n: int, alpha: float, rho: float = RHO) -> float:
    """Half-width of the anytime-valid confidence sequence for the mean of ``n`` values in [0, 1]."""
    if n <= 0:
        return math.inf
    v = n / 4 + rho
    return math.sqrt(v * math.log(v / (rho * alpha * alpha))) / n


@dataclass(frozen=True)
class ArmStats:
    name: str
    n: int
    passes: float
    cost_usd: float
    cost_sq: float

    @property
    def rate(self) -> float:
        return self.passes / self.n if self.n else 0.0

    @property
    def cost_per_request(self) -> float:
        return self.cost_usd / self.n if self.n else 0.0

    def cost_interval(self, z: float) -> tuple[float, float]:
        """Cost per request ± z standard errors (normal approximation)."""
        if self.n < 2:
            return (0.0, math.inf)
        mean = self.cost_per_request
        var = max(self.cost_sq / self.n - mean * mean, 0.0) * self.n / (self.n - 1)
        half = z * math.sqrt(var / self.n)
        return (mean - half, mean + half)

    @property
    def cost_per_pass(self) -> float:
        return self.cost_usd / self.passes if self.passes else math.inf

    def cost_per_pass_interval(self, z: float) -> tuple[float, float]:
        """Cost per passing request: cost per request / pass rate, its interval by the delta method."""
        if self.n < 2 or self.passes <= 0:
            return (0.0, math.inf)
        c, p = self.cost_per_request, self.rate
        var_c = max(self.cost_sq / self.n - c * c, 0.0) * self.n / (self.n - 1) / self.n
        var_p = p * (1 - p) / self.n
        half = z * math.sqrt(var_c / (p * p) + c * c * var_p / p ** 4)
        return (c / p - half, c / p + half)


def arm_stats(name: str, rows: Sequence[tuple[float, float]]) -> ArmStats:
    """An arm from its ``(value, cost_usd)`` rows (value 0/1: failed/passed)."""
    return ArmStats(name, len(rows), sum(v for v, _ in rows), sum(c for _, c in rows), sum(c * c for _, c in rows))


@dataclass(frozen=True)
class Verdict:
    a: ArmStats
    b: ArmStats
    diff: float
    diff_lo: float
    diff_hi: float
    saving: float  # 1 - cost per request of B / A
    saving_half: float
    decision: str  # "promote" | "drop" | "not yet"
    more_per_arm: int | None
    sentence: str

    def as_dict(self, z: float) -> dict:
        def arm(s: ArmStats) -> dict:
            lo, hi = s.cost_interval(z)
            plo, phi = s.cost_per_pass_interval(z)
            return {"name": s.name, "n": s.n, "pass_rate": s.rate, "cost_per_request": s.cost_per_request,
                    "cost_per_request_interval": [lo, hi], "cost_per_pass": s.cost_per_pass,
                    "cost_per_pass_interval": [plo, phi]}

        return {"a": arm(self.a), "b": arm(self.b), "difference": self.diff, "difference_interval": [self.diff_lo, self.diff_hi],
                "saving": self.saving, "saving_half_width": self.saving_half, "decision": self.decision,
                "more_per_arm": self.more_per_arm, "sentence": self.sentence}


def verdict(a: ArmStats, b: ArmStats, metric: str, margin: float = 0.02, alpha: float = 0.05,
            confidence: float = 0.95) -> Verdict:
    """Compare arm ``b`` (the new one) with ``a`` on ``metric`` and cost (see the module docstring)."""
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    diff = b.rate - a.rate
    ra, rb = cs_radius(a.n, alpha / 2), cs_radius(b.n, alpha / 2)
    lo, hi = diff - ra - rb, diff + ra + rb
    ca, cb = a.cost_per_request, b.cost_per_request
    saving = 1 - cb / ca if ca > 0 else 0.0
    (alo, ahi), (blo, bhi) = a.cost_interval(z), b.cost_interval(z)
    half = (z * math.hypot((bhi - blo) / (2 * z) / ca, cb * (ahi - alo) / (2 * z) / (ca * ca)) if ca > 0 and math.isfinite(ahi + bhi)
            else math.inf)
    cheaper = bhi < alo
    n = min(a.n, b.n)
    more = None
    if lo >= -margin and cheaper:
        decision = "promote"
        sentence = (f"{b.name} is within {margin:g} of {a.name} on {metric} and {saving:.0%} ± {half:.0%} cheaper "
                    f"(n = {a.n + b.n:,}): promote")
    elif hi < -margin:
        decision = "drop"
        sentence = f"{b.name} is worse than {a.name} on {metric} by {-diff:.3f} (at least {-hi:.3f}, n = {a.n + b.n:,}): drop"
    else:
        decision = "not yet"
        target = diff + margin  # the interval must shrink to this half-width (both radii together)
        if target > 0:
            k = max(n, 2)
            while 2 * cs_radius(k, alpha / 2) > target and k < 10_000_000:
                k = int(k * 1.05) + 1
            more = max(k - n, 1) if k < 10_000_000 else None
        if more is None:
            sentence = f"not yet: {b.name} is too close to the margin ({margin:g} below {a.name}) on {metric} to call"
        else:
            sentence = f"not yet: about {more:,} more requests per arm"
    return Verdict(a, b, diff, lo, hi, saving, half, decision, more, sentence)
