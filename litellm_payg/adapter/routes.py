"""Which proxy routes can spend on a governed deployment's credentials, and what the plugin does
with each: the route table, in one place.

A cap holds only if every way to spend a governed deployment's credentials goes through it. LiteLLM's
proxy has many routes besides ``/chat/completions``, and several of them never reach the Router's
routing hooks: ``/v1/batches`` calls ``litellm.acreate_batch`` with a deployment's credentials
directly (LiteLLM looks them up by the model the request names, or by provider for the caller's
team when it names none), and so do fine-tuning, evals, realtime and pass-through routes; OCR, video,
vector stores and image edits reach the Router but are billed per page, second, file or image, which
a token reservation does not bound. A hostile client used ``/v1/files`` + ``/v1/batches`` to run 4,500 times its cap
with no ledger record. The plugin cannot reserve or settle those calls, so it refuses them.

Every such route runs the proxy's pre-call hook with a ``call_type`` (LiteLLM's ``CallTypes`` value,
or the ``route_type`` the route passes), and that is what this table is keyed by. Three kinds:

* **governed** (:data:`GOVERNED`): the route calls one of the Router's request methods, which pick
  through the plugin's filter and are settled by its callbacks (the doors in
  :mod:`litellm_payg.adapter.ingress`);
* **not spending** (:data:`NOT_SPENDING`): reads, lists, deletes and cancels of stored objects, file
  uploads (storage, not tokens: the batch that would use the file is what spends), MCP tools and
  search tools (their own credentials, not a deployment's): left alone;
* **refused** (everything else, :data:`OUTSIDE_ROUTER` and any ``call_type`` this table does not
  know): refused with HTTP 403 naming the route, **when the request names a governed model**
  (a group, an alias, a deployment's id or model string, in the body's ``model`` or
  ``target_model_names``, the ``x-litellm-model`` header, a ``?model=`` query, or a model LiteLLM
  encoded into a file or batch id), **or names no model at all** (LiteLLM may then pick a governed
  deployment's credentials by provider for the caller's team). A request that names only models no
  governed deployment has is left alone: it is not the plugin's to govern.

A ``call_type`` LiteLLM adds later is refused by the same rule until this table says otherwise:
unknown routes are assumed to spend.

Routes that never run the pre-call hook: ``/v1/assistants`` and ``/v1/threads`` (including runs) use
the proxy's ``assistant_settings`` credentials, not a deployment's; ``/queue/chat/completions``
enters through the Router's own governed door.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

#: call types the Router serves through the plugin's filter and callbacks
GOVERNED: frozenset[str] = frozenset({
    "acompletion", "completion", "atext_completion", "text_completion",
    "aresponses", "responses", "anthropic_messages", "aanthropic_messages",
    "aembedding", "embedding", "embeddings", "aimage_generation", "image_generation",
    "atranscription", "transcription", "aspeech", "speech", "arerank", "rerank",
    "amoderation", "moderation", "agenerate_content", "generate_content",
    "agenerate_content_stream", "generate_content_stream",
})

#: call types that bill nothing on a deployment's credentials
NOT_SPENDING: frozenset[str] = frozenset({
    # files: an upload is storage; reading, listing and deleting are free
    "acreate_file", "create_file", "afile_retrieve", "file_retrieve", "afile_delete", "file_delete",
    "afile_list", "file_list", "afile_content", "file_content",
    # batches and fine-tuning jobs already created (creating one is refused)
    "aretrieve_batch", "retrieve_batch", "alist_batches", "acancel_batch", "cancel_batch",
    "alist_fine_tuning_jobs", "list_fine_tuning_jobs", "aretrieve_fine_tuning_job",
    "retrieve_fine_tuning_job", "acancel_fine_tuning_job", "cancel_fine_tuning_job",
    # stored responses
    "aget_responses", "get_responses", "adelete_responses", "delete_responses",
    "acancel_responses", "cancel_responses", "alist_input_items",
    # stored vector stores, videos, containers, skills, interactions, agents, evals and runs
    "avector_store_retrieve", "avector_store_list", "avector_store_delete", "avector_store_update",
    "avector_store_file_list", "avector_store_file_retrieve", "avector_store_file_content",
    "avector_store_file_update", "avector_store_file_delete",
    "avideo_list", "video_list", "avideo_status", "avideo_content", "video_content", "avideo_retrieve",
    "video_retrieve", "avideo_retrieve_job", "video_retrieve_job", "avideo_delete", "video_delete",
    "avideo_get_character", "video_get_character",
    "alist_containers", "list_containers", "aretrieve_container", "retrieve_container",
    "adelete_container", "delete_container", "alist_container_files", "list_container_files",
    "aretrieve_container_file", "adelete_container_file", "aretrieve_container_file_content",
    "alist_skills", "aget_skill", "adelete_skill",
    "aget_interaction", "adelete_interaction", "acancel_interaction",
    "alist_agents", "aget_agent", "adelete_agent", "alist_agent_versions",
    "alist_evals", "aget_eval", "aupdate_eval", "adelete_eval", "acancel_eval",
    "alist_runs", "aget_run", "acancel_run", "adelete_run",
    # tools with their own credentials (MCP servers, search_tools), and guardrail checks
    "call_mcp_tool", "list_mcp_tools", "asearch", "search", "apply_guardrail",
})

#: call types known to spend where the plugin cannot reserve an upper bound and record it (LiteLLM
#: calls the provider with a deployment's credentials itself; a realtime stream; a price per page,
#: second, file or image); each with what it is
OUTSIDE_ROUTER: Mapping[str, str] = {
    "acreate_batch": "a batch (litellm.acreate_batch)", "create_batch": "a batch (litellm.acreate_batch)",
    "acreate_fine_tuning_job": "a fine-tuning job", "create_fine_tuning_job": "a fine-tuning job",
    "avector_store_create": "a vector store (embeds its files)", "vector_store_create": "a vector store",
    "avector_store_search": "a vector store search (embeds the query)",
    "vector_store_search": "a vector store search",
    "avector_store_file_create": "a vector store file (embeds it)", "vector_store_file_create": "a vector store file",
    "aingest": "a RAG ingest", "ingest": "a RAG ingest", "aquery": "a RAG query", "query": "a RAG query",
    "acreate_eval": "an eval", "acreate_run": "an eval run",
    "_arealtime": "a realtime session", "_aresponses_websocket": "a Responses websocket",
    "acreate_realtime_client_secret": "a realtime session", "arealtime_calls": "a realtime call",
    "acreate_realtime_transcription_session": "a realtime transcription session",
    "acreate_realtime_translation_client_secret": "a realtime translation session",
    "arealtime_translation_calls": "a realtime translation call",
    "pass_through_endpoint": "a pass-through request", "allm_passthrough_route": "a pass-through request",
    "llm_passthrough_route": "a pass-through request",
    "aimage_edit": "an image edit", "image_edit": "an image edit",
    "avideo_generation": "a video", "video_generation": "a video", "acreate_video": "a video",
    "create_video": "a video", "avideo_remix": "a video remix", "video_remix": "a video remix",
    "avideo_edit": "a video edit", "video_edit": "a video edit", "avideo_extension": "a video extension",
    "video_extension": "a video extension", "avideo_create_character": "a video character",
    "video_create_character": "a video character",
    "aocr": "OCR", "ocr": "OCR", "acompact_responses": "a Responses compaction",
    "compact_responses": "a Responses compaction",
    "acreate_interaction": "an interaction", "create_interaction": "an interaction",
    "acreate_container": "a code container", "create_container": "a code container",
    "aupload_container_file": "a code container file", "acreate_sandbox": "a sandbox",
    "arun_code": "code execution", "acode_interpreter_tool": "code execution",
    "acreate_skill": "a skill", "acreate_agent": "an agent", "asend_message": "an agent message",
    "send_message": "an agent message", "adecisions": "a decisions call", "asystemone": "a systemone call",
    "aextraction": "an extraction",
}

#: request body fields that carry a file or batch id LiteLLM may have encoded a model into
_FILE_ID_FIELDS = ("input_file_id", "file_id", "training_file", "validation_file", "batch_id")


@dataclass(frozen=True)
class Route:
    """What the plugin does with one ``call_type``: ``governed``, ``not spending`` or ``refused``."""

    call_type: str
    kind: str
    what: str


def route_of(call_type: Any) -> Route:
    """The table's entry for ``call_type`` (a ``CallTypes`` member or its value); unknown ones are
    ``refused``: a new route is assumed to spend until it is known not to."""
    name = str(getattr(call_type, "value", call_type) or "")
    if name in GOVERNED:
        return Route(name, "governed", "routed by the Router")
    if name in NOT_SPENDING:
        return Route(name, "not spending", "bills nothing on a deployment's credentials")
    return Route(name, "refused", OUTSIDE_ROUTER.get(name, f"a {name or 'unknown'} request"))


def models_named(data: Mapping[str, Any]) -> list[str]:
    """Every model a proxy request names: the body's ``model`` and ``target_model_names`` (a list
    or a comma-separated string), the ``x-litellm-model`` header and ``?model=`` query LiteLLM's
    batch and file routes read, and a model LiteLLM encoded into a file or batch id."""
    return sorted(set(_models_named(data)))


def _models_named(data: Mapping[str, Any]) -> Iterator[str]:
    yield from _names(data.get("model"))
    yield from _names(data.get("target_model_names"))
    psr = data.get("proxy_server_request")
    if isinstance(psr, Mapping):
        headers = psr.get("headers")
        if isinstance(headers, Mapping):
            for key, value in headers.items():
                if isinstance(key, str) and key.lower() == "x-litellm-model":
                    yield from _names(value)
        url = psr.get("url")
        if isinstance(url, str):
            for value in parse_qs(urlsplit(url).query).get("model", ()):
                yield from _names(value)
    for name in _FILE_ID_FIELDS:
        yield from _models_in_id(data.get(name))


def _names(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield from (part.strip() for part in value.split(",") if part.strip())
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _names(item)


def _models_in_id(file_id: Any) -> Iterator[str]:
    """The model(s) LiteLLM encoded into a file or batch id it handed out (``file-<b64>``, a managed
    file's unified id); nothing for a provider's own id. LiteLLM's own decoders, read lazily: they
    live in the proxy, which is loaded whenever this runs."""
    if not isinstance(file_id, str) or not file_id:
        return
    try:
        from litellm.proxy.openai_files_endpoints import common_utils
    except ImportError:
        return
    decode = getattr(common_utils, "decode_model_from_file_id", None)
    model = decode(file_id) if decode is not None else None
    if model:
        yield from _names(model)
    unified = getattr(common_utils, "is_base64_encoded_unified_file_id", lambda _: False)(file_id)
    targets = getattr(common_utils, "get_models_from_unified_file_id", None)
    if unified and targets is not None:
        yield from _names(targets(unified))


def route_path(data: Mapping[str, Any], call_type: str) -> str:
    """The request's path (``/v1/batches``) when the proxy recorded it, else its call type."""
    psr = data.get("proxy_server_request")
    url = psr.get("url") if isinstance(psr, Mapping) else None
    path = urlsplit(url).path if isinstance(url, str) else ""
    return path or call_type


def refusal(call_type: Any, data: Mapping[str, Any], governed: Callable[[str], bool]) -> str | None:
    """Why a request of ``call_type`` is refused, or None when it is not: a ``refused`` route that
    names a model ``governed`` says is one, or names no model (see the module docstring)."""
    route = route_of(call_type)
    if route.kind != "refused":
        return None
    named = models_named(data)
    mine = [m for m in named if governed(m)]
    if named and not mine:
        return None
    where = route_path(data, route.call_type)
    if mine:
        return (f"litellm-payg: {where} ({route.what}) is refused for model {mine[0]!r}: LiteLLM would run it on "
                "a governed deployment's credentials where the plugin cannot reserve an upper bound of its cost "
                "and record it (outside the Router, or billed per page, second or job); send it to a route the "
                "policy governs (e.g. /v1/chat/completions)")
    return (f"litellm-payg: {where} ({route.what}) is refused: it names no model, so LiteLLM may run it on a "
            "governed deployment's credentials (chosen by provider) where no budget reserves it; name a model "
            "that no governed deployment serves")


def keep_refusals_4xx_without_prisma() -> bool:
    """Let a refusal raised on LiteLLM's files, batches and fine-tuning routes reach the client as
    the 4xx it is when the proxy runs without a database (``prisma`` not installed).

    LiteLLM 1.110.2's error handler for those routes (``handle_exception_on_proxy``) first asks
    ``PrismaDBExceptionHandler`` whether the error is a Postgres read-only one, which imports
    ``prisma``; without it that import fails inside the ``except`` block and every error, a 403
    included, becomes a bare "Internal Server Error" 500. An error cannot be prisma's when prisma
    is not installed, so the two checks answer False for a missing ``prisma`` and are otherwise
    LiteLLM's own. Returns whether anything was wrapped (nothing when prisma is installed)."""
    if importlib.util.find_spec("prisma") is not None:
        return False
    try:
        from litellm.proxy.db.exception_handler import PrismaDBExceptionHandler
    except ImportError:
        return False
    wrapped_any = False
    for name in ("is_read_only_transaction_error", "is_database_service_unavailable_error_in_chain"):
        original = getattr(PrismaDBExceptionHandler, name, None)
        if original is None or hasattr(original, "__payg_original__"):
            continue

        def without_prisma(e: Exception, _original: Callable[[Exception], bool] = original) -> bool:
            try:
                return _original(e)
            except ModuleNotFoundError as exc:
                if exc.name != "prisma":
                    raise
                return False

        without_prisma.__payg_original__ = original  # type: ignore[attr-defined]
        setattr(PrismaDBExceptionHandler, name, staticmethod(without_prisma))
        wrapped_any = True
    return wrapped_any


__all__ = ["GOVERNED", "NOT_SPENDING", "OUTSIDE_ROUTER", "Route", "keep_refusals_4xx_without_prisma", "models_named", "refusal", "route_of"]
