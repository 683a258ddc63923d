"""The request surface of a governed group: every body field the plugin accepts, and what it does.

Why a closed list: LiteLLM sends the provider whatever a request says, in any of its forms. A
field the plugin does not know is a field whose effect on the bill it cannot bound: ``extra_body``
is merged into the provider's body (``extra_body: {"max_tokens": 5000}`` overrides the
``max_tokens`` the reservation read), ``deployment_id`` on an Azure group sends the call to
another Azure deployment, an unknown field is passed through to the provider as is. So a body
field is accepted only if it is in :data:`FIELDS` (or the operator allows it in the policy:
``requests: {allow_fields: [...]}``), and a field that re-routes the call is refused even then.

Each field has one :class:`Effect`, which says how the reservation accounts for it:

* ``prompt``: a part of the prompt the provider bills as input; counted by the token counter
  (``stores/prices.py: count_request_tokens``).
* ``output_cap``: caps the output tokens; the reservation uses the largest cap that applies
  (``request_checks.output_cap``), else the model's maximum.
* ``choices``: several answers, each billed its output (``request_checks.choices``).
* ``priced``: a dimension billed by its own price (per character of a speech ``input``);
  bounded by ``stores/prices.py`` or refused there.
* ``sampling``: shapes the answer inside the output cap (temperature, stop, a response format...):
  no effect on the bound.
* ``litellm``: read by LiteLLM itself (metadata, tags, retries, timeouts, ids), not billed.
* ``reroute``: makes LiteLLM call a deployment, endpoint or key the policy never picked:
  always refused, and cannot be allowed.
* ``unbounded``: billed in a way the reservation does not bound (a priority service tier, web
  search per query, predicted outputs, audio output, the stored context of a
  ``previous_response_id`` or a Gemini ``cachedContent``, Anthropic's MCP servers and code
  containers; ``drop_params``, which can drop the output cap itself): refused unless the operator allows it, in
  which case the operator accepts that the bill may exceed the reservation.

``extra_body`` is an object whose keys go straight into the provider's body: each key is
refused (named ``extra_body.<key>``) unless allowed as ``extra_body.<key>``, and never allowed
when it is a known field (its effect would escape the checks made on the top-level field).
A tool the provider runs and bills per call (a ``tools`` entry whose ``type`` is not
``function``/``custom``: web search, code interpreter...; Gemini's search grounding) is refused
unless allowed as ``tools.<type>``.

No LiteLLM import here (the wire layer): LiteLLM's own lists (``OPENAI_CHAT_COMPLETION_PARAMS``,
``all_litellm_params``) were read to write this table; ``tests/test_request_fields.py`` checks
the OpenAI chat list against it, so a LiteLLM release that adds a field shows up as a failing test.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import Enum
from typing import Any
from urllib.parse import parse_qs, urlsplit

from litellm_payg.wire.request_checks import BadField, _shown


class Effect(str, Enum):
    PROMPT = "prompt"
    OUTPUT_CAP = "output_cap"
    CHOICES = "choices"
    PRICED = "priced"
    SAMPLING = "sampling"
    LITELLM = "litellm"
    REROUTE = "reroute"
    UNBOUNDED = "unbounded"


P, O, C, R, S, L, X, U = (Effect.PROMPT, Effect.OUTPUT_CAP, Effect.CHOICES, Effect.PRICED, Effect.SAMPLING,
                          Effect.LITELLM, Effect.REROUTE, Effect.UNBOUNDED)


def _all(effect: Effect, names: str) -> dict[str, Effect]:
    return {name: effect for name in names.split()}


#: every accepted body field of a governed group, by its effect on routing and cost (module docstring)
FIELDS: dict[str, Effect] = {
    # -- the prompt, by API: chat, legacy functions, Responses, Anthropic, text, embeddings, Gemini, rerank
    **_all(P, "messages tools functions input instructions system prompt suffix contents systemInstruction "
              "system_instruction query documents"),
    # -- output caps: chat (both names), Responses, Gemini's config objects (checked inside)
    **_all(O, "max_tokens max_completion_tokens max_output_tokens generationConfig generation_config config"),
    **_all(C, "n best_of"),
    # -- priced per unit of the input (speech: per character; checked in stores/prices.py)
    **_all(R, "voice speed"),
    # -- shapes the answer within the output cap, or selects among the operator's own features
    **_all(S, "model temperature top_p top_k stop stop_sequences presence_penalty frequency_penalty logit_bias "
              "logprobs top_logprobs echo seed response_format tool_choice function_call parallel_tool_calls "
              "stream stream_options reasoning_effort reasoning thinking verbosity text truncation include "
              "store background prompt_cache_key prompt_cache_retention safety_identifier safetySettings "
              "safety_settings toolConfig tool_config labels encoding_format "
              "dimensions input_type top_n return_documents rank_fields max_chunks_per_doc language "
              "timestamp_granularities file size quality style output_format output_compression moderation "
              "partial_images background_color context_management anthropic_version "
              "max_tool_calls parallel_tool_calls"),
    # -- read by LiteLLM (and its proxy), not by the provider's bill
    **_all(L, "metadata litellm_metadata user tags litellm_trace_id litellm_session_id litellm_call_id "
              "litellm_logging_obj proxy_server_request secret_fields shared_session _context_compaction_state "
              "num_retries max_retries timeout request_timeout stream_timeout fallbacks context_window_fallback_dict "
              "disable_fallbacks caching cache ttl no-log priority extra_headers headers mock_response "
              "mock_tool_calls mock_timeout litellm_parent_otel_span organization keepalive_seconds "
              "client_side_timeout allowed_model_region enable_prompt_caching guardrails "
              "_litellm_stream_usage_injected _litellm_strip_stream_usage"),  # the proxy sets them when it asks a stream for usage
    # -- another deployment, endpoint or key than the one the policy picked
    **_all(X, "api_key api_base base_url api_version deployment_id custom_llm_provider model_list "
              "azure_ad_token azure_ad_token_provider aws_access_key_id aws_secret_access_key aws_session_token "
              "aws_region_name aws_role_name aws_profile_name vertex_project vertex_location vertex_credentials "
              "region_name litellm_credential_name default_headers base_model input_cost_per_token "
              "output_cost_per_token input_cost_per_second output_cost_per_second use_in_pass_through "
              "fastest_response specific_deployment model_info"),
    # -- billed beyond what the reservation bounds
    **_all(U, "service_tier web_search_options prediction audio modalities include_server_side_tool_invocations "
              "previous_response_id conversation cachedContent cached_content mcp_servers container drop_params "
              "additional_drop_params allowed_openai_params"),
}

#: the object whose keys LiteLLM merges into the provider's body
EXTRA_BODY = "extra_body"
#: fields accepted as they are, whatever their value (no further check here)
_PLAIN = frozenset(name for name, effect in FIELDS.items() if effect not in (Effect.REROUTE, Effect.UNBOUNDED))


def allowable(name: str) -> str | None:
    """Why ``name`` (an ``allow_fields`` entry of a policy) cannot be allowed, or None."""
    if not isinstance(name, str) or not name.strip():
        return "expected a field name"
    if name.startswith(EXTRA_BODY + "."):
        inner = name[len(EXTRA_BODY) + 1:]
        if not inner:
            return "expected extra_body.<field>"
        if inner in FIELDS:
            return (f"{inner!r} is a known request field ({FIELDS[inner].value}); in extra_body it would override "
                    "the top-level field the reservation reads: send it at the top level instead")
        return None
    if name.startswith("tools."):
        return None if name[len("tools."):] else "expected tools.<type>"
    effect = FIELDS.get(name)
    if effect is Effect.REROUTE:
        return f"{name!r} changes the deployment, endpoint, key or price LiteLLM uses, which the policy did not pick"
    if effect is not None and effect is not Effect.UNBOUNDED:
        return f"{name!r} is accepted already ({effect.value})"
    return None


#: the shortest timeout, in seconds, a client may set on a governed group (``timeout`` and
#: ``stream_timeout`` in the body, or LiteLLM's ``x-litellm-timeout`` headers, which its proxy copies
#: there). A request that times out after it was sent may still be billed by the provider, so it is
#: charged its bound (README, "Budgets"): a client timeout shorter than any provider's answer would
#: buy nothing but that charge, and fail over to every deployment of the group in turn
MIN_CLIENT_TIMEOUT_S = 1.0
CLIENT_TIMEOUTS = ("timeout", "stream_timeout")


def unknown_field(data: Mapping[str, Any], allowed: Iterable[str] = ()) -> BadField | None:
    """The first body field of ``data`` a governed group does not accept, or None; a client
    timeout below :data:`MIN_CLIENT_TIMEOUT_S` too.

    ``allowed`` is the policy's ``requests.allow_fields`` (already checked with :func:`allowable`).
    Cheap: a dict lookup per field, and ``extra_body`` only when the request has one."""
    allowed = allowed if isinstance(allowed, (set, frozenset)) else frozenset(allowed)
    for name in CLIENT_TIMEOUTS:
        value = data.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < MIN_CLIENT_TIMEOUT_S:
            return BadField(name, f"a timeout below {MIN_CLIENT_TIMEOUT_S:g} s is not accepted on a governed group, "
                            f"got {_shown(value)}: a request the provider received is charged even when it times out")
    tools = data.get("tools")
    if tools and isinstance(tools, list):
        problem = _billed_tool(tools, allowed)
        if problem is not None:
            return problem
    rest = data.keys() - _PLAIN  # the common request has only plain fields: one set difference
    for name in rest:
        effect = FIELDS.get(name)
        if effect is None or effect is Effect.UNBOUNDED:
            if name == EXTRA_BODY:
                problem = _extra_body(data[name], allowed)
                if problem is not None:
                    return problem
                continue
            if name in allowed or data[name] is None:
                continue
            if effect is Effect.UNBOUNDED:
                return BadField(name, "billed in a way the budget reservation cannot bound; not accepted on a "
                                "governed group unless the policy allows it (requests: {allow_fields: [...]})")
            return BadField(name, "not a request field litellm-payg knows, so its effect on the bill cannot be "
                            "bounded; the operator can allow it in the policy (requests: {allow_fields: [...]})")
        if effect is Effect.REROUTE and data[name] is not None and not _proxy_api_version(name, data):
            return BadField(name, "changes the deployment, endpoint, key or price LiteLLM uses for the call, "
                            "which the policy did not pick; not accepted on a governed group")
    return None


#: tool types billed only by the tokens they add to the prompt and the answer: a function the
#: client runs itself (OpenAI chat and Responses ``function``/``custom``; an Anthropic tool has
#: no ``type``, a Gemini ``functionDeclarations`` entry neither)
TOKEN_BILLED_TOOLS = frozenset({"function", "custom"})
#: Gemini tools the provider runs and bills per query (grounding, search), keyed by name
GEMINI_BILLED_TOOLS = frozenset({"googleSearch", "google_search", "googleSearchRetrieval", "google_search_retrieval",
                                 "googleMaps", "google_maps", "enterpriseWebSearch", "enterprise_web_search"})


def _billed_tool(tools: list[Any], allowed: frozenset[str] | set[str]) -> BadField | None:
    """A tool the provider runs and bills per call (web search, code interpreter, file search...):
    its cost is not in the tokens the reservation bounds, so it is refused unless the policy allows
    its type (``tools.<type>``)."""
    for index, tool in enumerate(tools):
        if not isinstance(tool, Mapping):
            continue
        kind = tool.get("type")
        kinds = [kind] if isinstance(kind, str) and kind not in TOKEN_BILLED_TOOLS else []
        kinds += [key for key in tool if key in GEMINI_BILLED_TOOLS]
        for kind in kinds:
            if f"tools.{kind}" not in allowed:
                return BadField(f"tools[{index}].type", f"a {kind!r} tool is run and billed by the provider per call, "
                                "which the budget reservation cannot bound; not accepted on a governed group unless "
                                f"the policy allows it (requests: {{allow_fields: [tools.{kind}]}})")
    return None


def _extra_body(value: Any, allowed: frozenset[str] | set[str]) -> BadField | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        return BadField(EXTRA_BODY, f"expected an object, got {_shown(value)}")
    for key in value:
        if f"{EXTRA_BODY}.{key}" not in allowed:
            known = FIELDS.get(key) if isinstance(key, str) else None
            why = (f"it would override the request's own {key!r} ({known.value}) after the budget reservation read it"
                   if known is not None else "its effect on the bill cannot be bounded")
            return BadField(f"{EXTRA_BODY}.{key}", f"extra_body is sent to the provider as is, and {why}; "
                            "not accepted on a governed group unless the policy allows it "
                            "(requests: {allow_fields: [extra_body.<field>]}, unknown fields only)")
    return None


def _proxy_api_version(name: str, data: Mapping[str, Any]) -> bool:
    """Whether ``api_version`` is the one LiteLLM's proxy copied from the URL's ``api-version``
    query parameter (every Azure OpenAI SDK sends one): it picks the API version of the
    deployment the policy chose, not another deployment."""
    if name != "api_version":
        return False
    server = data.get("proxy_server_request")
    url = server.get("url") if isinstance(server, Mapping) else None
    if not isinstance(url, str):
        return False
    return parse_qs(urlsplit(url).query).get("api-version", [None])[-1] == data.get("api_version")
