"""Run budgets inside a real LiteLLM proxy (``litellm --config ...``), driven by the OpenAI SDK.

One proxy for the module; each test uses runs of its own (session ids), named by the request's
``litellm_session_id`` or LiteLLM's ``x-litellm-trace-id`` header. Deployments answer with
``mock_response`` (10 prompt + 20 completion tokens) at prices set on them, so an answer costs
3e-4 USD on the dear deployment and 3e-5 on the cheap one. A second proxy has a plain per-run cap
with a 5-second idle window: the 50-request burst that only the cap stops, and the run that idles
past its window (a real 5.5 s sleep; through a Router the clock is injected, ``test_runs.py``).
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml

from proxy_fixtures import RunningProxy, litellm_proxy_factory  # noqa: F401  (fixture)
from trust_helpers import AUTH_MODULE, AUTH_MODULE_NAME, new_key

from litellm_payg.stores.ledger import open_ledger

CHEAP, DEAR = "deepseek/deepseek-chat", "mistral/mistral-large-latest"
DEAR_COST, CHEAP_COST = 30 * 1e-5, 30 * 1e-6
LIMIT = 10 * DEAR_COST
POLICY = {
    "version": 1,
    "ledger": "sqlite:///payg-ledger.db",
    "models": {CHEAP: {"quality": 0.7}, DEAR: {"quality": 0.95}},
    "routes": {"agent": [{"quality_floor": {"min_quality": 0.9, "keep_past_downgrade": False}}]},  # may be downgraded
    # a header of the operator's choosing first; LiteLLM's session id (and x-litellm-trace-id) else
    "sessions": {"id_from": ["header:x-agent-run", "litellm_session_id"]},
    "budgets": [{
        "name": "per-run", "scope": "session:*", "window": "session:30m", "limit_usd": LIMIT,
        "max_requests": 12, "loop_guard": 3,
        "downgrade": [{"at": 0.5, "min_quality": 0.6}],
        "final_reserve": {"share": 0.3, "when": {"metadata.step": "final"}},
    }],
}


def _deployment(model: str, dep_id: str, price: float) -> dict:
    return {
        "model_name": "agent",
        "litellm_params": {"model": model, "api_key": "not-used-mock-response", "mock_response": f"answered by {dep_id}",
                           "input_cost_per_token": price, "output_cost_per_token": price},
        "model_info": {"id": dep_id},
    }


CONFIG = {
    "model_list": [_deployment(CHEAP, "cheap", 1e-6), _deployment(DEAR, "dear", 1e-5)],
    "litellm_settings": {"callbacks": ["litellm_payg.proxy_handler"]},
    "general_settings": {"custom_auth": f"{AUTH_MODULE_NAME}.user_api_key_auth"},
}


@pytest.fixture(scope="module")
def proxy(litellm_proxy_factory) -> RunningProxy:  # noqa: F811
    return litellm_proxy_factory(
        CONFIG, name="runs",
        files={"payg-policy.yaml": yaml.safe_dump(POLICY, sort_keys=False), f"{AUTH_MODULE_NAME}.py": AUTH_MODULE},
    ).wait_ready()


def _client(proxy: RunningProxy):
    import openai

    return openai.OpenAI(base_url=f"{proxy.base_url}/v1", api_key=new_key(label="runs"), max_retries=0, timeout=30)


def _ask(client, run: str, text: str, *, via_header: bool | str = False, max_tokens: int = 20, **metadata):
    """(answering deployment, response headers) of one request of run ``run``."""
    extra_body: dict = {"metadata": metadata} if metadata else {}
    extra_headers = None
    if via_header:
        extra_headers = {via_header if isinstance(via_header, str) else "x-litellm-trace-id": run}
    else:
        extra_body["litellm_session_id"] = run
    raw = client.chat.completions.with_raw_response.create(
        model="agent", messages=[{"role": "user", "content": text}], max_tokens=max_tokens,
        extra_body=extra_body, extra_headers=extra_headers)
    return raw.parse().choices[0].message.content.removeprefix("answered by "), raw.headers


def _refusal(client, run: str, text: str, **kw) -> str:
    import openai

    with pytest.raises(openai.RateLimitError) as info:
        _ask(client, run, text, **kw)
    assert info.value.status_code == 429
    return str(info.value)


def _run() -> str:
    return f"run-{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize("via_header", [False, True, "x-agent-run"],
                         ids=["litellm_session_id", "x-litellm-trace-id", "sessions.id_from header"])
def test_the_loop_guard_stops_a_runaway_client_through_the_proxy(proxy, via_header):
    client, run = _client(proxy), _run()
    for _ in range(2):
        _ask(client, run, "Same thing again, please.", via_header=via_header)
    message = _refusal(client, run, "Same thing again, please.", via_header=via_header)
    assert f"run '{run}' (budget 'per-run', session:30m) refused by the loop guard" in message
    assert "already sent 2 times in this run (loop_guard: 3)" in message
    _ask(client, run, "Something new.", via_header=via_header)  # not a loop


def test_max_requests_and_the_downgrade_through_the_proxy_with_run_headers(proxy):
    client, run = _client(proxy), _run()
    served, spends = [], []
    for i in range(12):
        answered, headers = _ask(client, run, f"step {i}")
        served.append(answered)
        assert headers["x-payg-chosen"] == answered
        assert headers["x-payg-run-budget"] == "per-run"
        assert float(headers["x-payg-run-limit-usd"]) == pytest.approx(LIMIT)
        spent, in_flight = float(headers["x-payg-run-spend-usd"]), float(headers["x-payg-run-in-flight-usd"])
        assert float(headers["x-payg-run-remaining-usd"]) == pytest.approx(LIMIT - spent - in_flight, abs=1e-9)
        # this request is counted from its reservation on (settled or still in flight)
        assert int(headers["x-payg-run-requests"]) == i + 1
        spends.append(spent + in_flight)
    # the dear deployment until half the run's budget is used, the cheap one after
    assert served[:5] == ["dear"] * 5 and set(served[6:]) == {"cheap"}, served
    assert spends == sorted(spends) and spends[-1] >= 5 * DEAR_COST - 1e-9
    message = _refusal(client, run, "step 12")
    assert f"run '{run}' (budget 'per-run', session:30m) refused by max_requests: 12 of 12 requests used" in message


def test_the_final_request_gets_through_from_the_reserve_through_the_proxy(proxy):
    client, run = _client(proxy), _run()
    for i in range(5):
        assert _ask(client, run, f"work {i}")[0] == "dear"
    # past half the budget the cheap deployment serves; a large max_tokens makes this request's
    # estimate (~1e-3) reach into the final reserve (30% of the limit)
    message = _refusal(client, run, "work 5", max_tokens=1000)
    assert f"run '{run}' (budget 'per-run', session:30m) refused by final_reserve" in message
    answered, headers = _ask(client, run, "final answer", max_tokens=1000, step="final")
    assert answered == "cheap"
    # the answer is settled before the proxy writes its headers: they show what the run spent, with
    # nothing of it in flight (the reservation that reached into the reserve is settled)
    assert float(headers["x-payg-run-in-flight-usd"]) == 0
    assert 0.5 * LIMIT < float(headers["x-payg-run-spend-usd"]) < LIMIT


def test_50_concurrent_requests_of_one_run_stay_under_its_cap_through_the_proxy(proxy):
    import openai

    run = _run()
    client = _client(proxy)

    def one(i: int) -> str:
        try:
            # max_tokens=60: a reservation of ~7e-4 on the dear deployment, so only 4 fit the cap at once
            return _ask(client, run, f"parallel {i}", max_tokens=60, step="final")[0]
        except openai.RateLimitError as exc:
            assert f"run '{run}'" in str(exc), str(exc)
            assert "refused by its cap" in str(exc) or "refused by max_requests" in str(exc), str(exc)
            return "cap" if "refused by its cap" in str(exc) else "refused"

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(one, range(50)))
    # which rule stops the burst depends on how many requests the proxy really runs at once on this
    # machine (the downgrade sends the run to the cheap deployment once half its budget is used);
    # either way the run stays under its cap and its request count
    refused = results.count("cap") + results.count("refused")
    assert 0 < 50 - refused <= 12
    # what the run spent, as the proxy's ledger has it
    deadline = time.monotonic() + 15
    with open_ledger(f"sqlite:///{proxy.workdir}/payg-ledger.db") as ledger:
        while ledger.open_reservations() and time.monotonic() < deadline:
            time.sleep(0.05)
        mine = [r for r in ledger.records() if r.attrs.get("session") == run]
    served = 50 - refused
    assert len(mine) == served
    assert sum(r.amount_usd for r in mine) <= LIMIT + 1e-12
    print(f"50 concurrent requests of one run through the proxy: {served} served, "
          f"${sum(r.amount_usd for r in mine):.6f} spent of ${LIMIT:.6f}; refused by the cap: {results.count('cap')}")


# -- a second proxy: a plain per-run cap with a short idle window ------------------------------------

IDLE_S = 5
CAP_POLICY = {
    "version": 1,
    "ledger": "sqlite:///payg-ledger.db",
    "models": {DEAR: {"quality": 0.95}},
    "routes": {"agent": [{"quality_floor": {"min_quality": 0.9, "keep_past_downgrade": False}}]},  # may be downgraded
    "budgets": [{"name": "per-run", "scope": "session:*", "window": f"session:{IDLE_S}s", "limit_usd": 2.5 * DEAR_COST}],
}
CAP_CONFIG = {**CONFIG, "model_list": [_deployment(DEAR, "dear", 1e-5)]}


@pytest.fixture(scope="module")
def cap_proxy(litellm_proxy_factory) -> RunningProxy:  # noqa: F811
    return litellm_proxy_factory(
        CAP_CONFIG, name="runs-cap",
        files={"payg-policy.yaml": yaml.safe_dump(CAP_POLICY, sort_keys=False), f"{AUTH_MODULE_NAME}.py": AUTH_MODULE},
    ).wait_ready()


def test_50_concurrent_requests_of_one_run_are_stopped_by_its_cap_through_the_proxy(cap_proxy):
    """No request cap, no downgrade: only the dollars stop the burst, and the run's spend never
    passes its cap (reservations are taken before each call, atomically)."""
    import openai

    run, client = _run(), _client(cap_proxy)

    def one(i: int) -> str:
        try:
            return _ask(client, run, f"parallel {i}")[0]
        except openai.RateLimitError as exc:
            assert f"run '{run}'" in str(exc) and "refused by its cap" in str(exc), str(exc)
            return "cap"

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(one, range(50)))
    served = results.count("dear")
    assert served == 2 and results.count("cap") == 48, results  # 2.5 answers' worth: two fit
    deadline = time.monotonic() + 15
    with open_ledger(f"sqlite:///{cap_proxy.workdir}/payg-ledger.db") as ledger:
        while ledger.open_reservations() and time.monotonic() < deadline:
            time.sleep(0.05)
        mine = [r for r in ledger.records() if r.attrs.get("session") == run]
    assert len(mine) == 2 and sum(r.amount_usd for r in mine) == pytest.approx(2 * DEAR_COST, abs=1e-12)


def test_a_run_that_idles_past_its_window_starts_fresh_through_the_proxy(cap_proxy):
    """The proxy's own clock: the run spends its cap, is refused, idles IDLE_S seconds (a real
    sleep: the proxy is another process), and its next request starts a new window."""
    client, run = _client(cap_proxy), _run()
    assert _ask(client, run, "one")[0] == "dear"
    assert _ask(client, run, "two")[0] == "dear"
    assert "refused by its cap" in _refusal(client, run, "three")
    time.sleep(IDLE_S + 0.5)
    answered, headers = _ask(client, run, "after a pause")
    assert answered == "dear"
    assert int(headers["x-payg-run-requests"]) == 1  # a fresh window: this request is its first


@pytest.mark.parametrize("forged", [
    "VICTIM|session", "VICTIM%7Csession", "VICTIM|per-run", "session:VICTIM", " VICTIM", "x" * 20_000,
], ids=["separator", "escaped separator", "budget separator", "scope prefix", "leading space", "20k chars"])
def test_a_hostile_session_id_cannot_reach_another_runs_cap_through_the_proxy(cap_proxy, forged):
    """Session ids are the client's: a crafted one is its own run. The victim's run stays exactly as
    spent (and refused); the crafted run starts with a cap of its own; nothing answers 500."""
    client, victim = _client(cap_proxy), _run()
    forged = forged.replace("VICTIM", victim)
    assert _ask(client, victim, "one")[0] == "dear"
    assert _ask(client, victim, "two")[0] == "dear"
    assert "refused by its cap" in _refusal(client, victim, "three")
    answered, headers = _ask(client, forged, "a crafted run")
    assert answered == "dear" and int(headers["x-payg-run-requests"]) == 1  # a new run, not the victim's
    assert "refused by its cap" in _refusal(client, victim, "four")  # the victim's cap did not move
    with open_ledger(f"sqlite:///{cap_proxy.workdir}/payg-ledger.db") as ledger:
        paid = sum(r.amount_usd for r in ledger.records() if r.attrs.get("session") == victim)
    assert paid == pytest.approx(2 * DEAR_COST, abs=1e-12)


@pytest.mark.parametrize("value", [{"id": "x"}, ["a", "b"], True, 10**40, 3.5, None],
                         ids=["object", "list", "bool", "huge int", "float", "null"])
def test_a_session_id_of_the_wrong_type_is_no_run_and_no_500(cap_proxy, value):
    """``litellm_session_id`` is LiteLLM's own parameter and a string: any other type is a 400 naming
    it (``wire/request_checks.LITELLM_PARAM_TYPES``), before anything is reserved; null is no run
    (the run budget does not apply: a client can always leave its run, see the README's trust
    note). Never a 500."""
    import openai

    client = _client(cap_proxy)
    body = {"litellm_session_id": value, "metadata": {"session_id": value}}
    if value is None:
        raw = client.chat.completions.with_raw_response.create(
            model="agent", messages=[{"role": "user", "content": "hello"}], max_tokens=20, extra_body=body)
        assert raw.http_response.status_code == 200
        assert "x-payg-run-requests" not in raw.headers
        return
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="agent", messages=[{"role": "user", "content": "hello"}],
                                       max_tokens=20, extra_body=body)
    assert refused.value.status_code == 400
    assert "invalid request field 'litellm_session_id': expected a string" in str(refused.value)
