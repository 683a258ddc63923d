"""What an answer is charged: LiteLLM's own cost where it has one, the deployment's price where
LiteLLM has none (or prices billed tokens at $0), and an estimate, marked as such, where the
provider did not say (no usage block, a failure after HTTP 200, a stream the client left).

The adapter's hooks decide *when* an attempt is charged; these functions read what LiteLLM hands
them (its logging payload, the response, its partial stream counts, its cost calculator, token
counter and price map) and pass it to ``core/charge.py``'s :func:`charge`, the one definition of
how usage becomes a charge (the simulator's too). They need LiteLLM, so they live in the adapter
layer, one module for all of them, instead of beside each hook.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import litellm
import pydantic

from litellm_payg.adapter import litellm_versions
from litellm_payg.core.charge import Charge, Provenance, Tariff, Usage, charge, used_tokens  # noqa: F401 - the adapter's names for them
from litellm_payg.core.charge import count as _count
from litellm_payg.core.decision import Candidate
from litellm_payg.stores.prices import count_request_tokens

logger = logging.getLogger("litellm_payg")


#: "not read yet": a caller that has read an answer's usage passes it on so it is not read again
UNREAD: Any = object()


def token_details(response: Any, usage: Any = UNREAD) -> dict[str, int]:
    """The cache reads and writes and the reasoning tokens an answer's ``usage`` reports, by
    :class:`Charge` field: LiteLLM maps every provider's cache reads to
    ``prompt_tokens_details.cached_tokens`` (OpenAI's own field; Anthropic's
    ``cache_read_input_tokens``, DeepSeek's ``prompt_cache_hit_tokens``), its writes to
    ``prompt_tokens_details.cache_write_tokens`` (Anthropic's ``cache_creation_input_tokens``), and
    reasoning to ``completion_tokens_details.reasoning_tokens``. Empty when none is reported.
    ``usage``: the answer's ``usage``, when the caller has read it."""
    if usage is UNREAD:
        usage = field_of(response, "usage")
    if usage is None:
        return {}
    prompt = field_of(usage, "prompt_tokens_details")
    completion = field_of(usage, "completion_tokens_details")
    found = {
        "cache_read_tokens": field_of(prompt, "cached_tokens") or field_of(usage, "cache_read_input_tokens"),
        "cache_write_tokens": field_of(prompt, "cache_write_tokens") or field_of(usage, "cache_creation_input_tokens"),
        "reasoning_tokens": field_of(completion, "reasoning_tokens"),
    }
    return {k: n for k, v in found.items() if v and (n := _count(v))}  # most are None: no count asked


def served_from_cache(response: Any) -> bool:
    """Whether LiteLLM's cache served ``response`` (``_hidden_params["cache_hit"]``, or a stream
    replayed from the cache, whose provider LiteLLM names ``cached_response``): the provider was not
    called. LiteLLM 1.100 keeps the original answer's ``response_cost`` on a cache hit's hidden
    params, so the flag, not the cost, says it."""
    hidden = attribute(response, "_hidden_params")
    if isinstance(hidden, Mapping) and hidden.get("cache_hit") is True:
        return True
    return attribute(response, "custom_llm_provider") == "cached_response"


#: how :func:`field_of` reads an object of each type: a mapping, a pydantic model (and whether
#: pydantic's own ``__getattr__`` is the one that answers for a name it does not hold), or anything else
_MAPPING, _MODEL, _MODEL_OWN_GETATTR, _OTHER = 1, 2, 3, 0
_KINDS: dict[type, int] = {}
#: (pydantic model class, name) -> whether the class (or its private attributes) defines the name
_ON_CLASS: dict[tuple[type, str], bool] = {}


def _kind(cls: type) -> int:
    kind = _KINDS.get(cls)
    if kind is None:
        if issubclass(cls, Mapping):
            kind = _MAPPING
        elif issubclass(cls, pydantic.BaseModel):
            kind = _MODEL if getattr(cls, "__getattr__", None) is getattr(pydantic.BaseModel, "__getattr__", None) \
                else _MODEL_OWN_GETATTR
        else:
            kind = _OTHER
        if len(_KINDS) < 1024:  # response types are few; never grows without bound
            _KINDS[cls] = kind
    return kind


def _on_class(cls: type, name: str) -> bool:
    found = _ON_CLASS.get((cls, name))
    if found is None:
        found = hasattr(cls, name) or name in (getattr(cls, "__private_attributes__", None) or {})
        if len(_ON_CLASS) < 4096:
            _ON_CLASS[(cls, name)] = found
    return found


def field_of(obj: Any, name: str) -> Any:
    """``obj.get(name)`` for a mapping, else ``getattr(obj, name, None)``: what an answer's usage
    reads are made of, on every charge.

    Why not ``getattr``: on a pydantic model such as LiteLLM's responses, a name held as an extra
    field (a response's ``usage``) or a private attribute (``_hidden_params``), or not held at all
    (``cache_read_input_tokens`` on most usages), goes through pydantic's ``__getattr__``, which
    raises and catches for a missing one (2-10 us a read); and ``isinstance(x, Mapping)`` on such a
    model is an ABC check (about 1 us). Here a type is classified once, and a model is read where
    pydantic keeps its values; only a name the model's class defines (a property) goes through
    ``getattr``."""
    if obj is None:
        return None
    cls = type(obj)
    if cls is dict:
        return obj.get(name)
    kind = _KINDS.get(cls)
    if kind is None:
        kind = _kind(cls)
    if kind == _MAPPING:
        return obj.get(name)
    if kind >= _MODEL:
        for store in (obj.__dict__, obj.__pydantic_extra__, obj.__pydantic_private__):
            if store and name in store:
                return store[name]
        if kind == _MODEL and not _on_class(cls, name):
            return None  # what pydantic's __getattr__ ends in: an AttributeError, read as None
    return getattr(obj, name, None)


def attribute(obj: Any, name: str) -> Any:
    """``getattr(obj, name, None)``, cheaper on a pydantic model (:func:`field_of`, for an object
    that is not a mapping)."""
    if obj is None:
        return None
    cls = type(obj)
    kind = _KINDS.get(cls)
    if kind is None:
        kind = _kind(cls)
    if kind == _MAPPING:
        return getattr(obj, name, None)
    return field_of(obj, name)


def answer_tokens(response: Any, usage: Any = UNREAD) -> tuple[Any, Any]:
    """The prompt and completion token counts an answer reports in its ``usage`` (chat and text
    completions, embeddings: ``prompt_tokens``/``completion_tokens``; Responses API and Anthropic
    messages: ``input_tokens``/``output_tokens``), None where it reports none. ``usage``: the
    answer's ``usage``, when the caller has read it."""
    if usage is UNREAD:
        usage = field_of(response, "usage")
    if usage is None:
        return None, None
    prompt = field_of(usage, "prompt_tokens")
    if prompt is None:
        prompt = field_of(usage, "input_tokens")
    completion = field_of(usage, "completion_tokens")
    if completion is None:
        completion = field_of(usage, "output_tokens")
    return prompt, completion


def partial_usage(log_kwargs: Mapping[str, Any]) -> tuple[int, int, float] | None:
    """What LiteLLM counted of a broken stream (its failure log's ``combined_usage_object`` and
    ``response_cost``), or None when it recovered nothing."""
    if not stream_had_begun(log_kwargs):
        return None
    usage = log_kwargs["combined_usage_object"]
    return (int(getattr(usage, "prompt_tokens", 0) or 0), int(getattr(usage, "completion_tokens", 0) or 0),
            float(log_kwargs.get("response_cost") or 0.0))


def stream_had_begun(log_kwargs: Mapping[str, Any]) -> bool:
    """Whether a failed stream had begun: LiteLLM's stream wrapper recovered partial usage from the
    chunks it received (``combined_usage_object`` on its failure log; none when nothing arrived,
    e.g. a timeout before the first chunk)."""
    usage = log_kwargs.get("combined_usage_object")
    return bool(getattr(usage, "prompt_tokens", None) or getattr(usage, "completion_tokens", None))


def client_disconnected(log_kwargs: Mapping[str, Any]) -> bool:
    """Whether LiteLLM's proxy logged this success for a stream whose client disconnected (it
    marks the request's metadata ``client_disconnected`` and bills the chunks streamed so far)."""
    litellm_params = log_kwargs.get("litellm_params") or {}
    return any(
        isinstance(md, Mapping) and md.get("client_disconnected") is True
        for md in (litellm_params.get("metadata"), litellm_params.get("litellm_metadata"), log_kwargs.get("metadata"))
    )


def seconds(start: Any, end: Any) -> float | None:
    try:
        return max(0.0, float(end) - float(start))
    except (TypeError, ValueError):
        return None


def reported_tokens(slo: Mapping[str, Any], response: Any) -> tuple[Any, Any]:
    """The prompt and completion token counts LiteLLM parsed from the answer (its standard logging
    payload, else the response's ``usage``)."""
    if "prompt_tokens" in slo or "completion_tokens" in slo:
        return slo.get("prompt_tokens"), slo.get("completion_tokens")
    usage = getattr(response, "usage", None)
    return getattr(usage, "prompt_tokens", None), getattr(usage, "completion_tokens", None)


def usage_missing(response: Any, prompt_tokens: Any, completion_tokens: Any) -> bool:
    """Whether a chat answer reported no usage: LiteLLM parsed 0 (or no) prompt *and* completion
    tokens. A real prompt is never 0 tokens, so this is never a genuine count. Only chat
    completions: other calls (images, audio) are priced per unit, not per token. A stream that
    reported no usage is not caught here: LiteLLM counts its tokens itself while assembling it."""
    return isinstance(response, litellm.ModelResponse) and not prompt_tokens and not completion_tokens


def tools_of(call: Mapping[str, Any]) -> Any:
    return call.get("tools") or (call.get("optional_params") or {}).get("tools")


def count_prompt(model: str, messages: Any, tools: Any) -> int:
    """Prompt tokens as LiteLLM counts them (``pricing.count_request_tokens``: messages and tools)."""
    return count_request_tokens(model, {"messages": messages, "tools": tools})


def count_completion(model: str, response: Any) -> int:
    """Completion tokens of an answer as LiteLLM counts a stream that reported none: its text and
    tool calls (LiteLLM's ``get_content_from_model_response``) plus any reasoning text, through
    ``litellm.token_counter``."""
    try:
        from litellm.litellm_core_utils.prompt_templates.common_utils import (
            get_content_from_model_response,
        )

        text = get_content_from_model_response(response)
    except ImportError:  # moved in another LiteLLM version: count the message text alone
        text = "".join(getattr(getattr(c, "message", None), "content", None) or "" for c in response.choices)
    tokens = int(litellm.token_counter(model=model, text=text)) if text else 0
    for choice in response.choices:
        reasoning = getattr(getattr(choice, "message", None), "reasoning_content", None)
        if reasoning:
            tokens += int(litellm.token_counter(model=model, text=reasoning))
    return tokens


def litellm_price(model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
    """LiteLLM's price map's cost of these tokens on ``model``; None when it has none (a Router
    registers every deployment's model with LiteLLM, unpriced ones at $0: unknown, not free)."""
    try:
        prompt_usd, completion_usd = litellm.cost_per_token(
            model=model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens
        )
    except Exception:  # noqa: BLE001 - LiteLLM raises a bare Exception for an unmapped model
        return None
    total = float(prompt_usd) + float(completion_usd)
    return total if total > 0 else None


def answer_charge(candidate: Candidate | None, model: Any, prompt_tokens: Any, completion_tokens: Any,
                  litellm_cost: Callable[[], Any], *, characters: int = 0, details: Mapping[str, int] | None = None,
                  cache_hit: bool = False) -> Charge:
    """The charge of an answer that reported its usage (``exact``): :func:`charge` with what
    LiteLLM made of it. ``litellm_cost`` (its logging payload's ``response_cost``, or its calculator
    run on the response) is called only when the charge may need it (not for a deployment the
    policy prices); a cost of $0 for billed tokens on a deployment without a price of its own is
    asked of LiteLLM's price map (:func:`litellm_price`) before it is believed."""
    tariff = Tariff.of(candidate)
    if cache_hit:
        return charge(Usage(prompt_tokens, completion_tokens, cache_hit=True), tariff)
    known: float | None = None
    if not (tariff.policy_priced and prompt_tokens is not None and completion_tokens is not None):
        known = float(litellm_cost() or 0.0)
        if not known and (prompt_tokens or completion_tokens) and not tariff.priced:
            known = litellm_price(str(model or ""), int(prompt_tokens or 0), int(completion_tokens or 0)) or known
    return charge(Usage(prompt_tokens, completion_tokens, litellm_cost=known, characters=characters, **(details or {})),
                  tariff)


def estimated_charge(candidate: Candidate | None, model: str, prompt_tokens: int | None, completion_tokens: int | None,
                     reserved_usd: float | None, *, countable: bool = True) -> Charge:
    """The charge of the plugin's own count of an answer (``estimated``: no usage block, a failure
    after HTTP 200): the deployment's price, else LiteLLM's price for the model, else the
    reservation. ``countable=False``: the count or the price could not be worked out, so the
    reservation is charged whatever the counts."""
    if not countable:
        return charge(Usage(prompt_tokens, completion_tokens, Provenance.ESTIMATED), Tariff(reserved_usd=reserved_usd))
    tariff = Tariff.of(candidate, reserved_usd)
    known = (None if tariff.priced or prompt_tokens is None
             else litellm_price(model, int(prompt_tokens), int(completion_tokens or 0)))
    return charge(Usage(prompt_tokens, completion_tokens, Provenance.ESTIMATED, litellm_cost=known), tariff)


def reported_charge(candidate: Candidate | None, model: str, prompt_tokens: int, completion_tokens: int,
                    reserved_usd: float | None) -> Charge:
    """The charge of the counts an answer reported somewhere LiteLLM does not price (Google's
    ``usageMetadata``): the deployment's price, else LiteLLM's price for the model, else (no
    tokens, or no price) the reservation, marked an estimate."""
    if not (prompt_tokens or completion_tokens):  # nothing reported to price
        return charge(Usage(prompt_tokens, completion_tokens), Tariff(reserved_usd=reserved_usd))
    tariff = Tariff.of(candidate, reserved_usd)
    known = None if tariff.priced else litellm_price(model, prompt_tokens, completion_tokens)
    return charge(Usage(prompt_tokens, completion_tokens, litellm_cost=known), tariff)


def failed_answer_charge(candidate: Candidate | None, prompt_tokens: int | None, reserved_usd: float | None,
                         partial: tuple[int, int, float] | None) -> tuple[Charge, str]:
    """The charge of an attempt that failed after the provider answered and reported no usage, and
    what it is (``prompt``, ``reservation``, ``streamed``, ``nothing``): the highest of the prompt
    at the deployment's price (an ``estimated`` usage of the prompt alone), the reservation (the
    most the request may have billed) and what LiteLLM counted of a stream that broke after some
    chunks (``partial``: prompt and completion tokens streamed, and LiteLLM's cost of them; an
    ``abandoned`` usage priced by the policy's price, else LiteLLM's cost). Marked an estimate."""
    tariff = Tariff.of(candidate)
    best = Charge(0.0, None if prompt_tokens is None else int(prompt_tokens), None, estimated=True, basis="nothing")
    what = "nothing"
    if tariff.priced and prompt_tokens is not None:
        best = charge(Usage(int(prompt_tokens), 0, Provenance.ESTIMATED), tariff)
        best = dataclasses.replace(best, completion_tokens=None)
        what = "prompt"
    if reserved_usd is not None and reserved_usd > best.cost:
        best = Charge(reserved_usd, None if prompt_tokens is None else int(prompt_tokens), None, estimated=True,
                      basis="reservation")
        what = "reservation"
    if partial is not None:
        streamed_prompt, streamed_completion, litellm_cost = partial
        # LiteLLM's count of the streamed tokens, at the policy's price where it prices the deployment
        priced_by = tariff if tariff.policy_priced else Tariff()
        streamed = charge(Usage(streamed_prompt, streamed_completion, Provenance.ABANDONED, litellm_cost=litellm_cost),
                          priced_by)
        if streamed.cost > best.cost:
            best = Charge(streamed.cost, streamed_prompt, streamed_completion, estimated=True, basis=streamed.basis)
            what = "streamed"
    return best, what


def streamed_cost(candidate: Candidate | None, model: str, prompt_tokens: int | None, completion_tokens: int | None,
                  reserved_usd: float | None) -> float:
    """What was streamed of a stream left before its end (its prompt, None when not known, and the
    completion tokens read), priced at the deployment's price, else LiteLLM's, else its reservation: the
    charge of an abandoned usage (:func:`~litellm_payg.core.charge.charge`)."""
    tariff = Tariff.of(candidate, reserved_usd)
    known = (None if tariff.priced or prompt_tokens is None
             else litellm_price(model, int(prompt_tokens), int(completion_tokens or 0)))
    streamed = Usage(prompt_tokens, int(completion_tokens or 0), Provenance.ABANDONED, litellm_cost=known)
    return charge(streamed, tariff).cost


_USAGE_KEY = re.compile(r'"usage"\s*:\s*\{')
_PROMPT_KEYS = ("prompt_tokens", "input_tokens", "promptTokenCount")
_COMPLETION_KEYS = ("completion_tokens", "output_tokens", "candidatesTokenCount")


def usage_in_text(text: str) -> tuple[int, int] | None:
    """The largest usage block (prompt, completion tokens) found in the text of an answer LiteLLM
    could not read, which its error message carries (e.g. "Empty or invalid response from LLM
    endpoint. Received: 'data: {...}'"); None when it has none.

    Why: the provider billed what that block says, so an answered failure is charged the
    provider's own count when it is there, rather than an estimate."""
    best: tuple[int, int] | None = None
    decoder = json.JSONDecoder()
    for match in _USAGE_KEY.finditer(text):
        try:
            block, _ = decoder.raw_decode(text, match.end() - 1)
        except ValueError:
            continue
        counts = [next((block[k] for k in keys if isinstance(block.get(k), int) and not isinstance(block.get(k), bool)), None)
                  for keys in (_PROMPT_KEYS, _COMPLETION_KEYS)]
        if counts[0] is None or counts[1] is None or counts[0] < 0 or counts[1] < 0:
            continue
        found = (int(counts[0]), int(counts[1]))
        if best is None or sum(found) > sum(best):
            best = found
    return best


def usd(amount: float) -> str:
    """A dollar amount for a log line: nine decimals (a nano-dollar, the ledger's unit), trailing
    zeros dropped down to six."""
    text = f"{amount:.9f}"
    while text.endswith("0") and len(text.split(".")[1]) > 6:
        text = text[:-1]
    return text


def elapsed(request_data: Mapping[str, Any]) -> float | None:
    logging_obj = request_data.get("litellm_logging_obj")
    started = getattr(logging_obj, "start_time", None)
    try:
        return max(0.0, (datetime.now() - started).total_seconds())
    except TypeError:
        return None


def attempt_cost(request_data: Mapping[str, Any], response: Any, candidate: Candidate | None) -> float:
    """What one answer cost, before LiteLLM's logging worker says: LiteLLM's own calculation for
    this attempt (the logging object's ``response_cost_calculator``, which knows the deployment's
    custom prices), falling back to the deployment's known price times the usage it reported."""
    logging_obj = request_data.get("litellm_logging_obj")
    try:
        cost = litellm_versions.attempt_cost(logging_obj, response)
        if cost is not None:
            return float(cost)
    except Exception:
        logger.debug("litellm-payg: LiteLLM could not price this answer; using the deployment's price", exc_info=True)
    try:
        return float(litellm.completion_cost(completion_response=response, model=candidate.model if candidate else None))
    except Exception:
        usage = getattr(response, "usage", None)
        if usage is None:
            return 0.0
        # LiteLLM could not price it: the reported usage at the deployment's price, else $0
        reported = Usage(int(usage.prompt_tokens or 0), int(usage.completion_tokens or 0))
        return charge(reported, Tariff.of(candidate)).cost


def plain_tokens(response: Any, usage: Any = UNREAD) -> tuple[int, int] | None:
    """The (prompt, completion) tokens of a chat answer whose usage is nothing but plain text
    tokens, else None.

    Why: such an answer costs its tokens at the model's two per-token prices, the number LiteLLM's
    calculator works out too, so it can be charged without running the calculator (about 0.4 ms per
    answer, run again later by LiteLLM's own logging). Anything else in the usage (cached or cache-
    write tokens, reasoning, audio or image tokens, a provider's own cost, tool use billed per
    call, a field this code does not know) may be priced differently: None, and the calculator
    prices it."""
    if not isinstance(response, litellm.ModelResponse):
        return None
    if usage is UNREAD:
        usage = attribute(response, "usage")
    fields = getattr(usage, "__dict__", None)
    if not isinstance(fields, dict):
        return None
    prompt, completion = fields.get("prompt_tokens"), fields.get("completion_tokens")
    if type(prompt) is not int or type(completion) is not int or prompt < 0 or completion < 0:
        return None
    for key, value in fields.items():
        if key in ("prompt_tokens", "completion_tokens", "total_tokens"):
            continue
        if key == "prompt_tokens_details":
            if not _plain_details(value, prompt):
                return None
        elif key == "completion_tokens_details":
            if not _plain_details(value, completion):
                return None
        elif not _nothing(value):
            return None
    if not _all_nothing(getattr(usage, "__pydantic_extra__", None)) or not _all_nothing(
            getattr(usage, "__pydantic_private__", None)):  # e.g. Anthropic's cache read/write counts
        return None
    return prompt, completion


def _nothing(value: Any) -> bool:
    return value is None or ((type(value) is int or type(value) is float or type(value) is bool) and value == 0)


def _all_nothing(values: Any) -> bool:
    if not values:
        return True
    return isinstance(values, Mapping) and all(_nothing(v) for v in values.values())


def _plain_details(details: Any, total: int) -> bool:
    """A usage details block that says only "all of them are text tokens" (or nothing)."""
    if details is None:
        return True
    fields = details if isinstance(details, Mapping) else getattr(details, "__dict__", None)
    if not isinstance(fields, Mapping):
        return False
    for key, value in fields.items():
        if key == "text_tokens" and (value is None or value == total):
            continue
        if not _nothing(value):
            return False
    return _all_nothing(getattr(details, "__pydantic_extra__", None))


def flat_priced(candidate: Candidate | None, deployment: Mapping[str, Any]) -> bool:
    """Whether ``candidate`` is billed at one input and one output price per token whatever the
    request's size (no long-prompt tier in its own prices or in LiteLLM's price map entries for it),
    so its plain-token answers cost :meth:`Candidate.estimate_usd`. Worked out once, at bind time."""
    if candidate is None or not candidate.priced or candidate.price_source not in ("litellm", "deployment"):
        return False
    if candidate.price_tiers:
        return False
    params = deployment.get("litellm_params") or {}
    info = deployment.get("model_info") or {}
    model = candidate.model
    base = info.get("base_model") or params.get("base_model")
    refs = [candidate.deployment_id, model, model.split("/", 1)[1] if "/" in model else None, base]
    sources = [params, info, *(litellm.model_cost.get(r) for r in refs if isinstance(r, str) and r)]
    return not any(isinstance(source, Mapping) and any(_tiered(str(k)) and v is not None and v != [] and v != {}
                                                       for k, v in source.items())
                   for source in sources)  # a Router registers models with every price key, most of them None


def _tiered(key: str) -> bool:
    """A price key that bills a plain token by the request's size (a cache lifetime's or an audio
    token's tier does not price plain tokens)."""
    return key == "tiered_pricing" or (key.startswith(("input_cost_per_token", "output_cost_per_token")) and "above_" in key)


class TokenPrices:
    """Charges plain-token chat answers at the deployment's own per-token price instead of LiteLLM's
    calculator, where that gives the same number.

    The price is the one the plugin already resolved for the deployment (its ``litellm_params``
    price or LiteLLM's price map, :class:`Candidate`); it is used only for a flat-priced
    deployment (:func:`flat_priced`), an answer whose usage is plain text tokens
    (:func:`plain_tokens`) and a chat call that asked for no service tier or web search. And only
    once LiteLLM's calculator agreed: the first such answer for each deployment, model LiteLLM
    says served it, served service tier and region is priced by both, and if they differ that
    combination is priced by the calculator from then on. So a price LiteLLM works out some other
    way (a provider's served-model price, a region's, a tier's) is never replaced."""

    #: a request field that can change LiteLLM's price for the same tokens
    _PRICED_FIELDS = ("service_tier", "web_search_options")

    def __init__(self) -> None:
        self.flat: frozenset[str] = frozenset()
        #: (deployment id, served model, served tier, provider's model, region) -> the calculator agreed
        self._agreed: dict[tuple[Any, ...], bool] = {}

    def plain(self, response: Any, candidate: Candidate | None, usage: Any = UNREAD) -> tuple[int, int] | None:
        """The answer's :func:`plain_tokens` when ``candidate`` is one this class may price (flat
        priced), else None without reading the answer."""
        if candidate is None or candidate.deployment_id not in self.flat:
            return None
        return plain_tokens(response, usage)

    def cost(self, request_data: Mapping[str, Any], response: Any, candidate: Candidate | None,
             calculator: Any, plain: Any = UNREAD) -> float:
        """What the answer costs: the deployment's price for its plain tokens where LiteLLM's
        calculator agrees (see the class), else ``calculator()``. ``plain``: :meth:`plain` of the
        answer, when the caller has worked it out."""
        tokens = None
        if candidate is not None and candidate.deployment_id in self.flat and not any(
                map(request_data.get, self._PRICED_FIELDS)):
            tokens = plain_tokens(response) if plain is UNREAD else plain
        if tokens is None:
            return calculator()
        hidden = attribute(response, "_hidden_params")
        hidden = hidden if isinstance(hidden, Mapping) else {}
        key = (candidate.deployment_id, attribute(response, "model"), attribute(response, "service_tier"),
               hidden.get("provider_response_model"), hidden.get("region_name"))
        agreed = self._agreed.get(key)
        fast = candidate.estimate_usd(*tokens)
        if agreed is None:
            priced = calculator()
            agreed = self._agreed[key] = priced == fast
            if len(self._agreed) > 10_000:  # bounded: served models and tiers come from the provider
                self._agreed.clear()
            if not agreed:
                logger.debug("litellm-payg: LiteLLM prices %s at %r, the deployment's price says %r: "
                             "its calculator prices these answers", key, priced, fast)
            return priced
        return fast if agreed else calculator()
