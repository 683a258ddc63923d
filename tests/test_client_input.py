"""Regressions for what the proxy fuzzer (``tests/test_fuzz_proxy.py``, issue #19 item 7) found,
each at the Router, where it is fast: a client's bad input is a 400 naming the field before
anything is reserved, not a 500 from inside LiteLLM after the reservation; a request LiteLLM
rejects after the pick leaves no reservation open; an attempt that timed out after the provider
received it is charged its bound."""

from __future__ import annotations

import litellm
import pytest
from litellm.integrations.custom_logger import CustomLogger
from routing_helpers import attached, deployment, settled
from standin_helpers import ROUTER, governed_policy, standin_deployment

from litellm_payg.adapter.ingress import InvalidRequest

MESSAGES = [{"role": "user", "content": "Please tell me what the status of my order number 12345 is today."}]
CHAT = "openai/gpt-4o-mini"


def _policy(group: str = "chat") -> dict:
    return {"version": 1, "ledger": "memory://", "routes": {group: [{"quality_floor": {"min_quality": 0}}]},
            "models": {CHAT: {"quality": 1}, "openai/text-embedding-3-small": {"quality": 1}},
            "budgets": [{"scope": "global", "window": "day", "limit_usd": 1, "on_exceed": "block"}]}


async def _refused(call, engine, field: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        await call()
    assert info.value.status_code == 400 and info.value.field == field, str(info.value)
    assert repr(field) in str(info.value)
    assert engine.spend.ledger.records() == [] and engine.spend.ledger.open_reservations() == 0


# -- LiteLLM's own parameters, of the wrong type ------------------------------------------------------------


@pytest.mark.parametrize("field,value", [
    ("num_retries", "3"), ("num_retries", [1]), ("num_retries", -1), ("max_retries", 2.5),
    ("litellm_trace_id", True), ("litellm_trace_id", 10.0), ("litellm_session_id", {"a": 1}),
    ("tags", {"a": 1}), ("tags", "support"), ("tags", [1, 2]),
    ("timeout", [1]), ("timeout", "5"), ("timeout", float("nan")), ("stream_timeout", 0),
    ("user", 5), ("caching", "yes"), ("fallbacks", "chat"),
    ("response_format", [63, 63]), ("response_format", "json_object"),
])
async def test_litellm_params_of_the_wrong_type_are_a_400_naming_the_field(field, value):
    """LiteLLM fails these after the pick (``litellm_trace_id: true`` fails its
    ``GenericLiteLLMParams`` as an ``APIConnectionError`` 500, ``num_retries: "3"`` its retry loop,
    a ``response_format`` list its Azure client)."""
    with attached([deployment("chat", CHAT, "c1")], _policy()) as (router, engine):
        await _refused(lambda: router.acompletion(model="chat", messages=MESSAGES, **{field: value}), engine, field)


async def test_litellm_params_of_the_right_type_pass():
    with attached([deployment("chat", CHAT, "c1")], _policy()) as (router, engine):
        await router.acompletion(model="chat", messages=MESSAGES, num_retries=0, litellm_trace_id="t-1", tags=["a"],
                                 timeout=30, user="u", caching=False, fallbacks=[])
        await settled(engine)
        assert len(engine.spend.ledger.records()) == 1


@pytest.mark.parametrize("field", ["timeout", "stream_timeout"])
async def test_a_client_timeout_below_the_floor_is_refused_on_a_governed_group(field):
    """A request the provider received is charged even when it times out: a timeout shorter than any
    answer buys only that charge, so it is refused (README, "Budgets")."""
    with attached([deployment("chat", CHAT, "c1")], _policy()) as (router, engine):
        await _refused(lambda: router.acompletion(model="chat", messages=MESSAGES, **{field: 0.001}), engine, field)
        await router.acompletion(model="chat", messages=MESSAGES, **{field: 1.0})


# -- one API's own fields ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs,field", [
    ({"prompt": None}, "prompt"),
    ({"prompt": False}, "prompt"),
    ({"prompt": {"text": "hi"}}, "prompt"),
    ({"prompt": ["hi", 5]}, "prompt"),
    ({"prompt": []}, "prompt"),
    ({"prompt": [62, 62]}, "prompt"),
    ({"prompt": "hi", "messages": MESSAGES}, "messages"),
    ({"prompt": "hi", "messages": None}, "messages"),
])
async def test_text_completion_fields_litellm_fails_on_are_a_400(kwargs, field):
    """LiteLLM: "Unmapped prompt format", "'int' object has no attribute 'get'" (token ids for a chat
    model) and "multiple values for keyword argument 'messages'", 500s."""
    with attached([deployment("chat", CHAT, "c1")], _policy()) as (router, engine):
        await _refused(lambda: router.atext_completion(model="chat", **kwargs), engine, field)


async def test_text_completion_prompts_litellm_accepts_pass():
    with attached([deployment("chat", CHAT, "c1")], _policy()) as (router, engine):
        for prompt in ("hi", ["hi", "there"]):
            await router.atext_completion(model="chat", prompt=prompt, max_tokens=5)


async def test_a_streamed_embedding_is_a_400():
    """The proxy would stream an ``EmbeddingResponse`` (``no attribute '__aiter__'``, a 500) after
    the provider billed it."""
    model_list = [deployment("emb", "openai/text-embedding-3-small", "e1", mock=None)]
    with attached(model_list, _policy("emb")) as (router, engine):
        await _refused(lambda: router.aembedding(model="emb", input="hi", stream=True), engine, "stream")


async def test_anthropic_messages_with_null_messages_is_a_400():
    """LiteLLM's Anthropic client iterates ``messages`` (a ``TypeError``, retried, then a 500)."""
    with attached([deployment("chat", CHAT, "c1")], _policy()) as (router, engine):
        await _refused(lambda: router.aanthropic_messages(model="chat", messages=None, max_tokens=5), engine, "messages")


# -- a request LiteLLM rejects after the pick ----------------------------------------------------------------


class RejectsBeforeTheCall(CustomLogger):
    """A check that runs after the pick and before the deployment is called (as LiteLLM's own
    request checks do), refusing the request."""

    async def async_pre_call_check(self, deployment, parent_otel_span=None):
        raise litellm.BadRequestError("refused before the call", model="chat", llm_provider="openai")


async def test_a_request_rejected_after_the_pick_leaves_no_reservation_open():
    """The pick reserved; LiteLLM refused the request before any attempt began, so no failure event
    comes for it: the governed door releases the reservation (it never reached the provider)."""
    rejecting = RejectsBeforeTheCall()
    with attached([deployment("chat", CHAT, "c1")], _policy()) as (router, engine):
        litellm.callbacks.append(rejecting)
        try:
            with pytest.raises(litellm.BadRequestError, match="refused before the call"):
                await router.acompletion(model="chat", messages=MESSAGES)
        finally:
            litellm.callbacks.remove(rejecting)
        assert engine.spend.ledger.open_reservations() == 0
        assert engine.spend.ledger.records() == []


# -- timeouts ----------------------------------------------------------------------------------------------


async def test_a_read_timeout_after_the_provider_received_the_request_is_charged_its_bound(standin):
    """Issue #19 item 4: the provider had the request and may bill it, whatever LiteLLM reports
    afterwards; with no usage to read, it is charged its bound, marked estimated."""
    standin.delay("openai", 1500)
    model_list = [standin_deployment(standin, "openai", timeout=0.3)]  # the operator's timeout: no floor
    reserved = []
    with attached(model_list, governed_policy(budgets=_policy()["budgets"]), **ROUTER) as (router, engine):
        original = engine.spend.admit

        def admit(request, *args, **kwargs):
            admission = original(request, *args, **kwargs)
            reserved.append(admission.estimate())
            return admission

        engine.spend.admit = admit
        with pytest.raises(litellm.Timeout):
            await router.acompletion(model="chat", messages=MESSAGES, max_tokens=20)
        await settled(engine)
        records = engine.spend.ledger.records()
    assert standin.hits("openai") == 1
    assert len(records) == 1 and records[0].attrs.get("usage") == "estimated", records
    assert records[0].attrs.get("failed") == "timeout"
    assert records[0].amount_usd == pytest.approx(reserved[0]) and records[0].amount_usd > 0


def test_check_request_runs_only_the_checks_of_present_fields_and_finds_what_all_of_them_find():
    """``check_request`` skips a check whose fields a plain dict does not have (each reads its
    fields with ``get``: absent is None); the first problem it reports is the one running every
    check in order reports, over bodies mixing good and bad values of every checked field."""
    import random

    from litellm_payg.wire import request_checks as rc

    def every_check(data, api=None):
        for check, _ in rc._CHECKS:
            if check is rc._response_format and api in rc._FORMAT_NAMED_APIS:
                continue
            problem = check(data)
            if problem is not None:
                return problem
        return rc._api_fields(data, api) if api in rc._CHECKED_APIS else None

    values = {
        "model": ["chat", "a,b", 3], "fastest_response": [True, None], "api_key": ["sk", None],
        "messages": [[{"role": "user", "content": "hi"}], [], [{"content": "x"}], "text", None],
        "max_tokens": [5, 0, "5", 2.0], "max_completion_tokens": [10, -1], "n": [1, 500], "best_of": [2, "x"],
        "stream": [True, "yes"], "stream_options": [{"include_usage": True}, {"include_usage": 1}, []],
        "tools": [[], {}], "metadata": [{}, {"tags": ["a"]}, "m"], "litellm_metadata": [{}, 1],
        "response_format": [{"type": "json_object"}, ["x"], "text"], "num_retries": [2, "2", 1000],
        "timeout": [5, -1, "x"], "litellm_trace_id": ["t", True], "tags": [["a"], "a"], "caching": [True, 1],
        "fallbacks": [[], "x"], "prompt": ["p", [1]], "temperature": [0.5],
    }
    rng = random.Random(7)
    for _ in range(3000):
        body = {name: rng.choice(options) for name, options in values.items() if rng.random() < 0.3}
        api = rng.choice([None, "completion", "text_completion", "embedding", "speech", "anthropic_messages"])
        assert rc.check_request(body, api) == every_check(body, api), (body, api)
