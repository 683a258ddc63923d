"""The port through which the layers below the adapter read prices and count tokens.

Why a port: ``stores``, ``policy``, ``runtime`` and the plugins price deployments and count prompts,
but only ``adapter`` and ``tools`` may speak LiteLLM (``tests/test_layers.py``). They ask a
:class:`PriceSource` (what a price map knows of a model) and a :class:`TokenCounter` (a prompt's
tokens as the provider's tokenizer counts them) installed here; the adapter's
``litellm_prices.LiteLLMPrices`` is both, read from ``litellm.model_cost`` and
``litellm.token_counter``.

Who installs it: the package root names that implementation as the default, by module name, so it
is imported the first time something asks for a price (``load_policy`` checking a cost rule, a
Router's deployments being priced), not when ``litellm_payg`` is imported: importing the package
still imports no LiteLLM. :func:`install` puts another one in its place (another host than LiteLLM,
a test). Asked with none installed and no default to load, :func:`price_source` raises
:class:`NoPriceSource`, which says how to install one.

This module imports nothing of LiteLLM and nothing outside ``core``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from litellm_payg.core.errors import PaygError


@runtime_checkable
class PriceSource(Protocol):
    """What a price map knows of models: their prices, limits, providers and capabilities."""

    def model_info(self, model: str, provider: str | None = None) -> Mapping[str, Any] | None:
        """The map's facts about ``model`` (prices, ``max_input_tokens``, ``max_output_tokens``,
        ``key``: the entry they came from), or None for a model it does not know."""

    def price_entry(self, key: str) -> Mapping[str, Any] | None:
        """The map's raw entry under ``key``, as written (a missing price stays missing), or None."""

    def model_names(self) -> Iterable[str]:
        """Every model name the map has an entry for (for a "did you mean")."""

    def provider_of(self, model: str, api_base: str | None = None) -> str:
        """The provider a model reference is sent to; raises when it cannot tell."""

    def declares_no_vision(self, deployment: Mapping[str, Any], group: str) -> bool:
        """Whether the host would drop this deployment (an entry of ``model_list``) for an image."""


@runtime_checkable
class TokenCounter(Protocol):
    """A prompt's tokens as the model's tokenizer counts them."""

    def count_tokens(self, model: str, *, messages: Sequence[Any] | None = None, text: str | None = None,
                     tools: Any = None, count_response_tokens: bool = False) -> int:
        """Tokens of chat ``messages`` (with their ``tools``) or of a ``text``; with
        ``count_response_tokens`` the reply's priming and the tools' schema are left out."""


class NoPriceSource(PaygError):
    """Something asked for a price or a token count and no price source is installed."""


_lock = threading.Lock()
_installed: tuple[PriceSource, TokenCounter] | None = None
_default: Callable[[], Any] | None = None


def install(prices: PriceSource | None, tokens: TokenCounter | None = None) -> None:
    """Price and count with ``prices`` (and ``tokens``; by default the same object) from now on;
    ``install(None)`` goes back to the default, loaded on next use."""
    global _installed
    if prices is None:
        _installed = None
        return
    tokens = tokens if tokens is not None else prices  # type: ignore[assignment]
    for value, port in ((prices, PriceSource), (tokens, TokenCounter)):
        if not isinstance(value, port):
            raise TypeError(f"{type(value).__name__} is not a {port.__name__}: it lacks one of its methods")
    _installed = (prices, tokens)  # type: ignore[assignment]


def set_default(load: Callable[[], Any] | None) -> None:
    """What to install the first time a price is asked with none installed: ``load()`` returns an
    object that is both a :class:`PriceSource` and a :class:`TokenCounter` (the package root sets
    LiteLLM's)."""
    global _default
    _default = load


def _current() -> tuple[PriceSource, TokenCounter]:
    installed = _installed
    if installed is not None:
        return installed
    with _lock:
        if _installed is None:
            if _default is None:
                raise NoPriceSource(
                    "no price source is installed: call litellm_payg.core.price_source.install(...) with a "
                    "PriceSource (LiteLLM's is litellm_payg.adapter.litellm_prices.LiteLLMPrices())")
            try:
                loaded = _default()
            except ImportError as exc:
                raise NoPriceSource(f"the default price source (LiteLLM's price map) cannot be loaded: {exc}; "
                                    "install LiteLLM, or another PriceSource with "
                                    "litellm_payg.core.price_source.install(...)") from exc
            install(loaded)
        return _installed  # type: ignore[return-value]


def price_source() -> PriceSource:
    """The installed price source (loading the default on first use)."""
    return _current()[0]


def token_counter() -> TokenCounter:
    """The installed token counter (loading the default on first use)."""
    return _current()[1]
