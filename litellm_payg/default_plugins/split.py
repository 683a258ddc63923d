"""``split``: weighted A/B arms, sticky per user (or any request field) through a stable hash.

::

    - split:
        sticky_by: user          # user | team | api_key | end_user | trace_id | metadata.<field> | a declared
                                 # request attribute (a scope kind's, e.g. org)
        arms:
          - {model: mistral/mistral-large-latest, weight: 95}
          - {model: deepseek/deepseek-chat, weight: 5, name: new-model}

The same ``sticky_by`` value always lands in the same arm (SHA-256 of salt and value), so a user
never flips between models. ``user`` is the authenticated key's user, else the end user the client
names (the OpenAI ``user`` field): an arm is a choice between models the route allows anyway, so
a client-named end user is good enough to keep it sticky. A request without that field is assigned
by its trace id (not sticky).
The arm is recorded in the decision (``attrs.split_arm``) so cost can be reported per arm.
"""

from __future__ import annotations

import hashlib
import re
from bisect import bisect_right

from pydantic import Field, ValidationInfo, field_validator

from litellm_payg import hookimpl
from litellm_payg.core.bounds import Weight
from litellm_payg.core.decision import Step
from litellm_payg.core.scopes import BUILTIN
from litellm_payg.rules import Rule, RuleOptions, matches

_FIELD = re.compile(r"^(user|team|api_key|end_user|trace_id|metadata\.[A-Za-z0-9_\-]+)$")


class Arm(RuleOptions):
    model: str = Field(min_length=1)
    weight: Weight
    name: str | None = None


class SplitOptions(RuleOptions):
    arms: list[Arm] = Field(min_length=2)
    sticky_by: str = "user"
    salt: str = ""
    fallback_to_other_arms: bool = False

    @field_validator("sticky_by")
    @classmethod
    def _known_field(cls, value: str, info: ValidationInfo) -> str:
        # besides the request's own fields, every request attribute a scope kind declares (``org``)
        scopes = (info.context or {}).get("scopes") if isinstance(info.context, dict) else None
        declared = [k.name for k in (scopes or BUILTIN).attributes() if k.field is None]
        if not _FIELD.match(value) and value not in declared:
            raise ValueError(f"expected user, team, api_key, end_user, trace_id, {''.join(n + ', ' for n in declared)}"
                             "or metadata.<field>")
        return value


def bucket(salt: str, key: str) -> float:
    """A stable number in [0, 1) for ``key``: the same key always gets the same number."""
    digest = hashlib.sha256(f"{salt}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class Split(Rule):
    name = "split"
    Options = SplitOptions

    def __init__(self, options, context):
        super().__init__(options, context)
        total = sum(arm.weight for arm in options.arms)
        acc, bounds = 0.0, []
        for arm in options.arms:
            acc += arm.weight / total
            bounds.append(acc)
        bounds[-1] = 1.0
        self._bounds = bounds
        self._labels = [arm.name or arm.model for arm in options.arms]

    def model_refs(self):
        return [(f"{self.context.field}.arms[{i}].model", arm.model) for i, arm in enumerate(self.options.arms)]

    def arm_for(self, key: str) -> int:
        return min(bisect_right(self._bounds, bucket(self.options.salt, key)), len(self._bounds) - 1)

    def apply(self, request, candidates):
        opts = self.options
        key = request.field_value(opts.sticky_by)
        if key is None and opts.sticky_by == "user":
            key = request.field_value("end_user")  # a key without a user: its client's end users
        sticky = key is not None
        if key is None:
            key = request.trace_id or ""
        index = self.arm_for(key)
        arm = opts.arms[index]
        label = self._labels[index]
        kept, rest, dropped = [], [], []
        for c in candidates:
            if matches(arm.model, c):
                kept.append(c)
            elif opts.fallback_to_other_arms and any(matches(a.model, c) for a in opts.arms):
                rest.append(c)
            else:
                dropped.append(Step.drop(c, f"request is in split arm {label!r}", self.name))
        how = f"{opts.sticky_by}={key}" if sticky else f"no {opts.sticky_by}, by trace id (not sticky)"
        return Step(kept + rest, dropped, f"split: arm {label!r} ({how})", {"split_arm": label})


@hookimpl
def payg_register_rules(register):
    register(Split)
