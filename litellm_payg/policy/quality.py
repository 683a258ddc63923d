"""The policy's ``quality:`` section: how evidence about answers is kept and judged.

::

    quality:
      metrics: {valid: pass, helpful: score}   # a metric's kind: pass (true/false) or score (0..1)
      half_life_s: 86400        # evidence this old counts half (forgetting); null: never forget
      drop_false_alarm_rate: 1.0e-6   # a drop detector per cell (below); null: forgetting only
      prior_weight: 10          # the declared models: quality counts as this many observations
      confidence: 0.95          # one-sided: routing judges a candidate on this lower bound
      class_by: metadata.step   # cells per value of this request field (or 'tags'); none: one cell
      refresh_s: 1              # how stale a replica's copy of the estimates may be
      feedback: true            # remember each answer by its response id, so it can be rated
      feedback_ttl_s: 604800    # how long a response id can still be rated
      judge:                    # a judged sample (adapter/judge.py)
        model: openai/gpt-4o-mini
        share: 0.02             # of answered requests on a measured route
        max_usd: 1.0            # per window_s, candidate and judge calls together, in the ledger

The response validators (``validate:``) record the metric ``valid`` on every answer they check;
feedback and other sources name their metric.

``drop_false_alarm_rate``: every answer of a cell on a route with a measured ``quality_floor`` on
that metric also moves a one-sided CUSUM (Page's test, ``core/drop_detector.py``) of "the rate fell
from the cell's estimate to the route's bar"; it alarms at ``ln(1/rate)``, so at the estimate a
false alarm comes at most once per ``1/rate`` answers on average, and a drop from 0.95 to 0.70
against a bar of 0.85 is noticed in about 55 answers at the default. An alarm makes the cell forget
the evidence from before the change, so its bound falls below the bar and routing moves away (then
exploration decides whether it comes back). Forgetting by half-life alone notices such a drop only
as the old answers fade: hundreds or thousands of answers later. The statistic is kept with the
tally in the evidence store, moved in the same atomic step, so replicas share it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from litellm_payg.core.bounds import MAX_SCORE, MAX_USD, Seconds

#: the metric the response validators record (pass: the answer passed every validator)
VALIDATOR_METRIC = "valid"


class JudgeSettings(BaseModel):
    """``quality.judge``: a share of answered requests on a measured route is also sent, off the
    caller's path, to the cheapest candidate still unsure of the bar, and a judge model says whether
    the candidate's answer is as good as the one served (``adapter/judge.py``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    #: any LiteLLM model string; ``litellm_params`` adds its api_base, api_key...
    model: str = Field(min_length=1)
    litellm_params: dict[str, Any] = Field(default_factory=dict)
    share: float = Field(gt=0, le=1)
    #: dollars per window the samples (candidate and judge calls together) may spend, in the ledger
    max_usd: float = Field(gt=0, le=MAX_USD)
    window_s: Seconds = 3600
    #: what one sample reserves against ``max_usd`` before it is sent (settled at its real cost)
    reserve_usd: float = Field(0.01, gt=0, le=MAX_USD)
    #: the output cap of the candidate's and the judge's calls (keeps a sample within its reservation)
    max_tokens: int = Field(512, gt=0, le=100_000)
    metric: str = "judged"


class QualitySettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    metrics: dict[str, Literal["pass", "score"]] = Field(default_factory=lambda: {VALIDATOR_METRIC: "pass"})
    half_life_s: Seconds | None = 7 * 86400
    #: the drop detector's false alarm rate per answer (its threshold is ln(1/rate)); None: no detector
    drop_false_alarm_rate: float | None = Field(1e-6, gt=0, le=0.5)
    prior_weight: float = Field(10.0, ge=0, le=MAX_SCORE)
    confidence: float = Field(0.95, ge=0.5, lt=1)
    class_by: str | None = None
    refresh_s: float = Field(1.0, ge=0, le=3600)
    #: keep the plugin's record of every answer (route, deployment, key, cost) by its response id,
    #: so feedback can name it (``engine.feedback``, the proxy's ``POST /payg/feedback``)
    feedback: bool = False
    feedback_ttl_s: Seconds = 7 * 86400
    judge: JudgeSettings | None = None

    @field_validator("metrics")
    @classmethod
    def _with_valid(cls, metrics: dict[str, str]) -> dict[str, str]:
        return {VALIDATOR_METRIC: "pass", **metrics}

    @model_validator(mode="after")
    def _judge_metric(self) -> "QualitySettings":
        if self.judge is not None and self.judge.metric not in self.metrics:
            object.__setattr__(self, "metrics", {**self.metrics, self.judge.metric: "pass"})
        return self

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
