"""``litellm-payg replay`` and the replay API behind the pytest plugin, on the sample project's cassettes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import litellm
import pytest
import yaml

from litellm_payg.tools import cli
from litellm_payg.tools.replay import ReplayError, add_parser, load_requests, replay, run
from litellm_payg.tools.testing import assert_routed_to, spend

SAMPLE = Path(__file__).resolve().parent / "sample_user_project"
CASSETTES = SAMPLE / "cassettes"
CONFIG = SAMPLE / "config.yaml"


def _recorded_cost(provider_host: str, model: str) -> float:
    """The price-map cost of every response recorded on this host, read from the raw cassette."""
    total = 0.0
    for f in sorted(CASSETTES.glob("*.yaml")):
        for it in yaml.safe_load(f.read_text())["interactions"]:
            if provider_host in it["request"]["uri"]:
                u = json.loads(it["response"]["body"]["string"])["usage"]
                cached = (u.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
                info = litellm.model_cost[model]
                total += ((u["prompt_tokens"] - cached) * info["input_cost_per_token"]
                          + cached * info.get("cache_read_input_token_cost", info["input_cost_per_token"])
                          + u["completion_tokens"] * info["output_cost_per_token"])
    return total


def test_replay_settles_the_recorded_cost_of_the_chosen_deployment():
    v1 = replay(SAMPLE / "policy_v1.yaml", [CASSETTES], config=CONFIG)
    v2 = replay(SAMPLE / "policy_v2.yaml", [CASSETTES], config=CONFIG)
    assert [r.index for r in v1.rows] == [0, 2, 4, 6]  # each request was recorded on both deployments
    assert_routed_to(v1, "mistral")
    assert_routed_to(v2, "deepseek/deepseek-chat")
    assert v1.total_usd == pytest.approx(_recorded_cost("api.mistral.ai", "mistral/mistral-large-latest"), abs=1e-12)
    assert v2.total_usd == pytest.approx(_recorded_cost("api.deepseek.com", "deepseek/deepseek-chat"), abs=1e-12)
    assert spend(v2, "provider:deepseek") == v2.total_usd and spend(v2, "provider:mistral") == 0
    assert v2.by_deployment()["deepseek"]["requests"] == 4
    assert sum(r.cost_usd for r in v2.rows) == pytest.approx(v2.total_usd)
    with pytest.raises(AssertionError, match="4 of 4"):
        assert_routed_to(v2, "mistral")


def test_group_option_and_unmapped_model(tmp_path):
    only_mistral = {"model_list": [{"model_name": "support", "litellm_params": {"model": "mistral/mistral-large-latest"}}]}
    with pytest.raises(ReplayError, match="recorded model 'deepseek-chat'"):
        replay({"version": 1, "routes": {}}, CASSETTES, config=only_mistral)
    config = {"model_list": [{"model_name": "support", "litellm_params": {"model": "deepseek/deepseek-chat"}}]}
    report = replay({"version": 1, "routes": {"support": [{"quality_floor": {"min_quality": 0}}]},
                     "models": {"deepseek/deepseek-chat": {"quality": 1}}}, CASSETTES, config=config, group="support")
    assert {r.group for r in report.rows} == {"support"} and report.total_usd > 0
    assert_routed_to(report, "support-0")  # an id-less deployment is named <group>-<index>


def test_load_requests_errors(tmp_path):
    with pytest.raises(ReplayError, match="no such cassette"):
        load_requests([tmp_path / "missing"])
    (tmp_path / "bad.yaml").write_text("hello: world\n")
    with pytest.raises(ReplayError, match="not a vcrpy cassette"):
        load_requests([tmp_path / "bad.yaml"])


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="litellm-payg")
    add_parser(parser.add_subparsers())
    return parser.parse_args(["replay", *argv])


def test_run_prints_routing_and_spend_table(capsys):
    assert run(_args(str(SAMPLE / "policy_v2.yaml"), str(CASSETTES), "--config", str(CONFIG))) == 0
    out = capsys.readouterr().out
    assert out.count("deepseek/deepseek-chat") >= 5  # 4 request rows + the per-deployment line
    assert "total" in out and "mistral " not in out


def test_run_json(capsys):
    run(_args(str(SAMPLE / "policy_v1.yaml"), str(CASSETTES), "--config", str(CONFIG), "--json"))
    data = json.loads(capsys.readouterr().out)
    assert len(data["requests"]) == 4 and data["errors"] == 0
    assert set(data["by_deployment"]) == {"mistral"}
    assert data["total_usd"] == pytest.approx(sum(r["cost_usd"] for r in data["requests"]))


def test_cli_main_exits_2_on_input_errors(capsys, tmp_path):
    assert cli.main(["replay", str(SAMPLE / "policy_v2.yaml"), str(tmp_path / "nope"), "--config", str(CONFIG)]) == 2
    assert "no such cassette" in capsys.readouterr().err
    assert cli.main(["replay", str(SAMPLE / "policy_v2.yaml"), str(CASSETTES), "--config", str(tmp_path / "x.yaml")]) == 2
    assert "cannot read LiteLLM config" in capsys.readouterr().err
    assert cli.main(["replay", str(SAMPLE / "policy_v2.yaml"), str(CASSETTES), "--config", str(CONFIG)]) == 0


def test_spend_by_end_user_is_the_requests_user_field_not_the_keys_user():
    from types import SimpleNamespace

    from litellm_payg.tools.replay import spend_of

    records = [SimpleNamespace(amount_usd=0.25, attrs={"end_user": "alice"}),
               SimpleNamespace(amount_usd=0.5, attrs={"user": "alice"})]
    assert spend_of(records, "end_user:alice") == 0.25
    assert spend_of(records, "user:alice") == 0.5
