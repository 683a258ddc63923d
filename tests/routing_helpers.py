"""Shared helpers for the routing tests: real LiteLLM Routers whose deployments answer with
``mock_response`` (LiteLLM's own offline switch), so the policy logic runs through the real Router."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator, Sequence
from typing import Any

import litellm
import litellm.integrations.custom_logger
import pytest
from litellm import Router

import litellm_payg

DEEPSEEK = "deepseek/deepseek-chat"
MISTRAL = "mistral/mistral-large-latest"

# A DeepSeek price rise to $0.55/M in, $2.19/M out (set on the deployment): with it the
# request's blended price per 1K tokens crosses the example's $0.0015 threshold depending on the
# request's mix of prompt and output tokens. With the bundled price ($0.28/$0.42 per M) it never does.
RAISED_DEEPSEEK_PRICE = {"input_cost_per_token": 5.5e-07, "output_cost_per_token": 2.19e-06}


def deployment(group: str, model: str, dep_id: str, mock: Any = None, **params: Any) -> dict:
    return {
        "model_name": group,
        "litellm_params": {"model": model, "api_key": "sk-test-not-a-key", "mock_response": mock or f"from {dep_id}", **params},
        "model_info": {"id": dep_id},
    }


def chat_deployments(raised_price: bool = False, deepseek_mock: Any = None) -> list[dict]:
    extra = RAISED_DEEPSEEK_PRICE if raised_price else {}
    return [
        deployment("chat", DEEPSEEK, "ds", deepseek_mock, **extra),
        deployment("chat", MISTRAL, "ml"),
    ]


@contextlib.contextmanager
def attached(model_list: Sequence[dict], policy: Any, **router_kwargs: Any) -> Iterator[tuple[Router, Any]]:
    """A Router governed by ``policy``; detached afterwards so tests do not leak callbacks."""
    router = Router(model_list=list(model_list), **router_kwargs)
    engine = litellm_payg.attach(router, policy)
    try:
        yield router, engine
    finally:
        engine.detach()


def served_by(response: Any) -> str:
    """The deployment id that actually answered (LiteLLM stamps it on the response)."""
    return response._hidden_params["model_id"]


def blended_per_1k(prompt_tokens: int, output_tokens: int, price: dict) -> float:
    cost = prompt_tokens * price["input_cost_per_token"] + output_tokens * price["output_cost_per_token"]
    return cost / (prompt_tokens + output_tokens) * 1000


def prompt_tokens(model: str, messages: list[dict]) -> int:
    return litellm.token_counter(model=model, messages=messages)


class Recorder:
    """A throw-away plugin that records decisions and outcomes (registered per test)."""

    def __init__(self) -> None:
        self.decisions: list[Any] = []
        self.outcomes: list[Any] = []

    @litellm_payg.hookimpl
    def payg_decision(self, request, decision):
        self.decisions.append(decision)

    @litellm_payg.hookimpl
    def payg_outcome(self, outcome):
        self.outcomes.append(outcome)


async def settled(engine: Any, timeout: float = 15.0) -> None:
    """Wait until nothing is reserved: outcomes land on LiteLLM's background logging worker, a
    moment after the caller got its answer. Fails if a reservation is still open after ``timeout``."""
    deadline = time.monotonic() + timeout
    while (engine.spend.ledger.open_reservations() or engine.spend.in_flight) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    open_now = engine.spend.ledger.open_reservations()
    assert open_now == 0, f"{open_now} reservation(s) still open"
    assert engine.spend.in_flight == 0, f"{engine.spend.in_flight} admitted request(s) never settled"


class SuccessLogs(litellm.integrations.custom_logger.CustomLogger):
    """Counts LiteLLM's success log events, to wait until the late one has run."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0

    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):
        self.seen += 1


@pytest.fixture
def success_logs():
    """A :class:`SuccessLogs` in LiteLLM's callbacks for the test, removed after it."""
    logs = SuccessLogs()
    litellm.callbacks.append(logs)
    try:
        yield logs
    finally:
        litellm.logging_callback_manager.remove_callback_from_all_lists(logs)


async def until(condition, timeout: float = 10.0) -> bool:
    """Wait (polling every 20 ms, at most ``timeout`` seconds) until ``condition()`` holds; its last value."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return condition()
