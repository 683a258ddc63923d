"""One suite, three backends: memory, SQLite (tmp_path) and a real Redis.

The redis parameter skips when 127.0.0.1:6379 is unreachable, except when
``CI`` is set: there a missing Redis is a failure, not a silent skip.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time

import pytest
from services import BACKENDS, fresh_redis_prefix

from litellm_payg.core.errors import InvalidAmount, PaygError
from litellm_payg.stores.ledger import Bucket, LedgerError, LedgerUnavailable, open_ledger
from litellm_payg.stores.ledger.base import MAX_AMOUNT_USD, Usage

NANO = 1e-9


@pytest.fixture
def redis_url():
    """A Redis ledger URL with a prefix unique to this test, deleted afterwards."""
    with fresh_redis_prefix() as url:
        yield url


@pytest.fixture(params=BACKENDS)
def url(request, tmp_path):
    if request.param == "memory":
        return "memory://"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/ledger.db"
    return request.getfixturevalue("redis_url")


@pytest.fixture
def ledger(url):
    led = open_ledger(url)
    yield led
    led.close()


@pytest.fixture(params=["sqlite", "redis"])
def shared_url(request, tmp_path):
    """Backends that several processes (and restarts) can share."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/shared.db"
    return request.getfixturevalue("redis_url")


CAP = Bucket("b0|global|day|2026-05-05", 1.0, True)
USER = Bucket("b1|user:alice|month|2026-05", 0.5, True)
TRACK = Bucket("b2|tag:prod|month|2026-05", None, False)


def spent(led, b, now=None) -> float:
    return led.usage([b], now=now)[b.key].spent_usd


def reserved(led, b, now=None) -> float:
    return led.usage([b], now=now)[b.key].reserved_usd


# -- single-threaded semantics --------------------------------------------------


def test_reserve_settle_release_roundtrip(ledger):
    r = ledger.reserve("r1", [CAP, TRACK], 0.3, ttl_s=60, now=100, attrs={"user": "alice", "tags": ("prod",)})
    assert r.ok and r.refused_by is None
    assert r.usage[CAP.key].spent_usd == 0 and r.usage[CAP.key].reserved_usd == 0
    assert reserved(ledger, CAP) == pytest.approx(0.3, abs=NANO)
    assert ledger.open_reservations() == 1

    assert ledger.settle("r1", 0.1234567891, now=101, attrs={"model": "gpt-4o"}) is True
    assert ledger.settle("r1", 0.1234567891, now=102) is False  # idempotent, no double charge
    u = ledger.usage([CAP, TRACK])
    assert u[CAP.key].spent_usd == pytest.approx(0.1234567891, abs=NANO)
    assert u[CAP.key].reserved_usd == 0 and u[TRACK.key].reserved_usd == 0
    assert u[TRACK.key].spent_usd == u[CAP.key].spent_usd

    assert ledger.reserve("r2", [CAP], 0.2, ttl_s=60, now=103).ok
    assert ledger.release("r2") is True
    assert ledger.release("r2") is False
    assert ledger.settle("r2", 0.2) is False  # released: nothing to settle
    assert reserved(ledger, CAP) == 0
    assert spent(ledger, CAP) == pytest.approx(0.1234567891, abs=NANO)
    assert ledger.open_reservations() == 0

    [rec] = ledger.records()
    assert rec.reservation_id == "r1" and rec.amount_usd == 0.1234567891 and rec.ts == 101
    assert rec.buckets == (CAP.key, TRACK.key)
    assert rec.attrs == {"user": "alice", "tags": ["prod"], "model": "gpt-4o", "kind": "settled"}


def test_record_books_a_settled_charge_in_one_call(ledger):
    """``record`` (an admission without a reservation: no budgets, or fail-open) leaves what
    ``reserve`` then ``settle`` would: one settled record, spend on every bucket, nothing reserved,
    whatever the limits say (the call billed)."""
    assert ledger.reserve("held", [CAP], 0.3, ttl_s=60, now=99).ok
    ledger.record("r1", [CAP, TRACK], 1.25, ttl_s=60, now=100, attrs={"user": "alice", "tags": ("prod",)})
    u = ledger.usage([CAP, TRACK], now=100)
    assert u[CAP.key].spent_usd == pytest.approx(1.25, abs=NANO) and u[TRACK.key].spent_usd == u[CAP.key].spent_usd
    assert u[CAP.key].reserved_usd == pytest.approx(0.3, abs=NANO) and u[TRACK.key].reserved_usd == 0
    assert ledger.open_reservations() == 1
    [rec] = ledger.records()
    assert rec.reservation_id == "r1" and rec.amount_usd == 1.25 and rec.ts == 100
    assert rec.buckets == (CAP.key, TRACK.key)
    assert rec.attrs == {"user": "alice", "tags": ["prod"], "kind": "settled"}
    # an id still open is settled with the amount, as settle would
    ledger.record("held", [CAP], 0.1, ttl_s=60, now=101, attrs={"model": "gpt-4o"})
    assert ledger.open_reservations() == 0 and reserved(ledger, CAP, now=101) == 0
    assert spent(ledger, CAP, now=101) == pytest.approx(1.35, abs=NANO)
    assert [r.reservation_id for r in ledger.records()] == ["r1", "held"]
    with pytest.raises(InvalidAmount):
        ledger.record("bad", [CAP], -1.0, ttl_s=60, now=102)
    # without buckets (a policy without budgets: the SQLite ledger's one-transaction path)
    ledger.record("r2", [], 0.5, ttl_s=60, now=103, attrs={"deployment": "ds"})
    with pytest.raises(InvalidAmount):
        ledger.record("bad", [], float("nan"), ttl_s=60, now=104)
    assert ledger.open_reservations() == 0 and spent(ledger, CAP, now=104) == pytest.approx(1.35, abs=NANO)
    last = ledger.records()[-1]
    assert (last.reservation_id, last.amount_usd, last.ts, last.buckets) == ("r2", 0.5, 103, ())
    assert last.attrs == {"deployment": "ds", "kind": "settled"}
    assert ledger.reserve("held2", [], 0.3, ttl_s=60, now=105, attrs={"user": "bob"}).ok
    ledger.record("held2", [], 0.2, ttl_s=60, now=106, attrs={"model": "m"})
    last = ledger.records()[-1]
    assert ledger.open_reservations() == 0 and (last.reservation_id, last.amount_usd) == ("held2", 0.2)
    assert last.attrs == {"user": "bob", "model": "m", "kind": "settled"}


def test_refuses_only_when_it_would_overshoot(ledger):
    assert ledger.reserve("a", [CAP], 0.4, 60, now=0).ok
    assert ledger.reserve("b", [CAP], 0.4, 60, now=0).ok
    assert ledger.reserve("c", [CAP], 0.2, 60, now=0).ok  # lands exactly on the limit: allowed
    r = ledger.reserve("d", [CAP], 1e-9, 60, now=0)
    assert not r.ok and r.refused_by == CAP.key
    assert r.usage[CAP.key].reserved_usd == pytest.approx(1.0, abs=NANO)
    assert ledger.open_reservations() == 3
    ledger.release("c")
    assert ledger.reserve("d", [CAP], 0.2, 60, now=0).ok


def test_all_or_nothing_across_buckets(ledger):
    assert ledger.reserve("a", [USER], 0.45, 60, now=0).ok
    r = ledger.reserve("b", [CAP, USER, TRACK], 0.1, 60, now=0)
    assert not r.ok and r.refused_by == USER.key
    u = ledger.usage([CAP, USER, TRACK])
    assert u[CAP.key].reserved_usd == 0 and u[TRACK.key].reserved_usd == 0
    assert u[USER.key].reserved_usd == pytest.approx(0.45, abs=NANO)


def test_unenforced_buckets_count_but_never_refuse(ledger):
    alert = Bucket("alert|global|day|x", 0.1, False)
    for i in range(5):
        assert ledger.reserve(f"r{i}", [alert, TRACK], 0.5, 60, now=0).ok
        ledger.settle(f"r{i}", 0.5, now=1)
    assert spent(ledger, alert) == pytest.approx(2.5, abs=NANO)
    assert spent(ledger, TRACK) == pytest.approx(2.5, abs=NANO)


def test_settle_may_exceed_the_estimate_and_then_blocks(ledger):
    assert ledger.reserve("a", [CAP], 0.1, 60, now=0).ok
    assert ledger.settle("a", 1.2, now=1)  # the provider billed more than estimated
    assert spent(ledger, CAP) == pytest.approx(1.2, abs=NANO)
    assert not ledger.reserve("b", [CAP], 0.01, 60, now=2).ok


def test_reserving_the_same_id_twice_is_idempotent(ledger):
    assert ledger.reserve("a", [CAP], 0.3, 60, now=0).ok
    again = ledger.reserve("a", [CAP], 0.3, 60, now=0)
    assert again.ok and again.usage[CAP.key].reserved_usd == pytest.approx(0.3, abs=NANO)
    assert reserved(ledger, CAP) == pytest.approx(0.3, abs=NANO)
    assert ledger.open_reservations() == 1


def test_expired_reservation_is_charged_in_full_by_the_next_reserve(ledger):
    assert ledger.reserve("dead", [CAP, USER], 0.25, ttl_s=10, now=1000, attrs={"user": "alice"}).ok
    assert reserved(ledger, CAP, now=1005) == pytest.approx(0.25, abs=NANO)
    r = ledger.reserve("next", [CAP], 0.1, ttl_s=10, now=1011)
    assert r.ok
    # usage "before" already includes the expired charge: decided on real commitments
    assert r.usage[CAP.key].spent_usd == pytest.approx(0.25, abs=NANO)
    assert r.usage[CAP.key].reserved_usd == 0
    u = ledger.usage([CAP, USER])
    assert u[USER.key].spent_usd == pytest.approx(0.25, abs=NANO) and u[USER.key].reserved_usd == 0
    assert ledger.settle("dead", 0.01, now=1012) is False  # too late: already charged in full
    assert spent(ledger, CAP) == pytest.approx(0.25, abs=NANO)
    [rec] = ledger.records()
    assert rec.reservation_id == "dead" and rec.amount_usd == pytest.approx(0.25, abs=NANO)
    assert rec.attrs == {"user": "alice", "kind": "expired"} and rec.ts == 1010


def test_expire_sweeps_every_bucket(ledger):
    other = Bucket("other|global|day|x", 5.0, True)
    assert ledger.reserve("a", [other], 0.5, ttl_s=5, now=0).ok
    assert ledger.reserve("b", [CAP], 0.5, ttl_s=50, now=0).ok
    assert ledger.expire(now=4) == 0
    assert ledger.expire(now=6) == 1
    assert ledger.expire(now=7) == 0
    assert spent(ledger, other) == pytest.approx(0.5, abs=NANO)
    assert ledger.open_reservations() == 1
    assert ledger.settle("b", 0.2, now=8)
    assert [r.attrs["kind"] for r in ledger.records()] == ["expired", "settled"]


def test_settle_after_ttl_but_before_any_sweep_uses_the_real_cost(ledger):
    assert ledger.reserve("slow", [CAP], 0.5, ttl_s=5, now=0).ok
    assert ledger.settle("slow", 0.05, now=30)
    assert ledger.expire(now=31) == 0
    assert spent(ledger, CAP) == pytest.approx(0.05, abs=NANO)


def test_rolling_window_forgets_old_spend_never_early(ledger):
    roll = Bucket("r|global|rolling:60s", 1.0, True, rolling_s=60)
    assert ledger.reserve("a", [roll], 0.6, 60, now=1000).ok
    assert ledger.settle("a", 0.6, now=1000.5)
    assert not ledger.reserve("b", [roll], 0.6, 60, now=1059.9).ok  # still inside the window
    assert spent(ledger, roll, now=1059.9) == pytest.approx(0.6, abs=NANO)
    # out after the window plus at most one slice (60s / 60 = 1s)
    assert spent(ledger, roll, now=1062) == 0
    assert ledger.reserve("b", [roll], 0.6, 60, now=1062).ok


def test_precision_of_many_small_charges(ledger):
    costs = [0.000150 * i / 7 + 1.5e-7 for i in range(1, 200)]  # like per-token costs
    for i, c in enumerate(costs):
        assert ledger.reserve(f"r{i}", [TRACK], 0.01, 60, now=i).ok
        assert ledger.settle(f"r{i}", c, now=i)
    recs = ledger.records()
    assert [r.amount_usd for r in recs] == costs  # records keep the exact floats
    assert abs(sum(r.amount_usd for r in recs) - sum(costs)) < 1e-12
    assert abs(spent(ledger, TRACK) - sum(costs)) <= len(costs) * 0.5e-9
    assert [r.reservation_id for r in ledger.records(since=150)] == [f"r{i}" for i in range(150, 199)]


def test_bad_arguments_are_refused(ledger):
    with pytest.raises(InvalidAmount, match="amount_usd must be a finite number >= 0"):
        ledger.reserve("x", [CAP], -1, 60)
    with pytest.raises(LedgerError, match="ttl_s"):
        ledger.reserve("x", [CAP], 0.1, 0)
    with pytest.raises(LedgerError, match="duplicate bucket keys"):
        ledger.reserve("x", [CAP, CAP], 0.1, 60)
    assert ledger.reserve("x", [CAP], 0.1, 60).ok
    with pytest.raises(InvalidAmount, match="actual_usd"):
        ledger.settle("x", float("nan"))
    assert ledger.open_reservations() == 1


@pytest.mark.parametrize("amount", [-1e-9, -5.0, float("nan"), float("inf"), 1e308, MAX_AMOUNT_USD * 1.0001])
def test_an_amount_the_ledger_cannot_store_is_invalid_not_an_outage(ledger, amount):
    """Negative, non-finite or larger than a 64-bit nano-dollar counter holds: refused before any
    write with InvalidAmount, which is not a LedgerError (an outage, admitted under fail_open)."""
    with pytest.raises(InvalidAmount) as refused:
        ledger.reserve("x", [CAP, TRACK], amount, 60)
    assert not isinstance(refused.value, LedgerError) and isinstance(refused.value, PaygError)
    assert refused.value.status_code == 400 and refused.value.num_retries == 0
    assert ledger.open_reservations() == 0 and spent(ledger, TRACK) == 0
    assert ledger.reserve("x", [TRACK], 0.5, 60).ok
    with pytest.raises(InvalidAmount):
        ledger.settle("x", amount)
    assert ledger.open_reservations() == 1 and spent(ledger, TRACK) == 0
    # a limit the ledger cannot compare exactly is refused too (the policy bounds keep it out)
    with pytest.raises(InvalidAmount, match="limit_usd"):
        ledger.reserve("y", [Bucket("b9|global|day|2026-05-05", 1e308, True)], 0.1, 60)


def test_the_largest_storable_amount_round_trips(ledger):
    """MAX_AMOUNT_USD fits a 64-bit counter on every backend, with room to count past it."""
    big = Bucket("b0|global|month|2026-05", MAX_AMOUNT_USD, True)
    assert ledger.reserve("a", [big, TRACK], MAX_AMOUNT_USD, 60, now=0).ok
    assert ledger.settle("a", MAX_AMOUNT_USD, now=1)
    for i in range(5):  # a track-only counter keeps counting past the largest limit
        assert ledger.reserve(f"t{i}", [TRACK], MAX_AMOUNT_USD, 60, now=2).ok
        assert ledger.settle(f"t{i}", MAX_AMOUNT_USD, now=2)
    assert spent(ledger, TRACK) == pytest.approx(6 * MAX_AMOUNT_USD)
    # Redis compares as doubles: exact to the nano-dollar below ~9M USD, to 128 nano-USD at 1e9
    assert not ledger.reserve("b", [big], 1e-6, 60, now=3).ok


# -- open_ledger ------------------------------------------------------------------


def test_unknown_scheme_names_url_and_accepted_schemes():
    with pytest.raises(LedgerError) as e:
        open_ledger("postgres://db/x")
    msg = str(e.value)
    assert "postgres://db/x" in msg and "memory://" in msg and "sqlite:///" in msg and "redis://" in msg
    assert isinstance(e.value, ValueError)
    with pytest.raises(LedgerError, match="no scheme"):
        open_ledger("ledger.db")


def test_sqlite_relative_and_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open_ledger("sqlite:///rel/ledger.db") as led:
        led.reserve("a", [CAP], 0.1, 60)
    assert (tmp_path / "rel" / "ledger.db").exists()
    with open_ledger(f"sqlite:///{tmp_path}/abs.db") as led:  # tmp_path is absolute -> 4 slashes
        led.reserve("a", [CAP], 0.1, 60)
    assert (tmp_path / "abs.db").exists()
    with pytest.raises(LedgerError, match="unknown option"):
        open_ledger("sqlite:///x.db?journal=off")


def test_unreachable_redis_raises_unavailable_naming_the_url():
    led = open_ledger("redis://127.0.0.1:1/0")  # nothing listens on port 1
    with pytest.raises(LedgerUnavailable, match=r"redis://127\.0\.0\.1:1/0"):
        led.reserve("a", [CAP], 0.1, 60)
    with pytest.raises(LedgerUnavailable):
        led.usage([CAP])
    led.close()


def test_redis_password_is_not_leaked():
    led = open_ledger("redis://user:s3cret@127.0.0.1:1/0")
    with pytest.raises(LedgerUnavailable) as e:
        led.open_reservations()
    assert "s3cret" not in str(e.value) and "s3cret" not in led.url


# -- restarts -----------------------------------------------------------------------


def test_state_survives_a_restart(shared_url):
    with open_ledger(shared_url) as led:
        assert led.reserve("done", [CAP], 0.3, 60, now=0).ok
        assert led.settle("done", 0.2, now=1)
        assert led.reserve("open", [CAP], 0.4, 10, now=2).ok
    with open_ledger(shared_url) as led:
        u = led.usage([CAP], now=3)[CAP.key]
        assert u.spent_usd == pytest.approx(0.2, abs=NANO) and u.reserved_usd == pytest.approx(0.4, abs=NANO)
        assert led.open_reservations() == 1
        assert led.expire(now=13) == 1
        assert spent(led, CAP) == pytest.approx(0.6, abs=NANO)
        assert [(r.reservation_id, r.attrs["kind"]) for r in led.records()] == [("done", "settled"), ("open", "expired")]


# -- session (idle) and request-counting buckets ----------------------------------------------

RUN = Bucket("run|session:s1|session:30m", 1.0, True, idle_s=1800)
RUN_REQS = Bucket("run|session:s1|session:30m|requests", 3, True, idle_s=1800, counts=True)


def test_a_session_bucket_starts_afresh_once_idle_and_not_before(ledger):
    assert ledger.reserve("a", [RUN], 0.4, 60, now=1000).ok
    assert ledger.settle("a", 0.4, now=1010)
    # activity (the settle at 1010) pushes the idle expiry: 1010 + 1800 - 1 is still the same run
    assert spent(ledger, RUN, now=1010 + 1799) == pytest.approx(0.4, abs=NANO)
    assert ledger.reserve("b", [RUN], 0.3, 60, now=1010 + 1799).ok
    assert ledger.settle("b", 0.3, now=1010 + 1799)
    assert spent(ledger, RUN, now=2809 + 1799) == pytest.approx(0.7, abs=NANO)
    assert not ledger.reserve("c", [RUN], 0.4, 60, now=2809 + 1799).ok  # 0.7 + 0.4 > 1.0
    # idle for the full 30 minutes after the last activity: the run reads as empty, and a
    # reservation starts it afresh (the whole limit is there again)
    later = 2809 + 1800
    assert spent(ledger, RUN, now=later) == 0
    assert ledger.reserve("d", [RUN], 0.9, 60, now=later).ok
    assert ledger.settle("d", 0.9, now=later + 1)
    assert spent(ledger, RUN, now=later + 1) == pytest.approx(0.9, abs=NANO)
    # a refused reservation is no activity: it does not keep an idle run alive
    assert not ledger.reserve("e", [RUN], 0.5, 60, now=later + 2).ok
    assert spent(ledger, RUN, now=later + 1 + 1800) == 0


def test_an_open_reservation_of_an_idle_run_stays_counted(ledger):
    assert ledger.reserve("a", [RUN], 0.6, 10_000, now=0).ok
    assert ledger.settle("a", 0.1, now=1)
    assert ledger.reserve("b", [RUN], 0.5, 10_000, now=2).ok
    u = ledger.usage([RUN], now=5000)[RUN.key]
    assert u.spent_usd == 0 and u.reserved_usd == pytest.approx(0.5, abs=NANO)
    assert not ledger.reserve("c", [RUN], 0.6, 60, now=5000).ok  # 0.5 still in flight + 0.6 > 1.0
    assert ledger.settle("b", 0.2, now=5001)
    assert spent(ledger, RUN, now=5001) == pytest.approx(0.2, abs=NANO)


def test_a_counting_bucket_counts_requests_not_dollars(ledger):
    for i in range(3):
        r = ledger.reserve(f"r{i}", [RUN, RUN_REQS], 0.01, 60, now=10 + i)
        assert r.ok
        assert r.usage[RUN_REQS.key].spent_usd + r.usage[RUN_REQS.key].reserved_usd == i
    refused = ledger.reserve("r3", [RUN, RUN_REQS], 0.01, 60, now=20)
    assert not refused.ok and refused.refused_by == RUN_REQS.key
    assert ledger.usage([RUN_REQS], now=20)[RUN_REQS.key].reserved_usd == 3
    # settling charges one request whatever the cost; a release gives the slot back
    assert ledger.settle("r0", 0.005, now=21)
    assert ledger.settle("r1", 0.0, now=21)
    assert ledger.release("r2")
    u = ledger.usage([RUN, RUN_REQS], now=22)
    assert u[RUN_REQS.key].spent_usd == 2 and u[RUN_REQS.key].reserved_usd == 0
    assert u[RUN.key].spent_usd == pytest.approx(0.005, abs=NANO)
    assert ledger.reserve("r4", [RUN, RUN_REQS], 0.01, 60, now=23).ok
    assert not ledger.reserve("r5", [RUN, RUN_REQS], 0.01, 60, now=24).ok
    # an expired reservation is charged as one request too
    assert ledger.expire(now=23 + 61) == 1
    assert ledger.usage([RUN_REQS], now=90)[RUN_REQS.key].spent_usd == 3
    # the count is a session counter: idle for its idle_s, it starts afresh
    assert ledger.reserve("r6", [RUN, RUN_REQS], 0.01, 60, now=84 + 1800).ok


def test_expire_collects_idle_session_buckets(ledger):
    assert ledger.reserve("a", [RUN, RUN_REQS], 0.1, 60, now=0)
    assert ledger.settle("a", 0.1, now=1)
    ledger.expire(now=1800)  # not idle yet: kept
    assert _stored(ledger, RUN.key) in (True, None)
    if hasattr(ledger, "_r"):  # Redis drops the key on its own, idle_s (+ a minute) after its last activity
        ttl_ms = ledger._r.pttl(ledger.prefix + "b:" + RUN.key)
        assert 1800_000 < ttl_ms <= 1860_000
    ledger.expire(now=1 + 1800)
    assert _stored(ledger, RUN.key) in (False, None) and _stored(ledger, RUN_REQS.key) in (False, None)
    assert ledger.usage([RUN, RUN_REQS], now=1 + 1800) == {RUN.key: Usage(0.0, 0.0), RUN_REQS.key: Usage(0.0, 0.0)}
    assert ledger.reserve("b", [RUN], 0.95, 60, now=1801).ok


def _stored(ledger, key: str) -> bool | None:
    """Whether a backend still stores a counter (None: Redis, whose keys expire on their own TTL)."""
    if hasattr(ledger, "_counters"):
        return key in ledger._counters
    if hasattr(ledger, "_db"):
        return ledger._db.execute("SELECT 1 FROM buckets WHERE key = ?", (key,)).fetchone() is not None
    return None


def test_50_concurrent_requests_of_one_run_hold_its_cap_and_request_count(url):
    """One reservation's worth of overshoot at most: the dollars and the request count are
    reserved in one atomic call, on every backend."""
    run = Bucket("c|session:x|session:10m", 0.1, True, idle_s=600)
    reqs = Bucket("c|session:x|session:10m|requests", 30, True, idle_s=600, counts=True)
    led = open_ledger(url)
    n, est = 50, 0.004
    barrier = threading.Barrier(n)
    results: list = [None] * n

    def worker(i: int) -> None:
        barrier.wait()
        r = led.reserve(f"w{i}", [run, reqs], est, ttl_s=600, now=100.0)
        results[i] = r.ok
        if r.ok:
            led.settle(f"w{i}", est, now=101.0)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    u = led.usage([run, reqs], now=102.0)
    assert results.count(True) == 25  # 25 x 0.004 = 0.1 exactly; the request count (30) is not reached
    assert u[run.key].spent_usd == pytest.approx(0.1, abs=NANO)
    assert u[reqs.key].spent_usd == 25 and u[reqs.key].reserved_usd == 0
    led.close()


# -- concurrency ---------------------------------------------------------------------


def test_500_concurrent_reservations_never_overshoot_nor_phantom_block(url):
    cap = Bucket("burst|global|day|x", 1.0, True)
    per_user = [Bucket(f"burst|user:u{i}|day|x", 0.5, True) for i in range(5)]
    est = 0.01
    n = 500
    led = open_ledger(url)
    barrier = threading.Barrier(n)
    results = [None] * n
    errors = []

    def worker(i: int) -> None:
        try:
            barrier.wait()
            rid = f"t{i}"
            r = led.reserve(rid, [cap, per_user[i % 5]], est, ttl_s=600)
            results[i] = r
            if r.ok:
                time.sleep(0.001 * (i % 7))  # the "LLM call"
                if i % 10 == 0:
                    led.release(rid)
                else:
                    led.settle(rid, est * (0.3 + 0.7 * ((i % 3) / 2)))  # actual <= estimate
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    ok = [r for r in results if r.ok]
    refused = [r for r in results if not r.ok]
    assert len(ok) >= 100  # 100 estimates fit the cap even if all were held at once
    for r in refused:  # no phantom block: every refusal really would have overshot
        u = r.usage[r.refused_by]
        limit = cap.limit_usd if r.refused_by == cap.key else 0.5
        assert u.spent_usd + u.reserved_usd + est > limit + 1e-12, (r, u)
    u = led.usage([cap, *per_user])
    assert u[cap.key].spent_usd <= cap.limit_usd + 1e-12
    assert u[cap.key].reserved_usd == 0 and all(v.reserved_usd == 0 for v in u.values())
    assert led.open_reservations() == 0

    # after the burst, reservations keep succeeding until less than one estimate is left
    i = 0
    while True:
        r = led.reserve(f"after{i}", [cap, per_user[i % 5]], est, ttl_s=600)
        if not r.ok:
            used = r.usage[r.refused_by]
            limit = cap.limit_usd if r.refused_by == cap.key else 0.5
            assert limit - used.spent_usd - used.reserved_usd < est + 1e-12
            break
        led.settle(f"after{i}", est)
        i += 1
    total = led.usage([cap])[cap.key]
    assert total.spent_usd <= cap.limit_usd + 1e-12 and total.reserved_usd == 0
    assert led.open_reservations() == 0
    led.close()


def _proc_worker(url: str, proc: int, attempts: int) -> int:
    """Runs in a spawned process: reserve/settle at full estimate, count successes."""
    led = open_ledger(url)
    cap = Bucket("mp|global|day|x", 2.0, True)
    ok = 0
    for i in range(attempts):
        rid = f"p{proc}-{i}"
        if led.reserve(rid, [cap], 0.01, ttl_s=600).ok:
            ok += 1
            assert led.settle(rid, 0.01)
    led.close()
    return ok


def test_four_processes_share_one_cap(shared_url):
    # actual == estimate, so once refused always refused: exactly 200 must fit 2.00 USD
    ctx = mp.get_context("spawn")
    with ctx.Pool(4) as pool:
        oks = pool.starmap(_proc_worker, [(shared_url, p, 120) for p in range(4)])
    assert sum(oks) == 200, oks
    with open_ledger(shared_url) as led:
        u = led.usage([Bucket("mp|global|day|x", 2.0, True)])["mp|global|day|x"]
        assert u.spent_usd == pytest.approx(2.0, abs=NANO) and u.reserved_usd == 0
        assert led.open_reservations() == 0
        assert len(led.records()) == 200


def _reserve_then_hang(url: str, ready) -> None:
    led = open_ledger(url)
    led.reserve("paid", [CAP], 0.3, ttl_s=60, now=1000)
    led.settle("paid", 0.3, now=1001)
    led.reserve("doomed", [CAP], 0.5, ttl_s=5, now=1002, attrs={"user": "alice"})
    ready.set()
    time.sleep(60)


def test_sigkilled_reservation_is_charged_in_full_after_restart(shared_url):
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    child = ctx.Process(target=_reserve_then_hang, args=(shared_url, ready))
    child.start()
    try:
        assert ready.wait(30), "child never reserved"
        os.kill(child.pid, signal.SIGKILL)
        child.join(10)
        assert child.exitcode == -signal.SIGKILL
    finally:
        if child.is_alive():
            child.kill()
    with open_ledger(shared_url) as led:  # the "restart"
        u = led.usage([CAP], now=1003)[CAP.key]
        assert u.spent_usd == pytest.approx(0.3, abs=NANO)  # settled spend is there
        assert u.reserved_usd == pytest.approx(0.5, abs=NANO)  # the dead reservation still holds
        assert led.open_reservations() == 1
        r = led.reserve("later", [CAP], 0.1, ttl_s=60, now=1008)  # TTL (1002 + 5) has passed
        assert r.ok and r.usage[CAP.key].spent_usd == pytest.approx(0.8, abs=NANO)
        assert led.settle("doomed", 0.0) is False
        assert spent(led, CAP) == pytest.approx(0.8, abs=NANO)
        kinds = {r.reservation_id: (r.attrs["kind"], r.amount_usd) for r in led.records()}
        assert kinds["doomed"][0] == "expired" and kinds["doomed"][1] == pytest.approx(0.5, abs=NANO)


def test_a_sqlite_file_from_before_session_buckets_is_upgraded_in_place(tmp_path):
    """A ledger file written before run budgets has no idle_s/last_at columns and 3-part bucket
    specs in its open reservations: opening it adds the columns, and those reservations settle."""
    import json
    import sqlite3

    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE buckets (key TEXT PRIMARY KEY, spent INTEGER NOT NULL DEFAULT 0,
                              reserved INTEGER NOT NULL DEFAULT 0, rolling_s REAL, expires_at REAL);
        CREATE TABLE reservations (id TEXT PRIMARY KEY, amount INTEGER NOT NULL, expires_at REAL NOT NULL,
                                   buckets TEXT NOT NULL, attrs TEXT NOT NULL);
    """)
    db.execute("INSERT INTO buckets (key, reserved) VALUES (?, ?)", (CAP.key, 300_000_000))
    db.execute("INSERT INTO reservations VALUES (?, ?, ?, ?, ?)",
               ("old", 300_000_000, 10_000.0, json.dumps([[CAP.key, None, None]]), "{}"))
    db.commit()
    db.close()
    led = open_ledger(f"sqlite:///{path}")
    try:
        assert led.settle("old", 0.25, now=100)
        assert spent(led, CAP, now=100) == pytest.approx(0.25, abs=NANO) and reserved(led, CAP, now=100) == 0
        assert led.reserve("new", [RUN, RUN_REQS], 0.5, 60, now=100).ok
        assert led.usage([RUN_REQS], now=100)[RUN_REQS.key].reserved_usd == 1
    finally:
        led.close()
