"""``failover``: order candidates for failover, drop tripped deployments, try slow ones last.

Runs on every request once the policy has a ``failover:`` section (``failover_settings.py``), from
the breaker and latency state the decision's snapshot holds (``snapshot.health``, read from the
health store by ``Engine.snapshot``; this plugin never reads a store):

1. order — a group with a chain in ``failover.chains`` is ordered by it (candidates not in the chain
   are dropped); other groups are sorted cheapest first for this request when
   ``order: cheapest_first``, or left in the order the route's rules gave (``order: policy``);
2. circuit breakers — a deployment whose breaker is open is dropped (the reason says since when,
   until when, and why it opened); a half-open one is kept only while a probe slot is free (the
   runtime's lifecycle claims the slot with ``health.allow`` when it actually picks it);
3. latency — a deployment whose p95 latency is over ``max_latency_ms`` (or whose p95
   time-to-first-token is over ``first_token_timeout_ms``) is moved behind the others.

The other half, what to do after a failed attempt, is ``litellm_payg.runtime.next_hop.plan_next``: a
request's ``runtime.attempt.Attempt`` keeps its last failure and its next pick runs the hop
(``Lifecycle.next_candidates``), so it lives outside this plugin (a plugin is registered, never
imported); the adapter only pulls LiteLLM's retry lever (``adapter/failure_path.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone

from litellm_payg import hookimpl
from litellm_payg.hook_chain import silent_when
from litellm_payg.core.decision import Candidate, RouteRequest, Step
from litellm_payg.policy.failover import FailoverSettings
from litellm_payg.rules import matches
from litellm_payg.core.snapshot import DeploymentHealth, is_slow

BY = "failover"


def _at(ts: float | None) -> str:
    if ts is None:
        return "?"
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _breaker_reason(h: DeploymentHealth, settings: FailoverSettings) -> str | None:
    cb = settings.circuit_breaker
    if h.state == "open":
        why = (f"{cb.failures} failures within {cb.within_s:g}s" if h.opened_by == "failures"
               else "a half-open probe failed" if h.opened_by == "probe" else "tripped")
        return f"circuit breaker open since {_at(h.opened_at)} until {_at(h.open_until)} ({why})"
    if h.state == "half_open" and not h.probe_free:
        return (f"circuit breaker half-open since {_at(h.open_until)}; its {h.probes_allowed} probe "
                f"slot{'s are' if h.probes_allowed != 1 else ' is'} taken")
    return None


def _ms(seconds: float | None) -> str:
    return "?" if seconds is None else f"{seconds * 1000:.0f}ms"


def order_candidates(request: RouteRequest, candidates: Sequence[Candidate],
                     settings: FailoverSettings) -> tuple[list[Candidate], list]:
    """Step 1 alone: ``(kept in order, drops)``."""
    chain = settings.chains.get(request.group)
    if chain is not None:
        ranked, dropped = [], []
        for c in candidates:
            pos = next((i for i, ref in enumerate(chain) if matches(ref, c)), None)
            if pos is None:
                dropped.append(Step.drop(c, f"not in failover.chains.{request.group}", BY))
            else:
                ranked.append((pos, c))
        ranked.sort(key=lambda pc: pc[0])  # stable: two deployments of one model keep their order
        return [c for _, c in ranked], dropped
    if settings.order == "cheapest_first":
        p, o = request.prompt_tokens, request.output_tokens
        return sorted(candidates, key=lambda c: (not c.priced, c.estimate_usd(p, o) if c.priced else 0.0)), []
    return list(candidates), []


def apply_failover(request: RouteRequest, candidates: Sequence[Candidate], settings: FailoverSettings,
                   health: Mapping[str, DeploymentHealth] | None, health_error: str | None = None) -> Step:
    """Order, drop tripped deployments and move slow ones last, from ``health`` (breaker and
    latency state by deployment id, as in a snapshot; None: no health store). ``health_error``
    says why the store could not be read: then breakers and latency are ignored (fail open)."""
    kept, dropped = order_candidates(request, candidates, settings)
    notes: list[str] = []
    if health_error is not None and kept:
        return Step(kept, dropped, f"failover: health store unavailable ({health_error}); breakers and latency ignored")
    if health is not None and kept:
        # a deployment the snapshot has no state for (it was not a candidate when the snapshot was
        # taken) is treated as healthy: the adapter's breaker claim (health.allow) still applies
        alive = []
        for c in kept:
            h = health.get(c.deployment_id)
            reason = None if h is None else _breaker_reason(h, settings)
            if reason is None:
                alive.append(c)
            else:
                dropped.append(Step.drop(c, reason, BY))
        fast, slow = [], []
        for c in alive:
            h = health.get(c.deployment_id)
            if h is not None and is_slow(h, settings.max_latency_ms, settings.first_token_timeout_ms):
                slow.append(c)
                notes.append(f"{c.deployment_id} ({c.model}) tried last: p95 latency {_ms(h.latency_p95_s)}"
                             f" (max {settings.max_latency_ms or '-'}ms), p95 first token {_ms(h.ttft_p95_s)}"
                             f" (max {settings.first_token_timeout_ms or '-'}ms)")
            else:
                fast.append(c)
        kept = fast + slow
        probing = [c.deployment_id for c in kept if (h := health.get(c.deployment_id)) is not None and h.state == "half_open"]
        if probing:
            notes.append("half-open, may be probed: " + ", ".join(probing))
    return Step(kept, dropped, ("failover: " + "; ".join(notes)) if notes else None)


@hookimpl(trylast=True)
@silent_when(lambda kwargs: kwargs["snapshot"].failover is None)
def payg_filter_candidates(request, candidates, snapshot):
    settings = snapshot.failover
    if settings is None:
        return None
    return apply_failover(request, candidates, settings, snapshot.health, snapshot.health_error)
