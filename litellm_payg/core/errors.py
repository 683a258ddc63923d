"""The errors litellm-payg raises on purpose.

::

    PaygError
     ├── PolicyError            a policy file (or dict) is not valid; names file, line and field
     │    └── UnknownPriceError a cost rule could reach a deployment whose price nobody knows
     ├── PluginError            a plugin module could not be loaded or has a hook typo
     ├── NoDeploymentLeft       the policy dropped every candidate; says why for each one
     ├── BudgetRefused          a `block` budget would be exceeded (raised by the runtime's spend control)
     │    └── BudgetExceeded    the same, as the adapter raises it to LiteLLM: also a litellm.BudgetExceededError
     │                          (``adapter/litellm_errors.py``: this module stays importable without LiteLLM)
     ├── LedgerDown             the ledger is unreachable under on_ledger_error: fail_closed (runtime/spend.py)
     └── InvalidAmount          an amount the ledger cannot store (negative, nan, inf, too large)

Input errors carry enough context to be printed without a traceback (the CLI does exactly that).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any


class PaygError(Exception):
    """Base class: anything litellm-payg raises on purpose."""


class BudgetRefused(PaygError):
    """A ``block`` budget would be exceeded by this request; the message names the budget, its
    window, spend, limit and reset time. Callers of a Router or the proxy see it as
    ``BudgetExceeded`` (a subclass that is also LiteLLM's ``BudgetExceededError``: HTTP 429)."""

    status_code = 429
    # LiteLLM's router retries a 429 after a backoff; a budget block must not be retried (the
    # router reads an error's own ``num_retries`` as the retries it allows).
    num_retries = 0

    def __init__(self, message: str | None = None, /, *, budget: str = "", scope: str = "", window: str = "",
                 spent_usd: float = 0.0, reserved_usd: float = 0.0, limit_usd: float = 0.0,
                 estimate_usd: float = 0.0, resets_at: datetime | None = None, rule: str = "cap",
                 count: int | None = None, count_limit: int | None = None, reserve_usd: float | None = None,
                 repeated: str | None = None, tokens_asked: int | None = None):
        if message is not None and not budget:
            # LiteLLM's BudgetExceededError.__init__ ends with ``super().__init__(message)``, which
            # reaches this class in the subclass's MRO: the fields are already set.
            Exception.__init__(self, message)
            return
        self.budget = budget
        self.scope = scope
        self.window = window
        self.spent_usd = spent_usd
        self.reserved_usd = reserved_usd
        self.limit_usd = limit_usd
        self.estimate_usd = estimate_usd
        self.resets_at = resets_at
        #: which rule refused: ``cap`` (the dollar limit), and for run budgets (``session:`` windows)
        #: ``max_requests``, ``loop`` (the loop guard), ``reserve`` (the final reserve), ``tokens``
        #: (``max_total_tokens``), ``duration`` (``max_duration``) or ``closed`` (an operator closed the run)
        self.rule = rule
        #: ``max_requests``: the run's requests so far; ``loop``: times this prompt was already sent
        self.count = count
        #: ``max_requests``: the cap; ``loop``: ``loop_guard`` (the send it refuses)
        self.count_limit = count_limit
        #: ``reserve``: the dollars kept for the run's final requests
        self.reserve_usd = reserve_usd
        #: ``loop``: what repeated, when not the whole prompt (``the same tool call search(args sha256:...)``)
        self.repeated = repeated
        #: ``tokens``: this request's bound of tokens (its prompt and every output token it may produce);
        #: ``count`` is then the run's tokens so far (settled and in flight) and ``count_limit`` the cap
        #: (grants included); for ``duration``, ``count_limit`` is ``max_duration`` in seconds
        self.tokens_asked = tokens_asked
        self.message = self._describe()
        Exception.__init__(self, self.message)

    def _run_spend(self) -> str:
        return (f"the run spent ${self.spent_usd:.6f} (+ ${self.reserved_usd:.6f} in flight) "
                f"of ${self.limit_usd:.6f}")

    def _describe(self) -> str:
        money = (f"spent ${self.spent_usd:.6f} + in flight ${self.reserved_usd:.6f} + this request's estimate "
                 f"${self.estimate_usd:.6f}")
        window = self.window
        if window.startswith("session:"):
            from litellm_payg.core.identity import session_in

            run = session_in(self.scope.partition(":")[2])  # as the client named it, without its owner
            head = f"litellm-payg: run {run!r} (budget {self.budget!r}, {window})"
            fresh = f"the run starts afresh after {window.split(':', 1)[1]} idle"
            if self.rule == "closed":
                return (f"{head} was closed by the operator: no request of it is served until the operator grants it "
                        f"more; {self._run_spend()}; {fresh}")
            if self.rule == "tokens":
                return (f"{head} refused by max_total_tokens: the run's {self.count} tokens (settled and in flight) + "
                        f"this request's bound {self.tokens_asked} > {self.count_limit}; {self._run_spend()}; {fresh}")
            if self.rule == "duration":
                return (f"{head} refused by max_duration: its first request was more than {self.count_limit}s (plus any "
                        f"seconds granted) ago; {self._run_spend()}; {fresh}")
            if self.rule == "max_requests":
                return (f"{head} refused by max_requests: {self.count} of {self.count_limit} requests used; "
                        f"{self._run_spend()}; {fresh}")
            if self.rule == "loop" and self.repeated:
                return (f"{head} refused by the loop guard: {self.repeated} was already seen {self.count} times in "
                        f"this run (loop_guard: {self.count_limit}), a likely loop; {self._run_spend()}; {fresh}")
            if self.rule == "loop":
                return (f"{head} refused by the loop guard: the same prompt was already sent {self.count} times in "
                        f"this run (loop_guard: {self.count_limit}), a likely loop; {self._run_spend()}; {fresh}")
            if self.rule == "reserve":
                return (f"{head} refused by final_reserve: {money} would reach into the final reserve "
                        f"(${self.reserve_usd or 0:.6f} of the limit ${self.limit_usd:.6f} is kept for the run's final "
                        f"requests); {fresh}")
            return f"{head} refused by its cap: {money} > limit ${self.limit_usd:.6f}; {fresh}"
        resets = f"resets at {_isoformat(self.resets_at)}" if self.resets_at else f"rolling window {window.split(':', 1)[-1]}"
        return (f"litellm-payg: budget {self.budget!r} ({self.scope}, {window}) exceeded: {money} "
                f"> limit ${self.limit_usd:.6f}; {resets}")

    def __str__(self) -> str:
        return self.message

    def retry_after_s(self, now: datetime | None = None) -> int | None:
        """Whole seconds until waiting can help: until the window resets, for a calendar window
        (``resets_at`` known). None when waiting does not lift the refusal at a known time: a
        rolling window (spend leaves it gradually), and a run (a ``session:`` window: its
        ``max_requests``, loop guard, final reserve and cap hold until the run goes idle and a new
        one starts -- the client should stop, not wait)."""
        if self.resets_at is None:
            return None
        now = now or datetime.now(self.resets_at.tzinfo)
        return max(1, math.ceil((self.resets_at - now).total_seconds()))

    def as_dict(self) -> dict[str, Any]:
        return {
            "budget": self.budget,
            "scope": self.scope,
            "window": self.window,
            "spent_usd": self.spent_usd,
            "reserved_usd": self.reserved_usd,
            "limit_usd": self.limit_usd,
            "estimate_usd": self.estimate_usd,
            "resets_at": self.resets_at.isoformat() if self.resets_at else None,
            "rule": self.rule,
            "count": self.count,
            "count_limit": self.count_limit,
            "reserve_usd": self.reserve_usd,
            "repeated": self.repeated,
            "tokens_asked": self.tokens_asked,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "BudgetRefused":
        resets = data.get("resets_at")
        return cls(**{**data, "resets_at": datetime.fromisoformat(resets) if resets else None})  # type: ignore[arg-type]


#: a window's reset time as a refusal writes it, by the time: every request a budget blocks until its
#: window resets names the same one (a busy what-if replay: hundreds of thousands); bounded
_RESETS: dict[tuple[datetime, Any, int], str] = {}


def _isoformat(when: datetime) -> str:
    # keyed with its tzinfo and fold too: equal datetimes (one instant, or one wall time in one zone)
    # may still differ in the offset they print
    key = (when, when.tzinfo, when.fold)
    text = _RESETS.get(key)
    if text is None:
        if len(_RESETS) >= 1000:
            _RESETS.clear()
        text = _RESETS[key] = when.isoformat()
    return text


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a policy: where (file, line, dotted field) and what was expected."""

    field: str
    message: str
    line: int | None = None
    hint: str | None = None

    def render(self, source: str | None) -> str:
        where = source or "<policy>"
        if self.line is not None:
            where = f"{where}:{self.line}"
        text = f"{where}: {self.field or '(top level)'}: {self.message}"
        if self.hint:
            text += f"\n  Hint: {self.hint}"
        return text


class PolicyError(PaygError, ValueError):
    """A policy that cannot be used. ``problems`` lists every field at fault, not just the first."""

    def __init__(self, problems: Sequence[Problem], source: str | None = None):
        self.problems = list(problems)
        self.source = source
        super().__init__("\n".join(p.render(source) for p in self.problems))


class UnknownPriceError(PolicyError):
    """Unknown price is an error, not $0: a cost rule or budget must never pass a deployment silently."""


class PluginError(PaygError):
    """A plugin named in a policy file or an entry point could not be used."""


class UnboundedCost(PaygError):
    """A request whose cost on a deployment the plugin cannot bound (no price for what it is
    billed by), under a policy without ``requests.unbounded_reserve_usd``: refused (HTTP 400)
    rather than reserved at $0."""

    def __init__(self, message: str, deployment_id: str):
        super().__init__(message)
        self.message = message
        self.deployment_id = deployment_id

    def __str__(self) -> str:
        return self.message


class InvalidAmount(PaygError, ValueError):
    """An amount of money (or a TTL) that a ledger refuses to store: negative, nan, infinite, or
    larger than a 64-bit nano-dollar counter can hold (``bounds.MAX_USD``).

    Deliberately *not* a ``LedgerError``: those mean the ledger is unreachable or misconfigured and
    are handled per ``on_ledger_error`` -- under ``fail_open`` that admits the request. An amount
    the ledger refuses comes from the request (or a price), not from an outage, so it must never
    open the gate: it reaches the caller as a 400, is final (``num_retries = 0``, a retry computes
    the same amount) and nothing is reserved.
    """

    status_code = 400
    num_retries = 0


class NoDeploymentLeft(PaygError):
    """Raised when the policy drops every candidate; the message lists each one and why.

    Modelled on vcrpy's "no match" errors: the user should never have to guess which rule ate a
    deployment.
    """

    status_code = 400

    def __init__(self, group: str, dropped: Sequence[tuple[str, str, str]], drops: Sequence[Any] = ()):
        self.group = group
        self.dropped = list(dropped)
        #: the structured ``Drop`` records behind ``dropped``, when the raiser has them
        self.drops = list(drops)
        lines = [f"litellm-payg: no deployment of model group {group!r} is allowed by the policy."]
        for deployment, model, reason in self.dropped:
            lines.append(f"  - {deployment} ({model}): {reason}")
        if not self.dropped:
            lines.append("  (the group had no healthy deployments to start with)")
        super().__init__("\n".join(lines))
