"""The differential suite through real proxies: one ``litellm --config`` process alone and one with
the plugin, booted from the same config, answering the same requests; LiteLLM's Router, built
from that config's ``model_list`` and ``router_settings``, is the judge of which deployments may
serve each request (``differential.py``: each deployment pinned in turn).

One config holds every feature's group, so two proxies serve the whole suite (about 10 s to boot,
in parallel). The invariant, per request: what the proxy alone answers 200, the proxy with the
plugin answers 200 too, from a deployment LiteLLM accepts (``x-litellm-model-id``).
"""

from __future__ import annotations

import asyncio
import copy
import json

import httpx
import pytest
import yaml

from differential import IMAGE, TOOLS, Outcome, Request, Row, Scenario, prompt, record, run_scenario, write_matrix
from proxy_fixtures import RunningProxy, litellm_proxy_factory  # noqa: F401  (fixture)
from test_differential import ISSUE_POLICY, LITELLM_ROUTES_VISION, _issue_deployments, dep

SMALL, BIG = 2_000, 20_000

MODEL_LIST = [
    *_issue_deployments(),
    dep("ctx", "small", info={"max_input_tokens": SMALL}),
    dep("ctx", "large", "openai/gpt-4o", info={"max_input_tokens": BIG}),
    dep("ctx-only-small", "only-small", info={"max_input_tokens": SMALL}),
    dep("ctx-big", "big", "openai/gpt-4o", info={"max_input_tokens": BIG}),
    dep("priced", "cheap", "openai/self-hosted", info={"input_cost_per_token": 1e-08, "output_cost_per_token": 1e-08}),
    dep("priced", "dear", "openai/self-hosted", info={"input_cost_per_token": 1e-05, "output_cost_per_token": 1e-05}),
    dep("vis", "text-only", info={"supports_vision": False}),
    dep("vis", "vision", "openai/gpt-4o", info={"supports_vision": True}),
    dep("tools", "no-tools", info={"supports_function_calling": False}),
    dep("tools", "with-tools", "openai/gpt-4o", info={"supports_function_calling": True}),
    dep("ord", "first", "openai/gpt-4o", order=1),
    dep("ord", "second", order=2),
    dep("tagged", "batch", tags=["batch"]),
    dep("tagged", "interactive", "openai/gpt-4o", tags=["interactive"]),
    dep("region", "us-cheap", region_name="us"),
    dep("region", "eu-dear", "openai/gpt-4o", region_name="eu"),
    dep("broken", "broken-1", mock_response="litellm.InternalServerError"),
    dep("backup", "backup-1", "openai/gpt-4o"),
    dep("openai/*", "wild", "openai/*"),
]
ROUTER_SETTINGS = {
    "enable_pre_call_checks": True,
    "enable_tag_filtering": True,
    "model_group_alias": {"alias": "priced"},
    "fallbacks": [{"broken": ["backup"]}],
    "context_window_fallbacks": [{"ctx-only-small": ["ctx-big"]}],
    "num_retries": 0,
}


def _rule(use: str, otherwise: str, threshold: float = 1.0) -> list[dict]:
    return [{"cost_threshold": {"use": use, "max_usd_per_1k_tokens": threshold, "otherwise": otherwise}}]


POLICY = {
    "version": 1,
    "ledger": "memory://",
    "routes": {
        **ISSUE_POLICY["routes"],
        "ctx": _rule("small", "large"),
        "ctx-only-small": _rule("only-small", "only-small"),
        "priced": _rule("cheap", "dear", threshold=0.0001),
        "vis": _rule("text-only", "vision"),
        "tools": _rule("no-tools", "with-tools"),
        "ord": _rule("second", "first"),
        "tagged": _rule("batch", "interactive"),
        "region": _rule("us-cheap", "eu-dear"),
        "broken": _rule("broken-1", "broken-1"),
    },
    "failover": ISSUE_POLICY["failover"],
}


def _ask(group: str, label: str, feature: str, alone_class: tuple[str, ...] = (), messages=None, **extra) -> tuple[str, Request]:
    body = {"model": group, "messages": messages or [{"role": "user", "content": "hello there"}], **extra}
    return feature, Request(label, body, alone_class=alone_class)


REQUESTS = [
    *[("context: the issue, pre-call", Request(f"{n // 1000}k-tokens", {"model": "chat", "messages": prompt(n)}))
      for n in (10_000, 70_000, 250_000, 300_000)],
    *[("context: pre-call checks", Request(f"{n}-tokens", {"model": "ctx", "messages": prompt(n)})) for n in (500, 5_000, 30_000)],
    _ask("ctx-only-small", "5000-tokens", "context_window_fallbacks", messages=prompt(5_000)),
    _ask("priced", "text", "model_info prices"),
    _ask("alias", "via alias", "model_group_alias"),
    _ask("vis", "text", "vision"),
    _ask("vis", "image", "vision", ("vision",) if LITELLM_ROUTES_VISION else (), messages=IMAGE),
    _ask("tools", "tools", "tools", tools=TOOLS),
    _ask("ord", "text", "order", ("first",)),
    _ask("tagged", "tag interactive", "tags", ("interactive",), metadata={"tags": ["interactive"]}),
    _ask("tagged", "tag batch", "tags", ("batch",), metadata={"tags": ["batch"]}),
    _ask("region", "text", "region (pre-call)"),
    _ask("broken", "text", "fallbacks"),
    _ask("openai/gpt-4o", "openai/gpt-4o", "wildcard openai/*"),
    _ask("openai/gpt-4.1", "openai/gpt-4.1", "wildcard openai/*"),
]
# what the Router oracle needs of the config (the proxy reads the same keys from router_settings)
ORACLE = Scenario("proxy config", MODEL_LIST, POLICY, [r for _, r in REQUESTS], router_kwargs=ROUTER_SETTINGS)


@pytest.fixture(scope="module")
def proxies(litellm_proxy_factory) -> tuple[RunningProxy, RunningProxy]:  # noqa: F811
    base = {"model_list": MODEL_LIST, "router_settings": ROUTER_SETTINGS}
    alone = litellm_proxy_factory(copy.deepcopy(base), name="alone")
    governed = litellm_proxy_factory(
        {**copy.deepcopy(base), "litellm_settings": {"callbacks": ["litellm_payg.proxy_handler"]}},
        name="with-plugin", files={"payg-policy.yaml": yaml.safe_dump(POLICY, sort_keys=False)},
    )
    return alone.wait_ready(), governed.wait_ready()


@pytest.fixture(scope="module", autouse=True)
def _matrix():
    yield
    write_matrix()


async def _send(client: httpx.AsyncClient, proxy: RunningProxy, body: dict) -> Outcome:
    response = await client.post(f"{proxy.base_url}/v1/chat/completions", json=body,
                                 headers={"Authorization": f"Bearer {proxy.master_key}"})
    if response.status_code == 200:
        return Outcome(response.headers.get("x-litellm-model-id"))
    try:
        detail = json.dumps(response.json())[:300]
    except ValueError:
        detail = response.text[:300]
    return Outcome(None, f"HTTP {response.status_code}: {detail}")


async def _both(alone: RunningProxy, governed: RunningProxy) -> list[tuple[Outcome, Outcome]]:
    async with httpx.AsyncClient(timeout=60) as client:
        return [(await _send(client, alone, r.kwargs), await _send(client, governed, r.kwargs)) for _, r in REQUESTS]


def test_proxy_with_plugin_serves_what_the_proxy_alone_serves(proxies) -> None:
    oracle_rows = asyncio.run(run_scenario(ORACLE))  # the Router's verdicts; its own matrix rows are not recorded
    outcomes = asyncio.run(_both(*proxies))
    rows = []
    for (feature, request), oracle, (alone, plugin) in zip(REQUESTS, oracle_rows, outcomes):
        if request.alone_class and alone.served:
            assert alone.served_by in request.alone_class, (feature, request.label, alone)
        rows.append(Row(feature, request.label, alone, plugin, oracle.accepted, alone_class=request.alone_class))
    record("proxy", rows)
    bad = [row.describe() for row in rows if row.regression]
    assert not bad, "the proxy alone serves these, the proxy with the plugin does not:\n" + "\n".join(bad)
    served = {row.request: row.plugin.served_by for row in rows if row.feature == "context: the issue, pre-call"}
    assert served == {"10k-tokens": "instance_A_65k", "70k-tokens": "instance_B_256k", "250k-tokens": "instance_B_256k",
                      "300k-tokens": None}
    too_big = next(row for row in rows if row.request == "300k-tokens")
    assert too_big.plugin.error.startswith("HTTP 400") and "context window" in too_big.plugin.error.lower()
