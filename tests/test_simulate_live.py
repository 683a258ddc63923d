"""``simulate`` caps ``key:*``, ``end_user:*`` and ``org:*`` budgets exactly as a live Router does.

The same requests, in the same order, go through ``simulate`` (one traffic line per request, each
naming its key, end user or organisation) and through a real LiteLLM Router (``mock_response``,
with the metadata LiteLLM's proxy auth puts on a request: ``user_api_key_hash``,
``user_api_key_end_user_id`` and the body's ``user``, ``user_api_key_org_id``). Both must serve and
refuse the same requests and charge the same dollars. Before the traffic could name a key, an end
user or an organisation, a live Router refused 5 of 5 requests where simulate refused 0 of 20.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math

import litellm
import pytest
import yaml

import litellm_payg
from litellm_payg.core.errors import BudgetRefused
from litellm_payg.tools.simulate import parse_traffic, simulate

MODEL = "deepseek/deepseek-chat"
# 10 prompt tokens by LiteLLM's counter, as many as its mock usage reports: the reservation and the
# charge of a live request then read the same sizes as the simulated one's
MESSAGES = [{"role": "user", "content": "one two three"}]
PROMPT, COMPLETION, MAX_TOKENS = 10, 20, 20
MODEL_LIST = [{"model_name": "chat", "litellm_params": {"model": MODEL, "api_key": "sk-not-used", "mock_response": "ok"},
               "model_info": {"id": "ds"}}]
ORG_OF = {"a": "o1", "b": "o1", "c": "o2"}  # keys a and b are one organisation's
WHO = "aabcabacbbacaabcbbca"  # the 20 requests, by who sends them


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _traffic_fields(kind: str, who: str) -> dict:
    """What a traffic line says of the request's sender."""
    if kind == "key":
        return {"key": f"sk-{who}"}
    if kind == "end_user":
        return {"key": "sk-app", "end_user": f"customer-{who}"}
    return {"key": f"sk-{who}", "org": ORG_OF[who]}


def _live_kwargs(kind: str, who: str) -> dict:
    """What LiteLLM's proxy puts on the same request once its auth ran (the key's hash, its end
    user, its organisation), and the body's ``user`` for an end user."""
    if kind == "key":
        return {"metadata": {"user_api_key_hash": _hash(f"sk-{who}")}}
    if kind == "end_user":
        return {"user": f"customer-{who}",
                "metadata": {"user_api_key_hash": _hash("sk-app"), "user_api_key_end_user_id": f"customer-{who}"}}
    return {"metadata": {"user_api_key_hash": _hash(f"sk-{who}"), "user_api_key_org_id": ORG_OF[who]}}


def _policy(kind: str, limit: float) -> dict:
    return {"version": 1, "ledger": "memory://",
            "budgets": [{"name": "cap", "scope": f"{kind}:*", "window": "rolling:1d", "limit_usd": limit}]}


async def _live(policy_path: str, kind: str) -> tuple[list[bool], float]:
    router = litellm.Router(model_list=MODEL_LIST)
    engine = litellm_payg.attach(router, policy_path)
    served = []
    try:
        for who in WHO:
            try:
                await router.acompletion(model="chat", messages=MESSAGES, max_tokens=MAX_TOKENS, **_live_kwargs(kind, who))
                served.append(True)
            except BudgetRefused:
                served.append(False)
        spent = math.fsum(r.amount_usd for r in engine.spend.ledger.records())
    finally:
        engine.detach()
    return served, spent


def _simulated(policy_path: str, config_path: str, kind: str) -> tuple[list[bool], float, dict]:
    lines = [json.dumps({"name": f"r{i}", "group": "chat", "prompt_tokens": PROMPT, "completion_tokens": COMPLETION,
                         "max_tokens": MAX_TOKENS, "time": f"2025-01-01T10:00:{i:02d}Z", **_traffic_fields(kind, who)})
             for i, who in enumerate(WHO)]
    result = simulate(policy_path, parse_traffic("\n".join(lines), "traffic.jsonl"), config=config_path,
                      start=1735689600.0, period_days=1)
    return [n == 1 for n in result.served_by_class], result.policy_cost, result.blocked


@pytest.mark.parametrize("kind", ["key", "end_user", "org"])
def test_simulate_serves_and_refuses_what_a_live_router_does(tmp_path, kind):
    prompt_usd, completion_usd = litellm.cost_per_token(model=MODEL, prompt_tokens=PROMPT, completion_tokens=COMPLETION)
    limit = 3.5 * (prompt_usd + completion_usd)  # three requests per scope value, then refusals
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(_policy(kind, limit)))
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"model_list": MODEL_LIST}))

    live_served, live_spent = asyncio.run(_live(str(policy), kind))
    sim_served, sim_spent, blocked = _simulated(str(policy), str(config), kind)

    # the cap bites on both sides, per scope value: 3 per key/end user, 3 for org o1's two keys together
    values = {"key": 3, "end_user": 3, "org": 2}[kind]
    assert sum(live_served) == 3 * values, live_served
    assert sim_served == live_served
    assert blocked == {"cap": len(WHO) - 3 * values}
    assert sim_spent == pytest.approx(live_spent, rel=1e-12, abs=0)
    assert live_spent == pytest.approx(3 * values * (prompt_usd + completion_usd), rel=1e-12)


def test_a_runs_line_names_its_key_and_org_too(tmp_path):
    """A runs line takes the same attribute fields as a request class: its runs' requests count in
    the organisation's cap."""
    prompt_usd, completion_usd = litellm.cost_per_token(model=MODEL, prompt_tokens=PROMPT, completion_tokens=COMPLETION)
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(_policy("org", 3.5 * (prompt_usd + completion_usd))))
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"model_list": MODEL_LIST}))
    runs = {"runs": {"name": "agent", "group": "chat", "count": 2, "key": "sk-a", "org": "o1", "time": "2025-01-01T10:00:00Z",
                     "steps": [{"step": "act", "prompt_tokens": PROMPT, "completion_tokens": COMPLETION, "max_tokens": MAX_TOKENS,
                                "repeat": 2},
                               {"step": "final", "prompt_tokens": PROMPT, "completion_tokens": COMPLETION,
                                "max_tokens": MAX_TOKENS}]}}
    result = simulate(str(policy), parse_traffic(json.dumps(runs), "runs.jsonl"), config=str(config),
                      start=1735689600.0, period_days=1)
    assert sum(result.served_by_class) == 3 and result.blocked == {"cap": 3}


def test_what_if_caps_an_org_from_its_history_rows(tmp_path):
    """``what-if``'s history rows carry the key's organisation (LiteLLM's spend logs keep it): an
    ``org:*`` budget refuses the same requests there."""
    from litellm_payg.adapter.deployments import candidates_from_config
    from litellm_payg.policy.load import load_policy
    from litellm_payg.tools.whatif import replay
    from litellm_payg.tools.whatif_history import HistoryRow

    prompt_usd, completion_usd = litellm.cost_per_token(model=MODEL, prompt_tokens=PROMPT, completion_tokens=COMPLETION)
    policy = tmp_path / "policy.yaml"
    # a history row has no max_tokens: a request reserves the model's whole output, and is served
    # while the org's spend is at most 2.5 requests' (three of them)
    most = litellm.get_model_info(MODEL)["max_output_tokens"]
    reserve = sum(litellm.cost_per_token(model=MODEL, prompt_tokens=PROMPT, completion_tokens=most))
    policy.write_text(yaml.safe_dump(_policy("org", reserve + 2.5 * (prompt_usd + completion_usd))))
    rows = [HistoryRow(request_id=f"r{i}", ts=1735725600.0 + i, group="chat", model=MODEL, deployment="ds",
                       prompt_tokens=PROMPT, completion_tokens=COMPLETION, key=_hash(f"sk-{who}"), org=ORG_OF[who])
            for i, who in enumerate(WHO)]
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"model_list": MODEL_LIST}))
    loaded = load_policy(policy)
    result = replay(loaded, rows, candidates_by_group=candidates_from_config(str(config), loaded))
    assert sum(n for (by, _), n in result.blocked.items() if by == "cap") == len(WHO) - 6
