"""The proxy line's old spelling, ``litellm_payg.proxy.handler``, kept working with a warning.

The handler moved to :mod:`litellm_payg.adapter.proxy` when the package was split into layers,
and every config written as ``callbacks: ["litellm_payg.proxy.handler"]`` then failed to start with
"Could not import handler". The permanent name is ``litellm_payg.proxy_handler`` (the README's one
line); this module only forwards to it, so a config keeps working while its owner updates it.
"""

from __future__ import annotations

import warnings
from typing import Any

OLD_NAME = "litellm_payg.proxy.handler"
NEW_NAME = "litellm_payg.proxy_handler"


def __getattr__(name: str) -> Any:
    """``handler``: the proxy handler itself, with a ``DeprecationWarning`` naming the new line."""
    if name == "handler":
        warnings.warn(
            f"litellm-payg: the proxy callback {OLD_NAME!r} is deprecated; write "
            f'callbacks: ["{NEW_NAME}"] in the LiteLLM config instead',
            DeprecationWarning,
            stacklevel=2,
        )
        from litellm_payg.adapter import proxy

        return proxy.handler
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
