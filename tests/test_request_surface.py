"""The cap holds by construction, through LiteLLM's real Router: the reservation is an upper bound of
what the provider is sent and can bill, and a governed group accepts only known request fields.

Each test is an attack a hostile client made against a tiny per-user cap (issue #19) with a
provider that bills what it receives: a field LiteLLM sends the provider in a form the reservation
did not read (``extra_body``, ``deployment_id``, ``max_completion_tokens`` next to ``max_tokens``,
legacy ``functions``, per-character speech). It is either refused with a 400 naming the field, or
reserved at a bound the test checks against the body LiteLLM actually sent the provider (the
stand-in records it; ``log_pre_api_call`` shows LiteLLM's ``complete_input_dict``).
"""

from __future__ import annotations

import json

import litellm
import pytest
from litellm.integrations.custom_logger import CustomLogger
from routing_helpers import DEEPSEEK, attached, deployment, served_by, settled
from standin_helpers import ROUTER

from litellm_payg.adapter.ingress import InvalidRequest
from litellm_payg.adapter.litellm_errors import BudgetExceeded
from litellm_payg.core.errors import PolicyError
from litellm_payg.wire.request_fields import FIELDS, Effect
from litellm_payg.policy.load import load_policy
from standin import StandIn

MESSAGES = [{"role": "user", "content": "Please tell me what the status of my order number 12345 is today."}]


MODELS = (DEEPSEEK, "openai/gpt-4o-mini", "openai/o3-mini", "openai/tts-1", "openai/gpt-4o-mini-tts", "azure/gpt-4o-mini",
          "openai/text-embedding-3-small")


def _policy(budgets=(), group="chat", **extra):
    return {"version": 1, "ledger": "memory://", "budgets": list(budgets),
            "routes": {group: [{"quality_floor": {"min_quality": 0}}]},
            "models": {model: {"quality": 1} for model in MODELS}, **extra}


def _cap(limit_usd):
    return [{"scope": "global", "window": "day", "limit_usd": limit_usd, "on_exceed": "block"}]


class SentBodies(CustomLogger):
    """LiteLLM's final provider body of each call (``log_pre_api_call``'s ``complete_input_dict``)."""

    def __init__(self):
        super().__init__()
        self.bodies: list[dict] = []

    def log_pre_api_call(self, model, messages, kwargs):
        body = (kwargs.get("additional_args") or {}).get("complete_input_dict")
        if isinstance(body, dict):
            self.bodies.append(body)


@pytest.fixture
def sent():
    logger = SentBodies()
    litellm.callbacks.append(logger)
    try:
        yield logger
    finally:
        litellm.callbacks.remove(logger)


def _estimates(engine):
    """Every admission's (request, candidate, reservation) from now on."""
    seen = []
    original = engine.spend.admit

    def admit(request, *args, **kwargs):
        admission = original(request, *args, **kwargs)
        seen.append((request, admission.candidate, admission.estimate()))
        return admission

    engine.spend.admit = admit
    return seen


# -- item 2: a closed request surface -------------------------------------------------------------

@pytest.mark.parametrize("extra_body,named", [
    ({"max_tokens": 5000}, "extra_body.max_tokens"),
    ({"n": 8}, "extra_body.n"),
    ({"messages": [{"role": "user", "content": "word " * 5000}]}, "extra_body.messages"),
    ({"stream": True}, "extra_body.stream"),
    ({"model": "gpt-4o"}, "extra_body.model"),
    ({"max_completion_tokens": 5000}, "extra_body.max_completion_tokens"),
    ({"anything": 1}, "extra_body.anything"),
])
async def test_extra_body_is_refused_naming_the_field(extra_body, named):
    with attached([deployment("chat", DEEPSEEK, "ds")], _policy(_cap(1))) as (router, engine):
        with pytest.raises(InvalidRequest) as info:
            await router.acompletion(model="chat", messages=MESSAGES, max_tokens=5, extra_body=extra_body)
        assert info.value.status_code == 400 and repr(named) in str(info.value), str(info.value)
        assert engine.spend.ledger.records() == [] and engine.spend.ledger.open_reservations() == 0


async def test_extra_body_input_on_embeddings_is_refused():
    model_list = [deployment("emb", "openai/text-embedding-3-small", "e1", mock=None)]
    with attached(model_list, _policy(_cap(1), group="emb")) as (router, engine):
        with pytest.raises(InvalidRequest) as info:
            await router.aembedding(model="emb", input="hi", extra_body={"input": ["word " * 5000] * 50})
        assert "'extra_body.input'" in str(info.value)
        assert engine.spend.ledger.open_reservations() == 0


async def test_extra_body_that_is_not_an_object_is_a_400():
    with attached([deployment("chat", DEEPSEEK, "ds")], _policy()) as (router, engine):
        with pytest.raises(InvalidRequest) as info:
            await router.acompletion(model="chat", messages=MESSAGES, extra_body="text")
        assert info.value.status_code == 400 and "'extra_body'" in str(info.value)


AZURE = {"api_base": "https://example-resource.openai.azure.com", "api_version": "2024-10-21"}


@pytest.mark.parametrize("field,value", [
    ("deployment_id", "gpt-4o-expensive"), ("api_version", "2025-01-01-preview"), ("custom_llm_provider", "openai"),
    ("azure_ad_token", "t"), ("base_model", "azure/o1"), ("input_cost_per_token", 0.0),
])
async def test_fields_that_reroute_or_reprice_are_refused(field, value):
    """``deployment_id`` on an Azure group becomes the Azure deployment in the URL: the call would
    run on another (dearer) deployment at the cheap one's reservation."""
    model_list = [deployment("cheap", "azure/gpt-4o-mini", "az", **AZURE)]
    with attached(model_list, _policy(_cap(1), group="cheap")) as (router, engine):
        with pytest.raises(InvalidRequest) as info:
            await router.acompletion(model="cheap", messages=MESSAGES, max_tokens=5, **{field: value})
        assert repr(field) in str(info.value), str(info.value)
        assert engine.spend.ledger.open_reservations() == 0


async def test_unknown_fields_are_refused_unless_the_policy_allows_them():
    with attached([deployment("chat", DEEPSEEK, "ds")], _policy()) as (router, engine):
        with pytest.raises(InvalidRequest) as info:
            await router.acompletion(model="chat", messages=MESSAGES, frobnicate=1)
        assert "'frobnicate'" in str(info.value)
        with pytest.raises(InvalidRequest) as info:
            await router.acompletion(model="chat", messages=MESSAGES, service_tier="priority")
        assert "'service_tier'" in str(info.value) and "cannot bound" in str(info.value)
    allowed = _policy(requests={"allow_fields": ["frobnicate", "service_tier", "extra_body.vendor_flag"]})
    with attached([deployment("chat", DEEPSEEK, "ds")], allowed) as (router, engine):
        response = await router.acompletion(model="chat", messages=MESSAGES, frobnicate=1, service_tier="priority",
                                            extra_body={"vendor_flag": True})
        assert served_by(response) == "ds"
        await settled(engine)


def test_allow_fields_are_checked_with_file_and_line(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text("version: 1\nrequests:\n  allow_fields:\n    - vendor_flag\n    - deployment_id\n"
                    "    - extra_body.max_tokens\n  unbounded_reserve_usd: -1\n")
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    text = str(info.value)
    assert f"{path}:5: requests.allow_fields[1]" in text and "'deployment_id' cannot be allowed" in text, text
    assert f"{path}:6: requests.allow_fields[2]" in text and "'extra_body.max_tokens' cannot be allowed" in text, text
    assert "requests.unbounded_reserve_usd" in text


async def test_ordinary_sdk_requests_still_pass():
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}]
    with attached([deployment("chat", DEEPSEEK, "ds")], _policy(_cap(1))) as (router, engine):
        response = await router.acompletion(
            model="chat", messages=MESSAGES, max_tokens=20, user="end-user-1", seed=7, temperature=0.2, top_p=0.9,
            logprobs=True, top_logprobs=2, response_format={"type": "json_object"}, tools=tools, tool_choice="auto",
            parallel_tool_calls=False, stop=["\n\n"], presence_penalty=0.1, frequency_penalty=0.1,
            extra_headers={"x-trace": "1"}, metadata={"session": "s"}, tags=["support"], num_retries=0, timeout=30,
        )
        assert served_by(response) == "ds"
        stream = await router.acompletion(model="chat", messages=MESSAGES, max_tokens=20, stream=True,
                                          stream_options={"include_usage": True})
        async for _ in stream:
            pass
        await settled(engine)
        assert len(engine.spend.ledger.records()) == 2


def test_the_table_knows_every_openai_chat_parameter_litellm_lists():
    """A LiteLLM release that adds a chat parameter fails here until the table says what it does."""
    from litellm.constants import OPENAI_CHAT_COMPLETION_PARAMS

    missing = sorted(set(OPENAI_CHAT_COMPLETION_PARAMS) - set(FIELDS))
    assert missing == [], f"add these to litellm_payg/wire/request_fields.py FIELDS with their effect: {missing}"
    assert FIELDS["deployment_id"] is Effect.REROUTE and FIELDS["functions"] is Effect.PROMPT


# -- item 1: the reservation bounds what LiteLLM sends ---------------------------------------------

async def test_o_series_max_completion_tokens_next_to_max_tokens_is_reserved(sent):
    """LiteLLM sends an o-series model only ``max_completion_tokens``: ``max_tokens: 1`` next to it
    must not be what the reservation reads."""
    with StandIn() as s:
        model_list = [{"model_name": "chat", "model_info": {"id": "o3"},
                       "litellm_params": {"model": "openai/o3-mini", "api_key": "sk-test", "api_base": s.url("openai")}}]
        with attached(model_list, _policy(_cap(10)), **ROUTER) as (router, engine):
            seen = _estimates(engine)
            await router.acompletion(model="chat", messages=MESSAGES, max_tokens=1, max_completion_tokens=5000)
            await settled(engine)
        body = s.requests("openai")[-1].body
    [(request, candidate, reserved)] = seen
    sent_cap = max(body.get("max_completion_tokens") or 0, body.get("max_tokens") or 0)
    assert sent_cap == 5000 and sent.bodies and sent.bodies[-1].get("max_completion_tokens") == 5000
    assert request.max_tokens >= sent_cap
    assert reserved >= sent_cap * candidate.output_usd_per_token


async def test_legacy_functions_are_counted_in_the_prompt(sent):
    words = " ".join(f"field{i}" for i in range(20_000))
    functions = [{"name": "lookup", "description": words, "parameters": {"type": "object", "properties": {}}}]
    with StandIn() as s:
        model_list = [{"model_name": "chat", "model_info": {"id": "mini"},
                       "litellm_params": {"model": "openai/gpt-4o-mini", "api_key": "sk-test", "api_base": s.url("openai")}}]
        with attached(model_list, _policy(_cap(10)), **ROUTER) as (router, engine):
            seen = _estimates(engine)
            await router.acompletion(model="chat", messages=MESSAGES, max_tokens=5, functions=functions)
            await settled(engine)
        body = s.requests("openai")[-1].body
    [(request, candidate, reserved)] = seen
    sent_functions = body.get("functions") or body.get("tools")
    assert sent_functions, body.keys()
    schema_tokens = litellm.token_counter(model="gpt-4o-mini", text=json.dumps(sent_functions))
    assert request.prompt_tokens >= schema_tokens
    assert reserved >= schema_tokens * candidate.input_usd_per_token


async def test_no_output_cap_reserves_the_models_maximum(sent):
    """Without a cap the provider may produce the model's maximum output (16,384 tokens for
    gpt-4o-mini), not the policy's 4,096."""
    with StandIn() as s:
        model_list = [{"model_name": "chat", "model_info": {"id": "mini"},
                       "litellm_params": {"model": "openai/gpt-4o-mini", "api_key": "sk-test", "api_base": s.url("openai")}}]
        with attached(model_list, _policy(_cap(10)), **ROUTER) as (router, engine):
            seen = _estimates(engine)
            await router.acompletion(model="chat", messages=MESSAGES)
            await settled(engine)
        body = s.requests("openai")[-1].body
    [(request, candidate, reserved)] = seen
    assert "max_tokens" not in body and "max_completion_tokens" not in body
    assert reserved >= litellm.model_cost["gpt-4o-mini"]["max_output_tokens"] * candidate.output_usd_per_token


async def test_max_tokens_on_the_responses_api_is_not_a_cap():
    """LiteLLM drops ``max_tokens`` on ``/v1/responses`` (only ``max_output_tokens`` caps there):
    reserving on it would let an uncapped answer through a reservation of one token."""
    with attached([deployment("chat", "openai/gpt-4o-mini", "mini")], _policy(_cap(10))) as (router, engine):
        seen = _estimates(engine)
        await router.aresponses(model="chat", input="hello", max_tokens=1)
        await router.aresponses(model="chat", input="hello", max_output_tokens=7)
        await settled(engine)
    assert [request.max_tokens for request, _, _ in seen] == [None, 7]
    assert seen[0][2] >= 16_384 * seen[0][1].output_usd_per_token


SPEECH_TEXT = "Your order 12345 has shipped and will arrive on Tuesday. " * 40  # 2,360 characters


async def test_speech_is_reserved_per_character_not_at_zero():
    """tts-1 is priced per character ($15 per 1M): a $0 reservation let four concurrent requests
    spend 518x a per-user cap. Reserved per character, a request dearer than the cap is refused
    before it is sent."""
    per_char = litellm.model_cost["tts-1"]["input_cost_per_character"]
    cost = len(SPEECH_TEXT) * per_char
    model_list = [{"model_name": "voice", "model_info": {"id": "tts"},
                   "litellm_params": {"model": "openai/tts-1", "api_key": "sk-test", "api_base": "http://127.0.0.1:9/v1"}}]
    # no route (a per-character model has no per-token price to compare): budgets alone govern it
    with attached(model_list, {**_policy(_cap(cost / 2)), "routes": {}}, **ROUTER) as (router, engine):
        with pytest.raises(BudgetExceeded):
            await router.aspeech(model="voice", input=SPEECH_TEXT, voice="alloy")
        assert engine.spend.ledger.open_reservations() == 0
    with attached(model_list, {**_policy(_cap(cost * 2)), "routes": {}}, **ROUTER) as (router, engine):
        seen = _estimates(engine)
        with pytest.raises(Exception):  # noqa: B017 - nothing listens there; the reservation is what counts
            await router.aspeech(model="voice", input=SPEECH_TEXT, voice="alloy")
    assert seen and seen[0][2] == pytest.approx(cost)


async def test_a_request_the_plugin_cannot_bound_is_refused_or_reserved_at_the_policys_ceiling():
    """gpt-4o-mini-tts bills audio output tokens no request field bounds."""
    model_list = [{"model_name": "voice", "model_info": {"id": "tts"},
                   "litellm_params": {"model": "openai/gpt-4o-mini-tts", "api_key": "sk-test",
                                      "api_base": "http://127.0.0.1:9/v1"}}]
    with attached(model_list, _policy(_cap(1), group="voice"), **ROUTER) as (router, engine):
        with pytest.raises(InvalidRequest) as info:
            await router.aspeech(model="voice", input="hello", voice="alloy")
        assert info.value.status_code == 400 and "cannot bound the cost" in str(info.value)
        assert "unbounded_reserve_usd" in str(info.value)
    ceiling = _policy(_cap(1), group="voice", requests={"unbounded_reserve_usd": 0.25})
    with attached(model_list, ceiling, **ROUTER) as (router, engine):
        seen = _estimates(engine)
        with pytest.raises(Exception):  # noqa: B017 - nothing listens there
            await router.aspeech(model="voice", input="hello", voice="alloy")
    assert seen and seen[0][2] == 0.25


@pytest.mark.parametrize("model,provider", [
    ("gpt-4o-mini", "openai"), ("o3-mini", "openai"), ("gpt-5", "openai"), ("o3-mini", "azure"),
    ("claude-haiku-4-5", "anthropic"), ("gemini-2.5-flash", "gemini"), ("gemini-2.5-flash", "vertex_ai"),
    ("mistral-small-latest", "mistral"), ("deepseek-chat", "deepseek"), ("openai/gpt-oss-120b", "groq"),
    ("anthropic.claude-3-5-sonnet-20240620-v1:0", "bedrock"),
])
@pytest.mark.parametrize("caps", [
    {"max_tokens": 1, "max_completion_tokens": 5000}, {"max_tokens": 5000, "max_completion_tokens": 1},
    {"max_tokens": 7}, {"max_completion_tokens": 7},
])
def test_the_output_cap_bounds_what_litellm_maps_for_each_provider(model, provider, caps):
    """LiteLLM's own mapping of the chat cap fields for the provider (``get_optional_params``, what
    it sends) never exceeds the cap the reservation reads."""
    from litellm_payg.wire.request_checks import output_cap

    sent = litellm.get_optional_params(model=model, custom_llm_provider=provider, **caps)
    sent_caps = [v for k, v in sent.items() if k in ("max_tokens", "max_completion_tokens", "max_output_tokens",
                                                     "maxTokens", "max_new_tokens")]
    assert sent_caps, sent
    assert max(sent_caps) <= output_cap(caps, "completion")


@pytest.mark.parametrize("tool,named", [
    ({"type": "web_search_preview"}, "tools.web_search_preview"),
    ({"type": "code_interpreter", "container": {"type": "auto"}}, "tools.code_interpreter"),
    ({"type": "web_search_20250305", "name": "web_search"}, "tools.web_search_20250305"),
    ({"googleSearch": {}}, "tools.googleSearch"),
])
async def test_tools_the_provider_bills_per_call_are_refused_unless_allowed(tool, named):
    with attached([deployment("chat", "openai/gpt-4o-mini", "mini")], _policy(_cap(1))) as (router, engine):
        with pytest.raises(InvalidRequest) as info:
            await router.aresponses(model="chat", input="hello", max_output_tokens=5, tools=[tool])
        assert "'tools[0].type'" in str(info.value) and named in str(info.value), str(info.value)
    kind = named.split(".", 1)[1]
    allowed = _policy(_cap(1), requests={"allow_fields": [f"tools.{kind}"]})
    with attached([deployment("chat", "openai/gpt-4o-mini", "mini")], allowed) as (router, engine):
        engine.adapter._refuse_unknown_fields({"model": "chat", "tools": [tool]})  # accepted: no raise


@pytest.mark.parametrize("body", [
    {"contents": [], "generationConfig": {"maxOutputTokens": 300, "candidateCount": 4}},  # the wire (proxy)
    {"contents": [], "config": {"max_output_tokens": 300, "candidate_count": 4}},  # Router.agenerate_content
    {"contents": [], "generationConfig": {"max_output_tokens": 300, "candidate_count": 4}},  # what LiteLLM sends
])
def test_gemini_generation_config_caps_and_multiplies_the_output_bound(body):
    from litellm_payg.wire.request_checks import choices, output_cap

    assert (output_cap(body, "generate_content"), choices(body)) == (300, 4)
    assert output_cap({"contents": []}, "generate_content") is None  # the model's maximum then


async def test_a_long_prompt_is_reserved_at_its_tier_price():
    """gemini-2.5-pro bills every token of a prompt above 200k tokens at $2.50/M in and $15/M out
    (not $1.25/$10): the reservation covers LiteLLM's own cost of that usage."""
    from litellm_payg.core.decision import RouteRequest

    with attached([deployment("chat", "gemini/gemini-2.5-pro", "pro")], _policy(_cap(100))) as (router, engine):
        candidate = engine.adapter._candidates["pro"]
        for prompt in (1_000, 250_000):
            request = RouteRequest("chat", prompt, 100, max_tokens=100)
            reserved = engine.spend.reserve_estimate(request, candidate)
            billed = sum(litellm.cost_per_token(model="gemini/gemini-2.5-pro", prompt_tokens=prompt, completion_tokens=100))
            assert reserved >= billed * (1 - 1e-9), (prompt, reserved, billed)
        assert reserved == pytest.approx(250_000 * 2.5e-06 + 100 * 1.5e-05)


async def test_a_prompt_marked_for_caching_is_reserved_at_the_cache_write_price():
    """Anthropic bills a prompt written to its cache at up to 2x the input price (a one-hour cache)."""
    cached = [{"role": "user", "content": [{"type": "text", "text": "word " * 2000,
                                            "cache_control": {"type": "ephemeral", "ttl": "1h"}}]}]
    model_list = [deployment("chat", "anthropic/claude-sonnet-4-5", "son")]
    policy = _policy(_cap(100), models={"anthropic/claude-sonnet-4-5": {"quality": 1}})
    with attached(model_list, policy) as (router, engine):
        seen = _estimates(engine)
        await router.acompletion(model="chat", messages=cached, max_tokens=10)
        await router.acompletion(model="chat", messages=[{"role": "user", "content": "word " * 2000}], max_tokens=10)
        await settled(engine)
    (marked, candidate, reserved), (plain, _, plain_reserved) = seen
    assert marked.cache_writes and not plain.cache_writes
    write_price = litellm.model_cost["claude-sonnet-4-5"]["cache_creation_input_token_cost_above_1hr"]
    assert reserved >= marked.prompt_tokens * write_price + 10 * candidate.output_usd_per_token
    assert plain_reserved < reserved


def test_the_proxys_copy_of_the_url_api_version_is_not_a_client_field():
    from litellm_payg.wire.request_fields import unknown_field

    url = "http://127.0.0.1:4000/openai/deployments/cheap/chat/completions?api-version=2024-10-21"
    data = {"model": "cheap", "messages": MESSAGES, "api_version": "2024-10-21", "proxy_server_request": {"url": url}}
    assert unknown_field(data) is None
    assert unknown_field({**data, "api_version": "2025-01-01-preview"}).field == "api_version"
    assert unknown_field({"model": "cheap", "api_version": "2024-10-21"}).field == "api_version"


def test_simulate_says_why_a_budget_cannot_reserve_on_an_unpriced_deployment():
    from litellm_payg.core.decision import Candidate
    from litellm_payg.tools.simulate import SimulationError, parse_traffic, simulate

    unpriced = Candidate("ft", "my-org/fine-tune", "openai", "chat", None, None)
    traffic = parse_traffic(json.dumps({"group": "chat", "prompt_tokens": 10, "completion_tokens": 5}), "t")
    policy = load_policy({**_policy(_cap(1)), "routes": {}})
    with pytest.raises(SimulationError, match="cannot bound the cost of this request on deployment ft"):
        simulate(policy, traffic, candidates_by_group={"chat": [unpriced]})


def _sent_cap_and_n(provider: str, body: dict) -> tuple[int | None, int]:
    """The output cap and the number of answers in a provider body LiteLLM sent."""
    if provider == "gemini":
        config = body.get("generationConfig") or {}  # LiteLLM writes Gemini's snake_case spelling
        return (config.get("maxOutputTokens") or config.get("max_output_tokens"),
                config.get("candidateCount") or config.get("candidate_count") or 1)
    caps = [body.get(name) for name in ("max_tokens", "max_completion_tokens") if body.get(name) is not None]
    return (max(caps) if caps else None), body.get("n") or 1


TOOLS = [{"type": "function", "function": {"name": "lookup", "description": "find an order " * 50,
                                           "parameters": {"type": "object", "properties": {"id": {"type": "string"}}}}}]


@pytest.mark.parametrize("provider", ["openai", "deepseek", "anthropic", "gemini"])
@pytest.mark.parametrize("fields", [
    {}, {"max_tokens": 40}, {"max_completion_tokens": 40}, {"max_tokens": 1, "max_completion_tokens": 60},
    {"n": 3, "max_tokens": 20}, {"tools": TOOLS, "max_tokens": 30},
])
async def test_the_reservation_bounds_what_litellm_sent(sent, provider, fields):
    """Differential: for each request, the reservation's inputs are upper bounds of LiteLLM's final
    provider body (``log_pre_api_call``'s ``complete_input_dict``): its output cap (or the model's
    maximum when it sent none), its number of answers, and, for OpenAI-style bodies, the prompt
    tokens of the messages and tools it sent."""
    from standin_helpers import STANDIN_MODELS, standin_deployment

    if provider == "anthropic" and "n" in fields:
        pytest.skip("Anthropic has no n")
    with StandIn() as s:
        model_list = [standin_deployment(s, provider)]
        policy = _policy(_cap(10), models={STANDIN_MODELS[provider]: {"quality": 1}})
        with attached(model_list, policy, **ROUTER) as (router, engine):
            seen = _estimates(engine)
            await router.acompletion(model="chat", messages=MESSAGES, **fields)
            await settled(engine)
    [(request, candidate, reserved)] = seen
    body = sent.bodies[-1]
    sent_cap, sent_n = _sent_cap_and_n(provider, body)
    bound_cap = request.max_tokens or candidate.max_output_tokens
    assert sent_cap is None or bound_cap >= sent_cap, (body, request)
    assert request.choices >= sent_n
    if provider in ("openai", "deepseek"):
        sent_prompt = litellm.token_counter(model=candidate.model, messages=body["messages"], tools=body.get("tools"))
        assert request.prompt_tokens >= sent_prompt
    out_tokens = (sent_cap or candidate.max_output_tokens) * sent_n
    assert reserved >= request.prompt_tokens * candidate.input_usd_per_token + out_tokens * candidate.output_usd_per_token
