"""The errors litellm-payg raises on purpose.

::

    PaygError
     ├── PolicyError            a policy file (or dict) is not valid; names file, line and field
     │    └── UnknownPriceError a cost rule could reach a deployment whose price nobody knows
     ├── PluginError            a plugin module could not be loaded or has a hook typo
     ├── NoDeploymentLeft       the policy dropped every candidate; says why for each one
     ├── BudgetExceeded         a `block` budget (spend.py; also a litellm.BudgetExceededError)
     ├── LedgerDown             the ledger is unreachable under on_ledger_error: fail_closed (spend.py)
     └── InvalidAmount          an amount the ledger cannot store (negative, nan, inf, too large)

The two budget errors live in ``spend.py`` because one of them subclasses LiteLLM's own error, and
this module must stay importable without LiteLLM.

Input errors carry enough context to be printed without a traceback (the CLI does exactly that).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


class PaygError(Exception):
    """Base class: anything litellm-payg raises on purpose."""


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
