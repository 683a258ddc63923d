"""How an attempt's usage becomes what the ledger is charged: one definition, for the live adapter
and the simulator alike.

Why here, in ``core``: the rule (which number wins: the policy's price, LiteLLM's cost, the
deployment's per-token price, the reservation) is the plugin's, not LiteLLM's. The adapter asks
LiteLLM for what only LiteLLM knows — the exact cost of a real response, its token counts — and
passes them in (:class:`Usage`); the simulator passes LiteLLM's ``cost_per_token`` for the tokens
it simulates. Both then call :func:`charge`, so a simulated request is charged as a live one is.
No LiteLLM import (``tests/test_layers.py``): the function is pure, its inputs are plain numbers.

The usage says where its counts came from (:class:`Provenance`):

* ``exact``: the provider's own counts. The policy's own price wins where the policy prices the
  deployment (``models:``; LiteLLM would not know it); else LiteLLM's cost; a cost of $0 for billed
  tokens (LiteLLM priced them nowhere) is replaced by the deployment's per-token price.
* ``estimated``: the plugin's own count (no usage block, a failure after HTTP 200). Priced at the
  deployment's per-token price (what its reservation used), else at LiteLLM's price for those
  tokens, else the reservation is charged: never $0 for a priced deployment.
* ``abandoned``: a stream left before its end: what was streamed, priced as ``exact``, else the
  reservation. Marked an estimate, and why it was left.

Usage nothing prices is charged the reservation (marked an estimate), else $0.

A cache hit (LiteLLM's cache served the answer, the provider was not called) is charged $0.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from enum import Enum
from typing import Any


class Provenance(str, Enum):
    """Where an attempt's token counts come from."""

    EXACT = "exact"
    ESTIMATED = "estimated"
    ABANDONED = "abandoned"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Usage:
    """What an attempt used, and what LiteLLM made of it when it was asked."""

    prompt_tokens: int | None
    completion_tokens: int | None
    provenance: Provenance = Provenance.EXACT
    #: LiteLLM's cost of these tokens (its ``response_cost``, its calculator run on the response,
    #: ``cost_per_token``), when known
    litellm_cost: float | None = None
    #: why a stream was left (``abandoned`` provenance): the proxy's client hung up, or the calling
    #: code stopped reading and dropped it
    abandoned_because: str = "client_disconnected"
    #: LiteLLM's cache served the answer: the provider was not called, nothing was billed
    cache_hit: bool = False
    #: the input characters sent to a model billed by the character (text to speech)
    characters: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    def __init__(self, prompt_tokens: int | None, completion_tokens: int | None,
                 provenance: Provenance = Provenance.EXACT, litellm_cost: float | None = None,
                 abandoned_because: str = "client_disconnected", cache_hit: bool = False, characters: int = 0,
                 cache_read_tokens: int = 0, cache_write_tokens: int = 0, reasoning_tokens: int = 0) -> None:
        # written out: one Usage, one Tariff and one Charge per answer, and a generated frozen
        # __init__ sets each field with object.__setattr__ (test_hook_calls checks every field is taken)
        vars(self).update(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, provenance=provenance,
                          litellm_cost=litellm_cost, abandoned_because=abandoned_because, cache_hit=cache_hit,
                          characters=characters, cache_read_tokens=cache_read_tokens,
                          cache_write_tokens=cache_write_tokens, reasoning_tokens=reasoning_tokens)


@dataclass(frozen=True)
class Tariff:
    """What a deployment charges: its per-token prices and, when the usage cannot be priced, its
    reservation (the most the request may bill)."""

    input_usd_per_token: float | None = None
    output_usd_per_token: float | None = None
    #: the prices are the policy's own (``models:``): they win over LiteLLM's cost
    policy_priced: bool = False
    #: USD per input character, for a model billed by the character
    input_usd_per_character: float | None = None
    #: the request's open reservation on the deployment, when it has one
    reserved_usd: float | None = None

    def __init__(self, input_usd_per_token: float | None = None, output_usd_per_token: float | None = None,
                 policy_priced: bool = False, input_usd_per_character: float | None = None,
                 reserved_usd: float | None = None) -> None:
        vars(self).update(input_usd_per_token=input_usd_per_token, output_usd_per_token=output_usd_per_token,
                          policy_priced=policy_priced, input_usd_per_character=input_usd_per_character,
                          reserved_usd=reserved_usd)

    @classmethod
    def of(cls, candidate: Any, reserved_usd: float | None = None) -> "Tariff":
        """A deployment's tariff from its :class:`~litellm_payg.core.decision.Candidate` (None:
        a deployment the plugin does not know, priced by LiteLLM alone)."""
        if candidate is None:
            return cls(reserved_usd=reserved_usd)
        return cls(candidate.input_usd_per_token, candidate.output_usd_per_token, candidate.price_source == "policy",
                   candidate.input_usd_per_character, reserved_usd)

    @property
    def priced(self) -> bool:
        return self.input_usd_per_token is not None and self.output_usd_per_token is not None

    def price(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        if not self.priced:
            return None
        return prompt_tokens * self.input_usd_per_token + completion_tokens * self.output_usd_per_token  # type: ignore[operator]


@dataclass(frozen=True)
class Charge:
    """What one answer is charged, and the token counts the charge is based on."""

    cost: float
    prompt_tokens: int | None
    completion_tokens: int | None
    #: the answer reported no usage: counts and cost are the plugin's estimate
    estimated: bool = False
    #: the client went away mid-stream: the counts are what LiteLLM saw streamed before it did
    abandoned: bool = False
    #: why the stream was left (the record's ``abandoned`` attribute): the proxy's client hung up,
    #: or the calling code stopped reading a stream and dropped it
    abandoned_because: str = "client_disconnected"
    #: LiteLLM served the answer from its cache: the provider was not called, nothing was billed
    cache_hit: bool = False
    #: of the prompt, the tokens read from and written to the provider's cache, and of the
    #: completion the reasoning tokens, as the answer's usage reports them (``token_details``)
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    #: what the cost is: ``price`` (the deployment's per-token price), ``litellm`` (LiteLLM's
    #: cost), ``characters`` (per input character), ``reservation``, ``cache`` or ``nothing`` ($0,
    #: nothing to price it by); empty when the charge was built by hand
    basis: str = ""

    def __init__(self, cost: float, prompt_tokens: int | None, completion_tokens: int | None, estimated: bool = False,
                 abandoned: bool = False, abandoned_because: str = "client_disconnected", cache_hit: bool = False,
                 cache_read_tokens: int = 0, cache_write_tokens: int = 0, reasoning_tokens: int = 0,
                 basis: str = "") -> None:
        vars(self).update(cost=cost, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                          estimated=estimated, abandoned=abandoned, abandoned_because=abandoned_because,
                          cache_hit=cache_hit, cache_read_tokens=cache_read_tokens,
                          cache_write_tokens=cache_write_tokens, reasoning_tokens=reasoning_tokens, basis=basis)

    @property
    def priced(self) -> bool:
        """Whether the cost prices the tokens (not a reservation, nor $0 for want of a price)."""
        return self.basis in ("price", "litellm", "characters")

    @functools.cached_property
    def attrs(self) -> dict[str, Any] | None:
        """Extra ledger record attributes: ``usage: estimated`` tells an estimated charge apart in
        reports from one priced on the provider's own counts; ``abandoned: <why>`` says why;
        ``cache_hit: true`` marks an answer LiteLLM's cache served (charged $0). And the token
        counts the charge is based on (``prompt_tokens``, ``completion_tokens``, and the cache
        reads and writes and reasoning tokens when there are any), so ``what-if --from`` the
        plugin's own ledger can price the request on another deployment; none for a cache hit,
        which billed no tokens. Worked out once per charge (``simulate`` settles one charge per
        deployment and traffic class many times); every reader copies it."""
        out: dict[str, Any] = {"usage": "estimated"} if self.estimated or self.abandoned else {}
        if self.abandoned:
            out["abandoned"] = self.abandoned_because
        if self.cache_hit:
            out["cache_hit"] = "true"
            return out
        for name in ("prompt_tokens", "completion_tokens"):
            value = count(getattr(self, name))
            if value is not None:
                out[name] = value
        for name in ("cache_read_tokens", "cache_write_tokens", "reasoning_tokens"):
            value = count(getattr(self, name))
            if value:
                out[name] = value
        return out or None


def count(value: Any) -> int | None:
    """A token count as a whole number >= 0, or None (a count a provider reported oddly is left out)."""
    if type(value) is int:  # the usual count, told without int() (and None without its TypeError)
        return value if value >= 0 else None
    if value is None or isinstance(value, bool):
        return None
    try:
        n = int(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return n if n >= 0 and n == value else None


def used_tokens(charge: Charge) -> int | None:
    """The tokens an answer used (prompt and output) as its charge counted them, for a run's token
    counter; None when neither count is known (the counter keeps the request's bound)."""
    if charge.prompt_tokens is None and charge.completion_tokens is None:
        return None
    return int(charge.prompt_tokens or 0) + int(charge.completion_tokens or 0)


def _cost(usage: Usage, tariff: Tariff) -> tuple[float, str]:
    """The cost and its basis (see the module)."""
    prompt, completion = usage.prompt_tokens, usage.completion_tokens
    by_price = tariff.price(int(prompt), int(completion or 0)) if prompt is not None else None
    if usage.provenance is Provenance.ESTIMATED:
        if by_price is not None:
            return by_price, "price"
        if usage.litellm_cost:
            return float(usage.litellm_cost), "litellm"
    else:
        if tariff.policy_priced and by_price is not None and completion is not None:
            return by_price, "price"  # LiteLLM's cost would not know the policy's price
        if usage.litellm_cost:
            return float(usage.litellm_cost), "litellm"
        if (prompt or completion) and by_price is not None:
            return by_price, "price"  # LiteLLM priced billed tokens at $0, or not at all
        if completion and usage.provenance is Provenance.EXACT and (by_reported := tariff.price(0, int(completion))):
            # a usage block with completion tokens and no prompt count, which LiteLLM priced at $0:
            # the completion at the deployment's price (an abandoned stream's unknown prompt falls
            # to the reservation below instead: the prompt was billed, its size is not known)
            return by_reported, "price"
        if usage.provenance is Provenance.EXACT and usage.litellm_cost is not None:
            return 0.0, "litellm"  # LiteLLM's $0, and no price of the deployment's to say otherwise
    if tariff.reserved_usd is not None:
        return tariff.reserved_usd, "reservation"
    return 0.0, "nothing"


def charge(usage: Usage, tariff: Tariff) -> Charge:
    """What ``usage`` on a deployment of ``tariff`` is charged (the rules: see the module)."""
    if usage.cache_hit:
        return Charge(0.0, usage.prompt_tokens, usage.completion_tokens, cache_hit=True, basis="cache")
    cost, basis = _cost(usage, tariff)
    per_character = tariff.input_usd_per_character
    if per_character and usage.characters and usage.characters * per_character > cost:
        # a speech model bills every character of its input; LiteLLM's cost leaves out the
        # whitespace, so the ledger would fall below the bill: the characters the provider was sent
        cost, basis = usage.characters * per_character, "characters"
    return Charge(
        cost, usage.prompt_tokens, usage.completion_tokens,
        estimated=usage.provenance is Provenance.ESTIMATED or basis == "reservation",
        abandoned=usage.provenance is Provenance.ABANDONED, abandoned_because=usage.abandoned_because,
        cache_read_tokens=usage.cache_read_tokens, cache_write_tokens=usage.cache_write_tokens,
        reasoning_tokens=usage.reasoning_tokens, basis=basis,
    )
