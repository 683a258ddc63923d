"""``cost_threshold``: use a model while its price for this request is under a threshold, otherwise another.

::

    - cost_threshold:
        use: deepseek/deepseek-chat
        max_usd_per_1k_tokens: 0.0015
        otherwise: mistral/mistral-large-latest

The price compared is the request's blended price per 1K tokens on ``use`` (see ``pricing.py``).
Under the threshold the order is ``use`` then ``otherwise`` (the fallback if ``use`` fails); over it,
``use`` is dropped. Deployments named by neither are dropped.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from litellm_payg import hookimpl
from litellm_payg.core.bounds import PositiveUsdPer1k
from litellm_payg.core.decision import Candidate, Step
from litellm_payg.rules import Rule, RuleOptions, matches


class CostThresholdOptions(RuleOptions):
    use: str = Field(min_length=1)
    max_usd_per_1k_tokens: PositiveUsdPer1k
    otherwise: list[str] = Field(min_length=1)

    @field_validator("otherwise", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value


class CostThreshold(Rule):
    name = "cost_threshold"
    Options = CostThresholdOptions
    needs_prices = True

    def model_refs(self):
        f = self.context.field
        return [(f"{f}.use", self.options.use)] + [(f"{f}.otherwise", ref) for ref in self.options.otherwise]

    def __init__(self, options, context):
        super().__init__(options, context)
        # a candidate's role (-1: `use`, i: otherwise[i], None: neither) does not change between
        # requests; remember it rather than match model names on every pick
        self._roles: dict[tuple[str, str], int | None] = {}

    def _role(self, c: Candidate) -> int | None:
        key = (c.deployment_id, c.model)
        role = self._roles.get(key, -2)
        if role == -2:
            if matches(self.options.use, c):
                role = -1
            else:
                role = next((i for i, ref in enumerate(self.options.otherwise) if matches(ref, c)), None)
            if len(self._roles) > 10_000:
                self._roles.clear()
            self._roles[key] = role
        return role

    def apply(self, request, candidates):
        opts = self.options
        limit = opts.max_usd_per_1k_tokens
        p, o = request.prompt_tokens, request.output_tokens
        preferred, fallback, dropped = [], [], []
        for c in candidates:
            rank = self._role(c)
            if rank == -1:
                price = c.usd_per_1k(p, o)
                if price <= limit:
                    preferred.append((price, c))
                else:
                    dropped.append(Step.drop(
                        c, f"${price:.6f}/1K tokens for this request is over max_usd_per_1k_tokens ${limit:g}", self.name
                    ))
            elif rank is None:
                dropped.append(Step.drop(c, "named neither in 'use' nor in 'otherwise'", self.name))
            else:
                fallback.append((rank, c.estimate_usd(p, o), c))
        preferred.sort(key=lambda pc: pc[0])
        fallback.sort(key=lambda rc: (rc[0], rc[1]))
        kept = [c for _, c in preferred] + [c for _, _, c in fallback]
        note = (
            f"cost_threshold: {opts.use} under ${limit:g}/1K" if preferred
            else f"cost_threshold: {opts.use} not usable, using {', '.join(opts.otherwise)}"
        )
        return Step(kept, dropped, note)


@hookimpl
def payg_register_rules(register):
    register(CostThreshold)
