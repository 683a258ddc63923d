"""Cheapest first at any prompt size: a fixed set of candidates, ordered once per range of sizes.

Why: ``quality_floor`` orders the candidates that clear its bar by their estimate for the request,
``prompt x input price + output x output price``, on every pick; with a bound on the prompt's size
it sorts twice more to see whether the size matters at all (if not, the prompt is not counted).
Those sorts were most of the rule's time. But for a fixed set of candidates and output size the
order can only change at the sizes where two candidates' estimates cross: finitely many, known
from their prices alone. Between two crossings the order is one order; :class:`PriceOrder` finds
the crossings once and remembers the order of each range the first time it is asked for, so a
pick of the same group looks it up instead of sorting (kept on the group's
:class:`~litellm_payg.core.decision.CandidateSet`, ``memo``).

Exact, not approximate: :meth:`PriceOrder.at` answers only when no crossing lies within one token
of the range and the estimates' rounding is far below what separates them there (the caller sorts
otherwise, as before), so its order is the one ``sorted`` gives at every size of the range,
candidates with equal prices in their given order included.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence

from litellm_payg.core.decision import Candidate

#: more distinct price pairs than this and the crossings are not worth listing: the caller sorts
MAX_PRICES = 48
#: ranges whose order is remembered per set (a set sees few prompt sizes' ranges in practice)
MAX_ORDERS = 256
#: how far below the gap between two estimates their rounding must stay (doubles carry ~1e-16)
_ROUNDING = 1e-12


class PriceOrder:
    """The cheapest-first orders of ``candidates`` (all priced) for ``output_tokens`` output tokens."""

    __slots__ = ("candidates", "output_tokens", "_cuts", "_orders", "_min_gap", "_max_in", "_max_out")

    def __init__(self, candidates: Sequence[Candidate], output_tokens: int) -> None:
        self.candidates = tuple(candidates)
        self.output_tokens = o = output_tokens
        self._orders: dict[int, tuple[Candidate, ...]] = {}
        pairs = list(dict.fromkeys((c.input_usd_per_token, c.output_usd_per_token) for c in self.candidates))
        self._max_in = max((p[0] for p in pairs), default=0.0)
        self._max_out = max((p[1] for p in pairs), default=0.0)
        self._cuts: list[float] | None = None
        self._min_gap = math.inf
        if len(pairs) > MAX_PRICES:
            return
        cuts: set[float] = set()
        for i, (a_in, a_out) in enumerate(pairs):
            for b_in, b_out in pairs[i + 1:]:
                d_in = a_in - b_in
                if d_in == 0:  # never cross: the output prices alone tell them apart, at every size
                    gap = o * abs(b_out - a_out)
                else:  # cross where p * d_in == o * (b_out - a_out); a token away, they differ by |d_in|
                    gap = abs(d_in)
                    cuts.add(o * (b_out - a_out) / d_in)
                if gap < self._min_gap:
                    self._min_gap = gap
        self._cuts = sorted(cuts)

    def at(self, lo: int, hi: int) -> tuple[Candidate, ...] | None:
        """The candidates cheapest first (a stable sort by estimate) for every prompt size from
        ``lo`` to ``hi``, or None when the order may change in that range (a crossing within a
        token of it) or rounding could decide it (the caller then sorts)."""
        cuts = self._cuts
        if cuts is None:
            return None
        o = self.output_tokens
        if (hi * self._max_in + o * self._max_out) * _ROUNDING >= self._min_gap:
            return None
        i = bisect_left(cuts, lo - 1)
        if i < len(cuts) and cuts[i] <= hi + 1:
            return None
        order = self._orders.get(i)
        if order is None:
            # any size of the range sorts the same (no crossing within it): the rule's own key
            order = tuple(sorted(self.candidates, key=lambda c: c.estimate_usd(hi, o)))
            if len(self._orders) >= MAX_ORDERS:
                self._orders.clear()
            self._orders[i] = order
        return order

    def crosses(self, lo: int, hi: int) -> bool:
        """Whether the order at ``lo`` and the order at ``hi`` certainly differ: two candidates'
        estimates cross at least a token inside the range, so their order is reversed between its
        ends (False: not known to differ, which is not the same as known to be the same)."""
        cuts = self._cuts
        if not cuts or (hi * self._max_in + self.output_tokens * self._max_out) * _ROUNDING >= self._min_gap:
            return False
        i = bisect_left(cuts, lo + 1)
        return i < len(cuts) and cuts[i] <= hi - 1
