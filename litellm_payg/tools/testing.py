"""pytest plugin: test a litellm-payg policy offline, against recorded traffic.

Loaded automatically once litellm-payg is installed (``pytest11`` entry point ``litellm_payg``), or
explicitly with ``pytest -p litellm_payg.tools.testing``. Every fixture uses a ``memory://`` ledger, never
the policy's own, and LiteLLM's bundled price map (``LITELLM_LOCAL_MODEL_COST_MAP=True``).

Fixtures
--------
``payg_replay(cassettes, policy=..., config=..., group=None, match_on="strict") -> ReplayReport``
    Replays every recorded chat request in the cassette files/directories through a Router built
    from ``config`` (a LiteLLM config.yaml path, parsed config or model_list) and governed by
    ``policy`` (a path, dict or Policy); vcrpy answers from the cassettes, nothing reaches the
    network. Relative paths are resolved against the test file's directory. ``group=`` sends every
    request to one model group; otherwise a recorded model maps to the group of the config deployment
    with that model. ``match_on="strict"`` (default): only a recording of the same request on the
    picked model answers it, else the row has an error naming the closest recording and the field
    that differs; ``match_on="endpoint"`` accepts any recording of the endpoint (an approximation you
    opt into). See :mod:`litellm_payg.tools.replay`.
    ``ReplayReport`` has ``rows`` (``ReplayRow``: cassette, index, group, deployment, model,
    provider, user, split_arm, prompt/completion tokens, cost_usd, exact, error), ``records`` (the
    ledger's SpendRecords), ``total_usd``, ``by_deployment()``, ``spend(scope=None)``, ``table()``.
``payg_policy``
    The loaded policy, from ``@pytest.mark.payg_policy("policy.yaml")`` or an indirect parameter
    (``@pytest.mark.parametrize("payg_policy", ["v1.yaml", "v2.yaml"], indirect=True)``).
``payg_config``
    The deployments (``model_list``), from ``@pytest.mark.payg_config("config.yaml")`` or an
    indirect parameter.
``payg_router``
    A ``litellm.Router`` from ``payg_config`` governed by ``payg_policy`` (memory ledger); its engine
    is ``payg_router.payg_engine``. Detached after the test.
``payg_spend(scope=None) -> float``
    USD settled so far by ``payg_router``'s requests (waits for LiteLLM's callbacks to settle):
    ``payg_spend()``, ``payg_spend(scope="provider:deepseek")``, ``"model:..."``, ``"deployment:..."``,
    ``"group:..."``, ``"user:..."``, ``"team:..."``, ``"tag:..."``, ``"split_arm:..."``.
``payg_cassette(path_or_dir, match_on="strict")``
    A context manager playing cassettes (record_mode ``none``) for requests sent through
    ``payg_router`` yourself. Strict by default: a request is answered only by a recording with the
    same model, messages, max_tokens, stream and sampling/tool parameters
    (:mod:`litellm_payg.tools.cassette_match`); anything else fails: the call raises (LiteLLM wraps
    vcrpy's ``CannotOverwriteExistingCassetteException``) with a message naming the closest
    recording (``file.yaml#index``) and the field that differs
    (``messages[0].content: sent "...", recorded "..."``). ``match_on="endpoint"`` (method, host, path: any recording of the
    endpoint answers) or a tuple of vcrpy matcher names is your explicit choice of a looser match.

Helpers (import from ``litellm_payg.tools.testing``)
-----------------------------------------------
``assert_routed_to(report_or_response, deployment_or_model)``
    Every replayed request of a report (or the one response) was served by that deployment id or
    model; the message lists the ones that were not.
``spend(records_or_report, scope=None)``
    The same sums as ``payg_spend`` over a report or a list of SpendRecords.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# The pytest plugin prices with LiteLLM's bundled map unless the user chose (tests are offline).
# pytest loads this module before any test module imports LiteLLM, which reads the variable once.
from litellm_payg.adapter.litellm_versions import use_bundled_price_map_unless_chosen  # noqa: E402

use_bundled_price_map_unless_chosen()

import pytest  # noqa: E402

from litellm_payg.tools.cassette_match import ENDPOINT_MATCH_ON, STRICT_MATCH_ON, register, resolve_match_on, tag_origin  # noqa: E402
from litellm_payg.tools.replay import ReplayError, ReplayReport, ReplayRow, load_model_list, replay, spend_of  # noqa: E402

__all__ = ["assert_routed_to", "spend", "ReplayReport", "ReplayRow", "ReplayError", "STRICT_MATCH_ON",
           "ENDPOINT_MATCH_ON", "register_matchers"]

#: register the strict answer-field matchers on your own ``vcr.VCR`` (or pytest-recording's, in
#: ``pytest_recording_configure``) before using ``match_on=STRICT_MATCH_ON``
register_matchers = register


def _match_on(match_on: Any) -> tuple[str, ...]:
    try:
        return resolve_match_on(match_on)
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "payg_policy(path): the policy the payg_policy/payg_router fixtures load")
    config.addinivalue_line("markers", "payg_config(path): the LiteLLM config.yaml payg_config/payg_router use")


# -- helpers -------------------------------------------------------------------------------------


def _served(response: Any) -> tuple[str | None, str | None]:
    hidden = getattr(response, "_hidden_params", None) or {}
    deployment = hidden.get("model_id")
    model = (hidden.get("litellm_model_name") or hidden.get("model") or getattr(response, "model", None))
    return (None if deployment is None else str(deployment)), model


def assert_routed_to(report_or_response: Any, deployment_or_model: str) -> None:
    """Assert every request of a ReplayReport (or one LiteLLM response) went to this deployment id
    or model (``provider/model`` or bare model name)."""
    target = deployment_or_model
    if isinstance(report_or_response, ReplayReport):
        if not report_or_response.rows:
            raise AssertionError("the replay has no requests")
        wrong = [r for r in report_or_response.rows if not _row_is(r, target)]
        if wrong:
            raise AssertionError(
                f"{len(wrong)} of {len(report_or_response.rows)} replayed request(s) did not go to {target!r}:\n"
                + "\n".join(f"  {r.cassette}#{r.index}: {r.error or f'{r.deployment} ({r.model})'}" for r in wrong)
            )
        return
    deployment, model = _served(report_or_response)
    names = {deployment, model, (model or "").split("/", 1)[-1]}
    if target not in names:
        raise AssertionError(f"response was served by deployment {deployment!r} ({model}), not {target!r}")


def _row_is(row: ReplayRow, target: str) -> bool:
    if row.error:
        return False
    return target in (row.deployment, row.model, (row.model or "").split("/", 1)[-1])


def spend(records_or_report: Any, scope: str | None = None) -> float:
    """Settled USD of a ReplayReport or SpendRecord list, in total or for ``kind:value``."""
    records = records_or_report.records if isinstance(records_or_report, ReplayReport) else records_or_report
    return spend_of(records, scope)


def _marker_or_param(request: pytest.FixtureRequest, name: str) -> Any:
    if hasattr(request, "param"):
        return request.param
    marker = request.node.get_closest_marker(name)
    if marker is None or not marker.args:
        raise pytest.UsageError(
            f"fixture {name!r} needs @pytest.mark.{name}(PATH) or an indirect parameter "
            f"(@pytest.mark.parametrize({name!r}, [...], indirect=True))"
        )
    return marker.args[0]


def _resolve(request: pytest.FixtureRequest, value: Any) -> Any:
    """A relative path is relative to the test file's directory (then the current directory)."""
    if isinstance(value, (str, os.PathLike)):
        p = Path(value)
        if not p.is_absolute():
            here = Path(str(request.path)).parent / p
            if here.exists():
                return here
        return p
    return value


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def payg_policy(request: pytest.FixtureRequest) -> Any:
    from litellm_payg.policy.load import Policy, load_policy

    value = _resolve(request, _marker_or_param(request, "payg_policy"))
    policy = value if isinstance(value, Policy) else load_policy(value)
    return dataclasses.replace(policy, ledger="memory://")


@pytest.fixture
def payg_config(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return load_model_list(_resolve(request, _marker_or_param(request, "payg_config")))


@pytest.fixture
def payg_router(payg_policy: Any, payg_config: list[dict[str, Any]]) -> Iterator[Any]:
    from litellm import Router

    from litellm_payg.adapter.routing import attach

    router = Router(model_list=payg_config, num_retries=0)
    engine = attach(router, payg_policy)
    router.payg_engine = engine
    try:
        yield router
    finally:
        engine.detach()


@pytest.fixture
def payg_spend(payg_router: Any) -> Any:
    from litellm_payg.runtime import store_access

    engine = payg_router.payg_engine

    def _spend(scope: str | None = None, timeout: float = 10.0) -> float:
        deadline = time.monotonic() + timeout
        while not store_access.all_settled(engine) and time.monotonic() < deadline:
            time.sleep(0.01)  # LiteLLM's callbacks settle on its background worker thread/loop
        return spend_of(store_access.records(engine), scope)

    return _spend


@pytest.fixture
def payg_cassette(request: pytest.FixtureRequest) -> Any:
    import vcr
    import yaml
    from vcr.serialize import deserialize
    from vcr.serializers import yamlserializer

    class AllFiles:
        """A directory plays as one cassette holding every file's interactions."""

        @staticmethod
        def load_cassette(cassette_path: Any, serializer: Any) -> Any:
            p = Path(cassette_path)
            files = sorted(p.glob("*.yaml")) if p.is_dir() else [p]
            if not files or not files[0].is_file():
                raise ReplayError(f"{p}: no cassette")
            loaded = [(f, yaml.safe_load(f.read_text(encoding="utf-8"))["interactions"]) for f in files]
            origins = [f"{f.name}#{i}" for f, its in loaded for i in range(len(its))]
            interactions = [it for _f, its in loaded for it in its]
            requests, responses = deserialize(yaml.safe_dump({"version": 1, "interactions": interactions}), yamlserializer)
            tag_origin(requests, origins.__getitem__)
            return requests, responses

        @staticmethod
        def save_cassette(cassette_path: Any, cassette_dict: Any, serializer: Any) -> None:
            raise ReplayError("payg_cassette never records")

    player = register(vcr.VCR(record_mode="none"))
    player.register_persister(AllFiles)

    @contextlib.contextmanager
    def _play(path: Any, match_on: str | tuple[str, ...] | None = None) -> Iterator[Any]:
        with player.use_cassette(str(_resolve(request, path)), allow_playback_repeats=True,
                                 match_on=_match_on(match_on)) as cassette:
            yield cassette

    return _play


@pytest.fixture
def payg_replay(request: pytest.FixtureRequest) -> Any:
    def _replay(cassettes: Any, *, policy: Any, config: Any, group: str | None = None,
                match_on: str | tuple[str, ...] | None = None) -> ReplayReport:
        if isinstance(cassettes, (str, os.PathLike)):
            cassettes = [cassettes]
        paths = [_resolve(request, c) for c in cassettes]
        return replay(_resolve(request, policy), paths, config=_resolve(request, config), group=group,
                      match_on=match_on)

    return _replay

