"""The ``failover:`` and ``validate:`` sections of a policy file, as pydantic models.

::

    failover:
      order: cheapest_first                 # groups without a chain: cheapest_first | policy
      chains: {chat: [deepseek/deepseek-chat, mistral/mistral-large-latest, gpt-4o-mini]}
      circuit_breaker: {failures: 5, within_s: 60, open_s: 30, half_open_probes: 1}
      max_latency_ms: 8000                  # p95 above this: tried after the others
      first_token_timeout_ms: 3000          # p95 time-to-first-token above this: same
      on: {rate_limit: next, server_error: next, context_window: larger_context, auth: fail, bad_request: fail}
    validate:
      - non_empty
      - finish_reason_not: length
      - json_schema: schemas/answer.json    # relative to the policy file

``order``: ``policy`` keeps the order the route's rules left; ``cheapest_first`` sorts by this
request's estimated cost (unpriced deployments last). A group listed in ``chains`` is ordered by its
chain instead (a chain entry is a deployment id, a LiteLLM model string or the model without its
provider prefix, as everywhere in a policy) and candidates not in the chain are dropped.

``on``: what to do after a failed attempt, per failure class (``failures.FailureClass``):
``next`` tries the next candidate, ``fail`` returns the error to the caller, ``larger_context``
(only for ``context_window``) tries only candidates with a larger ``max_input_tokens`` than the
one that overflowed.
"""

from __future__ import annotations

from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from litellm_payg.core.bounds import Count, Millis, Seconds
from litellm_payg.stores.health import BreakerConfig, LatencyConfig

Action = Literal["next", "fail", "larger_context"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class CircuitBreakerSettings(_Strict):
    failures: Count = 5
    within_s: Seconds = 60
    open_s: Seconds = 30
    half_open_probes: Count = 1
    #: a claimed probe that never reports back frees its slot after this long (default: open_s)
    probe_timeout_s: Seconds | None = None

    def config(self) -> BreakerConfig:
        return BreakerConfig(self.failures, float(self.within_s), float(self.open_s), self.half_open_probes,
                             None if self.probe_timeout_s is None else float(self.probe_timeout_s))


class LatencySettings(_Strict):
    window_s: Seconds = 300
    max_samples: Count = 200
    min_samples: Count = 5

    def config(self) -> LatencyConfig:
        return LatencyConfig(float(self.window_s), self.max_samples, self.min_samples)


class OnFailure(_Strict):
    """The action per failure class; the keys are ``FailureClass`` values."""

    rate_limit: Action = "next"
    server_error: Action = "next"
    context_window: Action = "larger_context"
    auth: Action = "fail"
    bad_request: Action = "fail"
    invalid_response: Action = "next"
    unknown: Action = "fail"

    @model_validator(mode="after")
    def _larger_context_only_for_context(self) -> "OnFailure":
        wrong = [k for k, v in self.model_dump().items() if v == "larger_context" and k != "context_window"]
        if wrong:
            raise ValueError(f"larger_context only applies to context_window, not to {', '.join(wrong)}")
        return self


class FailoverSettings(_Strict):
    order: Literal["cheapest_first", "policy"] = "policy"
    chains: dict[str, list[str]] = Field(default_factory=dict)
    circuit_breaker: CircuitBreakerSettings = Field(default_factory=CircuitBreakerSettings)
    latency: LatencySettings = Field(default_factory=LatencySettings)
    max_latency_ms: Millis | None = None
    first_token_timeout_ms: Millis | None = None
    on: OnFailure = Field(default_factory=OnFailure)

    @model_validator(mode="before")
    @classmethod
    def _yaml_on_key(cls, data: Any) -> Any:
        # YAML 1.1 (PyYAML's SafeLoader, which policy files are read with) reads the bare key `on:`
        # as the boolean True. Accept it as "on" rather than make users quote it.
        if isinstance(data, dict) and True in data and "on" not in data:
            data = {("on" if k is True else k): v for k, v in data.items()}
        return data

    @model_validator(mode="after")
    def _chains_not_empty(self) -> "FailoverSettings":
        for group, chain in self.chains.items():
            if not chain:
                raise ValueError(f"chains.{group} is empty; list at least one model, or remove the group")
            if len(set(chain)) != len(chain):
                raise ValueError(f"chains.{group} names a model twice")
        return self

    def action_for(self, failure_class: str) -> Action:
        return getattr(self.on, str(failure_class))

    def model_refs(self) -> list[tuple[str, str, str]]:
        """``(field, group, reference)`` for every chain entry, so a load can check they exist."""
        return [(f"failover.chains.{g}[{i}]", g, ref) for g, chain in self.chains.items() for i, ref in enumerate(chain)]


# -- validate: ------------------------------------------------------------------------------------------


class FinishReasonNot(_Strict):
    finish_reason_not: str | list[str]


class JsonSchemaCheck(_Strict):
    json_schema: str  # a path, relative to the policy file's folder


ValidatorSpec = Union[Literal["non_empty"], FinishReasonNot, JsonSchemaCheck]
