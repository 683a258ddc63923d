"""litellm-payg: pay-as-you-go cost control for LiteLLM, as pluggy policies.

``import litellm_payg`` is light and has no side effects: it does not import LiteLLM until ``attach``
(or another name that needs it) is used, and it changes no environment variable and no LiteLLM
global. Which price map LiteLLM loads (fetched, or the copy bundled in its wheel with
``LITELLM_LOCAL_MODEL_COST_MAP=True``) is the application's choice; the ``litellm-payg`` CLI, the
pytest plugin and the benchmarks choose the bundled one unless told otherwise. The repairs in
:mod:`litellm_payg.adapter.litellm_fixes` are applied by ``attach`` and the proxy handler, not on import.

Prices and token counts reach the layers below the adapter through a port
(:mod:`litellm_payg.core.price_source`); this module names LiteLLM's implementation as its default,
loaded on first use, so ``from litellm_payg.policy.load import load_policy`` prices with LiteLLM's map
as before without anything here importing LiteLLM.
"""

from __future__ import annotations

from litellm_payg.hookspecs import hookimpl
from litellm_payg.core.errors import (
    BudgetRefused,
    InvalidAmount,
    NoDeploymentLeft,
    PaygError,
    PluginError,
    PolicyError,
    UnknownPriceError,
)

from litellm_payg.core import price_source as _price_source

__version__ = "0.1.0"


def _litellm_prices():
    """LiteLLM's price map and token counter (``adapter/litellm_prices.py``), imported the first
    time something below the adapter asks for a price or a token count, not on import."""
    import importlib

    return importlib.import_module("litellm_payg.adapter.litellm_prices").LiteLLMPrices()


# the default price source: the layers below the adapter read prices through this port
# (``core/price_source.py``) and never import LiteLLM themselves
_price_source.set_default(_litellm_prices)

__all__ = [
    "BudgetExceeded",
    "BudgetRefused",
    "Candidate",
    "Engine",
    "InvalidAmount",
    "LedgerDown",
    "NoDeploymentLeft",
    "PaygError",
    "PluginError",
    "PolicyError",
    "RouteRequest",
    "Rule",
    "RunNotFound",
    "RunStatus",
    "RuleOptions",
    "Snapshot",
    "Step",
    "UnknownPriceError",
    "attach",
    "hookimpl",
    "load_policy",
]

_LAZY = {
    # what a plugin author writes a rule or a filter with (the modules behind them may move)
    "Candidate": ("litellm_payg.core.decision", "Candidate"),
    "RouteRequest": ("litellm_payg.core.decision", "RouteRequest"),
    "Step": ("litellm_payg.core.decision", "Step"),
    "Snapshot": ("litellm_payg.core.snapshot", "Snapshot"),
    "Rule": ("litellm_payg.rules", "Rule"),
    # a run's status and run control (``Engine.run_report`` / ``close_run`` / ``grant_run``)
    "RunStatus": ("litellm_payg.core.runs", "RunStatus"),
    "RunNotFound": ("litellm_payg.core.runs", "RunNotFound"),
    "RuleOptions": ("litellm_payg.rules", "RuleOptions"),
    # the runtime and LiteLLM
    "BudgetExceeded": ("litellm_payg.adapter.litellm_errors", "BudgetExceeded"),
    "LedgerDown": ("litellm_payg.runtime.spend", "LedgerDown"),
    "attach": ("litellm_payg.adapter.routing", "attach"),
    "Engine": ("litellm_payg.runtime.engine", "Engine"),
    "load_policy": ("litellm_payg.policy.load", "load_policy"),
    # the LiteLLM proxy's one line, ``callbacks: ["litellm_payg.proxy_handler"]``: a permanent name,
    # whatever module the handler lives in (it is made on first access, not at import)
    "proxy_handler": ("litellm_payg.adapter.proxy", "handler"),
}


def __getattr__(name: str):
    """Import what a name needs only when it is used (LiteLLM only for the runtime's names)."""
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'litellm_payg' has no attribute {name!r}")
