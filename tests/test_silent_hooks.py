"""Hook calls nobody hears are not made (``hook_chain.silent_when``, ``Broadcast``, ``Link.silent``).

The built-in decision log (below INFO), the measured-quality observer (no exploration), the failover
filter (no ``failover:``) and budget headroom (no ``downgrade`` usage) say when they do nothing; the
engine then skips their pluggy call. Each test shows a call that must still be made is made: a
plugin registered later, the log at INFO, a wrapper, monitoring, a predicate that says "not silent".
"""

from __future__ import annotations

import functools
import logging

import pytest

import litellm_payg
from litellm_payg.core.decision import Candidate, RouteRequest, Step
from litellm_payg.hook_chain import silent_when
from litellm_payg.policy.load import load_policy
from litellm_payg.runtime.engine import Engine

REQUEST = RouteRequest(group="chat", prompt_tokens=100, output_tokens=50)
CANDIDATES = [Candidate(dep, f"openai/{dep}", "openai", "chat", price, price * 2) for dep, price in (("a", 1e-6), ("b", 2e-6))]


@pytest.fixture
def engine():
    engine = Engine(load_policy({"version": 1, "ledger": "memory://"}))
    added: list[object] = []

    def register(plugin: object, name: str) -> None:
        engine.pm.register(plugin, name=name)
        added.append(plugin)

    engine.register = register  # type: ignore[attr-defined]
    try:
        yield engine
    finally:
        for plugin in added:
            engine.pm.unregister(plugin)
        engine.detach()


def _hook_calls(engine, hook_name: str) -> tuple[list[list[str]], object]:
    """Record each pluggy call of ``hook_name`` (the implementations it ran). Monitoring is itself a
    watcher, so this only serves the tests that show a watched call is made."""
    calls: list[list[str]] = []
    undo = engine.pm.add_hookcall_monitoring(
        lambda name, impls, kwargs: calls.append([i.plugin_name for i in impls]) if name == hook_name else None,
        lambda *args: None,
    )
    return calls, undo


def test_the_builtins_are_silent_for_a_quiet_decision_and_their_calls_are_skipped(engine, monkeypatch):
    """Not one built-in observer or filter runs for a decision without a route, budgets or failover."""
    ran: list[str] = []

    def counting(impl):
        function = impl.function

        @functools.wraps(function)  # keeps the silent_when predicate (the function's __dict__)
        def run(*args):
            ran.append(impl.plugin_name)
            return function(*args)
        return run

    for hook in (engine.pm.hook.payg_decision, engine.pm.hook.payg_filter_candidates):
        for impl in hook.get_hookimpls():
            monkeypatch.setattr(impl, "function", counting(impl))
    # below INFO, whatever an earlier test of the session left the package's logger at (a proxy or
    # CLI run in-process sets it to INFO)
    monkeypatch.setattr(logging.getLogger("litellm_payg"), "isEnabledFor", lambda level: level >= logging.WARNING)
    decision = engine.decide(REQUEST, CANDIDATES)
    assert [c.deployment_id for c in decision.ordered] == ["a", "b"]
    assert ran == []
    with_logging = logging.getLogger("litellm_payg")
    monkeypatch.setattr(with_logging, "isEnabledFor", lambda level: True)
    engine.decide(REQUEST, CANDIDATES)
    # the log is heard: the broadcast is made, to every observer (pluggy's call); the filters stay skipped
    observers = sorted(impl.plugin_name for impl in engine.pm.hook.payg_decision.get_hookimpls())
    assert "litellm_payg.default_plugins.decision_log" in observers and sorted(ran) == observers


def test_a_plugin_registered_later_hears_every_decision(engine):
    heard: list[str] = []

    class Observer:
        @litellm_payg.hookimpl
        def payg_decision(self, decision):
            heard.append(decision.chosen.deployment_id)

    engine.decide(REQUEST, CANDIDATES)
    engine.register(Observer(), "observer")
    engine.decide(REQUEST, CANDIDATES)
    engine.decide(REQUEST, CANDIDATES)
    assert heard == ["a", "a"]


def test_the_decision_log_at_info_logs_every_decision(engine, caplog):
    with caplog.at_level(logging.INFO, logger="litellm_payg"):
        engine.decide(REQUEST, CANDIDATES)
        engine.decide(REQUEST, CANDIDATES)
    assert sum("payg decision group=chat" in r.getMessage() for r in caplog.records) == 2


def test_monitoring_sees_the_silent_calls(engine):
    calls, undo = _hook_calls(engine, "payg_decision")
    try:
        engine.decide(REQUEST, CANDIDATES)
    finally:
        undo()  # type: ignore[operator]
    assert len(calls) == 1 and "litellm_payg.default_plugins.decision_log" in calls[0]


def test_a_predicate_is_asked_for_each_call_and_only_a_silent_call_is_skipped(engine):
    asked: list[int] = []
    called: list[int] = []

    class Picky:
        @litellm_payg.hookimpl
        @silent_when(lambda kwargs: (asked.append(kwargs["request"].prompt_tokens), kwargs["request"].prompt_tokens < 500)[1])
        def payg_filter_candidates(self, request, candidates):
            called.append(request.prompt_tokens)
            return Step(list(reversed(candidates))) if request.prompt_tokens >= 500 else None

    engine.register(Picky(), "picky")
    assert [c.deployment_id for c in engine.decide(REQUEST, CANDIDATES).ordered] == ["a", "b"]
    long = RouteRequest(group="chat", prompt_tokens=900, output_tokens=50)
    assert [c.deployment_id for c in engine.decide(long, CANDIDATES).ordered] == ["b", "a"]
    assert asked == [100, 900] and called == [900]


def test_a_wrapper_wraps_every_link_even_a_silent_one(engine):
    wrapped: list[int] = []

    class Wrapper:
        @litellm_payg.hookimpl(wrapper=True)
        def payg_filter_candidates(self, candidates):
            result = yield
            wrapped.append(len(candidates))
            return result

    engine.register(Wrapper(), "wrapper")
    engine.decide(REQUEST, CANDIDATES)
    # the two built-in filters (both silent here), each with the wrapper around it
    assert wrapped == [2, 2]
