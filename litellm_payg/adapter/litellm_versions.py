"""Every difference between the LiteLLM releases litellm-payg supports, in one place.

The supported range is :data:`SUPPORTED` (``pyproject.toml`` declares the same). Each helper below
names the release that changed what it papers over; the README's "Supported LiteLLM versions"
table says the same for users. Checked by running the integration tests on 1.100.0, 1.104.0,
1.108.0, 1.109.0 and 1.110.2 (``.ci/run`` runs the whole suite on the newest and the integration
tests on the oldest).

=========================  ===================================================================
LiteLLM release            what changed, and what this module does about it
=========================  ===================================================================
1.109.0                    ``Router.registry()`` / ``settings()`` / ``apply(ChangeSet)`` (the
                           ``litellm.router_api`` layer) appear. Before: ``get_model_list()``,
                           ``has_model_id()``, the ``context_window_fallbacks`` and
                           ``model_group_alias`` attributes, and no registry version (a
                           fingerprint of the deployment ids stands in for it).
1.109.0                    An auth error whose body says ``invalid_request_error`` reaches
                           callers as ``AuthenticationError``; before, as ``BadRequestError``
                           (:func:`auth_error_class`). The plugin classifies both as ``auth``.
1.109.0                    ``mock_response=""`` is a mock answer; before, an empty mock counts as
                           none and LiteLLM calls the real provider (tests only: they mock
                           an empty answer with whitespace).
1.108.0                    The first stream chunk is read inside the retried attempt, so
                           ``failover.first_token_timeout_ms`` moves the request to the next
                           deployment. Before, the timeout ends the stream in the caller's
                           hands (:data:`FIRST_TOKEN_IN_ATTEMPT`; a documented gap).
1.107.x                    Withdrawn from PyPI (a compromised 1.107.0); only pre-releases are
                           left, which the range excludes.
1.100.0                    ``CustomLogger.async_post_call_failure_deployment_hook`` appears:
                           the floor. Without it failed attempts never release their
                           reservations nor reach the circuit breakers.
=========================  ===================================================================

Nothing here runs at import beyond reading the installed version: no environment variable and no
LiteLLM global is changed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version as _dist_version
from typing import Any

logger = logging.getLogger("litellm_payg")

#: The range declared in pyproject.toml.
SUPPORTED = ">=1.100,<1.111,!=1.107.*"
OLDEST = (1, 100, 0)
NEWEST_EXCLUSIVE = (1, 111, 0)

#: Releases that changed something the plugin depends on (see the module docstring).
ROUTER_API = (1, 109, 0)
AUTH_ERROR_AS_AUTHENTICATION = (1, 109, 0)
FIRST_TOKEN_READ_IN_ATTEMPT = (1, 108, 0)
WITHDRAWN_MINOR = (1, 107)


@lru_cache(maxsize=1)
def litellm_version() -> str:
    """The installed LiteLLM release, from its distribution metadata (does not import LiteLLM)."""
    try:
        return _dist_version("litellm")
    except PackageNotFoundError:  # pragma: no cover - litellm is a dependency
        return "unknown"


def version_tuple(text: str | None = None) -> tuple[int, int, int]:
    """``"1.110.2"`` -> ``(1, 110, 2)``; pre-release and post suffixes are dropped."""
    parts: list[int] = []
    for piece in (text or litellm_version()).split(".")[:3]:
        digits = ""
        for ch in piece:
            if not ch.isdigit():
                break
            digits += ch
        parts.append(int(digits) if digits else 0)
        if digits != piece:
            break
    while len(parts) < 3:
        parts.append(0)
    return (parts[0], parts[1], parts[2])


def at_least(release: tuple[int, ...]) -> bool:
    return version_tuple() >= tuple(release) + (0,) * (3 - len(release))


def is_supported(text: str | None = None) -> bool:
    v = version_tuple(text)
    return OLDEST <= v < NEWEST_EXCLUSIVE and v[:2] != WITHDRAWN_MINOR


_warned = False


def warn_if_unsupported() -> None:
    """Log one warning per process when the installed LiteLLM is outside :data:`SUPPORTED` (pip
    only enforces the range when it resolves the plugin's dependencies)."""
    global _warned
    if _warned or is_supported():
        return
    _warned = True
    logger.warning("litellm-payg: LiteLLM %s is outside the supported range %s; see the README's "
                   "'Supported LiteLLM versions'", litellm_version(), SUPPORTED)


#: From 1.108.0 LiteLLM reads a stream's first chunk inside the attempt it retries, so a
#: first-token timeout moves the request on; before, it reaches the caller (README: the gap).
FIRST_TOKEN_IN_ATTEMPT = at_least(FIRST_TOKEN_READ_IN_ATTEMPT)


def _has_router_api(router: Any) -> bool:
    """``Router.registry()`` and friends exist from 1.109.0 (detected on the object, so a Router
    built by another LiteLLM in the same process cannot confuse it)."""
    return callable(getattr(router, "registry", None)) and callable(getattr(router, "apply", None))


# -- the Router's deployments ---------------------------------------------------------------------


def deployments(router: Any) -> Sequence[Mapping[str, Any]]:
    """Every deployment dict of the router: ``registry().deployments()`` from 1.109.0, before
    that ``get_model_list()``."""
    warn_if_unsupported()
    if _has_router_api(router):
        return router.registry().deployments()
    return router.get_model_list() or []


def has_deployment(router: Any, deployment_id: str) -> bool:
    """``registry().has_deployment(id)`` from 1.109.0, before that ``has_model_id(id)``."""
    if _has_router_api(router):
        return bool(router.registry().has_deployment(deployment_id))
    return bool(router.has_model_id(deployment_id))


def registry_version(router: Any) -> int:
    """A number that changes when the router's deployments change: ``registry().version`` from
    1.109.0; before, a hash of the deployments' ids and models (there is no version counter)."""
    if _has_router_api(router):
        return int(router.registry().version)
    return hash(tuple(
        (str((d.get("model_info") or {}).get("id")), d.get("model_name"), str((d.get("litellm_params") or {}).get("model")))
        for d in (router.model_list or [])
    ))


# -- the Router's settings ------------------------------------------------------------------------


def context_window_fallbacks(router: Any) -> list:
    """``settings().context_window_fallbacks`` from 1.109.0, before that the attribute."""
    if _has_router_api(router):
        return list(router.settings().context_window_fallbacks or [])
    return list(getattr(router, "context_window_fallbacks", None) or [])


def model_group_aliases(router: Any) -> dict:
    """``registry().aliases()`` from 1.109.0, before that the ``model_group_alias`` attribute."""
    if _has_router_api(router):
        return dict(router.registry().aliases() or {})
    return dict(getattr(router, "model_group_alias", None) or {})


def set_context_window_fallbacks(router: Any, fallbacks: list, aliases: dict) -> None:
    """Assign ``context_window_fallbacks`` and ``model_group_alias`` together:
    ``apply(ChangeSet(assign=...))`` from 1.109.0 (which bumps the registry version); before,
    the Router attributes."""
    if _has_router_api(router):
        from litellm.router_api import ChangeSet

        router.apply(ChangeSet(assign={"context_window_fallbacks": fallbacks, "model_group_alias": aliases}))
        return
    router.context_window_fallbacks = fallbacks
    router.model_group_alias = aliases


def add_deployment(router: Any, deployment: Any) -> None:
    """Add a deployment at runtime (as the proxy's ``/model/new`` does): ``apply(ChangeSet(upsert=
    [...]))`` from 1.109.0, before that ``add_deployment``."""
    if _has_router_api(router):
        from litellm.router_api import ChangeSet

        router.apply(ChangeSet(upsert=[deployment]))
        return
    router.add_deployment(deployment)


def delete_deployment(router: Any, deployment_id: str) -> None:
    """``apply(ChangeSet(delete=[id]))`` from 1.109.0, before that ``delete_deployment(id)``."""
    if _has_router_api(router):
        from litellm.router_api import ChangeSet

        router.apply(ChangeSet(delete=[deployment_id]))
        return
    router.delete_deployment(id=deployment_id)


# -- errors ---------------------------------------------------------------------------------------


def auth_error_class() -> type:
    """The class an auth error whose body says ``invalid_request_error`` (OpenAI-style 401) reaches
    callers as: ``litellm.AuthenticationError`` from 1.109.0, ``litellm.BadRequestError`` before."""
    import litellm

    return litellm.AuthenticationError if at_least(AUTH_ERROR_AS_AUTHENTICATION) else litellm.BadRequestError


# -- the price map --------------------------------------------------------------------------------


def price_map() -> dict[str, Any]:
    """Which price map LiteLLM loaded in this process: ``{"source": "bundled"|"remote", "where":
    path or URL, "why": ...}``. Imports LiteLLM (which loads the map) if it is not yet imported.

    LiteLLM loads its map once, at import: the copy bundled in its wheel when
    ``LITELLM_LOCAL_MODEL_COST_MAP=True``, or ``LITELLM_OFFLINE_MODE=true`` (from 1.109.0), or in its
    own ``litellm`` CLI process (1.104.0 does, 1.100.0 does not); else ``LITELLM_MODEL_COST_MAP_URL``
    (default: the map on LiteLLM's main branch), falling back to the bundled copy when that fetch
    fails.
    """
    import litellm

    try:
        from litellm.litellm_core_utils.get_model_cost_map import get_model_cost_map_source_info

        info = dict(get_model_cost_map_source_info())
    except ImportError:  # pragma: no cover - present in every supported release
        info = {}
    bundled = os.path.join(os.path.dirname(litellm.__file__), "model_prices_and_context_window_backup.json")
    if info.get("source") == "remote":
        return {"source": "remote", "where": info.get("url") or getattr(litellm, "model_cost_map_url", None),
                "why": "fetched at import"}
    if info.get("fallback_reason"):
        why = f"the remote map could not be used ({info['fallback_reason']})"
    elif os.environ.get("LITELLM_LOCAL_MODEL_COST_MAP", "").lower() == "true":
        why = "LITELLM_LOCAL_MODEL_COST_MAP=True"
    elif os.environ.get("LITELLM_OFFLINE_MODE", "").strip().lower() == "true":
        why = "LITELLM_OFFLINE_MODE=true"
    else:
        why = "LiteLLM's choice for its own CLI process"
    return {"source": "bundled", "where": bundled, "why": why}


def describe() -> str:
    """One line for the CLI: the LiteLLM release and the price map that priced the answer."""
    pm = price_map()
    supported = "" if is_supported() else f" (outside the supported range {SUPPORTED})"
    if pm["source"] == "remote":
        where = f"remote price map {pm['where']}"
    else:
        where = f"bundled price map ({pm['why']}): {pm['where']}"
    return f"LiteLLM {litellm_version()}{supported}; {where}"


def use_bundled_price_map_unless_chosen() -> None:
    """For the CLI, the pytest plugin, the benchmarks and the tests (never for an application):
    LiteLLM's bundled price map, offline, unless the user chose (``LITELLM_LOCAL_MODEL_COST_MAP``
    already set). Only effective before LiteLLM is imported."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def attempt_cost(logging_obj: Any, result: Any) -> Any:
    """LiteLLM's cost of one attempt's ``result`` by that attempt's logging object, the calculator
    its success log uses (it knows the deployment's custom prices): ``response_cost_calculator``
    on 1.110, ``_response_cost_calculator`` on 1.100. Raises AttributeError when neither exists."""
    calculator = getattr(logging_obj, "response_cost_calculator", None) or getattr(logging_obj, "_response_cost_calculator")
    return calculator(result=result)


def completion_cost(response: Any, model: str, deployment_id: str | None) -> float:
    """``litellm.completion_cost`` of ``response`` for ``model``, with the prices a Router
    registered for the deployment (``router_model_id``, as LiteLLM's own handlers pass it) where
    this release takes them."""
    import litellm

    try:
        return float(litellm.completion_cost(completion_response=response, model=model, router_model_id=deployment_id))
    except TypeError:  # a release without router_model_id
        return float(litellm.completion_cost(completion_response=response, model=model))


def anthropic_stream_usage(raw: Sequence[bytes], model: str) -> Any:
    """The usage of an Anthropic ``/v1/messages`` SSE stream (``message_start`` and
    ``message_delta``), as the ``ModelResponse`` LiteLLM's own reader builds from it for its cost
    (``build_usage_only_response_from_chunks``: cache reads and writes, server tool use, ...), or
    None where this release has no such reader or the stream carried no usage."""
    try:
        from litellm.llms.anthropic.messages.stream_assembly import build_usage_only_response_from_chunks
    except ImportError:
        try:
            from litellm.proxy.pass_through_endpoints.llm_provider_handlers.anthropic_passthrough_logging_handler import (
                AnthropicPassthroughLoggingHandler,
            )
            build_usage_only_response_from_chunks = AnthropicPassthroughLoggingHandler._build_usage_only_response_from_chunks
        except (ImportError, AttributeError):
            return None
    try:
        return build_usage_only_response_from_chunks(all_chunks=[b"".join(raw)], model=model)
    except Exception:  # noqa: BLE001 - an unreadable stream is priced from the plugin's own reading of it
        logger.debug("litellm-payg: LiteLLM could not read an Anthropic stream's usage", exc_info=True)
        return None


# -- the checks LiteLLM runs on a pick (core/feasibility.py mirrors them) -------------------------


def router_setting(router: Any, name: str, default: Any = None) -> Any:
    """A Router setting such as ``enable_pre_call_checks``: ``settings().<name>`` from 1.109.0,
    before that the attribute of the same name."""
    if _has_router_api(router):
        return getattr(router.settings(), name, default)
    return getattr(router, name, default)


def request_has_image(messages: Any, request: Mapping[str, Any]) -> bool:
    """Whether a request carries image content, as LiteLLM's Router reads it for its vision check
    (``request_contains_image_content`` on the messages, else the request's input)."""
    content = messages or request.get("messages") or request.get("input")
    if type(content) is list and all(type(m) is dict and type(m.get("content")) is str and "output" not in m
                                     for m in content):
        # plain text messages (the usual chat request): no content part, no tool output, so no image,
        # told without LiteLLM's check (it validates the whole list with pydantic first, on every pick)
        return False
    try:
        from litellm.litellm_core_utils.prompt_templates.common_utils import request_contains_image_content
    except ImportError:  # an older LiteLLM: no vision check in its Router
        return False
    try:
        return bool(request_contains_image_content(content))
    except Exception:  # noqa: BLE001 - a shape LiteLLM cannot read is one its own check passes over too
        return False


async def deployments_for_tag(router: Any, model: str, healthy: list, request_kwargs: Mapping[str, Any]) -> list:
    """LiteLLM's own tag routing (``router_strategy.tag_based_routing.get_deployments_for_tag``)
    over ``healthy``: from 1.109.0 it takes the Router as its routing context (it reads
    ``registry()`` and ``settings()``), before that as ``llm_router_instance``. Raises what it
    raises (a ``ValueError`` when no deployment may serve the request's tags)."""
    import inspect

    from litellm.litellm_core_utils.core_helpers import get_metadata_variable_name_from_kwargs
    from litellm.router_strategy.tag_based_routing import get_deployments_for_tag

    kwargs = dict(request_kwargs)
    variable = get_metadata_variable_name_from_kwargs(kwargs)
    if isinstance(kwargs.get(variable), Mapping):
        kwargs[variable] = dict(kwargs[variable])  # it notes its match there: LiteLLM's own run will
    parameters = inspect.signature(get_deployments_for_tag).parameters
    if "ctx" in parameters:
        try:
            from litellm.router_api import RoutingContext

            router = RoutingContext(router)  # what LiteLLM hands its routing plugins (a Router is deprecated)
        except ImportError:
            pass
        extra = {"request_deployments": healthy} if "request_deployments" in parameters else {}
        return await get_deployments_for_tag(ctx=router, model=model, healthy_deployments=healthy,
                                             request_kwargs=kwargs, metadata_variable_name=variable, **extra)
    return await get_deployments_for_tag(llm_router_instance=router, model=model, healthy_deployments=healthy,
                                         request_kwargs=kwargs, metadata_variable_name=variable)


def usage_counts(router: Any, deployments: Sequence[Mapping[str, Any]]) -> list[tuple[int, int]]:
    """(requests, tokens) LiteLLM's usage-based routing counted for each deployment this minute, read
    from the Router's routing-state cache with LiteLLM's own key names (``<id>:<model>:rpm:<HH-MM>``,
    ``...:tpm:...``; ``health().store`` from 1.109.0, before that the ``cache`` attribute), in
    process memory only: what this process counted, as LiteLLM's pre-call check reads it first."""
    from datetime import datetime, timezone

    store = router.health().store if _has_router_api(router) else router.cache
    minute = datetime.now(timezone.utc).strftime("%H-%M")
    out = []
    for d in deployments:
        prefix = f"{(d.get('model_info') or {}).get('id')}:{(d.get('litellm_params') or {}).get('model')}"
        requests = store.get_cache(key=f"{prefix}:rpm:{minute}", local_only=True)
        tokens = store.get_cache(key=f"{prefix}:tpm:{minute}", local_only=True)
        out.append((int(requests or 0), int(tokens or 0)))
    return out


_PRECALL_RPM: bool | None = None


def precall_checks_rpm() -> bool:
    """Whether this LiteLLM's ``enable_pre_call_checks`` passes over a deployment at its rpm (LiteLLM
    before 1.109: ``Router._pre_call_checks`` reads the per-deployment request count and the
    ``<group>:rpm:<HH-MM>`` usage of the routing strategies). From 1.109 the Rust core leaves rpm to
    the routing strategy. Read from LiteLLM's own source once, so a backport is seen too."""
    global _PRECALL_RPM
    if _PRECALL_RPM is None:
        import inspect

        from litellm import Router

        try:
            _PRECALL_RPM = ":rpm:" in inspect.getsource(Router._pre_call_checks)
        except (OSError, TypeError, AttributeError):
            _PRECALL_RPM = False
    return _PRECALL_RPM


def precall_request_counts(router: Any, group: str, deployment_ids: Sequence[str]) -> list[int]:
    """The request count LiteLLM < 1.109's pre-call check compares to a deployment's rpm: the larger
    of the Router's in-memory count for the deployment (``_update_usage``, keyed by its id) and the
    usage-based strategies' ``<group>:rpm:<HH-MM>`` entry for it, both read from process memory
    only, as LiteLLM reads them."""
    from datetime import datetime, timezone

    store = router.health().store if _has_router_api(router) else router.cache
    minute = datetime.now(timezone.utc).strftime("%H-%M")
    by_group = store.get_cache(key=f"{group}:rpm:{minute}", local_only=True) or {}
    out = []
    for deployment_id in deployment_ids:
        local = store.get_cache(key=deployment_id, local_only=True) or 0
        grouped = by_group.get(deployment_id, 0) if isinstance(by_group, dict) else 0
        try:
            out.append(max(int(local), int(grouped)))
        except (TypeError, ValueError):
            out.append(0)
    return out

