"""The plugin's refusals as LiteLLM's own error types, raised where the adapter hands them to LiteLLM.

The runtime refuses with :class:`~litellm_payg.core.errors.BudgetRefused` (it does not import
LiteLLM); SDK callers and the proxy expect LiteLLM's ``BudgetExceededError`` (the proxy answers it
with HTTP 429, and code written for LiteLLM's own budgets catches it). :class:`BudgetExceeded` is
both.

**A refusal says it is final, to every client.** The OpenAI SDK retries a 429 twice and agent
frameworks read 429 as "back off and try again", so the error carries what the proxy turns into the
HTTP answer (LiteLLM's proxy copies an exception's ``headers``, ``type`` and
``provider_specific_fields`` into the response, 1.100 to 1.110 alike):

- ``headers``: ``x-should-retry: false`` (the OpenAI SDK obeys it before it looks at the status) and,
  only for a calendar window whose reset time is known, ``retry-after``: the seconds until it resets;
- ``type``: ``budget_exceeded`` (the body's ``error.type``: what a program tests);
- ``provider_specific_fields``: ``{"payg": {...}}``: the budget, scope, window, rule, limit, spend and
  ``retry_after_s`` (the body's ``error.provider_specific_fields.payg``);
- ``num_retries = 0``: LiteLLM's Router reads it as the retries this error allows.
"""

from __future__ import annotations

from typing import Any

import litellm

from litellm_payg.core.errors import BudgetRefused

#: the refusal's ``error.type`` in the proxy's answer (LiteLLM's own budget errors use the same word)
ERROR_TYPE = "budget_exceeded"
HEADER_SHOULD_RETRY = "x-should-retry"
HEADER_RETRY_AFTER = "retry-after"


class BudgetExceeded(litellm.BudgetExceededError, BudgetRefused):
    """A ``block`` budget would be exceeded by this request. Reaches SDK callers as is and proxy
    clients as HTTP 429 with ``x-should-retry: false``; the message names the budget, its window,
    spend, limit and reset time."""

    type = ERROR_TYPE
    # no ``code``: LiteLLM's proxy reads an exception's ``code`` as its HTTP status to tell a client
    # error (one ERROR line) from a fault (a traceback in the log)
    param = None

    def __init__(self, **fields: Any):
        BudgetRefused.__init__(self, **fields)
        kind, _, value = self.scope.partition(":")
        litellm.BudgetExceededError.__init__(
            self, current_cost=self.spent_usd, max_budget=self.limit_usd, message=self.message,
            entity_type=kind, entity_id=value or None,
        )
        self.status_code = 429
        self.num_retries = 0

    @property
    def headers(self) -> dict[str, str]:
        """The response headers the proxy answers this refusal with: a new dict on every read (the
        proxy adds its own to what it gets), ``retry-after`` counted from now."""
        headers = {HEADER_SHOULD_RETRY: "false"}
        wait = self.retry_after_s()
        if wait is not None:
            headers[HEADER_RETRY_AFTER] = str(wait)
        return headers

    @property
    def provider_specific_fields(self) -> dict[str, Any]:
        """What the proxy puts in the body's ``error.provider_specific_fields``: the refusal's fields
        under ``payg`` (rule, budget, scope, window, limit, spend, reset time, seconds to wait)."""
        return {"payg": {"code": ERROR_TYPE, **self.as_dict(), "retry_after_s": self.retry_after_s()}}

    @classmethod
    def from_refusal(cls, refused: BudgetRefused) -> "BudgetExceeded":
        """The runtime's refusal, as the error LiteLLM and its callers expect."""
        if isinstance(refused, cls):
            return refused
        return cls.from_dict(refused.as_dict())  # type: ignore[return-value]
