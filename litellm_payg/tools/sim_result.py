"""What one simulation found (:class:`Result`): per deployment, class and budget, the figures the
table, CSV and HTML report (``sim_output.py``) and ``--json`` (:meth:`Result.as_dict`) show, and the
assumptions they rest on (:func:`assumptions`).

Why apart from the driver: the driver counts, this module adds up and states; ``sim_output.py``
reads a Result by duck typing, ``what-if`` not at all.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from litellm_payg.adapter import litellm_versions
from litellm_payg.tools import sim_runs
from litellm_payg.tools.sim_baselines import DAYS_PER_MONTH, Plan
from litellm_payg.tools.sim_traffic import TrafficClass

DEFAULT_SEED = 0  # the random generator of a run (faults, the shuffle of a group without a route)


@dataclass
class Result:
    """One simulation: its traffic, prices and counts, the baselines and the assumptions."""

    policy_source: str
    traffic_source: str
    litellm_version: str
    start: float
    end: float
    classes: list[TrafficClass]
    candidates: dict[str, list[Any]]
    prices: list[dict[str, Any]]
    #: (deployment id, class index) -> requests served
    served: dict[tuple[str, int], int]
    unit_cost: dict[tuple[str, int], float]
    blocked: dict[str, int]  # budget -> requests refused
    downgraded: dict[str, int]  # budget -> requests that lost a deployment to it
    no_deployment: int
    served_by_class: list[int]
    dropped_by: dict[str, int]
    first_block: dict[str, float]
    baselines: list[dict[str, Any]]
    plan: Plan | None
    assumptions: list[str]
    elapsed_s: float
    meta: dict[str, Any]
    seed: int = DEFAULT_SEED
    #: (deployment id, failure class) -> attempts that failed with it
    attempts_failed: dict[tuple[str, str], int] = field(default_factory=dict)
    #: deployment id -> requests that failed on it and were tried again (failed over)
    failed_over: dict[str, int] = field(default_factory=dict)
    #: deployment id -> requests whose final attempt failed on it (failed for good)
    failed_final: dict[str, int] = field(default_factory=dict)
    #: (deployment id, class index) -> invalid answers charged (billed, then rejected)
    failed_charges: dict[tuple[str, int], int] = field(default_factory=dict)
    #: deployment id -> times its circuit breaker opened / requests it kept away from it
    breaker_opened: dict[str, int] = field(default_factory=dict)
    breaker_moved: dict[str, int] = field(default_factory=dict)
    breakers: bool = False  # the policy has ``failover:`` (circuit breakers)
    #: the traffic's runs (``sim_runs.Run``) with what became of each
    runs: list[Any] = field(default_factory=list)
    #: the three-way comparison of the runs (``sim_runs``), when the policy has a run budget
    run_comparison: dict[str, Any] | None = None
    #: requests a run budget's ``downgrade`` step routed (the route's rules set aside)
    run_downgrades: int = 0
    #: requests sent (a stopped run does not send the rest of its planned requests)
    sent_requests: int | None = None

    # -- figures ---------------------------------------------------------------------------------

    @property
    def requests(self) -> int:
        return sum(c.count for c in self.classes)

    @property
    def served_requests(self) -> int:
        return sum(self.served.values())

    def deployment_rows(self) -> list[dict[str, Any]]:
        """Per deployment that served or failed a request: requests served, their tokens and the
        cost (invalid answers charged included); with faults or breakers, what failed and moved."""
        rows: dict[str, dict[str, Any]] = {}
        cand = {c.deployment_id: c for cs in self.candidates.values() for c in cs}
        parts: dict[str, list[float]] = {}
        failing = self.failover_shown

        def row_of(dep: str) -> dict[str, Any]:
            row = rows.get(dep)
            if row is None:
                row = rows[dep] = {
                    "deployment": dep, "model": cand[dep].model, "provider": cand[dep].provider, "group": cand[dep].group,
                    "requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0,
                }
                if failing:
                    row.update({
                        "failed_attempts": 0, "failed_attempts_by_class": {}, "failed_over": self.failed_over.get(dep, 0),
                        "failed_final": self.failed_final.get(dep, 0), "invalid_answers_charged_usd": 0.0,
                        "breaker_opened": self.breaker_opened.get(dep, 0), "breaker_moved": self.breaker_moved.get(dep, 0),
                    })
            return row

        for (dep, ci), n in sorted(self.served.items()):
            cls = self.classes[ci]
            row = row_of(dep)
            row["requests"] += n
            row["prompt_tokens"] += n * cls.prompt_tokens
            row["completion_tokens"] += n * cls.completion_tokens
            parts.setdefault(dep, []).append(n * self.unit_cost[(dep, ci)])
        if failing:
            for dep in sorted({d for d, _ in self.attempts_failed} | set(self.breaker_opened) | set(self.breaker_moved)):
                row_of(dep)
            for (dep, fc), n in sorted(self.attempts_failed.items()):
                row = rows[dep]
                row["failed_attempts"] += n
                row["failed_attempts_by_class"][fc] = n
            for (dep, ci), n in sorted(self.failed_charges.items()):
                charge = n * self.unit_cost[(dep, ci)]
                rows[dep]["invalid_answers_charged_usd"] += charge
                parts.setdefault(dep, []).append(charge)
        for dep, row in rows.items():
            row["cost_usd"] = math.fsum(parts.get(dep, ()))
        return sorted(rows.values(), key=lambda r: (-r["cost_usd"], r["deployment"]))

    @property
    def failover_shown(self) -> bool:
        """Whether there is anything to say about failures: an attempt failed, or breakers exist."""
        return bool(self.attempts_failed) or self.breakers

    @property
    def failed_requests(self) -> int:
        """Requests that failed for good (their last attempt failed, with no retry left or allowed)."""
        return sum(self.failed_final.values())

    def charged(self) -> Iterator[tuple[str, int, int]]:
        """(deployment, class index, attempts charged): served answers and invalid ones (billed)."""
        for (dep, ci), n in self.served.items():
            yield dep, ci, n
        for (dep, ci), n in self.failed_charges.items():
            yield dep, ci, n

    @property
    def policy_cost(self) -> float:
        return math.fsum(n * self.unit_cost[(dep, ci)] for dep, ci, n in self.charged())

    @property
    def tokens(self) -> int:
        return sum(c.count * (c.prompt_tokens + c.completion_tokens) for c in self.classes)

    def runs_section(self) -> dict[str, Any]:
        """The runs' figures: the three-way comparison, or (the policy has no run budget) one row."""
        if self.run_comparison is not None:
            return self.run_comparison
        row = {"key": "as_written", "label": "policy as written", "description": "the policy has no run budget",
               **sim_runs.summary("policy as written", self.runs)}
        return {"budget": None, "budget_as_written": None, "rows": [row]}

    def baseline(self, kind: str) -> dict[str, Any] | None:
        return next((b for b in self.baselines if b["kind"] == kind), None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy_source,
            "traffic": self.traffic_source,
            "litellm_version": self.litellm_version,
            "price_map": litellm_versions.price_map(),
            "period": {"start": iso(self.start), "end": iso(self.end), "days": (self.end - self.start) / 86400},
            "requests": self.requests,
            "sent": self.sent_requests,
            "served": self.served_requests,
            "tokens": self.tokens,
            "policy_cost_usd": self.policy_cost,
            "deployments": self.deployment_rows(),
            "classes": [
                {
                    "name": c.name, "group": c.group, "prompt_tokens": c.prompt_tokens,
                    "completion_tokens": c.completion_tokens, "count": c.count, "served": self.served_by_class[i],
                    "served_by": {dep: n for (dep, ci), n in self.served.items() if ci == i},
                }
                for i, c in enumerate(self.classes)
            ],
            "prices": self.prices,
            "budget_blocks": dict(self.blocked),
            "budget_downgrades": dict(self.downgraded),
            "first_block_at": {k: iso(v) for k, v in self.first_block.items()},
            "no_deployment_left": self.no_deployment,
            "run_downgrades": self.run_downgrades,
            "failed_requests": self.failed_requests,
            "failover": {
                "seed": self.seed,
                "breakers": self.breakers,
                "failed_attempts": _nested(self.attempts_failed),
                "failed_over": dict(self.failed_over),
                "failed_for_good": dict(self.failed_final),
                "breaker_opened": dict(self.breaker_opened),
                "breaker_moved": dict(self.breaker_moved),
            },
            "dropped_by": dict(self.dropped_by),
            **({"runs": self.runs_section()} if self.runs else {}),
            "baselines": self.baselines,
            "assumptions": self.assumptions,
            "elapsed_s": self.elapsed_s,
            "scenario": self.meta,
        }


def _nested(counts: Mapping[tuple[str, str], int]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for (a, b), n in sorted(counts.items()):
        out.setdefault(a, {})[b] = n
    return out

def assumptions(result: Result, policy: Any, period_days: float) -> list[str]:
    """What the figures assume, one line each, printed under the table."""
    lines = [
        f"{litellm_versions.describe()}; "
        "cost of a request = litellm.cost_per_token(model, prompt_tokens, completion_tokens) of the deployment that served it",
        f"period: {iso(result.start)} to {iso(result.end)} ({period_days:g} days); each class's requests evenly spaced over it (or over its own 'time')",
        f"routing estimates assume {policy.defaults.expected_output_tokens} output tokens (policy defaults.expected_output_tokens) unless a class sets max_tokens; "
        "budget reservations assume the class's max_tokens, else the model's maximum output (its price map entry), "
        f"else {policy.defaults.reserve_output_tokens} (defaults.reserve_output_tokens); the charge uses the class's completion_tokens",
    ]
    for p in result.prices:
        if p["input_usd_per_1m"] is None:
            lines.append(f"price {p['deployment']}: unknown")
            continue
        q = "" if p["quality"] is None else f", quality {p['quality']:g}"
        lines.append(
            f"price {p['model']}: ${p['input_usd_per_1m']:.4f}/1M input, ${p['output_usd_per_1m']:.4f}/1M output ({p['source']}{q})"
        )
    for c in result.classes:
        lines.append(
            f"class {c.name}: {c.count:,} x ({c.prompt_tokens} prompt + {c.completion_tokens} completion tokens), group {c.group!r}"
            + (f", user {c.user}" if c.user else "") + (f", team {c.team}" if c.team else "")
            + "".join(f", {name} {value}" for name, value in c.attrs)
            + (f", tags {','.join(c.tags)}" if c.tags else "") + (f", max_tokens {c.max_tokens}" if c.max_tokens else "")
        )
    for c in result.classes:
        for f in c.faults:
            when = f" from {iso(f.start)} to {iso(f.end)}" if f.start is not None else ""
            rates = ", ".join(f"{fc} {p:g}" for fc, p in f.rates)
            lines.append(f"faults of class {c.name} on {f.deployment}{when}: {rates} per attempt (seed {result.seed})")
        if c.faults or c.retries is not None:
            n = c.retries if c.retries is not None else len(result.candidates[c.group]) - 1
            how = "its 'retries'" if c.retries is not None else "one per other deployment of the group"
            lines.append(f"class {c.name}: up to {n} retr{'y' if n == 1 else 'ies'} after a failed attempt ({how}), "
                         "as LiteLLM's Router with num_retries")
    lines.append("single-model baselines send every request of the group to that deployment, whatever its quality")
    lines.append("LiteLLM cost-based-routing: LiteLLM's LowestCostLoggingHandler picks the lowest input+output price per token, "
                 "regardless of request size (no tpm/rpm limits simulated)")
    lines.append("oracle: per request, the cheapest deployment (at the real charge) whose quality meets the policy's quality bar; a lower bound")
    if result.plan is not None:
        lines.append(
            f"plan: ${result.plan.fee_usd:g} per {DAYS_PER_MONTH:g}-day month including {result.plan.included_tokens:,} tokens "
            f"(prompt + completion); tokens above that at ${result.plan.overage_usd_per_1k:g} per 1K"
        )
    lines.extend(str(a) for a in result.meta.get("assumptions", []))
    return lines


def litellm_version() -> str:
    return litellm_versions.litellm_version()


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat().replace("+00:00", "Z")

