"""litellm-payg: pay-as-you-go cost control for LiteLLM, as pluggy policies.

``import litellm_payg`` is light and offline: it does not import LiteLLM until ``attach`` (or another
name that needs it) is used, and it sets ``LITELLM_LOCAL_MODEL_COST_MAP=True`` unless the process
already chose, so LiteLLM uses its bundled price map instead of fetching one.
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from .hookspecs import hookimpl  # noqa: E402
from .errors import (  # noqa: E402
    InvalidAmount,
    NoDeploymentLeft,
    PaygError,
    PluginError,
    PolicyError,
    UnknownPriceError,
)

__version__ = "0.1.0"

__all__ = [
    "BudgetExceeded",
    "Engine",
    "InvalidAmount",
    "LedgerDown",
    "NoDeploymentLeft",
    "PaygError",
    "PluginError",
    "PolicyError",
    "UnknownPriceError",
    "attach",
    "hookimpl",
    "load_policy",
]

_LAZY = {
    "BudgetExceeded": ("litellm_payg.spend", "BudgetExceeded"),
    "LedgerDown": ("litellm_payg.spend", "LedgerDown"),
    "attach": ("litellm_payg.adapter", "attach"),
    "Engine": ("litellm_payg.engine", "Engine"),
    "load_policy": ("litellm_payg.policy", "load_policy"),
}


def __getattr__(name: str):
    """Import the heavy parts (LiteLLM) only when they are used."""
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'litellm_payg' has no attribute {name!r}")
