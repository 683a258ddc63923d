"""Conditions on rules (``when:``): one model group routes each step of a workflow differently.

The semantics under test (README, "Conditions (`when:`)"): the rules that apply to a request are
the route's conditioned entries whose ``when`` matches, in policy order; when none matches, its
unconditioned entries. ``user``/``team``/``key`` read the authenticated identity, never the body.
"""

from __future__ import annotations

import json

import pytest

from litellm_payg.tools.cli import main as cli
from litellm_payg.core.decision import RouteRequest
from litellm_payg.runtime.engine import Engine
from litellm_payg.policy.load import load_policy
from litellm_payg.stores.prices import candidate_from_deployment
from litellm_payg.core.conditions import When, WhenError

from routing_helpers import Recorder, attached, deployment, served_by

GPT4O, MINI, DEEPSEEK = "gpt-4o", "gpt-4o-mini", "deepseek/deepseek-chat"
MODELS = {GPT4O: {"quality": 0.95}, MINI: {"quality": 0.7}, DEEPSEEK: {"quality": 0.75}}
# who serves what below: the plan step needs quality 0.9 (only gpt-4o has it); act/observe use
# DeepSeek while it is under $0.001/1K (it is, at LiteLLM's bundled price); anything else goes to
# the default, gpt-4o-mini
PLAN = {"quality_floor": {"min_quality": 0.9}}
ACT = {"cost_threshold": {"use": DEEPSEEK, "max_usd_per_1k_tokens": 0.001, "otherwise": MINI}}
DEFAULT = {"cost_threshold": {"use": MINI, "max_usd_per_1k_tokens": 1, "otherwise": GPT4O}}
SERVED = {GPT4O: "big", MINI: "mini", DEEPSEEK: "ds"}

AGENT_POLICY = {
    "version": 1,
    "ledger": "memory://",
    "models": MODELS,
    "routes": {
        "agent": [
            {"when": {"metadata.step": "plan"}, **PLAN},
            {"when": {"metadata.step": ["act", "observe"]}, **ACT},
            DEFAULT,
        ]
    },
}


def _policy(when: dict, default: bool = True) -> dict:
    entries = [{"when": when, **PLAN}] + ([DEFAULT] if default else [])
    return {"version": 1, "ledger": "memory://", "models": MODELS, "routes": {"agent": entries}}


def _deployments(group: str = "agent") -> list[dict]:
    return [deployment(group, model, dep_id) for model, dep_id in SERVED.items()]


def _request(**kw) -> RouteRequest:
    return RouteRequest(**{"group": "agent", "prompt_tokens": 100, "output_tokens": 100, **kw})


MESSAGES = [{"role": "user", "content": "Next step, please."}]


# -- matching ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("when,request_kw,why", [
    ({"metadata.step": "plan"}, {"metadata": {"step": "plan"}}, "metadata.step=plan"),
    ({"metadata.step": ["act", "observe"]}, {"metadata": {"step": "observe"}}, "metadata.step=observe"),
    ({"metadata.retry": 2}, {"metadata": {"retry": "2"}}, "metadata.retry=2"),
    ({"metadata.final": True}, {"metadata": {"final": True}}, "metadata.final=true"),
    ({"tags": ["eu", "vip"]}, {"tags": ("free", "vip")}, "tags has vip"),
    ({"tags": "eu"}, {"tags": ("eu",)}, "tags has eu"),
    ({"user": "alice"}, {"user": "alice"}, "user=alice"),
    ({"team": ["ops", "sre"]}, {"team": "sre"}, "team=sre"),
    ({"key": "abc123"}, {"api_key": "abc123"}, "key=abc123"),
    ({"session": "s-1"}, {"session": "s-1"}, "session=s-1"),
    ({"prompt_tokens": {"min": 100, "max": 100}}, {"prompt_tokens": 100}, "prompt_tokens=100 in [100, 100]"),
    ({"prompt_tokens": {"min": 50}}, {"prompt_tokens": 100}, "prompt_tokens=100 in [50, ]"),
    ({"prompt_tokens": {"max": 100}}, {}, "prompt_tokens=100 in [, 100]"),
    ({"metadata.step": "plan", "team": "ops"}, {"metadata": {"step": "plan"}, "team": "ops"}, "metadata.step=plan, team=ops"),
])
def test_a_when_matches_and_says_why(when, request_kw, why):
    assert When.parse(when).check(_request(**request_kw)) == why


@pytest.mark.parametrize("when,request_kw", [
    ({"metadata.step": "plan"}, {"metadata": {"step": "act"}}),
    ({"metadata.step": "plan"}, {}),
    ({"metadata.step": "plan"}, {"metadata": {"step": ["plan"]}}),  # only a scalar is a field's value
    ({"metadata.step": "plan"}, {"metadata": {"step": {"name": "plan"}}}),
    ({"metadata.step": "Plan"}, {"metadata": {"step": "plan"}}),  # exact, case included
    ({"tags": ["eu"]}, {"tags": ("us",)}),
    ({"tags": ["eu"]}, {}),
    ({"team": "ops"}, {"metadata": {"team": "ops"}}),  # the request's metadata is not its identity
    ({"user": "alice"}, {"end_user": "alice"}),  # nor is the body's `user`
    ({"key": "abc123"}, {"metadata": {"api_key": "abc123"}}),
    ({"session": "s-1"}, {"session": "s-2"}),
    ({"prompt_tokens": {"min": 101}}, {"prompt_tokens": 100}),
    ({"prompt_tokens": {"max": 99}}, {"prompt_tokens": 100}),
    ({"metadata.step": "plan", "team": "ops"}, {"metadata": {"step": "plan"}, "team": "dev"}),  # every key must match
])
def test_a_when_does_not_match(when, request_kw):
    assert When.parse(when).check(_request(**request_kw)) is None


class _CountingRequest:
    """A request that records whether its prompt tokens were read."""

    def __init__(self):
        self.read = 0
        self.metadata = {"step": "act"}
        self.tags = ()

    @property
    def prompt_tokens(self):
        self.read += 1
        return 10


def test_prompt_tokens_are_read_only_by_a_prompt_tokens_condition():
    request = _CountingRequest()
    assert When.parse({"metadata.step": "plan"}).check(request) is None
    assert When.parse({"metadata.step": "act", "tags": "eu"}).check(request) is None
    assert request.read == 0
    # and a when whose earlier key already failed does not count either
    assert When.parse({"metadata.step": "plan", "prompt_tokens": {"max": 5}}).check(request) is None
    assert request.read == 0
    assert When.parse({"prompt_tokens": {"max": 5}}).check(request) is None
    assert request.read == 1


@pytest.mark.parametrize("raw,path,words", [
    ({"teem": "ops"}, ("teem",), "unknown condition 'teem'"),
    ({"api_key": "x"}, ("api_key",), "unknown condition"),
    ({"metadata": {"step": "plan"}}, ("metadata",), "one field each"),
    ({"metadata.team": "ops"}, ("metadata.team",), "written by the client"),
    ({"metadata.payg_hints": "x"}, ("metadata.payg_hints",), "not a condition"),
    ({"metadata.a.b": "x"}, ("metadata.a.b",), "field name"),
    ({"metadata.step": []}, ("metadata.step",), "empty list"),
    ({"metadata.step": None}, ("metadata.step",), "got nothing (null)"),
    ({"tags": ["eu", {"x": 1}]}, ("tags", 1), "got dict"),
    ({"team": True}, ("team",), "expected a team id"),
    ({"prompt_tokens": 5}, ("prompt_tokens",), "expected a range"),
    ({"prompt_tokens": {}}, ("prompt_tokens",), "give min, max or both"),
    ({"prompt_tokens": {"min": 10, "max": 5}}, ("prompt_tokens",), "min (10) is greater than max (5)"),
    ({"prompt_tokens": {"min": 1.5}}, ("prompt_tokens", "min"), "whole number"),
    ({"prompt_tokens": {"max": -1}}, ("prompt_tokens", "max"), "expected 0 to"),
    ({"prompt_tokens": {"least": 3}}, ("prompt_tokens", "least"), "unknown field"),
    ({}, (), "empty 'when'"),
    ("plan", (), "expected a mapping"),
])
def test_a_bad_when_names_the_key(raw, path, words):
    with pytest.raises(WhenError) as info:
        When.parse(raw)
    assert info.value.path == path and words in info.value.message, (info.value.path, info.value.message)


def test_a_policy_when_may_not_read_the_fields_litellms_proxy_auth_writes():
    """The condition language (core) names no LiteLLM field; the policy loader passes LiteLLM's
    reserved metadata prefix (``wire.identity``), so ``metadata.user_api_key_team_id`` is refused
    in a policy file as before, while the bare language only reserves the plugin's own fields."""
    from litellm_payg.core.errors import PolicyError

    with pytest.raises(PolicyError) as info:
        load_policy(_policy({"metadata.user_api_key_team_id": "ops"}))
    assert "not a condition" in str(info.value) and "user_api_key_team_id" in str(info.value), str(info.value)
    assert When.parse({"metadata.user_api_key_team_id": "ops"}).conditions[0].values == ("ops",)
    with pytest.raises(WhenError):
        When.parse({"metadata.user_api_key_team_id": "ops"}, reserved_metadata=("user_api_key",))


# -- which rules apply --------------------------------------------------------------------------------

def _engine(policy: dict) -> tuple[Engine, list]:
    engine = Engine(load_policy(policy))
    candidates = [candidate_from_deployment(d, engine.policy.models) for d in _deployments()]
    return engine, candidates


@pytest.mark.parametrize("step,served,note", [
    ("plan", "big", "when metadata.step=plan matched: routes.agent[0].quality_floor"),
    ("act", "ds", "when metadata.step=act matched: routes.agent[1].cost_threshold"),
    ("observe", "ds", "when metadata.step=observe matched: routes.agent[1].cost_threshold"),
    ("review", "mini", "when: no condition matched (metadata.step=review); the unconditioned rules apply: routes.agent[2].cost_threshold"),
    (None, "mini", "when: no condition matched (no metadata.step); the unconditioned rules apply: routes.agent[2].cost_threshold"),
])
def test_matched_conditioned_rules_apply_else_the_unconditioned_ones(step, served, note):
    engine, candidates = _engine(AGENT_POLICY)
    decision = engine.decide(_request(metadata={} if step is None else {"step": step}), candidates)
    assert decision.chosen.deployment_id == served
    assert decision.governed
    assert decision.notes[0] == note
    # only the rules that applied left notes: the default never runs for a matched step
    assert len(decision.notes) == 2


def test_every_matching_conditioned_entry_applies_in_policy_order():
    policy = {
        "version": 1, "ledger": "memory://", "models": MODELS,
        "routes": {"agent": [
            {"when": {"metadata.step": "act"}, **ACT},  # keeps DeepSeek, then gpt-4o-mini
            {"when": {"tags": "strict"}, "quality_floor": {"min_quality": 0.72}},  # drops gpt-4o-mini (0.7)
            DEFAULT,
        ]},
    }
    engine, candidates = _engine(policy)
    both = engine.decide(_request(metadata={"step": "act"}, tags=("strict",)), candidates)
    assert [c.deployment_id for c in both.ordered] == ["ds"]
    assert both.notes[:2] == ["when metadata.step=act matched: routes.agent[0].cost_threshold",
                              "when tags has strict matched: routes.agent[1].quality_floor"]
    only_tag = engine.decide(_request(tags=("strict",)), candidates)
    assert [c.deployment_id for c in only_tag.ordered] == ["ds", "big"]  # quality_floor alone, cheapest first


def test_a_route_of_conditioned_rules_only_leaves_an_unmatched_request_ungoverned():
    """Nothing applies: the request is spread like one of a group without a route (budgets and
    breakers still apply), and the decision says so rather than pretending a rule chose."""
    engine, candidates = _engine(_policy({"metadata.step": "plan"}, default=False))
    decision = engine.decide(_request(metadata={"step": "act"}), candidates)
    assert not decision.governed and len(decision.ordered) == 3
    assert decision.notes == ["when: no condition matched (metadata.step=act); no unconditioned rule: no route rule applies"]
    assert engine.decide(_request(metadata={"step": "plan"}), candidates).governed


def test_a_route_without_when_is_unchanged():
    engine, candidates = _engine({"version": 1, "models": MODELS, "routes": {"agent": [PLAN]}})
    decision = engine.decide(_request(metadata={"step": "x"}), candidates)
    assert decision.notes == ["quality_floor: bar 0.9, cheapest first"] and decision.governed


def test_rules_named_only_under_a_when_are_checked_against_the_router():
    from litellm_payg.core.errors import PolicyError

    policy = _policy({"metadata.step": "act"})
    policy["routes"]["agent"][0] = {"when": {"metadata.step": "act"}, "cost_threshold": {
        "use": "mistral/mistral-large-latest", "max_usd_per_1k_tokens": 1, "otherwise": MINI}}
    engine, candidates = _engine(policy)
    with pytest.raises(PolicyError) as info:
        engine.check_deployments({"agent": candidates})
    assert "routes.agent[0].cost_threshold.use" in str(info.value)


# -- through a LiteLLM Router (mock_response) ----------------------------------------------------------

async def test_when_sends_each_step_to_its_model_through_a_router():
    recorder = Recorder()
    with attached(_deployments(), AGENT_POLICY) as (router, engine):
        engine.pm.register(recorder)
        served = {}
        for step in ("plan", "act", "observe", "review"):
            response = await router.acompletion(model="agent", messages=MESSAGES, metadata={"step": step})
            served[step] = served_by(response)
        unlabelled = await router.acompletion(model="agent", messages=MESSAGES)
    assert served == {"plan": "big", "act": "ds", "observe": "ds", "review": "mini"}
    assert served_by(unlabelled) == "mini"
    notes = [d.notes[0] for d in recorder.decisions]
    assert notes[0] == "when metadata.step=plan matched: routes.agent[0].quality_floor"
    assert notes[1] == "when metadata.step=act matched: routes.agent[1].cost_threshold"
    assert notes[3].startswith("when: no condition matched (metadata.step=review)")


def test_when_routes_the_synchronous_path_too():
    with attached(_deployments(), AGENT_POLICY) as (router, _):
        response = router.completion(model="agent", messages=MESSAGES, metadata={"step": "plan"})
    assert served_by(response) == "big"


async def test_the_decision_log_says_which_when_matched(caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="litellm_payg"):
        with attached(_deployments(), AGENT_POLICY) as (router, _):
            await router.acompletion(model="agent", messages=MESSAGES, metadata={"step": "plan"})
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("payg decision group=agent")]
    assert lines and "when metadata.step=plan matched: routes.agent[0].quality_floor" in lines[-1]


# request kwargs that match the condition, and ones that do not; in Python the calling code's
# metadata user/team/api_key is the identity (there is no key to authenticate)
KEYS = {
    "tags": ({"tags": "vip"}, {"metadata": {"tags": ["vip"]}}, {"metadata": {"tags": ["free"]}}),
    "team": ({"team": "ops"}, {"metadata": {"team": "ops"}}, {"metadata": {"team": "dev"}}),
    "user": ({"user": "alice"}, {"metadata": {"user": "alice"}}, {"user": "alice"}),  # the body's user is the end user
    "key": ({"key": "k-1"}, {"metadata": {"api_key": "k-1"}}, {"metadata": {"api_key": "k-2"}}),
    "session": ({"session": "s-1"}, {"litellm_session_id": "s-1"}, {"litellm_session_id": "s-2"}),
    "session_in_metadata": ({"session": "s-1"}, {"metadata": {"session_id": "s-1"}}, {"metadata": {"session_id": "s-2"}}),
    "long_prompts": ({"prompt_tokens": {"min": 200}}, {"messages": [{"role": "user", "content": "word " * 400}]}, {}),
    "short_prompts": ({"prompt_tokens": {"max": 50}}, {}, {"messages": [{"role": "user", "content": "word " * 400}]}),
}


@pytest.mark.parametrize("name", list(KEYS))
async def test_each_condition_key_routes_through_a_router(name):
    when, matching, other = KEYS[name]
    with attached(_deployments(), _policy(when)) as (router, _):
        hit = await router.acompletion(**{"model": "agent", "messages": MESSAGES, **matching})
        miss = await router.acompletion(**{"model": "agent", "messages": MESSAGES, **other})
    assert served_by(hit) == "big", f"{name}: {matching} should match {when}"
    assert served_by(miss) == "mini", f"{name}: {other} should not match {when}"


# -- explain ----------------------------------------------------------------------------------------

def _policy_file(tmp_path, policy: dict) -> str:
    import yaml

    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(policy, sort_keys=False))
    return str(path)


def test_explain_shows_which_when_matched(tmp_path, capsys):
    path = _policy_file(tmp_path, AGENT_POLICY)
    assert cli(["explain", path, "--model", "agent", "--prompt-tokens", "100", "--metadata", "step=plan"]) == 0
    out = capsys.readouterr().out
    assert "when metadata.step=plan matched: routes.agent[0].quality_floor" in out
    assert "=> gpt-4o (gpt-4o)" in out

    assert cli(["explain", path, "--model", "agent", "--prompt-tokens", "100", "--metadata", "step=review", "--json"]) == 0
    decision = json.loads(capsys.readouterr().out)
    assert decision["chosen"] == MINI
    assert decision["notes"][0] == (
        "when: no condition matched (metadata.step=review); the unconditioned rules apply: routes.agent[2].cost_threshold")


def test_explain_takes_team_key_and_session(tmp_path, capsys):
    path = _policy_file(tmp_path, _policy({"team": "ops", "key": "h1", "session": "s-1"}))
    args = ["explain", path, "--model", "agent", "--prompt-tokens", "100"]
    assert cli(args + ["--team", "ops", "--key", "h1", "--session", "s-1"]) == 0
    assert "when team=ops, key=h1, session=s-1 matched" in capsys.readouterr().out
    assert cli(args + ["--team", "ops", "--key", "h1"]) == 0
    assert "when: no condition matched (team=ops; key=h1; no session)" in capsys.readouterr().out


def test_explain_says_when_no_rule_applies(tmp_path, capsys):
    path = _policy_file(tmp_path, _policy({"metadata.step": "plan"}, default=False))
    assert cli(["explain", path, "--model", "agent", "--prompt-tokens", "100", "--metadata", "step=act"]) == 0
    out = capsys.readouterr().out
    assert "no route rule applies" in out and "CHOSEN" not in out


def test_explain_refuses_a_malformed_metadata_argument(tmp_path, capsys):
    path = _policy_file(tmp_path, AGENT_POLICY)
    assert cli(["explain", path, "--model", "agent", "--prompt-tokens", "100", "--metadata", "step"]) == 2
    assert "--metadata: expected FIELD=VALUE" in capsys.readouterr().err


def test_when_cannot_name_a_plugin_rule_type():
    import litellm_payg
    from litellm_payg.core.errors import PluginError
    from litellm_payg.plugins import make_plugin_manager, rule_types
    from litellm_payg.rules import Rule, RuleOptions

    class Shadow(Rule):
        name = "when"
        Options = RuleOptions

    class Plugin:
        @litellm_payg.hookimpl
        def payg_register_rules(self, register):
            register(Shadow)

    pm = make_plugin_manager()
    pm.register(Plugin())
    with pytest.raises(PluginError, match="'when' cannot name a rule type"):
        rule_types(pm)
