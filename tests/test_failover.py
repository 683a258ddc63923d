"""Failover through LiteLLM's real provider clients against the fault-injecting stand-in.

Deployments point their ``api_base`` at the stand-in, which plays DeepSeek and Mistral on their real
wire formats, so errors arrive as LiteLLM's real clients map them. LiteLLM's own cooldowns are
disabled in these Routers so that what stops an attempt is our circuit breaker, not theirs.
"""

from __future__ import annotations

import asyncio
import time

import litellm
import pytest

from litellm_payg.adapter import litellm_versions
from litellm_payg.adapter.failures import InvalidResponseError
from standin import StandIn

from routing_helpers import DEEPSEEK, MISTRAL, attached, served_by, settled

MESSAGES = [{"role": "user", "content": "My router keeps dropping the connection every evening, what can I do?"}]




def _model_list(s: StandIn) -> list[dict]:
    return [
        {"model_name": "chat", "litellm_params": {"model": DEEPSEEK, "api_key": "sk-test", "api_base": s.url("deepseek")}, "model_info": {"id": "ds"}},
        {"model_name": "chat", "litellm_params": {"model": MISTRAL, "api_key": "sk-test", "api_base": s.url("mistral")}, "model_info": {"id": "ml"}},
    ]


def _policy(**failover) -> dict:
    return {
        "version": 1,
        "ledger": "memory://",
        "routes": {"chat": [{"cost_threshold": {"use": DEEPSEEK, "max_usd_per_1k_tokens": 0.0015, "otherwise": MISTRAL}}]},
        "failover": failover,
        "validate": ["non_empty", {"finish_reason_not": "length"}],
    }


ROUTER = {"num_retries": 2, "retry_after": 0, "disable_cooldowns": True}




async def test_breaker_opens_after_failures_then_one_probe_closes_it(standin):
    policy = _policy(circuit_breaker={"failures": 3, "within_s": 60, "open_s": 3, "half_open_probes": 1})
    standin.fail("deepseek", status=500, times=None)  # DeepSeek is down until cleared
    with attached(_model_list(standin), policy, **ROUTER) as (router, engine):
        for _ in range(3):
            assert served_by(await router.acompletion(model="chat", messages=MESSAGES)) == "ml"
            await settled(engine)
        assert standin.hits("deepseek") == 3
        assert engine.health.state("ds").state == "open"

        for _ in range(5):  # open: DeepSeek costs no attempt at all
            assert served_by(await router.acompletion(model="chat", messages=MESSAGES)) == "ml"
        assert standin.hits("deepseek") == 3

        standin.clear("deepseek")  # DeepSeek is back
        await asyncio.sleep(3.1)  # open_s passes
        assert served_by(await router.acompletion(model="chat", messages=MESSAGES)) == "ds"  # the probe
        assert standin.hits("deepseek") == 4
        await settled(engine)
        assert engine.health.state("ds").state == "closed"
        assert served_by(await router.acompletion(model="chat", messages=MESSAGES)) == "ds"


async def test_a_slow_deployment_stops_being_first_choice(standin):
    policy = _policy(max_latency_ms=150, latency={"min_samples": 3, "window_s": 60})
    standin.delay("deepseek", 300, times=3)
    with attached(_model_list(standin), policy, **ROUTER) as (router, engine):
        for _ in range(3):
            assert served_by(await router.acompletion(model="chat", messages=MESSAGES)) == "ds"
            await settled(engine)
        assert engine.health.state("ds").latency_p95_s > 0.15
        response = await router.acompletion(model="chat", messages=MESSAGES)
        assert served_by(response) == "ml"


@pytest.mark.skipif(not litellm_versions.FIRST_TOKEN_IN_ATTEMPT,
                    reason="LiteLLM reads a stream's first chunk inside the retried attempt from 1.108.0")
async def test_stream_without_a_first_token_in_time_moves_to_the_next_deployment(standin):
    policy = _policy(first_token_timeout_ms=400)
    standin.delay("deepseek", 3000, first_chunk=True)
    with attached(_model_list(standin), policy, **ROUTER) as (router, engine):
        started = time.monotonic()
        stream = await router.acompletion(model="chat", messages=MESSAGES, stream=True)
        text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream])
        elapsed = time.monotonic() - started
    assert text
    assert standin.hits("deepseek") == 1 and standin.hits("mistral") == 1
    assert elapsed < 2.5  # did not wait for DeepSeek's 3 s first chunk


@pytest.mark.skipif(litellm_versions.FIRST_TOKEN_IN_ATTEMPT,
                    reason="before 1.108.0 only: LiteLLM reads a stream's first chunk outside the attempt")
async def test_before_1_108_a_first_token_timeout_reaches_the_caller_and_releases_its_reservation(standin):
    """The documented gap (README, "Supported LiteLLM versions"): before LiteLLM 1.108.0 the Router
    returns the stream before its first chunk is read, so ``first_token_timeout_ms`` ends the stream
    in the caller's hands instead of moving the request on. It still times out in time and is not
    charged."""
    policy = _policy(first_token_timeout_ms=400)
    standin.delay("deepseek", 3000, first_chunk=True)
    with attached(_model_list(standin), policy, **ROUTER) as (router, engine):
        started = time.monotonic()
        stream = await router.acompletion(model="chat", messages=MESSAGES, stream=True)
        with pytest.raises(litellm.APIConnectionError, match="Timeout"):
            async for _ in stream:
                pass
        elapsed = time.monotonic() - started
        await settled(engine)
        assert engine.spend.ledger.open_reservations() == 0
        assert sum(r.amount_usd for r in engine.spend.ledger.records()) == 0
    assert standin.hits("deepseek") == 1 and standin.hits("mistral") == 0
    assert elapsed < 2.5  # did not wait for DeepSeek's 3 s first chunk


async def test_context_too_long_moves_to_a_larger_context_deployment(standin):
    standin.fail("deepseek", "context_length")
    with attached(_model_list(standin), _policy(), **ROUTER) as (router, engine):
        response = await router.acompletion(model="chat", messages=MESSAGES)
        metadata_notes = None
    assert served_by(response) == "ml"
    assert standin.hits("deepseek") == 1
    del metadata_notes


async def test_an_auth_error_reaches_the_caller_and_is_not_hidden(standin):
    standin.fail("deepseek", "auth", times=None)
    with attached(_model_list(standin), _policy(), **ROUTER) as (router, engine):
        # DeepSeek's 401 body says "invalid_request_error": LiteLLM raises AuthenticationError for
        # it from 1.109.0, BadRequestError before (litellm_versions.auth_error_class); either way
        # the plugin classifies it `auth` and the request fails at once
        with pytest.raises(litellm_versions.auth_error_class()):
            await router.acompletion(model="chat", messages=MESSAGES)
        await settled(engine)
        assert engine.spend.ledger.open_reservations() == 0
    assert standin.hits("deepseek") == 1  # not retried
    assert standin.hits("mistral") == 0  # not hidden behind the fallback


@pytest.mark.parametrize("kind", ["empty", "length"])
async def test_an_invalid_answer_moves_on_and_is_still_charged(standin, kind):
    standin.fail("deepseek", kind)
    with attached(_model_list(standin), _policy(), **ROUTER) as (router, engine):
        response = await router.acompletion(model="chat", messages=MESSAGES)
        await settled(engine)
        records = engine.spend.ledger.records()
    assert served_by(response) == "ml"
    assert response.choices[0].message.content
    charged = {r.attrs["deployment"]: r.amount_usd for r in records}
    assert set(charged) == {"ds", "ml"}
    assert charged["ds"] > 0  # the invalid answer billed, so it is charged


async def test_every_attempt_failing_gives_an_error_listing_the_attempts(standin):
    standin.fail("deepseek", status=500, times=None)
    standin.fail("mistral", status=500, times=None)
    with attached(_model_list(standin), _policy(), **ROUTER) as (router, engine):
        with pytest.raises(litellm.InternalServerError):
            await router.acompletion(model="chat", messages=MESSAGES)
        await settled(engine)
        assert engine.spend.ledger.open_reservations() == 0
        assert engine.spend.ledger.records() == []  # nothing billed
    assert standin.hits("deepseek") >= 1 and standin.hits("mistral") >= 1


def test_invalid_response_error_is_its_own_class():
    from litellm_payg.adapter.failures import classify

    assert classify(InvalidResponseError(["non_empty: empty"])).value == "invalid_response"
