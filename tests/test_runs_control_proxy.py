"""Run control inside a real LiteLLM proxy (``litellm --config ...``): ``GET /payg/runs``,
``POST /payg/runs/close`` and ``POST /payg/runs/grant``, authenticated by LiteLLM.

Callers are told apart by their bearer key (``custom_auth``, no database, see ``trust_helpers``);
the auth module here also answers the proxy's master key as LiteLLM's ``proxy_admin`` role. The
policy names the team ``ops`` as run operators. Deployments answer with ``mock_response`` (10 prompt
+ 20 completion tokens) at 1e-5 per token: 3e-4 an answer.
"""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
import yaml

from proxy_fixtures import MASTER_KEY, RunningProxy, litellm_proxy_factory  # noqa: F401  (fixture)
from trust_helpers import AUTH_MODULE_NAME, key_hash, new_key

DEAR = "mistral/mistral-large-latest"
COST = 30 * 1e-5
AUTH_MODULE = f'''\
"""custom_auth: ``sk-payg.<user>.<team>.<nonce>``; the master key is the proxy's admin."""
from fastapi import HTTPException
from litellm.proxy._types import LitellmUserRoles, UserAPIKeyAuth


async def user_api_key_auth(request, api_key: str) -> UserAPIKeyAuth:
    key = (api_key or "").removeprefix("Bearer ").strip()
    if key == {MASTER_KEY!r}:
        return UserAPIKeyAuth(api_key=key, user_role=LitellmUserRoles.PROXY_ADMIN)
    parts = key.split(".")
    if len(parts) != 4 or parts[0] != "sk-payg":
        raise HTTPException(status_code=401, detail="unknown key")
    _, user, team, _nonce = parts
    return UserAPIKeyAuth(api_key=key, user_id=user or None, team_id=team or None)
'''
POLICY = {
    "version": 1,
    "ledger": "sqlite:///payg-ledger.db",
    "sessions": {"operators": {"team": ["ops"]}},
    "budgets": [{"name": "per-run", "scope": "session:*", "window": "session:30m", "limit_usd": 3.5 * COST,
                 "max_total_tokens": 10_000, "max_duration": "1h"},
                # the agent group's short steps: 60 tokens and 3 seconds a run
                {"name": "short", "scope": "session:*", "window": "session:30m", "limit_usd": 1.0,
                 "max_total_tokens": 60, "max_duration": "3s", "when": {"group": "agent", "metadata.step": "short"}}],
}
CONFIG = {
    "model_list": [{
        "model_name": group,
        "litellm_params": {"model": DEAR, "api_key": "not-used-mock-response", "mock_response": "answered",
                           "input_cost_per_token": 1e-5, "output_cost_per_token": 1e-5},
        "model_info": {"id": f"dear-{group}"},
    } for group in ("agent", "chat")],
    "litellm_settings": {"callbacks": ["litellm_payg.proxy_handler"]},
    "general_settings": {"custom_auth": f"{AUTH_MODULE_NAME}.user_api_key_auth"},
}


@pytest.fixture(scope="module")
def proxy(litellm_proxy_factory) -> RunningProxy:  # noqa: F811
    return litellm_proxy_factory(
        CONFIG, name="runctl",
        files={"payg-policy.yaml": yaml.safe_dump(POLICY, sort_keys=False), f"{AUTH_MODULE_NAME}.py": AUTH_MODULE},
    ).wait_ready()


def _http(proxy: RunningProxy) -> httpx.Client:
    return httpx.Client(base_url=proxy.base_url, timeout=30, trust_env=False)


def _ask(proxy: RunningProxy, key: str, run: str, text: str = "go on", *, max_tokens: int = 20,
         group: str = "agent", **metadata) -> httpx.Response:
    with _http(proxy) as client:
        return client.post("/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, json={
            "model": group, "messages": [{"role": "user", "content": text}], "max_tokens": max_tokens,
            "litellm_session_id": run, "metadata": metadata})


def _control(proxy: RunningProxy, key: str, action: str, **body) -> httpx.Response:
    with _http(proxy) as client:
        headers = {"Authorization": f"Bearer {key}"}
        if action == "read":
            return client.get("/payg/runs", params=body, headers=headers)
        return client.post(f"/payg/runs/{action}", json=body, headers=headers)


def _settled(proxy: RunningProxy, key: str, run: str, requests: int) -> dict:
    deadline = time.monotonic() + 10
    while True:
        read = _control(proxy, key, "read", run=run).json()
        if read["budgets"][0]["reserved_usd"] == 0 and read["budgets"][0]["requests"] == requests:
            return read
        assert time.monotonic() < deadline, read
        time.sleep(0.05)


def test_a_run_closed_by_the_operator_is_refused_at_once_then_granted_more_and_served(proxy):
    agent, session = new_key(label="agent"), f"run-{uuid.uuid4().hex[:8]}"
    run_id = f"{session}@key:{key_hash(agent)[:16]}"
    for i in range(2):
        assert _ask(proxy, agent, session, f"step {i}").status_code == 200
    # the key reads its own run by the session id it sent
    own = _settled(proxy, agent, session, 2)
    assert own["run"] == run_id and not own["closed"]
    budget = own["budgets"][0]
    assert budget["spent_usd"] == pytest.approx(2 * COST) and budget["tokens"] == 60
    assert budget["max_total_tokens"] == 10_000 and budget["started_at"] and budget["expires_at"]

    # the operator (the master key) closes it by its run id; the next request is refused at once
    closed = _control(proxy, MASTER_KEY, "close", run=run_id)
    assert closed.status_code == 200, closed.text
    assert closed.json()["closed"] is True
    refused = _ask(proxy, agent, session, "step 2")
    assert refused.status_code == 429 and refused.headers["x-should-retry"] == "false"
    assert "retry-after" not in refused.headers
    error = refused.json()["error"]
    assert error["type"] == "budget_exceeded"
    assert error["provider_specific_fields"]["payg"]["rule"] == "closed"
    assert "was closed by the operator" in error["message"]
    read = _control(proxy, agent, "read", run=session).json()
    assert read["closed"] and read["budgets"][0]["last_refusal"]["rule"] == "closed"

    # an operator by the policy's sessions.operators (team ops) grants it more: served again
    ops = new_key(user="olga", team="ops", label="ops")
    granted = _control(proxy, ops, "grant", run=run_id, usd=2 * COST, requests=5)
    assert granted.status_code == 200, granted.text
    assert not granted.json()["closed"]
    assert granted.json()["budgets"][0]["limit_usd"] == pytest.approx(5.5 * COST)
    assert granted.json()["budgets"][0]["granted"]["usd"] == pytest.approx(2 * COST)
    for i in range(3):  # 3.5 answers' limit + 2: three more fit, where one did before the grant
        response = _ask(proxy, agent, session, f"step {i + 2}")
        assert response.status_code == 200, response.text
        _settled(proxy, agent, session, 3 + i)
    capped = _ask(proxy, agent, session, "step 5")
    assert capped.status_code == 429 and capped.json()["error"]["provider_specific_fields"]["payg"]["rule"] == "cap"


def test_a_key_that_is_not_an_operator_can_neither_close_nor_grant_nor_read_another_keys_run(proxy):
    owner, other, session = new_key(label="owner"), new_key(user="mallory", label="other"), f"run-{uuid.uuid4().hex[:8]}"
    run_id = f"{session}@key:{key_hash(owner)[:16]}"
    assert _ask(proxy, owner, session).status_code == 200
    before = _settled(proxy, owner, session, 1)
    for action, body in (("close", {"run": run_id}), ("grant", {"run": run_id, "usd": 1}),
                         ("close", {"run": session}), ("grant", {"run": session, "usd": 1})):
        denied = _control(proxy, other, action, **body)
        assert denied.status_code == 403, denied.text
        assert "only an operator" in denied.json()["error"]["message"]
    # the owner itself is no operator either
    assert _control(proxy, owner, "grant", run=session, usd=1).status_code == 403
    # reading another key's run: refused by its run id, and its session id names the reader's own (no) run
    assert _control(proxy, other, "read", run=run_id).status_code == 403
    assert _control(proxy, other, "read", run=session).status_code == 404
    # no key at all is LiteLLM's 401
    with _http(proxy) as client:
        assert client.get("/payg/runs", params={"run": run_id}).status_code == 401
    after = _control(proxy, owner, "read", run=session).json()
    assert after["budgets"][0]["limit_usd"] == before["budgets"][0]["limit_usd"] and not after["closed"]
    assert _ask(proxy, owner, session, "still served").status_code == 200


def test_a_forged_or_unknown_run_id_is_a_404_and_changes_nothing(proxy):
    owner, session = new_key(label="real"), f"run-{uuid.uuid4().hex[:8]}"
    assert _ask(proxy, owner, session).status_code == 200
    for forged in (f"{session}@key:{'0' * 16}", session, "no-such-run"):
        for action, body in (("read", {}), ("close", {}), ("grant", {"usd": 1})):
            answer = _control(proxy, MASTER_KEY, action, run=forged, **body)
            assert answer.status_code == 404, (forged, action, answer.text)
    bad = _control(proxy, MASTER_KEY, "grant", run=session, dollars=1)
    assert bad.status_code == 400 and "dollars: unknown field" in bad.json()["error"]["message"]
    bad = _control(proxy, MASTER_KEY, "grant", run=f"{session}@key:{key_hash(owner)[:16]}", usd=-1)
    assert bad.status_code == 400 and "usd:" in bad.json()["error"]["message"]
    assert _control(proxy, MASTER_KEY, "close", run=42).status_code == 400
    # the real run was not touched
    read = _settled(proxy, owner, session, 1)
    assert not read["closed"] and read["budgets"][0]["granted"]["usd"] == 0


def _payg(response: httpx.Response) -> dict:
    assert response.status_code == 429 and response.headers["x-should-retry"] == "false", response.text
    assert "retry-after" not in response.headers
    error = response.json()["error"]
    assert error["type"] == "budget_exceeded"
    return {**error["provider_specific_fields"]["payg"], "message": error["message"]}


def test_token_and_wall_clock_caps_refuse_with_the_refusal_shape_and_when_group_picks_the_budget(proxy):
    agent, session = new_key(label="short"), f"run-{uuid.uuid4().hex[:8]}"
    run_id = f"{session}@key:{key_hash(agent)[:16]}"
    started = time.monotonic()
    assert _ask(proxy, agent, session, "one", step="short").status_code == 200  # 30 tokens used
    # bound: the prompt and 40 output tokens: 30 + ~48 > 60
    refused = _payg(_ask(proxy, agent, session, "two", max_tokens=40, step="short"))
    assert refused["rule"] == "tokens" and refused["budget"] == "short" and refused["count_limit"] == 60
    assert refused["count"] == 30 and refused["tokens_asked"] > 40
    assert "refused by max_total_tokens" in refused["message"]
    # the same run in the chat group: the short budget does not apply (when: group), 40 output tokens are fine
    assert _ask(proxy, agent, session, "two", max_tokens=40, group="chat", step="short").status_code == 200
    assert _ask(proxy, agent, session, "three", max_tokens=20, step="short").status_code == 200
    read = _settled(proxy, agent, session, 3)
    short = next(b for b in read["budgets"] if b["budget"] == "short")
    assert short["tokens"] == 60 and short["requests"] == 2 and short["max_duration_s"] == 3
    time.sleep(max(0.0, 3.2 - (time.monotonic() - started)))
    late = _payg(_ask(proxy, agent, session, "four", step="short"))
    assert late["rule"] == "duration" and "refused by max_duration" in late["message"]
    granted = _control(proxy, MASTER_KEY, "grant", run=run_id, budget="short", seconds=600, tokens=100)
    assert granted.status_code == 200, granted.text
    assert next(b for b in granted.json()["budgets"] if b["budget"] == "short")["max_total_tokens"] == 160
    assert _control(proxy, MASTER_KEY, "grant", run=run_id, usd=COST).status_code == 200  # per-run: room for one more
    assert _ask(proxy, agent, session, "four", max_tokens=20, step="short").status_code == 200


# -- two proxy replicas sharing one Redis ledger --------------------------------------------------------


@pytest.fixture(scope="module")
def replicas(litellm_proxy_factory) -> tuple[RunningProxy, RunningProxy]:  # noqa: F811
    from services import redis_url

    policy = {**POLICY, "ledger": redis_url()}
    files = {"payg-policy.yaml": yaml.safe_dump(policy, sort_keys=False), f"{AUTH_MODULE_NAME}.py": AUTH_MODULE}
    started = [litellm_proxy_factory(CONFIG, name=f"replica-{n}", files=files) for n in ("a", "b")]
    return started[0].wait_ready(), started[1].wait_ready()


def test_two_replicas_on_redis_see_a_close_and_a_grant_at_once(replicas):
    a, b = replicas
    agent, session = new_key(label="replicated"), f"run-{uuid.uuid4().hex[:8]}"
    run_id = f"{session}@key:{key_hash(agent)[:16]}"
    assert _ask(a, agent, session, "one").status_code == 200
    assert _ask(b, agent, session, "two").status_code == 200
    read = _settled(b, agent, session, 2)  # replica b counts both requests of the run
    assert read["budgets"][0]["spent_usd"] == pytest.approx(2 * COST)
    assert _control(a, MASTER_KEY, "close", run=run_id).status_code == 200
    refused = _ask(b, agent, session, "three")  # closed on a: refused on b at once
    assert refused.status_code == 429 and refused.json()["error"]["provider_specific_fields"]["payg"]["rule"] == "closed"
    assert _control(b, MASTER_KEY, "grant", run=run_id, usd=2 * COST).status_code == 200
    for i, replica in enumerate((a, b, a)):  # 3.5 + 2 answers' limit: three more, on either replica
        assert _ask(replica, agent, session, f"step {i + 3}").status_code == 200
        _settled(replica, agent, session, 3 + i)
    capped = _ask(b, agent, session, "step 6")
    assert capped.status_code == 429 and capped.json()["error"]["provider_specific_fields"]["payg"]["rule"] == "cap"
