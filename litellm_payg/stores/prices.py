"""Prices, from LiteLLM's own price map, overridable per model in the policy.

LiteLLM is read through the price source port (``core/price_source.py``: the adapter's
``litellm_prices`` by default), so this store imports no LiteLLM; what follows names LiteLLM's
functions because that is what the default source calls.

How a request is priced (the README quotes this):

* **Per-token prices** of a deployment, first match wins: the policy's ``models:`` entry for the
  deployment id or model (``input_usd_per_1k`` / ``output_usd_per_1k``, divided by 1000); the
  deployment's own ``input_cost_per_token`` / ``output_cost_per_token``, in its ``litellm_params``
  or its ``model_info``; LiteLLM's price map (``litellm.get_model_info``, i.e.
  ``litellm.model_cost``) for the deployment's ``base_model``, else its model. No match is
  *unknown*, never $0.
* **Prompt tokens**: ``litellm.token_counter`` on every part of the prompt (``count_request_tokens``:
  messages and tools, a Responses ``input``/``instructions``, a ``system`` or text ``prompt``); chat
  messages one at a time, each counted once (``token_counts.py``: the same total, exactly).
* **Output tokens**: the cap the provider applies (``request_checks.output_cap``: the largest of
  the max-token fields LiteLLM sends for the request's API), else for routing the policy's
  ``defaults.expected_output_tokens``, and for a reservation the model's ``max_output_tokens``
  (:func:`output_limit_and_character_price`), else ``defaults.reserve_output_tokens``.
* **Estimate** = prompt tokens x input price + output tokens x output price; **price per 1K tokens**
  = estimate / (prompt + output tokens) x 1000.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from litellm_payg.core.decision import Candidate
from litellm_payg.core.price_source import price_source, token_counter
from litellm_payg.stores.token_counts import count_chat_tokens


def facts_for(refs: tuple[str, ...], models: Mapping[str, Any]) -> Any:
    """The policy's ``models:`` entry for the first of ``refs`` it names, or None."""
    for ref in refs:
        if ref in models:
            return models[ref]
    return None


def _refs(model: str, deployment_id: str | None = None) -> tuple[str, ...]:
    bare = model.split("/", 1)[1] if "/" in model else None
    return tuple(r for r in (deployment_id, model, bare) if r)


def model_info(model: str, provider: str | None = None) -> Mapping[str, Any] | None:
    """``litellm.get_model_info``, or None for a model LiteLLM does not know."""
    return price_source().model_info(model, provider)


def litellm_price(model: str, provider: str | None = None) -> tuple[float, float] | None:
    """Per-token input/output price from LiteLLM's price map, or None if LiteLLM does not know it."""
    info = model_info(model, provider)
    if info is None:
        return None
    # A Router registers every deployment's model in ``litellm.model_cost``; for a model LiteLLM does
    # not know, that entry has no prices and ``get_model_info`` then reports 0.0. Read the raw entry
    # so an unknown price stays unknown instead of becoming $0.
    raw = price_source().price_entry(str(info.get("key") or model)) or {}
    inp, out = raw.get("input_cost_per_token"), raw.get("output_cost_per_token")
    if inp is None or out is None:
        return None
    return float(inp), float(out)


def lookup_price(ref: str, models: Mapping[str, Any]) -> tuple[float, float] | None:
    """Price of a model reference as a policy names it (used by ``check`` before any Router exists)."""
    facts = facts_for(_refs(ref), models)
    if facts is not None and facts.input_usd_per_1k is not None:
        return facts.input_usd_per_1k / 1000, facts.output_usd_per_1k / 1000
    return litellm_price(ref)


def close_model_names(ref: str, models: Mapping[str, Any]) -> list[str]:
    """Up to two names close to ``ref`` among the policy's ``models:`` and LiteLLM's price map, for
    a "did you mean" (a misspelled model is a typo to fix, not a model to price)."""
    import difflib

    return difflib.get_close_matches(ref, list(dict.fromkeys([*models, *price_source().model_names()])), n=2, cutoff=0.85)


def provider_of(model: str, params: Mapping[str, Any] | None = None) -> str:
    params = params or {}
    if params.get("custom_llm_provider"):
        return str(params["custom_llm_provider"])
    try:
        return price_source().provider_of(model, params.get("api_base"))
    except Exception:
        return model.split("/", 1)[0] if "/" in model else "unknown"


def _cost_pair(source: Mapping[str, Any]) -> tuple[float, float] | None:
    inp, out = source.get("input_cost_per_token"), source.get("output_cost_per_token")
    if inp is None or out is None:
        return None
    try:
        return float(inp), float(out)
    except (TypeError, ValueError):
        return None


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def candidate_from_deployment(deployment: Mapping[str, Any], models: Mapping[str, Any]) -> Candidate:
    """Turn a LiteLLM deployment dict (an entry of ``model_list``) into a priced Candidate.

    The deployment is read as LiteLLM reads it: its price is the policy's ``models:`` override,
    else its own ``litellm_params`` or ``model_info`` ``input_cost_per_token`` /
    ``output_cost_per_token``, else the price map's for its ``base_model`` (``model_info`` or
    ``litellm_params``), else for its model. Its context window is its ``model_info.max_input_tokens``,
    else the price map's (the policy's ``models: max_input_tokens`` may narrow what the failover
    step assumes); its vision support, ``order`` and ``region_name`` are what LiteLLM's checks
    compare (``core/feasibility.py``). Worked out once, when the plugin binds to a Router."""
    params = deployment.get("litellm_params") or {}
    info = deployment.get("model_info") or {}
    model = str(params.get("model"))
    deployment_id = str(info.get("id"))
    group = str(deployment.get("model_name"))
    provider = provider_of(model, params)
    custom = params.get("custom_llm_provider")
    facts = facts_for(_refs(model, deployment_id), models)
    base_model = info.get("base_model") or params.get("base_model")
    priced_as = str(base_model) if isinstance(base_model, str) and base_model else model

    price: tuple[float, float] | None = None
    source: str | None = None
    if facts is not None and facts.input_usd_per_1k is not None:
        price, source = (facts.input_usd_per_1k / 1000, facts.output_usd_per_1k / 1000), "policy"
    elif (own := _cost_pair(params) or _cost_pair(info)) is not None:
        price, source = own, "deployment"
    else:
        price = litellm_price(priced_as, custom) or (litellm_price(model, custom) if priced_as != model else None)
        source = "litellm" if price else None

    mapped = model_info(priced_as, custom) or (model_info(model, custom) if priced_as != model else None) or {}
    litellm_window = _int_or_none(info.get("max_input_tokens")) or _int_or_none(mapped.get("max_input_tokens"))
    max_input = facts.max_input_tokens if facts is not None and facts.max_input_tokens else None
    if max_input is None:
        max_input = litellm_window
    max_output, per_character = output_limit_and_character_price(info, mapped)
    tiers, cache_write = reservation_tiers(mapped, priced_as) if source == "litellm" else ((), None)
    labels = dict(facts.labels) if facts is not None else {}
    for key, value in info.items():  # deployment model_info labels (e.g. region: eu) count too
        if isinstance(value, str) and key not in ("id",):
            labels.setdefault(key, value)
    region = params.get("region_name")
    return Candidate(
        deployment_id=deployment_id,
        model=model,
        provider=provider,
        group=group,
        input_usd_per_token=price[0] if price else None,
        output_usd_per_token=price[1] if price else None,
        quality=facts.quality if facts is not None else None,
        max_input_tokens=max_input,
        labels=labels,
        price_source=source,
        max_output_tokens=max_output,
        input_usd_per_character=per_character,
        price_tiers=tiers,
        cache_write_usd_per_token=cache_write,
        litellm_max_input_tokens=litellm_window,
        no_vision=price_source().declares_no_vision(deployment, group),
        order=_int_or_none(params.get("order")),
        region=str(region) if region is not None else None,
    )


_TIER = re.compile(r"^input_cost_per_token_above_(\d+)(k?)_tokens$")


def reservation_tiers(known: Mapping[str, Any], model: str) -> tuple[tuple[tuple[int, float, float], ...], float | None]:
    """What LiteLLM's price map bills beyond a model's base per-token prices, for a reservation's
    upper bound: its long-prompt tiers (``input_cost_per_token_above_200k_tokens`` and the output
    price beside it; LiteLLM bills every token of a prompt past the threshold at the tier's price)
    and its cache-write price (the dearest of ``cache_creation_input_token_cost`` and its longer
    lifetimes). Priority, flex and batch prices are not here: those tiers are chosen by request
    fields the request surface refuses."""
    raw = price_source().price_entry(str(known.get("key") or model)) or {}
    base_out = raw.get("output_cost_per_token")
    tiers = []
    for key, value in raw.items():
        match = _TIER.match(key)
        if match is None or value is None:
            continue
        threshold = int(match.group(1)) * (1000 if match.group(2) else 1)
        out = raw.get(f"output_cost_per_token_above_{match.group(1)}{match.group(2)}_tokens", base_out)
        tiers.append((threshold, float(value), float(out if out is not None else 0.0)))
    writes = [float(v) for k, v in raw.items()
              if k in ("cache_creation_input_token_cost", "cache_creation_input_token_cost_above_1hr") and v is not None]
    return tuple(sorted(tiers)), (max(writes) if writes else None)


def output_limit_and_character_price(
    info: Mapping[str, Any], known: Mapping[str, Any]
) -> tuple[int | None, float | None]:
    """A deployment's most output tokens and its price per input character, from its own
    ``model_info`` first (LiteLLM checks and prices the deployment with it), then LiteLLM's price
    map (``known``, ``litellm.get_model_info``); None when neither says."""
    max_output = info.get("max_output_tokens") or known.get("max_output_tokens") or known.get("max_tokens")
    per_character = info.get("input_cost_per_character")
    if per_character is None:
        per_character = known.get("input_cost_per_character")
    try:
        max_output = int(max_output) if max_output else None
    except (TypeError, ValueError):
        max_output = None
    try:
        per_character = float(per_character) if per_character is not None else None
    except (TypeError, ValueError):
        per_character = None
    return max_output, per_character


def count_prompt_tokens(model: str, messages: Any) -> int:
    """Prompt tokens as LiteLLM counts them for this model."""
    if not messages:
        return 0
    return token_counter().count_tokens(model, messages=messages)


#: what LiteLLM's counter adds per chat message beyond its text (role, separators; measured: at most
#: 7 on the bundled tokenizers of DeepSeek, Mistral, OpenAI, Anthropic, Gemini and Llama models), with
#: room to spare, and per request (the reply's priming)
TOKENS_PER_MESSAGE_AT_MOST = 16
TOKENS_PER_REQUEST_AT_MOST = 16
#: the keys of a plain text chat message (anything else has no cheap bound)
_PLAIN_MESSAGE = frozenset(("role", "content", "name"))


def prompt_tokens_at_most(request: Mapping[str, Any]) -> int | None:
    """An upper bound on :func:`count_request_tokens`, without running a tokenizer; None when the
    request has anything but plain text messages (images, tools, other prompt parts: no cheap bound).

    Why it holds: every tokenizer LiteLLM uses encodes at least one byte of UTF-8 text per token, so
    a message's text costs at most its byte length, plus a few tokens of framing per message
    (``TOKENS_PER_MESSAGE_AT_MOST``; ``tests/test_prompt_bound.py`` checks the bound against the real
    counter). A rule whose outcome is the same anywhere between 0 and this bound need not count."""
    if request.get("tools") or any(map(request.get, OTHER_PROMPT_PARTS)):
        return None
    messages = request.get("messages")
    if not isinstance(messages, (list, tuple)) or not messages:
        return None
    total = TOKENS_PER_REQUEST_AT_MOST
    for message in messages:
        if (type(message) is not dict and not isinstance(message, Mapping)) or not message.keys() <= _PLAIN_MESSAGE:
            return None
        content = message.get("content")
        if type(content) is str:
            # an ASCII text's UTF-8 length is its length (isascii is a flag CPython keeps: no encode)
            size = len(content) if content.isascii() else len(content.encode("utf-8"))
        elif isinstance(content, str):
            size = len(content.encode("utf-8"))
        elif isinstance(content, (list, tuple)) and all(
                isinstance(part, Mapping) and part.get("type") == "text" and isinstance(part.get("text"), str)
                and set(part) <= {"type", "text"} for part in content):
            size = sum(len(part["text"].encode("utf-8")) + TOKENS_PER_MESSAGE_AT_MOST for part in content)
        else:
            return None
        name = message.get("name")
        if name is not None and not isinstance(name, str):
            return None
        role = str(message.get("role"))
        size += (len(role) if role.isascii() else len(role.encode("utf-8"))) + (len(name.encode("utf-8")) if name else 0)
        total += size + TOKENS_PER_MESSAGE_AT_MOST
    return total


#: the parts of a prompt besides chat ``messages`` and their ``tools``, counted as text (or as their
#: JSON text): legacy ``functions`` (sent to the provider as tools), a Responses ``input`` and
#: ``instructions``, an Anthropic ``system``, a text ``prompt`` and ``suffix``, Gemini ``contents``
#: and system instruction, a rerank ``query`` and ``documents``
OTHER_PROMPT_PARTS = ("functions", "input", "instructions", "system", "prompt", "suffix", "contents",
                      "systemInstruction", "system_instruction", "query", "documents")


def count_request_tokens(model: str, request: Mapping[str, Any]) -> int:
    """The prompt tokens a request sends, whatever its API, as LiteLLM counts them for ``model``:
    chat ``messages`` with their ``tools`` (and legacy ``functions``); the ``/v1/responses``
    ``input`` and ``instructions``; the Anthropic ``system`` prompt; a text completion's
    ``prompt``; Gemini ``contents`` (:data:`OTHER_PROMPT_PARTS`).

    Why all of them: a budget reserves prompt tokens before the call, so a part of the prompt left
    uncounted (a 100k-token tool schema, a Responses ``input``) would be a way past a cap. A shape
    the token counter does not take is counted as its JSON text, which errs on the high side.
    """
    total = 0
    messages = request.get("messages")
    tools = request.get("tools")
    if messages:
        try:
            total += count_chat_tokens(model, messages, tools)
            tools = None
        except Exception:  # noqa: BLE001 - a message shape LiteLLM's counter does not know
            total += _count_text(model, messages)
    for name in OTHER_PROMPT_PARTS:
        part = request.get(name)
        if part:
            total += _count_text(model, part)
    if tools:
        total += _count_text(model, tools)
    return total


def _count_text(model: str, value: Any) -> int:
    """Tokens of a text, or of any other JSON value as its JSON text."""
    import json

    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        value = "\n".join(value)
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    return token_counter().count_tokens(model, text=text)
