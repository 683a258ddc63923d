"""Issue #19 item 3, "the cap holds by construction": every proxy route that can spend a governed
deployment's credentials is governed or refused (the route table: ``litellm_payg/adapter/routes.py``).

A REAL ``litellm --config`` proxy whose one governed deployment (group ``chat``, id ``d1``) points at
a counting fake provider on localhost: it records every request it receives and answers the OpenAI
files, batches and fine-tuning endpoints with objects LiteLLM accepts. The hostile client of the
issue uploaded a file and ran a batch on the governed deployment (``litellm.acreate_batch`` with
the deployment's credentials, outside the Router): 4,500 times its cap, no ledger record. Each test
counts what reached the provider, so a refusal is shown to happen before any provider call.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import yaml

from proxy_fixtures import RunningProxy, litellm_proxy_factory  # noqa: F401  (fixture)
from trust_helpers import AUTH_MODULE, AUTH_MODULE_NAME, auth, key_hash, new_key, post

from litellm_payg.adapter.routes import GOVERNED, NOT_SPENDING, OUTSIDE_ROUTER, models_named, refusal, route_of


class CountingProvider:
    """A fake OpenAI-compatible provider that records (method, path) of every request."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                provider.seen.append((self.command, self.path.split("?", 1)[0]))
                body = provider.reply(self.path)
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_POST = do_GET = do_DELETE = _answer  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    @staticmethod
    def reply(path: str) -> dict:
        if "/files" in path:
            return {"id": "file-abc123", "object": "file", "bytes": 120, "created_at": 1700000000,
                    "filename": "batch.jsonl", "purpose": "batch", "status": "processed"}
        if "/batches" in path:
            return {"id": "batch_abc123", "object": "batch", "endpoint": "/v1/chat/completions",
                    "input_file_id": "file-abc123", "completion_window": "24h", "status": "validating",
                    "created_at": 1700000000, "request_counts": {"total": 0, "completed": 0, "failed": 0}}
        if "/fine_tuning" in path:
            return {"id": "ftjob-abc", "object": "fine_tuning.job", "model": "gpt-4o-mini", "created_at": 1700000000,
                    "status": "queued", "training_file": "file-abc123", "hyperparameters": {"n_epochs": 1},
                    "organization_id": "org", "result_files": [], "seed": 1}
        return {"object": "list", "data": []}

    def spent(self) -> list[tuple[str, str]]:
        """Provider calls that run a job (anything but a file upload)."""
        return [(m, p) for m, p in self.seen if "/files" not in p]

    def stop(self) -> None:
        self.server.shutdown()


POLICY = {
    "version": 1,
    "ledger": "sqlite:///payg-ledger.db",
    "routes": {"chat": [{"quality_floor": {"min_quality": 0}}]},
    "models": {"openai/gpt-4o-mini": {"quality": 1}},
    "budgets": [{"name": "per-user", "scope": "key:*", "window": "day", "limit_usd": 0.0002}],
    # images, speech on a chat model and rerank are billed by what a token reservation cannot bound:
    # reserved at this ceiling (without it they are refused with a 400 before the budget is asked)
    "requests": {"unbounded_reserve_usd": 0.01},
}


@pytest.fixture(scope="module")
def provider():
    p = CountingProvider()
    yield p
    p.stop()


@pytest.fixture(scope="module")
def proxy(litellm_proxy_factory, provider) -> RunningProxy:  # noqa: F811
    config = {
        "model_list": [{
            "model_name": "chat",
            "litellm_params": {"model": "openai/gpt-4o-mini", "api_key": "sk-governed-credential",
                               "api_base": provider.base},
            "model_info": {"id": "d1"},
        }],
        "litellm_settings": {"callbacks": ["litellm_payg.proxy_handler"]},
        "general_settings": {"custom_auth": f"{AUTH_MODULE_NAME}.user_api_key_auth"},
    }
    return litellm_proxy_factory(
        config, name="routes",
        files={"payg-policy.yaml": yaml.safe_dump(POLICY, sort_keys=False), f"{AUTH_MODULE_NAME}.py": AUTH_MODULE},
    ).wait_ready()


BATCH_LINE = json.dumps({"custom_id": "1", "method": "POST", "url": "/v1/chat/completions",
                         "body": {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}})


def _upload(proxy: RunningProxy, key: str, **form: str) -> httpx.Response:
    with httpx.Client(base_url=proxy.base_url, timeout=30, trust_env=False) as client:
        return client.post("/v1/files", headers=auth(key), data={"purpose": "batch", **form},
                           files={"file": ("batch.jsonl", (BATCH_LINE + "\n").encode(), "application/jsonl")})


def _refused(resp: httpx.Response, path: str) -> None:
    assert resp.status_code == 403, f"{path}: expected 403 from litellm-payg, got HTTP {resp.status_code}: {resp.text[:400]}"
    assert "litellm-payg" in resp.text and path in resp.text, resp.text[:400]


def test_a_batch_on_a_governed_deployment_is_refused_before_the_provider_sees_it(proxy, provider):
    key = new_key(label="batch")
    provider.seen.clear()
    uploaded = _upload(proxy, key, model="chat")  # an upload bills nothing: left alone
    assert uploaded.status_code == 200, uploaded.text[:400]
    file_id = uploaded.json()["id"]
    attempts = {
        "file id encoding the governed group": {"input_file_id": file_id},
        "model in the body": {"model": "chat"},
        "deployment id in the body": {"model": "d1"},
        "no model at all": {},
    }
    for what, extra in attempts.items():
        body = {"input_file_id": "file-abc123", "endpoint": "/v1/chat/completions", "completion_window": "24h", **extra}
        resp = post(proxy.base_url, "/v1/batches", body, key)
        _refused(resp, "/v1/batches")
    header = post(proxy.base_url, "/v1/batches", {"input_file_id": "file-abc123", "endpoint": "/v1/chat/completions",
                                                  "completion_window": "24h"}, key, headers={"x-litellm-model": "chat"})
    _refused(header, "/v1/batches")
    assert provider.spent() == [], f"the provider was asked to run jobs: {provider.spent()}"


@pytest.mark.parametrize("path, body", [
    ("/v1/ocr", {"model": "chat", "document": {"type": "document_url", "document_url": "https://example.com/a.pdf"}}),
    ("/v1/videos", {"model": "chat", "prompt": "a cat"}),
    ("/v1/vector_stores", {"name": "docs", "model": "chat"}),
    ("/v1/evals", {"name": "e", "model": "chat", "data_source_config": {"type": "custom", "item_schema": {}},
                   "testing_criteria": []}),
])
def test_other_routes_outside_the_router_are_refused_for_a_governed_model(proxy, provider, path, body):
    provider.seen.clear()
    resp = post(proxy.base_url, path, body, new_key(label="other-route"))
    _refused(resp, path)
    assert provider.spent() == []


@pytest.mark.parametrize("path, body", [
    ("/v1/chat/completions", {"model": "chat", "messages": [{"role": "user", "content": "hello"}]}),
    ("/v1/embeddings", {"model": "chat", "input": "hello"}),
    ("/v1/images/generations", {"model": "chat", "prompt": "a cat"}),
    ("/v1/audio/speech", {"model": "chat", "input": "hello", "voice": "alloy"}),
    ("/v1/moderations", {"model": "chat", "input": "hello"}),
    ("/v1/rerank", {"model": "chat", "query": "q", "documents": ["a", "b"]}),
])
def test_governed_routes_reach_the_policys_budget(proxy, provider, path, body):
    """The routes the table calls governed go through the Router's filter: the key's cap
    ($0.0002, below any estimate here) refuses them before the provider is called."""
    provider.seen.clear()
    key = new_key(label="governed")
    resp = post(proxy.base_url, path, body, key)
    assert provider.seen == []
    if path == "/v1/audio/speech" and resp.status_code == 500 and _litellm_before("1.110"):
        # LiteLLM 1.100's speech route lets any Router error out as a bare 500: the refusal is in its log
        assert f"litellm-payg: budget 'per-user' (key:{key_hash(key)}" in proxy.log()
        return
    assert resp.status_code == 429 and "litellm-payg: budget 'per-user'" in resp.text, resp.text[:300]


def _litellm_before(version: str) -> bool:
    from litellm_payg.adapter import litellm_versions

    have = tuple(int(p) for p in litellm_versions.litellm_version().split(".")[:2])
    return have < tuple(int(p) for p in version.split("."))


def test_a_route_naming_no_governed_deployment_is_left_alone(proxy, provider):
    """A batch naming a model no deployment serves is not the plugin's: LiteLLM answers it as it
    would without the plugin (here: it has no credentials for that model)."""
    resp = post(proxy.base_url, "/v1/batches", {"input_file_id": "file-abc123", "endpoint": "/v1/chat/completions",
                                                "completion_window": "24h", "model": "some-other-model"},
                new_key(label="other"))
    assert resp.status_code != 403 and "litellm-payg" not in resp.text, resp.text[:400]


def test_reads_of_stored_objects_are_left_alone(proxy, provider):
    with httpx.Client(base_url=proxy.base_url, timeout=30, trust_env=False) as client:
        resp = client.get("/v1/batches", headers=auth(new_key(label="list")), params={"model": "chat"})
    assert "litellm-payg" not in resp.text, resp.text[:400]


# -- the table itself, without a proxy --------------------------------------------------------------

def test_the_table_has_no_call_type_in_two_kinds():
    assert not GOVERNED & NOT_SPENDING
    assert not GOVERNED & set(OUTSIDE_ROUTER) and not NOT_SPENDING & set(OUTSIDE_ROUTER)


def test_an_unknown_call_type_is_refused_like_one_that_spends():
    assert route_of("a_route_litellm_adds_next_year").kind == "refused"
    assert refusal("a_route_litellm_adds_next_year", {"model": "chat"}, lambda m: m == "chat") is not None
    assert refusal("a_route_litellm_adds_next_year", {"model": "elsewhere"}, lambda m: m == "chat") is None


def test_every_call_type_litellm_knows_is_in_the_table_or_refused():
    from litellm.types.utils import CallTypes

    for member in CallTypes:
        assert route_of(member).kind in ("governed", "not spending", "refused")
    # the routes the issue names, by the call type their proxy route passes
    for call_type in ("acreate_batch", "acreate_fine_tuning_job", "avector_store_search", "acreate_eval",
                      "_arealtime", "pass_through_endpoint", "allm_passthrough_route", "aocr", "avideo_generation"):
        assert route_of(call_type).kind == "refused", call_type
    for call_type in ("acompletion", "aresponses", "anthropic_messages", "aembedding", "aimage_generation",
                      "atranscription", "aspeech", "arerank", "amoderation"):
        assert route_of(call_type).kind == "governed", call_type


def test_models_are_read_from_every_place_a_batch_route_reads_them():
    data = {"model": "a,b", "target_model_names": ["c"],
            "proxy_server_request": {"headers": {"X-LiteLLM-Model": "d"}, "url": "http://x/v1/batches?model=e"}}
    assert models_named(data) == ["a", "b", "c", "d", "e"]


def test_a_refusal_stays_a_4xx_in_litellms_error_handler_without_a_database():
    """LiteLLM's handler for the files and batches routes imports ``prisma`` first; without it every
    error there was a bare 500 (``keep_refusals_4xx_without_prisma``)."""
    from fastapi import HTTPException
    from litellm.proxy.utils import handle_exception_on_proxy

    from litellm_payg.adapter.routes import keep_refusals_4xx_without_prisma

    keep_refusals_4xx_without_prisma()
    keep_refusals_4xx_without_prisma()  # idempotent
    answer = handle_exception_on_proxy(HTTPException(status_code=403, detail="litellm-payg: refused"))
    assert str(answer.code) == "403" and "refused" in answer.message
