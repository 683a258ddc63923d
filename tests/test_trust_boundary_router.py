"""The trust boundary through LiteLLM's real Router (the Python side; the proxy side, with
authenticated keys, is tests/test_trust_boundary.py).

Each test is an attack a caller could make with request fields alone, and checks that it moves no
charge, no cap and no route: shared trace ids, forged ``payg_*`` metadata, a deployment named as
the model, malformed fields, ``n`` answers on one reservation, and a body ``user`` standing in for
the user a budget caps.
"""

from __future__ import annotations

import asyncio

import litellm
import pytest
from routing_helpers import DEEPSEEK, MISTRAL, attached, deployment, served_by, settled

from litellm_payg.adapter.ingress import InvalidRequest
from litellm_payg.adapter.litellm_errors import BudgetExceeded

MESSAGES = [{"role": "user", "content": "Please tell me what the status of my order number 12345 is today."}]
MOCK_COST = 10 * 2.8e-07 + 20 * 4.2e-07  # LiteLLM's mock usage (10 + 20 tokens) at deepseek-chat's bundled price


def _policy(budgets=(), **extra):
    return {"version": 1, "ledger": "memory://", "budgets": list(budgets),
            "routes": {"chat": [{"quality_floor": {"min_quality": 0.8}}]},
            "models": {DEEPSEEK: {"quality": 0.9}, MISTRAL: {"quality": 0.5}}, **extra}


def _deployments():
    # ml (mistral) is excluded by the route: quality 0.5 < 0.8
    return [deployment("chat", DEEPSEEK, "ds"), deployment("chat", MISTRAL, "ml")]


def _records(engine):
    return [r for r in engine.spend.ledger.records() if r.attrs.get("kind") != "expired"]


async def test_a_shared_trace_id_does_not_share_a_reservation():
    cap = 8 * MOCK_COST
    policy = _policy([{"scope": "global", "window": "day", "limit_usd": cap}])
    with attached(_deployments(), policy) as (router, engine):
        async def one():
            try:
                await router.acompletion(model="chat", messages=MESSAGES, max_tokens=20, litellm_trace_id="same-trace",
                                         metadata={"session": "x"})
                return "ok"
            except BudgetExceeded:
                return "blocked"

        outcomes = await asyncio.gather(*(one() for _ in range(40)))
        await settled(engine)
        records = _records(engine)
        spent = sum(r.amount_usd for r in records)
        reservation = engine.spend.reserve_estimate(*_route(engine, router))
        assert outcomes.count("ok") == len(records), f"{outcomes.count('ok')} answers but {len(records)} ledger records"
        assert spent <= cap + reservation + 1e-12, f"spent ${spent:.9f} against a ${cap:.9f} cap with one trace id"
        assert outcomes.count("blocked") > 0
        assert len({r.reservation_id for r in records}) == len(records)


def _route(engine, router):
    """(RouteRequest, Candidate) of a plain request to ds, to price one reservation."""
    from litellm_payg.core.decision import RouteRequest

    candidate = engine.adapter._candidates["ds"]
    prompt = litellm.token_counter(model=DEEPSEEK, messages=MESSAGES)
    return RouteRequest("chat", prompt, 20, max_tokens=20), candidate


@pytest.mark.parametrize("key,value", [
    ("payg_prompt_tokens", 0), ("payg_prompt_tokens", -5), ("payg_trace", "t"), ("payg_reservations", {"ds": ["x"]}),
    ("payg_attempts", ["ml"]), ("payg_request", "guess"), ("payg_decision", {"chosen": "ml"}),
])
async def test_forged_plugin_state_is_refused_naming_the_key(key, value):
    with attached(_deployments(), _policy()) as (router, engine):
        with pytest.raises(litellm.BadRequestError) as info:
            await router.acompletion(model="chat", messages=MESSAGES, metadata={key: value})
        assert isinstance(info.value, InvalidRequest) and info.value.status_code == 400
        assert f"metadata.{key}" in str(info.value)
        assert engine.spend.ledger.records() == [] and engine.spend.ledger.open_reservations() == 0


async def test_payg_hints_stay_allowed_and_only_tighten():
    with attached(_deployments(), _policy()) as (router, engine):
        response = await router.acompletion(model="chat", messages=MESSAGES, metadata={"payg_hints": {"min_quality": 0.1}})
        assert served_by(response) == "ds"  # a lower bar from the client does not let ml back in
        await settled(engine)


async def test_a_huge_prompt_is_reserved_in_full_whatever_metadata_says():
    huge = [{"role": "user", "content": "word " * 20_000}]
    cap = 50 * MOCK_COST  # far below the huge prompt's reservation
    policy = _policy([{"scope": "global", "window": "day", "limit_usd": cap}])
    with attached(_deployments(), policy) as (router, engine):
        with pytest.raises(BudgetExceeded):
            await router.acompletion(model="chat", messages=huge, max_tokens=20)
        assert engine.spend.ledger.records() == []


@pytest.mark.parametrize("name", ["ds", "ml", DEEPSEEK, MISTRAL])
async def test_naming_a_deployment_is_refused_by_default(name):
    with attached(_deployments(), _policy()) as (router, engine):
        with pytest.raises(litellm.BadRequestError) as info:
            await router.acompletion(model=name, messages=MESSAGES)
        assert info.value.status_code == 400
        assert repr(name) in str(info.value) and "model='chat'" in str(info.value)
        assert engine.spend.ledger.records() == []


@pytest.mark.parametrize("name", ["ml", MISTRAL])
async def test_naming_a_deployment_is_routed_as_its_group_when_the_policy_says_route(name):
    with attached(_deployments(), _policy(direct_deployments="route")) as (router, engine):
        response = await router.acompletion(model=name, messages=MESSAGES)
        assert served_by(response) == "ds"  # the route excludes ml: the client asked for it by name
        await settled(engine)
        (record,) = _records(engine)
        assert record.attrs["deployment"] == "ds" and record.attrs["group"] == "chat"


async def test_an_alias_of_a_governed_group_is_routed():
    with attached(_deployments(), _policy(), model_group_alias={"assistant": "chat"}) as (router, engine):
        response = await router.acompletion(model="assistant", messages=MESSAGES)
        assert served_by(response) == "ds"
        await settled(engine)
        assert len(_records(engine)) == 1


async def test_a_deployment_reached_past_the_doors_is_refused_by_the_backstop():
    """The Router's own ``acompletion`` (not the governed wrapper attach installs): a request naming
    a deployment id reaches it without any routing hook; the per-attempt backstop refuses it."""
    with attached(_deployments(), _policy(direct_deployments="route")) as (router, engine):
        unwrapped = type(router).acompletion.__get__(router)
        with pytest.raises(litellm.BadRequestError) as info:
            await unwrapped(model="ml", messages=MESSAGES)
        assert "without being routed by the policy" in str(info.value)
        await asyncio.sleep(0.2)
        assert engine.spend.ledger.records() == []


@pytest.mark.parametrize("field,value,named", [
    ("messages", "hello", "messages"),
    ("messages", [{"content": 1}], "messages[0].role"),
    ("messages", [], "messages"),
    ("max_tokens", "abc", "max_tokens"),
    ("max_tokens", -5, "max_tokens"),
    ("max_tokens", 1e12, "max_tokens"),
    ("max_completion_tokens", True, "max_completion_tokens"),
    ("n", 1000, "n"),
    ("stream_options", "yes", "stream_options"),
    ("stream", "yes", "stream"),
    ("metadata", "x", "metadata"),
])
async def test_bad_input_is_a_400_naming_the_field_and_never_reaches_the_ledger(field, value, named):
    with attached(_deployments(), _policy([{"scope": "global", "window": "day", "limit_usd": 1}])) as (router, engine):
        kwargs = {"model": "chat", "messages": MESSAGES, field: value}
        with pytest.raises(litellm.BadRequestError) as info:
            await router.acompletion(**kwargs)
        assert info.value.status_code == 400
        assert repr(named) in str(info.value), str(info.value)
        assert engine.spend.ledger.records() == [] and engine.spend.ledger.open_reservations() == 0


async def test_n_answers_reserve_n_times_the_output():
    with attached(_deployments(), _policy()) as (router, engine):
        seen = []
        original = engine.spend.admit

        def admit(request, *args, **kwargs):
            admission = original(request, *args, **kwargs)
            seen.append((request.choices, admission.estimate()))
            return admission

        engine.spend.admit = admit
        await router.acompletion(model="chat", messages=MESSAGES, max_tokens=100)
        await router.acompletion(model="chat", messages=MESSAGES, max_tokens=100, n=3)
        await settled(engine)
    (one, one_usd), (three, three_usd) = seen
    candidate_out = 100 * 4.2e-07  # deepseek's output price per token, bundled
    assert (one, three) == (1, 3)
    assert three_usd - one_usd == pytest.approx(2 * candidate_out, rel=1e-9)


async def test_the_body_user_is_an_end_user_and_never_the_budgets_user():
    per_user = {"name": "per-user", "scope": "user:*", "window": "day", "limit_usd": 2.5 * MOCK_COST}
    per_end_user = {"name": "per-end-user", "scope": "end_user:*", "window": "day", "limit_usd": 1.5 * MOCK_COST}
    with attached(_deployments(), _policy([per_user, per_end_user])) as (router, engine):
        # the calling code names its user in metadata; changing `user=` per request does not
        # give it a fresh user bucket
        for i in range(2):
            await router.acompletion(model="chat", messages=MESSAGES, max_tokens=20, user=f"end-{i}", metadata={"user": "alice"})
            await settled(engine)
        with pytest.raises(BudgetExceeded) as info:
            await router.acompletion(model="chat", messages=MESSAGES, max_tokens=20, user="end-9", metadata={"user": "alice"})
        assert info.value.budget == "per-user" and info.value.scope == "user:alice"
        # the end user's own cap holds for that end user
        await router.acompletion(model="chat", messages=MESSAGES, max_tokens=20, user="bob-customer")
        await settled(engine)
        with pytest.raises(BudgetExceeded) as info:
            await router.acompletion(model="chat", messages=MESSAGES, max_tokens=20, user="bob-customer")
        assert info.value.scope == "end_user:bob-customer"
        records = _records(engine)
        assert {r.attrs.get("end_user") for r in records} == {"end-0", "end-1", "bob-customer"}


async def test_two_routers_from_one_config_each_follow_their_own_policy():
    """Ownership is by router, not by deployment ids: the same ids in two Routers."""
    to_ds = _policy()
    to_ml = {**_policy(), "routes": {"chat": [{"quality_floor": {"min_quality": 0.1}}]},
             "models": {DEEPSEEK: {"quality": 0.2}, MISTRAL: {"quality": 0.5}}}
    with attached(_deployments(), to_ds) as (router_a, engine_a), attached(_deployments(), to_ml) as (router_b, engine_b):
        a = [served_by(await router_a.acompletion(model="chat", messages=MESSAGES)) for _ in range(3)]
        b = [served_by(await router_b.acompletion(model="chat", messages=MESSAGES)) for _ in range(3)]
        await settled(engine_a)
        await settled(engine_b)
        assert set(a) == {"ds"}
        assert set(b) <= {"ds", "ml"} and len(_records(engine_b)) == 3 and len(_records(engine_a)) == 3


async def test_a_responses_api_input_is_counted_for_the_reservation():
    """``/v1/responses`` sends ``input``, not ``messages``: it must be counted, or a huge input
    would be reserved as an empty prompt."""
    cap = 50 * MOCK_COST
    with attached(_deployments(), _policy([{"scope": "global", "window": "day", "limit_usd": cap}])) as (router, engine):
        with pytest.raises(BudgetExceeded):
            await router.aresponses(model="chat", input="word " * 20_000, max_output_tokens=20)
        assert engine.spend.ledger.records() == []


async def test_a_router_dropped_without_detach_leaves_no_callback_behind():
    import gc
    import weakref

    from litellm_payg.adapter import litellm_versions

    from litellm import Router

    import litellm_payg

    probe = weakref.ref(Router(model_list=_deployments()))
    gc.collect()
    if probe() is not None:
        pytest.skip(f"LiteLLM {litellm_versions.litellm_version()} keeps every Router alive itself (its own "
                    "deployment callbacks in litellm's global lists hold it; seen on 1.100.0), so no Router is ever collected")
    router = Router(model_list=_deployments())
    engine = litellm_payg.attach(router, _policy(), ledger="memory://")
    await router.acompletion(model="chat", messages=MESSAGES)
    await settled(engine)
    adapter = engine.adapter
    lists = ("callbacks", "success_callback", "_async_success_callback", "failure_callback", "_async_failure_callback")
    assert any(adapter in getattr(litellm, name) for name in lists)
    del router
    gc.collect()
    left = [name for name in lists if adapter in getattr(litellm, name)]
    assert left == [], f"a collected router's callback is still in litellm.{left}"


async def test_client_side_credentials_are_refused():
    """LiteLLM clones a deployment for a call that brings its own key or endpoint: the clone is a
    deployment the policy never picked, so its reservation would dangle."""
    with attached(_deployments(), _policy()) as (router, engine):
        for field, value in (("api_key", "sk-my-own"), ("api_base", "http://127.0.0.1:9/v1")):
            with pytest.raises(litellm.BadRequestError) as info:
                await router.acompletion(model="chat", messages=MESSAGES, **{field: value})
            assert repr(field) in str(info.value)
        assert engine.spend.ledger.records() == [] and engine.spend.ledger.open_reservations() == 0


async def test_the_schedulers_look_ahead_pick_is_not_a_reservation():
    """``schedule_acompletion`` picks once to see that a deployment is free, then again to send:
    one answer, one record, nothing left reserved."""
    with attached(_deployments(), _policy()) as (router, engine):
        response = await router.schedule_acompletion(model="chat", messages=MESSAGES, priority=0)
        await settled(engine)
        assert served_by(response) == "ds"
        assert [r.attrs["deployment"] for r in _records(engine)] == ["ds"]


async def test_each_call_of_a_batch_is_reserved_and_settled_on_its_own():
    with attached(_deployments(), _policy()) as (router, engine):
        answers = await router.abatch_completion(models=["chat", "chat"], messages=MESSAGES)
        await settled(engine)
        assert len(answers) == 2 and len(_records(engine)) == 2
        assert len({r.reservation_id for r in _records(engine)}) == 2


async def test_attach_fails_loudly_when_litellm_refuses_its_callback(monkeypatch):
    """LiteLLM only logs a warning when its callback list is full; a Router attached then would run
    ungoverned. attach raises instead."""
    from litellm import Router

    import litellm_payg
    from litellm_payg.core.errors import PaygError

    monkeypatch.setattr(litellm.logging_callback_manager, "add_litellm_callback", lambda callback: None)
    router = Router(model_list=_deployments())
    with pytest.raises(PaygError, match="refused to register"):
        litellm_payg.attach(router, _policy())
