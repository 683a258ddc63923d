"""``litellm-payg quality``: the per-cell table and a split's verdict, checked by hand on small recorded sets."""

from __future__ import annotations

import json
import math

import pytest
import yaml

from litellm_payg.core.ab_verdict import cs_radius
from litellm_payg.stores.evidence import cell_key, open_evidence
from litellm_payg.stores.ledger import open_ledger
from litellm_payg.tools.cli import main

A, B = "mistral/mistral-large-latest", "deepseek/deepseek-chat"


def _setup(tmp_path, rows_a, rows_b):
    """A policy with a split (incumbent first) and a SQLite ledger holding the rated answers."""
    db = tmp_path / "ledger.db"
    open_ledger(f"sqlite:///{db}").close()
    policy = {"version": 1, "ledger": f"sqlite:///{db}", "models": {A: {"quality": 0.9}, B: {"quality": 0.8}},
              "quality": {"half_life_s": None, "feedback": True},
              "routes": {"chat": [{"split": {"arms": [{"model": A, "weight": 95, "name": "incumbent"},
                                                     {"model": B, "weight": 5, "name": "new-model"}]}}]}}
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    store = open_evidence(f"sqlite:///{db}")
    for arm, dep, model, rows in (("incumbent", "ml", A, rows_a), ("new-model", "ds", B, rows_b)):
        for i, (value, cost) in enumerate(rows):
            store.add("chat", cell_key(dep, "", "valid"), value, None, now=1000.0 + i,
                      record={"deployment_id": dep, "model": model, "cls": "", "metric": "valid", "arm": arm,
                              "cost_usd": cost, "source": "feedback", "request_id": f"{arm}-{i}"})
    store.close()
    return path


def _run(capsys, *argv):
    assert main(["quality", *argv]) == 0
    return capsys.readouterr().out


def test_a_small_recorded_set_matches_the_hand_calculation(tmp_path, capsys):
    rows_a = [(1.0 if i < 8 else 0.0, 0.009 if i % 2 else 0.011) for i in range(10)]  # 8 of 10 pass, $0.01 average
    rows_b = [(1.0 if i < 9 else 0.0, 0.003 if i % 2 else 0.005) for i in range(10)]  # 9 of 10 pass, $0.004 average
    report = json.loads(_run(capsys, str(_setup(tmp_path, rows_a, rows_b)), "--json"))
    route = report["routes"][0]
    cells = {c["deployment"]: c for c in route["cells"]}
    assert cells["ml"]["n"] == 10 and cells["ds"]["n"] == 10
    # Beta(0.9 * 10 + 8, 0.1 * 10 + 2) for the incumbent: the declared 0.9 as 10 answers, then 8 of 10
    assert cells["ml"]["estimate"] == pytest.approx(17 / 20)
    v = route["splits"][0]
    a, b = v["a"], v["b"]
    assert (a["name"], b["name"]) == ("incumbent", "new-model")
    assert (a["pass_rate"], b["pass_rate"]) == (pytest.approx(0.8), pytest.approx(0.9))
    sd = math.sqrt(10 * 0.001 ** 2 / 9)  # the sample sd of costs alternating 0.009 / 0.011
    assert a["cost_per_request"] == pytest.approx(0.01)
    assert a["cost_per_request_interval"] == pytest.approx([0.01 - 1.96 * sd / math.sqrt(10), 0.01 + 1.96 * sd / math.sqrt(10)], rel=1e-4)
    half = 1.96 * math.sqrt(sd ** 2 / 10 / 0.8 ** 2 + 0.01 ** 2 * (0.8 * 0.2 / 10) / 0.8 ** 4)
    assert a["cost_per_pass"] == pytest.approx(0.0125)
    assert a["cost_per_pass_interval"] == pytest.approx([0.0125 - half, 0.0125 + half], rel=1e-4)
    # Robbins' normal mixture at alpha/2 = 0.025 per arm, rho = 25: sqrt(27.5 ln(27.5 / (25 * 0.025^2))) / 10
    r = math.sqrt(27.5 * math.log(27.5 / (25 * 0.025 ** 2))) / 10
    assert r == pytest.approx(1.4336, abs=1e-4)
    assert v["difference"] == pytest.approx(0.1)
    assert v["difference_interval"] == pytest.approx([0.1 - 2 * r, 0.1 + 2 * r])
    assert v["decision"] == "not yet"
    # by hand: the smallest n with 2 r(n) <= difference + margin = 0.12
    need = next(n for n in range(10, 100_000) if 2 * cs_radius(n, 0.025) <= 0.12)
    assert abs((v["more_per_arm"] + 10) - need) <= 0.05 * need
    text = _run(capsys, str(tmp_path / "policy.yaml"))
    assert f"not yet: about {v['more_per_arm']:,} more requests per arm" in text
    assert "split new-model vs incumbent:" in text and "ds " in text


def test_promote_when_the_new_arm_is_as_good_and_cheaper(tmp_path, capsys):
    rows_a = [(1.0 if i % 20 < 17 else 0.0, 0.01) for i in range(1000)]  # 0.85
    rows_b = [(1.0 if i % 20 < 19 else 0.0, 0.004) for i in range(1000)]  # 0.95
    report = json.loads(_run(capsys, str(_setup(tmp_path, rows_a, rows_b)), "--json"))
    v = report["routes"][0]["splits"][0]
    r = cs_radius(1000, 0.025)
    assert v["difference_interval"][0] == pytest.approx(0.1 - 2 * r) and 0.1 - 2 * r >= -0.02
    assert v["decision"] == "promote"
    assert v["sentence"] == "new-model is within 0.02 of incumbent on valid and 60% ± 0% cheaper (n = 2,000): promote"


def test_an_unknown_metric_is_an_error_naming_it(tmp_path, capsys):
    path = _setup(tmp_path, [(1.0, 0.01)], [(0.0, 0.01)])
    assert main(["quality", str(path), "--metric", "nope"]) != 0
    assert "unknown quality metric 'nope'" in capsys.readouterr().err


def _routed(tmp_path, served):
    """A route with a measured bar of 0.85 and a SQLite ledger: ``served`` is (deployment, model,
    dollars) per settled request; ds has 200 passing answers (it meets the bar), ml 100."""
    from litellm_payg.stores.ledger.base import Bucket

    db = tmp_path / "ledger.db"
    url = f"sqlite:///{db}"
    with open_ledger(url) as ledger:
        for i, (dep, model, cost) in enumerate(served):
            ledger.reserve(f"r{i}", [Bucket("none", 1.0, False)], cost, 60, now=1000.0)
            ledger.settle(f"r{i}", cost, now=1000.0, attrs={"group": "chat", "deployment": dep, "model": model})
    policy = {"version": 1, "ledger": url, "models": {A: {"quality": 0.9}, B: {"quality": 0.8}},
              "quality": {"half_life_s": None},
              "routes": {"chat": [{"quality_floor": {"min_quality": 0.85, "measured": {}}}]}}
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    store = open_evidence(url)
    for dep, model, passes in (("ds", B, 200), ("ml", A, 100)):
        for i in range(passes):
            store.add("chat", cell_key(dep, "", "valid"), 1.0, None, now=1000.0,
                      record={"deployment_id": dep, "model": model, "cls": "", "metric": "valid", "source": "validator"})
    store.close()
    return path


def test_what_routing_on_the_estimates_would_save_matches_the_hand_calculation(tmp_path, capsys):
    # 6 requests served by ml at $0.01 and 4 by ds at $0.002; both meet the bar, ds is cheaper
    served = [("ml", A, 0.01)] * 6 + [("ds", B, 0.002)] * 4
    path = _routed(tmp_path, served)
    route = json.loads(_run(capsys, str(path), "--json"))["routes"][0]
    s = route["saving"]
    # by hand: served (6 x 0.01 + 4 x 0.002) / 10 = 0.0068 a request; ds 0.002; 10 x (0.0068 - 0.002) = 0.048
    assert s["requests"] == 10 and s["cheapest"] == "ds"
    assert s["served_cost_per_request"] == pytest.approx(0.0068)
    assert s["cheapest_cost_per_request"] == pytest.approx(0.002)
    assert s["usd"] == pytest.approx(0.048)
    text = _run(capsys, str(path))
    assert ("routing on the estimates: 10 requests at $0.0068 each as served; at $0.002 each on ds "
            f"(lower bound {s['cheapest_lo']:.3f} clears the bar 0.85): $0.048 saved") in text
    assert "cheapest deployment meeting the bar: ds" in text


def test_no_saving_is_claimed_when_no_deployment_meets_the_bar(tmp_path, capsys):
    path = _routed(tmp_path, [("ml", A, 0.01)] * 3)
    policy = yaml.safe_load(path.read_text())
    policy["routes"]["chat"][0]["quality_floor"]["min_quality"] = 0.999
    path.write_text(yaml.safe_dump(policy))
    route = json.loads(_run(capsys, str(path), "--json"))["routes"][0]
    assert route["saving"] is None
    assert "routing on the estimates" not in _run(capsys, str(path))
