"""Issue #10 "Trust boundary": a REAL ``litellm --config`` proxy, driven the way a hostile client would.

Every caller is a distinct authenticated key (``general_settings.custom_auth``, see
``trust_helpers``); every answer comes from a deployment's ``mock_response`` with a price of its
own, so spend is non-zero; the plugin's SQLite ledger (in the proxy's workdir) is read back after
each scenario. The assertions describe the FIXED product: on litellm-payg as of this module's
commit most of them fail, and each failure message says what the hostile client achieved.

Three proxies boot at once for the module (~30 s):

* ``main``: the default policy (no ``direct_deployments`` option), budgets per team, key, user and
  one user by name;
* ``route``: the same plus ``direct_deployments: route`` and a budget on ``end_user:*`` (the body's
  ``user`` field);
* ``down``: a Redis ledger nobody listens on (``redis://127.0.0.1:1/0``) with
  ``on_ledger_error: fail_closed``.

The ``route`` policy carries both new options, so it loads only once ``direct_deployments`` AND the
``end_user`` scope kind exist.

Chat-style proxy endpoints that reach a Router deployment (LiteLLM 1.110.2, paths under
site-packages/litellm/proxy/), and the request-metadata key the proxy puts the caller in:

* ``/v1/chat/completions``, ``/chat/completions``, ``/engines/{model}/chat/completions``,
  ``/openai/deployments/{model}/chat/completions`` -- proxy_server.py:13173-13193, ``acompletion``,
  ``metadata`` (tested: ``chat``, ``azure_path``);
* ``/v1/completions``, ``/completions``, ``/engines/{model}/completions``,
  ``/openai/deployments/{model}/completions`` -- proxy_server.py:13347-13358, ``atext_completion``,
  ``metadata`` (``completions``);
* ``/v1/messages`` -- anthropic_endpoints/endpoints.py:130, ``anthropic_messages``,
  ``litellm_metadata``; the Router's ``metadata`` kwarg is then the Anthropic body's own (``messages``);
* ``/v1/responses``, ``/responses``, ``/openai/v1/responses`` -- response_api_endpoints/endpoints.py:298-311,
  ``aresponses``, ``litellm_metadata``; the Router gets no ``metadata`` at all (``responses``);
  websocket mode at endpoints.py:2719; ``/cursor/chat/completions`` at :599;
  ``/v1/responses/compact`` at :1417 (not servable by these providers: 500);
* ``/v1beta/models/{model}:generateContent`` / ``:streamGenerateContent`` --
  google_endpoints/endpoints.py:194/255, ``agenerate_content``, ``metadata`` (``generate_content``);
  ``/v1beta/interactions`` at :396 (``litellm_metadata``);
* ``/queue/chat/completions`` -- proxy_server.py:19266, ``Router.schedule_acompletion`` with a
  ``metadata`` it builds itself from the body, and no pre-call hook (``queue``).

``mock_response`` answers on all of them except ``/v1/responses/compact``; the provider pass-through
routes (pass_through_endpoints/llm_passthrough_endpoints.py, ``allm_passthrough_route``) relay raw
HTTP and need prisma in 1.110.2, so they are not covered here.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import yaml

from proxy_fixtures import RunningProxy, litellm_proxy_factory  # noqa: F401  (fixture)

from litellm_payg.adapter import litellm_versions
from trust_helpers import (
    AUTH_MODULE,
    AUTH_MODULE_NAME,
    LedgerView,
    auth,
    key_hash,
    new_key,
    post,
    short,
    wait_until,
)

GROUP = "support-chat"  # the governed group (a name no error text contains by accident)
ALIAS = "gpt-4o"  # router_settings.model_group_alias -> GROUP
DEEPSEEK = "deepseek/deepseek-chat"
MISTRAL = "mistral/mistral-large-latest"
IN_PRICE, OUT_PRICE = 1e-06, 2e-06  # per token, set on both deployments
# LiteLLM's mock usage on chat: 10 prompt + 20 completion tokens
MOCK_COST = 10 * IN_PRICE + 20 * OUT_PRICE
MAX_TOKENS = 20
TEXT = "Please tell me what the status of my order number 12345 is today."
MESSAGES = [{"role": "user", "content": TEXT}]
# one request's reservation: its prompt (well under 40 tokens) and every one of its max_tokens
ONE_RESERVATION = 40 * IN_PRICE + MAX_TOKENS * OUT_PRICE

CAP_TEAM = 4 * MOCK_COST  # team:* -- the burst scenarios, one fresh team each
CAP_KEY = 3.2 * MOCK_COST  # key:* -- three requests per key, then 429
CAP_USER = 3.2 * MOCK_COST  # user:*
CAP_URSULA = 2.4 * MOCK_COST  # user:ursula
CAP_END_USER = 2.4 * MOCK_COST  # end_user:* (route proxy)

DIRECT_NAMES = {  # ways to name a deployment instead of the governed group
    "deployment_id": "chat-ml",  # a deployment's model_info.id
    "provider_model": MISTRAL,  # a deployment's litellm_params.model
}


def _deployment(dep_id: str, model: str) -> dict:
    return {
        "model_name": GROUP,
        "litellm_params": {"model": model, "api_key": "not-used-mock-response", "mock_response": f"answered by {dep_id}",
                           "input_cost_per_token": IN_PRICE, "output_cost_per_token": OUT_PRICE},
        "model_info": {"id": dep_id},
    }


def _policy(**extra: Any) -> dict:
    return {
        "version": 1,
        "ledger": "sqlite:///payg-ledger.db",
        "routes": {GROUP: [{"quality_floor": {"min_quality": 0}}]},
        # a request whose output limit the plugin does not read reserves this many output tokens
        # (4096 by default would not fit under the small caps below)
        "defaults": {"expected_output_tokens": MAX_TOKENS, "reserve_output_tokens": 2 * MAX_TOKENS},
        "models": {DEEPSEEK: {"quality": 1}, MISTRAL: {"quality": 1}},
        "budgets": [
            {"name": "per-team", "scope": "team:*", "window": "day", "limit_usd": CAP_TEAM, "on_exceed": "block"},
            {"name": "per-key", "scope": "key:*", "window": "day", "limit_usd": CAP_KEY, "on_exceed": "block"},
            {"name": "per-user", "scope": "user:*", "window": "day", "limit_usd": CAP_USER, "on_exceed": "block"},
            {"name": "ursula", "scope": "user:ursula", "window": "day", "limit_usd": CAP_URSULA, "on_exceed": "block"},
        ],
    } | extra


def _config() -> dict:
    return {
        "model_list": [_deployment("chat-ds", DEEPSEEK), _deployment("chat-ml", MISTRAL)],
        "router_settings": {"model_group_alias": {ALIAS: GROUP}},
        "litellm_settings": {"callbacks": ["litellm_payg.proxy_handler"]},
        "general_settings": {"custom_auth": f"{AUTH_MODULE_NAME}.user_api_key_auth"},
    }


ROUTE_POLICY = _policy(direct_deployments="route")
ROUTE_POLICY["budgets"] = ROUTE_POLICY["budgets"] + [
    {"name": "per-end-user", "scope": "end_user:*", "window": "day", "limit_usd": CAP_END_USER, "on_exceed": "block"}
]
DOWN_POLICY = _policy(ledger="redis://127.0.0.1:1/0", on_ledger_error="fail_closed",
                      budgets=[{"scope": "global", "window": "day", "limit_usd": 1, "on_exceed": "block"}])


class Proxy:
    def __init__(self, running: RunningProxy):
        self.running = running
        self.url = running.base_url
        self.ledger = LedgerView(running.workdir)

    def post(self, path: str, body: Any, key: str, headers: dict[str, str] | None = None) -> httpx.Response:
        return post(self.url, path, body, key, headers)


@pytest.fixture(scope="module")
def proxies(litellm_proxy_factory) -> dict[str, Proxy]:  # noqa: F811
    started = {
        name: litellm_proxy_factory(
            _config(), name=name,
            files={"payg-policy.yaml": yaml.safe_dump(policy, sort_keys=False), f"{AUTH_MODULE_NAME}.py": AUTH_MODULE},
        )
        for name, policy in (("main", _policy()), ("route", ROUTE_POLICY), ("down", DOWN_POLICY))
    }
    out = {name: Proxy(p.wait_ready()) for name, p in started.items()}
    yield out
    for proxy in out.values():
        proxy.ledger.close()


@pytest.fixture(scope="module")
def main(proxies) -> Proxy:
    return proxies["main"]


# -- the endpoints --------------------------------------------------------------------------------

def _chat(model: str) -> dict:
    return {"model": model, "messages": MESSAGES, "max_tokens": MAX_TOKENS}


Endpoint = tuple[Callable[[str], str], Callable[[str], dict]]  # model -> path, model -> body

ENDPOINTS: dict[str, Endpoint] = {
    "chat": (lambda m: "/v1/chat/completions", _chat),
    "messages": (lambda m: "/v1/messages", _chat),
    "responses": (lambda m: "/v1/responses", lambda m: {"model": m, "input": TEXT, "max_output_tokens": MAX_TOKENS}),
    "completions": (lambda m: "/v1/completions", lambda m: {"model": m, "prompt": TEXT, "max_tokens": MAX_TOKENS}),
    "generate_content": (lambda m: f"/v1beta/models/{m}:generateContent",
                         lambda m: {"contents": [{"role": "user", "parts": [{"text": TEXT}]}],
                                    "generationConfig": {"maxOutputTokens": MAX_TOKENS}}),
    "azure_path": (lambda m: f"/openai/deployments/{m}/chat/completions",
                   lambda m: {"messages": MESSAGES, "max_tokens": MAX_TOKENS}),
    "queue": (lambda m: "/queue/chat/completions", lambda m: {**_chat(m), "priority": 1}),
}
# endpoints whose response LiteLLM never passes through the response-headers hook
NO_HEADER_HOOK = {"queue"}


def _needs_nacl(endpoint: str) -> None:
    """The proxy encrypts /v1/responses ids with PyNaCl and answers 500 without it (after calling
    the provider): those cases need it installed (``pip install pynacl``)."""
    if endpoint == "responses" and importlib.util.find_spec("nacl") is None:
        reason = "the proxy's /v1/responses needs PyNaCl (pip install pynacl)"
        if os.environ.get("CI"):
            pytest.fail(reason + " -- CI is set, so this is a failure, not a skip")
        pytest.skip(reason)


def _call(proxy: Proxy, endpoint: str, model: str, key: str, **body_extra: Any) -> httpx.Response:
    _needs_nacl(endpoint)
    path, body = ENDPOINTS[endpoint]
    return proxy.post(path(model), {**body(model), **body_extra}, key)


# -- 1. a shared trace id must not share one reservation ------------------------------------------

async def _burst(proxy: Proxy, n: int, make: Callable[[], tuple[dict, dict]]) -> list[int]:
    async with httpx.AsyncClient(base_url=proxy.url, timeout=60, trust_env=False,
                                 limits=httpx.Limits(max_connections=n)) as client:
        async def one() -> int:
            body, headers = make()
            return (await client.post("/v1/chat/completions", json=body, headers=headers)).status_code

        return list(await asyncio.gather(*(one() for _ in range(n))))


@pytest.mark.parametrize("carrier", ["body_litellm_trace_id", "header_x_litellm_trace_id", "metadata_payg_trace"])
async def test_a_shared_trace_id_does_not_share_one_reservation(main, carrier):
    """60 concurrent requests of one team, all carrying the same trace id, against a team cap sized
    for four: each is reserved on its own, so the cap holds and every 200 is in the ledger."""
    team = f"burst{uuid.uuid4().hex[:6]}"
    trace = f"shared-{uuid.uuid4().hex}"
    before = main.ledger.open()

    def make() -> tuple[dict, dict]:
        body, headers = _chat(GROUP), auth(new_key(team=team, label="burst"))
        if carrier == "body_litellm_trace_id":
            body["litellm_trace_id"] = trace
        elif carrier == "header_x_litellm_trace_id":
            headers["x-litellm-trace-id"] = trace
        else:
            body["metadata"] = {"payg_trace": trace}
        return body, headers

    statuses = await _burst(main, 60, make)
    served = statuses.count(200)
    wait_until(lambda: len(main.ledger.records(team=team)) >= served and main.ledger.open() <= before, timeout=3)
    records = main.ledger.records(team=team)
    settled = sum(r.amount_usd for r in records)
    counts = {s: statuses.count(s) for s in sorted(set(statuses))}

    assert settled <= CAP_TEAM + ONE_RESERVATION + 1e-12, (
        f"{carrier}: the team spent ${settled:.6f} against a ${CAP_TEAM:.6f} cap (answers {counts})")
    assert len(records) == served, (
        f"{carrier}: {served} requests were answered 200 but only {len(records)} are in the ledger "
        f"(answers {counts}): the shared trace id made them share one reservation, the rest ran unbudgeted")
    refusals = {429, 400} if carrier == "metadata_payg_trace" else {429}
    assert set(counts) <= {200} | refusals, f"{carrier}: refusals must be {sorted(refusals)}, got {counts}"
    assert main.ledger.left_open_since(before) == 0, f"{carrier}: reservations left open"


# -- 2. naming a deployment, a provider model or an alias instead of the group --------------------

@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
@pytest.mark.parametrize("kind", list(DIRECT_NAMES))
def test_naming_a_deployment_directly_is_refused_naming_the_group(main, kind, endpoint):
    model = DIRECT_NAMES[kind]
    key = new_key(label="direct")
    before = main.ledger.open()
    resp = _call(main, endpoint, model, key)
    assert resp.status_code == 400, (
        f"{endpoint} model={model!r} ({kind}) was answered {short(resp)}: the client picked what runs "
        f"(x-litellm-model-id={resp.headers.get('x-litellm-model-id')}, x-payg-chosen={resp.headers.get('x-payg-chosen')})")
    assert model in resp.text and GROUP in resp.text, (
        f"the 400 must name the model sent ({model!r}) and the group to use ({GROUP!r}): {short(resp)}")
    assert main.ledger.left_open_since(before) == 0
    assert main.ledger.records(key=key) == []


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
@pytest.mark.parametrize("kind", list(DIRECT_NAMES))
def test_direct_deployments_route_governs_them_like_the_group(proxies, kind, endpoint):
    proxy = proxies["route"]
    model = DIRECT_NAMES[kind]
    key = new_key(label="routed")
    before = proxy.ledger.open()
    resp = _call(proxy, endpoint, model, key)
    assert resp.status_code == 200, f"direct_deployments: route, {endpoint} model={model!r}: {short(resp)}"
    if endpoint not in NO_HEADER_HOOK:
        assert resp.headers.get("x-payg-chosen") in ("chat-ds", "chat-ml"), (
            f"{endpoint} model={model!r} was served without a payg decision (headers {dict(resp.headers)})")
    assert wait_until(lambda: len(proxy.ledger.records(key=key)) == 1), (
        f"{endpoint} model={model!r} answered 200 with no ledger record for the caller's key "
        f"(records for it: {proxy.ledger.records(key=key)})")
    (record,) = proxy.ledger.records(key=key)
    assert record.attrs.get("group") == GROUP and record.amount_usd > 0, record.attrs
    assert proxy.ledger.left_open_since(before) == 0


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_an_alias_of_the_governed_group_is_routed_and_budgeted_like_the_group(main, endpoint):
    """``router_settings.model_group_alias`` is the operator's config: an alias names the group,
    not a deployment, so the policy routes it (whatever ``direct_deployments`` says)."""
    key = new_key(label="alias")
    before = main.ledger.open()
    resp = _call(main, endpoint, ALIAS, key)
    assert resp.status_code == 200, f"{endpoint} model={ALIAS!r} (alias of {GROUP!r}): {short(resp)}"
    if endpoint not in NO_HEADER_HOOK:
        assert resp.headers.get("x-payg-chosen") == "chat-ds", (
            f"{endpoint}: the alias was not routed by the policy (headers {dict(resp.headers)})")
    assert wait_until(lambda: len(main.ledger.records(key=key)) == 1), (
        f"{endpoint} alias answered 200 with no ledger record for the caller's key")
    (record,) = main.ledger.records(key=key)
    assert record.attrs.get("group") == GROUP and record.amount_usd > 0, record.attrs
    assert main.ledger.left_open_since(before) == 0


# -- 3. forged plugin state in the request metadata -----------------------------------------------

HUGE = "word " * 6000
FORGED: dict[str, tuple[str, Any]] = {  # case -> (key, value)
    "prompt_tokens_zero_huge_prompt": ("payg_prompt_tokens", 0),
    "prompt_tokens_negative": ("payg_prompt_tokens", -5),
    "reservations": ("payg_reservations", {"chat-ds": ["forged:0"]}),
    "attempts": ("payg_attempts", ["chat-ds", "chat-ml"]),
    "trace": ("payg_trace", "x"),
    "binding": ("payg_binding", "not-yours"),
    "decision": ("payg_decision", {"chosen": "chat-ml", "group": GROUP}),
}


@pytest.mark.parametrize("where", ["metadata", "litellm_metadata"])
@pytest.mark.parametrize("case", list(FORGED))
def test_client_sent_payg_state_is_refused_naming_the_key(main, case, where):
    field, value = FORGED[case]
    key = new_key(label="forge")
    body = _chat(GROUP)
    if case == "prompt_tokens_zero_huge_prompt":
        body["messages"] = [{"role": "user", "content": HUGE}]
    body[where] = {field: value}
    before = main.ledger.open()
    resp = main.post("/v1/chat/completions", body, key)
    assert resp.status_code == 400 and field in resp.text, (
        f"{where}.{field}={json.dumps(value)[:40]} was accepted: {short(resp)}")
    assert main.ledger.left_open_since(before) == 0, f"{where}.{field}: a reservation was left open"
    assert main.ledger.records(key=key) == []


@pytest.mark.parametrize("endpoint,where", [("messages", "litellm_metadata"), ("queue", "metadata"),
                                            ("responses", "litellm_metadata")])
def test_client_sent_payg_state_is_refused_on_other_endpoints(main, endpoint, where):
    key = new_key(label="forge")
    before = main.ledger.open()
    resp = _call(main, endpoint, GROUP, key, **{where: {"payg_prompt_tokens": 0}})
    assert resp.status_code == 400 and "payg_prompt_tokens" in resp.text, (
        f"{endpoint}: {where}.payg_prompt_tokens=0 was accepted: {short(resp)}")
    assert main.ledger.left_open_since(before) == 0


def test_payg_hints_stay_allowed(main):
    """Control: ``payg_hints`` can only tighten a route, so it is not refused with the rest."""
    key = new_key(label="hints")
    resp = main.post("/v1/chat/completions", {**_chat(GROUP), "metadata": {"payg_hints": {"models": [MISTRAL]}}}, key)
    assert resp.status_code == 200, short(resp)
    assert resp.headers.get("x-payg-chosen") == "chat-ml", "the hint narrowed the route to Mistral"


# -- 4. the key's identity on every endpoint ------------------------------------------------------

def test_the_keys_identity_reaches_the_ledger(main):
    """Control for the harness: custom_auth's user and team, and LiteLLM's hash of the key, reach
    the plugin (``user_api_key_user_id`` / ``_team_id`` / ``_hash``) and its ledger record."""
    key = new_key(user="idcheck", team="idteam", label="id")
    resp = main.post("/v1/chat/completions", _chat(GROUP), key)
    assert resp.status_code == 200, short(resp)
    assert wait_until(lambda: bool(main.ledger.records(key=key)))
    (record,) = main.ledger.records(key=key)
    assert (record.attrs.get("user"), record.attrs.get("team")) == ("idcheck", "idteam"), record.attrs


def test_an_exhausted_user_is_blocked_on_every_endpoint(main):
    """ursula's ``user:ursula`` block budget: each successful call is recorded with her user id
    whatever endpoint it came through; once it is spent, every endpoint answers 429."""
    problems = []
    keys = []

    def call(endpoint: str) -> httpx.Response:
        keys.append(new_key(user="ursula", label=endpoint.replace("_", "")))
        return _call(main, endpoint, GROUP, keys[-1])

    before = main.ledger.open()
    first = call("messages")  # under budget: served, and recorded as hers
    if first.status_code != 200:
        problems.append(f"/v1/messages under budget: {short(first)}")
    for _ in range(6):  # spend the rest on /v1/chat/completions
        resp = call("chat")
        if resp.status_code == 429:
            break
    else:
        problems.append(f"/v1/chat/completions never refused ursula (cap ${CAP_URSULA:.6f})")
    for endpoint in ("messages", "responses", "completions", "generate_content", "queue"):
        if endpoint == "responses" and importlib.util.find_spec("nacl") is None and not os.environ.get("CI"):
            continue  # see _needs_nacl
        resp = call(endpoint)
        # /queue on LiteLLM before 1.110 (seen on 1.100.0) answers the same budget refusal as a 400
        # "Authentication Error": refused all the same, only the status differs
        old_queue = (endpoint == "queue" and not litellm_versions.at_least((1, 110))
                     and resp.status_code == 400 and "(user:ursula, day) exceeded" in resp.text)
        if resp.status_code != 429 and not old_queue:
            problems.append(f"{endpoint} after ursula's budget was spent: {short(resp, 160)}")
    wait_until(lambda: main.ledger.open() <= before)
    hashes = {key_hash(k) for k in keys}
    for r in main.ledger.records():
        if r.attrs.get("key") in hashes and r.attrs.get("user") != "ursula":
            problems.append(f"a record of ursula's key carries user={r.attrs.get('user')!r}: {r.attrs}")
    if not main.ledger.records(user="ursula", key=keys[0]):
        problems.append("ursula's /v1/messages call has no ledger record with her user id and key "
                        f"(records with user=ursula: {[r.attrs for r in main.ledger.records(user='ursula')]})")
    assert not problems, "ursula got around her budget:\n" + "\n".join(problems)


FORGED_IDENTITY: dict[str, Callable[[str], dict]] = {  # case -> victim -> body metadata
    "sdk_fields": lambda victim: {"team": victim, "user": victim, "tags": ["forged"]},
    "proxy_fields": lambda victim: {"user_api_key_hash": key_hash(f"sk-{victim}"), "user_api_key_user_id": victim,
                                    "user_api_key_team_id": victim},
}


@pytest.mark.parametrize("forged", list(FORGED_IDENTITY))
@pytest.mark.parametrize("endpoint", ["messages", "chat"])
def test_client_metadata_cannot_choose_whose_budget_pays(main, endpoint, forged):
    """On /v1/messages the Router's ``metadata`` is the Anthropic body's own ``metadata`` (the key's
    identity is in ``litellm_metadata``): client-sent identity fields there must not place the
    request under another user's or team's budget (charging the victim, or dodging its own caps)."""
    own, victim = f"own{uuid.uuid4().hex[:6]}", f"victim{uuid.uuid4().hex[:6]}"
    key = new_key(team=own, label="who")
    resp = _call(main, endpoint, GROUP, key, metadata=FORGED_IDENTITY[forged](victim))
    if resp.status_code == 200:
        wait_until(lambda: bool(main.ledger.records(key=key)) or bool(main.ledger.records(team=victim))
                   or bool(main.ledger.records(user=victim)))
    charged_to_victim = main.ledger.records(team=victim) + main.ledger.records(user=victim)
    assert not charged_to_victim, (
        f"{endpoint}: body metadata ({forged}) chose who pays: charged to {victim!r}: {[r.attrs for r in charged_to_victim]}")
    assert resp.status_code == 200 and [r.attrs.get("team") for r in main.ledger.records(key=key)] == [own], (
        f"{endpoint}: the request should be served and charged once to the key's team {own!r}: {short(resp, 120)}, "
        f"records {[r.attrs for r in main.ledger.records(key=key)]}")


# -- 5. dodging per-user caps with the body's `user` field ----------------------------------------

# Where LiteLLM takes the end user from (auth_utils.get_end_user_id_from_request_body, applied by
# user_api_key_auth when the key has no end_user_id): every one of them is the client's to choose.
END_USER_CARRIERS: dict[str, Callable[[str], tuple[dict, dict]]] = {  # carrier -> value -> (body extra, headers)
    "body_user": lambda v: ({"user": v}, {}),
    "header_x_litellm_end_user_id": lambda v: ({}, {"x-litellm-end-user-id": v}),
    "header_x_litellm_customer_id": lambda v: ({}, {"x-litellm-customer-id": v}),
    "metadata_user_id": lambda v: ({"metadata": {"user_id": v}}, {}),
    "litellm_metadata_user": lambda v: ({"litellm_metadata": {"user": v}}, {}),
    "safety_identifier": lambda v: ({"safety_identifier": v}, {}),
}


@pytest.mark.parametrize("carrier", list(END_USER_CARRIERS))
def test_a_client_chosen_end_user_never_becomes_the_user_scope(main, carrier):
    """A key with no user id names a different end user per request: the ``user:`` scope comes
    only from the key, so no record is attributed to those users, and the key's own cap holds."""
    key = new_key(label="anon")
    names = [f"eve{uuid.uuid4().hex[:6]}" for _ in range(6)]
    statuses = []
    for name in names:
        extra, headers = END_USER_CARRIERS[carrier](name)
        statuses.append(main.post("/v1/chat/completions", {**_chat(GROUP), **extra}, key, headers).status_code)
    served = statuses.count(200)
    wait_until(lambda: len(main.ledger.records(key=key)) >= served)
    records = main.ledger.records(key=key)
    as_users = sorted({r.attrs.get("user") for r in records} & set(names))
    assert not as_users, (
        f"{carrier}: the client-chosen end user became the budget user ({len(as_users)} of them): a key "
        f"with no user id gets a fresh user:* bucket per value it sends")
    assert served <= 3 and statuses.count(429) == len(statuses) - served, f"{carrier}: per-key cap: {statuses}"
    assert len(records) == served


@pytest.mark.parametrize("endpoint", ["chat", "messages"])
def test_a_keyed_users_cap_holds_whatever_body_user_is_sent(main, endpoint):
    """A user:* cap for a keyed user (fresh key each call, so key:* never binds) holds whatever
    ``user`` the body sends."""
    user = f"victor{uuid.uuid4().hex[:6]}"
    body_users = [f"mallory{uuid.uuid4().hex[:6]}" for _ in range(6)]
    statuses = []
    for body_user in body_users:
        # sequential; whether the previous one has settled yet does not matter: in-flight counts too
        statuses.append(_call(main, endpoint, GROUP, new_key(user=user, label="v"), user=body_user).status_code)
    wait_until(lambda: len(main.ledger.records(user=user)) >= statuses.count(200))
    charged_as = [r.attrs.get("user") for r in main.ledger.records() if r.attrs.get("user") in set(body_users) | {user}]
    assert statuses.count(200) <= 3, (
        f"{endpoint}: user {user} was served {statuses.count(200)} times against a cap for 3 by changing "
        f"the body's `user` ({statuses}); the ledger charged them as {charged_as}")
    assert 429 in statuses, statuses


def test_an_end_user_budget_caps_the_body_user(proxies):
    """``end_user:*``: the body's ``user`` is the end user; a keyed caller's end user is capped."""
    proxy = proxies["route"]
    customer = f"cust{uuid.uuid4().hex[:6]}"
    statuses = []
    for _ in range(5):
        statuses.append(proxy.post("/v1/chat/completions", {**_chat(GROUP), "user": customer},
                                   new_key(user="walt", label="eu")).status_code)
    assert statuses.count(200) == 2 and statuses[2:] == [429, 429, 429], (
        f"end_user:* cap for 2 requests of end user {customer}: {statuses}")


# -- 6. bad input is a 400, never a ledger event --------------------------------------------------

BAD_INPUT: dict[str, tuple[str, dict]] = {  # case -> (field the message must name, body change)
    "messages_not_a_list": ("messages", {"messages": "hello"}),
    "message_content_not_text": ("messages", {"messages": [{"content": 1}]}),
    "max_tokens_text": ("max_tokens", {"max_tokens": "abc"}),
    "max_tokens_negative": ("max_tokens", {"max_tokens": -5}),
    "max_tokens_huge": ("max_tokens", {"max_tokens": 1e12}),
    "stream_options_text": ("stream_options", {"stream_options": "yes"}),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_a_400_naming_the_field_and_never_reserved(main, case):
    field, change = BAD_INPUT[case]
    key = new_key(label="bad")
    before = main.ledger.open()
    resp = main.post("/v1/chat/completions", {**_chat(GROUP), **change}, key)
    assert resp.status_code == 400 and field in resp.text, f"{case}: {short(resp)}"
    assert main.ledger.left_open_since(before) == 0, f"{case}: a reservation was left open"
    assert main.ledger.records(key=key) == [], f"{case}: bad input reached the ledger"


# -- 7. a ledger that is down refuses at once -----------------------------------------------------

REFUSAL_LOG_LINE = "refusing the request"  # litellm_payg's ERROR line for each refusal while the ledger is down


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("endpoint", ["chat", "messages", "responses", "completions"])
def test_ledger_down_fail_closed_is_a_fast_503(proxies, endpoint, stream):
    """Each request is refused once, with a 503 naming the ledger, at once. The first request to an
    endpoint is not timed: a cold proxy spends up to ~2 s importing that endpoint's code."""
    proxy = proxies["down"]
    extra = {"stream": True} if stream else {}
    _call(proxy, endpoint, GROUP, new_key(label="warm"), **extra)
    proxy.running.wait_for_log(REFUSAL_LOG_LINE, timeout=2)
    logged_before = proxy.running.log().count(REFUSAL_LOG_LINE)
    seen = []
    for _ in range(2):
        t0 = time.monotonic()
        resp = _call(proxy, endpoint, GROUP, new_key(label="down"), **extra)
        seen.append((resp.status_code, round(time.monotonic() - t0, 2)))
        assert resp.status_code == 503 and "ledger" in resp.text, f"{endpoint}, ledger down: {short(resp)}"
    assert all(took < 1.5 for _, took in seen), f"{endpoint}: (status, seconds) per request: {seen}"
    wait_until(lambda: proxy.running.log().count(REFUSAL_LOG_LINE) - logged_before >= len(seen))
    time.sleep(0.2)  # a retry's line would follow within milliseconds
    asked = proxy.running.log().count(REFUSAL_LOG_LINE) - logged_before
    assert asked == len(seen), (
        f"{endpoint}: the plugin refused {asked} times for {len(seen)} requests: LiteLLM retried a refusal that is final "
        f"(lines with {REFUSAL_LOG_LINE!r} in the proxy log)")


# -- 8. what each endpoint reserves, it settles ---------------------------------------------------

@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_every_endpoint_settles_what_it_reserves(main, endpoint):
    """A plain request to the group on each endpoint: governed (header), recorded once with the
    caller's key and a non-zero cost, nothing left reserved."""
    key = new_key(label="plain")
    before = main.ledger.open()
    resp = _call(main, endpoint, GROUP, key)
    assert resp.status_code == 200, short(resp)
    problems = []
    if endpoint not in NO_HEADER_HOOK and not resp.headers.get("x-payg-chosen"):
        problems.append("no x-payg-chosen header")
    wait_until(lambda: len(main.ledger.records(key=key)) >= 1 and main.ledger.open() <= before)
    records = main.ledger.records(key=key)
    if len(records) != 1 or not records[0].amount_usd > 0:
        problems.append(f"records for the caller's key: {[(r.amount_usd, r.attrs) for r in records]} (want one, > $0)")
    left = main.ledger.left_open_since(before, timeout=0.5)
    if left:
        problems.append(f"{left} reservation(s) left open (charged in full only when they expire)")
    assert not problems, f"{endpoint}: " + "; ".join(problems)


# -- other ways around the plugin found in LiteLLM's request path ---------------------------------

def test_batch_completion_over_comma_separated_models_settles_every_call(main):
    """``model: "a,b"`` makes the proxy call ``Router.abatch_completion``: one provider call per model,
    sharing one metadata dict. Each call must be reserved and settled on its own (or refused)."""
    key = new_key(label="batch")
    before = main.ledger.open()
    resp = main.post("/v1/chat/completions", _chat(f"{GROUP},{GROUP}"), key)
    if resp.status_code == 400:
        return
    assert resp.status_code == 200, short(resp)
    answers = resp.json()
    calls = len(answers) if isinstance(answers, list) else 1
    wait_until(lambda: len(main.ledger.records(key=key)) >= calls)
    left = main.ledger.left_open_since(before)
    assert len(main.ledger.records(key=key)) == calls and left == 0, (
        f"{calls} provider calls answered, {len(main.ledger.records(key=key))} in the ledger, {left} reservation(s) left open")


def test_fastest_response_settles_every_call(main):
    key = new_key(label="fastest")
    before = main.ledger.open()
    resp = main.post("/v1/chat/completions", {**_chat(f"{GROUP}, {ALIAS}"), "fastest_response": True}, key)
    if resp.status_code == 400:
        return
    assert resp.status_code == 200, short(resp)
    left = main.ledger.left_open_since(before)
    assert left == 0 and main.ledger.records(key=key), (
        f"fastest_response: {left} reservation(s) left open, records {len(main.ledger.records(key=key))}")


def test_client_api_key_in_the_body_leaves_nothing_reserved(main):
    """``api_key`` is not on LiteLLM's banned list: the Router clones the deployment with the
    client's key (a new model id). The reservation made for the chosen deployment must not dangle."""
    key = new_key(label="byok")
    before = main.ledger.open()
    resp = main.post("/v1/chat/completions", {**_chat(GROUP), "api_key": "sk-client-own"}, key)
    if resp.status_code == 400:
        return
    assert resp.status_code == 200, short(resp)
    left = main.ledger.left_open_since(before)
    assert left == 0, (
        f"api_key in the body: ran on {resp.headers.get('x-litellm-model-id')!r}, the plugin chose "
        f"{resp.headers.get('x-payg-chosen')!r}; {left} reservation(s) left open")


def test_queue_endpoint_does_not_take_identity_from_the_body(main):
    """``/queue/chat/completions`` builds its own metadata from the body and sets only some
    ``user_api_key_*`` fields: a client-sent ``user_api_key_end_user_id`` must not become the user."""
    key = new_key(label="queue")
    forged = f"forged{uuid.uuid4().hex[:6]}"
    resp = main.post("/queue/chat/completions",
                     {**_chat(GROUP), "priority": 1, "metadata": {"user_api_key_end_user_id": forged}}, key)
    if resp.status_code == 200:
        wait_until(lambda: bool(main.ledger.records(key=key)))
    attributed = main.ledger.records(user=forged)
    assert not attributed, (
        f"the client named itself user {forged!r} on /queue/chat/completions ({short(resp, 80)}); "
        f"records: {[r.attrs for r in attributed]}")
    assert resp.status_code in (200, 400), short(resp)


def test_nothing_is_left_reserved_after_the_module(main):
    """Runs last in the module: every scenario above settled or released what it reserved."""
    wait_until(lambda: main.ledger.open() == 0, timeout=3)
    assert main.ledger.open() == 0, f"{main.ledger.open()} reservation(s) left open on the main proxy's ledger"
