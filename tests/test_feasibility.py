"""A deployment read as LiteLLM reads it (its ``model_info``), and LiteLLM's own checks applied
before the rules (``core/feasibility.py``): the drops, what they cost, and ``check``/``explain``.

The end-to-end evidence (LiteLLM alone vs with the plugin) is ``test_differential.py``.
"""

from __future__ import annotations

import asyncio
import json

import pytest
import yaml

from litellm_payg.core.decision import Candidate, RouteRequest
from litellm_payg.core.errors import UnknownPriceError
from litellm_payg.core.feasibility import Needs, feasible
from litellm_payg.policy.load import load_policy
from litellm_payg.stores.prices import candidate_from_deployment
from litellm_payg.tools.cli import main as cli
from routing_helpers import attached

ISSUE_CONFIG = {
    "model_list": [
        {"model_name": "chat", "litellm_params": {"model": "openai/my-served-llm", "api_base": "http://127.0.0.1:9/a",
                                                  "mock_response": "from A"},
         "model_info": {"id": "instance_A_65k", "max_input_tokens": 65_000,
                        "input_cost_per_token": 1e-07, "output_cost_per_token": 2e-07}},
        {"model_name": "chat", "litellm_params": {"model": "openai/my-served-llm", "api_base": "http://127.0.0.1:9/b",
                                                  "mock_response": "from B"},
         "model_info": {"id": "instance_B_256k", "max_input_tokens": 256_000,
                        "input_cost_per_token": 4e-07, "output_cost_per_token": 8e-07}},
    ],
    "router_settings": {"enable_pre_call_checks": True},
}
ISSUE_POLICY = {
    "version": 1,
    "ledger": "memory://",
    "routes": {"chat": [{"cost_threshold": {"use": "instance_A_65k", "max_usd_per_1k_tokens": 0.001,
                                            "otherwise": "instance_B_256k"}}]},
    "failover": {"on": {"context_window": "larger_context"}},
}


def _candidate(dep_id: str, window: int | None, **extra) -> Candidate:
    return Candidate(dep_id, "openai/x", "openai", "g", 1e-7, 1e-7, max_input_tokens=window,
                     litellm_max_input_tokens=window, **extra)


def _never_counted() -> int:
    raise AssertionError("the prompt was counted although its byte bound already fits every window")


# -- reading a deployment ---------------------------------------------------------------------------


def test_a_deployment_is_priced_and_sized_from_its_model_info() -> None:
    a = candidate_from_deployment(ISSUE_CONFIG["model_list"][0], {})
    assert (a.input_usd_per_token, a.output_usd_per_token, a.price_source) == (1e-07, 2e-07, "deployment")
    assert a.max_input_tokens == a.litellm_max_input_tokens == 65_000


def test_base_model_prices_an_azure_deployment_and_its_flags_are_read() -> None:
    import litellm

    c = candidate_from_deployment({
        "model_name": "g",
        "litellm_params": {"model": "azure/my-deployment-name", "order": 2, "region_name": "eu"},
        "model_info": {"id": "az", "base_model": "azure/gpt-4o-mini", "supports_vision": False},
    }, {})
    mapped = litellm.model_cost["azure/gpt-4o-mini"]
    assert (c.input_usd_per_token, c.output_usd_per_token) == (mapped["input_cost_per_token"], mapped["output_cost_per_token"])
    assert c.price_source == "litellm" and c.litellm_max_input_tokens == mapped["max_input_tokens"]
    assert (c.no_vision, c.order, c.region) == (True, 2, "eu")


# -- the checks -------------------------------------------------------------------------------------


def test_a_prompt_within_every_window_is_not_counted() -> None:
    request = RouteRequest("g", prompt_tokens=_never_counted, output_tokens=10, prompt_tokens_at_most=1_000)
    assert feasible(request, [_candidate("a", 2_000), _candidate("b", 8_000)]) is None


def test_a_group_of_equal_windows_is_left_to_litellm_without_counting() -> None:
    request = RouteRequest("g", prompt_tokens=_never_counted, output_tokens=10)
    assert feasible(request, [_candidate("a", 2_000), _candidate("b", 2_000)]) is None


def test_a_deployment_too_small_for_the_prompt_is_dropped_with_the_reason() -> None:
    request = RouteRequest("g", prompt_tokens=5_000, output_tokens=10, prompt_tokens_at_most=6_000)
    step = feasible(request, [_candidate("a", 2_000), _candidate("b", 8_000)])
    assert [c.deployment_id for c in step.kept] == ["b"]
    (drop,) = step.dropped
    assert (drop.deployment_id, drop.by) == ("a", "litellm")
    assert "5000 tokens" in drop.reason and "2000" in drop.reason


def test_a_prompt_too_big_for_every_deployment_is_left_to_litellm() -> None:
    request = RouteRequest("g", prompt_tokens=50_000, output_tokens=10)
    step = feasible(request, [_candidate("a", 2_000), _candidate("b", 8_000)])
    assert [c.deployment_id for c in step.kept] == ["a", "b"] and not step.dropped
    assert "fits no deployment" in step.note


@pytest.mark.parametrize("needs, kept", [
    (Needs(image=True), ["vision"]),
    (Needs(region="eu"), ["vision"]),
    (Needs(tag_kept=frozenset({"text"})), ["text"]),
    (Needs(target_order=2), ["vision"]),
])
def test_the_request_needs_narrow_the_candidates(needs: Needs, kept: list[str]) -> None:
    candidates = [_candidate("text", None, no_vision=True, region="us", order=1),
                  _candidate("vision", None, region="eu", order=2)]
    request = RouteRequest("g", prompt_tokens=_never_counted, output_tokens=10, needs=needs)
    assert [c.deployment_id for c in feasible(request, candidates).kept] == kept


def test_the_lowest_order_goes_first_and_no_order_comes_last() -> None:
    candidates = [_candidate("none", None), _candidate("two", None, order=2), _candidate("one", None, order=1)]
    request = RouteRequest("g", prompt_tokens=_never_counted, output_tokens=10)
    assert [c.deployment_id for c in feasible(request, candidates).kept] == ["one"]


def test_usage_based_routing_limits_pass_a_deployment_over() -> None:
    candidates = [_candidate("rpm-full", None), _candidate("tpm-full", None), _candidate("room", None)]
    usage = {"rpm-full": (1, 0, 2.0, float("inf")), "tpm-full": (0, 990, float("inf"), 1000.0),
             "room": (0, 0, 100.0, 1e6)}
    request = RouteRequest("g", prompt_tokens=20, output_tokens=10, needs=Needs(usage=usage))
    step = feasible(request, candidates)
    assert [c.deployment_id for c in step.kept] == ["room"]
    assert [d.reason.split(":")[0] for d in step.dropped] == ["rpm", "tpm"]


def test_a_tpm_with_room_for_the_byte_bound_does_not_count_the_prompt() -> None:
    usage = {"a": (0, 100, float("inf"), 10_000.0)}
    request = RouteRequest("g", prompt_tokens=_never_counted, output_tokens=10, prompt_tokens_at_most=500,
                           needs=Needs(usage=usage))
    assert feasible(request, [_candidate("a", None), _candidate("b", None)]) is None


def test_no_vision_anywhere_keeps_everyone() -> None:
    candidates = [_candidate("a", None, no_vision=True), _candidate("b", None, no_vision=True)]
    request = RouteRequest("g", prompt_tokens=_never_counted, output_tokens=10, needs=Needs(image=True))
    step = feasible(request, candidates)
    assert len(step.kept) == 2 and "no deployment supports vision" in step.note


# -- the Router: the drop reaches payg_decision -----------------------------------------------------


def test_the_router_stamps_the_context_drop_on_the_decision() -> None:
    with attached(ISSUE_CONFIG["model_list"], ISSUE_POLICY, **ISSUE_CONFIG["router_settings"]) as (router, _):
        metadata: dict = {}
        response = asyncio.run(router.acompletion(
            model="chat", messages=[{"role": "user", "content": "hello " * 70_000}], metadata=metadata))
    assert response._hidden_params["model_id"] == "instance_B_256k"
    drops = metadata["payg_decision"]["dropped"]
    assert [(d["deployment_id"], d["by"]) for d in drops] == [("instance_A_65k", "litellm")]
    assert "65000" in drops[0]["reason"]


# -- check and explain with a config ------------------------------------------------------------------


@pytest.fixture()
def issue_files(tmp_path):
    policy = tmp_path / "payg-policy.yaml"
    policy.write_text(yaml.safe_dump({k: v for k, v in ISSUE_POLICY.items() if k != "ledger"}), encoding="utf-8")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(ISSUE_CONFIG), encoding="utf-8")
    return policy, config


def test_check_accepts_a_rule_naming_a_deployment_priced_by_its_model_info(issue_files, capsys) -> None:
    policy, config = issue_files
    assert cli(["check", str(policy), "--config", str(config)]) == 0
    assert "ok:" in capsys.readouterr().out


def test_check_without_the_config_says_to_give_it(issue_files, capsys) -> None:
    policy, _ = issue_files
    # an id no Router of this test process has registered in LiteLLM's price map (a Router does)
    policy.write_text(policy.read_text().replace("instance_A_65k", "never_bound_A"), encoding="utf-8")
    assert cli(["check", str(policy)]) == 2
    err = capsys.readouterr()
    assert "no known price for model 'never_bound_A'" in err.err + err.out and "--config" in err.err + err.out


def test_check_still_refuses_a_deployment_with_no_price_anywhere(issue_files) -> None:
    policy, config = issue_files
    unpriced = yaml.safe_load(config.read_text())
    for d in unpriced["model_list"]:
        for key in ("input_cost_per_token", "output_cost_per_token"):
            d["model_info"].pop(key)
    config.write_text(yaml.safe_dump(unpriced), encoding="utf-8")
    with pytest.raises(UnknownPriceError):
        from litellm_payg.adapter.deployments import candidates_from_config
        from litellm_payg.runtime.engine import Engine

        loaded = load_policy(policy, deployments_known=True)
        Engine(loaded).check_deployments(candidates_from_config(str(config), loaded))


def test_explain_shows_why_the_small_deployment_was_not_picked(issue_files, capsys) -> None:
    policy, config = issue_files
    assert cli(["explain", str(policy), "--config", str(config), "--model", "chat", "--prompt-tokens", "70000", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["chosen"] == "instance_B_256k"
    assert out["dropped"][0]["by"] == "litellm" and "context window" in out["dropped"][0]["reason"]


def test_tag_routing_still_applies_after_a_deployment_is_added_at_runtime() -> None:
    """The plugin re-reads the deployments when one is added (as the proxy's ``/model/new`` does);
    the Router's ``enable_tag_filtering`` must survive that, or tagged requests go back to failing."""
    from litellm_payg.adapter import litellm_versions

    def tagged(dep_id: str, model: str, tag: str) -> dict:
        return {"model_name": "g", "litellm_params": {"model": model, "mock_response": f"from {dep_id}", "tags": [tag]},
                "model_info": {"id": dep_id}}

    policy = {"version": 1, "ledger": "memory://", "routes": {"g": [
        {"cost_threshold": {"use": "cheap", "max_usd_per_1k_tokens": 1, "otherwise": "dear"}}]}}
    with attached([tagged("cheap", "openai/gpt-4o-mini", "batch"), tagged("dear", "openai/gpt-4o", "interactive")],
                  policy, enable_tag_filtering=True) as (router, _):
        from litellm.types.router import Deployment

        litellm_versions.add_deployment(router, Deployment(**tagged("later", "openai/gpt-4.1", "other")))
        asyncio.run(router.acompletion(model="g", messages=[{"role": "user", "content": "hi"}], metadata={"tags": ["batch"]}))
        response = asyncio.run(router.acompletion(model="g", messages=[{"role": "user", "content": "hi"}],
                                                  metadata={"tags": ["interactive"]}))
    assert response._hidden_params["model_id"] == "dear"
