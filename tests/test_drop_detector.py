"""The drop detector (``core/drop_detector.py``): a one-sided Bernoulli CUSUM per cell.

The math on its own (fires within tens of answers on a drop from 0.95 to 0.70 against a bar of
0.85, stays quiet over 20,000 answers at the estimate), then in every evidence store for real
(memory, a SQLite file, the Redis on 127.0.0.1:6379): the store moves the statistic exactly as the
pure function does, two handles share it, and concurrent answers from two handles neither lose an
update nor raise two alarms for one drop.
"""

from __future__ import annotations

import math
import random
import threading

import pytest

from litellm_payg.core.drop_detector import (DropTest, Watch, baseline, observe, prior_counts, step,
                                             threshold_for)
from litellm_payg.core.quality import Tally, pass_rate, z_for
from litellm_payg.policy.load import PolicyError, load_policy
from litellm_payg.runtime.quality import QualityControl
from litellm_payg.stores.evidence import cell_key, open_evidence

from evidence_stores import store_url  # noqa: F401 - the fixture

H = 7200.0
GAP = 7.2  # seconds between a cell's answers: 500 an hour
BAR = 0.85
RATE = 1e-6
Z = z_for(0.95)


def _test(prior: float | None = 0.92, bars: tuple[float, ...] = (BAR,), rate: float = RATE) -> DropTest:
    return DropTest(bars, threshold_for(rate), *prior_counts("pass", prior, 10))


def _warmed(rng: random.Random, rate: float, answers: int, test: DropTest) -> tuple[Tally, Watch, float]:
    """A cell after ``answers`` answers passing at ``rate`` (no alarm expected)."""
    tally, watch, now = Tally(0.0), Watch(), 0.0
    for _ in range(answers):
        now += GAP
        tally, watch, alarm = observe(tally, watch, float(rng.random() < rate), now, H, test)
        assert not alarm
    return tally, watch, now


def test_the_threshold_is_the_log_of_one_over_the_false_alarm_rate():
    assert threshold_for(1e-6) == pytest.approx(math.log(1e6))
    with pytest.raises(ValueError):
        threshold_for(0.0)
    # a pass moves the statistic down, a failure up, by the log-likelihood ratio of the bar vs the estimate
    assert step(1.0, 0.95, 0.85) == pytest.approx(math.log(0.85 / 0.95))
    assert step(0.0, 0.95, 0.85) == pytest.approx(math.log(0.15 / 0.05))
    # the estimate is the cell's posterior mean with the declared quality as its prior
    assert baseline(Tally(0.0, 10.0, 9.0), *prior_counts("pass", 0.92, 10)) == pytest.approx((9.2 + 9) / 20)


def test_a_drop_from_095_to_070_is_noticed_within_tens_of_answers_and_the_bound_falls_below_the_bar():
    delays = []
    for seed in range(40):
        rng = random.Random(seed)
        test = _test()
        tally, watch, now = _warmed(rng, 0.95, 2_000, test)
        assert pass_rate(tally, 0.92, 10, Z).lo >= BAR  # before the drop: it meets the bar
        for answers in range(1, 1_000):
            now += GAP
            tally, watch, alarm = observe(tally, watch, float(rng.random() < 0.70), now, H, test)
            if alarm:
                break
        assert alarm, f"seed {seed}: no alarm within 1,000 answers at 0.70"
        delays.append(answers)
        # what is left is the evidence since the estimated change (the statistic last left 0 at most a
        # few tens of answers before the drop): the cell's estimate and lower bound (what routing judges
        # on) are now below the bar
        assert tally.n <= answers + 100 and watch.alarms == 1 and watch.forgot == 2_000 + answers - tally.n
        est = pass_rate(tally, 0.92, 10, Z)
        assert est.lo < BAR and est.mean < BAR
    # about ln(1e6) / 0.25 = 55 answers on average (the drift of the statistic at 0.70)
    assert 30 <= sum(delays) / len(delays) <= 90 and max(delays) <= 150, delays


def test_at_the_estimate_it_stays_quiet_over_20000_answers():
    rng = random.Random(7)
    test = _test(prior=0.92)
    # 20,000 answers at 0.95 (declared 0.92) and at 0.87, just above the bar: no alarm
    for rate in (0.95, 0.87):
        tally, watch, _ = _warmed(rng, rate, 20_000, test)
        assert watch.alarms == 0 and tally.n == 20_000


def test_a_score_goes_through_the_same_test():
    # scores in [0, 1] averaging 0.95, then 0.70: quiet over 20,000, an alarm within tens after the drop
    rng = random.Random(5)
    test = DropTest((BAR,), threshold_for(RATE), *prior_counts("score", 0.92, 10))
    tally, watch, now = Tally(0.0), Watch(), 0.0
    for _ in range(20_000):
        now += GAP
        tally, watch, alarm = observe(tally, watch, rng.betavariate(19, 1), now, H, test)
        assert not alarm
    for answers in range(1, 500):
        now += GAP
        tally, watch, alarm = observe(tally, watch, rng.betavariate(7, 3), now, H, test)
        if alarm:
            break
    assert alarm and answers <= 100 and watch.alarms == 1


def test_a_cell_at_or_below_every_bar_is_not_tested():
    test = _test(prior=0.6)  # declared 0.6: the estimate is under the bar
    tally, watch = Tally(0.0), Watch()
    for i in range(200):
        tally, watch, alarm = observe(tally, watch, 0.0, float(i), H, test)
        assert not alarm and watch.stat == 0.0
    # with tiers, a drop is tested against the highest bar below the estimate
    assert DropTest((0.6, 0.85), 10.0, 1.0, 1.0).bar_below(0.8) == 0.6
    assert DropTest((0.6, 0.85), 10.0, 1.0, 1.0).bar_below(0.5) is None
    # no test: the tally alone, the detector untouched
    out = observe(Tally(0.0), Watch(), 0.0, 1.0, H, None)
    assert out.tally.n == 1 and out.watch == Watch() and not out.alarm


# -- the setting ------------------------------------------------------------------------------------------


def _policy(**quality):
    return load_policy({
        "version": 1, "ledger": "memory://",
        "models": {"sim/a": {"quality": 0.92, "input_usd_per_1k": 1, "output_usd_per_1k": 1}},
        "quality": quality,
        "routes": {"chat": [{"quality_floor": {"min_quality": 0.85, "tiers": [{"up_to_prompt_tokens": 100, "min_quality": 0.6}],
                                               "measured": {"explore_usd": 0.01}}}],
                   "plain": [{"quality_floor": {"min_quality": 0.85}}]},
    })


def test_the_setting_sets_the_threshold_and_null_turns_detection_off():
    control = QualityControl(_policy(), "memory://", clock=lambda: 0.0)
    test = control.drop_test("chat", "valid", "pass", "sim/a")
    assert (test.bars, test.threshold) == ((0.6, 0.85), pytest.approx(math.log(1e6)))
    assert (test.a0, test.b0) == (pytest.approx(9.2), pytest.approx(0.8))  # the declared 0.92 as 10 answers
    assert control.drop_test("plain", "valid", "pass", "sim/a") is None  # judged on declared scores only
    assert control.drop_test("chat", "helpful", "pass", "sim/a") is None  # not the metric judged
    assert control.drop_test("chat", "valid", "pass", "sim/unknown").a0 == 1.0  # no declared quality: uniform
    # found as a candidate's is: by deployment id, model string or bare model name
    assert control.drop_test("chat", "valid", "pass", "other/a", deployment_id="sim/a").a0 == pytest.approx(9.2)
    assert control.drop_test("chat", "valid", "pass", "openai/sim/a").a0 == pytest.approx(9.2)
    assert QualityControl(_policy(drop_false_alarm_rate=1e-3), "memory://", clock=lambda: 0.0).drop_test(
        "chat", "valid", "pass", "sim/a").threshold == pytest.approx(math.log(1e3))
    assert QualityControl(_policy(drop_false_alarm_rate=None), "memory://", clock=lambda: 0.0).drop_test(
        "chat", "valid", "pass", "sim/a") is None
    with pytest.raises(PolicyError, match="drop_false_alarm_rate"):
        _policy(drop_false_alarm_rate=0)


def test_an_alarm_moves_routing_away_through_the_engine():
    now = [1_000_000.0]
    control = QualityControl(_policy(), "memory://", clock=lambda: now[0])
    rng = random.Random(3)
    for _ in range(1_000):
        now[0] += GAP
        control.record("chat", "a", "valid", rng.random() < 0.95, cls="", model="sim/a")
    view = control.view("chat", now[0])
    assert view.estimate("a", 0.92, "", "valid").lo >= BAR
    for answers in range(1, 300):
        now[0] += GAP
        control.record("chat", "a", "valid", rng.random() < 0.70, cls="", model="sim/a")
        if control.store.watches("chat")[cell_key("a", "", "valid")].alarms:
            break
    assert answers < 150
    assert control.view("chat", now[0]).estimate("a", 0.92, "", "valid").lo < BAR


# -- the stores --------------------------------------------------------------------------------------------




def _handles(url: str):
    a = open_evidence(url)
    return a, (a if url.startswith("memory") else open_evidence(url))


def test_every_store_moves_the_detector_as_the_pure_function_and_two_handles_share_it(store_url):
    a, b = _handles(store_url)
    key = cell_key("mid", "extract", "valid")
    test = _test()
    rng = random.Random(11)
    tally, watch, now = Tally(0.0), Watch(), 0.0
    alarms = 0
    try:
        for i in range(600):
            now += GAP
            value = float(rng.random() < (0.95 if i < 400 else 0.70))
            tally, watch, alarm = observe(tally, watch, value, now, H, test)
            got = (a if i % 2 else b).observe("chat", key, value, H, now=now, test=test)  # answers from two replicas
            alarms += alarm
            assert got.alarm == alarm, i
            assert got.tally.n == tally.n and got.tally.w == pytest.approx(tally.w) and got.tally.s == pytest.approx(tally.s)
            assert got.watch.stat == pytest.approx(watch.stat, abs=1e-9) and got.watch.since.n == watch.since.n
            assert (got.watch.alarms, got.watch.forgot) == (watch.alarms, watch.forgot)
        assert alarms == 1
        shared = a.watches("chat")[key]
        assert shared.alarms == 1 and shared.alarm_t is not None and shared.forgot == watch.forgot
        assert b.tallies("chat")[key].n == tally.n < 600
        # a plain add (no test) leaves the detector alone
        a.add("chat", key, 1.0, H, now=now + GAP)
        assert b.watches("chat")[key] == shared
        assert a.watches("other") == {}
    finally:
        a.close()
        if b is not a:
            b.close()


def test_concurrent_answers_from_two_handles_lose_nothing_and_alarm_once(store_url):
    """60 failures at once from four threads on two handles (one memory store), after 200 passes: every
    answer is kept or counted as forgotten, and the drop raises exactly one alarm, as in sequence."""
    a, b = _handles(store_url)
    key = cell_key("mid", "", "valid")
    test = _test(prior=0.95)
    now = 1000.0
    expected_tally, expected = Tally(now), Watch()
    try:
        for _ in range(200):
            a.observe("chat", key, 1.0, H, now=now, test=test)
            expected_tally, expected, _ = observe(expected_tally, expected, 1.0, now, H, test)
        for _ in range(60):  # every answer the same at the same time: any order gives one end state
            expected_tally, expected, _ = observe(expected_tally, expected, 0.0, now, H, test)
        barrier = threading.Barrier(4)
        alarms = []

        def answer(handle) -> None:
            barrier.wait()
            for _ in range(15):
                alarms.append(handle.observe("chat", key, 0.0, H, now=now, test=test).alarm)

        threads = [threading.Thread(target=answer, args=(h,)) for h in (a, b, a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        tally, watch = b.tallies("chat")[key], a.watches("chat")[key]
        assert sum(alarms) == 1 and watch.alarms == 1 == expected.alarms
        assert tally.n + watch.forgot == 260
        assert (tally.n, watch.forgot) == (expected_tally.n, expected.forgot)
        assert tally.w == pytest.approx(expected_tally.w) and tally.s == pytest.approx(expected_tally.s)
    finally:
        a.close()
        if b is not a:
            b.close()
