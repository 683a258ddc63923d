"""What a client may not send: checks on an incoming request, before anything is reserved.

Everything in a request (body, metadata, headers, ids) comes from the client; only the
authenticated key and the operator's config are trusted. Two kinds of request are refused here,
each with an error that names the field, so a client learns what to fix and nothing reaches the
ledger:

* **Forged plugin state.** ``payg_*`` metadata keys are the plugin's namespace. The plugin keeps
  its per-request state itself (:mod:`litellm_payg.runtime.request_state`) and never reads it back from
  metadata, so a client-sent key could not move a charge anyway; it is refused rather than
  silently dropped, so a client that relied on one finds out. ``payg_hints`` is the one key a
  client may send: hints can only tighten a route (:func:`litellm_payg.core.identity.hints_of`).
* **Malformed fields the plugin reads** (``messages``, the max-token fields, ``n``, ``stream``,
  ``stream_options``, ``tools``) and LiteLLM's own parameters of the wrong type
  (:data:`LITELLM_PARAM_TYPES`: retries, timeouts, ids, tags): a request LiteLLM would fail on later
  must not be counted, reserved or answered with a 5xx first.
* **Client-side credentials** (``api_key``, ``api_base``, ``base_url`` in the request): LiteLLM
  would run the call on a clone of the deployment that the policy never picked.

Fields the plugin does not know at all (and ``extra_body``) are the business of
:mod:`litellm_payg.wire.request_fields`, the closed request surface of a governed group.

No LiteLLM here: the adapter maps a :class:`BadField` to the error each caller expects (HTTP 400 in
the proxy, ``litellm.BadRequestError`` in the SDK).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: the metadata key prefix reserved for the plugin
STATE_PREFIX = "payg_"
#: the only ``payg_*`` key a client may send (it can only tighten a route)
CLIENT_KEYS = frozenset({"payg_hints"})
#: where LiteLLM keeps request metadata: ``metadata`` on chat/text routes, ``litellm_metadata`` on
#: ``/v1/messages``, ``/v1/responses`` and the other routes LiteLLM's proxy lists in
#: ``LITELLM_METADATA_ROUTES`` (litellm/proxy/litellm_pre_call_utils.py)
METADATA_FIELDS = ("metadata", "litellm_metadata")

#: the largest max-token value accepted: above every model's output limit, below amounts that
#: could overflow a reservation. A bigger value is a mistake or an attack, never a real request.
MAX_OUTPUT_TOKENS = 10_000_000
#: choices per request (``n``, ``best_of``); OpenAI's own limit is 128
MAX_CHOICES = 128
#: fields that cap a request's output tokens, by API: chat, chat (new name), /v1/responses
MAX_TOKEN_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


@dataclass(frozen=True)
class BadField:
    """One field of a request the plugin refuses, and why."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"litellm-payg: invalid request field {self.field!r}: {self.message}"


def forged_state_keys(data: Mapping[str, Any]) -> list[str]:
    """The ``payg_*`` keys a client put in the request's metadata (``metadata.payg_trace``...),
    except the allowed :data:`CLIENT_KEYS`."""
    found = []
    for where in METADATA_FIELDS:
        metadata = data.get(where)
        if metadata and (type(metadata) is dict or isinstance(metadata, Mapping)):
            found += [
                f"{where}.{key}" for key in metadata
                if isinstance(key, str) and key.startswith(STATE_PREFIX) and key not in CLIENT_KEYS
            ]
    return found


#: request fields that make LiteLLM clone a deployment with the caller's own credentials or
#: endpoint: the call then runs on a deployment the policy never picked (a new id), so its
#: reservation would dangle and its spend be recorded against nothing
CLIENT_CREDENTIAL_FIELDS = ("api_key", "api_base", "base_url")


def check_request(data: Mapping[str, Any], api: str | None = None) -> BadField | None:
    """The first field of ``data`` (a request's kwargs or body) the plugin cannot use, or None.
    ``api`` (:func:`api_of` a Router method or proxy call type) adds the checks of that API's own
    fields (:func:`_api_fields`)."""
    # a check whose fields are all absent finds nothing (each reads its fields with get: absent is
    # None): on a plain dict only the checks of the fields it has run, in the same order
    present = data.keys() & _CHECKED_FIELDS if type(data) is dict else None
    for check, fields in _CHECKS:
        if present is not None and present.isdisjoint(fields):
            continue
        if check is _response_format and api in _FORMAT_NAMED_APIS:
            continue  # their response_format is a name ("verbose_json", "mp3", "b64_json")
        problem = check(data)
        if problem is not None:
            return problem
    return _api_fields(data, api) if api in _CHECKED_APIS else None


#: APIs whose ``response_format`` is a format's name, not a chat answer's shape
_FORMAT_NAMED_APIS = frozenset(("transcription", "speech", "image_generation"))

_CHECKED_APIS = frozenset(("text_completion", "embedding", "completion", "anthropic_messages"))


def _api_fields(data: Mapping[str, Any], api: str | None) -> BadField | None:
    """Fields one API's LiteLLM call fails on with a 500 after the reservation: a text completion
    with ``messages`` (LiteLLM builds its own from ``prompt``: "multiple values for keyword argument
    'messages'") or a ``prompt`` that is not text (:func:`_text_prompt`); an
    embedding with ``stream: true`` (LiteLLM answers an embedding, which the proxy then tries to
    stream, after the provider billed it); a chat or Anthropic messages request whose ``messages``
    is null (LiteLLM's Anthropic client iterates it, and the Router retries the ``TypeError``)."""
    if api in ("completion", "anthropic_messages"):
        if "messages" in data and data["messages"] is None:
            return BadField("messages", "expected a non-empty list of messages, got null")
    elif api == "text_completion":
        if "messages" in data:  # even null: LiteLLM passes it on next to the messages it builds
            return BadField("messages", "not a field of text completions: send the text as 'prompt', or the "
                            "messages to /v1/chat/completions")
        if "prompt" in data and not _text_prompt(data["prompt"]):
            return BadField("prompt", f"expected a string or a non-empty list of strings (token ids are not "
                            f"accepted on a governed group), got {_shown(data['prompt'])}")
    elif api == "embedding" and data.get("stream") is True:
        return BadField("stream", "embeddings are not streamed: send stream false or leave it out")
    return None


def _text_prompt(prompt: Any) -> bool:
    """Text, or a non-empty list of texts: the prompts LiteLLM maps for every provider. Token ids it
    maps for OpenAI and Azure only, and then fails on them for a chat model ("'int' object has no
    attribute 'get'"); an empty list is its "Unmapped prompt format"."""
    return isinstance(prompt, str) or (isinstance(prompt, list) and bool(prompt) and all(isinstance(p, str) for p in prompt))


def whole_number(value: Any) -> int | None:
    """``value`` as an int if it is a whole number (an int, or a float such as ``200.0``), else None.
    ``True`` is not a number here, and neither is ``"200"``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None


#: the max-token fields LiteLLM sends the provider, per API (a Router method or the proxy's call
#: type; ``a`` prefix dropped). Chat: LiteLLM maps ``max_tokens`` to ``max_completion_tokens`` for
#: o-series, Anthropic, Gemini and Mistral models and sends only one of them, so both count and the
#: larger wins. Responses: LiteLLM drops ``max_tokens``, only ``max_output_tokens`` caps. Anthropic
#: messages and text completions: ``max_tokens``. An API not listed: every field, the larger wins.
CAP_FIELDS_BY_API: dict[str, tuple[str, ...]] = {
    "completion": ("max_tokens", "max_completion_tokens"),
    "text_completion": ("max_tokens",),
    "responses": ("max_output_tokens",),
    "anthropic_messages": ("max_tokens",),
    "generate_content": (),
}
#: Gemini's cap, inside ``generationConfig`` (the wire name) or ``config`` (LiteLLM's SDK name)
GEMINI_CAP = tuple((outer, inner) for outer in ("generationConfig", "generation_config", "config")
                   for inner in ("maxOutputTokens", "max_output_tokens"))  # Gemini's JSON takes either spelling


_GEMINI_CONFIGS = frozenset(outer for outer, _ in GEMINI_CAP)


def api_of(call: Any) -> str | None:
    """The API of a Router method name or a proxy call type (``acompletion`` -> ``completion``)."""
    if call is None:
        return None
    name = str(getattr(call, "value", call))
    return name[1:] if name.startswith("a") and name[1:] in _APIS else name


_APIS = frozenset(("completion", "text_completion", "responses", "anthropic_messages", "generate_content",
                   "embedding", "image_generation", "transcription", "speech", "rerank", "moderation"))


def output_cap(data: Mapping[str, Any], api: str | None = None) -> int | None:
    """The output cap the provider applies, after :func:`check_request` accepted the request: the
    largest of the max-token fields LiteLLM sends for ``api`` (:data:`CAP_FIELDS_BY_API`), or
    None when none is sent (the provider then applies the model's own maximum).

    The largest, not the first: LiteLLM sends only one of ``max_tokens`` and
    ``max_completion_tokens`` to an o-series model (the latter), so ``max_tokens: 1`` with
    ``max_completion_tokens: 5000`` is billed up to 5000 output tokens."""
    names = CAP_FIELDS_BY_API.get(api, MAX_TOKEN_FIELDS) if api is not None else MAX_TOKEN_FIELDS
    caps = [whole_number(data[name]) for name in names if name in data]
    if api in (None, "generate_content") and not _GEMINI_CONFIGS.isdisjoint(data.keys()):
        for outer, inner in GEMINI_CAP:
            config = data.get(outer)
            if isinstance(config, Mapping):
                caps.append(whole_number(config.get(inner)))
    found = [cap for cap in caps if cap is not None]
    return max(found) if found else None


def choices(data: Mapping[str, Any]) -> int:
    """How many answers the request asks for (``n``, ``best_of`` for text completions, Gemini's
    ``candidateCount``): each is billed its own output tokens, so a reservation multiplies by it."""
    counts = [whole_number(data[name]) for name in ("n", "best_of") if name in data]
    if not _GEMINI_CONFIGS.isdisjoint(data.keys()):
        for outer, inner in GEMINI_CANDIDATES:  # Gemini bills each candidate's output too
            config = data.get(outer)
            if isinstance(config, Mapping):
                counts.append(whole_number(config.get(inner)))
    return max([1, *(c for c in counts if c is not None)])


#: Gemini's ``n``, inside its generation config (wire and SDK names)
GEMINI_CANDIDATES = tuple((outer, inner) for outer in ("generationConfig", "generation_config", "config")
                          for inner in ("candidateCount", "candidate_count"))


def asks_cache_write(messages: Any, data: Mapping[str, Any]) -> bool:
    """Whether the prompt marks a part for the provider's cache (Anthropic-style ``cache_control``
    on a message, a content part, a tool or a ``system`` part): those tokens may be billed at the
    cache-write price, above the input price."""
    for part in (messages, data.get("system"), data.get("tools")):
        if isinstance(part, list) and any(_cache_marked(item) for item in part):
            return True
    return False


def _cache_marked(item: Any) -> bool:
    if not isinstance(item, Mapping):
        return False
    if "cache_control" in item:
        return True
    content = item.get("content")
    return isinstance(content, list) and any(isinstance(p, Mapping) and "cache_control" in p for p in content)


def _one_model(data: Mapping[str, Any]) -> BadField | None:
    """LiteLLM's proxy turns ``model: "a,b"`` into a batch of calls that share one request (one
    metadata dict, one logging object: only one of them is logged), and ``fastest_response`` into
    a race whose losers are cancelled mid-call: neither can be reserved and settled per call."""
    model = data.get("model")
    if isinstance(model, str) and "," in model:
        return BadField("model", f"one model group per request, got {model!r}: send one request per group")
    if data.get("fastest_response"):
        return BadField("fastest_response", "not supported on a governed router: send one request per group")
    return None


def _credentials(data: Mapping[str, Any]) -> BadField | None:
    for name in CLIENT_CREDENTIAL_FIELDS:
        if data.get(name) is not None:
            return BadField(name, "client-side credentials and endpoints are not accepted on a governed router: "
                            "requests run on the operator's deployments, with their keys")
    return None


def _messages(data: Mapping[str, Any]) -> BadField | None:
    messages = data.get("messages")
    if messages is None:
        return None
    if not isinstance(messages, list) or not messages:
        return BadField("messages", f"expected a non-empty list of messages, got {_shown(messages)}")
    for index, message in enumerate(messages):
        if type(message) is not dict and not isinstance(message, Mapping):  # a dict first: no ABC check
            return BadField(f"messages[{index}]", f"expected an object with 'role' and 'content', got {_shown(message)}")
        role = message.get("role")
        if not isinstance(role, str) or not role:
            return BadField(f"messages[{index}].role", f"expected a role such as 'user', got {_shown(role)}")
        content = message.get("content")
        if content is not None and not isinstance(content, (str, list)):
            return BadField(f"messages[{index}].content", f"expected text or a list of content parts, got {_shown(content)}")
    return None


def _max_tokens(data: Mapping[str, Any]) -> BadField | None:
    return _whole_numbers(data, MAX_TOKEN_FIELDS, MAX_OUTPUT_TOKENS)


def _choices(data: Mapping[str, Any]) -> BadField | None:
    return _whole_numbers(data, ("n", "best_of"), MAX_CHOICES)


def _whole_numbers(data: Mapping[str, Any], names: tuple[str, ...], most: int) -> BadField | None:
    """The first of ``names`` that is set but is not a whole number from 1 to ``most``."""
    for name in names:
        value = data.get(name)
        if value is None:
            continue
        number = whole_number(value)
        if number is None or not 1 <= number <= most:
            return BadField(name, f"expected a whole number from 1 to {most:,}, got {_shown(value)}")
    return None


def _stream(data: Mapping[str, Any]) -> BadField | None:
    value = data.get("stream")
    if value is None or isinstance(value, bool):
        return None
    return BadField("stream", f"expected true or false, got {_shown(value)}")


def _stream_options(data: Mapping[str, Any]) -> BadField | None:
    value = data.get("stream_options")
    if value is None:
        return None
    if not isinstance(value, Mapping):
        return BadField("stream_options", f"expected an object such as {{\"include_usage\": true}}, got {_shown(value)}")
    include = value.get("include_usage")
    if include is not None and not isinstance(include, bool):
        return BadField("stream_options.include_usage", f"expected true or false, got {_shown(include)}")
    return None


def _tools(data: Mapping[str, Any]) -> BadField | None:
    value = data.get("tools")
    if value is None or isinstance(value, list):
        return None
    return BadField("tools", f"expected a list of tools, got {_shown(value)}")


def _metadata(data: Mapping[str, Any]) -> BadField | None:
    for name in METADATA_FIELDS:
        value = data.get(name)
        if value is not None and type(value) is not dict and not isinstance(value, Mapping):
            return BadField(name, f"expected an object, got {_shown(value)}")
    return None


def _response_format(data: Mapping[str, Any]) -> BadField | None:
    """An object in JSON (a pydantic model class in Python is LiteLLM's to convert): LiteLLM's Azure
    client raises "Unsupported response_format type" for a list, a 500 after the reservation."""
    value = data.get("response_format")
    if value is None or not isinstance(value, _JSON_VALUES) or isinstance(value, Mapping):
        return None
    return BadField("response_format", f"expected an object such as {{\"type\": \"json_object\"}}, got {_shown(value)}")


#: LiteLLM's own request parameters and the type each must have. LiteLLM reads them itself (its
#: retries, timeouts, logging ids, tags): a wrong type fails inside LiteLLM, after the reservation,
#: as a 500 (``num_retries: "3"``, ``litellm_trace_id: true`` fails LiteLLM's ``GenericLiteLLMParams``,
#: ``tags: {}``, ``timeout: [1]``). Refused here instead, naming the field. A ``timeout`` may also be
#: an ``httpx.Timeout`` object in Python (any object that is not a JSON value is left to LiteLLM).
LITELLM_PARAM_TYPES: dict[str, str] = {
    **dict.fromkeys(("num_retries", "max_retries"), "retries"),
    **dict.fromkeys(("timeout", "request_timeout", "stream_timeout"), "seconds"),
    **dict.fromkeys(("litellm_trace_id", "litellm_session_id", "litellm_call_id", "user"), "text"),
    "tags": "texts",
    **dict.fromkeys(("caching", "disable_fallbacks"), "flag"),
    "fallbacks": "list",
}
#: the most retries a request may ask for (each retry is another attempt, reserved and maybe billed)
MAX_RETRIES = 100
_JSON_VALUES = (str, bool, int, float, list, tuple, Mapping)
_PARAM_NAMES = frozenset(LITELLM_PARAM_TYPES)


def _litellm_params(data: Mapping[str, Any]) -> BadField | None:
    present = data.keys() & _PARAM_NAMES  # usually none, or a few ids the proxy adds
    for name in sorted(present) if len(present) > 1 else present:
        value, kind = data[name], LITELLM_PARAM_TYPES[name]
        if value is None:
            continue
        if kind == "retries":
            number = whole_number(value)
            if number is None or not 0 <= number <= MAX_RETRIES:
                return BadField(name, f"expected a whole number from 0 to {MAX_RETRIES}, got {_shown(value)}")
        elif kind == "seconds":
            if isinstance(value, _JSON_VALUES) and (
                    isinstance(value, bool) or not isinstance(value, (int, float))
                    or not math.isfinite(value) or value <= 0):
                return BadField(name, f"expected a number of seconds above 0, got {_shown(value)}")
        elif kind == "text":
            if not isinstance(value, str):
                return BadField(name, f"expected a string, got {_shown(value)}")
        elif kind == "texts":
            if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
                return BadField(name, f"expected a list of strings, got {_shown(value)}")
        elif kind == "flag":
            if not isinstance(value, bool):
                return BadField(name, f"expected true or false, got {_shown(value)}")
        elif not isinstance(value, list):
            return BadField(name, f"expected a list, got {_shown(value)}")
    return None


#: the checks :func:`check_request` runs, in order, each with the request fields it reads
_CHECKS: tuple[tuple[Any, tuple[str, ...]], ...] = (
    (_one_model, ("model", "fastest_response")),
    (_credentials, CLIENT_CREDENTIAL_FIELDS),
    (_messages, ("messages",)),
    (_max_tokens, MAX_TOKEN_FIELDS),
    (_choices, ("n", "best_of")),
    (_stream, ("stream",)),
    (_stream_options, ("stream_options",)),
    (_tools, ("tools",)),
    (_metadata, METADATA_FIELDS),
    (_response_format, ("response_format",)),
    (_litellm_params, tuple(LITELLM_PARAM_TYPES)),
)
_CHECKED_FIELDS = frozenset(name for _, fields in _CHECKS for name in fields)


def _shown(value: Any) -> str:
    """A value for an error message: its type and a short repr (never the whole of a huge body)."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"
