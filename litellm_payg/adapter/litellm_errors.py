"""The plugin's refusals as LiteLLM's own error types, raised where the adapter hands them to LiteLLM.

The runtime refuses with :class:`~litellm_payg.core.errors.BudgetRefused` (it does not import
LiteLLM); SDK callers and the proxy expect LiteLLM's ``BudgetExceededError`` (the proxy answers it
with HTTP 429, and code written for LiteLLM's own budgets catches it). :class:`BudgetExceeded` is
both.
"""

from __future__ import annotations

from typing import Any

import litellm

from litellm_payg.core.errors import BudgetRefused


class BudgetExceeded(litellm.BudgetExceededError, BudgetRefused):
    """A ``block`` budget would be exceeded by this request. Reaches SDK callers as is and proxy
    clients as HTTP 429; the message names the budget, its window, spend, limit and reset time."""

    def __init__(self, **fields: Any):
        BudgetRefused.__init__(self, **fields)
        kind, _, value = self.scope.partition(":")
        litellm.BudgetExceededError.__init__(
            self, current_cost=self.spent_usd, max_budget=self.limit_usd, message=self.message,
            entity_type=kind, entity_id=value or None,
        )
        self.status_code = 429

    @classmethod
    def from_refusal(cls, refused: BudgetRefused) -> "BudgetExceeded":
        """The runtime's refusal, as the error LiteLLM and its callers expect."""
        if isinstance(refused, cls):
            return refused
        return cls.from_dict(refused.as_dict())  # type: ignore[return-value]
