"""The proxy's ``POST /payg/feedback``: a client rates an answer it got, by its response id.

::

    curl -X POST $PROXY/payg/feedback -H "Authorization: Bearer $KEY" \
         -d '{"response_id": "chatcmpl-...", "metric": "valid", "value": true}'

Authenticated by LiteLLM's own ``user_api_key_auth`` (the same keys, custom auth included). The
rating counts for the route and deployment of the plugin's own record of that answer (kept when it
was answered, ``quality: {feedback: true}``), never for anything the client says; only the key that
made the request may rate it. An unknown id, another key's id, a metric the policy does not take or
a bad value is a 4xx (``runtime.quality.FeedbackRefused``) and changes nothing.
"""

# no ``from __future__ import annotations``: FastAPI reads the endpoint's annotations as objects
import logging
from typing import Any

from litellm_payg.wire.identity import identity_from_key
from litellm_payg.runtime.quality import FeedbackRefused
from litellm_payg.stores.evidence import EvidenceError

logger = logging.getLogger("litellm_payg")

PATH = "/payg/feedback"


def install(server: Any, handler: Any) -> bool:
    """Add the route to the proxy's FastAPI ``app`` once; False when there is no app."""
    app = getattr(server, "app", None)
    if app is None or any(getattr(r, "path", None) == PATH for r in app.router.routes):
        return False
    from fastapi import Depends, Request
    from fastapi.responses import JSONResponse
    from litellm.proxy.auth.user_api_key_auth import user_api_key_auth

    def refuse(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": {"message": f"litellm-payg feedback: {message}", "type": "payg_feedback",
                                       "code": status}}, status_code=status)

    async def payg_feedback(request: Request, user_api_key_dict: Any = Depends(user_api_key_auth)) -> Any:
        engine = handler.engine
        if engine is None:
            return refuse(503, handler.error or "the policy is unusable")
        if not engine.policy.quality.feedback:
            return refuse(404, "feedback is off (the policy's quality: {feedback: true} turns it on)")
        try:
            body = await request.json()
        except ValueError:
            return refuse(400, "the body must be JSON: {\"response_id\": ..., \"metric\": ..., \"value\": ...}")
        if not isinstance(body, dict) or set(body) - {"response_id", "metric", "value"} or "value" not in body:
            return refuse(422, "the body takes response_id, metric and value, and nothing else")
        api_key = identity_from_key(user_api_key_dict, {}, {}).api_key
        if api_key is None:
            return refuse(401, "the request's key could not be identified")
        try:
            tally = engine.quality.feedback(body.get("response_id"), body.get("metric") or "", body["value"], api_key=api_key)
        except FeedbackRefused as exc:
            return refuse(exc.status, str(exc))
        except EvidenceError as exc:
            logger.warning("litellm-payg feedback: evidence store unavailable: %s", exc)
            return refuse(503, "the evidence store is unavailable; try again")
        return {"ok": True, "response_id": body.get("response_id"), "metric": body.get("metric"), "n": tally.n}

    app.add_api_route(PATH, payg_feedback, methods=["POST"])
    # the proxy may have a catch-all route registered earlier: this one must be matched first
    routes = app.router.routes
    routes.insert(0, routes.pop())
    return True
