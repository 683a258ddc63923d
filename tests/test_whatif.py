"""``litellm-payg what-if``: real history (LiteLLM's spend logs in a real Postgres, a JSONL export, the
plugin's own SQLite ledger) replayed through a policy's lifecycle, against hand calculations."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timezone
from pathlib import Path

import litellm
import pytest

from litellm_payg.tools import cli
from litellm_payg.tools.whatif import HistoryPricer, replay, usd
from litellm_payg.tools.whatif_history import HistoryRow
from litellm_payg.tools.whatif_postgres import COLUMNS
from whatif_helpers import (
    MONTH_START,
    copy_rows,
    generate_month,
    prisma_columns,
    require_postgres,
    spend_row,
    throwaway_database,
)

REPO = Path(__file__).resolve().parents[1]
SUPPORT = str(REPO / "policies" / "support-bot.yaml")
THRESHOLD = str(REPO / "policies" / "cost-threshold.yaml")
MONTH_ROWS = 3000
DAY = 86400.0


def price(ref: str) -> dict:
    """The model's entry in LiteLLM's price map (keyed with or without the provider prefix)."""
    return litellm.model_cost.get(ref) or litellm.model_cost[ref.split("/", 1)[1]]


def run_cli(argv: list[str], capsys) -> dict:
    capsys.readouterr()
    assert cli.main(argv) == 0
    return json.loads(capsys.readouterr().out)


# -- the reader against LiteLLM's own schema -----------------------------------------------------


def test_every_column_the_reader_selects_is_in_litellms_schema_with_its_type():
    cols = {name: (type_, nullable) for name, type_, nullable, _ in prisma_columns()}
    missing = [c for c in COLUMNS if c not in cols]
    assert not missing, f"LiteLLM's schema.prisma has no {missing}: the spend-logs reader needs updating"
    expected = {"request_id": "String", "startTime": "DateTime", "prompt_tokens": "Int", "completion_tokens": "Int",
                "spend": "Float", "metadata": "Json", "request_tags": "Json", "model": "String", "model_group": "String"}
    assert {c: cols[c][0] for c in expected} == expected


# -- a month in Postgres -------------------------------------------------------------------------

SLICE_TEAM = "slice-team"
SLICE_T0 = MONTH_START + 3 * DAY + 17.0


def slice_rows() -> list[dict]:
    """Three requests of one team, hand-priced in the test below; each paid LiteLLM's price."""
    return [
        spend_row("slice-a", SLICE_T0, "support", "gpt-4o-mini", 400, 120, _hand_cost("gpt-4o-mini", 400, 120, 0),
                  provider="openai", team=SLICE_TEAM, key="k-slice"),
        spend_row("slice-b", SLICE_T0 + 1, "support", "claude-sonnet-4-5", 3000, 200,
                  _hand_cost("anthropic/claude-sonnet-4-5", 3000, 200, 1000), provider="anthropic",
                  team=SLICE_TEAM, key="k-slice", cache_read=1000),
        # a request LiteLLM logged without usage (e.g. an answer without a usage block): listed, never priced
        spend_row("slice-no-usage", SLICE_T0 + 2, "support", "gpt-4o-mini", None, None, 0.0007, provider="openai",
                  team=SLICE_TEAM, key="k-slice"),
    ]


@pytest.fixture(scope="module")
def month_db():
    require_postgres()
    with throwaway_database() as url:
        copy_rows(url, generate_month(MONTH_ROWS))
        copy_rows(url, slice_rows())
        yield url


def _expected_support_pick(prompt: int) -> str:
    """support-bot.yaml by hand: <= 500 prompt tokens need quality 0.6, more need 0.85; the cheapest
    meeting the bar at the request's size with 300 expected output tokens (defaults) goes first."""
    quality = {"deepseek/deepseek-chat": 0.70, "gpt-4o-mini": 0.65, "mistral/mistral-large-latest": 0.86,
               "anthropic/claude-sonnet-4-5": 0.95}
    bar = 0.6 if prompt <= 500 else 0.85

    def estimate(m: str) -> float:
        return prompt * price(m)["input_cost_per_token"] + 300 * price(m)["output_cost_per_token"]

    return min((m for m, q in quality.items() if q >= bar), key=estimate)


def _hand_cost(model: str, prompt: int, completion: int, cache_read: int) -> float:
    p = price(model)
    return ((prompt - cache_read) * p["input_cost_per_token"]
            + cache_read * p.get("cache_read_input_token_cost", p["input_cost_per_token"])
            + completion * p["output_cost_per_token"])


def test_a_slice_of_the_month_matches_the_hand_calculation(month_db, capsys):
    out = run_cli(["what-if", SUPPORT, "--from", month_db, "--team", SLICE_TEAM, "--json"], capsys)
    a_model, b_model = _expected_support_pick(400), _expected_support_pick(3000)
    assert b_model == "mistral/mistral-large-latest"  # quality 0.86 >= 0.85 and cheaper than Sonnet
    policy = _hand_cost(a_model, 400, 120, 0) + _hand_cost(b_model, 3000, 200, 1000)
    oracle_a = min(_hand_cost(m, 400, 120, 0) for m in ("deepseek/deepseek-chat", "gpt-4o-mini",
                                                        "mistral/mistral-large-latest", "anthropic/claude-sonnet-4-5"))
    oracle_b = min(_hand_cost(m, 3000, 200, 1000) for m in ("mistral/mistral-large-latest", "anthropic/claude-sonnet-4-5"))
    t = out["totals"]
    assert t["requests"] == 2 and t["unpriced"] == 1
    paid = _hand_cost("gpt-4o-mini", 400, 120, 0) + _hand_cost("anthropic/claude-sonnet-4-5", 3000, 200, 1000)
    assert t["actual_usd"] == pytest.approx(paid, rel=1e-9)  # the no-usage row's spend is not compared
    assert t["policy_usd"] == pytest.approx(policy, rel=1e-9)
    assert t["oracle_usd"] == pytest.approx(oracle_a + oracle_b, rel=1e-9)
    listed = out["unpriced"]["listed"]
    assert [e["request_id"] for e in listed] == ["slice-no-usage"]
    assert "no usage" in listed[0]["reason"]
    moved = {(m["paid_for"], m["policy_picked"]): m["requests"] for m in out["moved"]}
    assert moved.get(("claude-sonnet-4-5", b_model)) == 1 or moved.get(("anthropic/claude-sonnet-4-5", b_model)) == 1


def test_the_month_through_two_policies(month_db, capsys):
    support = run_cli(["what-if", SUPPORT, "--from", month_db, "--json"], capsys)
    threshold = run_cli(["what-if", THRESHOLD, "--from", month_db, "--json"], capsys)
    expected_paid = sum(r["spend"] for r in generate_month(MONTH_ROWS)) + sum(r["spend"] for r in slice_rows()[:2])
    for out in (support, threshold):
        t = out["totals"]
        assert t["requests"] + t["unpriced"] == MONTH_ROWS + 3
        assert t["actual_usd"] == pytest.approx(expected_paid, rel=1e-9)
        assert len(out["by_day"]) == 30
        assert sum(d["policy_usd"] for d in out["by_day"].values()) == pytest.approx(t["policy_usd"], rel=1e-9)
        assert sum(d["requests"] for d in out["by_team"].values()) == t["requests"]
        assert t["oracle_usd"] <= t["policy_usd"] + 1e-12
    # each policy governs only its own group: the other group keeps the deployment that served it
    assert support["by_group"]["chat"]["policy_usd"] == pytest.approx(support["by_group"]["chat"]["actual_usd"], rel=1e-9)
    assert threshold["by_group"]["support"]["policy_usd"] == pytest.approx(
        threshold["by_group"]["support"]["actual_usd"], rel=1e-9)
    # cost-threshold sends every chat request under its threshold to DeepSeek: cheaper than what was paid
    assert threshold["by_group"]["chat"]["policy_usd"] < threshold["by_group"]["chat"]["actual_usd"]
    # the team filter is a WHERE clause: its totals are the team's row of the whole
    team = run_cli(["what-if", SUPPORT, "--from", month_db, "--team", "t-sales", "--json"], capsys)
    assert team["totals"]["policy_usd"] == pytest.approx(support["by_team"]["t-sales"]["policy_usd"], rel=1e-9)
    # --since/--until: one day of the month
    day = run_cli(["what-if", SUPPORT, "--from", month_db, "--since", "2025-03-05T00:00:00Z",
                   "--until", "2025-03-06T00:00:00Z", "--json"], capsys)
    assert list(day["by_day"]) == ["2025-03-05"]
    assert day["by_day"]["2025-03-05"]["requests"] == support["by_day"]["2025-03-05"]["requests"]


def test_jsonl_export_read_back_gives_the_same_answer(month_db, tmp_path, capsys):
    export = tmp_path / "history.jsonl"
    from_pg = run_cli(["what-if", SUPPORT, "--from", month_db, "--export-jsonl", str(export), "--json"], capsys)
    assert sum(1 for _ in export.open()) == MONTH_ROWS + 3
    from_jsonl = run_cli(["what-if", SUPPORT, "--from", str(export), "--json"], capsys)
    for out in (from_pg, from_jsonl):
        out.pop("history")
        out.pop("elapsed_s")
    assert from_jsonl == from_pg


def test_outputs_csv_html_and_small_amounts(month_db, tmp_path, capsys):
    html, csv_path = tmp_path / "r.html", tmp_path / "r.csv"
    capsys.readouterr()
    assert cli.main(["what-if", SUPPORT, "--from", month_db, "--html", str(html), "--csv", str(csv_path)]) == 0
    table = capsys.readouterr().out
    assert "per day:" in table and "Biggest single differences" in table and "$0.00 " not in table
    page = html.read_text()
    assert 'id="chart-daily"' in page and "series-paid" in page and "series-policy" in page
    assert "<script" not in page and "http" not in page.split("<svg", 1)[1].replace("http://www.w3.org/2000/svg", "")
    rows = csv_path.read_text().splitlines()
    assert rows[0].startswith("section,name,requests,paid_usd,policy_usd") and sum(r.startswith("day,") for r in rows) == 30
    assert usd(0.0005) == "$0.0005" and usd(0.0) == "$0" and usd(1234.5) == "$1,234.50" and usd(-0.00012345) == "-$0.0001234"


# -- budgets and runs on the recorded timeline ---------------------------------------------------


def _rows(n: int, *, group: str, model: str, team: str = "t", session: str | None = None, gap: float = 1.0,
          prompt: int = 100, completion: int = 10, t0: float = MONTH_START) -> list[HistoryRow]:
    return [HistoryRow(f"r{i}", t0 + i * gap, group, model, None, prompt, completion, spend_usd=0.001, team=team,
                       session=session) for i in range(n)]


def test_a_run_budget_counts_the_recorded_session(tmp_path):
    # agent-runs.yaml: max_requests 100 per session; 105 requests of one run, 3 of another
    rows = _rows(105, group="agent", model="gpt-4o", session="run-1") + _rows(
        3, group="agent", model="gpt-4o", session="run-2", t0=MONTH_START + 200)
    rows.sort(key=lambda r: r.ts)
    result = replay(str(REPO / "policies" / "agent-runs.yaml"), rows)
    assert result.totals.blocked == 5
    assert sum(n for (budget, _), n in result.blocked.items() if budget == "per-run") == 5
    assert [e["request_id"] for e in result.blocked_examples] == ["r100", "r101", "r102", "r103", "r104"]


def test_a_daily_team_budget_blocks_on_the_timeline_and_says_whose(tmp_path):
    limit = 0.5
    policy = tmp_path / "p.yaml"
    policy.write_text(Path(SUPPORT).read_text() + "\nbudgets:\n  - {name: team-day, scope: 'team:*', window: day, "
                      f"limit_usd: {limit}, on_exceed: block}}\n")
    # 200 requests a day over two days for team a, 5 a day for team b
    rows = _rows(400, group="support", model="gpt-4o-mini", team="a", gap=DAY / 200, prompt=2000, completion=200)
    rows += _rows(10, group="support", model="gpt-4o-mini", team="b", gap=DAY / 5, prompt=2000, completion=200, t0=MONTH_START + 7)
    rows.sort(key=lambda r: r.ts)
    result = replay(str(policy), rows)
    blocked = {whose: n for (budget, whose), n in result.blocked.items() if budget == "team-day"}
    assert set(blocked) == {"team a"} and 0 < blocked["team a"] < 400
    model = _expected_support_pick(2000)
    per_request = _hand_cost(model, 2000, 200, 0)
    # the reservation, as live: the prompt plus the most the model may answer (its max_output_tokens,
    # since the history does not say whether the request capped its output) at the picked model's price
    reservation = (2000 * price(model)["input_cost_per_token"]
                   + price(model)["max_output_tokens"] * price(model)["output_cost_per_token"])
    assert reservation < limit
    for day in ("2025-03-01", "2025-03-02"):  # each day starts afresh (the window)
        d = result.by["day"][day]
        served_a = d.requests - d.blocked - 5
        # a request is refused once what was spent plus its reservation would pass the limit
        assert limit - reservation - per_request < served_a * per_request <= limit
        assert d.policy == pytest.approx((served_a + 5) * per_request, rel=1e-9)
    # a blocked request costs the policy nothing: the oracle is also given over the served ones
    t = result.totals
    assert t.oracle_served < t.oracle and t.oracle_served <= t.policy + 1e-12


# -- the plugin's own ledger ---------------------------------------------------------------------


def test_the_plugins_sqlite_ledger_as_a_source(tmp_path, capsys):
    from litellm_payg.core.decision import RouteRequest
    from litellm_payg.policy.load import load_policy
    from litellm_payg.runtime.engine import Engine
    from litellm_payg.runtime.lifecycle import Lifecycle
    from litellm_payg.stores.ledger import open_ledger
    from litellm_payg.adapter.deployments import candidates_named_by_policy

    url = f"sqlite:///{tmp_path}/ledger.db"
    policy = load_policy(SUPPORT)
    clock = [MONTH_START]
    engine = Engine(policy, ledger=url, clock=lambda: clock[0])
    life = Lifecycle(engine)
    cands = candidates_named_by_policy(engine)["support"]
    paid = 0.0
    for i in range(6):  # governed requests as the plugin books them (no token counts in the record)
        clock[0] = MONTH_START + i * 60
        picked = life.pick(RouteRequest("support", prompt_tokens=300, output_tokens=300, team="t1", trace_id=f"g{i}"),
                           cands, f"res-{i}")
        life.succeeded(picked, picked.candidate.deployment_id, 0.0002 * (i + 1))
        paid += 0.0002 * (i + 1)
    engine.spend.close()
    with open_ledger(url) as ledger:  # two records that carry their tokens
        for i, (p, c) in enumerate(((400, 120), (3000, 200))):
            ledger.record(f"tok-{i}", [], 0.001, 60, now=MONTH_START + 1000 + i,
                          attrs={"group": "support", "model": "gpt-4o-mini", "team": "t2", "prompt_tokens": p,
                                 "completion_tokens": c})
    out = run_cli(["what-if", SUPPORT, "--from", url, "--json"], capsys)
    t = out["totals"]
    assert t["requests"] == 2 and t["unpriced"] == 6
    assert out["unpriced"]["by_reason"] == {"no usage recorded (prompt and completion tokens unknown)": 6}
    assert sum(e["spend_usd"] for e in out["unpriced"]["listed"]) == pytest.approx(paid)
    hand = _hand_cost(_expected_support_pick(400), 400, 120, 0) + _hand_cost(_expected_support_pick(3000), 3000, 200, 0)
    assert t["policy_usd"] == pytest.approx(hand, rel=1e-9) and t["actual_usd"] == pytest.approx(0.002)
    assert list(out["by_team"]) == ["t2"]


# -- prices --------------------------------------------------------------------------------------


def test_the_per_token_rates_give_litellms_own_cost():
    from litellm_payg.stores.prices import candidate_from_deployment

    pricer = None
    import random

    rng = random.Random(3)
    for model in ("gpt-4o", "anthropic/claude-sonnet-4-5", "deepseek/deepseek-chat", "gemini/gemini-2.5-pro",
                  "mistral/mistral-large-latest"):
        c = candidate_from_deployment({"model_name": "g", "litellm_params": {"model": model}, "model_info": {"id": model}}, {})
        pricer = HistoryPricer([c])
        for _ in range(20):
            p = rng.choice((rng.randint(1, 5000), rng.randint(150_000, 400_000)))
            read, write, comp = rng.randint(0, p // 2), rng.choice((0, rng.randint(0, p // 4))), rng.randint(0, 3000)
            row = HistoryRow("x", 0.0, "g", model, None, p, comp, cache_read_tokens=read, cache_write_tokens=write)
            a, b = litellm.cost_per_token(model=model, prompt_tokens=p, completion_tokens=comp,
                                          cache_read_input_tokens=read, cache_creation_input_tokens=write)
            assert pricer.charge(c, row) == pytest.approx(a + b, rel=1e-9, abs=1e-15), (model, p, comp, read, write)


def test_pricing_every_deployment_at_once_gives_each_ones_own_charge_exactly():
    """``charge_all`` (the oracle's, on every row) is ``charge`` of each deployment, to the bit: the
    linear rates, a custom price, reasoning tokens priced apart, a long prompt, no price."""
    import random

    from litellm_payg.stores.prices import candidate_from_deployment

    deployments = [({"model": m}, m) for m in ("gpt-4o", "deepseek/deepseek-chat", "dashscope/qwen-turbo",
                                               "anthropic/claude-sonnet-4-5")]
    deployments += [({"model": "openai/my-own", "input_cost_per_token": 1e-6, "output_cost_per_token": 3e-6}, "custom"),
                    ({"model": "openai/nobody-prices-this"}, "unpriced")]
    cands = [candidate_from_deployment({"model_name": "g", "litellm_params": params, "model_info": {"id": dep}}, {})
             for params, dep in deployments]
    pricer = HistoryPricer(cands)
    rng = random.Random(5)
    for i in range(300):
        p = rng.choice((0, rng.randint(1, 5000), rng.randint(150_000, 300_000)))
        row = HistoryRow("x", 0.0, "g", "gpt-4o", None, p, rng.randint(0, 3000), cache_read_tokens=rng.randint(0, p // 2),
                         cache_write_tokens=rng.choice((0, rng.randint(0, p // 4))), reasoning_tokens=rng.choice((0, 0, 600)))
        order = cands if i % 2 else cands[::-1]  # before and after each deployment's rates are known
        assert pricer.charge_all(order, row) == {c.deployment_id: pricer.charge(c, row) for c in order}, row
        priced = [c for c in order if c.deployment_id != "unpriced"]  # every rate known: one plan for the set
        for some in (priced, priced[1:], priced[:1]):
            assert pricer.charge_all(some, row) == {c.deployment_id: pricer.charge(c, row) for c in some}, row
    assert pricer._plans  # the planned path ran
    fresh, some = HistoryPricer(cands), [c for c in cands if c.deployment_id != "unpriced"]
    assert fresh.charge_all(some, row) == {c.deployment_id: pricer.charge(c, row) for c in some}  # rates not known yet
    assert pricer.charge_all(cands, row)["unpriced"] is None and pricer.charge_all(cands, row)["custom"] is not None


# -- input errors --------------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "litellm_payg.tools.cli", "what-if", SUPPORT, *args],
                          capture_output=True, text=True, env=env, timeout=120)


def _assert_input_error(r: subprocess.CompletedProcess, *fragments: str) -> None:
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    for f in fragments:
        assert f in r.stderr, r.stderr


def test_cli_input_errors_are_messages_not_tracebacks(tmp_path):
    """As a user meets them: a separate process, exit 2, a message naming the cause, no traceback."""
    require_postgres()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"start_time": "2025-01-01T00:00:00Z", "model_group": "support", "prompt_tokens": 1,
                               "completion_tokens": 1}) + "\n{not json\n")
    _assert_input_error(_cli("--from", str(bad)), f"{bad}:2", "not JSON")
    r = _cli("--from", "postgresql://postgres:secret@127.0.0.1:1/nope")
    _assert_input_error(r, "cannot connect to", "postgres:***@127.0.0.1:1")
    assert "secret" not in r.stderr
    with throwaway_database(create_table=False) as url:
        _assert_input_error(_cli("--from", url), 'no table "LiteLLM_SpendLogs"')


@pytest.mark.parametrize("make, fragments", [
    (lambda d: ["--from", _write(d / "w.jsonl", {"start_time": "yesterday", "model_group": "support"})],
     ["w.jsonl:1", "start_time"]),
    (lambda d: ["--from", _write(d / "u.jsonl", {"start_time": 1, "model_group": "support", "tokens": 3})],
     ["u.jsonl:1", "unknown field(s) tokens"]),
    (lambda d: ["--from", _write(d / "o.jsonl", {"start_time": 5, "model_group": "s"}, {"start_time": 1, "model_group": "s"})],
     ["o.jsonl:2", "time order"]),
    (lambda d: ["--from", str(d / "missing.jsonl")], ["no such file"]),
    (lambda d: ["--from", "mysql://u@h/db"], ["unknown scheme 'mysql'"]),
    (lambda d: ["--from", "postgresql://"], ["not a Postgres URL"]),
    (lambda d: ["--from", f"sqlite:///{d}/nothing.db"], ["cannot read the ledger"]),
    (lambda d: ["--from", _write(d / "ok.jsonl"), "--since", "last week"], ["--since"]),
])
def test_more_input_errors(make, fragments, tmp_path, capsys):
    capsys.readouterr()
    assert cli.main(["what-if", SUPPORT, *make(tmp_path)]) == 2
    err = capsys.readouterr().err
    for f in fragments:
        assert f in err, err


def _write(path: Path, *objs: dict) -> str:
    path.write_text("".join(json.dumps(o) + "\n" for o in objs))
    return str(path)


def test_the_readme_jsonl_line_is_the_format_the_reader_takes():
    """The JSONL line documented in the README's what-if section reads as a row, field for field."""
    from litellm_payg.tools.whatif_history import row_from_json

    import user_docs

    section = user_docs.section("What-if on your own history")
    block = section.split("```json\n", 1)[1].split("```", 1)[0]
    row = row_from_json(json.loads(block), "README")
    assert row.as_json() == {**json.loads(block), "start_time": "2025-03-01T09:00:00Z"}
    assert row.has_usage and row.tags == ("faq",)


def test_the_biggest_differences_are_the_largest_per_request_changes():
    # cost-threshold.yaml sends each of these chat requests (small, under its threshold) to DeepSeek
    rows = [HistoryRow(f"r{i}", MONTH_START + i, "chat", "mistral/mistral-large-latest", None, 100 + 37 * i, 20 + i,
                       spend_usd=0.0001 * ((i * 7) % 13), team="t") for i in range(40)]
    result = replay(THRESHOLD, rows, top=5)
    diffs = sorted(((_hand_cost("deepseek/deepseek-chat", r.prompt_tokens, r.completion_tokens, 0) - r.spend_usd, r.request_id)
                    for r in rows), key=lambda d: -abs(d[0]))[:5]
    assert [d["request_id"] for d in result.biggest] == [rid for _, rid in diffs]
    assert [d["difference_usd"] for d in result.biggest] == pytest.approx([d for d, _ in diffs], rel=1e-9)


def test_the_replay_ledger_keeps_budgets_not_a_record_per_charge():
    from litellm_payg.tools.whatif import _ReplayLedger

    ledger = _ReplayLedger.make()
    for i in range(1000):
        ledger.record(f"r{i}", [], 0.01, 60, now=MONTH_START + i)
    assert ledger.records() == []


def test_the_plugins_redis_ledger_as_a_source(capsys):
    from services import fresh_redis_prefix

    from litellm_payg.stores.ledger import open_ledger

    with fresh_redis_prefix() as url:
        with open_ledger(url) as ledger:
            ledger.record("a", [], 0.002, 60, now=MONTH_START,
                          attrs={"group": "support", "model": "gpt-4o-mini", "team": "t3", "prompt_tokens": 400,
                                 "completion_tokens": 120})
            ledger.record("b", [], 0.003, 60, now=MONTH_START + 1, attrs={"group": "support", "model": "gpt-4o-mini"})
        out = run_cli(["what-if", SUPPORT, "--from", url, "--json"], capsys)
    t = out["totals"]
    assert t["requests"] == 1 and t["unpriced"] == 1 and t["actual_usd"] == pytest.approx(0.002)
    assert t["policy_usd"] == pytest.approx(_hand_cost(_expected_support_pick(400), 400, 120, 0), rel=1e-9)


def test_reasoning_tokens_priced_apart_where_litellm_prices_them_apart():
    from litellm_payg.stores.prices import candidate_from_deployment

    model = "dashscope/qwen-turbo"
    c = candidate_from_deployment({"model_name": "g", "litellm_params": {"model": model}, "model_info": {"id": "q"}}, {})
    pricer = HistoryPricer([c])
    row = HistoryRow("x", 0.0, "g", model, None, 1000, 800, reasoning_tokens=600)
    usage = litellm.Usage(prompt_tokens=1000, completion_tokens=800, total_tokens=1800,
                          completion_tokens_details={"reasoning_tokens": 600})
    a, b = litellm.cost_per_token(model=model, prompt_tokens=1000, completion_tokens=800, usage_object=usage)
    plain = sum(litellm.cost_per_token(model=model, prompt_tokens=1000, completion_tokens=800))
    assert a + b != pytest.approx(plain)  # the map prices this model's reasoning apart
    assert pricer.charge(c, row) == pytest.approx(a + b, rel=1e-9)


def test_a_litellm_config_gives_the_deployments(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text(
        "model_list:\n"
        "  - {model_name: chat, litellm_params: {model: deepseek/deepseek-chat}, model_info: {id: ds-1}}\n"
        "  - {model_name: chat, litellm_params: {model: mistral/mistral-large-latest}, model_info: {id: ml-1}}\n"
        "  - {model_name: other, litellm_params: {model: my-own/finetune-7b}, model_info: {id: ft-1}}\n")
    history = _write(
        tmp_path / "h.jsonl",
        {"request_id": "a", "start_time": 1000, "model_group": "chat", "model": "mistral/mistral-large-latest",
         "deployment": "ml-1", "prompt_tokens": 500, "completion_tokens": 100, "spend_usd": 0.002},
        {"request_id": "b", "start_time": 1001, "model_group": "other", "model": "my-own/finetune-7b",
         "deployment": "ft-1", "prompt_tokens": 500, "completion_tokens": 100, "spend_usd": 0.001},
        {"request_id": "c", "start_time": 1002, "model_group": "gone", "model": "gpt-4o", "prompt_tokens": 5,
         "completion_tokens": 5, "spend_usd": 0.0001},
    )
    out = run_cli(["what-if", THRESHOLD, "--from", history, "--config", str(config), "--json"], capsys)
    assert out["deployments"] == {"chat": ["deepseek/deepseek-chat (ds-1)", "mistral/mistral-large-latest (ml-1)"],
                                  "other": ["my-own/finetune-7b (ft-1)"]}
    t = out["totals"]
    assert t["requests"] == 1 and t["unpriced"] == 2
    assert t["policy_usd"] == pytest.approx(_hand_cost("deepseek/deepseek-chat", 500, 100, 0), rel=1e-9)
    reasons = {e["request_id"]: e["reason"] for e in out["unpriced"]["listed"]}
    assert reasons == {"b": "the policy picked my-own/finetune-7b, which has no price",
                       "c": "no deployment for model group 'gone' in the config"}


def test_progress_goes_to_stderr_only_when_asked_or_on_a_terminal(tmp_path, capsys):
    history = _write(tmp_path / "h.jsonl", {"start_time": 1, "model_group": "chat", "model": "deepseek/deepseek-chat",
                                            "prompt_tokens": 10, "completion_tokens": 5})
    capsys.readouterr()
    assert cli.main(["what-if", THRESHOLD, "--from", history, "--json"]) == 0  # stderr is no terminal here
    out, err = capsys.readouterr()
    assert "replaying" not in err and json.loads(out)["totals"]["requests"] == 1
    assert cli.main(["what-if", THRESHOLD, "--from", history, "--json", "--progress"]) == 0
    out, err = capsys.readouterr()
    assert "replaying 1 requests" in err and "replaying" not in out


# -- the fast path gives the same answer ------------------------------------------------------------


def _month_rows(n: int, days: int = 30) -> list[HistoryRow]:
    """``generate_month``'s spend-log rows as the Postgres reader makes them (no database needed)."""
    from litellm_payg.tools.whatif_postgres import model_string

    out = []
    for r in generate_month(n, days=days):
        usage = json.loads(r["metadata"]).get("usage_object") or {}
        out.append(HistoryRow(
            r["request_id"], r["startTime"].replace(tzinfo=timezone.utc).timestamp(), r["model_group"],
            model_string(r["model"], r["custom_llm_provider"]), r["model_id"], r["prompt_tokens"], r["completion_tokens"],
            cache_read_tokens=usage.get("cache_read_input_tokens") or 0, spend_usd=r["spend"], user=r["user"],
            team=r["team_id"], key=r["api_key"], session=r["session_id"], tags=tuple(json.loads(r["request_tags"]))))
    return out


BUDGETED = """
budgets:
  - {name: team-day, scope: 'team:*', window: day, limit_usd: 0.1, on_exceed: block}
  - {name: key-hour, scope: 'key:*', window: 'rolling:1h', limit_usd: 0.012, on_exceed: downgrade}
  - {name: faq-month, scope: 'tag:faq', window: month, limit_usd: 0.1, on_exceed: alert, alert_at: [0.5]}
  - {name: support-day, scope: 'group:support', window: day, limit_usd: 0.15, on_exceed: downgrade}
"""


def test_the_one_pass_replay_ledger_gives_the_memory_ledgers_answer(tmp_path):
    """The replay's ledger reserves and settles an answered request in one pass; the memory ledger
    does it in two. A budgeted month (blocks, downgrades, rolling and calendar windows, an alert)
    replayed on each gives the same figures, to the last request."""
    from litellm_payg.stores.ledger.memory import MemoryLedger

    policy = tmp_path / "budgeted.yaml"
    policy.write_text(Path(SUPPORT).read_text() + BUDGETED)
    rows = _month_rows(6000, days=3)  # 2,000 requests a day: what was spent decides, not one reservation
    fast = replay(str(policy), rows, top=20)
    slow = replay(str(policy), rows, top=20, ledger=MemoryLedger())
    assert fast.totals.blocked > 100 and fast.totals.downgraded > 100  # the budgets bit
    a, b = fast.as_dict(), slow.as_dict()
    a.pop("elapsed_s"), b.pop("elapsed_s")
    assert a == b


def test_the_replay_ledger_holds_one_reservation_aside_and_applies_it_when_another_comes():
    """Reservations that overlap (never in a replay, but the ledger is a ledger) behave as on the
    memory ledger: the held one is applied before anything else reads or changes the counters."""
    from litellm_payg.core.buckets import Bucket
    from litellm_payg.stores.ledger.memory import MemoryLedger, ReplayLedger

    cap = Bucket("cap", 1.0, True)
    idle = Bucket("run", None, False, idle_s=60)
    states = []
    for ledger in (ReplayLedger(), MemoryLedger()):
        steps = [
            ledger.reserve("a", [cap, idle], 0.6, 30, now=0).ok,
            ledger.reserve("b", [cap], 0.5, 30, now=1).ok,  # refused: a's 0.6 is held
            ledger.usage([cap, idle], now=1),
            ledger.reserve("c", [cap], 0.3, 30, now=2).ok,
            ledger.settle("a", 0.2, now=3),
            ledger.open_reservations(),
            ledger.settle("c", 0.1, now=4),
            ledger.reserve("d", [cap, idle], 0.1, 30, now=100).ok,  # the session idled out: starts afresh
            ledger.release("d"),
            ledger.reserve("e", [cap], 0.1, 5, now=200).ok,
            ledger.expire(now=300),  # e was never settled: charged in full
            ledger.usage([cap, idle], now=300),
        ]
        states.append(steps)
    assert states[0] == states[1]
    assert states[0][1] is False and states[0][-2] == 1


@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings")  # a ModelResponse as LiteLLM's mock_response
def test_the_plugins_ledger_records_the_token_counts_what_if_reprices(tmp_path, capsys):
    """An answer the plugin settles through a real Router keeps its token counts (with the cache
    reads and reasoning tokens) on its ledger record, so ``what-if --from`` the ledger prices it on
    the deployment the policy picks instead of listing it as unpriced."""
    import asyncio

    from litellm import Router

    import litellm_payg
    from litellm_payg.stores.ledger import open_ledger
    from routing_helpers import deployment

    url = f"sqlite:///{tmp_path}/ledger.db"

    def answer() -> litellm.ModelResponse:
        usage = litellm.Usage(prompt_tokens=3000, completion_tokens=200, total_tokens=3200,
                              prompt_tokens_details={"cached_tokens": 1000},
                              completion_tokens_details={"reasoning_tokens": 50})
        return litellm.ModelResponse(choices=[{"message": {"role": "assistant", "content": "ok"}}], usage=usage)

    models = ("deepseek/deepseek-chat", "gpt-4o-mini", "mistral/mistral-large-latest", "anthropic/claude-sonnet-4-5")
    router = Router(model_list=[deployment("support", m, m.rsplit("/", 1)[-1], answer()) for m in models])
    engine = litellm_payg.attach(router, SUPPORT, ledger=url)

    async def ask() -> None:
        await router.acompletion(model="support", messages=[{"role": "user", "content": "where is my order?"}])

    try:
        asyncio.run(ask())
    finally:
        engine.detach()
    with open_ledger(url) as ledger:
        (record,) = ledger.records()
    paid = record.amount_usd
    assert record.attrs["model"] == _expected_support_pick(5)  # a short question: the FAQ tier's pick
    assert {k: record.attrs.get(k) for k in ("prompt_tokens", "completion_tokens", "cache_read_tokens",
                                             "reasoning_tokens")} == {"prompt_tokens": 3000, "completion_tokens": 200,
                                                                      "cache_read_tokens": 1000, "reasoning_tokens": 50}
    out = run_cli(["what-if", SUPPORT, "--from", url, "--json"], capsys)
    t = out["totals"]
    assert t["requests"] == 1 and t["unpriced"] == 0 and t["actual_usd"] == pytest.approx(paid)
    # replayed at the 3,000 prompt tokens the answer reported: the long-request tier's pick
    assert t["policy_usd"] == pytest.approx(_hand_cost(_expected_support_pick(3000), 3000, 200, 1000), rel=1e-9)


def test_rows_read_ahead_on_a_thread_keep_their_order_errors_and_bound():
    """The Postgres rows are read on a thread (``prefetched``): the same rows in the same order, the
    reader's error raised where the rows are read, never more than ``ahead`` batches waiting, and a
    reader that stops early stops (and closes) the source."""
    import threading

    from litellm_payg.tools.whatif_history import WhatIfInputError
    from litellm_payg.tools.whatif_postgres import prefetched

    produced, closed = [0], threading.Event()

    def source(n: int, fail_at: int | None = None):
        try:
            for i in range(n):
                if i == fail_at:
                    raise WhatIfInputError("the spend logs went away")
                produced[0] += 1
                yield i
        finally:
            closed.set()

    assert list(prefetched(source(25_003), batch=1000, ahead=2)) == list(range(25_003))
    with pytest.raises(WhatIfInputError, match="went away"):
        list(prefetched(source(5000, fail_at=4321), batch=1000, ahead=2))
    produced[0] = 0
    closed.clear()
    rows = prefetched(source(100_000), batch=1000, ahead=2)
    assert next(rows) == 0
    threading.Event().wait(0.3)  # the reader fills what it may ahead, then waits
    assert produced[0] <= 4 * 1000  # the batch read, two waiting, the one being made
    rows.close()
    assert closed.wait(5) and produced[0] < 100_000


def test_both_postgres_read_paths_give_the_same_rows(month_db, monkeypatch):
    """Streamed in chunks (libpq 17 or later) or through a server-side cursor (older libpq): the
    same rows, in the same order, whatever the batch size."""
    from litellm_payg.tools import whatif_postgres

    streamed = list(whatif_postgres.read_spend_logs(month_db, itersize=997))
    monkeypatch.setattr(whatif_postgres, "_streams_in_chunks", lambda: False)
    cursor = list(whatif_postgres.read_spend_logs(month_db, itersize=1000))
    assert len(streamed) == MONTH_ROWS + 3 and streamed == cursor


def test_the_replay_builds_each_request_as_the_constructor_does():
    """what-if builds a row's RouteRequest from a default request's fields (``_request_maker``): the
    same fields and values as ``RouteRequest(...)``, and a metadata dict of its own."""
    import random

    from litellm_payg.core.decision import RouteRequest
    from litellm_payg.tools.whatif import _request_maker

    make, rng = _request_maker(), random.Random(3)
    for _ in range(200):
        args = [rng.choice(["support", "chat"]), rng.randint(0, 5000), rng.randint(1, 900)]
        args += [rng.choice([None, "u1", ""]) for _ in range(3)] + [tuple(rng.sample(["a", "b", "c"], rng.randint(0, 2)))]
        args += [rng.choice([None, "e"]), rng.choice([None, "s-1"]), f"r{rng.randint(0, 99)}", rng.choice([{}, {"org": "acme"}])]
        made = make(*args)
        built = RouteRequest(args[0], args[1], args[2], user=args[3], team=args[4], api_key=args[5], tags=args[6],
                             end_user=args[7], session=args[8], trace_id=args[9], attrs=args[10])
        assert made == built and vars(made) == vars(built) and made.prompt_counted
    assert make("g", 1, 1, None, None, None, (), None, None, None, {}).metadata is not made.metadata


def test_the_replay_freezes_the_old_objects_only_while_it_runs():
    """The objects that exist before a replay are frozen (left out of the collector's passes) while it
    runs and unfrozen after, even when it fails; a process that froze objects itself keeps them so."""
    import gc

    from litellm_payg.tools.whatif import replay

    seen = []

    def rows(fail: bool = False):
        for row in _rows(3, group="support", model="deepseek/deepseek-chat"):
            seen.append(gc.get_freeze_count())
            yield row
        if fail:
            raise RuntimeError("the source broke")

    assert gc.get_freeze_count() == 0
    thresholds = gc.get_threshold()
    replay(SUPPORT, rows())
    assert seen and min(seen) > 0 and gc.get_freeze_count() == 0 and gc.get_threshold() == thresholds
    with pytest.raises(RuntimeError):
        replay(SUPPORT, rows(fail=True))
    assert gc.get_freeze_count() == 0
    gc.freeze()
    try:
        frozen, seen[:] = gc.get_freeze_count(), []
        replay(SUPPORT, rows())
        # theirs stay frozen, none is added (the count only falls, as frozen objects are freed)
        assert 0 < gc.get_freeze_count() <= frozen and max(seen) <= frozen
    finally:
        gc.unfreeze()


def test_postgres_rows_read_as_the_spend_logs_say():
    """Postgres works a row's fields out (``whatif_postgres._select``): the model string from model
    and provider, the group (the model string when none), empty texts as none, the cache reads (the
    usage object's cache_read_input_tokens, else prompt_tokens_details.cached_tokens, leading digits),
    writes and reasoning tokens (0 when none), spend (0 for none and for -0.0), the tags."""
    import math

    from litellm_payg.tools.whatif_history import Filters
    from litellm_payg.tools.whatif_postgres import model_string, read_spend_logs

    require_postgres()
    t0 = MONTH_START - 86400
    cases = [  # (model, provider, group, model_id, user, spend, usage object, tags)
        ("deepseek-chat", "deepseek", "", "", "", 0.5, {"cache_read_input_tokens": 0,
                                                       "prompt_tokens_details": {"cached_tokens": 7}}, ["a", "b"]),
        ("deepseek/deepseek-chat", "deepseek", "support", "d1", "u", -0.0, {"cache_read_input_tokens": "12.0"}, []),
        ("gpt-4o-mini", "openai", "chat", None, None, 0.0, {"cache_creation_input_tokens": 9,
                                                          "completion_tokens_details": {"reasoning_tokens": 4}}, None),
        ("mistral-large-latest", "", None, "m1", "", float("nan"), "not an object", ["x"]),
        ("claude-sonnet-4-5", None, "g", "", "v", 1e-9, {"prompt_tokens_details": 3, "cache_read_input_tokens": -2}, ["1"]),
    ]
    with throwaway_database() as url:
        copy_rows(url, [{**spend_row(f"e{i}", t0 + i, group or "", model, 10, 5, spend, provider=provider or "",
                                     model_id=model_id or "", user=user or "", team="t"),
                         "custom_llm_provider": provider, "model_group": group, "model_id": model_id, "user": user,
                         "metadata": json.dumps({"usage_object": usage}), "request_tags": json.dumps(tags)}
                        for i, (model, provider, group, model_id, user, spend, usage, tags) in enumerate(cases)])
        rows = list(read_spend_logs(url, Filters(until=MONTH_START)))
    assert [r.request_id for r in rows] == [f"e{i}" for i in range(len(cases))]
    reads = [(0 or 7, 0, 0), (12, 0, 0), (0, 9, 4), (0, 0, 0), (0, 0, 0)]
    for row, (model, provider, group, model_id, user, spend, _, tags), split in zip(rows, cases, reads):
        name = model_string(model, provider)
        assert (row.model, row.group, row.deployment, row.user) == (name, group or name, model_id or None, user or None)
        assert (row.cache_read_tokens, row.cache_write_tokens, row.reasoning_tokens) == split, row
        assert row.spend_usd == (spend or 0.0) or (math.isnan(spend) and math.isnan(row.spend_usd))
        assert math.copysign(1, row.spend_usd) == 1 and row.tags == tuple(tags or ())
        assert (row.team, row.org, row.end_user, row.session, row.prompt_tokens, row.completion_tokens) == ("t", None, None,
                                                                                                           None, 10, 5)
