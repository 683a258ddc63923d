"""``simulate`` runs the runtime's lifecycle (failover hop, circuit breakers, retries) over faults a
traffic class declares, in simulated time. The breaker test's counts are worked out by hand from
the arrival times: a class of N requests over [start, end] puts request k at start + (k + 0.5) * step."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from litellm_payg.policy.load import load_policy
from litellm_payg.tools.cli import main as cli_main
from litellm_payg.tools.simulate import SimulationError, format_table, parse_traffic, simulate, write_csv, write_html

DS, ML, MINI = "deepseek/deepseek-chat", "mistral/mistral-large-latest", "gpt-4o-mini"
T0 = "2025-01-01T00:00:00Z"


def _at(seconds: int) -> str:
    return f"2025-01-01T00:{seconds // 60:02d}:{seconds % 60:02d}Z"


def _breaker_policy(**failover):
    return load_policy({
        "version": 1, "ledger": "memory://",
        "routes": {"chat": [{"cost_threshold": {"use": DS, "max_usd_per_1k_tokens": 0.0015, "otherwise": ML}}]},
        "failover": {"circuit_breaker": {"failures": 3, "within_s": 60, "open_s": 30, "half_open_probes": 1}, **failover},
    })


def _line(count=120, span=(0, 120), **extra) -> str:
    return json.dumps({"name": "chat", "group": "chat", "prompt_tokens": 100, "completion_tokens": 50, "count": count,
                       "time": f"{_at(span[0])}/{_at(span[1])}", **extra})


def _outage(until: int) -> list[dict]:
    return [{"deployment": DS, "server_error": 1.0, "time": f"{_at(10)}/{_at(until)}"}]


def _served(result) -> dict[str, int]:
    return {r["deployment"]: r["requests"] for r in result.deployment_rows() if r["requests"]}


def test_an_outage_opens_the_breaker_moves_traffic_and_a_probe_closes_it_after_the_outage():
    # 120 requests, one a second, at 0.5 s, 1.5 s, ..., 119.5 s; DeepSeek answers 500 from 10 s to 60 s.
    # 10.5, 11.5, 12.5: fail on DeepSeek, each fails over to Mistral; the 3rd failure opens the breaker
    #   (3 within 60 s) until 42.5
    # 13.5 .. 41.5 (29 requests): DeepSeek's breaker is open, Mistral serves them without a failed try
    # 42.5: half-open, the probe goes to DeepSeek, still down: fails (open again until 72.5), fails over
    # 43.5 .. 71.5 (29): open, Mistral
    # 72.5: half-open probe, the outage ended at 60 s: it succeeds and closes the breaker
    # 73.5 .. 119.5 (47): DeepSeek again
    result = simulate(_breaker_policy(), parse_traffic(_line(faults=_outage(60)), "t"))
    assert _served(result) == {DS: 10 + 1 + 47, ML: 3 + 29 + 1 + 29}
    assert result.attempts_failed == {(DS, "server_error"): 4}
    assert result.failed_over == {DS: 4}
    assert result.failed_final == {}
    assert result.breaker_opened == {DS: 2}
    assert result.breaker_moved == {DS: 29 + 29}  # not the requests that tried DeepSeek and failed over
    assert result.served_requests == 120 and result.failed_requests == 0
    assert result.dropped_by["failover"] >= 58


def test_the_breaker_closes_on_the_first_probe_when_the_outage_is_over_by_then():
    # outage 10 s to 40 s: opens at 12.5 (until 42.5); the probe at 42.5 succeeds and closes it
    result = simulate(_breaker_policy(), parse_traffic(_line(faults=_outage(40)), "t"))
    assert _served(result) == {DS: 10 + 78, ML: 3 + 29}
    assert result.breaker_opened == {DS: 1}
    assert result.attempts_failed == {(DS, "server_error"): 3}
    assert result.breaker_moved == {DS: 29}


def test_the_failures_section_in_the_table_csv_html_and_json(tmp_path, capsys):
    policy = tmp_path / "p.yaml"
    policy.write_text(
        f"version: 1\nledger: memory://\nroutes:\n  chat:\n    - cost_threshold: {{use: {DS}, max_usd_per_1k_tokens: 0.0015, otherwise: {ML}}}\n"
        "failover:\n  circuit_breaker: {failures: 3, within_s: 60, open_s: 30}\n"
    )
    traffic = tmp_path / "t.jsonl"
    traffic.write_text(_line(faults=_outage(60)) + "\n")
    out_csv, out_html = tmp_path / "o.csv", tmp_path / "o.html"
    code = cli_main(["simulate", str(policy), "--traffic", str(traffic), "--csv", str(out_csv), "--html", str(out_html)])
    text = capsys.readouterr().out
    assert code == 0
    assert "Failures and failover (faults drawn with seed 0; circuit breakers" in text
    row = next(ln for ln in text.splitlines() if ln.startswith(DS) and "server_error" not in ln and "$" not in ln)
    assert row.split()[1:] == ["4", "4", "0", "2", "58"]  # failed attempts, failed over, for good, opened, moved
    assert f"  {DS}: server_error 4" in text
    rows = {r["name"]: r for r in csv.DictReader(out_csv.open()) if r["section"] == "deployment"}
    assert (rows[DS]["failed_attempts"], rows[DS]["breaker_opened"], rows[DS]["breaker_moved"]) == ("4", "2", "58")
    assert rows[ML]["requests"] == "62"
    assert "Failures and failover" in out_html.read_text()
    code = cli_main(["simulate", str(policy), "--traffic", str(traffic), "--json"])
    data = json.loads(capsys.readouterr().out)
    assert data["failover"]["breaker_opened"] == {DS: 2}
    assert data["failover"]["failed_attempts"] == {DS: {"server_error": 4}}
    assert data["failed_requests"] == 0


def _plain_policy(**extra):
    # no failover: no breakers; gpt-4o-mini is the cheaper of the two for 100 prompt + 256 expected
    # output tokens? no: deepseek (100*0.28 + 256*0.42) < gpt-4o-mini (100*0.15 + 256*0.60), so
    # DeepSeek is first and gpt-4o-mini is the retry
    return load_policy({"version": 1, "ledger": "memory://", "models": {DS: {"quality": 0.7}, MINI: {"quality": 0.65}},
                        "routes": {"chat": [{"quality_floor": {"min_quality": 0.6}}]}, **extra})


def test_a_fault_without_failover_settings_retries_on_another_candidate():
    result = simulate(_plain_policy(), parse_traffic(_line(count=50, faults={"deepseek-chat": {"rate_limit": 1.0}}), "t"))
    assert _served(result) == {MINI: 50}
    assert result.attempts_failed == {(DS, "rate_limit"): 50} and result.failed_over == {DS: 50}
    assert not result.breakers and result.breaker_opened == {}
    assert "circuit breakers" not in format_table(result) and "no failover: in the policy" in format_table(result)


def test_retries_bound_the_attempts_and_a_request_out_of_them_fails_for_good():
    both_down = {DS: {"server_error": 1.0}, MINI: {"server_error": 1.0}}
    result = simulate(_plain_policy(), parse_traffic(_line(count=20, faults=both_down), "t"))
    # default: one retry per other candidate (2 attempts), both fail
    assert result.attempts_failed == {(DS, "server_error"): 20, (MINI, "server_error"): 20}
    assert result.failed_final == {MINI: 20} and result.served_requests == 0
    result = simulate(_plain_policy(), parse_traffic(_line(count=20, retries=0, faults={DS: {"server_error": 1.0}}), "t"))
    assert result.failed_final == {DS: 20} and result.failed_over == {} and result.served_requests == 0
    # more retries than candidates: once both were tried, each further retry gets the best one again
    # (DeepSeek, MINI, DeepSeek, DeepSeek, DeepSeek: 5 attempts)
    result = simulate(_plain_policy(), parse_traffic(_line(count=20, retries=4, faults=both_down), "t"))
    assert result.attempts_failed == {(DS, "server_error"): 80, (MINI, "server_error"): 20}
    assert result.failed_final == {DS: 20}
    assert result.failed_requests == 20
    assert result.served_requests + sum(result.blocked.values()) + result.no_deployment + result.failed_requests == 20


def test_failover_on_fail_gives_up_at_the_first_failure():
    policy = _breaker_policy(on={"server_error": "fail"})
    # 20 requests, one each 6 s from 3 s: 3, 9 and 15 fail for good (no failover) and open the
    # breaker until 45; 21-39 (4) go to Mistral; the probes at 45, 75 and 105 fail for good and
    # reopen it; 51-69, 81-99 and 111-117 (4 + 4 + 2) go to Mistral
    result = simulate(policy, parse_traffic(_line(count=20, faults={DS: {"server_error": 1.0}}), "t"))
    assert result.failed_final == {DS: 6} and result.failed_over == {}
    assert _served(result) == {ML: 14} and result.breaker_opened == {DS: 4}


def test_invalid_answers_are_charged():
    result = simulate(_plain_policy(), parse_traffic(_line(count=10, faults={DS: {"invalid_response": 1.0}}), "t"))
    per = {r["deployment"]: r for r in result.deployment_rows()}
    ds_unit = (100 * 0.28 + 50 * 0.42) / 1e6
    assert per[DS]["requests"] == 0 and per[DS]["cost_usd"] == pytest.approx(10 * ds_unit)
    assert result.policy_cost == pytest.approx(10 * ds_unit + 10 * (100 * 0.15 + 50 * 0.60) / 1e6)


def test_the_same_seed_gives_the_same_numbers():
    text = _line(count=2000, span=(0, 3000), faults={DS: {"server_error": 0.3, "rate_limit": 0.1}})

    def run(seed):
        d = simulate(_breaker_policy(), parse_traffic(text, "t"), seed=seed).as_dict()
        d.pop("elapsed_s")
        return d

    first = run(7)
    assert first == run(7)
    assert first["failover"]["failed_attempts"][DS]["server_error"] > 0
    assert run(8)["failover"] != first["failover"]


def test_traffic_without_faults_shows_no_failures_section():
    result = simulate(_plain_policy(), parse_traffic(_line(count=5), "t"))
    assert "Failures and failover" not in format_table(result)
    assert "failed_attempts" not in result.deployment_rows()[0]


@pytest.mark.parametrize("faults,needle", [
    ({DS: {"server_error": 1.5}}, "t.jsonl:2: faults.deepseek/deepseek-chat.server_error: Input should be less than or equal to 1 (got 1.5)"),
    ({DS: {"timeout": 0.1}}, "t.jsonl:2: faults.deepseek/deepseek-chat.timeout: Input should be 'rate_limit', 'server_error'"),
    ({DS: {"server_error": 0.7, "rate_limit": 0.6}}, "probabilities add up to 1.3, more than 1"),
    ({DS: 0.5}, "t.jsonl:2: faults.deepseek/deepseek-chat: Input should be a valid dictionary (got 0.5)"),
    ({DS: {}}, "names no failure class"),
    ("ds", "t.jsonl:2: faults: must be an object (deployment -> failure class -> probability) or a list (got 'ds')"),
    ([{"server_error": 0.1}], "t.jsonl:2: faults[0].deployment: this field is required"),
    ([{"deployment": DS, "server_error": 0.1, "time": f"{_at(50)}/{_at(10)}"}], "t.jsonl:2: faults[0].time: time range ends before it starts"),
    ([{"deployment": DS, "server_error": 0.1, "time": "soon"}], "faults[0].time: time 'soon' is not ISO 8601"),
    ([{"deployment": DS, "server_error": 0.1, "time": T0}], "t.jsonl:2: faults[0].time: must be a range 'start/end', got an instant"),
    ({"claude-3": {"server_error": 0.1}}, "t.jsonl:2: faults.claude-3: 'claude-3' is no deployment of group 'chat'"),
])
def test_bad_fault_input_is_an_input_error(faults, needle, tmp_path, capsys):
    policy = tmp_path / "p.yaml"
    policy.write_text(f"version: 1\nledger: memory://\nmodels: {{{DS}: {{quality: 0.7}}, {MINI}: {{quality: 0.65}}}}\n"
                      "routes:\n  chat:\n    - quality_floor: {min_quality: 0.6}\n")
    traffic = tmp_path / "t.jsonl"
    traffic.write_text(_line(count=3) + "\n" + _line(count=3, faults=faults) + "\n")
    code = cli_main(["simulate", str(policy), "--traffic", str(traffic)])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and "Traceback" not in err, err


def test_bad_retries_is_an_input_error():
    with pytest.raises(SimulationError, match=r"t:1: retries: Input should be greater than or equal to 0 \(got -1\)"):
        parse_traffic(_line(retries=-1), "t")
