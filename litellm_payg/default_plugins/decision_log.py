"""Logs every decision and outcome on the ``litellm_payg`` logger, so a user can see why a request
went where it did. A plugin like any other: unregister it to silence it."""

from __future__ import annotations

import logging

from litellm_payg import hookimpl
from litellm_payg.hook_chain import silent_when

logger = logging.getLogger("litellm_payg")


def _below_info(kwargs) -> bool:
    return not logger.isEnabledFor(logging.INFO)


@hookimpl(trylast=True)
@silent_when(_below_info)
def payg_decision(request, decision):
    if not logger.isEnabledFor(logging.INFO):
        return
    chosen = decision.chosen
    dropped = "; ".join(f"{d.deployment_id} ({d.model}) by {d.by}: {d.reason}" for d in decision.dropped)
    logger.info(
        "payg decision group=%s trace=%s chosen=%s order=%s dropped=[%s] notes=%s",
        request.group,
        request.trace_id,
        f"{chosen.deployment_id} ({chosen.model})" if chosen else None,
        [c.deployment_id for c in decision.ordered],
        dropped,
        decision.notes,
    )


@hookimpl(trylast=True)
@silent_when(_below_info)
def payg_outcome(outcome):
    if not logger.isEnabledFor(logging.INFO):
        return
    logger.info(
        "payg outcome group=%s trace=%s deployment=%s model=%s ok=%s cost_usd=%.9f latency_s=%s error=%s",
        outcome.group,
        outcome.trace_id,
        outcome.deployment_id,
        outcome.model,
        outcome.ok,
        outcome.cost_usd,
        None if outcome.latency_s is None else round(outcome.latency_s, 4),
        type(outcome.error).__name__ if outcome.error else None,
    )
