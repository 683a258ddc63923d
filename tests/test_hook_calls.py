"""Chained hooks are called through pluggy (``hook_chain.py``), so they keep pluggy's promises.

``payg_filter_candidates`` and ``payg_register_rules`` are chains (each filter sees what the
previous one kept; each rule registration knows its plugin). Each test here registers throw-away
plugins on a fresh policy's plugin manager and unregisters them in ``finally``.
"""

from __future__ import annotations

import pytest

import litellm_payg
from litellm_payg.core.decision import Candidate, RouteRequest, Step
from litellm_payg.runtime.engine import Engine
from litellm_payg.core.errors import PluginError
from litellm_payg.plugins import rule_types
from litellm_payg.policy.load import load_policy

REQUEST = RouteRequest(group="chat", prompt_tokens=100, output_tokens=50)
CANDIDATES = [
    Candidate(dep, f"openai/{dep}", "openai", "chat", price, price * 2)
    for dep, price in (("a", 1e-6), ("b", 2e-6), ("c", 3e-6))
]
#: the built-in filters, in the order pluggy calls them: both ``trylast``, and ``trylast``
#: implementations run in registration order (``DEFAULT_PLUGINS`` lists budget_guard first)
BUILTIN_FILTERS = ["litellm_payg.default_plugins.budget_guard", "litellm_payg.default_plugins.failover"]


@pytest.fixture
def engine():
    """An engine for a policy without routes or budgets: only the filter chain shapes a decision."""
    engine = Engine(load_policy({"version": 1, "ledger": "memory://"}))
    try:
        yield engine
    finally:
        engine.detach()


@pytest.fixture
def register(engine):
    """``register(plugin, name)`` on the engine's plugin manager, undone after the test."""
    added = []

    def add(plugin: object, name: str) -> object:
        engine.pm.register(plugin, name=name)
        added.append(plugin)
        return plugin

    try:
        yield add
    finally:
        for plugin in added:
            engine.pm.unregister(plugin)


def ids(candidates) -> list[str]:
    return [c.deployment_id for c in candidates]


def test_a_filter_may_take_only_the_arguments_it_uses(engine, register):
    class Reverse:
        @litellm_payg.hookimpl
        def payg_filter_candidates(self, candidates):
            return Step(list(reversed(candidates)))

    register(Reverse(), "reverse")
    assert ids(engine.decide(REQUEST, CANDIDATES).ordered) == ["c", "b", "a"]


def test_tryfirst_and_trylast_order_the_chain_and_each_filter_sees_the_previous_result(engine, register):
    """Registered in the reverse of the order pluggy calls them in. A user's filter runs before the
    built-in ``trylast`` ones without a flag; a user's ``trylast`` one runs after them (pluggy
    runs ``trylast`` implementations in registration order, and the built-ins come first)."""
    seen: list[tuple[str, list[str]]] = []

    def dropping_first(label: str, **marker):
        class Plugin:
            @litellm_payg.hookimpl(**marker)
            def payg_filter_candidates(self, candidates, request):  # any subset, any order
                seen.append((label, ids(candidates)))
                return Step(list(candidates[1:]), [Step.drop(candidates[0], f"dropped by {label}", label)])

        return Plugin()

    register(dropping_first("last", trylast=True), "last")
    register(dropping_first("plain"), "plain")
    register(dropping_first("first", tryfirst=True), "first")

    decision = engine.decide(REQUEST, CANDIDATES + [Candidate("d", "openai/d", "openai", "chat", 4e-6, 8e-6)])

    assert seen == [("first", ["a", "b", "c", "d"]), ("plain", ["b", "c", "d"]), ("last", ["c", "d"])]
    assert ids(decision.ordered) == ["d"]
    assert [(d.deployment_id, d.by) for d in decision.dropped] == [("a", "first"), ("b", "plain"), ("c", "last")]
    from litellm_payg.hook_chain import HookChain

    chain = HookChain(engine.pm, "payg_filter_candidates")
    assert [link.name for link in chain.links()] == ["first", "plain", *BUILTIN_FILTERS, "last"]


def test_a_wrapper_sees_each_filters_result_and_may_replace_it(engine, register):
    """A ``wrapper=True`` implementation wraps every link of the chain: here it vetoes any filter
    that would leave no candidate, and records what each link returned."""
    results: list[list[Step]] = []

    class DropAll:
        @litellm_payg.hookimpl
        def payg_filter_candidates(self, request, candidates, engine):
            return Step([], [Step.drop(c, "too expensive", "drop_all") for c in candidates])

    class NeverEmpty:
        @litellm_payg.hookimpl(wrapper=True)
        def payg_filter_candidates(self, request, candidates, engine):
            steps = yield
            results.append(steps)
            return [s for s in steps if s.kept or not candidates]

    register(DropAll(), "drop_all")
    register(NeverEmpty(), "never_empty")
    decision = engine.decide(REQUEST, CANDIDATES)

    assert ids(decision.ordered) == ["a", "b", "c"] and decision.dropped == []
    # one result list per link: drop_all's Step, then the built-ins' (no Step: nothing to do)
    assert [[ids(s.kept) for s in steps] for steps in results] == [[[]], [], []]


def test_an_old_style_hookwrapper_can_force_a_result(engine, register):
    class Cheapest:
        @litellm_payg.hookimpl(hookwrapper=True)
        def payg_filter_candidates(self, request, candidates, engine):
            outcome = yield
            if not outcome.get_result() and request.group == "chat":
                outcome.force_result([Step(list(candidates[:1]), [Step.drop(c, "not the first", "cheapest") for c in candidates[1:]])])

    register(Cheapest(), "cheapest")
    decision = engine.decide(REQUEST, CANDIDATES)
    assert ids(decision.ordered) == ["a"] and [d.deployment_id for d in decision.dropped] == ["b", "c"]


def test_pluggy_monitoring_and_tracing_see_every_filter_call(engine, register):
    class Keep:
        @litellm_payg.hookimpl
        def payg_filter_candidates(self, request, candidates, engine):
            return None

    register(Keep(), "keep")
    calls: list[list[str]] = []

    def before(hook_name, hook_impls, kwargs):
        if hook_name == "payg_filter_candidates":
            calls.append([impl.plugin_name for impl in hook_impls])

    undo = engine.pm.add_hookcall_monitoring(before, lambda outcome, hook_name, hook_impls, kwargs: None)
    try:
        engine.decide(REQUEST, CANDIDATES)
    finally:
        undo()
    assert calls == [["keep"], *[[name] for name in BUILTIN_FILTERS]]

    written: list[str] = []
    engine.pm.trace.root.setwriter(written.append)
    undo = engine.pm.enable_tracing()
    try:
        engine.decide(REQUEST, CANDIDATES)
    finally:
        undo()
        engine.pm.trace.root.setwriter(None)
    assert sum("payg_filter_candidates" in line for line in written) == 2 * (1 + len(BUILTIN_FILTERS))  # call + finish


def test_a_filter_returning_something_else_than_a_step_is_named(engine, register):
    class Wrong:
        @litellm_payg.hookimpl
        def payg_filter_candidates(self, request, candidates, engine):
            return list(candidates)

    register(Wrong(), "wrong")
    with pytest.raises(PluginError, match=r"plugin wrong: payg_filter_candidates returned \[.*expected None or a"):
        engine.decide(REQUEST, CANDIDATES)


def test_rule_registration_is_called_through_pluggy_once_per_plugin():
    pm = load_policy({"version": 1}).plugin_manager
    calls: list[list[str]] = []
    undo = pm.add_hookcall_monitoring(
        lambda name, impls, kwargs: calls.append([i.plugin_name for i in impls]) if name == "payg_register_rules" else None,
        lambda *args: None,
    )
    try:
        assert {"cost_threshold", "quality_floor", "split"} <= set(rule_types(pm))
    finally:
        undo()
    assert sorted(name for [name] in calls) == sorted(
        impl.plugin_name for impl in pm.hook.payg_register_rules.get_hookimpls()
    )


def test_the_written_out_initialisers_take_every_field():
    """``RouteRequest``, ``Pick``, ``ReserveResult``, ``HistoryRow``, ``Step`` and the charge's ``Usage``, ``Tariff``
    and ``Charge`` have hand-written ``__init__`` methods (built on every pick or answer); a field added to the
    dataclass and not to them would be silently missing (as
    ``RouteRequest.attrs`` once was): each field must be a parameter, and ``replace`` must keep it."""
    import dataclasses
    import inspect

    from litellm_payg.core.charge import Charge, Tariff, Usage
    from litellm_payg.core.decision import RouteRequest
    from litellm_payg.runtime.lifecycle import Pick
    from litellm_payg.stores.ledger.base import ReserveResult

    from litellm_payg.tools.whatif_history import HistoryRow

    from litellm_payg.core.decision import Step

    for cls in (RouteRequest, Pick, ReserveResult, HistoryRow, Step, Usage, Tariff, Charge):
        parameters = set(inspect.signature(cls.__init__).parameters) - {"self"}
        missing = {f.name for f in dataclasses.fields(cls) if f.init} - parameters
        assert not missing, f"{cls.__name__}.__init__ does not take {sorted(missing)}"
    request = dataclasses.replace(RouteRequest("g", 1, 1), attrs={"org": "acme"})
    assert request.attrs == {"org": "acme"} and RouteRequest("g", 1, 1).attrs == {}
    charge = dataclasses.replace(Charge(0.5, 10, 20, basis="price"), estimated=True)
    assert (charge.cost, charge.completion_tokens, charge.estimated, charge.basis) == (0.5, 20, True, "price")
    assert charge == Charge(0.5, 10, 20, estimated=True, basis="price") and charge.attrs["usage"] == "estimated"
    assert dataclasses.replace(Usage(1, 2), cache_hit=True).cache_hit and Tariff(1e-6, 2e-6).priced
    row = dataclasses.replace(HistoryRow("r", 1.0, "g", "m", None, 1, 2), status="failure", tags=("a",))
    assert (row.status, row.tags, row.prompt_tokens, row.spend_usd) == ("failure", ("a",), 1, 0.0)
    step = dataclasses.replace(Step(["c"], note="n"), judged={"c": "why"})
    assert (step.kept, step.dropped, step.note, step.attrs, step.judged) == (["c"], (), "n", {}, {"c": "why"})
    assert Step([]).attrs is not Step([]).attrs  # a dict of its own, as the default factory gave


# -- hooks get values; the runtime writes ----------------------------------------------------------------


def _quality_engine(**quality):
    """An engine whose policy collects evidence (a ``quality:`` section) on a memory store."""
    return Engine(load_policy({"version": 1, "ledger": "memory://", "quality": {"half_life_s": None, **quality}}))


def test_evidence_an_answer_checked_plugin_returns_is_recorded_by_the_runtime(caplog):
    """A plugin says what an answer is evidence of by returning it; the runtime records each for the
    deployment that answered and logs (never raises) what it cannot record."""
    from litellm_payg.core.quality import Evidence
    from litellm_payg.runtime.answers import check_answer
    from litellm_payg.stores.evidence import cell_key

    heard: list[tuple[str, list[str]]] = []

    class Scorer:
        @litellm_payg.hookimpl
        def payg_answer_checked(self, candidate, problems):
            heard.append((candidate.deployment_id, problems))
            return [Evidence("helpful", 0.25, source="scorer"), "not evidence", Evidence("unknown", 1.0)]

    class Single:
        @litellm_payg.hookimpl
        def payg_answer_checked(self, request, candidate):
            return Evidence("helpful", 0.75, source="single")

    engine = _quality_engine(metrics={"helpful": "score"})
    try:
        engine.pm.register(Scorer(), name="scorer")
        engine.pm.register(Single(), name="single")
        with caplog.at_level("WARNING", logger="litellm_payg"):
            assert check_answer(engine, object(), REQUEST, CANDIDATES[1]) == []
        tallies = engine.quality.store.tallies("chat")
    finally:
        engine.detach()
    assert heard == [("b", [])]
    assert set(tallies) == {cell_key("b", "", "helpful")}  # no validators: the built-in says nothing
    assert tallies[cell_key("b", "", "helpful")].n == 2 and tallies[cell_key("b", "", "helpful")].s == 1.0
    logged = [r.getMessage() for r in caplog.records]
    assert any("could not record plugin evidence" in m and "'not evidence'" in m for m in logged), logged
    assert any("could not record plugin evidence" in m and "unknown" in m for m in logged), logged


def test_without_a_quality_section_returned_evidence_is_not_recorded():
    from litellm_payg.core.quality import Evidence
    from litellm_payg.runtime.answers import check_answer

    class Scorer:
        @litellm_payg.hookimpl
        def payg_answer_checked(self):
            return Evidence("valid", True)

    engine = Engine(load_policy({"version": 1, "ledger": "memory://"}))
    try:
        engine.pm.register(Scorer(), name="scorer")
        check_answer(engine, object(), REQUEST, CANDIDATES[0])
        assert engine.quality.store.tallies("chat") == {}
    finally:
        engine.detach()


def test_a_plugin_written_for_the_deprecated_engine_argument_still_loads_and_gets_it(engine, register):
    """``engine`` is kept in the four hooks that had it, for third-party plugins; no built-in takes
    it (``tests/test_layers.py``)."""
    from litellm_payg.runtime.answers import check_answer

    got: dict[str, object] = {}

    class Old:
        @litellm_payg.hookimpl
        def payg_filter_candidates(self, request, candidates, engine):
            got["payg_filter_candidates"] = engine

        @litellm_payg.hookimpl
        def payg_decision(self, request, decision, engine):
            got["payg_decision"] = engine

        @litellm_payg.hookimpl
        def payg_validate_response(self, response, request, engine):
            got["payg_validate_response"] = engine
            return ["too short"]

        @litellm_payg.hookimpl
        def payg_answer_checked(self, request, candidate, problems, engine):
            got["payg_answer_checked"] = (engine, problems)

    register(Old(), "old")
    engine.decide(REQUEST, CANDIDATES)
    assert check_answer(engine, object(), REQUEST, CANDIDATES[0]) == ["too short"]
    assert got == {"payg_filter_candidates": engine, "payg_decision": engine, "payg_validate_response": engine,
                   "payg_answer_checked": (engine, ["too short"])}
