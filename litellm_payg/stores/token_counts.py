"""Prompt tokens as LiteLLM counts them, one chat message at a time, each message counted once.

LiteLLM's ``token_counter`` is reached through the token counter port (``core/price_source.py``),
so this store imports no LiteLLM.

Why: the tokenizer is the dearest part of a routing decision (130-400 us for a short prompt, more
for a long one), and chat clients and agents send the same messages again and again: the system
prompt on every request, the whole history on every turn, the same tool schemas each step.

Why it is exact: LiteLLM's count of a chat prompt is a sum over its messages plus a part that
depends only on the tools, the tool choice and whether a system message is present
(``litellm_core_utils/token_counter.py``: ``token_counter`` = ``_count_messages`` + ``_count_extra``,
and ``_count_messages`` adds each message's count in turn). So each message's count is asked of
LiteLLM once per model (``token_counter(messages=[m], count_response_tokens=True)``, its count
without the extra part) and remembered, and so is the extra part per tool set; the prompt's count
is their sum.

Checked, not assumed: the first prompt counted for each model is also counted whole, and a model
whose sum differs (another LiteLLM release's arithmetic) is counted whole from then on. A message
that is not plain JSON data (an SDK object, bytes) is counted whole too, as is a prompt whose
messages LiteLLM cannot count one by one.

What is remembered is each message's count, by its role, text and name for a plain text message
of up to ``SHORT_TEXT`` characters and by a 16-byte digest of its JSON text otherwise, for at most
``MAX_ENTRIES`` messages (least recently used first out): a client cannot make it grow past
that, and cannot choose a message whose key matches another's.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from litellm_payg.core.price_source import token_counter

logger = logging.getLogger("litellm_payg")

#: messages (per model) whose counts are remembered
MAX_ENTRIES = 8192

_counts: "OrderedDict[tuple[str, bytes | tuple], int]" = OrderedDict()
#: model -> whether its sums matched LiteLLM's whole count (absent: not checked yet)
_additive: dict[str, bool] = {}


def count_chat_tokens(model: str, messages: Sequence[Any], tools: Any = None) -> int:
    """``litellm.token_counter(model=model, messages=messages, tools=tools)``, from remembered
    per-message counts where it can (module docstring)."""
    if _additive.get(model) is False or not isinstance(messages, (list, tuple)) or not messages:
        return _whole(model, messages, tools)
    try:
        total = 0
        system = False
        for message in messages:
            digest = _digest(message)
            if digest is None:
                return _whole(model, messages, tools)
            key = (model, digest)
            count = _counts.get(key)
            if count is None:
                count = token_counter().count_tokens(model, messages=[message], count_response_tokens=True)
                _remember(key, count)
            else:
                _counts.move_to_end(key)
            total += count
            system = system or message.get("role") == "system"
        total += _extra(model, tools, system)
    except Exception:  # noqa: BLE001 - a shape LiteLLM counts only whole: let the whole count decide
        return _whole(model, messages, tools)
    if model not in _additive:
        whole = _whole(model, messages, tools)
        _additive[model] = whole == total
        if whole != total:
            logger.debug("litellm-payg: LiteLLM's count for %s is not a sum over messages (%d != %d); "
                         "its prompts are counted whole", model, whole, total)
            return whole
    return total


def _whole(model: str, messages: Any, tools: Any) -> int:
    return token_counter().count_tokens(model, messages=messages, tools=tools or None)


#: a plain text message up to this many characters is remembered by its text (cheaper than a
#: digest, and exact); a longer one, or any other shape, by a digest of its JSON
SHORT_TEXT = 2048
_PLAIN = frozenset({"role", "content", "name"})


def _digest(message: Any) -> bytes | tuple | None:
    """What the message's count is remembered by: its role, text and name when it is a short plain
    text message, else a digest of its JSON text; None for a message that is not plain JSON data."""
    if type(message) is not dict:
        return None
    content = message.get("content")
    if type(content) is str and len(content) <= SHORT_TEXT and message.keys() <= _PLAIN:
        role, name = message.get("role"), message.get("name")
        if type(role) is str and (name is None or type(name) is str):
            return (role, content, name)
    try:
        text = json.dumps(message, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError):
        return None
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _remember(key: tuple[str, bytes | tuple], count: int) -> None:
    _counts[key] = count
    while len(_counts) > MAX_ENTRIES:
        try:
            _counts.popitem(last=False)
        except KeyError:  # emptied meanwhile (another thread)
            break


#: the extra part per (model, system message present, tools digest)
_extras: dict[tuple[str, bool, bytes | None], int] = {}

_PROBE = {"role": "system", "content": ""}


def _extra(model: str, tools: Any, system: bool) -> int:
    """LiteLLM's count of a prompt beyond its messages: the reply's priming and the tools' schema
    (less when a system message is present). Measured as LiteLLM's count of a prompt holding only
    an empty message with and without that part; remembered per tool set."""
    tools = tools or None
    digest = None
    if tools is not None:
        try:
            digest = hashlib.blake2b(json.dumps(tools, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass"),
                                     digest_size=16).digest()
        except (TypeError, ValueError):
            digest = None
        if digest is None:
            raise ValueError("tools that are not plain JSON data")
    key = (model, system, digest)
    extra = _extras.get(key)
    if extra is None:
        probe = [_PROBE] if system else [dict(_PROBE, role="user")]
        counter = token_counter()
        extra = counter.count_tokens(model, messages=probe, tools=tools) - counter.count_tokens(
            model, messages=probe, count_response_tokens=True)
        if len(_extras) >= MAX_ENTRIES:
            _extras.clear()
        _extras[key] = extra
    return extra


def forget() -> None:
    """Drop what is remembered (tests; a process that swapped LiteLLM's tokenizers)."""
    _counts.clear()
    _extras.clear()
    _additive.clear()


def remembered() -> Mapping[str, Any]:
    """What is remembered: how many messages and tool sets, and the models counted whole because
    their sums did not match (for tests and diagnostics)."""
    return {"messages": len(_counts), "extras": len(_extras),
            "counted_whole": sorted(model for model, ok in _additive.items() if not ok)}
