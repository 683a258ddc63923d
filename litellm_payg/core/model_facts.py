"""What a policy's ``models:`` section says about one model: quality, a price override, labels.

Its own module because both sides need it: ``policy.py`` validates the section into these objects,
and ``rules.py`` hands them to every rule through ``RuleContext.models``. Kept here, below both, so
the rule protocol does not import the policy loader (which imports the rule protocol).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from litellm_payg.core.bounds import Score, Tokens, UsdPer1k


class ModelFacts(BaseModel):
    """Per-model facts a policy adds to what LiteLLM knows: a quality score, a price override (for
    fine-tunes and self-hosted models), labels for custom rules."""

    # nan/inf are never a meaningful policy number (see bounds.py)
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False)

    quality: Score | None = None
    input_usd_per_1k: UsdPer1k | None = None
    output_usd_per_1k: UsdPer1k | None = None
    max_input_tokens: Tokens | None = None
    labels: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _both_prices(self) -> "ModelFacts":
        if (self.input_usd_per_1k is None) != (self.output_usd_per_1k is None):
            raise ValueError("give both input_usd_per_1k and output_usd_per_1k, or neither")
        return self
