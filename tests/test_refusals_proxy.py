"""A budget refusal through a real LiteLLM proxy is final, and says so to every client.

Before: the proxy answered a refusal with a bare 429, so the OpenAI SDK (default ``max_retries=2``)
sent the refused request three times and an agent framework read "back off and retry". Now the
answer carries ``x-should-retry: false``, a ``retry-after`` only where waiting helps (a calendar
window that resets), ``error.type: budget_exceeded`` and ``error.provider_specific_fields.payg``
naming the budget, scope, rule and limit.

How many times a request reached the proxy is counted by the proxy's own ``custom_auth`` (written
next to ``config.yaml``): LiteLLM calls it once for every request it receives, before any callback,
and it appends the request's key to ``requests.log``. A client that retried would leave three lines.
"""

from __future__ import annotations

import time
import uuid

import pytest
import yaml

from proxy_fixtures import RunningProxy, litellm_proxy_factory  # noqa: F401  (fixture)
from trust_helpers import AUTH_MODULE, AUTH_MODULE_NAME, new_key

CHEAP = "deepseek/deepseek-chat"
COUNTING_AUTH = AUTH_MODULE.replace(
    "    key = (api_key or \"\").removeprefix(\"Bearer \").strip()\n",
    "    key = (api_key or \"\").removeprefix(\"Bearer \").strip()\n"
    "    with open(\"requests.log\", \"a\", encoding=\"utf-8\") as log:\n"
    "        log.write(key + \"\\n\")\n",
)
assert COUNTING_AUTH != AUTH_MODULE

#: a callback that refuses in the proxy's pre-call hook, before the Router (model "precall" only):
#: a refusal raised there must reach the client the same way
PRECALL_MODULE_NAME = "payg_precall_refusal"
PRECALL_MODULE = '''
from litellm.integrations.custom_logger import CustomLogger
from litellm_payg.adapter.litellm_errors import BudgetExceeded


class RefuseBeforeRouting(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        if data.get("model") == "precall":
            raise BudgetExceeded(budget="precall-daily", scope="global", window="day", limit_usd=1.0, spent_usd=1.0,
                                 resets_at=__import__("datetime").datetime.now(__import__("datetime").timezone.utc)
                                 + __import__("datetime").timedelta(hours=1))
        return data


handler = RefuseBeforeRouting()
'''

POLICY = {
    "version": 1,
    "ledger": "sqlite:///payg-ledger.db",
    "models": {CHEAP: {"quality": 0.7}, "openai/gpt-4o-mini": {"quality": 0.5}},
    "routes": {name: [{"quality_floor": {"min_quality": 0}}] for name in ("capped", "agent", "first")},
    "budgets": [
        # far below one request's estimate: every request to the group is refused
        {"name": "capped-daily", "scope": "group:capped", "window": "day", "limit_usd": 1e-9, "on_exceed": "block"},
        {"name": "per-run", "scope": "session:*", "window": "session:30m", "limit_usd": 100, "max_requests": 1},
    ],
}


def _deployment(group: str, dep_id: str, **params) -> dict:
    return {
        "model_name": group,
        "litellm_params": {"model": CHEAP, "api_key": "not-used-mock-response", "mock_response": f"answered by {dep_id}",
                           "input_cost_per_token": 1e-6, "output_cost_per_token": 1e-6, **params},
        "model_info": {"id": dep_id},
    }


CONFIG = {
    "model_list": [
        _deployment("capped", "capped-1"),
        _deployment("agent", "agent-1"),
        # nothing listens on port 9: the attempt fails and the request falls back to "capped"
        {"model_name": "first", "litellm_params": {"model": "openai/gpt-4o-mini", "api_key": "sk-unused",
                                                    "api_base": "http://127.0.0.1:9/v1"},
         "model_info": {"id": "first-1"}},
    ],
    "litellm_settings": {"callbacks": [f"{PRECALL_MODULE_NAME}.handler", "litellm_payg.proxy_handler"]},
    "router_settings": {"num_retries": 0, "fallbacks": [{"first": ["capped"]}]},
    "general_settings": {"custom_auth": f"{AUTH_MODULE_NAME}.user_api_key_auth"},
}


@pytest.fixture(scope="module")
def proxy(litellm_proxy_factory) -> RunningProxy:  # noqa: F811
    return litellm_proxy_factory(
        CONFIG, name="refusals",
        files={"payg-policy.yaml": yaml.safe_dump(POLICY, sort_keys=False), f"{AUTH_MODULE_NAME}.py": COUNTING_AUTH,
               f"{PRECALL_MODULE_NAME}.py": PRECALL_MODULE},
    ).wait_ready()


def _received(proxy: RunningProxy, key: str) -> int:
    """How many requests with ``key`` the proxy received (its custom_auth's log)."""
    try:
        lines = (proxy.workdir / "requests.log").read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return 0
    return lines.count(key)


def _logged_since(proxy: RunningProxy, start: int, text: str, timeout: float = 5.0) -> str:
    """The proxy's log after offset ``start``, once it holds ``text`` (and a moment more for the
    lines that follow it)."""
    deadline = time.monotonic() + timeout
    while text not in proxy.log()[start:] and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    return proxy.log()[start:]


def _sdk(proxy: RunningProxy, key: str):
    """The OpenAI SDK as an application uses it: default ``max_retries`` (2)."""
    import openai

    client = openai.OpenAI(base_url=f"{proxy.base_url}/v1", api_key=key, timeout=30)
    assert client.max_retries == 2
    return client


def _refused(proxy: RunningProxy, key: str, model: str, **extra_body):
    """The SDK's error for one refused request; asserts the proxy received it exactly once."""
    import openai

    client = _sdk(proxy, key)
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hello"}], max_tokens=20,
                                       extra_body=extra_body or None)
    assert _received(proxy, key) == 1, "the SDK sent the refused request more than once"
    error = info.value
    assert error.status_code == 429
    assert error.response.headers.get("x-should-retry") == "false"
    assert error.type == "budget_exceeded"
    assert error.body["type"] == "budget_exceeded"
    return error


def test_a_daily_cap_refusal_is_sent_once_and_says_when_the_window_resets(proxy):
    key = new_key(label="daily")
    log_before = len(proxy.log())
    error = _refused(proxy, key, "capped")
    payg = error.body["provider_specific_fields"]["payg"]
    assert payg["code"] == "budget_exceeded"
    assert payg["rule"] == "cap" and payg["budget"] == "capped-daily" and payg["scope"] == "group:capped"
    assert payg["window"] == "day" and payg["limit_usd"] == pytest.approx(1e-9)
    wait = int(error.response.headers["retry-after"])
    assert 0 < wait <= 86400 and payg["retry_after_s"] == pytest.approx(wait, abs=2)
    assert "budget 'capped-daily' (group:capped, day) exceeded" in error.message
    # one refusal, one ERROR line in the proxy log, as for a client error: no traceback
    logged = _logged_since(proxy, log_before, "Exception occured")
    assert logged.count("Exception occured") == 1, logged
    assert "Traceback" not in logged, logged


def test_a_runs_max_requests_refusal_is_sent_once_with_no_retry_after(proxy):
    key, run = new_key(label="run"), f"run-{uuid.uuid4().hex[:8]}"
    client = _sdk(proxy, key)
    client.chat.completions.create(model="agent", messages=[{"role": "user", "content": "step 1"}], max_tokens=20,
                                   extra_body={"litellm_session_id": run})
    assert _received(proxy, key) == 1
    import openai

    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="agent", messages=[{"role": "user", "content": "step 2"}], max_tokens=20,
                                       extra_body={"litellm_session_id": run})
    assert _received(proxy, key) == 2, "the SDK sent the refused request more than once"
    error = info.value
    assert error.response.headers.get("x-should-retry") == "false"
    assert "retry-after" not in error.response.headers  # waiting does not lift a run's max_requests
    payg = error.body["provider_specific_fields"]["payg"]
    assert payg["rule"] == "max_requests" and payg["count"] == 1 and payg["count_limit"] == 1
    # the run is the key's own (sessions.owner: key): its scope names the session id qualified by the key
    assert payg["budget"] == "per-run" and payg["scope"].startswith(f"session:{run}@key:") and payg["retry_after_s"] is None


def test_a_refusal_on_a_fallback_hop_is_final_too(proxy):
    """``first`` fails (nothing listens), the Router falls back to ``capped``, whose filter refuses:
    the client gets the refusal, once."""
    key = new_key(label="hop")
    error = _refused(proxy, key, "first")
    assert error.body["provider_specific_fields"]["payg"]["budget"] == "capped-daily"
    assert "retry-after" in error.response.headers


def test_a_refusal_in_the_proxys_pre_call_hook_is_answered_the_same_way(proxy):
    key = new_key(label="precall")
    error = _refused(proxy, key, "precall")
    assert error.body["provider_specific_fields"]["payg"]["budget"] == "precall-daily"
    assert 3500 <= int(error.response.headers["retry-after"]) <= 3600


def test_litellms_own_client_sends_a_refused_request_once(proxy):
    """``litellm.completion`` against the proxy (LiteLLM's OpenAI client, its own retries)."""
    import litellm

    key = new_key(label="litellm")
    with pytest.raises(litellm.RateLimitError) as info:
        litellm.completion(model="openai/capped", api_base=f"{proxy.base_url}/v1", api_key=key,
                           messages=[{"role": "user", "content": "hello"}], max_tokens=20)
    assert _received(proxy, key) == 1
    assert "budget 'capped-daily'" in str(info.value)


def test_a_streamed_request_is_refused_once_too(proxy):
    import openai

    key = new_key(label="stream")
    with pytest.raises(openai.RateLimitError) as info:
        stream = _sdk(proxy, key).chat.completions.create(
            model="capped", messages=[{"role": "user", "content": "hello"}], max_tokens=20, stream=True)
        list(stream)
    assert _received(proxy, key) == 1
    assert info.value.response.headers.get("x-should-retry") == "false"
    assert info.value.body["provider_specific_fields"]["payg"]["budget"] == "capped-daily"
