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
from litellm_payg.core.decision import Candidate, Drop, Step, memo_of
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
        # requests; remember it, and the drop of a candidate named by neither, per candidate object
        # (checked by identity, so an id reused by another object is never mistaken for it)
        self._roles: dict[int, tuple[Candidate, int | None, Drop | None]] = {}

    def _role(self, c: Candidate) -> tuple[Candidate, int | None, Drop | None]:
        if matches(self.options.use, c):
            role = -1
        else:
            role = next((i for i, ref in enumerate(self.options.otherwise) if matches(ref, c)), None)
        neither = Step.drop(c, "named neither in 'use' nor in 'otherwise'", self.name) if role is None else None
        if len(self._roles) > 10_000:
            self._roles.clear()
        entry = self._roles[id(c)] = (c, role, neither)
        return entry

    def apply(self, request, candidates):
        memo = memo_of(candidates)
        if memo is None:
            return self._apply(request, candidates)
        # a group's candidate set: its roles, and whether the prompt's size can matter, are the same
        # on every pick; when it cannot, so is the whole step (kept in the set's memo)
        found = memo.get(self)
        if found is None:
            roles = self._roles_of(candidates)
            blind = _size_blind(roles, self.options.max_usd_per_1k_tokens)
            found = memo[self] = (roles, self._apply(request, candidates, roles, blind) if blind else None)
        roles, step = found
        if step is None:
            return self._apply(request, candidates, roles, False)
        return Step(list(step.kept), list(step.dropped), step.note)

    def _roles_of(self, candidates) -> list[tuple[Candidate, int | None, Drop | None]]:
        known = self._roles
        roles = []
        for c in candidates:  # on every pick, for every deployment of the group: kept lean
            entry = known.get(id(c))
            roles.append(entry if entry is not None and entry[0] is c else self._role(c))
        return roles

    def _apply(self, request, candidates, roles=None, blind=None):
        opts = self.options
        limit = opts.max_usd_per_1k_tokens
        if roles is None:
            roles = self._roles_of(candidates)
        if blind is None:
            blind = _size_blind(roles, limit)
        # when the order and the drops are the same for any prompt size, the prompt is not read
        # (nor counted): equal prices keep their order in the sorts below
        p, o = (0, 0) if blind else (request.prompt_tokens, request.output_tokens)
        preferred, fallback, dropped = [], [], []
        for c, rank, neither in roles:
            if rank == -1:
                if blind:
                    preferred.append((0.0, c))
                    continue
                price = c.usd_per_1k(p, o)
                if price <= limit:
                    preferred.append((price, c))
                else:
                    dropped.append(Step.drop(
                        c, f"${price:.6f}/1K tokens for this request is over max_usd_per_1k_tokens ${limit:g}", self.name
                    ))
            elif rank is None:
                dropped.append(neither)
            else:
                fallback.append((rank, 0.0 if blind else c.estimate_usd(p, o), c))
        preferred.sort(key=lambda pc: pc[0])
        fallback.sort(key=lambda rc: (rc[0], rc[1]))
        kept = [c for _, c in preferred] + [c for _, _, c in fallback]
        note = (
            f"cost_threshold: {opts.use} under ${limit:g}/1K" if preferred
            else f"cost_threshold: {opts.use} not usable, using {', '.join(opts.otherwise)}"
        )
        return Step(kept, dropped, note)


def _size_blind(roles: list[tuple[Candidate, int | None, Drop | None]], limit: float) -> bool:
    """Whether :meth:`CostThreshold.apply` comes out the same whatever the prompt's size, so the
    prompt need not be counted (LiteLLM's token counter costs more than the whole decision).

    A request's price per 1K tokens on a deployment is a weighted mean of its input and output
    prices, so it is under the limit for every size when both are (with a margin for rounding).
    The order only depends on the size between deployments of different prices: every ``use``
    deployment must have the same prices, and so must those of each ``otherwise`` entry (equal
    keys keep their order in the sort). Anything else, or an unpriced deployment, is priced exactly.
    """
    prices: dict[int, tuple[float | None, float | None]] = {}
    for c, rank, _ in roles:
        if rank is None:
            continue
        if not c.priced:
            return False
        pair = (c.input_usd_per_token, c.output_usd_per_token)
        if prices.setdefault(rank, pair) != pair:
            return False
        if rank == -1 and not max(pair) * 1000 * (1 + 1e-9) < limit:  # type: ignore[type-var]
            return False
    return True


@hookimpl
def payg_register_rules(register):
    register(CostThreshold)
