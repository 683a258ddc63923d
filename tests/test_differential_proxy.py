"""The differential suite through real proxies: one ``litellm --config`` process alone and one with
the plugin, booted from the same config, answering the same requests; LiteLLM's Router, built
from that config's ``model_list`` and ``router_settings``, is the judge of which deployments may
serve each request (``differential.py``: each deployment pinned in turn).

One config holds every feature's group, so two proxies serve the whole suite (about 10 s to boot,
in parallel). The invariant, per request: what the proxy alone answers 200, the proxy with the
plugin answers 200 too, from a deployment LiteLLM accepts (``x-litellm-model-id``).

Features whose verdict depends on what came before (rate limits, failures, cooldowns) are sent in
sequence, and their oracle is a sequential Router (``Scenario.sequential``). The ones that need a
routing strategy or retry settings of their own run on a second pair of proxies (``STATEFUL_*``),
booted together with the first; failures come from the stand-in provider (``standin``),
its faults scheduled for each proxy's run in turn.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import json

import httpx
import pytest
import yaml
from litellm import Router

from differential import IMAGE, TOOLS, Outcome, Request, Row, Scenario, prompt, record, run_scenario, write_matrix
from proxy_fixtures import RunningProxy, litellm_proxy_factory  # noqa: F401  (fixture)
from standin_helpers import STANDIN_MODELS
from test_differential import ISSUE_POLICY, LITELLM_ROUTES_VISION, MOCK, _issue_deployments, dep

from litellm_payg.adapter import litellm_versions
from standin import StandIn

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
    dep("rpm-shuffle", "shuffle-cheap", rpm=2),
    dep("rpm-shuffle", "shuffle-dear", "openai/gpt-4o", rpm=100),
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
        "rpm-shuffle": _rule("shuffle-cheap", "shuffle-dear"),
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


def _group(group: str, *, ids: tuple[str, ...]) -> list[dict]:
    return [d for d in MODEL_LIST if d["model_name"] == group and d["model_info"]["id"] in ids]


def _texts(group: str, n: int) -> list[Request]:
    return [Request(f"req{i}", {"model": group, "messages": [{"role": "user", "content": "hello there"}]})
            for i in range(n)]


#: sent in sequence to the first pair, after REQUESTS: the cheap deployment's rpm runs out under
#: simple-shuffle (the default strategy), with the Router oracle run in the same sequence
SHUFFLE_RPM = Scenario("rpm/tpm, simple-shuffle", _group("rpm-shuffle", ids=("shuffle-cheap", "shuffle-dear")),
                       {"version": 1, "routes": {"rpm-shuffle": POLICY["routes"]["rpm-shuffle"]}},
                       _texts("rpm-shuffle", 4), router_kwargs=ROUTER_SETTINGS, sequential=True)

# -- the second pair: usage-based-routing-v2, retries, allowed_fails (cooldown after 2 failures) --

STATEFUL_SETTINGS = {"routing_strategy": "usage-based-routing-v2", "num_retries": 2, "retry_after": 0,
                     "allowed_fails": 1, "cooldown_time": 60}
FLAKY = "flaky-cheap"  # answered by the stand-in, which fails it on demand


def flaky_deployment(standin: StandIn | None) -> dict:
    """The flaky group's cheap deployment: on the stand-in in the proxies; in the Router oracle (no
    stand-in) LiteLLM's own mock error, i.e. a deployment that fails every call, as the proxies'
    does while its faults are scheduled."""
    d = dep("flaky", FLAKY)
    if standin is None:
        d["litellm_params"][MOCK] = "litellm.InternalServerError"
    else:
        del d["litellm_params"][MOCK]
        d["litellm_params"].update(model=STANDIN_MODELS["openai"], api_base=standin.url("openai"))
    return d


def stateful_model_list(standin: StandIn | None) -> list[dict]:
    return [
        dep("rpm-ubr", "ubr-rpm-cheap", rpm=1), dep("rpm-ubr", "ubr-rpm-dear", "openai/gpt-4o", rpm=100),
        dep("tpm-ubr", "ubr-tpm-cheap", tpm=15), dep("tpm-ubr", "ubr-tpm-dear", "openai/gpt-4o", tpm=1_000_000),
        flaky_deployment(standin), dep("flaky", "flaky-dear", "openai/gpt-4o"),
    ]


STATEFUL_POLICY = {"version": 1, "ledger": "memory://", "routes": {
    "rpm-ubr": _rule("ubr-rpm-cheap", "ubr-rpm-dear"),
    "tpm-ubr": _rule("ubr-tpm-cheap", "ubr-tpm-dear"),
    "flaky": _rule(FLAKY, "flaky-dear"),
}}


def _only(model_list: list[dict], group: str) -> list[dict]:
    return [d for d in model_list if d["model_name"] == group]


def _routes(group: str) -> dict:
    """The stateful policy for one group (the oracle's Router has only that group)."""
    return {"version": 1, "routes": {group: STATEFUL_POLICY["routes"][group]}}


def _cool_down_flaky(router) -> None:
    """The oracle's Router with the flaky deployment in cooldown, where the proxies' failures put it."""
    flaky = next(d for d in litellm_versions.deployments(router) if str(d["model_info"]["id"]).startswith(FLAKY))
    cooldowns = router.health().cooldowns if callable(getattr(router, "health", None)) else router.cooldown_cache
    cooldowns.add_deployment_to_cooldown(flaky["model_info"]["id"], Exception("down"), 500, 60)


_ORACLE_LIST = stateful_model_list(None)
#: in the order they are sent; each proxy runs them all, the flaky ones with the stand-in failing
#: the cheap deployment ("failures + retries"), then healthy again but cooled down ("cooldown")
STATEFUL = [
    Scenario("rpm/tpm, usage-based-routing-v2", _only(_ORACLE_LIST, "rpm-ubr"), _routes("rpm-ubr"), _texts("rpm-ubr", 3),
             router_kwargs=STATEFUL_SETTINGS, sequential=True),
    Scenario("tpm, usage-based-routing-v2", _only(_ORACLE_LIST, "tpm-ubr"), _routes("tpm-ubr"), _texts("tpm-ubr", 3),
             router_kwargs=STATEFUL_SETTINGS, sequential=True),
    Scenario("failures + retries", _only(_ORACLE_LIST, "flaky"), _routes("flaky"), _texts("flaky", 3),
             router_kwargs=STATEFUL_SETTINGS, sequential=True),
    Scenario("cooldown", [dep("flaky", FLAKY), *_only(_ORACLE_LIST, "flaky")[1:]],
             _routes("flaky"), [Request("after failures", _texts("flaky", 1)[0].kwargs)],
             router_kwargs=STATEFUL_SETTINGS, prepare=_cool_down_flaky),
]


@pytest.fixture(scope="module")
def standin():
    with StandIn() as s:
        yield s


def _pair(factory, base: dict, policy: dict, name: str) -> tuple[RunningProxy, RunningProxy]:
    """Start (not wait for) one proxy alone and one with the plugin, from the same config."""
    alone = factory(copy.deepcopy(base), name=f"{name}-alone")
    governed = factory(
        {**copy.deepcopy(base), "litellm_settings": {"callbacks": ["litellm_payg.proxy_handler"]}},
        name=f"{name}-with-plugin", files={"payg-policy.yaml": yaml.safe_dump(policy, sort_keys=False)},
    )
    return alone, governed


@pytest.fixture(scope="module")
def _booted(litellm_proxy_factory, standin) -> dict[str, tuple[RunningProxy, RunningProxy]]:  # noqa: F811
    """Both pairs, booted at once (the boot is most of this file's time)."""
    pairs = {
        "features": _pair(litellm_proxy_factory, {"model_list": MODEL_LIST, "router_settings": ROUTER_SETTINGS}, POLICY, "features"),
        "stateful": _pair(litellm_proxy_factory, {"model_list": stateful_model_list(standin),
                                                  "router_settings": STATEFUL_SETTINGS}, STATEFUL_POLICY, "stateful"),
    }
    return {name: (alone.wait_ready(), governed.wait_ready()) for name, (alone, governed) in pairs.items()}


@pytest.fixture(scope="module")
def proxies(_booted) -> tuple[RunningProxy, RunningProxy]:
    return _booted["features"]


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


async def _in_sequence(proxy: RunningProxy, requests: list[Request]) -> list[Outcome]:
    async with httpx.AsyncClient(timeout=60) as client:
        return [await _send(client, proxy, r.kwargs) for r in requests]


def _judge(scenario: Scenario, alone: list[Outcome], plugin: list[Outcome]) -> list[Row]:
    """The scenario's rows: the proxies' outcomes, the sequential Router oracle's accepted sets."""
    oracle = asyncio.run(run_scenario(scenario))
    rows = [Row(scenario.feature, r.label, a, p, o.accepted, alone_class=r.alone_class)
            for r, o, a, p in zip(scenario.requests, oracle, alone, plugin)]
    record("proxy", rows)
    return rows


def _assert_no_regression(rows: list[Row]) -> None:
    bad = [row.describe() for row in rows if row.regression]
    assert not bad, "the proxy alone serves these, the proxy with the plugin does not:\n" + "\n".join(bad)
    assert any(row.alone.served for row in rows), f"the case proves nothing: the proxy alone served none of {rows}"


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


#: before 1.109 LiteLLM's pre-call checks (``enable_pre_call_checks``) drop, after the filter
#: callbacks, a deployment whose ``rpm`` this process already counted this minute; 1.110 has no such
#: check. The plugin mirrors it there (``feasibility``: ``precall_requests``), else its pick of the
#: exhausted deployment would leave LiteLLM nothing ("No deployments available", 429) where LiteLLM
#: alone serves from the other one.
LITELLM_PRECALL_RPM_CHECK = ":rpm:" in inspect.getsource(Router._pre_call_checks)


def test_proxy_rate_limits_under_simple_shuffle(proxies) -> None:
    """The cheap deployment's rpm (2) is reached mid-sequence: the plugin serves what LiteLLM does
    (simple-shuffle weighs by rpm but, in 1.110, still sends past it; the oracle says so too)."""
    alone, governed = proxies
    rows = _judge(SHUFFLE_RPM, asyncio.run(_in_sequence(alone, SHUFFLE_RPM.requests)),
                  asyncio.run(_in_sequence(governed, SHUFFLE_RPM.requests)))
    _assert_no_regression(rows)
    assert [row.plugin.served_by for row in rows[:2]] == ["shuffle-cheap"] * 2  # the rule's pick while its rpm lasts
    if LITELLM_PRECALL_RPM_CHECK:  # then LiteLLM passes it over, and so does the plugin's pick
        assert [row.plugin.served_by for row in rows[2:]] == ["shuffle-dear"] * 2


def _stateful_run(proxy: RunningProxy, standin: StandIn) -> tuple[list[list[Outcome]], int]:
    """Every STATEFUL scenario's requests through ``proxy``, in order: the flaky deployment fails
    every call during "failures + retries" and answers again for "cooldown". Returns the outcomes
    per scenario and how many calls the flaky deployment got while failing."""
    outcomes, failing_calls = [], 0
    for scenario in STATEFUL:
        if scenario.feature == "failures + retries":
            standin.fail("openai", "server_error", times=None)
            before = standin.hits("openai")
        try:
            outcomes.append(asyncio.run(_in_sequence(proxy, scenario.requests)))
        finally:
            if scenario.feature == "failures + retries":
                failing_calls = standin.hits("openai") - before
                standin.clear("openai")
    return outcomes, failing_calls


def test_proxy_rate_limits_failures_and_cooldowns(_booted, standin) -> None:
    """usage-based-routing-v2 rpm and tpm limits, a deployment that fails (retries move the request
    on) and, once LiteLLM has cooled it down after ``allowed_fails``, is skipped even though it
    answers again: each proxy alone and with the plugin, in the same sequence."""
    alone, governed = _booted["stateful"]
    alone_runs, _ = _stateful_run(alone, standin)
    plugin_runs, plugin_failing = _stateful_run(governed, standin)
    rows = {s.feature: _judge(s, a, p) for s, a, p in zip(STATEFUL, alone_runs, plugin_runs)}
    for feature_rows in rows.values():
        _assert_no_regression(feature_rows)
    # the plugin's rule picks the flaky deployment first: it fails past allowed_fails, so LiteLLM cools it down
    assert plugin_failing > STATEFUL_SETTINGS["allowed_fails"], plugin_failing
    cooled = rows["cooldown"][0]
    assert cooled.plugin.served_by == "flaky-dear", cooled.describe()  # it answers again, but LiteLLM still cools it
