"""litellm-payg in the LiteLLM **proxy**, with one line of ``config.yaml``::

    litellm_settings:
      callbacks: ["litellm_payg.proxy_handler"]

The proxy imports ``handler`` (a :class:`ProxyPaygRouting`, i.e. the SDK's :class:`PaygRouting`
plus what only the proxy needs) while it reads its config, before it builds its Router.

**The proxy's door** is its pre-call hook, which runs after LiteLLM authenticated the key: the
request is checked there (HTTP 400 naming the field for forged ``payg_*`` metadata, malformed
fields, client-side credentials, a deployment named as the model) and its identity is read from the
authenticated key, never from the body. The Router's request methods are doors too (routes such as
``/queue/chat/completions`` skip the pre-call hook); see the README's "Security model".

**Where the policy comes from**, first match wins:

1. ``LITELLM_PAYG_POLICY``: a path to a policy YAML (relative paths are relative to the proxy's
   working directory). It can be set in the shell or under ``environment_variables:`` in
   ``config.yaml`` -- the proxy applies those before it imports callbacks.
2. ``payg-policy.yaml`` in the same directory as the proxy's ``config.yaml``.

There is no built-in default policy: a proxy that names this callback but has no policy is a
misconfiguration, not a request to route freely.

**When the policy cannot be used** (no file, unreadable, invalid field, or a rule that names a model
the proxy has no deployment for, or a budget scope naming one), the error is logged at ERROR on the
``litellm_payg`` logger -- at startup for the file itself and for the check against the ``model_list``
of the proxy's config file, on the first request for the check against the Router -- naming the
file, line and field, and every LLM request then fails with HTTP 500 carrying the same text (and
``x-should-retry: false``: retrying does not fix a configuration). The
proxy keeps running (``/health/liveliness`` stays up so the operator can read the error), but it
never serves a request unrouted: a cost policy that silently stops applying is a budget overrun.

**The Router** is ``litellm.proxy.proxy_server.llm_router``. It does not exist yet when callbacks
are imported, and the proxy can replace it or add/remove deployments at runtime (``/model/new``,
DB-stored models, config reload), so the handler (re)binds on a request whenever the Router object or
its ``registry().version`` differs from what it last checked -- re-validating the policy each time.

**The decision is visible to the caller** as response headers (``x-payg-chosen``,
``x-payg-chosen-model``, ``x-payg-decision``) and in the proxy log (``payg decision ...`` lines
from the ``litellm_payg`` logger, which this module sends to stderr unless logging is already
configured; level from ``LITELLM_PAYG_LOG_LEVEL``, default ``INFO``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

from litellm_payg.adapter import litellm_versions
from litellm_payg.adapter.routing import PaygRouting
from litellm_payg.runtime.engine import Engine
from litellm_payg.runtime import store_access
from litellm_payg.core.errors import PaygError, PolicyError, Problem
from litellm_payg.adapter.attributes import door_attributes
from litellm_payg.core.identity import LabelError
from litellm_payg.wire.identity import identity_from_key
from litellm_payg.adapter.ingress import InvalidRequest, refuse_bad_input
from litellm_payg.adapter.routes import keep_refusals_4xx_without_prisma, refusal, route_of
from litellm_payg.policy.load import load_policy
from litellm_payg.adapter.request_metadata import metadata_of
from litellm_payg.stores.ledger.base import LedgerError

logger = logging.getLogger("litellm_payg")

POLICY_ENV = "LITELLM_PAYG_POLICY"
LOG_LEVEL_ENV = "LITELLM_PAYG_LOG_LEVEL"
POLICY_FILENAME = "payg-policy.yaml"

#: response headers the handler adds to every governed response
HEADER_CHOSEN = "x-payg-chosen"
HEADER_CHOSEN_MODEL = "x-payg-chosen-model"
HEADER_DECISION = "x-payg-decision"
#: a run budget's state for the request's run (``scope: session:*``), read from the ledger when the
#: response is sent: settled spend, in-flight reservations (this request's until it settles), what
#: is left of the limit, and the run's requests
HEADER_RUN_BUDGET = "x-payg-run-budget"
HEADER_RUN_SPEND = "x-payg-run-spend-usd"
HEADER_RUN_IN_FLIGHT = "x-payg-run-in-flight-usd"
HEADER_RUN_REMAINING = "x-payg-run-remaining-usd"
HEADER_RUN_LIMIT = "x-payg-run-limit-usd"
HEADER_RUN_REQUESTS = "x-payg-run-requests"
#: every run budget that applies to the request, tightest first: ``<name>=<remaining>/<limit>,...``
HEADER_RUN_BUDGETS = "x-payg-run-budgets"
#: ``sessions.mint``: the run id the plugin gave a request that named none (its key's run); the
#: client may send it back as its session id, which names the same run
HEADER_RUN_MINTED = "x-payg-run-minted"


class PolicyUnusable(PaygError):
    """The proxy's policy could not be loaded or does not fit the proxy's deployments.

    Raised for every request while that is so (``status_code`` is what the proxy answers).
    """

    status_code = 500
    #: a misconfiguration does not fix itself in a second: clients (the OpenAI SDK retries a 500
    #: twice) are told not to retry; LiteLLM's proxy copies an exception's ``headers`` into its answer
    headers = {"x-should-retry": "false"}
    num_retries = 0

    def __init__(self, message: str):
        self.message = message
        super().__init__(message)


def _proxy_server_module() -> Any | None:
    """``litellm.proxy.proxy_server`` if the proxy imported it; never imports it (it is heavy and
    has side effects), so this module stays importable outside a proxy."""
    return sys.modules.get("litellm.proxy.proxy_server")


def proxy_config_path() -> Path | None:
    """The config file the running proxy loaded: the proxy stores it in
    ``proxy_server.user_config_file_path`` before it imports callbacks; ``CONFIG_FILE_PATH`` is the
    proxy's env alternative to ``--config``."""
    server = _proxy_server_module()
    path = getattr(server, "user_config_file_path", None) if server is not None else None
    path = path or os.environ.get("CONFIG_FILE_PATH")
    return Path(path) if path else None


def find_policy_path() -> Path:
    """Where the policy is (see the module docstring). Raises :class:`PolicyError` naming what was
    tried when there is none."""
    from_env = os.environ.get(POLICY_ENV)
    if from_env:
        return Path(from_env).expanduser().resolve()
    config = proxy_config_path()
    if config is not None:
        candidate = config.resolve().parent / POLICY_FILENAME
        if candidate.is_file():
            return candidate
        looked = f"{candidate} does not exist"
    else:
        looked = "the proxy's config file path is not known (config not loaded from a file)"
    raise PolicyError([Problem(
        "",
        f"no litellm-payg policy found: {POLICY_ENV} is not set and {looked}",
        hint=f"set {POLICY_ENV}=/path/to/policy.yaml (in the shell or under environment_variables: "
        f"in config.yaml), or put {POLICY_FILENAME} next to config.yaml",
    )], source=None)


def _setup_logging() -> None:
    """Make ``litellm_payg`` log lines reach the proxy log. The proxy configures only its own
    loggers, so without this the decision lines (INFO) would be dropped; leave alone any logging an
    operator configured."""
    level_name = os.environ.get(LOG_LEVEL_ENV, "INFO").upper()
    level = logging.getLevelName(level_name)
    if not isinstance(level, int):
        level = logging.INFO
    if logger.level == logging.NOTSET:
        logger.setLevel(level)
    if not logger.handlers and not logging.getLogger().handlers:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(logging.Formatter("%(asctime)s - litellm_payg:%(levelname)s: %(message)s", "%H:%M:%S"))
        logger.addHandler(stream)
        logger.propagate = False


class ProxyPaygRouting(PaygRouting):
    """:class:`PaygRouting` for the proxy: finds its own policy and Router, fails requests loudly
    when the policy is unusable, and reports the decision in response headers.

    Routing itself (the ``async_filter_deployments`` lever, metadata stamping, outcome events) is
    inherited unchanged.
    """

    late_headers = True  # the response headers read the decision, maybe after the request settled

    def __init__(self, policy: str | Path | None = None):
        engine: Engine | None = None
        error: PolicyError | None = None
        policy_path: Path | None = None
        try:
            policy_path = Path(policy).resolve() if policy is not None else find_policy_path()
            engine = Engine(load_policy(policy_path, deployments_known=True))  # priced at bind, as LiteLLM prices them
        except PolicyError as exc:
            error = exc
        # PaygRouting only stores the engine here; None means "refuse every request" (see ensure_bound).
        super().__init__(engine)  # type: ignore[arg-type]
        self.policy_path = policy_path
        #: why requests are refused; None while the policy is usable
        self.error: str | None = None
        self._bound_to: tuple[int, int] | None = None  # (id(router), registry version) last checked
        if error is not None:
            self._refuse(error, "cannot load its policy")
        else:
            logger.info("litellm-payg: policy %s loaded (groups: %s)", policy_path,
                        ", ".join(sorted(engine.routes)) or "none")
            self._check_config_model_list(engine)
        self._install_run_control()
        server = _proxy_server_module()
        if server is not None:
            from litellm_payg.adapter import feedback_route

            feedback_route.install(server, self)  # POST /payg/feedback

    def _install_run_control(self) -> None:
        """Add the run-control routes (``adapter/run_control.py``) to the proxy's FastAPI app, when
        this handler is the running proxy's (its ``app`` exists; never imported from here)."""
        server = _proxy_server_module()
        app = getattr(server, "app", None) if server is not None else None
        if app is None:
            return
        from litellm_payg.adapter import run_control

        try:
            run_control.install(app, self)
        except Exception:  # noqa: BLE001 - the proxy keeps serving requests without the endpoint
            logger.exception("litellm-payg: could not add the run-control routes to the proxy")

    def _check_config_model_list(self, engine: Engine) -> None:
        """At start, check the policy against the ``model_list`` of the proxy's config file, as
        ``litellm-payg check --config`` does, so that a policy that cannot fit (a budget scope or a
        rule naming a model no deployment has) is an ERROR in the log when the proxy starts, not at
        its first request. The Router, once it exists, is checked again on the first request and is
        the authority (it may also hold deployments stored in the proxy's database): requests are
        refused with this error while it does not fit either."""
        from litellm_payg.adapter.deployments import candidates_from_config

        config = proxy_config_path()
        try:
            import yaml

            loaded = yaml.safe_load(config.read_text(encoding="utf-8")) if config is not None else None
        except (OSError, yaml.YAMLError):
            return  # the proxy reports its own config's problems
        if not isinstance(loaded, dict) or not isinstance(loaded.get("model_list"), list):
            return  # no deployments in the file (all from the database): the Router check decides
        try:
            engine.check_deployments(candidates_from_config(str(config), engine.policy))
        except PolicyError as exc:
            self._refuse(exc, f"policy does not fit the model_list of {config}")

    def _refuse(self, exc: Exception, what: str) -> None:
        self.error = f"litellm-payg {what}; every request is refused until it is fixed:\n{exc}"
        logger.error("%s", self.error)

    # -- the proxy's Router ---------------------------------------------------------------------

    def ensure_bound(self) -> None:
        """Bind to the proxy's current Router, or re-bind if it was replaced or its deployments
        changed; raise :class:`PolicyUnusable` while the policy is unusable."""
        if self.engine is None:
            raise PolicyUnusable(self.error or "litellm-payg has no policy")
        server = _proxy_server_module()
        router = getattr(server, "llm_router", None) if server is not None else None
        if router is None:
            if self.error is not None:
                raise PolicyUnusable(self.error)  # the start-up check of the config's model_list failed
            return  # no Router yet: nothing to route; SDK use goes through bind()/attach()
        key = (id(router), litellm_versions.registry_version(router))
        if key == self._bound_to:
            if self.error is not None:
                raise PolicyUnusable(self.error)
            return
        self._bound_to = key
        keep_refusals_4xx_without_prisma()  # the route refusals' 403 (adapter/routes.py); idempotent
        try:
            self.install(router)
        except PolicyError as exc:
            self._refuse(exc, "policy does not fit the proxy's deployments")
            raise PolicyUnusable(self.error) from None
        self._bound_to = (id(router), litellm_versions.registry_version(router))  # install() may have applied settings
        self.error = None
        logger.info("litellm-payg: bound to the proxy's router (%d deployments, registry version %s)",
                    len(self._candidates), key[1])

    # -- hooks ----------------------------------------------------------------------------------

    async def async_pre_call_hook(self, user_api_key_dict: Any, cache: Any, data: dict, call_type: Any) -> dict:
        """Runs before the Router on every proxy LLM request, after LiteLLM authenticated the key:
        the proxy's governed door (:mod:`litellm_payg.adapter.ingress`). A request with forged ``payg_*``
        metadata, a malformed field, or a deployment named as its model (under
        ``direct_deployments: refuse``) is refused here with HTTP 400 naming the field, before
        anything is reserved; otherwise the plugin mints the request's id and reads its identity
        from the authenticated key (``user_api_key_dict``), never from the body. A route that
        would spend a governed deployment's credentials outside the Router (``/v1/batches``, ...)
        is refused with HTTP 403 naming it (:mod:`litellm_payg.adapter.routes`). An
        ``HTTPException`` reaches the client as is."""
        from fastapi import HTTPException

        try:
            self.ensure_bound()
        except PolicyUnusable as exc:
            raise HTTPException(status_code=exc.status_code, detail=exc.message, headers=dict(exc.headers)) from None
        if route_of(call_type).kind != "governed":  # the route table: adapter/routes.py
            refused = refusal(call_type, data, self.governs)
            if refused is not None:
                raise HTTPException(status_code=403, detail=refused)
            return data  # spends nothing on a governed deployment: no state is kept for it
        field = _metadata_field(data, call_type)
        metadata = data.setdefault(field, {})
        try:
            if not isinstance(metadata, dict):
                refuse_bad_input(data)  # names the field
            identity = identity_from_key(user_api_key_dict, data, metadata)
            attrs = door_attributes(store_access.scopes(self.engine), metadata, key=user_api_key_dict)
            if attrs:
                identity = dataclasses.replace(identity, attrs=attrs)
            self.open_request(data, field, identity, router_door=False, call=call_type)
        except InvalidRequest as exc:
            raise HTTPException(status_code=400, detail=exc.message) from None
        except LabelError as exc:  # too many tags to keep bounded
            raise HTTPException(status_code=400, detail=str(exc)) from None
        return data

    async def async_post_call_failure_hook(
        self, request_data: dict, original_exception: Exception, user_api_key_dict: Any, traceback_str: str | None = None
    ) -> None:
        """The proxy answers this request with an error (a budget refusal, a failed attempt): its
        state is released now, not kept until 20,000 newer requests push it out
        (:meth:`PaygRouting.release_failed`)."""
        self.release_failed(request_data)
        return None

    def governs(self, model: str) -> bool:
        """Whether ``model`` names one of the governed Router's groups, aliases or deployments (by
        id, or by model string with or without its provider prefix)."""
        if model in self._groups or model in self._aliases or model in self._deployment_names:
            return True
        return any(name.split("/", 1)[-1] == model for name in self._deployment_names)

    async def async_filter_deployments(
        self,
        model: str,
        healthy_deployments: list,
        messages: list | None,
        request_kwargs: dict | None = None,
        parent_otel_span: Any = None,
    ) -> list:
        # Also checked here: a request that reached the Router without the pre-call hook must not
        # be routed as if there were no policy.
        self.ensure_bound()
        return await super().async_filter_deployments(
            model, healthy_deployments, messages, request_kwargs=request_kwargs, parent_otel_span=parent_otel_span
        )

    async def async_post_call_response_headers_hook(
        self,
        data: dict,
        user_api_key_dict: Any,
        response: Any,
        request_headers: dict[str, str] | None = None,
        litellm_call_info: dict[str, object] | None = None,
    ) -> dict[str, str] | None:
        """Tell the caller where the request went and why: the decision stamped on the request's
        metadata by the filter (the proxy passes the same metadata dict to this hook).

        Defined on this class itself on purpose: the proxy only calls this hook for callbacks whose
        own class overrides it.
        """
        state = self.states.find(metadata_of(data))
        if state is not None:
            state.headers_sent = True  # the last reader: an answered request's state goes now
            if state.finished:
                self.states.forget(state)
        decision = state.decision if state is not None else None
        if decision is None:
            return None
        summary = {
            "group": decision.get("group"),
            "chosen": decision.get("chosen"),
            "chosen_model": decision.get("chosen_model"),
            "order": decision.get("order"),
            "dropped": decision.get("dropped"),
            "notes": decision.get("notes"),
            "prompt_tokens": decision.get("prompt_tokens"),
            "output_tokens": decision.get("output_tokens"),
        }
        headers = {
            HEADER_CHOSEN: str(decision.get("chosen")),
            HEADER_CHOSEN_MODEL: str(decision.get("chosen_model")),
            # ASCII-only JSON: header values must be latin-1
            HEADER_DECISION: json.dumps(summary, separators=(",", ":"), ensure_ascii=True, default=str),
        }
        headers.update(self._run_headers(state))
        if getattr(state, "minted_run", None):
            headers[HEADER_RUN_MINTED] = state.minted_run
        return headers

    def _run_headers(self, state: Any) -> dict[str, str]:
        """The request's run under the run budgets that apply to it (their ``when:``), from the
        ledger (never from the request: the session id only says which run, and it is not echoed):
        the tightest one (least left) in the ``x-payg-run-*`` headers, and every one, tightest
        first, in ``x-payg-run-budgets``."""
        request = getattr(state, "request", None)
        engine = self.engine
        if request is None or engine is None or not store_access.has_run_budgets(engine):
            return {}
        try:
            statuses = store_access.request_runs(engine, request)
        except (LedgerError, ValueError) as exc:
            logger.warning("litellm-payg: cannot read the run's budget for the response headers: %s", exc)
            return {}
        if not statuses:
            return {}
        status = statuses[0]

        def name(s: Any) -> str:
            return re.sub(r"[^\x20-\x7e]", "?", s.budget).replace(",", "?").replace("=", "?")  # the operator's name, printable ASCII

        return {
            HEADER_RUN_BUDGET: name(status),
            HEADER_RUN_SPEND: f"{status.spent_usd:.9f}",
            HEADER_RUN_IN_FLIGHT: f"{status.reserved_usd:.9f}",
            HEADER_RUN_REMAINING: f"{status.remaining_usd:.9f}",
            HEADER_RUN_LIMIT: f"{status.limit_usd:.9f}",
            HEADER_RUN_REQUESTS: str(status.requests),
            HEADER_RUN_BUDGETS: ",".join(f"{name(s)}={s.remaining_usd:.9f}/{s.limit_usd:.9f}" for s in statuses),
        }


def _metadata_field(data: dict, call_type: Any) -> str:
    """Where the proxy keeps LiteLLM's metadata for this request: ``litellm_metadata`` on the
    Anthropic ``/v1/messages`` and ``/v1/responses`` routes (their own ``metadata`` goes to the
    provider), ``metadata`` elsewhere -- whichever the proxy already filled in wins."""
    name = str(getattr(call_type, "value", call_type) or "")
    if "anthropic_messages" in name or "responses" in name:
        return "litellm_metadata"
    if isinstance(data.get("litellm_metadata"), dict) and not isinstance(data.get("metadata"), dict):
        return "litellm_metadata"
    return "metadata"


def __getattr__(name: str) -> Any:
    """``handler``, the instance ``litellm_settings.callbacks: ["litellm_payg.proxy_handler"]``
    loads, is created on first access (the proxy's ``getattr(module, "handler")``), not at import:
    importing this module elsewhere (tests, tools) must not look for a policy or log errors."""
    if name == "handler":
        _setup_logging()
        instance = ProxyPaygRouting()
        globals()["handler"] = instance
        return instance
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
