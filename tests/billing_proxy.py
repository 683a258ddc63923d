"""A REAL ``litellm --config`` proxy whose deployments all point at the billing fake provider
(``billing_provider.py``), with a small per-user cap: the rig the attack regressions
(``test_attacks_proxy.py``) and the fuzzer (``test_fuzz_proxy.py``) drive the way a hostile client does.

Callers are told apart by their bearer key (``trust_helpers``: ``sk-payg.<user>.<team>.<nonce>``),
so every request can use a fresh key and its ledger records are found by the key's hash. One request
at a time: what the fake billed between two marks is what that request made the provider bill.

Groups (each one deployment on the fake; the price is LiteLLM's price map for the model):

* ``chat`` -- ``openai/gpt-4o-mini`` (chat, completions, responses, Anthropic messages through
  LiteLLM's adapter); ``reasoning`` -- ``openai/o3-mini``; ``embed`` --
  ``openai/text-embedding-3-small``; ``azure-chat`` -- ``azure/gpt-4o-mini`` (deployment
  ``gpt-4o-mini`` in the URL); ``speech`` -- ``openai/tts-1`` (priced per character); ``claude`` --
  ``anthropic/claude-haiku-4-5`` (Anthropic's wire).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from billing_provider import Bill, BillingProvider
from proxy_fixtures import RunningProxy
from trust_helpers import AUTH_MODULE, AUTH_MODULE_NAME, LedgerView, auth, key_hash

#: the per-user cap: the $0.0002 of the report that found fifteen ways past it
CAP_USD = 0.0002
#: a run's cap (sessions), big enough that the per-user cap decides first
RUN_CAP_USD = 0.001
#: the output tokens a request without a limit is expected to use / reserves
EXPECTED_OUTPUT, RESERVED_OUTPUT = 20, 40
GROUPS: dict[str, str] = {
    "chat": "openai/gpt-4o-mini",
    "reasoning": "openai/o3-mini",
    "embed": "openai/text-embedding-3-small",
    "azure-chat": "azure/gpt-4o-mini",
    "speech": "openai/tts-1",
    "claude": "anthropic/claude-haiku-4-5",
}
API_VERSION = "2024-10-21"


def _deployment(fake: BillingProvider, group: str, model: str) -> dict[str, Any]:
    params: dict[str, Any] = {"model": model, "api_key": "sk-fake-provider-key"}
    if model.startswith(("azure/", "anthropic/")):
        params["api_base"] = fake.origin
    else:
        params["api_base"] = fake.url
    if model.startswith("azure/"):
        params["api_version"] = API_VERSION
    return {"model_name": group, "litellm_params": params, "model_info": {"id": f"{group}-1"}}


def config(fake: BillingProvider, **litellm_settings: Any) -> dict[str, Any]:
    return {
        "model_list": [_deployment(fake, g, m) for g, m in GROUPS.items()],
        "router_settings": {"num_retries": 2},
        "litellm_settings": {"callbacks": ["litellm_payg.proxy_handler"], **litellm_settings},
        "general_settings": {"custom_auth": f"{AUTH_MODULE_NAME}.user_api_key_auth"},
    }


def policy(cap_usd: float = CAP_USD) -> dict[str, Any]:
    return {
        "version": 1,
        "ledger": "sqlite:///payg-ledger.db",
        # speech has no per-token price, which quality_floor compares: its route has no rule
        "routes": {g: [] if g == "speech" else [{"quality_floor": {"min_quality": 0}}] for g in GROUPS},
        "defaults": {"expected_output_tokens": EXPECTED_OUTPUT, "reserve_output_tokens": RESERVED_OUTPUT},
        "models": {m: {"quality": 1} for m in GROUPS.values()},
        "sessions": {"id_from": ["litellm_session_id"]},
        "budgets": [
            {"name": "per-user", "scope": "user:*", "window": "day", "limit_usd": cap_usd, "on_exceed": "block"},
            {"name": "per-run", "scope": "session:*", "window": "session:30m", "limit_usd": RUN_CAP_USD},
        ],
    }


def files() -> dict[str, str]:
    return {"payg-policy.yaml": yaml.safe_dump(policy(), sort_keys=False), f"{AUTH_MODULE_NAME}.py": AUTH_MODULE}


def rss_kib(pid: int) -> int:
    """The process's resident set size (VmRSS, KiB) from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


@dataclass
class Sent:
    """One request through the proxy: its answer, what the provider billed for it, what the ledger
    recorded for its key (settled records, after settling had its time)."""

    path: str
    body: Any
    user: str
    status: int
    text: str
    bills: list[Bill]
    ledger_usd: float
    open_after: int
    records: list[Any] = field(repr=False, default_factory=list)

    @property
    def billed_usd(self) -> float:
        return sum(b.usd for b in self.bills)


class BillingProxy:
    """The proxy, the fake behind it and the proxy's ledger."""

    def __init__(self, running: RunningProxy, fake: BillingProvider):
        self.running = running
        self.fake = fake
        self.ledger = LedgerView(running.workdir)
        self.client = httpx.Client(base_url=running.base_url, timeout=60, trust_env=False)

    def close(self) -> None:
        self.client.close()
        self.ledger.close()

    @property
    def rss_kib(self) -> int:
        return rss_kib(self.running.proc.pid)

    def post(self, path: str, key: str, *, json: Any = None, content: bytes | None = None,
             headers: dict[str, str] | None = None, **kw: Any) -> httpx.Response:
        hdrs = auth(key, **(headers or {}))
        if content is not None:
            hdrs.setdefault("content-type", "application/json")
        return self.client.post(path, json=json, content=content, headers=hdrs, **kw)

    def send(self, path: str, body: Any, key: str, *, settle_s: float = 2.0, raw: bytes | None = None,
             headers: dict[str, str] | None = None) -> Sent:
        """Send one request and wait until the ledger holds at least what the provider billed for it
        (or ``settle_s`` passed): settling runs on LiteLLM's background worker."""
        mark = self.fake.mark()
        open_before = self.ledger.open()
        # encoded here, not by httpx: a hostile body may hold NaN or Infinity, which a client can send
        content = raw if raw is not None else json.dumps(body).encode()
        response = self.post(path, key, content=content, headers=headers)
        bills = self.fake.bills_since(mark)
        billed = sum(b.usd for b in bills)
        deadline = time.monotonic() + settle_s
        while True:
            records = self.ledger.records(key=key)
            recorded = sum(r.amount_usd for r in records)
            if (recorded >= billed - 1e-12 and self.ledger.open() <= open_before) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        user = key.split(".")[1]
        return Sent(path, body, user, response.status_code, response.text[:500], bills, recorded,
                    max(0, self.ledger.open() - open_before), records)

    def user_ledger_usd(self, user: str) -> float:
        return sum(r.amount_usd for r in self.ledger.records(user=user))

    def key_ledger_usd(self, key: str) -> float:
        return sum(r.amount_usd for r in self.ledger.ledger.records() if r.attrs.get("key") == key_hash(key))
