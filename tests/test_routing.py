"""The seed example and the built-in rules, through LiteLLM's real Router (``mock_response``)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import yaml

import litellm_payg
from litellm_payg.tools.cli import main as cli
from litellm_payg.core.errors import NoDeploymentLeft, PolicyError, UnknownPriceError

from routing_helpers import (
    DEEPSEEK,
    MISTRAL,
    RAISED_DEEPSEEK_PRICE,
    Recorder,
    attached,
    blended_per_1k,
    chat_deployments,
    deployment,
    prompt_tokens,
    served_by,
)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "policies" / "cost-threshold.yaml"
THRESHOLD = 0.0015

PROMPT_HEAVY = [{"role": "user", "content": "Summarise this ticket history. " + "The printer is offline again. " * 400}]
OUTPUT_HEAVY = [{"role": "user", "content": "Write a long troubleshooting guide."}]


def _verdicts():
    """Request shapes whose price on (raised-price) DeepSeek falls on each side of the threshold."""
    heavy = prompt_tokens(DEEPSEEK, PROMPT_HEAVY)
    light = prompt_tokens(DEEPSEEK, OUTPUT_HEAVY)
    under = blended_per_1k(heavy, 50, RAISED_DEEPSEEK_PRICE)
    over = blended_per_1k(light, 4000, RAISED_DEEPSEEK_PRICE)
    assert under < THRESHOLD < over, (under, over)  # the test's premise, computed not assumed
    return heavy, light


async def test_example_policy_routes_under_threshold_to_deepseek_and_over_to_mistral():
    heavy, light = _verdicts()
    with attached(chat_deployments(raised_price=True), EXAMPLE) as (router, _):
        under = await router.acompletion(model="chat", messages=PROMPT_HEAVY, max_tokens=50)
        over = await router.acompletion(model="chat", messages=OUTPUT_HEAVY, max_tokens=4000)
    assert served_by(under) == "ds"
    assert served_by(over) == "ml"


async def test_bundled_deepseek_price_is_always_under_the_example_threshold():
    with attached(chat_deployments(), EXAMPLE) as (router, _):
        for messages, max_tokens in ((PROMPT_HEAVY, 50), (OUTPUT_HEAVY, 4000), (OUTPUT_HEAVY, None)):
            response = await router.acompletion(model="chat", messages=messages, max_tokens=max_tokens)
            assert served_by(response) == "ds"


@pytest.mark.parametrize("messages,max_tokens,expected", [(PROMPT_HEAVY, 50, "ds"), (OUTPUT_HEAVY, 4000, "ml")])
async def test_explain_prints_the_same_decision(tmp_path, capsys, messages, max_tokens, expected):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"model_list": chat_deployments(raised_price=True)}))
    tokens = prompt_tokens(DEEPSEEK, messages)
    rc = cli([
        "explain", str(EXAMPLE), "--model", "chat", "--prompt-tokens", str(tokens),
        "--max-tokens", str(max_tokens), "--config", str(config), "--json",
    ])
    assert rc == 0
    decision = json.loads(capsys.readouterr().out)
    assert decision["chosen"] == expected
    with attached(chat_deployments(raised_price=True), EXAMPLE) as (router, _):
        response = await router.acompletion(model="chat", messages=messages, max_tokens=max_tokens)
    assert served_by(response) == expected


def test_explain_table_names_each_candidate_and_its_verdict(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"model_list": chat_deployments(raised_price=True)}))
    assert cli(["explain", str(EXAMPLE), "--model", "chat", "--prompt-tokens", "20", "--max-tokens", "4000", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "dropped by cost_threshold" in out and "over max_usd_per_1k_tokens" in out
    assert "=> mistral/mistral-large-latest (ml)" in out


def test_sync_completion_is_governed_not_silently_unrouted():
    with attached(chat_deployments(raised_price=True), EXAMPLE) as (router, _):
        served = {served_by(router.completion(model="chat", messages=OUTPUT_HEAVY, max_tokens=4000)) for _ in range(8)}
        assert served == {"ml"}
        served = {served_by(router.completion(model="chat", messages=PROMPT_HEAVY, max_tokens=50)) for _ in range(8)}
        assert served == {"ds"}


def test_sync_stream_is_governed():
    with attached(chat_deployments(raised_price=True), EXAMPLE) as (router, _):
        chunks = list(router.completion(model="chat", messages=OUTPUT_HEAVY, max_tokens=4000, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == "from ml"


async def test_failing_cheap_deployment_falls_back_to_otherwise():
    model_list = chat_deployments(deepseek_mock="litellm.InternalServerError")
    with attached(model_list, EXAMPLE, num_retries=1, retry_after=0) as (router, engine):
        recorder = Recorder()
        engine.pm.register(recorder)
        response = await router.acompletion(model="chat", messages=PROMPT_HEAVY, max_tokens=50)
        for _ in range(100):  # outcome callbacks land on LiteLLM's background worker
            if any(not o.ok for o in recorder.outcomes):
                break
            await asyncio.sleep(0.05)
    assert served_by(response) == "ml"
    chosen = [d.chosen.deployment_id for d in recorder.decisions]
    assert chosen[0] == "ds"
    failed = [o for o in recorder.outcomes if not o.ok]
    assert failed and failed[0].deployment_id == "ds" and failed[0].cost_usd == 0.0


async def test_decision_is_stamped_on_metadata_and_outcome_carries_real_cost():
    with attached(chat_deployments(), EXAMPLE) as (router, engine):
        recorder = Recorder()
        engine.pm.register(recorder)
        metadata: dict = {}
        response = await router.acompletion(model="chat", messages=OUTPUT_HEAVY, metadata=metadata)
        for _ in range(50):
            if recorder.outcomes:
                break
            await asyncio.sleep(0.05)
    stamped = response._hidden_params.get("litellm_metadata") or {}
    outcome = recorder.outcomes[0]
    assert outcome.ok and outcome.deployment_id == "ds"
    assert outcome.decision["chosen"] == "ds" and outcome.decision["chosen_model"] == DEEPSEEK
    assert outcome.cost_usd == pytest.approx(response._hidden_params["response_cost"], abs=1e-12)
    assert outcome.cost_usd > 0
    del stamped


async def test_quality_floor_hint_may_raise_the_bar_but_not_lower_it():
    policy = {
        "version": 1,
        "models": {DEEPSEEK: {"quality": 0.7}, MISTRAL: {"quality": 0.9}},
        "routes": {"chat": [{"quality_floor": {"min_quality": 0.6}}]},
    }
    with attached(chat_deployments(), policy) as (router, _):
        plain = await router.acompletion(model="chat", messages=OUTPUT_HEAVY)
        raised = await router.acompletion(model="chat", messages=OUTPUT_HEAVY, metadata={"payg_hints": {"min_quality": 0.85}})
        lowered = await router.acompletion(model="chat", messages=OUTPUT_HEAVY, metadata={"payg_hints": {"min_quality": 0.0}})
    assert served_by(plain) == "ds"  # cheapest that meets 0.6
    assert served_by(raised) == "ml"
    assert served_by(lowered) == "ds"


async def test_a_hint_cannot_reach_a_deployment_the_policy_excluded():
    with attached(chat_deployments(raised_price=True), EXAMPLE) as (router, _):
        # over the threshold DeepSeek is excluded; asking for it by name must not bring it back
        with pytest.raises(Exception) as info:
            await router.acompletion(
                model="chat", messages=OUTPUT_HEAVY, max_tokens=4000, metadata={"payg_hints": {"models": [DEEPSEEK]}}
            )
        assert "ds (deepseek/deepseek-chat)" in str(info.value)
        # a hint that narrows within what the policy allows is honoured
        response = await router.acompletion(
            model="chat", messages=PROMPT_HEAVY, max_tokens=50, metadata={"payg_hints": {"models": [MISTRAL]}}
        )
        assert served_by(response) == "ml"


async def test_no_deployment_left_says_why_for_each_candidate():
    policy = {
        "version": 1,
        "models": {DEEPSEEK: {"quality": 0.7}, MISTRAL: {"quality": 0.8}},
        "routes": {"chat": [{"quality_floor": {"min_quality": 0.95}}]},
    }
    with attached(chat_deployments(), policy) as (router, _):
        with pytest.raises(NoDeploymentLeft) as info:
            await router.acompletion(model="chat", messages=OUTPUT_HEAVY)
    text = str(info.value)
    assert "ds (deepseek/deepseek-chat): quality_floor: quality 0.7 is below the bar 0.95" in text
    assert "ml (mistral/mistral-large-latest): quality_floor: quality 0.8 is below the bar 0.95" in text


async def test_groups_without_a_route_are_left_to_litellm():
    model_list = chat_deployments() + [deployment("other", MISTRAL, "other-ml")]
    with attached(model_list, EXAMPLE) as (router, _):
        response = await router.acompletion(model="other", messages=OUTPUT_HEAVY)
    assert served_by(response) == "other-ml"


async def test_a_second_router_in_the_process_is_not_governed():
    from litellm import Router

    other = Router(model_list=[deployment("chat", DEEPSEEK, "o-ds"), deployment("chat", MISTRAL, "o-ml")])
    with attached(chat_deployments(raised_price=True), EXAMPLE):
        served = {served_by(await other.acompletion(model="chat", messages=OUTPUT_HEAVY, max_tokens=4000)) for _ in range(30)}
    assert served == {"o-ds", "o-ml"}  # LiteLLM's own shuffle, untouched by the policy


def test_attach_checks_the_policy_against_the_router():
    from litellm import Router

    router = Router(model_list=[deployment("chat", MISTRAL, "ml"), deployment("chat", "openai/my-finetune", "ft", api_base="http://127.0.0.1:9")])
    with pytest.raises(PolicyError) as info:
        litellm_payg.attach(router, EXAMPLE)
    assert "routes.chat[0].cost_threshold.use" in str(info.value) and "no deployment of group 'chat'" in str(info.value)

    policy = {"version": 1, "routes": {"chat": [{"quality_floor": {"min_quality": 0}}]}}
    with pytest.raises(UnknownPriceError) as info:
        litellm_payg.attach(router, policy)
    assert "ft (openai/my-finetune)" in str(info.value) and "no known price" in str(info.value)

    priced = dict(policy, models={"openai/my-finetune": {"input_usd_per_1k": 0.0001, "output_usd_per_1k": 0.0002, "quality": 1}, MISTRAL: {"quality": 1}})
    engine = litellm_payg.attach(router, priced)
    engine.detach()

    with pytest.raises(PolicyError) as info:
        litellm_payg.attach(router, {"version": 1, "routes": {"chatt": []}})
    assert "the router has no model group 'chatt'" in str(info.value)


def test_attach_returns_a_handle_that_detaches_and_the_engine_holds_no_adapter():
    """The Engine is the runtime's: ``attach`` keeps what it installed on the Router in the handle
    it returns, whose ``detach()`` takes the callback, the doors and the sync ``completion`` back
    off the Router and closes the engine's stores; the handle reads the engine's attributes through."""
    import gc

    import litellm
    from litellm import Router

    from litellm_payg.adapter.attachment import Attached
    from litellm_payg.runtime.engine import Engine

    router = Router(model_list=[deployment("chat", MISTRAL, "ml")])
    policy = {"version": 1, "ledger": "memory://", "models": {MISTRAL: {"quality": 1}},
              "routes": {"chat": [{"quality_floor": {"min_quality": 0}}]}}
    handle = litellm_payg.attach(router, policy)
    engine = handle.engine
    assert isinstance(handle, Attached) and isinstance(engine, Engine)
    assert handle.spend is engine.spend and handle.routes is engine.routes  # read through
    assert not hasattr(engine, "adapter")
    assert not [r for r in gc.get_referents(engine.__dict__) if isinstance(r, (Attached, type(handle.adapter)))]
    assert handle.adapter in litellm.callbacks and "completion" in vars(router) and "acompletion" in vars(router)

    handle.detach()
    assert handle.adapter not in litellm.callbacks
    assert "completion" not in vars(router) and "acompletion" not in vars(router)  # LiteLLM's own methods again
    handle.detach()  # idempotent


def test_importing_the_package_does_not_import_litellm():
    import subprocess
    import sys

    code = "import sys, litellm_payg; print('litellm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
