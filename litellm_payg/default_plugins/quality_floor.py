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
ordered cheapest first for this request, so the next-cheapest is the fallback.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from litellm_payg import hookimpl
from litellm_payg.core.bounds import Score, Tokens
from litellm_payg.core.decision import Step
from litellm_payg.rules import Rule, RuleOptions


class Tier(RuleOptions):
    up_to_prompt_tokens: Tokens
    min_quality: Score


class QualityFloorOptions(RuleOptions):
    min_quality: Score
    tiers: list[Tier] = Field(default_factory=list)

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

    def __init__(self, options, context):
        super().__init__(options, context)
        # drop reasons by (quality, bar): the same few strings on every pick, formatted once
        self._reasons: dict[tuple[float, float], str] = {}

    def _below(self, quality: float, bar: float) -> str:
        reason = self._reasons.get((quality, bar))
        if reason is None:
            if len(self._reasons) > 10_000:
                self._reasons.clear()
            reason = self._reasons[(quality, bar)] = f"quality {quality:g} is below the bar {bar:g}"
        return reason

    def bar_for(self, prompt_tokens: int) -> float:
        for tier in self.options.tiers:
            if prompt_tokens <= tier.up_to_prompt_tokens:
                return tier.min_quality
        return self.options.min_quality

    def apply(self, request, candidates):
        bar = self.bar_for(request.prompt_tokens)
        if request.min_quality is not None and request.min_quality > bar:
            bar = request.min_quality
        p, o = request.prompt_tokens, request.output_tokens
        kept, dropped = [], []
        for c in candidates:
            if c.quality is None:
                dropped.append(Step.drop(c, f"no quality score for {c.model} in the policy's models:", self.name))
            elif c.quality < bar:
                dropped.append(Step.drop(c, self._below(c.quality, bar), self.name))
            else:
                kept.append((c.estimate_usd(p, o), c))
        kept.sort(key=lambda ec: ec[0])
        return Step([c for _, c in kept], dropped, f"quality_floor: bar {bar:g}, cheapest first")


@hookimpl
def payg_register_rules(register):
    register(QualityFloor)
