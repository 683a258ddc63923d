"""``when:`` inside a real LiteLLM proxy (``litellm --config ...``), driven by the OpenAI SDK.

One proxy for the module. Callers are told apart by their bearer key (``custom_auth`` from
``trust_helpers``: ``sk-payg.<user>.<team>.<nonce>``), so ``when: {team: ...}`` reads the team the
key authenticated as; the tests check that a team written in the request body never stands in for it.
Deployments answer with ``mock_response`` texts naming themselves.
"""

from __future__ import annotations

import json

import pytest
import yaml

from proxy_fixtures import RunningProxy, litellm_proxy_factory  # noqa: F401  (fixture)
from trust_helpers import AUTH_MODULE, AUTH_MODULE_NAME, new_key

GPT4O, MINI, DEEPSEEK = "gpt-4o", "gpt-4o-mini", "deepseek/deepseek-chat"
MESSAGES = [{"role": "user", "content": "Next step, please."}]

PLAN = {"quality_floor": {"min_quality": 0.9}}
DEFAULT = {"cost_threshold": {"use": MINI, "max_usd_per_1k_tokens": 1, "otherwise": GPT4O}}
POLICY = {
    "version": 1,
    "ledger": "sqlite:///payg-ledger.db",
    "models": {GPT4O: {"quality": 0.95}, MINI: {"quality": 0.7}, DEEPSEEK: {"quality": 0.75}},
    "routes": {
        # each step of an agent run to its model
        "agent": [
            {"when": {"metadata.step": "plan"}, **PLAN},
            {"when": {"metadata.step": ["act", "observe"]},
             "cost_threshold": {"use": DEEPSEEK, "max_usd_per_1k_tokens": 0.001, "otherwise": MINI}},
            DEFAULT,
        ],
        # the ops team, and requests tagged vip, get the capable model
        "desk": [
            {"when": {"team": "ops"}, **PLAN},
            {"when": {"tags": "vip"}, **PLAN},
            DEFAULT,
        ],
    },
}


def _deployment(group: str, model: str, dep_id: str) -> dict:
    return {
        "model_name": group,
        "litellm_params": {"model": model, "api_key": "not-used-mock-response", "mock_response": f"answered by {dep_id}"},
        "model_info": {"id": dep_id},
    }


CONFIG = {
    "model_list": [
        _deployment("agent", GPT4O, "agent-big"),
        _deployment("agent", MINI, "agent-mini"),
        _deployment("agent", DEEPSEEK, "agent-ds"),
        _deployment("desk", GPT4O, "desk-big"),
        _deployment("desk", MINI, "desk-mini"),
    ],
    "litellm_settings": {"callbacks": ["litellm_payg.proxy_handler"]},
    "general_settings": {"custom_auth": f"{AUTH_MODULE_NAME}.user_api_key_auth"},
}


@pytest.fixture(scope="module")
def proxy(litellm_proxy_factory) -> RunningProxy:  # noqa: F811
    return litellm_proxy_factory(
        CONFIG, name="when",
        files={"payg-policy.yaml": yaml.safe_dump(POLICY, sort_keys=False), f"{AUTH_MODULE_NAME}.py": AUTH_MODULE},
    ).wait_ready()


def _ask(proxy: RunningProxy, group: str, key: str, **extra_body) -> tuple[str, str, dict]:
    """(answering deployment from the body, x-payg-chosen, the decision header) for one request."""
    import openai

    client = openai.OpenAI(base_url=f"{proxy.base_url}/v1", api_key=key, max_retries=0, timeout=30)
    raw = client.chat.completions.with_raw_response.create(
        model=group, messages=MESSAGES, max_tokens=20, extra_body=extra_body or None)
    text = raw.parse().choices[0].message.content
    return text.removeprefix("answered by "), raw.headers.get("x-payg-chosen"), json.loads(raw.headers["x-payg-decision"])


@pytest.mark.parametrize("step,served", [("plan", "agent-big"), ("act", "agent-ds"), ("observe", "agent-ds"),
                                         ("review", "agent-mini"), (None, "agent-mini")])
def test_when_sends_each_step_to_its_model_through_the_proxy(proxy, step, served):
    extra = {"metadata": {"step": step}} if step else {}
    answered, chosen, decision = _ask(proxy, "agent", new_key(label="agent"), **extra)
    assert answered == chosen == served, (answered, chosen, decision)
    if step == "plan":
        assert decision["notes"][0] == "when metadata.step=plan matched: routes.agent[0].quality_floor"
    elif step in ("act", "observe"):
        assert decision["notes"][0] == f"when metadata.step={step} matched: routes.agent[1].cost_threshold"
    else:
        assert decision["notes"][0].startswith("when: no condition matched (")
        assert decision["notes"][0].endswith("the unconditioned rules apply: routes.agent[2].cost_threshold")


def test_when_tags_through_the_proxy(proxy):
    key = new_key(label="tags")
    assert _ask(proxy, "desk", key, tags=["vip"])[0] == "desk-big"
    assert _ask(proxy, "desk", key, metadata={"tags": ["vip"]})[0] == "desk-big"
    assert _ask(proxy, "desk", key, tags=["free"])[0] == "desk-mini"


def test_when_team_reads_the_authenticated_key(proxy):
    answered, _, decision = _ask(proxy, "desk", new_key(user="olga", team="ops", label="ops"))
    assert answered == "desk-big"
    assert decision["notes"][0] == "when team=ops matched: routes.desk[0].quality_floor"


# every place a client can write a team into a request
CLAIMS = {
    "metadata.team": {"metadata": {"team": "ops"}},
    "metadata.team_id": {"metadata": {"team_id": "ops"}},
    "metadata.user_api_key_team_id": {"metadata": {"user_api_key_team_id": "ops"}},
    "body team_id": {"team_id": "ops"},
    "body user": {"user": "ops"},
}


@pytest.mark.parametrize("claim", list(CLAIMS))
@pytest.mark.parametrize("team", ["", "dev"])
def test_a_team_written_in_the_body_does_not_satisfy_when_team(proxy, claim, team):
    """A hostile client of another team (or of none) claims ``ops`` in the body: it must stay on
    the default route, not reach the model ops is routed to."""
    key = new_key(user="mallory", team=team, label="claim")
    try:
        answered, _, decision = _ask(proxy, "desk", key, **CLAIMS[claim])
    except Exception as exc:  # a refusal is fine too: the claim got nothing
        assert getattr(exc, "status_code", None) in (400, 401, 403), exc
        return
    assert answered == "desk-mini", (
        f"team {team or 'none'} claiming ops via {claim} was routed as ops: {decision['notes']}")
    assert not any("team=ops" in note and "matched" in note and "no condition" not in note for note in decision["notes"])
