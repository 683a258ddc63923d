"""``simulate`` over traffic that describes agent runs (``{"runs": ...}`` lines): every request of a
run carries the run's session id, ``metadata.step`` and a prompt hash, so the policy's run budget
(cap, max_requests, loop guard, downgrade steps, final reserve) acts in the simulation as it does
live; the three-way comparison (no run caps, hard cap, the policy as written) is checked against a
hand calculation from LiteLLM's bundled prices and the token counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from litellm_payg.policy.load import load_policy
from litellm_payg.tools.cli import main as cli_main
from litellm_payg.tools.sim_runs import percentile
from litellm_payg.tools.simulate import SimulationError, format_table, parse_traffic, simulate

REPO = Path(__file__).resolve().parents[1]
SONNET, MINI = "anthropic/claude-sonnet-4-5", "gpt-4o-mini"  # $3/$15 and $0.15/$0.60 per 1M tokens


def _policy(**run_budget):
    """plan and final need quality 0.9 (Sonnet), act 0.6 (mini: the cheapest of quality >= 0.6)."""
    budgets = []
    if run_budget:
        budgets = [{"name": "per-run", "scope": "session:*", "window": "session:30m", "on_exceed": "block", **run_budget}]
    return load_policy({
        "version": 1, "ledger": "memory://",
        "models": {SONNET: {"quality": 0.95}, MINI: {"quality": 0.65}},
        "routes": {"agent": [
            # every step may be downgraded past its floor (floors hold by default)
            {"when": {"metadata.step": ["plan", "final"]}, "quality_floor": {"min_quality": 0.9, "keep_past_downgrade": False}},
            {"when": {"metadata.step": "act"}, "quality_floor": {"min_quality": 0.6, "keep_past_downgrade": False}},
        ]},
        "budgets": budgets,
    })


def _runs(count=4, repeat=3, runaway=None, **extra) -> str:
    """Runs of plan (1000 + 200 tokens), act ``repeat`` times (2000 + 100), final (3000 + 300); each
    step's max_tokens is its completion, so a reservation estimate is the request's real cost."""
    spec = {"name": "agent", "group": "agent", "count": count, "gap_s": 10,
            "time": "2025-01-01T00:00:00Z/2025-01-02T00:00:00Z",
            "steps": [{"step": "plan", "prompt_tokens": 1000, "completion_tokens": 200, "max_tokens": 200},
                      {"step": "act", "repeat": repeat, "prompt_tokens": 2000, "completion_tokens": 100, "max_tokens": 100},
                      {"step": "final", "prompt_tokens": 3000, "completion_tokens": 300, "max_tokens": 300}],
            **extra}
    if runaway is not None:
        spec["runaway"] = runaway
    return json.dumps({"runs": spec})


PLAN = 1000 * 3e-6 + 200 * 15e-6  # 0.006 on Sonnet
ACT = 2000 * 0.15e-6 + 100 * 0.6e-6  # 0.00036 on mini
FINAL = 3000 * 3e-6 + 300 * 15e-6  # 0.0135 on Sonnet
FINAL_MINI = 3000 * 0.15e-6 + 300 * 0.6e-6  # 0.00063 on mini
HONEST = PLAN + 3 * ACT + FINAL  # 0.02058


def _row(result, key):
    return next(r for r in result.run_comparison["rows"] if r["key"] == key)


def test_the_three_way_comparison_matches_a_hand_calculation():
    """4 runs of plan -> act x3 -> final; one (25%) runs away into 100 more acts, each a new prompt.
    Run budget: $0.025 per run, a final reserve of 20% (non-final requests held to $0.02), one
    downgrade step at 0.5 ($0.0125) to quality >= 0.6; each reservation estimate equals the charge.

    Prices (LiteLLM's bundled map): Sonnet $3/$15, mini $0.15/$0.60 per 1M tokens.
      plan  on Sonnet: 1000 x 3e-6 + 200 x 15e-6      = $0.006
      act   on mini:   2000 x 0.15e-6 + 100 x 0.6e-6  = $0.00036
      final on Sonnet: 3000 x 3e-6 + 300 x 15e-6      = $0.0135
      final on mini:   3000 x 0.15e-6 + 300 x 0.6e-6  = $0.00063
      an honest run:   0.006 + 3 x 0.00036 + 0.0135   = $0.02058 in every variant (spent $0.00708
                       before its final, 28% of the limit: never downgraded, never refused)
    The runaway run:
      no run caps: 0.006 + 103 x 0.00036 + 0.0135                        = $0.05658, finished
      hard cap:    the 53rd act would reach 0.006 + 53 x 0.00036 = $0.02508 > $0.025: refused (cap)
                   after 52; the final, $0.02472 + $0.0135 > $0.025, refused too: unfinished,
                   0.006 + 52 x 0.00036                                  = $0.02472
      as written:  the 39th act would reach 0.006 + 39 x 0.00036 = $0.02004 > $0.02 (the working
                   limit): refused (reserve) after 38 ($0.01968, 79% of the limit: past the step,
                   so the final goes to mini): 0.01968 + 0.00063         = $0.02031, finished
    Rows (p50 and p95 by nearest rank over the 4 runs' costs):
      no run caps: p50 $0.02058, p95 = max $0.05658, total 3 x 0.02058 + 0.05658 = $0.11832, 4 finished
      hard cap:    p50 $0.02058, p95 = max $0.02472, total 0.06174 + 0.02472     = $0.08646, 3 finished
      as written:  p50 = p95 = max $0.02058,         total 0.06174 + 0.02031     = $0.08205, 4 finished
    Downgraded requests as written: the runaway is past the step from its 20th act (spent before act
    j is 0.006 + (j - 1) x 0.00036 >= 0.0125 from j = 20), but its acts already go to mini, the
    step's own choice, so the route's pick stands (a downgrade never raises the cost); only its
    final moves (Sonnet -> mini): 1.
    """
    policy = _policy(limit_usd=0.025, loop_guard=3, downgrade=[{"at": 0.5, "min_quality": 0.6}],
                     final_reserve={"share": 0.2, "when": {"metadata.step": "final"}})
    traffic = parse_traffic(_runs(runaway={"share": 0.25, "loop": 100, "same_prompt": 0}), "t")
    result = simulate(policy, traffic)
    approx = pytest.approx
    assert [PLAN, ACT, FINAL, FINAL_MINI, HONEST] == approx([0.006, 0.00036, 0.0135, 0.00063, 0.02058])

    none, hard, written = _row(result, "no_run_caps"), _row(result, "hard_cap"), _row(result, "as_written")
    runaway_none = PLAN + 103 * ACT + FINAL
    assert runaway_none == approx(0.05658)
    assert none["cost_per_run_usd"] == approx({"p50": HONEST, "p95": runaway_none, "max": runaway_none})
    assert none["total_usd"] == approx(0.11832) and none["finished"] == 4
    assert (none["runaway_runs"], none["runaway_stopped"], none["runaway_cost_usd"]) == (1, 0, approx(runaway_none))

    runaway_hard = PLAN + 52 * ACT
    assert runaway_hard == approx(0.02472)
    assert hard["cost_per_run_usd"] == approx({"p50": HONEST, "p95": runaway_hard, "max": runaway_hard})
    assert hard["total_usd"] == approx(0.08646) and hard["finished"] == 3
    assert hard["runaway_stopped"] == 1 and hard["runaway_stopped_by"] == {"cap": 1} and hard["runaway_finished"] == 0
    assert hard["runaway_cost_usd"] == approx(runaway_hard) and hard["runaway_cost_per_run_usd"] == approx(runaway_hard)
    assert hard["honest_cut_short"] == 0

    runaway_written = PLAN + 38 * ACT + FINAL_MINI
    assert runaway_written == approx(0.02031)
    assert written["cost_per_run_usd"] == approx({"p50": HONEST, "p95": HONEST, "max": HONEST})
    assert written["total_usd"] == approx(0.08205) and written["finished"] == 4
    assert written["runaway_stopped_by"] == {"reserve": 1} and written["runaway_finished"] == 1
    assert written["runaway_cost_usd"] == approx(runaway_written)
    assert written["requests_downgraded"] == 1 and written["runs_downgraded"] == 1
    assert result.policy_cost == approx(0.08205)  # the simulation itself is the "as written" row

    table = format_table(result)
    assert "Agent runs: 4 runs, 1 of them runaway; the same runs three ways" in table
    hard_line = next(ln for ln in table.splitlines() if ln.startswith("hard cap "))
    # four significant digits below $1 (money.usd): the total $0.08646 is not "$0.09", the runaway's $0.02472 not "$0.02"
    assert hard_line.split() == ["hard", "cap", "$0.02058", "$0.02472", "$0.02472", "$0.08646", "3", "0", "1", "of", "1",
                                 "$0.02472", "$0.02472"]
    assert "runaways stopped by cap 1" in table and "runaways stopped by reserve 1" in table
    as_json = result.as_dict()["runs"]
    assert as_json["budget"] == "per-run" and [r["key"] for r in as_json["rows"]] == ["no_run_caps", "hard_cap", "as_written"]


def test_the_loop_guard_stops_a_runaway_that_resends_one_prompt():
    # loop_guard 3: the loop's prompt is served twice and refused the third time; honest acts differ
    result = simulate(_policy(limit_usd=1.0, loop_guard=3),
                      parse_traffic(_runs(runaway={"share": 0.25, "loop": 50}), "t"), compare_runs=False)
    runaway = [r for r in result.runs if r.runaway]
    honest = [r for r in result.runs if not r.runaway]
    assert len(runaway) == 1 and runaway[0].same_prompt
    assert runaway[0].stopped_by == "loop" and runaway[0].finished
    assert runaway[0].served == 1 + 3 + 2 + 1  # plan, the honest acts, two sends of the loop, final
    assert runaway[0].cost_usd == pytest.approx(PLAN + 5 * ACT + FINAL)
    assert all(r.finished and r.stopped_by is None and r.served == 5 for r in honest)
    assert result.blocked == {"per-run": 1}


def test_a_runaway_repeating_one_tool_call_in_a_growing_conversation_is_caught_by_loop_counts():
    # each loop round is a new prompt (the conversation grows), with the same tool call and result
    traffic = _runs(runaway={"share": 0.25, "loop": 50, "same_tool_call": 1})
    prompt_only = simulate(_policy(limit_usd=1.0, loop_guard=3), parse_traffic(traffic, "t"), compare_runs=False)
    runaway = next(r for r in prompt_only.runs if r.runaway)
    assert runaway.tool_loop and not runaway.same_prompt
    assert runaway.stopped_by is None and runaway.served == 1 + 3 + 50 + 1  # the prompt guard never sees it
    counted = simulate(_policy(limit_usd=1.0, loop_guard=3, loop_counts=["prompt", "tool_call"]),
                       parse_traffic(traffic, "t"), compare_runs=False)
    runaway = next(r for r in counted.runs if r.runaway)
    # the call is the newest turn of every loop round: served twice, refused the third time
    assert runaway.stopped_by == "tool_loop" and runaway.finished
    assert runaway.served == 1 + 3 + 2 + 1
    assert all(r.finished and r.stopped_by is None for r in counted.runs if not r.runaway)


def test_runaway_shares_of_prompt_and_tool_loops_add_up_to_at_most_one():
    with pytest.raises(SimulationError, match="same_prompt \\+ same_tool_call"):
        parse_traffic(_runs(runaway={"share": 0.25, "loop": 5, "same_prompt": 0.7, "same_tool_call": 0.5}), "t")


def test_max_requests_stops_a_runaway_and_counts_the_final_request_too():
    # max_requests 10, no loop guard: the runaway's plan and 9 acts use the 10 requests; its 10th act
    # is refused, and so is its final (max_requests counts every request of the run): unfinished
    result = simulate(_policy(limit_usd=1.0, max_requests=10),
                      parse_traffic(_runs(runaway={"share": 0.25, "loop": 50, "same_prompt": 0}), "t"))
    runaway = next(r for r in result.runs if r.runaway)
    assert runaway.stopped_by == "max_requests" and runaway.ended_by == "max_requests" and not runaway.finished
    assert runaway.served == 10 and runaway.cost_usd == pytest.approx(PLAN + 9 * ACT)
    written = _row(result, "as_written")
    assert written["finished"] == 3 and written["runaway_stopped_by"] == {"max_requests": 1}
    # without the run budget the same run sends its 53 acts and its final
    none = _row(result, "no_run_caps")
    assert none["runaway_cost_usd"] == pytest.approx(PLAN + 53 * ACT + FINAL) and none["finished"] == 4


def test_runs_are_finished_only_when_their_final_step_is_served():
    # a cap too small for the final step (but not the working ones): every run is refused its final
    result = simulate(_policy(limit_usd=0.015), parse_traffic(_runs(count=3), "t"), compare_runs=False)
    assert [(r.finished, r.stopped_by, r.ended_by, r.served) for r in result.runs] == [(False, None, "cap", 4)] * 3
    row = result.runs_section()["rows"][0]  # no run budget compared (compare_runs=False): one row
    assert row["finished"] == 0 and row["honest_cut_short"] == 0 and row["runaway_runs"] == 0


def test_runs_spread_over_the_period_with_their_requests_gap_s_apart_and_the_same_seed_gives_the_same_runs():
    text = _runs(count=2, repeat=[1, 5], runaway={"share": 0.5, "loop": 3})
    a = simulate(_policy(), parse_traffic(text, "t"), seed=3)
    b = simulate(_policy(), parse_traffic(text, "t"), seed=3)
    assert [(r.session, r.start, r.requests) for r in a.runs] == [(r.session, r.start, r.requests) for r in b.runs]
    assert [r.session for r in a.runs] == ["agent-1", "agent-2"]
    assert [r.start - a.runs[0].start for r in a.runs] == [0, 43200]  # 2 runs over a day: at 6 h and 18 h
    assert a.run_comparison is None  # no run budget: nothing to compare
    assert "the policy has no run budget to compare" in format_table(a)
    c = simulate(_policy(), parse_traffic(text, "t"), seed=4)
    assert [len(r.requests) for r in c.runs] != [len(r.requests) for r in a.runs] or \
        [r.runaway for r in c.runs] != [r.runaway for r in a.runs]


def test_percentile_is_nearest_rank():
    assert percentile([4, 1, 3, 2], 0.5) == 2 and percentile([4, 1, 3, 2], 0.95) == 4
    assert percentile([5.0], 0.95) == 5.0 and percentile([], 0.5) == 0.0


def _bad(**change):
    spec = json.loads(_runs())["runs"]
    spec.update(change)
    return json.dumps({"runs": {k: v for k, v in spec.items() if v is not None}})


@pytest.mark.parametrize("line,needle", [
    (_bad(group=None), "t.jsonl:2: runs.group: this field is required"),
    (_bad(count=0), "t.jsonl:2: runs.count: Input should be greater than or equal to 1 (got 0)"),
    (_bad(steps=[]), "t.jsonl:2: runs.steps: List should have at least 1 item"),
    (_bad(steps=[{"step": "plan", "prompt_tokens": 10}]), "t.jsonl:2: runs.steps[0].completion_tokens: this field is required"),
    (_bad(steps=[{"step": "", "prompt_tokens": 1, "completion_tokens": 1}]), "t.jsonl:2: runs.steps[0].step[0]: the step's name (sent as metadata.step) must be a non-empty string"),
    (_bad(steps=[{"step": "a", "prompt_tokens": 1, "completion_tokens": 1, "repeat": [3, 2]},
                 {"step": "f", "prompt_tokens": 1, "completion_tokens": 1}]), "t.jsonl:2: runs.steps[0].repeat: must be a whole number >= 1 or [min, max]"),
    (_bad(steps=[{"step": "a", "prompt_tokens": 1, "completion_tokens": 1, "repeat": 2}]), "the last step is the run's final step"),
    (_bad(steps=[{"step": "a", "prompt_tokens": 1, "completion_tokens": 1, "tokens": 3}]), "t.jsonl:2: runs.steps[0].tokens: unknown field"),
    (_bad(gap_s=0), "t.jsonl:2: runs.gap_s: Input should be greater than 0 (got 0)"),
    (_bad(runaway={"share": 1.5, "loop": 3}), "t.jsonl:2: runs.runaway.share: Input should be less than or equal to 1 (got 1.5)"),
    (_bad(runaway={"share": 0.1}), "t.jsonl:2: runs.runaway.loop: this field is required"),
    (_bad(runaway={"share": 0.1, "loop": 3, "same": 1}), "t.jsonl:2: runs.runaway.same: unknown field"),
    (_bad(runaway={"share": 0.1, "loop": 3},
          steps=[{"step": "f", "prompt_tokens": 1, "completion_tokens": 1}]), "no step has one"),
    (_bad(bogus=1), "t.jsonl:2: runs.bogus: unknown field"),
    ('{"runs": {"name": "agent", "group": "agent"}, "count": 3}', "a runs line is {\"runs\": {...}} alone"),
    ('{"runs": [1]}', "t.jsonl:2: 'runs' must be an object"),
])
def test_bad_runs_input_is_an_input_error_naming_line_and_field(line, needle, tmp_path, capsys):
    policy = tmp_path / "p.yaml"
    policy.write_text(f"version: 1\nledger: memory://\nmodels: {{{MINI}: {{quality: 0.65}}}}\n"
                      "routes:\n  agent:\n    - quality_floor: {min_quality: 0.6}\n")
    traffic = tmp_path / "t.jsonl"
    traffic.write_text(_runs(count=1) + "\n" + line + "\n")
    code = cli_main(["simulate", str(policy), "--traffic", str(traffic)])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and "Traceback" not in err, err


def test_two_runs_lines_need_distinct_names():
    with pytest.raises(SimulationError, match="distinct names"):
        parse_traffic(_runs() + "\n" + _runs(), "t")


def test_the_bundled_agent_runs_scenario_prints_the_comparison_the_readme_quotes(capsys, monkeypatch):
    """The bundled 1,000-run scenario under policies/agent-runs.yaml, simulated once (three
    simulations), printed as the table and as --json from that one result; the README quotes the
    table as printed."""
    import litellm_payg.tools.simulate as module

    real, results = module.simulate, []

    def simulate_once(*args, **kwargs):
        if kwargs.get("compare_runs") is False:  # the comparison's own variants
            return real(*args, **kwargs)
        if not results:
            results.append(real(*args, **kwargs))
        return results[0]

    monkeypatch.setattr(module, "simulate", simulate_once)
    argv = ["simulate", str(REPO / "policies" / "agent-runs.yaml"), "--scenario", "agent-runs"]
    assert cli_main(argv) == 0
    table = capsys.readouterr().out
    assert cli_main(argv + ["--json"]) == 0
    runs = json.loads(capsys.readouterr().out)["runs"]
    none, hard, written = runs["rows"]
    assert [r["runs"] for r in runs["rows"]] == [1000] * 3 and [r["runaway_runs"] for r in runs["rows"]] == [30] * 3
    assert none["runaway_stopped"] == 0 and none["finished"] == 1000
    assert hard["runaway_stopped"] == 30 and written["runaway_stopped"] == 30
    # the runaways that repeat one tool call in a growing conversation are caught by the loop guard
    assert hard["runaway_stopped_by"]["tool_loop"] == 10 and written["runaway_stopped_by"]["tool_loop"] == 10
    assert written["finished"] == 1000 > hard["finished"]  # the final reserve lets stopped runaways answer
    assert written["total_usd"] < hard["total_usd"] < none["total_usd"]
    assert written["cost_per_run_usd"]["max"] <= 0.30 and hard["cost_per_run_usd"]["max"] <= 0.30
    assert none["cost_per_run_usd"]["max"] > 5
    # the README's excerpt (section "Simulating runs") is this table's runs section, line for line
    import user_docs

    section = user_docs.section("Simulating runs")
    excerpt = section.split("Agent runs: ", 1)[1].split("```", 1)[0].rstrip("\n")
    assert ("Agent runs: " + excerpt) in table
    example = section.split("```json\n", 1)[1].split("```", 1)[0]
    assert parse_traffic(" ".join(example.split()), "readme").runs[0].count == 1000


def test_the_baselines_hold_each_step_to_the_bar_of_the_rules_that_apply_to_it():
    """With ``when:``, the oracle and the single-deployment baselines read the bar of the rules the
    step's requests meet: act (bar 0.6) may go to mini, plan and final (0.9) need Sonnet. Before,
    every step was held to the route's highest bar, and the oracle put the acts on Sonnet too."""
    result = simulate(_policy(), parse_traffic(_runs(count=2), "t"))
    oracle = result.baseline("oracle")
    assert oracle["picks"] == {"agent/plan": SONNET, "agent/act": MINI, "agent/final": SONNET}
    # the oracle is then what this policy itself does (it routes each step to the cheapest meeting its bar)
    assert oracle["cost_usd"] == pytest.approx(result.policy_cost, rel=1e-9)
    only_mini = next(b for b in result.baselines if b["kind"] == "single" and b["deployment"] == MINI)
    assert only_mini["meets_quality_bar_for"] == 2 * 3  # the acts (3 per run) meet their bar, plan/final do not
