"""The ``quality-convergence`` scenario: routing on measured quality finds the oracle's choices.

``litellm-payg simulate policies/measured-quality.yaml --scenario quality-convergence`` compares the
declared scores, measured quality with exploration and the oracle per 1,000 requests. Within the
first 20,000 requests the measured policy must settle at most 3% over the oracle's cost with at
most 1% of requests served below the bar (and be within both over all 20,000 requests), adopt the
model that joins and drop the one that degrades; without exploration it must not adopt, without
forgetting and drop detection it must not drop; the drop detector alone drops it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from litellm_payg.policy.load import load_policy
from litellm_payg.tools.cli import main
from litellm_payg.tools.sim_quality import MAX_BELOW, MAX_OVER, format_quality, load_quality_scenario, simulate_quality

ROOT = Path(__file__).resolve().parents[1]
POLICY = ROOT / "policies" / "measured-quality.yaml"


def _policy(**changes):
    data = yaml.safe_load(POLICY.read_text())
    measured = data["routes"]["assistant"][0]["quality_floor"]["measured"]
    for key, value in changes.items():
        (measured if key == "explore_usd" else data["quality"])[key] = value
    return load_policy(data)


def test_measured_quality_settles_near_the_oracle_adopts_the_newcomer_and_drops_the_degrading_model(capsys):
    # the command itself, in this process (LiteLLM is imported once per test session)
    assert main(["simulate", str(POLICY), "--scenario", "quality-convergence", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    windows = result["windows"]
    assert sum(w["requests"] for w in windows) == 20_000 and len(windows) == 20
    assert result["settled_at"] is not None and result["settled_at"] <= 17_000  # at least 3 settled windows
    # and over all 20,000 requests, not only the settled windows: the drop detector notices mid's
    # degradation in tens of its answers, where forgetting alone took ~1,700 requests
    totals = result["totals"]["measured"]
    assert totals["over_oracle"] <= MAX_OVER and totals["below_bar"] <= MAX_BELOW and result["goal"]["overall_met"]
    assert [(a["deployment"], a["class"]) for a in result["alarms"]] == [("sim/mid", "extract")]
    assert windows[12]["measured_below"] <= 0.10 and windows[13]["measured_below"] <= MAX_BELOW
    for w in windows:
        if w["from"] >= result["settled_at"]:
            assert w["measured_over"] <= MAX_OVER and w["measured_below"] <= MAX_BELOW
    assert result["adopted"] == "sim/newcomer" and result["dropped"] == "sim/mid"
    # the declared scores never learn: the newcomer is never used, the degraded model keeps serving
    assert windows[-1]["declared_below"] == 1.0 and windows[-1]["declared_over"] < 0
    assert result["totals"]["measured"]["below_bar"] < result["totals"]["declared"]["below_bar"]
    # one row by hand: the oracle's cost per 1,000 requests in the last window is its mix of the
    # newcomer on chat ($0.0011 a request: 500 x $0.001/1K + 200 x $0.003/1K) and frontier on extract
    # ($0.011 a request: 500 x $0.01/1K + 200 x $0.03/1K)
    chat = sum(n for k, n in windows[-1]["measured_picks"].items() if k.endswith(" chat"))
    extract = 1000 - chat
    assert windows[-1]["oracle_usd_per_1k"] == pytest.approx(chat * 0.0011 + extract * 0.011, rel=1e-9)


def test_without_exploration_the_newcomer_is_never_adopted():
    scenario = dataclasses.replace(load_quality_scenario("quality-convergence"), requests=8_000)
    assert simulate_quality(_policy(), scenario, seed=7, ways=("measured",)).adopted == "sim/newcomer"
    stuck = simulate_quality(_policy(explore_usd=0.0), scenario, seed=7, ways=("measured",))
    assert stuck.adopted is None and stuck.settled_at is None


def test_without_forgetting_or_drop_detection_the_degraded_model_is_not_dropped_within_20000_requests():
    result = simulate_quality(_policy(half_life_s=None, drop_false_alarm_rate=None),
                              load_quality_scenario("quality-convergence"), seed=7, ways=("measured",))
    assert result.dropped is None and result.settled_at is None and result.alarms == []


def test_the_drop_detector_alone_drops_the_degraded_model_within_tens_of_its_answers():
    # no forgetting at all: only the detector's alarm can make mid's 6,000 good extract answers go
    result = simulate_quality(_policy(half_life_s=None), load_quality_scenario("quality-convergence"), seed=7,
                              ways=("measured",))
    assert result.dropped == "sim/mid"
    [alarm] = result.alarms
    assert (alarm["deployment"], alarm["class"], alarm["alarms"]) == ("sim/mid", "extract", 1)
    # about half the requests are extract ones, all served by mid until the alarm
    assert 12_500 < alarm["last_at_request"] <= 12_500 + 2 * 100
    window = result.windows[12]  # 12,000-13,000: mid degraded halfway through it
    assert window.below_share("measured") <= 0.10
    assert result.totals["measured"]["below_bar"] <= MAX_BELOW


def test_the_table():
    scenario = dataclasses.replace(load_quality_scenario("quality-convergence"), requests=4_000)
    text = format_quality(simulate_quality(str(POLICY), scenario, seed=7))
    assert "oracle $/1k  declared  below  measured  below explored" in text
    assert "  3000-4000 " in text and "declared: $" in text and "measured: adopted the model that joined" in text
    assert "measured, all 4,000 requests: " in text and "(goal: at most 3% over)" in text
    assert "measured: drop detector alarms: none" in text  # mid degrades at 12,500
