"""The policy's ``quality:`` section: how evidence about answers is kept and judged.

::

    quality:
      metrics: {valid: pass, helpful: score}   # a metric's kind: pass (true/false) or score (0..1)
      half_life_s: 86400        # evidence this old counts half (forgetting); null: never forget
      prior_weight: 10          # the declared models: quality counts as this many observations
      confidence: 0.95          # one-sided: routing judges a candidate on this lower bound
      class_by: metadata.step   # cells per value of this request field (or 'tags'); none: one cell
      refresh_s: 1              # how stale a replica's copy of the estimates may be
      feedback: true            # remember each answer by its response id, so it can be rated
      feedback_ttl_s: 604800    # how long a response id can still be rated

The response validators (``validate:``) record the metric ``valid`` on every answer they check;
feedback and other sources name their metric.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from litellm_payg.core.bounds import MAX_SCORE, Seconds

#: the metric the response validators record (pass: the answer passed every validator)
VALIDATOR_METRIC = "valid"


class QualitySettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    metrics: dict[str, Literal["pass", "score"]] = Field(default_factory=lambda: {VALIDATOR_METRIC: "pass"})
    half_life_s: Seconds | None = 7 * 86400
    prior_weight: float = Field(10.0, ge=0, le=MAX_SCORE)
    confidence: float = Field(0.95, ge=0.5, lt=1)
    class_by: str | None = None
    refresh_s: float = Field(1.0, ge=0, le=3600)
    #: keep the plugin's record of every answer (route, deployment, key, cost) by its response id,
    #: so feedback can name it (``engine.feedback``, the proxy's ``POST /payg/feedback``)
    feedback: bool = False
    feedback_ttl_s: Seconds = 7 * 86400

    @field_validator("metrics")
    @classmethod
    def _with_valid(cls, metrics: dict[str, str]) -> dict[str, str]:
        return {VALIDATOR_METRIC: "pass", **metrics}

    @field_validator("class_by")
    @classmethod
    def _field(cls, value: str | None) -> str | None:
        if value is not None and value != "tags" and not (value.startswith("metadata.") and len(value) > 9):
            raise ValueError("class_by is 'tags' or 'metadata.<field>'")
        return value

    def kind(self, metric: str) -> str:
        found = self.metrics.get(metric)
        if found is None:
            raise ValueError(f"unknown quality metric {metric!r}; the policy's quality.metrics has {', '.join(sorted(self.metrics))}")
        return found
