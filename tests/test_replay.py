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


# -- strict matching: a recording answers only the request it recorded ----------------------------


def _cassette_with(tmp_path: Path, index: int, **body_changes) -> Path:
    """The sample cassette with interaction ``index``'s recorded request body changed."""
    data = yaml.safe_load((CASSETTES / "support-week-01.yaml").read_text())
    request = data["interactions"][index]["request"]
    request["body"] = json.dumps({**json.loads(request["body"]), **body_changes})
    path = tmp_path / "support-week-01.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_strict_replay_refuses_a_recording_of_another_model_and_names_it(tmp_path):
    # Request #2 (bob's) was recorded on deepseek-reasoner, not on the deepseek-chat policy v2 picks:
    # strict (the default) does not answer it with that recording; the row names it and the field.
    cassette = _cassette_with(tmp_path, 2, model="deepseek-reasoner")
    report = replay(SAMPLE / "policy_v2.yaml", cassette, config=CONFIG, group="chat")
    failed = {r.index: r.error for r in report.rows if r.error}
    assert set(failed) == {2}, report.table()
    assert failed[2].startswith("no recording in the cassette matches this request; the closest differs in "
                                'model: sent "deepseek-chat", recorded "deepseek-reasoner" (recording '
                                "support-week-01.yaml#2)\n")  # the table's line
    assert 'model: sent "deepseek-chat", recorded "deepseek-reasoner" (recording support-week-01.yaml#2)' in failed[2]
    assert 'recorded "deepseek-reasoner" (recording support-week-01.yaml#2)' in report.table()
    assert all(r.exact for r in report.rows if not r.error)
    assert len(report.records) == 3  # the refused request is not charged

    loose = replay(SAMPLE / "policy_v2.yaml", cassette, config=CONFIG, group="chat", match_on="endpoint")
    assert not loose.errors and [r.exact for r in loose.rows] == [True, False, True, True]


def test_strict_replay_sends_the_recorded_parameters_again(tmp_path):
    # A recorded temperature is part of the request: replay sends it, so strict matching still finds
    # the request's own recordings (both deployments' copies carry it).
    data = yaml.safe_load((CASSETTES / "support-week-01.yaml").read_text())
    for it in data["interactions"]:
        it["request"]["body"] = json.dumps({**json.loads(it["request"]["body"]), "temperature": 0.2})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(data))
    report = replay(SAMPLE / "policy_v1.yaml", tmp_path / "c.yaml", config=CONFIG)
    assert not report.errors and all(r.exact for r in report.rows) and len(report.rows) == 4


def test_cli_match_on(capsys, tmp_path):
    cassette = _cassette_with(tmp_path, 2, model="deepseek-reasoner")
    assert cli.main(["replay", str(SAMPLE / "policy_v2.yaml"), str(cassette), "--config", str(CONFIG), "--group", "chat", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["errors"] == 1
    assert cli.main(["replay", str(SAMPLE / "policy_v2.yaml"), str(cassette), "--config", str(CONFIG), "--group", "chat", "--json",
                     "--match-on", "endpoint"]) == 0
    assert json.loads(capsys.readouterr().out)["errors"] == 0
    assert cli.main(["replay", str(SAMPLE / "policy_v2.yaml"), str(cassette), "--config", str(CONFIG), "--group", "chat",
                     "--match-on", "metod,host"]) == 2
    assert "unknown matcher 'metod'" in capsys.readouterr().err


class _Req:
    def __init__(self, body, uri="https://api.deepseek.com/beta/chat/completions"):
        self.method, self.uri = "POST", uri
        self.body = body if isinstance(body, (bytes, str)) else json.dumps(body).encode()


def _differs(sent, recorded, uri="https://api.deepseek.com/beta/chat/completions") -> dict[str, str]:
    from litellm_payg.tools.cassette_match import MATCHERS

    out = {}
    for name, match in MATCHERS.items():
        try:
            match(_Req(sent, uri), _Req(recorded, uri))
        except AssertionError as exc:
            out[name] = str(exc)
    return out


def test_answer_fields_normalise_what_does_not_change_an_answer():
    msgs = [{"role": "user", "content": "hi"}]
    recorded = {"model": "m", "messages": msgs, "max_tokens": 5}
    # key order, None-valued keys, text parts, max_completion_tokens, user/metadata/stream_options
    assert _differs('{"max_tokens": 5, "messages": [{"content": "hi", "role": "user"}], "model": "m"}', recorded) == {}
    assert _differs({"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}],
                                                 "name": None}], "max_completion_tokens": 5, "user": "u",
                     "metadata": {"a": 1}, "stream_options": None, "temperature": None}, recorded) == {}
    # what does change an answer
    assert set(_differs({**recorded, "max_tokens": 6}, recorded)) == {"max_tokens"}
    assert set(_differs({**recorded, "stream": True}, recorded)) == {"stream"}
    assert _differs({**recorded, "temperature": 0.5}, recorded) == {
        "params": "params.temperature: sent 0.5, recorded <absent>"}
    assert _differs({**recorded, "tools": [{"type": "function", "function": {"name": "f"}}]}, recorded)["params"]\
        .startswith("params.tools: sent [")
    assert _differs({**recorded, "messages": msgs * 2}, recorded) == {"messages": "messages.length: sent 2, recorded 1"}
    # Anthropic system and Gemini contents read into chat form; Gemini's model is in the path
    anth = "https://api.anthropic.com/v1/messages"
    assert _differs({"model": "c", "system": [{"type": "text", "text": "be brief"}], "messages": msgs, "max_tokens": 9},
                    {"model": "c", "system": "be brief", "messages": msgs, "max_tokens": 9}, anth) == {}
    gem = "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:generateContent"
    assert _differs({"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "generationConfig": {"maxOutputTokens": 9}},
                    {"contents": [{"role": "user", "parts": [{"text": "ho"}]}], "generationConfig": {"maxOutputTokens": 9,
                                                                                     "temperature": 1}}, gem) == {
        "messages": 'messages[0].content: sent "hi", recorded "ho"', "params": "params.temperature: sent <absent>, recorded 1"}
    # a body that is not JSON is compared whole
    assert set(_differs(b"a=1", b"a=2")) == {"params"} and _differs(b"a=1", b"a=1") == {}


def test_resolve_match_on():
    from litellm_payg.tools.cassette_match import ENDPOINT_MATCH_ON, STRICT_MATCH_ON, resolve_match_on

    assert resolve_match_on(None) == resolve_match_on("strict") == STRICT_MATCH_ON
    assert resolve_match_on("endpoint") == ENDPOINT_MATCH_ON
    assert resolve_match_on("method, host,path,messages") == ("method", "host", "path", "messages")
    with pytest.raises(ValueError, match="unknown matcher 'mesages'"):
        resolve_match_on(["method", "mesages"])
    with pytest.raises(ReplayError, match="unknown matcher"):
        replay(SAMPLE / "policy_v2.yaml", CASSETTES, config=CONFIG, match_on="loose")


@pytest.mark.parametrize("recording,provider,strict_error", [
    ("openai/chat-cached-nonstream-gpt41.yaml", "openai", None),
    # a pydantic-ai client's Anthropic body (system and content as blocks with cache_control) against
    # the body LiteLLM builds from the same chat messages: the same request
    ("anthropic/messages-prompt-cache-write-then-read-gzip.yaml", "anthropic", None),
    ("mistral/chat-nonstream-gzip.yaml", "mistral", None),
    # recorded with Gemini's code-execution tool, which replay does not send again: named, not answered
    ("gemini/generateContent-thinking-tokens.yaml", "gemini",
     'params.tools: sent <absent>, recorded [{"codeExecution": {}}] (recording generateContent-thinking-tokens.yaml#0)'),
])
def test_strict_replay_of_real_provider_recordings(recording, provider, strict_error):
    from shared_recordings import RECORDINGS, require_recordings

    require_recordings()
    path = RECORDINGS / recording
    model = load_requests([path])[0].model
    config = {"model_list": [{"model_name": "g", "litellm_params": {"model": f"{provider}/{model}"}}]}
    policy = {"version": 1, "routes": {}}
    strict = replay(policy, path, config=config, group="g")
    loose = replay(policy, path, config=config, group="g", match_on="endpoint")
    assert not loose.errors
    if strict_error is None:
        assert not strict.errors and strict.total_usd == pytest.approx(loose.total_usd)
        assert [r.prompt_tokens for r in strict.rows] == [r.prompt_tokens for r in loose.rows]
    else:
        assert len(strict.errors) == 1 and strict_error in strict.errors[0].error and not strict.records
