"""``failover.on.context_window: larger_context``, made reachable through LiteLLM's fallbacks.

Why its own module: it is set up once, at install, on the Router's own settings, and the pick
filter only needs to know the alias it adds (:data:`LARGER_CONTEXT_SUFFIX`) to accept a hop to it.
"""

from __future__ import annotations

from typing import Any

from litellm_payg.adapter import litellm_versions

#: the alias of a group that a context-window fallback goes to (the group itself, larger windows)
LARGER_CONTEXT_SUFFIX = "::payg-larger-context"


def route_context_errors_back(router: Any, engine: Any) -> None:
    """Make ``failover.on.context_window: larger_context`` reachable.

    LiteLLM 1.110 never retries a context-window error inside its group: it only follows
    ``context_window_fallbacks`` to another group. So each governed group without such a fallback
    gets one to an alias of itself (``<group>::payg-larger-context``); on that hop the filter sees the
    failure and picks an untried deployment with a larger ``max_input_tokens``. A group that already
    has context-window fallbacks keeps them.
    """
    failover = engine.policy.failover
    if failover is None or failover.action_for("context_window") != "larger_context":
        return
    existing = litellm_versions.context_window_fallbacks(router)
    covered = {group for entry in existing for group in entry}
    aliases = litellm_versions.model_group_aliases(router)
    added = False
    for group in engine.routes:
        if group in covered:
            continue
        alias = group + LARGER_CONTEXT_SUFFIX
        existing.append({group: [alias]})
        aliases[alias] = group
        added = True
    if added:
        litellm_versions.set_context_window_fallbacks(router, existing, aliases)

