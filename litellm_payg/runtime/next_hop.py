"""After a failed attempt: try another candidate, which ones, or give up.

``plan_next`` reads the failure (the adapter's ``failures.diagnose`` of the exception) and the policy's ``failover.on`` and
answers with a ``NextHop``. The adapter calls it on every failed attempt; it is plain data in, plain
data out (no LiteLLM call, no store), so it is tested without a Router. It used to live in the
``failover`` default plugin, which made the adapter import a plugin module; plugins are registered
by name and imported by nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from litellm_payg.core.decision import Candidate
from litellm_payg.policy.failover import Action, FailoverSettings
from litellm_payg.core.failure import Failure


@dataclass(frozen=True)
class NextHop:
    """What to do after a failed attempt."""

    action: Action
    failure: Failure
    candidates: list[Candidate]  # to try next, in order; empty: give up and raise the error
    reason: str


def plan_next(settings: FailoverSettings, failure: Failure, failed: Candidate | None,
              ordered: Sequence[Candidate], attempted: Sequence[str],
              prompt_tokens: int | Callable[[], int] | None = None) -> NextHop:
    """Given the ordered candidates of the decision, the ids already attempted and the last
    attempt's failure (on ``failed``), what to try next according to ``failover.on``.
    ``prompt_tokens`` may be a callable: the prompt is then counted only if the larger-context step
    needs its size."""
    action = settings.action_for(failure.cls.value)
    remaining = [c for c in ordered if c.deployment_id not in set(attempted)]
    if action == "fail":
        return NextHop(action, failure, [], f"{failure.cls.value}: failover.on.{failure.cls.value} is 'fail'")
    if action == "larger_context":
        limit = failed.max_input_tokens if failed is not None else None
        floor = limit if limit is not None else (prompt_tokens() if callable(prompt_tokens) else prompt_tokens)
        if floor is None:
            return NextHop(action, failure, [], "context window exceeded and neither the failed deployment's "
                                                 "max_input_tokens nor the prompt size is known")
        bigger = [c for c in remaining if c.max_input_tokens is not None and c.max_input_tokens > floor]
        what = f"max_input_tokens > {floor}" + (" (the failed deployment's)" if limit is not None else " (the prompt)")
        if not bigger:
            return NextHop(action, failure, [], f"context window exceeded; no untried candidate has {what}")
        return NextHop(action, failure, bigger, f"context window exceeded; trying candidates with {what}")
    if not remaining:
        return NextHop(action, failure, [], f"{failure.cls.value}: every candidate was tried")
    return NextHop(action, failure, remaining, f"{failure.cls.value}: trying the next candidate")
