"""``litellm-payg budgets``: every budget's spend, in flight, limit, use and reset, from the ledger."""

from __future__ import annotations

import json

import yaml

from litellm_payg.tools.cli import main as cli
from litellm_payg.tools.money import usd

from routing_helpers import DEEPSEEK, attached, deployment, settled

MESSAGES = [{"role": "user", "content": "Where is my parcel? It was due yesterday and the tracking page is empty."}]


async def test_budgets_lists_each_budget_and_each_user(tmp_path, capsys):
    ledger = f"sqlite:///{tmp_path}/ledger.db"
    policy = {
        "version": 1, "ledger": ledger, "timezone": "Europe/Paris",
        "budgets": [
            {"name": "monthly", "scope": "global", "window": "month", "limit_usd": 1.0},
            {"name": "per-user", "scope": "user:*", "window": "day", "limit_usd": 0.5, "on_exceed": "block"},
            {"scope": "provider:deepseek", "window": "rolling:30m", "limit_usd": 0.2, "on_exceed": "downgrade"},
            {"name": "tiny", "scope": "global", "window": "day", "limit_usd": 0.00025, "on_exceed": "alert"},
        ],
    }
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    with attached([deployment("chat", DEEPSEEK, "ds")], str(path)) as (router, engine):
        for user in ("alice", "bob", "alice"):
            await router.acompletion(model="chat", messages=MESSAGES, max_tokens=20, metadata={"user": user})
        await settled(engine)  # fails, instead of hanging, if a charge never settles

    assert cli(["budgets", str(path), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_scope = {(r["budget"], r["scope"]): r for r in rows}
    one = 10 * 2.8e-07 + 20 * 4.2e-07  # LiteLLM's mock usage at DeepSeek's price
    assert abs(by_scope[("monthly", "global")]["spent_usd"] - 3 * one) < 1e-12
    assert abs(by_scope[("per-user", "user:alice")]["spent_usd"] - 2 * one) < 1e-12
    assert abs(by_scope[("per-user", "user:bob")]["spent_usd"] - one) < 1e-12
    assert by_scope[("b2", "provider:deepseek")]["resets_at"] is None
    assert by_scope[("monthly", "global")]["resets_at"].endswith("+01:00") or by_scope[("monthly", "global")]["resets_at"].endswith("+02:00")

    assert cli(["budgets", str(path)]) == 0
    table = capsys.readouterr().out
    assert "user:alice" in table and "monthly" in table and "rolling" in table
    # amounts keep their digits (money.usd): $0.0000336 spent of a $0.00025 limit, not 0.000034 of 0.0003
    tiny = next(line for line in table.splitlines() if line.startswith("tiny "))
    assert tiny.split()[4:7] == [usd(3 * one), "$0", "$0.00025"], tiny


def test_budgets_reports_an_unreachable_ledger_without_a_traceback(tmp_path, capsys):
    path = tmp_path / "policy.yaml"
    path.write_text("version: 1\nledger: redis://127.0.0.1:1/0\nbudgets: [{scope: global, window: day, limit_usd: 1}]\n")
    assert cli(["budgets", str(path)]) == 2
    err = capsys.readouterr().err
    assert "cannot read the ledger redis://127.0.0.1:1/0" in err and "Traceback" not in err


def test_read_only_commands_do_not_create_a_ledger_at_a_mistyped_path(tmp_path, capsys):
    missing = tmp_path / "nowhere" / "ledger.db"
    path = tmp_path / "policy.yaml"
    path.write_text("version: 1\nbudgets: [{scope: global, window: day, limit_usd: 1}]\n")
    assert cli(["budgets", str(path), "--ledger", f"sqlite:///{missing}"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli(["report", "--ledger", f"sqlite:///{missing}"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not missing.parent.exists()
