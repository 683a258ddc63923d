"""``org:``, the key's organisation, added as one registration (``default_plugins/scopes.py``).

Through a real Router with the metadata LiteLLM's proxy auth writes (``user_api_key_hash``,
``user_api_key_org_id``): an ``org:*`` budget caps the keys of one organisation together, and never
reads an organisation the client writes. Then the same with two keys of one organisation through a
real LiteLLM proxy (no database: ``custom_auth`` says which organisation a key belongs to), and the
places a kind shows up once registered: ``when: {org: ...}``, ``sticky_by: org``, ``explain --org``,
a plugin's own kind.
"""

from __future__ import annotations

import hashlib
import json
import textwrap
import uuid

import pytest
import yaml
from proxy_fixtures import litellm_proxy_factory  # noqa: F401  (fixture)
from routing_helpers import DEEPSEEK, MISTRAL, attached, deployment, served_by, settled

from litellm_payg.adapter.litellm_errors import BudgetExceeded
from litellm_payg.core.errors import PolicyError
from litellm_payg.policy.load import load_policy
from litellm_payg.tools.cli import main as cli
from litellm_payg.tools.testing import spend

MESSAGES = [{"role": "user", "content": "one two three"}]
MOCK_COST = 10 * 2.8e-07 + 20 * 4.2e-07  # LiteLLM's mock usage on deepseek-chat, bundled price
CAP = 3.5 * MOCK_COST  # three requests of max_tokens=20 (each reserves its own cost), then refused


def _proxy_metadata(key: str, org: str | None) -> dict:
    """What LiteLLM's proxy auth writes into a request's metadata for ``key``."""
    out = {"user_api_key_hash": hashlib.sha256(key.encode()).hexdigest()}
    if org is not None:
        out["user_api_key_org_id"] = org
    return out


def _policy(**extra) -> dict:
    return {"version": 1, "ledger": "memory://",
            "budgets": [{"name": "per-org", "scope": "org:*", "window": "day", "limit_usd": CAP}], **extra}


async def _send(router, engine, key: str, key_org: str | None, **metadata) -> bool:
    try:
        await router.acompletion(model="chat", messages=MESSAGES, max_tokens=20,
                                 metadata={**_proxy_metadata(key, key_org), **metadata})
    except BudgetExceeded as exc:
        assert exc.scope.startswith("org:")
        return False
    await settled(engine)
    return True


async def test_an_org_budget_caps_two_keys_of_one_org_together():
    with attached([deployment("chat", DEEPSEEK, "ds")], _policy()) as (router, engine):
        served = [await _send(router, engine, key, "acme") for key in ("sk-a", "sk-b", "sk-a", "sk-b")]
        assert served == [True, True, True, False]  # the org's cap, whichever of its keys spends it
        assert await _send(router, engine, "sk-c", "globex")  # another organisation: its own cap
        records = engine.spend.ledger.records()
        assert spend(records, "org:acme") == pytest.approx(3 * MOCK_COST, rel=1e-9)
        assert spend(records, "org:globex") == pytest.approx(MOCK_COST, rel=1e-9)


async def test_the_org_is_the_keys_never_the_clients():
    """Behind the proxy's auth (its ``user_api_key_*`` fields present), a client's own
    ``metadata.org`` is ignored: a key without an organisation is under no ``org:`` cap, and a key
    of one cannot spend from another's by naming it."""
    with attached([deployment("chat", DEEPSEEK, "ds")], _policy()) as (router, engine):
        for _ in range(5):  # past acme's cap, were the client's claim read
            assert await _send(router, engine, "sk-orgless", None, org="acme")
        assert all("org" not in r.attrs for r in engine.spend.ledger.records())
        assert [await _send(router, engine, "sk-g", "globex", org="acme") for _ in range(4)] == [True, True, True, False]
        assert spend(engine.spend.ledger.records(), "org:acme") == 0


async def test_in_python_the_calling_codes_metadata_names_the_org():
    """In the SDK there is no key: the calling code is the operator's, so ``metadata.org`` is the
    organisation there, as ``metadata.user`` is the user."""
    with attached([deployment("chat", DEEPSEEK, "ds")], _policy()) as (router, engine):
        served = []
        for _ in range(4):
            try:
                await router.acompletion(model="chat", messages=MESSAGES, max_tokens=20, metadata={"org": "acme"})
                served.append(True)
            except BudgetExceeded:
                served.append(False)
        assert served == [True, True, True, False]


async def test_when_org_and_sticky_by_org_route_by_the_keys_organisation():
    policy = {"version": 1, "ledger": "memory://", "models": {DEEPSEEK: {"quality": 0.5}, MISTRAL: {"quality": 0.9}},
              "routes": {"chat": [{"when": {"org": "acme"}, "quality_floor": {"min_quality": 0.8}},
                                  {"split": {"sticky_by": "org", "arms": [{"model": DEEPSEEK, "weight": 1},
                                                                          {"model": MISTRAL, "weight": 1}]}}]}}
    with attached([deployment("chat", DEEPSEEK, "ds"), deployment("chat", MISTRAL, "ml")], policy) as (router, engine):
        for key in ("sk-1", "sk-2", "sk-3"):  # every key of acme: its quality bar
            response = await router.acompletion(model="chat", messages=MESSAGES, metadata=_proxy_metadata(key, "acme"))
            assert served_by(response) == "ml"
        arms = set()
        for key in ("sk-4", "sk-5", "sk-6", "sk-7"):  # one organisation's keys share a split arm
            response = await router.acompletion(model="chat", messages=MESSAGES, metadata=_proxy_metadata(key, "initech"))
            arms.add(served_by(response))
        assert len(arms) == 1


def test_an_org_condition_and_sticky_by_are_checked_at_load(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "routes": {"chat": [
        {"when": {"orgg": "acme"}, "quality_floor": {"min_quality": 0.1}},
        {"split": {"sticky_by": "organisation", "arms": [{"model": DEEPSEEK, "weight": 1}, {"model": MISTRAL, "weight": 1}]}}]}}))
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    message = str(info.value)
    assert "unknown condition 'orgg'; expected one of group, user, team, key, tags, session, org" in message, message
    assert "expected user, team, api_key, end_user, trace_id, org, or metadata.<field>" in message, message


def test_explain_has_an_org_flag(tmp_path, capsys):
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump({"version": 1, "ledger": "memory://",
                                      "models": {DEEPSEEK: {"quality": 0.5}, MISTRAL: {"quality": 0.9}},
                                      "routes": {"chat": [{"when": {"org": "acme"}, "quality_floor": {"min_quality": 0.8}},
                                                          {"quality_floor": {"min_quality": 0.1}}]}}))
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"model_list": [deployment("chat", DEEPSEEK, "ds"), deployment("chat", MISTRAL, "ml")]}))
    base = ["explain", str(policy), "--config", str(config), "--model", "chat", "--prompt-tokens", "100", "--json"]
    assert cli(base + ["--org", "acme"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["chosen"] == "ml" and any("org=acme" in note for note in out["notes"]), out["notes"]
    assert cli(base) == 0
    assert "no org" in " ".join(json.loads(capsys.readouterr().out)["notes"])


PLUGIN = '''
from litellm_payg import hookimpl
from litellm_payg.core.scopes import request_attribute

@hookimpl
def payg_register_scopes(register):
    register(request_attribute("region", metadata_field="region", doc="the region the client says it serves"))
'''


async def test_a_plugin_registers_a_kind_of_its_own(tmp_path, capsys):
    """A third party's kind, registered like the built-ins: a client-asserted ``region`` read from
    the request's metadata, capped per value by ``region:*``."""
    (tmp_path / "region_plugin.py").write_text(PLUGIN)
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "ledger": "memory://", "plugins": ["region_plugin.py"],
                                    "budgets": [{"scope": "region:*", "window": "day", "limit_usd": CAP}]}))
    policy = load_policy(path)
    assert not policy.scopes["region"].trusted
    with attached([deployment("chat", DEEPSEEK, "ds")], str(path)) as (router, engine):
        served = []
        for _ in range(4):
            try:
                await router.acompletion(model="chat", messages=MESSAGES, max_tokens=20, metadata={"region": "eu"})
                served.append(True)
            except BudgetExceeded as exc:
                assert exc.scope == "region:eu"
                served.append(False)
        assert served == [True, True, True, False]
        await router.acompletion(model="chat", messages=MESSAGES, max_tokens=20, metadata={"region": "us"})
    assert cli(["plugins", "--policy", str(path)]) == 0  # what the plugin registers
    assert json.loads(capsys.readouterr().out) == [
        {"name": "region_plugin.py", "builtin": False, "hooks": ["payg_register_scopes"], "rules": [], "scopes": ["region"]}]
    # another policy, without the plugin, does not know the kind
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({"version": 1, "budgets": [{"scope": "region:*", "window": "day", "limit_usd": 1}]}))
    with pytest.raises(PolicyError, match="kind one of"):
        load_policy(other)


def test_a_kind_registered_twice_names_both_plugins(tmp_path):
    (tmp_path / "twice.py").write_text(textwrap.dedent('''
        from litellm_payg import hookimpl
        from litellm_payg.core.scopes import request_attribute

        @hookimpl
        def payg_register_scopes(register):
            register(request_attribute("org", metadata_field="org", doc="a second org"))
    '''))
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "plugins": ["twice.py"]}))
    with pytest.raises(PolicyError, match="scope kind 'org' is registered twice: by twice.py and by litellm_payg.default_plugins.scopes"):
        load_policy(path)


ORG_AUTH_MODULE = "payg_org_auth"
ORG_AUTH = '''\
"""custom_auth for the org test: ``sk-org.<org>.<nonce>``, a key of organisation <org>."""
from fastapi import HTTPException
from litellm.proxy._types import UserAPIKeyAuth


async def user_api_key_auth(request, api_key: str) -> UserAPIKeyAuth:
    key = (api_key or "").removeprefix("Bearer ").strip()
    parts = key.split(".")
    if len(parts) != 3 or parts[0] != "sk-org":
        raise HTTPException(status_code=401, detail="unknown key")
    return UserAPIKeyAuth(api_key=key, org_id=parts[1] or None)
'''


def test_two_keys_of_one_org_through_a_real_proxy(litellm_proxy_factory):  # noqa: F811
    """LiteLLM's proxy without a database: ``custom_auth`` says which organisation each key is
    of, as LiteLLM's own key table would. Two keys of ``acme`` share its cap; a third key, of
    ``globex``, has its own; a client's ``metadata.org`` changes nothing."""
    from trust_helpers import LedgerView, post

    config = {"model_list": [deployment("chat", DEEPSEEK, "ds")],
              "litellm_settings": {"callbacks": ["litellm_payg.proxy_handler"]},
              "general_settings": {"custom_auth": f"{ORG_AUTH_MODULE}.user_api_key_auth"}}
    policy = _policy(ledger="sqlite:///payg-ledger.db")
    running = litellm_proxy_factory(config, name="org", files={
        "payg-policy.yaml": yaml.safe_dump(policy), f"{ORG_AUTH_MODULE}.py": ORG_AUTH}).wait_ready()
    ledger = LedgerView(running.workdir)
    keys = {name: f"sk-org.{org}.{name}-{uuid.uuid4().hex[:8]}" for name, org in
            (("a", "acme"), ("b", "acme"), ("g", "globex"))}
    body = {"model": "chat", "messages": MESSAGES, "max_tokens": 20}
    try:
        codes = [post(running.base_url, "/v1/chat/completions", {**body, "metadata": {"org": "globex"}}, keys[k]).status_code
                 for k in ("a", "b", "a", "b")]
        assert codes == [200, 200, 200, 429], codes
        assert post(running.base_url, "/v1/chat/completions", body, keys["g"]).status_code == 200
        records = ledger.ledger.records()
        assert sorted(r.attrs.get("org") for r in records) == ["acme", "acme", "acme", "globex"]
        assert spend(records, "org:acme") == pytest.approx(3 * MOCK_COST, rel=1e-9)
    finally:
        ledger.close()


async def test_the_budget_gauges_show_each_org():
    """The metrics' budget gauges remember who routed by every declared attribute: an ``org:*``
    budget has a gauge per organisation seen."""
    prometheus_client = pytest.importorskip("prometheus_client")
    import re

    group = "org-metrics-chat"  # a group no other test uses: the registry is process-wide
    policy = {**_policy(), "plugins": ["litellm_payg.adapter.metrics"]}
    policy["budgets"] = [{"name": "org-metrics", "scope": "org:*", "window": "day", "limit_usd": CAP}]
    with attached([deployment(group, DEEPSEEK, "om-ds")], policy) as (router, engine):
        for key, org in (("sk-a", "acme"), ("sk-b", "acme"), ("sk-c", "globex")):
            await router.acompletion(model=group, messages=MESSAGES, max_tokens=20, metadata=_proxy_metadata(key, org))
        await settled(engine)
        text = prometheus_client.generate_latest().decode()
    spent = {scope: float(value) for scope, value in re.findall(
        r'litellm_payg_budget_spend_usd\{budget="org-metrics",on_exceed="block",scope="([^"]+)",window="day"\} (\S+)', text)}
    assert spent == pytest.approx({"org:acme": 2 * MOCK_COST, "org:globex": MOCK_COST}, rel=1e-9), spent
