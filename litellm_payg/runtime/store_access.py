"""Every call on the spend guard and the health store that is not one request's attempt.

Why: the spend guard (``Engine.spend``: reserve, settle, release, the ledger behind it) and the
health store (``Engine.health``: circuit breakers, latency) are the runtime's to call, so that how a
reservation ends, and what feeds a breaker, is decided in one place
(:class:`~litellm_payg.runtime.attempt.Attempt` for a request's attempts). Code outside ``runtime/``
(the adapter's metrics and response headers, the run-control endpoint, the test fixtures and
replays, the judged sample) asks through these functions instead; ``tests/test_layers.py`` checks
that no call on either store is made anywhere else.

Reads only, except :func:`close` (a tool that built an engine without ``attach`` closes its stores)
and the judged sample's own reservation (:func:`reserve_judged` and the two after it): spend the
plugin makes outside any request, capped by its own bucket.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from litellm_payg.core.buckets import Bucket
from litellm_payg.core.scopes import ScopeRegistry


# -- configuration read through the spend guard ---------------------------------------------------


def scopes(engine: Any) -> ScopeRegistry:
    """The policy's scope kinds (``payg_register_scopes``), as the spend guard applies them."""
    return engine.spend.scopes


def now(engine: Any) -> float:
    """The engine's clock (``clock=``), which the budget windows are computed with."""
    return engine.spend.clock()


# -- reads ----------------------------------------------------------------------------------------


def missing_run(engine: Any, request: Any) -> str | None:
    """Why ``request`` may not be sent without a run (``sessions.required``), or None."""
    return engine.spend.missing_run(request)


def has_run_budgets(engine: Any) -> bool:
    """Whether the policy has a run budget (``window: session:<idle>``)."""
    return bool(engine.spend.runs)


def request_runs(engine: Any, request: Any) -> list[Any]:
    """The request's run under every run budget that applies to it, tightest first
    (``SpendControl.request_runs``): what the proxy's response headers report."""
    return engine.spend.request_runs(request)


def budget_usage(engine: Any, requests: Iterable[tuple[Any, Any]], now_s: float, when: Any) -> list[tuple[Any, Any]]:
    """Every budget bucket the ``(request, candidate)`` pairs fall in at ``when`` (a datetime of
    ``now_s``), each with its usage read from the ledger in one call: ``(BudgetBucket, Usage)``,
    for the buckets the ledger knows. Empty without budgets. Raises what the ledger raises."""
    from litellm_payg.core.budgets import all_buckets

    spend = engine.spend
    if not spend.budgets:
        return []
    found: dict[str, Any] = {}
    for request, candidate in requests:
        try:
            for bb in all_buckets(spend.budgets, request, candidate, when, spend.tz):
                found.setdefault(bb.bucket.key, bb)
        except ValueError:
            continue
    usage = spend.ledger.usage([bb.bucket for bb in found.values()], now=now_s)
    return [(bb, usage[key]) for key, bb in found.items() if usage.get(key) is not None]


def has_budgets(engine: Any) -> bool:
    return bool(engine.spend.budgets)


def breaker_states(engine: Any, deployment_ids: Sequence[str], now_s: float) -> dict[str, Any] | None:
    """The circuit breakers' state of these deployments, or None without ``failover:`` (no health
    store). Raises what the store raises."""
    health = getattr(engine, "health", None)
    if health is None:
        return None
    return health.snapshot(list(deployment_ids), now_s) if deployment_ids else {}


def records(engine: Any) -> list[Any]:
    """The ledger's spend records (a ``memory://`` ledger's: tests and replays)."""
    return engine.spend.ledger.records()


def all_settled(engine: Any) -> bool:
    """Whether every admitted request was settled or released: no open reservation in the
    ledger, and none admitted and still running (without budgets those are not in the ledger)."""
    return engine.spend.ledger.open_reservations() == 0 and not engine.spend.in_flight


def flush(engine: Any) -> None:
    """Write the ledger's waiting (batched) records now, if it batches them."""
    flush_ledger = getattr(engine.spend.ledger, "flush", None)
    if flush_ledger is not None:
        flush_ledger(quiet=True)


def ledger_identity(engine: Any) -> int:
    """Which ledger object the engine writes to (two engines may share one)."""
    return id(engine.spend.ledger)


# -- closing --------------------------------------------------------------------------------------


def close(engine: Any) -> None:
    """Close the engine's spend guard and health store (``Engine.detach`` does this for an
    attached engine; a tool that only picks and settles calls this)."""
    engine.spend.close()
    if engine.health is not None:
        engine.health.close()


def close_spend(engine: Any) -> None:
    """Close the engine's spend guard only (its ledger)."""
    engine.spend.close()


# -- a judged sample's own spend ------------------------------------------------------------------


def reserve_judged(engine: Any, reservation_id: str, bucket: Bucket, usd: float, attrs: Mapping[str, Any],
                   now_s: float) -> bool:
    """Reserve ``usd`` for a judged sample on its enforced window bucket, in the ledger directly
    (the ledger's atomic reserve, shared by replicas; a sample is no request: no budget of the
    policy applies to it). False when the window's judging budget is spent. Raises what the
    ledger raises."""
    return bool(engine.spend.ledger.reserve(reservation_id, [bucket], usd, ttl_s=600, now=now_s, attrs=dict(attrs)).ok)


def settle_judged(engine: Any, reservation_id: str, cost_usd: float) -> None:
    """Charge a judged sample what its two calls cost."""
    engine.spend.ledger.settle(reservation_id, cost_usd)


def release_judged(engine: Any, reservation_id: str) -> None:
    """A judged sample that billed nothing: free its reservation."""
    engine.spend.ledger.release(reservation_id)
