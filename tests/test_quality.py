"""Measured quality: the estimates' math, the evidence stores, and quality_floor judging on evidence.

The stores run for real (memory, a SQLite file, the Redis on 127.0.0.1:6379); the validators'
evidence goes through LiteLLM's real Router against the stand-in.
"""

from __future__ import annotations

import math

import pytest

from litellm_payg.core.decision import Candidate, RouteRequest
from litellm_payg.core.quality import (QualityView, Tally, check_value, decay, merge, pass_rate, score, verdict, z_for)
from litellm_payg.policy.load import load_policy
from litellm_payg.runtime.engine import Engine
from litellm_payg.stores.evidence import cell_key, open_evidence

from evidence_stores import store_url  # noqa: F401 - the fixture

from routing_helpers import DEEPSEEK, MISTRAL, attached, served_by, settled

H = 3600.0


# -- the math ----------------------------------------------------------------------------------------


def test_forgetting_halves_the_weight_every_half_life():
    t = Tally(0.0).add(1.0, 0.0, H).add(0.0, 0.0, H)
    assert (t.w, t.s, t.n) == (2.0, 1.0, 2)
    later = t.at(H, H)
    assert later.w == pytest.approx(1.0) and later.s == pytest.approx(0.5) and later.n == 2
    assert t.at(2 * H, None).w == 2.0  # no half-life: nothing is forgotten
    # an observation written late (another replica's clock) counts at its age's weight
    assert t.add(1.0, -H, H).w == pytest.approx(2.5)
    assert decay(H, H) == 0.5 and decay(-5, H) == 1.0
    both = merge([Tally(0.0, 2.0, 1.0, 1.0, 2), Tally(H, 1.0, 1.0, 1.0, 1)], H, H)
    assert both.w == pytest.approx(2.0) and both.n == 3


def test_pass_rate_is_a_beta_posterior_with_the_declared_quality_as_a_small_prior():
    z = z_for(0.95)
    assert z == pytest.approx(1.6449, abs=1e-4)
    # 18 passes of 20, no prior: Beta(19, 3): mean 19/22, sd sqrt(19*3/(22^2*23))
    t = Tally(0.0, 20.0, 18.0, 18.0, 20)
    e = pass_rate(t, None, 10, z)
    sd = math.sqrt(19 * 3 / (22 ** 2 * 23))
    assert e.mean == pytest.approx(19 / 22) and e.lo == pytest.approx(19 / 22 - z * sd) and e.n == 20
    # the declared 0.5 as 10 pseudo-observations: Beta(5 + 18, 5 + 2)
    p = pass_rate(t, 0.5, 10, z)
    assert p.mean == pytest.approx(23 / 30)
    # no evidence: the declared quality is the mean, with a wide interval
    alone = pass_rate(Tally(), 0.9, 10, z)
    assert alone.mean == pytest.approx(0.9) and alone.hi - alone.lo > 0.2
    assert pass_rate(Tally(), 1.0, 10, z).mean == pytest.approx(10.5 / 11)  # never certain
    assert verdict(e, 0.7) == "meets" and verdict(e, 0.99) == "below" and verdict(e, 0.86) == "unsure"


def test_score_mean_and_interval():
    z = z_for(0.9)
    t = Tally(0.0)
    for v in (0.8, 0.9, 1.0, 0.9):
        t = t.add(v, 0.0, None)
    e = score(t, None, 10, z)
    assert e.mean == pytest.approx(0.9)
    var = (0.8 ** 2 + 0.9 ** 2 + 1 + 0.9 ** 2) / 4 - 0.81
    assert e.lo == pytest.approx(0.9 - z * math.sqrt(var / 4))


@pytest.mark.parametrize("kind,value", [("pass", 0.5), ("pass", "yes"), ("score", 1.5), ("score", float("nan")), ("score", None)])
def test_bad_values_are_refused_with_what_was_expected(kind, value):
    with pytest.raises(ValueError, match="takes"):
        check_value(kind, value)
    assert check_value("pass", True) == 1.0 and check_value("score", 0.25) == 0.25


# -- the stores ----------------------------------------------------------------------------------------




def test_every_backend_keeps_the_same_tallies_log_requests_and_counters(store_url):
    now = [1000.0]
    store = open_evidence(store_url, clock=lambda: now[0])
    try:
        key = cell_key("dep-a", "plan", "valid")
        store.add("chat", key, 1.0, H, now=1000.0, record={"request_id": "r1"})
        store.add("chat", key, 0.0, H, now=1000.0 + H)
        after = store.add("chat", key, 1.0, H, now=1000.0)  # late: counted at its age's weight
        assert after.t == 1000.0 + H and after.w == pytest.approx(0.5 + 1 + 0.5) and after.n == 3
        assert after.s == pytest.approx(1.0)
        got = store.tallies("chat")
        assert set(got) == {key} and got[key].w == pytest.approx(2.0)
        assert store.tallies("other") == {}
        log = store.log("chat")
        assert len(log) == 1 and log[0]["request_id"] == "r1" and log[0]["value"] == 1.0
        store.remember("resp-1", {"deployment_id": "dep-a", "key": "k1"}, ttl_s=60, now=1000.0)
        assert store.recall("resp-1", now=1001.0)["key"] == "k1"
        assert store.recall("nope") is None
        assert store.claim("rated-1", {"value": 1.0}, ttl_s=60, now=1000.0) is True
        assert store.claim("rated-1", {"value": 0.0}, ttl_s=60, now=1000.0) is False  # the first stays
        assert store.recall("rated-1", now=1000.0) == {"value": 1.0}
        assert store.spend("explore-x", 0.25, ttl_s=60) == pytest.approx(0.25)
        assert store.spend("explore-x", 0.5, ttl_s=60) == pytest.approx(0.75)
        assert store.spent("explore-x") == pytest.approx(0.75) and store.spent("explore-y") == 0.0
    finally:
        store.close()


def test_two_handles_on_one_sqlite_file_share_evidence(tmp_path):
    url = f"sqlite:///{tmp_path}/shared.db"
    a, b = open_evidence(url), open_evidence(url)
    try:
        a.add("chat", cell_key("d", "", "valid"), 1.0, H, now=0.0)
        b.add("chat", cell_key("d", "", "valid"), 0.0, H, now=0.0)
        assert a.tallies("chat")[cell_key("d", "", "valid")].n == 2
    finally:
        a.close()
        b.close()


# -- quality_floor on evidence -------------------------------------------------------------------------


def _cand(dep: str, usd_per_1k: float, quality: float | None) -> Candidate:
    return Candidate(dep, f"sim/{dep}", "sim", "chat", usd_per_1k / 1000, usd_per_1k / 1000, quality=quality)


CANDS = [_cand("cheap", 1.0, 0.6), _cand("mid", 3.0, 0.9), _cand("dear", 10.0, 0.95), _cand("new", 0.5, None)]


def _engine(explore_usd: float = 0.0, half_life_s: float | None = 86400) -> tuple[Engine, list[float]]:
    now = [1_000_000.0]
    policy = load_policy({
        "version": 1, "ledger": "memory://",
        "models": {c.model: {"input_usd_per_1k": 1, "output_usd_per_1k": 1} for c in CANDS},
        "quality": {"half_life_s": half_life_s, "prior_weight": 10, "confidence": 0.95, "refresh_s": 0},
        "routes": {"chat": [{"quality_floor": {"min_quality": 0.85,
                                               "measured": {"explore_usd": explore_usd, "explore_window_s": 3600}}}]},
    })
    return Engine(policy, clock=lambda: now[0]), now


REQ = RouteRequest(group="chat", prompt_tokens=500, output_tokens=500)


def _feed(engine: Engine, dep: str, passes: int, fails: int) -> None:
    for i in range(passes + fails):
        engine.quality.record("chat", dep, "valid", i < passes)


def test_thin_evidence_falls_back_to_the_declared_order_then_lower_bounds_decide():
    engine, _ = _engine()
    d = engine.decide(REQ, CANDS)
    assert [c.deployment_id for c in d.ordered] == ["mid", "dear"]  # declared >= 0.85, cheapest first
    assert "declared quality" in d.notes[-1]
    assert {x.deployment_id for x in d.dropped} == {"cheap", "new"}
    _feed(engine, "dear", 200, 4)  # dear shows it clears the bar; mid has no evidence yet
    d = engine.decide(REQ, CANDS)
    assert [c.deployment_id for c in d.ordered] == ["dear", "mid"]  # measured first, then declared
    _feed(engine, "mid", 150, 50)  # mid measured at 0.75: dropped on its upper bound
    d = engine.decide(REQ, CANDS)
    assert [c.deployment_id for c in d.ordered] == ["dear"]
    reason = next(x.reason for x in d.dropped if x.deployment_id == "mid")
    assert "upper bound" in reason and "below the bar 0.85" in reason


def test_exploration_spends_its_budget_only_on_unsure_cheaper_candidates_and_stops():
    engine, now = _engine(explore_usd=20.0)
    # the newcomer costs $0.50 a request here; with no evidence (Beta(1, 1)) its chance of clearing
    # 0.85 is about 11%, so it may use that share of the window's $20: 4 explorations
    chance = pass_rate(Tally(), None, 10, z_for(0.95)).chance_above(0.85)
    assert chance == pytest.approx(0.113, abs=0.002)
    allowed = int(20.0 * chance / 0.5)
    assert allowed == 4
    picks = [engine.decide(REQ, CANDS).chosen.deployment_id for _ in range(8)]
    assert picks == ["new"] * allowed + ["mid"] * (8 - allowed)  # its share of the budget, then the declared pick
    assert engine.quality.store.spent(engine.quality.explore_key("chat", now[0])[0]) == pytest.approx(0.5 * allowed)
    now[0] += 3600  # a new window: budget again
    assert engine.decide(REQ, CANDS).attrs.get("quality_explore") == "new"
    _feed(engine, "new", 2, 30)  # its interval is now below the bar: no more exploring it
    d = engine.decide(REQ, CANDS)
    assert d.chosen.deployment_id == "mid" and "quality_explore" not in d.attrs


def test_without_a_budget_nothing_is_explored_and_a_model_without_a_declared_quality_never_serves():
    engine, _ = _engine(explore_usd=0.0)
    for _ in range(20):
        assert engine.decide(REQ, CANDS).chosen.deployment_id == "mid"


def test_forgetting_lets_an_unused_candidate_be_tried_again():
    engine, now = _engine(explore_usd=100.0, half_life_s=3600)
    _feed(engine, "new", 3, 27)
    assert engine.decide(REQ, CANDS).chosen.deployment_id == "mid"
    now[0] += 10 * 3600  # ten half-lives: 30 answers weigh 0.03 of one
    assert engine.decide(REQ, CANDS).attrs.get("quality_explore") == "new"
    stuck, later = _engine(explore_usd=100.0, half_life_s=None)
    _feed(stuck, "new", 3, 27)
    later[0] += 10 * 3600
    assert stuck.decide(REQ, CANDS).chosen.deployment_id == "mid"


def test_evidence_is_per_class_when_the_policy_says_so():
    now = [0.0]
    policy = load_policy({
        "version": 1, "ledger": "memory://",
        "models": {c.model: {"input_usd_per_1k": 1, "output_usd_per_1k": 1} for c in CANDS},
        "quality": {"class_by": "metadata.step", "refresh_s": 0},
        "routes": {"chat": [{"quality_floor": {"min_quality": 0.85, "measured": {}}}]},
    })
    engine = Engine(policy, clock=lambda: now[0])
    for i in range(100):
        engine.quality.record("chat", "mid", "valid", i % 2 == 0, cls="plan")
        engine.quality.record("chat", "mid", "valid", True, cls="act")
    plan = RouteRequest(group="chat", prompt_tokens=5, output_tokens=5, metadata={"step": "plan"})
    act = RouteRequest(group="chat", prompt_tokens=5, output_tokens=5, metadata={"step": "act"})
    assert engine.decide(plan, CANDS).chosen.deployment_id == "dear"
    assert engine.decide(act, CANDS).chosen.deployment_id == "mid"


def test_a_bad_quality_section_names_the_field():
    from litellm_payg.core.errors import PolicyError

    with pytest.raises(PolicyError, match="quality.class_by"):
        load_policy({"version": 1, "quality": {"class_by": "user"}, "routes": {}})
    with pytest.raises(PolicyError, match="quality.confidence"):
        load_policy({"version": 1, "quality": {"confidence": 1.5}, "routes": {}})


# -- the validators feed it, through LiteLLM's real Router ---------------------------------------------


async def test_validator_verdicts_become_evidence(standin):
    model_list = [
        {"model_name": "chat", "litellm_params": {"model": DEEPSEEK, "api_key": "sk-test", "api_base": standin.url("deepseek")},
         "model_info": {"id": "ds"}},
        {"model_name": "chat", "litellm_params": {"model": MISTRAL, "api_key": "sk-test", "api_base": standin.url("mistral")},
         "model_info": {"id": "ml"}},
    ]
    policy = {"version": 1, "ledger": "memory://", "validate": ["non_empty"],
              "models": {DEEPSEEK: {"quality": 0.9}, MISTRAL: {"quality": 0.95}},
              "routes": {"chat": [{"quality_floor": {"min_quality": 0.85, "measured": {}}}]}}
    standin.fail("deepseek", "empty")
    with attached(model_list, policy, num_retries=2, retry_after=0, disable_cooldowns=True) as (router, engine):
        response = await router.acompletion(model="chat", messages=[{"role": "user", "content": "hi"}])
        await settled(engine)
        assert served_by(response) == "ml"
        tallies = engine.quality.store.tallies("chat")
    assert tallies[cell_key("ds", "", "valid")].s == 0.0 and tallies[cell_key("ds", "", "valid")].n == 1
    assert tallies[cell_key("ml", "", "valid")].s == 1.0


# -- feedback, in Python -------------------------------------------------------------------------------


async def test_feedback_by_response_counts_for_the_deployment_that_answered(standin):
    from litellm_payg.runtime.quality import FeedbackRefused

    model_list = [{"model_name": "chat", "litellm_params": {"model": DEEPSEEK, "api_key": "sk-test",
                                                            "api_base": standin.url("deepseek")}, "model_info": {"id": "ds"}}]
    policy = {"version": 1, "ledger": "memory://", "quality": {"feedback": True, "metrics": {"helpful": "score"}},
              "routes": {"chat": [{"quality_floor": {"min_quality": 0.5}}]}, "models": {DEEPSEEK: {"quality": 0.9}}}
    with attached(model_list, policy) as (router, engine):
        response = await router.acompletion(model="chat", messages=[{"role": "user", "content": "hi"}])
        await settled(engine)
        tally = engine.feedback(response, "helpful", 0.75)
        assert tally.n == 1 and tally.s == 0.75
        assert engine.feedback(response.id, "valid", False).n == 1
        before = engine.quality.store.tallies("chat")
        for bad, status in [(("nope", "valid", True), 404), ((response, "valid", True), 409),
                            ((response, "helpful", 2), 422), ((response, "unknown", 1), 422)]:
            with pytest.raises(FeedbackRefused) as info:
                engine.feedback(*bad)
            assert info.value.status == status
        with pytest.raises(FeedbackRefused):
            engine.feedback(response, "helpful", 0.5, api_key="another-key")
        assert engine.quality.store.tallies("chat") == before  # nothing changed
    assert set(before) == {cell_key("ds", "", "helpful"), cell_key("ds", "", "valid")}


async def test_without_a_quality_section_the_validators_write_no_evidence(standin):
    model_list = [{"model_name": "chat", "litellm_params": {"model": DEEPSEEK, "api_key": "sk-test",
                                                            "api_base": standin.url("deepseek")}, "model_info": {"id": "ds"}}]
    policy = {"version": 1, "ledger": "memory://", "validate": ["non_empty"],
              "routes": {"chat": [{"quality_floor": {"min_quality": 0.5}}]}, "models": {DEEPSEEK: {"quality": 0.9}}}
    with attached(model_list, policy) as (router, engine):
        await router.acompletion(model="chat", messages=[{"role": "user", "content": "hi"}])
        await settled(engine)
        assert engine.quality._store is None  # never opened
    policy["quality"] = {"half_life_s": 3600}
    with attached(model_list, policy) as (router, engine):
        await router.acompletion(model="chat", messages=[{"role": "user", "content": "hi"}])
        await settled(engine)
        assert engine.quality.store.tallies("chat")[cell_key("ds", "", "valid")].s == 1.0


# -- a rating lands once, even when two arrive at once -----------------------------------------------


def _slowed(store):
    """The same store, whose reads answer 50 ms after reading: the window in which a read-then-write
    rating check would let two ratings of one answer both through (the claim must not depend on
    timing)."""
    import time as _time

    base = type(store)

    def recall(self, request_id, now=None):
        found = base.recall(self, request_id, now)
        _time.sleep(0.05)
        return found

    store.__class__ = type("Slowed" + base.__name__, (base,), {"recall": recall})
    return store


def test_concurrent_ratings_of_one_answer_land_exactly_once(store_url):
    """Eight ratings of one answer on one metric at once, from two handles on one store (two engines'
    stores on one Redis or one SQLite file; one memory store): one counts, seven are 409s."""
    import threading

    from litellm_payg.runtime.quality import FeedbackRefused, QualityControl

    policy = load_policy({"version": 1, "ledger": "memory://", "quality": {"feedback": True}, "routes": {}})
    stores = [_slowed(open_evidence(store_url))]
    stores.append(stores[0] if store_url.startswith("memory") else _slowed(open_evidence(store_url)))
    controls = [QualityControl(policy, s, clock=lambda: 1000.0) for s in stores]
    try:
        controls[0].remember_answer("resp-1", {"group": "chat", "deployment_id": "ds", "api_key": "k", "cls": ""})
        barrier = threading.Barrier(8)
        results: list[object] = []

        def rate(i: int) -> None:
            barrier.wait()
            try:
                results.append(controls[i % 2].feedback("resp-1", "valid", True, api_key="k").n)
            except FeedbackRefused as e:
                results.append(e.status)

        threads = [threading.Thread(target=rate, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results, key=str) == [1] + [409] * 7, results
        assert stores[1].tallies("chat")[cell_key("ds", "", "valid")].n == 1
        assert [r["source"] for r in stores[0].log("chat")] == ["feedback"]
    finally:
        for s in set(map(id, stores)):
            next(x for x in stores if id(x) == s).close()


# -- explain shows the bound each candidate was judged on ------------------------------------------------


def test_explain_shows_the_bound_each_candidate_was_judged_on(tmp_path, capsys):
    import json

    import yaml

    from litellm_payg.tools.cli import main

    url = f"sqlite:///{tmp_path}/ledger.db"
    models = {"deepseek/deepseek-chat": (0.8, 5, 25), "gpt-4o-mini": (0.9, 3, 0), "mistral/mistral-large-latest": (0.9, 200, 2)}
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump({"version": 1, "ledger": url, "quality": {"half_life_s": None},
                                      "models": {m: {"quality": q} for m, (q, _, _) in models.items()},
                                      "routes": {"chat": [{"quality_floor": {"min_quality": 0.85, "measured": {}}}]}}))
    store = open_evidence(url)
    for model, (_, passes, fails) in models.items():  # without a config the deployment id is the model
        for i in range(passes + fails):
            store.add("chat", cell_key(model, "", "valid"), 1.0 if i < passes else 0.0, None, now=1000.0)
    store.close()
    capsys.readouterr()
    assert main(["explain", str(policy), "--model", "chat", "--prompt-tokens", "100"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.split() and line.split()[0] in models}
    # mistral: Beta(9 + 200, 1 + 2); deepseek: Beta(8 + 5, 2 + 25); gpt-4o-mini: Beta(9 + 3, 1 + 0)
    z = z_for(0.95)
    ml = pass_rate(Tally(0.0, 202.0, 200.0, 200.0, 202), 0.9, 10, z)
    ds = pass_rate(Tally(0.0, 30.0, 5.0, 5.0, 30), 0.8, 10, z)
    mini = pass_rate(Tally(0.0, 3.0, 3.0, 3.0, 3), 0.9, 10, z)
    assert ml.lo >= 0.85 and ds.hi < 0.85 and mini.lo < 0.85 <= mini.hi
    assert f"CHOSEN; judged on: lower bound {ml.lo:.3f} clears the bar 0.85 (measured valid {ml.mean:.3f}, n=202)" in lines["mistral/mistral-large-latest"]
    assert f"judged on: upper bound {ds.hi:.3f} is below the bar 0.85 (measured valid {ds.mean:.3f}, n=30)" in lines["deepseek/deepseek-chat"]
    assert (f"judged on: interval [{mini.lo:.3f}, {mini.hi:.3f}] straddles the bar 0.85 (measured valid {mini.mean:.3f}, n=3)"
            in lines["gpt-4o-mini"])
    assert main(["explain", str(policy), "--model", "chat", "--prompt-tokens", "100", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["judged"]["gpt-4o-mini"].startswith(f"interval [{mini.lo:.3f}, ")
    assert out["candidates"][0]["judged"].startswith(f"lower bound {ml.lo:.3f} clears")
    assert {d["deployment_id"]: d["judged"] for d in out["dropped"]}["deepseek/deepseek-chat"].startswith("upper bound")


def test_a_rating_whose_write_failed_can_be_sent_again(store_url):
    """The claim is released when the observation cannot be written, so a retry is not a 409."""
    from litellm_payg.runtime.quality import QualityControl
    from litellm_payg.stores.evidence import EvidenceError

    policy = load_policy({"version": 1, "ledger": "memory://", "quality": {"feedback": True}, "routes": {}})
    store = open_evidence(store_url)
    base = type(store)
    failures = [1]

    def add(self, *args, **kwargs):
        if failures:
            failures.pop()
            raise EvidenceError("the store went away for a moment")
        return base.add(self, *args, **kwargs)

    store.__class__ = type("Flaky" + base.__name__, (base,), {"add": add})
    quality = QualityControl(policy, store, clock=lambda: 1000.0)
    try:
        quality.remember_answer("resp-1", {"group": "chat", "deployment_id": "ds", "api_key": "k", "cls": ""})
        with pytest.raises(EvidenceError):
            quality.feedback("resp-1", "valid", True, api_key="k")
        assert quality.feedback("resp-1", "valid", True, api_key="k").n == 1
    finally:
        store.close()
