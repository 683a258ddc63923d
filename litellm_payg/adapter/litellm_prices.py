"""LiteLLM's price map and token counter, as the price source the layers below read
(``core/price_source.py``: the package root installs this one by default, on first use).

Prices are ``litellm.model_cost`` (through ``litellm.get_model_info``), providers
``litellm.get_llm_provider``, vision support LiteLLM's own pre-call check, and tokens
``litellm.token_counter``: what LiteLLM itself bills and checks a request with.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import litellm


class LiteLLMPrices:
    """:class:`~litellm_payg.core.price_source.PriceSource` and ``TokenCounter`` from the LiteLLM
    installed in this process (its price map as the application chose to load it)."""

    def model_info(self, model: str, provider: str | None = None) -> Mapping[str, Any] | None:
        """``litellm.get_model_info``, or None for a model LiteLLM does not know."""
        quiet, litellm.suppress_debug_info = litellm.suppress_debug_info, True  # no "Provider List" banner
        try:
            return litellm.get_model_info(model=model, custom_llm_provider=provider)
        except Exception:  # LiteLLM raises a bare Exception for an unmapped model
            return None
        finally:
            litellm.suppress_debug_info = quiet

    def price_entry(self, key: str) -> Mapping[str, Any] | None:
        """``litellm.model_cost[key]`` as written: a Router registers every deployment's model there,
        with no prices for a model LiteLLM does not know (``get_model_info`` then says 0.0)."""
        return litellm.model_cost.get(key)

    def model_names(self) -> Iterable[str]:
        return litellm.model_cost

    def provider_of(self, model: str, api_base: str | None = None) -> str:
        return litellm.get_llm_provider(model=model, api_base=api_base)[1]

    def declares_no_vision(self, deployment: Mapping[str, Any], group: str) -> bool:
        """LiteLLM's own answer (``router_rust.steps.precall.declares_no_vision``, 1.110) where it
        has one; before, what it reads: ``model_info.supports_vision: false``."""
        try:
            from litellm.router_rust.steps.precall import declares_no_vision
        except ImportError:  # LiteLLM before the Rust router core
            return (deployment.get("model_info") or {}).get("supports_vision") is False
        try:
            return bool(declares_no_vision(deployment, group))
        except Exception:  # noqa: BLE001 - LiteLLM keeps a deployment it cannot classify, and so do we
            return False

    def count_tokens(self, model: str, *, messages: Sequence[Any] | None = None, text: str | None = None,
                     tools: Any = None, count_response_tokens: bool = False) -> int:
        """``litellm.token_counter`` (these are its own defaults)."""
        return int(litellm.token_counter(model=model, messages=messages, text=text, tools=tools,
                                         count_response_tokens=count_response_tokens))
