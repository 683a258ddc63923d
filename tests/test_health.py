"""Circuit breaker and latency tracker on every backend (memory, SQLite, Redis), with a fake clock,
and the ``failover`` filter plugin that applies them to candidates."""

from __future__ import annotations

import os
import threading
import uuid
from types import SimpleNamespace

import pytest
from services import BACKENDS, require_redis

from litellm_payg.core.decision import Candidate, RouteRequest
from litellm_payg.default_plugins.failover import apply_failover, payg_filter_candidates
from litellm_payg.core.snapshot import Snapshot
from litellm_payg.runtime.next_hop import plan_next
from litellm_payg.policy.failover import FailoverSettings
from litellm_payg.adapter.failures import FailureClass, diagnose
from litellm_payg.stores.health import (
    BreakerConfig,
    HealthError,
    HealthUnavailable,
    LatencyConfig,
    MemoryHealth,
    open_health,
    p95,
)

REDIS_URL = os.environ.get("PAYG_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
T0 = 1_700_000_000.0


class FakeClock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def tick(self, s: float) -> None:
        self.t += s


@pytest.fixture(params=BACKENDS)
def make_store(request, tmp_path):
    """A factory: ``make_store(breaker=..., latency=...)`` -> (store, clock). Every store of one test
    shares the backend (same SQLite file / Redis prefix), like replicas do."""
    opened = []
    prefix = f"payg-test-{uuid.uuid4().hex[:8]}:"
    if request.param == "redis":
        require_redis(REDIS_URL)
    url = {"memory": "memory://", "sqlite": f"sqlite:///{tmp_path}/health.db",
           "redis": f"{REDIS_URL}?prefix={prefix}"}[request.param]
    shared_memory = {}

    def make(breaker=None, latency=None, clock=None):
        clock = clock or FakeClock()
        if request.param == "memory" and "store" in shared_memory:
            return shared_memory["store"], clock
        store = open_health(url, breaker=breaker, latency=latency, clock=clock)
        shared_memory.setdefault("store", store)
        opened.append(store)
        return store, clock

    yield make
    for store in opened:
        store.reset()
        store.close()


CB = BreakerConfig(failures=3, within_s=60, open_s=30, half_open_probes=1)


def test_opens_after_n_failures_within_the_window(make_store):
    store, clock = make_store(breaker=CB)
    for _ in range(2):
        assert store.record("d1", ok=False) == "closed"
        clock.tick(10)
    assert store.state("d1").failures == 2
    assert store.allow("d1")
    assert store.record("d1", ok=False) == "open"
    h = store.state("d1")
    assert (h.state, h.opened_at, h.open_until, h.opened_by) == ("open", clock.t, clock.t + 30, "failures")
    assert not store.allow("d1")
    assert store.state("d2").state == "closed"  # per deployment


def test_failures_outside_the_window_do_not_count(make_store):
    store, clock = make_store(breaker=CB)
    store.record("d1", ok=False)
    clock.tick(50)
    store.record("d1", ok=False)
    clock.tick(11)  # the first failure is now 61s old
    assert store.record("d1", ok=False) == "closed"
    assert store.state("d1").failures == 2


def test_successes_do_not_reset_the_failure_count(make_store):
    store, clock = make_store(breaker=CB)
    store.record("d1", ok=False)
    store.record("d1", ok=True, latency_s=0.1)
    store.record("d1", ok=False)
    assert store.record("d1", ok=False) == "open"


def test_half_open_probe_success_closes(make_store):
    store, clock = make_store(breaker=CB)
    for _ in range(3):
        store.record("d1", ok=False)
    clock.tick(29.9)
    assert store.state("d1").state == "open" and not store.allow("d1")
    clock.tick(0.1)
    assert store.state("d1").state == "half_open"
    assert store.allow("d1")  # the one probe slot
    assert store.state("d1").probes_in_flight == 1
    assert not store.allow("d1")  # taken
    assert store.record("d1", ok=True, latency_s=0.2) == "closed"
    h = store.state("d1")
    assert (h.state, h.failures, h.opened_at, h.probes_in_flight) == ("closed", 0, None, 0)
    assert store.allow("d1") and store.allow("d1")


def test_half_open_probe_failure_reopens(make_store):
    store, clock = make_store(breaker=CB)
    for _ in range(3):
        store.record("d1", ok=False)
    clock.tick(30)
    assert store.allow("d1")
    clock.tick(2)
    assert store.record("d1", ok=False) == "open"
    h = store.state("d1")
    assert (h.opened_at, h.open_until, h.opened_by) == (clock.t, clock.t + 30, "probe")
    assert not store.allow("d1")
    clock.tick(30)
    assert store.allow("d1")


def test_outcomes_while_open_change_nothing(make_store):
    store, clock = make_store(breaker=CB)
    for _ in range(3):
        store.record("d1", ok=False)
    opened = store.state("d1")
    clock.tick(5)
    assert store.record("d1", ok=True, latency_s=1.0) == "open"  # a late answer from before the trip
    assert store.record("d1", ok=False) == "open"
    assert store.state("d1").open_until == opened.open_until


def test_abandoned_probe_slot_is_freed_after_probe_timeout(make_store):
    store, clock = make_store(breaker=BreakerConfig(failures=1, within_s=60, open_s=10, probe_timeout_s=5))
    store.record("d1", ok=False)
    clock.tick(10)
    assert store.allow("d1")
    clock.tick(4.9)
    assert not store.allow("d1")
    clock.tick(0.2)  # the probe never reported (an abandoned stream): its slot expires
    assert store.allow("d1")


def test_replicas_share_state(make_store):
    a, clock = make_store(breaker=CB)
    b, _ = make_store(breaker=CB, clock=clock)
    a.record("d1", ok=False)
    b.record("d1", ok=False)
    assert a.record("d1", ok=False) == "open"
    assert b.state("d1").state == "open"
    clock.tick(30)
    assert b.allow("d1")
    assert not a.allow("d1")  # the other replica took the only probe slot


@pytest.mark.parametrize("probes", [1, 3])
def test_concurrent_half_open_probes_only_n_get_through(make_store, probes):
    store, clock = make_store(breaker=BreakerConfig(failures=1, within_s=60, open_s=10, half_open_probes=probes))
    store.record("d1", ok=False)
    clock.tick(10)
    results: list[bool] = []
    lock = threading.Lock()
    start = threading.Barrier(16)

    def probe():
        start.wait()
        ok = store.allow("d1")
        with lock:
            results.append(ok)

    threads = [threading.Thread(target=probe) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == probes
    assert store.state("d1").probes_in_flight == probes


def test_latency_p95_and_window(make_store):
    store, clock = make_store(latency=LatencyConfig(window_s=100, max_samples=50, min_samples=5))
    for i in range(4):
        store.record("d1", ok=True, latency_s=1.0 + i, ttft_s=0.1)
    assert store.state("d1").latency_p95_s is None  # fewer than min_samples
    assert not store.slow("d1", max_latency_ms=1)
    for i in range(16):  # 20 samples: 1..4 and 16 x 0.5; nearest-rank p95 = 19th smallest = 3.0
        store.record("d1", ok=True, latency_s=0.5, ttft_s=0.1)
    h = store.state("d1")
    assert (h.latency_samples, h.latency_p95_s) == (20, 3.0)
    assert h.ttft_p95_s == pytest.approx(0.1)
    assert store.slow("d1", max_latency_ms=2999) and not store.slow("d1", max_latency_ms=3000)
    assert store.slow("d1", max_latency_ms=None, max_ttft_ms=99) and not store.slow("d1", None, max_ttft_ms=100)
    store.record("d1", ok=False, latency_s=60.0)  # failures' latencies are not samples
    assert store.state("d1").latency_samples == 20
    clock.tick(100)  # every sample is now out of the window
    h = store.state("d1")
    assert (h.latency_samples, h.latency_p95_s, h.ttft_samples) == (0, None, 0)


def test_latency_keeps_only_max_samples(make_store):
    store, clock = make_store(latency=LatencyConfig(window_s=1000, max_samples=10, min_samples=1))
    for i in range(25):
        clock.tick(1)
        store.record("d1", ok=True, latency_s=float(i))
    h = store.state("d1")
    assert h.latency_samples == 10 and h.latency_p95_s == 24.0
    assert p95([15.0, 16, 17, 18, 19, 20, 21, 22, 23, 24]) == 24.0


def test_snapshot_reads_many(make_store):
    store, clock = make_store(breaker=BreakerConfig(failures=1))
    store.record("a", ok=False)
    store.record("b", ok=True, latency_s=0.3)
    snap = store.snapshot(["a", "b", "never-seen"])
    assert {k: v.state for k, v in snap.items()} == {"a": "open", "b": "closed", "never-seen": "closed"}
    assert store.snapshot([]) == {}


def test_bad_input_and_urls(tmp_path):
    store = MemoryHealth()
    with pytest.raises(HealthError, match="latency_s"):
        store.record("d", ok=True, latency_s=-1)
    with pytest.raises(HealthError, match="no scheme"):
        open_health("health.db")
    with pytest.raises(HealthError, match="unknown health URL scheme"):
        open_health("postgres://x/y")
    with pytest.raises(HealthError, match="sqlite:///relative.db"):
        open_health("sqlite://")
    with pytest.raises(HealthError, match="failures"):
        BreakerConfig(failures=0)
    with pytest.raises(HealthUnavailable):
        open_health("redis://127.0.0.1:1/0").allow("d")


def test_sqlite_shares_the_ledger_file(tmp_path):
    from litellm_payg.stores.ledger import open_ledger

    url = f"sqlite:///{tmp_path}/payg.db"
    ledger = open_ledger(url)
    with open_health(url, breaker=BreakerConfig(failures=1)) as store:
        store.record("d1", ok=False, now=T0)
        assert store.state("d1", now=T0).state == "open"
    ledger.close()


# -- the failover plugin -------------------------------------------------------------------------------

def _cand(dep: str, model: str, price: float | None = 1e-6, max_in: int | None = 100_000) -> Candidate:
    return Candidate(dep, model, model.split("/")[0], "chat", price, None if price is None else price * 2,
                     max_input_tokens=max_in)


DS = _cand("ds", "deepseek/deepseek-chat", 3e-7, 64_000)
MI = _cand("mi", "mistral/mistral-large-latest", 2e-6, 128_000)
GPT = _cand("gpt", "openai/gpt-4o-mini", 1.5e-7, 128_000)
GEM = _cand("gem", "gemini/gemini-2.5-flash", 3e-7, 1_000_000)
REQ = RouteRequest(group="chat", prompt_tokens=1000, output_tokens=200)


def _settings(**kw) -> FailoverSettings:
    base = {"circuit_breaker": {"failures": 2, "within_s": 60, "open_s": 30, "half_open_probes": 1},
            "latency": {"min_samples": 3}}
    base.update(kw)
    return FailoverSettings.model_validate(base)


def test_settings_match_the_documented_yaml():
    import yaml

    doc = yaml.safe_load("""
failover:
  order: cheapest_first
  chains: {chat: [deepseek/deepseek-chat, mistral/mistral-large-latest, gpt-4o-mini]}
  circuit_breaker: {failures: 5, within_s: 60, open_s: 30, half_open_probes: 1}
  max_latency_ms: 8000
  first_token_timeout_ms: 3000
  on: {rate_limit: next, server_error: next, context_window: larger_context, auth: fail, bad_request: fail}
""")
    s = FailoverSettings.model_validate(doc["failover"])
    assert s.circuit_breaker.config() == BreakerConfig(5, 60.0, 30.0, 1)
    assert s.action_for("context_window") == "larger_context" and s.action_for("auth") == "fail"
    assert s.model_refs()[2] == ("failover.chains.chat[2]", "chat", "gpt-4o-mini")
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="extra"):
        FailoverSettings.model_validate({"circuit_breaker": {"failures": 5, "open": 3}})
    with pytest.raises(ValidationError, match="larger_context only applies"):
        FailoverSettings.model_validate({"on": {"rate_limit": "larger_context"}})
    with pytest.raises(ValidationError, match="empty"):
        FailoverSettings.model_validate({"chains": {"chat": []}})


def test_chain_orders_and_drops_the_rest():
    step = apply_failover(REQ, [GPT, MI, DS, GEM], _settings(chains={"chat": ["deepseek-chat", "mistral/mistral-large-latest", "gpt"]}), None)
    assert [c.deployment_id for c in step.kept] == ["ds", "mi", "gpt"]
    assert [(d.deployment_id, d.reason) for d in step.dropped] == [("gem", "not in failover.chains.chat")]


def test_cheapest_first_and_policy_order():
    unpriced = _cand("up", "custom/thing", None)
    step = apply_failover(REQ, [MI, unpriced, DS, GPT], _settings(order="cheapest_first"), None)
    assert [c.deployment_id for c in step.kept] == ["gpt", "ds", "mi", "up"]
    assert [c.deployment_id for c in apply_failover(REQ, [MI, DS], _settings(), None).kept] == ["mi", "ds"]


def test_open_breaker_is_dropped_with_since_and_until(make_store):
    store, clock = make_store(breaker=_settings().circuit_breaker.config())
    store.record("ds", ok=False)
    store.record("ds", ok=False)
    step = apply_failover(REQ, [DS, MI, GPT], _settings(), _states(store, [DS, MI, GPT]))
    assert [c.deployment_id for c in step.kept] == ["mi", "gpt"]
    (drop,) = step.dropped
    assert drop.deployment_id == "ds" and drop.by == "failover"
    assert drop.reason == ("circuit breaker open since 2023-11-14T22:13:20Z until 2023-11-14T22:13:50Z "
                           "(2 failures within 60s)")
    clock.tick(30)  # half-open, slot free: kept, and the note says it may be probed
    step = apply_failover(REQ, [DS, MI], _settings(), _states(store, [DS, MI]))
    assert [c.deployment_id for c in step.kept] == ["ds", "mi"] and "may be probed: ds" in step.note
    assert store.allow("ds")  # the adapter claims the slot when it picks ds
    step = apply_failover(REQ, [DS, MI], _settings(), _states(store, [DS, MI]))
    assert [c.deployment_id for c in step.kept] == ["mi"]
    assert "half-open since 2023-11-14T22:13:50Z; its 1 probe slot is taken" in step.dropped[0].reason


def test_slow_deployments_go_last_in_p95_terms(make_store):
    store, clock = make_store()
    for _ in range(5):
        store.record("ds", ok=True, latency_s=9.0, ttft_s=0.5)  # p95 9s > 8s
        store.record("mi", ok=True, latency_s=2.0, ttft_s=4.0)  # p95 first token 4s > 3s
        store.record("gpt", ok=True, latency_s=7.9, ttft_s=2.9)
    settings = _settings(max_latency_ms=8000, first_token_timeout_ms=3000)
    step = apply_failover(REQ, [DS, MI, GPT, GEM], settings, _states(store, [DS, MI, GPT, GEM]))
    assert [c.deployment_id for c in step.kept] == ["gpt", "gem", "ds", "mi"]
    assert "ds (deepseek/deepseek-chat) tried last: p95 latency 9000ms" in step.note
    assert not step.dropped
    # without thresholds nothing moves
    assert [c.deployment_id for c in apply_failover(REQ, [DS, MI, GPT], _settings(), _states(store, [DS, MI, GPT])).kept] == ["ds", "mi", "gpt"]


def test_health_outage_fails_open():
    step = apply_failover(REQ, [DS, MI], _settings(), None, health_error="redis down")
    assert [c.deployment_id for c in step.kept] == ["ds", "mi"]
    assert step.note == "failover: health store unavailable (redis down); breakers and latency ignored"


def test_hookimpl_reads_the_snapshot():
    store = MemoryHealth(breaker=BreakerConfig(failures=1))
    store.record("ds", ok=False)
    policy = SimpleNamespace(failover=_settings())
    step = payg_filter_candidates(request=REQ, candidates=[DS, MI], snapshot=Snapshot(0.0, policy, health=_states(store, [DS, MI])))
    assert [c.deployment_id for c in step.kept] == ["mi"]
    assert payg_filter_candidates(request=REQ, candidates=[DS], snapshot=Snapshot(0.0, SimpleNamespace())) is None


def _states(store, candidates):
    """The store's state of ``candidates``, as ``Engine.snapshot`` reads it."""
    return store.snapshot([c.deployment_id for c in candidates])


def test_plan_next_per_failure_class():
    import litellm

    settings = _settings()
    ordered = [DS, MI, GPT, GEM]
    rl = litellm.RateLimitError("slow down", "deepseek", "m")
    hop = plan_next(settings, diagnose(rl), DS, ordered, attempted=["ds"])
    assert hop.action == "next" and hop.failure.cls is FailureClass.RATE_LIMIT
    assert [c.deployment_id for c in hop.candidates] == ["mi", "gpt", "gem"]
    auth = litellm.AuthenticationError("bad key", "deepseek", "m")
    assert plan_next(settings, diagnose(auth), DS, ordered, ["ds"]).candidates == []
    ctx = litellm.ContextWindowExceededError("too long", "m", "deepseek")
    hop = plan_next(settings, diagnose(ctx), DS, ordered, ["ds"])  # DS holds 64k: anything larger
    assert [c.deployment_id for c in hop.candidates] == ["mi", "gpt", "gem"]
    hop = plan_next(settings, diagnose(ctx), MI, ordered, ["ds", "mi"])  # MI holds 128k: only Gemini is larger
    assert [c.deployment_id for c in hop.candidates] == ["gem"] and "max_input_tokens > 128000" in hop.reason
    hop = plan_next(settings, diagnose(ctx), GEM, ordered, ["ds", "mi", "gem"])
    assert hop.candidates == [] and "no untried candidate" in hop.reason
    hop = plan_next(settings, diagnose(litellm.InternalServerError("boom", "x", "m")), GEM, ordered, ["ds", "mi", "gpt", "gem"])
    assert hop.candidates == [] and "every candidate was tried" in hop.reason
