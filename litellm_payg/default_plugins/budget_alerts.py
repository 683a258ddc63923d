"""Built-in reactions to ``payg_budget_alert``: a warning log line, and a webhook POST when the policy
sets ``alert_webhook`` (JSON body; sent from a background thread so it never delays a request)."""

from __future__ import annotations

import json
import logging
import threading
import urllib.request

from litellm_payg import hookimpl

logger = logging.getLogger("litellm_payg")


def _payload(budget, bucket, scope, threshold, spent_usd, limit_usd, resets_at):
    return {
        "event": "payg_budget_alert",
        "budget": budget.name or bucket.split("|", 1)[0],
        "scope": scope,
        "window": budget.window,
        "threshold": threshold,
        "spent_usd": spent_usd,
        "limit_usd": limit_usd,
        "on_exceed": budget.on_exceed,
        "resets_at": resets_at.isoformat() if resets_at else None,
        "bucket": bucket,
    }


@hookimpl(trylast=True)
def payg_budget_alert(budget, bucket, scope, threshold, spent_usd, limit_usd, resets_at, policy):
    body = _payload(budget, bucket, scope, threshold, spent_usd, limit_usd, resets_at)
    logger.warning(
        "payg budget alert: %s (%s, %s) at %.0f%%: spent $%.6f of $%g%s",
        body["budget"], scope, budget.window, threshold * 100, spent_usd, limit_usd,
        f", resets {body['resets_at']}" if resets_at else "",
    )
    url = getattr(policy, "alert_webhook", None)
    if url:
        threading.Thread(target=_post, args=(url, body), name="litellm-payg-webhook", daemon=True).start()


def _post(url: str, body: dict) -> None:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            response.read()
    except Exception as exc:  # a webhook outage must not break anything: say so and move on
        logger.error("payg budget alert webhook %s failed: %s", url, exc)
