"""What a rule is: the protocol every route rule follows, built-in or third-party.

A rule type is a class registered through the ``payg_register_rules`` hook. A policy file names it
in a route (``- cost_threshold: {...}``); its options are validated with the class's ``Options``
pydantic model, and the engine applies the rules of a route in order, each seeing the candidates the
previous one kept, in the order it left them.

Any rule entry may carry a condition, ``when:`` (:class:`~litellm_payg.core.conditions.When`, the
condition language, which budgets and ``sessions.required`` use too), next to its rule type::

    - when: {metadata.step: plan}
      quality_floor: {min_quality: 0.9}

The engine, not the rule, decides whether a rule applies to a request (``Engine.rules_for``): the
conditioned entries whose ``when`` matches, in policy order; when none matches, the unconditioned
entries. A rule type needs nothing to support it; ``context.when`` tells a rule its own condition.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from litellm_payg.core.conditions import Condition, When, WhenError  # noqa: F401  (the condition language, re-exported)
from litellm_payg.core.decision import Candidate, RouteRequest, Step
from litellm_payg.core.model_facts import ModelFacts


class RuleOptions(BaseModel):
    """Base for rule options: unknown keys are an error, so a typo never passes silently."""

    # allow_inf_nan=False: no rule option, built-in or a plugin's, can be nan or infinite
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


@dataclass(frozen=True)
class RuleContext:
    """What a rule may know besides its options: its route and the policy's per-model facts."""

    group: str
    field: str  # dotted path of the rule in the policy, for error messages: routes.chat[0].cost_threshold
    models: Mapping[str, ModelFacts] = field(default_factory=dict)
    #: the entry's ``when:`` condition (None: the rule is unconditioned); the engine applies it
    when: When | None = None


def matches(ref: str, candidate: Candidate) -> bool:
    """Whether a model reference in a policy names this candidate.

    A reference is a deployment id (``model_info.id``), a LiteLLM model string
    (``deepseek/deepseek-chat``) or the same without its provider prefix (``deepseek-chat``).
    """
    if ref == candidate.deployment_id or ref == candidate.model:
        return True
    _, _, bare = candidate.model.partition("/")
    return bool(bare) and ref == bare


class Rule:
    """Base class for rule types. Subclasses set ``name`` and ``Options`` and implement ``apply``."""

    name: ClassVar[str]
    Options: ClassVar[type[RuleOptions]]
    #: True when the rule compares prices: every deployment it can reach must have a known price.
    needs_prices: ClassVar[bool] = False
    #: True when ``apply`` takes the decision's :class:`~litellm_payg.core.snapshot.Snapshot` as a
    #: third argument, ``apply(request, candidates, snapshot)`` (what ``quality_floor``'s measured mode
    #: judges: ``snapshot.quality``); the snapshot may be None (a caller without one)
    reads_snapshot: ClassVar[bool] = False

    def __init__(self, options: RuleOptions, context: RuleContext):
        self.options = options
        self.context = context

    def model_refs(self) -> Sequence[tuple[str, str]]:
        """``(field, reference)`` for every model the options name, so a load can check they exist."""
        return ()

    def apply(self, request: RouteRequest, candidates: Sequence[Candidate]) -> Step:
        raise NotImplementedError


@dataclass(frozen=True)
class RuleSpec:
    """A rule as a policy file names it, validated but not yet bound to a router."""

    name: str
    options: RuleOptions
    field: str
    line: int | None
    rule_type: type[Rule]
    when: When | None = None

    def build(self, group: str, models: Mapping[str, Any]) -> Rule:
        return self.rule_type(self.options, RuleContext(group=group, field=self.field, models=models, when=self.when))
