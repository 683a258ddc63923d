"""``simulate --scenario quality-convergence``: does routing on measured quality find the oracle?

The scenario (``scenarios/quality-convergence.jsonl``, one ``{"quality_scenario": {...}}`` line)
gives each model of one route a *hidden true quality* per traffic class, which can change over
time (``degrade``) and a model that only joins midway (``joins_at``). Each simulated request is
drawn a class, routed, and its answer drawn as passing with the serving model's true quality at
that moment; the pass/fail goes back as evidence (metric ``valid``, as the response validators
would record it) through ``engine.quality``, on the simulated clock. Three ways are compared on the
same requests, per window of ``window`` requests:

* **declared**: the policy's ``quality_floor`` on the ``models:`` scores (no evidence);
* **measured**: the policy as written (``measured:``, exploration within its budget);
* **oracle**: per request, the cheapest deployment whose true quality meets the bar.

Reported per window: the oracle's cost per 1,000 requests, and for declared and measured the cost
over the oracle and the share of requests served by a model whose true quality was below the bar;
then when the measured policy *settled* (the first window from which every window is at most
``max_over`` over the oracle's cost with at most ``max_below`` served below the bar), whether it
adopted the model that joined and dropped the one that degraded, whether all the requests together
meet the same two goals, and which cells' drop detectors alarmed (``quality.drop_false_alarm_rate``)
and at which request.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

SCENARIO_PACKAGE = "litellm_payg.tools.scenarios"
MAX_OVER = 0.03
MAX_BELOW = 0.01


class QualityScenarioError(ValueError):
    """A quality scenario that cannot be simulated (names the field)."""


@dataclass(frozen=True)
class SimModel:
    name: str
    true: Mapping[str, float]
    joins_at: int = 0
    degrade_at: int | None = None
    degraded: Mapping[str, float] = field(default_factory=dict)

    def quality(self, cls: str, i: int) -> float:
        if self.degrade_at is not None and i >= self.degrade_at:
            return self.degraded[cls]
        return self.true[cls]


@dataclass(frozen=True)
class QualityScenario:
    group: str
    requests: int
    per_hour: float
    start: float
    prompt_tokens: int
    completion_tokens: int
    classes: Mapping[str, float]
    models: Sequence[SimModel]
    window: int = 1000
    description: str = ""


def is_quality_scenario(name: str) -> bool:
    resource = resources.files(SCENARIO_PACKAGE) / f"{name}.jsonl"
    try:
        return resource.is_file() and "quality_scenario" in resource.read_text(encoding="utf-8")
    except OSError:
        return False


def load_quality_scenario(name: str) -> QualityScenario:
    text = (resources.files(SCENARIO_PACKAGE) / f"{name}.jsonl").read_text(encoding="utf-8")
    return parse_quality_scenario(json.loads(text.strip().splitlines()[0])["quality_scenario"], name)


def parse_quality_scenario(raw: Mapping[str, Any], source: str = "scenario") -> QualityScenario:
    def need(key: str) -> Any:
        if key not in raw:
            raise QualityScenarioError(f"{source}: quality_scenario.{key} is required")
        return raw[key]

    classes = dict(need("classes"))
    if not classes or any(not (isinstance(w, (int, float)) and w > 0) for w in classes.values()):
        raise QualityScenarioError(f"{source}: quality_scenario.classes maps each class to a weight > 0")
    models = []
    for name, spec in dict(need("models")).items():
        true = dict(spec.get("true") or {})
        if set(true) != set(classes):
            raise QualityScenarioError(f"{source}: quality_scenario.models.{name}.true gives a quality per class {sorted(classes)}")
        degrade = spec.get("degrade") or {}
        if degrade and set(degrade.get("to") or {}) != set(classes):
            raise QualityScenarioError(f"{source}: quality_scenario.models.{name}.degrade.to gives a quality per class")
        models.append(SimModel(name, true, int(spec.get("joins_at", 0)), degrade.get("at"), dict(degrade.get("to") or {})))
    from datetime import datetime

    start = datetime.fromisoformat(str(raw.get("start", "2025-01-01T00:00:00+00:00")).replace("Z", "+00:00")).timestamp()
    return QualityScenario(
        group=str(need("group")), requests=int(need("requests")), per_hour=float(need("per_hour")), start=start,
        prompt_tokens=int(raw.get("prompt_tokens", 500)), completion_tokens=int(raw.get("completion_tokens", 200)),
        classes=classes, models=models, window=int(raw.get("window", 1000)), description=str(raw.get("description", "")),
    )


@dataclass
class Window:
    start: int
    n: int = 0
    oracle_usd: float = 0.0
    usd: dict[str, float] = field(default_factory=dict)
    below: dict[str, int] = field(default_factory=dict)
    explored: int = 0
    picks: dict[str, dict[str, int]] = field(default_factory=dict)  # way -> "model/class" -> count

    def over(self, way: str) -> float:
        return self.usd.get(way, 0.0) / self.oracle_usd - 1 if self.oracle_usd else 0.0

    def below_share(self, way: str) -> float:
        return self.below.get(way, 0) / self.n if self.n else 0.0


@dataclass
class QualityResult:
    scenario: QualityScenario
    bar: float
    windows: list[Window]
    settled_at: int | None
    adopted: str | None
    dropped: str | None
    totals: dict[str, dict[str, float]]
    #: the measured run's drop detector alarms: per cell that raised one, how many and the request
    #: index of the last
    alarms: list[dict[str, Any]] = field(default_factory=list)

    @property
    def overall_met(self) -> bool:
        """Whether all the requests together are at most ``MAX_OVER`` over the oracle's cost with at
        most ``MAX_BELOW`` of them served below the bar (measured)."""
        t = self.totals["measured"]
        return t["over_oracle"] <= MAX_OVER and t["below_bar"] <= MAX_BELOW

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario.description, "bar": self.bar, "settled_at": self.settled_at,
            "adopted": self.adopted, "dropped": self.dropped, "totals": self.totals,
            "goal": {"max_over": MAX_OVER, "max_below": MAX_BELOW, "overall_met": self.overall_met},
            "alarms": self.alarms,
            "windows": [{"from": w.start, "requests": w.n, "oracle_usd_per_1k": round(w.oracle_usd / w.n * 1000, 6),
                         "declared_over": round(w.over("declared"), 6), "declared_below": round(w.below_share("declared"), 6),
                         "measured_over": round(w.over("measured"), 6), "measured_below": round(w.below_share("measured"), 6),
                         "explored": w.explored, "measured_picks": w.picks.get("measured", {})} for w in self.windows],
        }


def _candidates(policy: Any, scenario: QualityScenario) -> dict[str, Any]:
    from litellm_payg.core.decision import Candidate

    out = {}
    for m in scenario.models:
        facts = policy.models.get(m.name)
        if facts is None or facts.input_usd_per_1k is None:
            raise QualityScenarioError(f"the policy's models: section must price {m.name!r} (input_usd_per_1k, output_usd_per_1k)")
        out[m.name] = Candidate(
            deployment_id=m.name, model=m.name, provider=m.name.partition("/")[0] or "sim", group=scenario.group,
            input_usd_per_token=facts.input_usd_per_1k / 1000, output_usd_per_token=facts.output_usd_per_1k / 1000,
            quality=facts.quality, price_source="policy",
        )
    return out


def _bar(policy: Any, group: str) -> float:
    for spec in policy.routes.get(group, ()):
        if spec.name == "quality_floor":
            return float(spec.options.min_quality)
    raise QualityScenarioError(f"the policy has no quality_floor rule on route {group!r}")


def simulate_quality(policy: Any, scenario: QualityScenario, seed: int = 7,
                     ways: Sequence[str] = ("declared", "measured")) -> QualityResult:
    """Run ``scenario`` under ``policy`` (a path or a loaded Policy) declared, measured and oracle
    (``ways`` may leave out ``declared``). The same seed gives the same numbers."""
    from litellm_payg.core.decision import RouteRequest
    from litellm_payg.core.snapshot import Snapshot
    from litellm_payg.policy.load import Policy, load_policy
    from litellm_payg.runtime.engine import Engine
    from litellm_payg.stores.evidence import split_key

    loaded: Policy = policy if isinstance(policy, Policy) else load_policy(policy)
    bar = _bar(loaded, scenario.group)
    cands = _candidates(loaded, scenario)
    models = {m.name: m for m in scenario.models}
    p, o = scenario.prompt_tokens, scenario.completion_tokens
    cost = {name: c.estimate_usd(p, o) for name, c in cands.items()}
    draw = random.Random(seed)
    names, weights = list(scenario.classes), list(scenario.classes.values())
    plan = [(draw.choices(names, weights)[0], draw.random()) for _ in range(scenario.requests)]
    gap = 3600.0 / scenario.per_hour
    windows = [Window(s) for s in range(0, scenario.requests, scenario.window)]

    for i, (cls, _) in enumerate(plan):
        w = windows[i // scenario.window]
        live = [m for m in scenario.models if m.joins_at <= i]
        ok = [m for m in live if m.quality(cls, i) >= bar]
        w.n += 1
        w.oracle_usd += min(cost[m.name] for m in ok) if ok else max(cost[m.name] for m in live)

    alarms: list[dict[str, Any]] = []
    for way in ways:
        now = [scenario.start]
        engine = Engine(loaded, ledger="memory://", clock=lambda: now[0])
        by = loaded.quality.class_by or ""
        field_ = by.split(".", 1)[1] if by.startswith("metadata.") else "task"
        requests = {cls: RouteRequest(group=scenario.group, prompt_tokens=p, output_tokens=o, metadata={field_: cls},
                                      tags=(cls,) if by == "tags" else ()) for cls in scenario.classes}
        for i, (cls, u) in enumerate(plan):
            now[0] = scenario.start + i * gap
            w = windows[i // scenario.window]
            live = [cands[m.name] for m in scenario.models if m.joins_at <= i]
            request = requests[cls]
            snapshot = Snapshot(now[0], loaded) if way == "declared" else None
            decision = engine.decide(request, live, snapshot)
            chosen = decision.chosen
            if chosen is None:
                continue
            q = models[chosen.deployment_id].quality(cls, i)
            w.usd[way] = w.usd.get(way, 0.0) + cost[chosen.deployment_id]
            w.below[way] = w.below.get(way, 0) + (q < bar)
            picks = w.picks.setdefault(way, {})
            key = f"{chosen.deployment_id} {cls}"
            picks[key] = picks.get(key, 0) + 1
            if way == "measured":
                w.explored += decision.attrs.get("quality_explore") is not None
                engine.quality.record(scenario.group, chosen.deployment_id, "valid", u < q, cls=engine.quality.class_of(request),
                                      now=now[0], model=chosen.model, source="simulated")
        if way == "measured":
            for key, watch in sorted(engine.quality.store.watches(scenario.group).items()):
                if watch.alarms and watch.alarm_t is not None:
                    dep, cls, _ = split_key(key)
                    alarms.append({"deployment": dep, "class": cls, "alarms": watch.alarms,
                                   "last_at_request": round((watch.alarm_t - scenario.start) / gap)})
        engine.detach()

    settled = None
    for k in range(len(windows) - 1, -1, -1):
        w = windows[k]
        if w.over("measured") <= MAX_OVER and w.below_share("measured") <= MAX_BELOW:
            settled = w.start
        else:
            break
    tail = windows[-3:]
    joined = [m for m in scenario.models if m.joins_at > 0]
    degrading = [m for m in scenario.models if m.degrade_at is not None]
    adopted = next((m.name for m in joined if sum(n for k, n in _picks(tail, "measured").items() if k.startswith(m.name + " "))
                    >= 0.25 * sum(w.n for w in tail)), None)
    dropped = next((m.name for m in degrading if sum(n for k, n in _picks(tail, "measured").items() if k.startswith(m.name + " "))
                    <= MAX_BELOW * sum(w.n for w in tail)), None)
    total_oracle = sum(w.oracle_usd for w in windows)
    totals = {way: {"usd": round(sum(w.usd.get(way, 0.0) for w in windows), 6),
                    "over_oracle": round(sum(w.usd.get(way, 0.0) for w in windows) / total_oracle - 1, 6),
                    "below_bar": round(sum(w.below.get(way, 0) for w in windows) / scenario.requests, 6)}
              for way in ("declared", "measured")}
    totals["oracle"] = {"usd": round(total_oracle, 6), "over_oracle": 0.0, "below_bar": 0.0}
    return QualityResult(scenario, bar, windows, settled, adopted, dropped, totals, alarms)


def _picks(windows: Sequence[Window], way: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for w in windows:
        for k, n in w.picks.get(way, {}).items():
            out[k] = out.get(k, 0) + n
    return out


def _pct(x: float) -> str:
    return f"{x * 100:+.1f}%" if x else "0.0%"


def format_quality(result: QualityResult) -> str:
    s = result.scenario
    lines = [f"quality-convergence: route {s.group!r}, bar {result.bar:g}, {s.requests:,} requests, "
             f"{s.per_hour:g}/hour, windows of {s.window:,}", s.description, ""]
    head = f"{'requests':>13}  {'oracle $/1k':>11}  {'declared':>8} {'below':>6}  {'measured':>8} {'below':>6} {'explored':>8}  measured picks"
    lines += [head, "-" * len(head)]
    for w in result.windows:
        picks = _picks([w], "measured")
        top = ", ".join(f"{k} {n}" for k, n in sorted(picks.items(), key=lambda kv: -kv[1])[:4])
        lines.append(f"{w.start:>6}-{w.start + w.n:<6}  {w.oracle_usd / w.n * 1000:>11.4f}  {_pct(w.over('declared')):>8} "
                     f"{w.below_share('declared') * 100:>5.1f}%  {_pct(w.over('measured')):>8} {w.below_share('measured') * 100:>5.1f}% "
                     f"{w.explored:>8}  {top}")
    lines.append("")
    for way in ("oracle", "declared", "measured"):
        t = result.totals[way]
        lines.append(f"{way:>9}: ${t['usd']:.4f} in all, {_pct(t['over_oracle'])} over the oracle, "
                     f"{t['below_bar'] * 100:.2f}% of requests served below the bar")
    t = result.totals["measured"]
    lines.append(f"measured, all {s.requests:,} requests: {_pct(t['over_oracle'])} vs the oracle's cost (goal: at most "
                 f"{MAX_OVER:.0%} over), {t['below_bar'] * 100:.2f}% below the bar (goal: at most {MAX_BELOW:.0%}): "
                 + ("met" if result.overall_met else "not met"))
    lines.append("")
    if result.settled_at is None:
        lines.append(f"measured: never settled within {MAX_OVER:.0%} of the oracle's cost with at most {MAX_BELOW:.0%} below the bar")
    else:
        lines.append(f"measured: settled from request {result.settled_at:,} on: every window since is within {MAX_OVER:.0%} "
                     f"of the oracle's cost with at most {MAX_BELOW:.0%} of requests below the bar")
    lines.append(f"measured: adopted the model that joined: {result.adopted or 'no'}; "
                 f"dropped the model that degraded: {result.dropped or 'no'}")
    alarms = ", ".join(f"{a['deployment']}{' ' + a['class'] if a['class'] else ''} at request {a['last_at_request']:,}"
                       + (f" ({a['alarms']} alarms, the last)" if a["alarms"] > 1 else "") for a in result.alarms)
    lines.append(f"measured: drop detector alarms: {alarms or 'none'}")
    return "\n".join(lines)


def run(args: Any) -> int:
    """The ``simulate`` command for a quality scenario (called by ``simulate.run``)."""
    result = simulate_quality(args.policy, load_quality_scenario(args.scenario), seed=args.seed)
    if getattr(args, "json", False):
        print(json.dumps(result.as_dict(), indent=2))
    else:
        print(format_quality(result))
    return 0
