"""Run control at the proxy: read a run, close it, grant it more, over HTTP, authenticated by LiteLLM.

A refused run used to stay refused until it idled out, and nobody could see or raise a run except
through ``engine.run_status`` in Python. The proxy handler adds three routes to LiteLLM's own
FastAPI app (``litellm.proxy.proxy_server.app``), each behind LiteLLM's ``user_api_key_auth``
dependency, so a caller is whoever LiteLLM authenticated (a virtual key, the master key, a
``custom_auth`` answer) and nothing the request says:

* ``GET /payg/runs?run=<id>``: the run under every run budget it is in (``Engine.run_report``);
* ``POST /payg/runs/close`` ``{"run": <id>}``: its next request is refused at once (``Engine.close_run``);
* ``POST /payg/runs/grant`` ``{"run": <id>, "usd": ..., "requests": ..., "tokens": ..., "seconds": ...,
  "budget": ...}``: more for this run, and open again (``Engine.grant_run``).

**Who may do what.** An *operator* — the proxy's master key or any key LiteLLM gives the
``proxy_admin`` role, or a key, team or user the policy names in ``sessions.operators`` — reads,
closes and grants any run, named by its run id (``<session>@key:<16 hex>``, as ``litellm-payg
budgets`` lists it). Any other key may only read its own runs: the id it sends is taken as a session
id of its own (``core.runs.run_for``), so another key's run is out of its reach, and a run id
qualified with another owner is a 403; close and grant are 403 for it. An unknown (or forged) run
is a 404 and changes nothing: the ledger only adjusts a run it has live (``Ledger.adjust``).

The routes are put first in the app's route list: LiteLLM mounts its UI and pass-through routes
before callbacks are loaded, and a mount at a prefix would otherwise answer first.
"""

# no ``from __future__ import annotations``: FastAPI reads the route functions' annotations
# (``Request``, imported where the routes are made) as objects
import asyncio
import logging
from typing import Any

from litellm_payg.core.identity import key_hash
from litellm_payg.wire.identity import identity_from_key
from litellm_payg.core.runs import NotYourRun, RunNotFound, run_for
from litellm_payg.stores.ledger.base import LedgerError
from litellm_payg.runtime import store_access

logger = logging.getLogger("litellm_payg")

PATH_READ = "/payg/runs"
PATH_CLOSE = "/payg/runs/close"
PATH_GRANT = "/payg/runs/grant"
_PATHS = (PATH_READ, PATH_CLOSE, PATH_GRANT)
_GRANT_FIELDS = ("run", "usd", "requests", "tokens", "seconds", "budget")

#: the handler whose engine the routes use: the latest one installed (a proxy makes one)
_handler: Any = None


def is_operator(key: Any, policy: Any) -> bool:
    """Whether the authenticated key (LiteLLM's ``UserAPIKeyAuth``) controls every run: LiteLLM's
    ``proxy_admin`` role (the master key has it), or a key, team or user ``sessions.operators``
    names."""
    role = getattr(key, "user_role", None)
    if str(getattr(role, "value", role) or "") == "proxy_admin":
        return True
    operators = getattr(policy, "run_operators", None) or {}
    who = identity_from_key(key, {}, {})
    keys = {key_hash(k) for k in operators.get("key", ())}
    return bool((who.api_key and who.api_key in keys) or (who.team and who.team in operators.get("team", ()))
                or (who.user and who.user in operators.get("user", ())))


def install(app: Any, handler: Any) -> None:
    """Add the run-control routes to LiteLLM's proxy ``app`` (first in its route list), answering
    with ``handler``'s engine; installing again only switches the handler."""
    global _handler
    _handler = handler
    if any(getattr(route, "path", None) in _PATHS for route in app.router.routes):
        return
    from fastapi import Depends, Request
    from litellm.proxy.auth.user_api_key_auth import user_api_key_auth

    async def read_run(request: Request, key: Any = Depends(user_api_key_auth)) -> Any:
        return await _answer("read", dict(request.query_params), key)

    async def close_run(request: Request, key: Any = Depends(user_api_key_auth)) -> Any:
        return await _answer("close", await _body(request), key)

    async def grant_run(request: Request, key: Any = Depends(user_api_key_auth)) -> Any:
        return await _answer("grant", await _body(request), key)

    before = len(app.router.routes)
    app.add_api_route(PATH_READ, read_run, methods=["GET"], include_in_schema=True, tags=["litellm-payg"])
    app.add_api_route(PATH_CLOSE, close_run, methods=["POST"], include_in_schema=True, tags=["litellm-payg"])
    app.add_api_route(PATH_GRANT, grant_run, methods=["POST"], include_in_schema=True, tags=["litellm-payg"])
    added = app.router.routes[before:]
    del app.router.routes[before:]
    app.router.routes[0:0] = added


async def _body(request: Any) -> Any:
    try:
        return await request.json()
    except ValueError:
        return None


def _error(status: int, message: str) -> Any:
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": {"message": message, "type": "payg_run_control", "code": status}}, status_code=status)


async def _answer(action: str, body: Any, key: Any) -> Any:
    """One run-control call: checks, then the engine's call on a worker thread (the ledger is
    synchronous), as JSON; errors as LiteLLM-shaped JSON with the status that says what went wrong."""
    handler = _handler
    engine = getattr(handler, "engine", None)
    if engine is None:
        return _error(500, getattr(handler, "error", None) or "litellm-payg has no usable policy")
    if not isinstance(body, dict):
        return _error(400, 'litellm-payg: expected a JSON object, e.g. {"run": "<run id>"}')
    run = body.get("run")
    if not isinstance(run, str) or not run or len(run) > 1024:
        return _error(400, "litellm-payg: run: expected a run id (a string), as `litellm-payg budgets` lists it")
    if action == "grant":
        unknown = sorted(set(body) - set(_GRANT_FIELDS))
        if unknown:
            return _error(400, f"litellm-payg: {unknown[0]}: unknown field; expected {', '.join(_GRANT_FIELDS)}")
    if not store_access.has_run_budgets(engine):
        return _error(404, "litellm-payg: the policy has no run budget (scope: session:*, window: session:<idle>)")
    operator = is_operator(key, engine.policy)
    if action != "read" and not operator:
        return _error(403, f"litellm-payg: only an operator may {action} a run (the proxy's master key, a proxy_admin "
                           "key, or a key, team or user sessions.operators names)")
    try:
        target = run_for(run, identity_from_key(key, {}, {}), engine.policy.run_owner, operator)
    except NotYourRun as exc:
        return _error(403, str(exc))
    try:
        if action == "read":
            statuses = await asyncio.to_thread(engine.run_report, target)
        elif action == "close":
            statuses = await asyncio.to_thread(engine.close_run, target)
        else:
            amounts = {k: body.get(k) for k in ("usd", "requests", "tokens", "seconds") if body.get(k) is not None}
            budget = body.get("budget")
            if budget is not None and not isinstance(budget, str):
                return _error(400, "litellm-payg: budget: expected a run budget's name (a string)")
            statuses = await asyncio.to_thread(lambda: engine.grant_run(target, budget=budget, **amounts))
    except RunNotFound as exc:
        return _error(404, str(exc))
    except ValueError as exc:
        return _error(400, f"litellm-payg: {exc}")
    except LedgerError as exc:
        return _error(503, f"litellm-payg: the budget ledger is unavailable: {exc}")
    if action != "read":
        logger.warning("litellm-payg: run %r %s by %s: %s", target, "closed" if action == "close" else "granted",
                       identity_from_key(key, {}, {}).api_key or "the operator",
                       {k: v for k, v in body.items() if k != "run"} if action == "grant" else "")
    return {"run": target, "closed": any(s.closed for s in statuses), "budgets": [s.as_dict() for s in statuses]}


__all__ = ["PATH_CLOSE", "PATH_GRANT", "PATH_READ", "install", "is_operator"]
