"""Differential suite: LiteLLM's Router alone vs LiteLLM's Router with the plugin, on the same
configs and requests, with LiteLLM itself as the judge of which deployments may serve each request
(``differential.py``). One scenario per feature a LiteLLM config can use; the invariant is checked
per request: whatever LiteLLM alone serves, the plugin serves too, on a deployment LiteLLM's own
checks accept, unless a budget refuses it by design.

The matrix (feature x end, with counts) is written when ``PAYG_DIFF_MATRIX`` is set (``-`` prints it):

    PAYG_DIFF_MATRIX=- python -m pytest tests/test_differential.py tests/test_differential_proxy.py -q -s
"""

from __future__ import annotations

import asyncio
import importlib.util

import pytest

from litellm_payg.adapter import litellm_versions

from differential import IMAGE, TOOLS, Request, Scenario, matrix_text, prompt, record, run_scenario, write_matrix

MOCK = "mock_response"


def dep(group: str, dep_id: str, model: str = "openai/gpt-4o-mini", info: dict | None = None, **params) -> dict:
    return {
        "model_name": group,
        "litellm_params": {"model": model, "api_key": "sk-test-not-a-key", MOCK: f"from {dep_id}", **params},
        "model_info": {"id": dep_id, **(info or {})},
    }


def prefer(group: str, use: str, otherwise: str | list[str], threshold: float = 1.0) -> dict:
    """A policy whose cost rule prefers ``use`` (under any realistic price at threshold 1 $/1K)."""
    return {"version": 1, "routes": {group: [
        {"cost_threshold": {"use": use, "max_usd_per_1k_tokens": threshold, "otherwise": otherwise or use}}]}}


# -- the issue's config: two deployments of one group, windows 65k and 256k, priced in model_info --

def _issue_deployments() -> list[dict]:
    return [
        dep("chat", "instance_A_65k", "openai/my-served-llm", api_base="http://127.0.0.1:9/v1",
            info={"max_input_tokens": 65_000, "input_cost_per_token": 1e-07, "output_cost_per_token": 2e-07}),
        dep("chat", "instance_B_256k", "openai/my-served-llm", api_base="http://127.0.0.1:9/v2",
            info={"max_input_tokens": 256_000, "input_cost_per_token": 4e-07, "output_cost_per_token": 8e-07}),
    ]


ISSUE_POLICY = {
    "version": 1,
    "routes": {"chat": [{"cost_threshold": {"use": "instance_A_65k", "max_usd_per_1k_tokens": 0.001,
                                            "otherwise": "instance_B_256k"}}]},
    "failover": {"on": {"context_window": "larger_context"}},
}
SIZES = [Request(f"{n // 1000}k-tokens", {"model": "chat", "messages": prompt(n)}) for n in (10_000, 64_000, 70_000, 250_000)]
TOO_BIG = Request("300k-tokens", {"model": "chat", "messages": prompt(300_000)})

SMALL, BIG = 2_000, 20_000  # windows of the scaled-down context scenarios


def _windowed(group: str = "g") -> list[dict]:
    return [dep(group, "small", info={"max_input_tokens": SMALL}),
            dep(group, "large", info={"max_input_tokens": BIG})]


def _sized(group: str = "g") -> list[Request]:
    return [Request(f"{n}-tokens", {"model": group, "messages": prompt(n)}) for n in (500, 5_000, 30_000)]


def _cool_down_cheap(router) -> None:
    """Put the cheap deployment in cooldown, as LiteLLM does after its allowed failures
    (``health().cooldowns`` from 1.109, before that the Router's ``cooldown_cache``)."""
    cheap = next(d for d in litellm_versions.deployments(router) if str(d["model_info"]["id"]).startswith("cheap"))
    cooldowns = router.health().cooldowns if callable(getattr(router, "health", None)) else router.cooldown_cache
    cooldowns.add_deployment_to_cooldown(cheap["model_info"]["id"], Exception("down"), 500, 60)


#: LiteLLM's Router keeps image requests away from deployments that declare no vision (1.109+, in
#: its Rust core's host steps); before, it sends them anywhere
LITELLM_ROUTES_VISION = importlib.util.find_spec("litellm.router_rust") is not None


def _text(group: str, label: str = "text", alone_class: tuple[str, ...] = (), **extra) -> Request:
    return Request(label, {"model": group, "messages": [{"role": "user", "content": "hello there"}], **extra},
                   alone_class=alone_class)


SCENARIOS = [
    Scenario("context: the issue, pre-call", _issue_deployments(), ISSUE_POLICY, SIZES + [TOO_BIG],
             router_kwargs={"enable_pre_call_checks": True}),
    Scenario("context: pre-call checks", _windowed(), prefer("g", "small", "large"), _sized(),
             router_kwargs={"enable_pre_call_checks": True}),
    Scenario("context: no pre-call checks", _windowed(), prefer("g", "small", "large"), _sized()),
    Scenario("context_window_fallbacks", [dep("g", "small", info={"max_input_tokens": SMALL}),
                                          dep("g-big", "big", info={"max_input_tokens": BIG})],
             prefer("g", "small", []), [Request(f"{n}-tokens", {"model": "g", "messages": prompt(n)}) for n in (500, 5_000)],
             router_kwargs={"enable_pre_call_checks": True, "context_window_fallbacks": [{"g": ["g-big"]}]}),
    Scenario("model_info prices", [dep("g", "cheap", "openai/self-hosted", info={"input_cost_per_token": 1e-08, "output_cost_per_token": 1e-08}),
                                   dep("g", "dear", "openai/self-hosted", info={"input_cost_per_token": 1e-05, "output_cost_per_token": 1e-05})],
             prefer("g", "cheap", "dear", threshold=0.0001), [_text("g"), _text("g", "long", max_tokens=2000)]),
    Scenario("model_info base_model", [dep("g", "azure-mini", "azure/my-deployment", info={"base_model": "azure/gpt-4o-mini"}, api_base="https://x.openai.azure.com"),
                                       dep("g", "azure-big", "azure/my-other", info={"base_model": "azure/gpt-4o"}, api_base="https://x.openai.azure.com")],
             prefer("g", "azure-mini", "azure-big", threshold=0.001), [_text("g")]),
    Scenario("rpm/tpm, simple-shuffle", [dep("g", "cheap", rpm=2), dep("g", "dear", "openai/gpt-4o", rpm=100)],
             prefer("g", "cheap", "dear"), [_text("g", f"req{i}") for i in range(4)], sequential=True),
    Scenario("rpm, pre-call checks", [dep("g", "cheap", rpm=2), dep("g", "dear", "openai/gpt-4o", rpm=100)],
             prefer("g", "cheap", "dear"), [_text("g", f"req{i}") for i in range(4)], sequential=True,
             router_kwargs={"enable_pre_call_checks": True, "num_retries": 0}),
    Scenario("rpm/tpm, usage-based-routing-v2", [dep("g", "cheap", rpm=1), dep("g", "dear", "openai/gpt-4o", rpm=100)],
             prefer("g", "cheap", "dear"), [_text("g", f"req{i}") for i in range(3)], sequential=True,
             router_kwargs={"routing_strategy": "usage-based-routing-v2", "num_retries": 0}),
    Scenario("tpm, usage-based-routing-v2", [dep("g", "cheap", tpm=15), dep("g", "dear", "openai/gpt-4o", tpm=1_000_000)],
             prefer("g", "cheap", "dear"), [_text("g", f"req{i}") for i in range(3)], sequential=True,
             router_kwargs={"routing_strategy": "usage-based-routing-v2", "num_retries": 0}),
    Scenario("cooldown", [dep("g", "cheap"), dep("g", "dear", "openai/gpt-4o")], prefer("g", "cheap", "dear"),
             [_text("g")], prepare=_cool_down_cheap),
    Scenario("failures + retries", [dep("g", "cheap", **{MOCK: "litellm.InternalServerError"}), dep("g", "dear", "openai/gpt-4o")],
             prefer("g", "cheap", "dear"), [_text("g", f"req{i}") for i in range(3)],
             router_kwargs={"num_retries": 2, "retry_after": 0, "allowed_fails": 1}, sequential=True),
    Scenario("tags", [dep("g", "cheap", tags=["batch"]), dep("g", "dear", "openai/gpt-4o", tags=["interactive"])],
             prefer("g", "cheap", "dear"),
             [_text("g", "tag interactive", ("dear",), metadata={"tags": ["interactive"]}),
              _text("g", "tag batch", ("cheap",), metadata={"tags": ["batch"]})],
             router_kwargs={"enable_tag_filtering": True}),
    Scenario("model_group_alias", [dep("g", "cheap"), dep("g", "dear", "openai/gpt-4o")], prefer("g", "cheap", "dear"),
             [_text("g"), _text("alias", "via alias")], router_kwargs={"model_group_alias": {"alias": "g"}}),
    Scenario("wildcard openai/*", [dep("g", "cheap"), dep("g", "dear", "openai/gpt-4o"), dep("openai/*", "wild", "openai/*")],
             prefer("g", "cheap", "dear"),
             # LiteLLM sends a model name a wildcard route matches there, even one a deployment has
             [_text("g"), _text("openai/gpt-4o", "openai/gpt-4o"), _text("openai/gpt-4.1", "openai/gpt-4.1")]),
    Scenario("order", [dep("g", "first", "openai/gpt-4o", order=1), dep("g", "second", order=2)],
             prefer("g", "second", "first"), [_text("g", alone_class=("first",))]),
    Scenario("region (pre-call)", [dep("g", "us-cheap", region_name="us"), dep("g", "eu-dear", "openai/gpt-4o", region_name="eu")],
             prefer("g", "us-cheap", "eu-dear"), [_text("g"), _text("g", "eu only", ("eu-dear",), allowed_model_region="eu")],
             router_kwargs={"enable_pre_call_checks": True}),
    Scenario("vision", [dep("g", "text-only", info={"supports_vision": False}), dep("g", "vision", "openai/gpt-4o", info={"supports_vision": True})],
             prefer("g", "text-only", "vision"), [_text("g"), Request("image", {"model": "g", "messages": IMAGE}, alone_class=("vision",) if LITELLM_ROUTES_VISION else ())]),
    Scenario("tools", [dep("g", "no-tools", info={"supports_function_calling": False}), dep("g", "tools", "openai/gpt-4o", info={"supports_function_calling": True})],
             prefer("g", "no-tools", "tools"), [_text("g"), _text("g", "tools", tools=TOOLS)]),
    Scenario("fallbacks", [dep("g", "broken", **{MOCK: "litellm.InternalServerError"}), dep("g2", "backup", "openai/gpt-4o")],
             prefer("g", "broken", []), [_text("g")], router_kwargs={"fallbacks": [{"g": ["g2"]}], "num_retries": 0}),
]


@pytest.fixture(scope="module", autouse=True)
def _matrix():
    yield
    write_matrix()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.feature for s in SCENARIOS])
def test_plugin_serves_what_litellm_serves(scenario: Scenario) -> None:
    rows = asyncio.run(run_scenario(scenario))
    record("router", rows)
    bad = [row.describe() for row in rows if row.regression]
    assert not bad, "LiteLLM alone serves these, the plugin does not (or not on a deployment LiteLLM accepts):\n" + "\n".join(bad)
    assert any(row.alone.served for row in rows), f"the scenario proves nothing: LiteLLM alone served none of {rows}"


def test_issue_scenario_served_where_the_prompt_fits() -> None:
    """The issue's numbers: every prompt up to 250k tokens (about 252k by LiteLLM's count) is served with the plugin, the ones the
    65k deployment holds on it (the rule's pick), the others on the 256k one; a prompt too big for
    both gets LiteLLM's own context-window error, not a plugin error."""
    rows = asyncio.run(run_scenario(SCENARIOS[0]))
    served = {row.request: row.plugin.served_by for row in rows}
    assert served == {"10k-tokens": "instance_A_65k", "64k-tokens": "instance_A_65k", "70k-tokens": "instance_B_256k",
                      "250k-tokens": "instance_B_256k", "300k-tokens": None}
    too_big = rows[-1]
    assert too_big.alone.error and too_big.plugin.error
    assert "ContextWindowExceededError" in too_big.plugin.error and "No models have context window large enough" in too_big.plugin.error


def test_matrix_counts_a_regression() -> None:
    """The matrix and the invariant can fail: a row LiteLLM served and the plugin did not counts."""
    from differential import Outcome, Row

    row = Row("f", "r", Outcome("a"), Outcome(None, "BadRequestError"), frozenset({"a"}))
    assert row.regression
    assert matrix_text([("router", "f", row)]).splitlines()[-1].split()[-1] == "1"
    assert not Row("f", "r", Outcome("a"), Outcome(None, "Budget"), frozenset({"a"}), refused_by_budget=True).regression
