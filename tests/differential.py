"""The differential harness: the same config and requests through LiteLLM alone and through LiteLLM
with the plugin, and LiteLLM itself as the judge of which deployments may serve a request.

Three runs per scenario and request, each on a fresh Router built from the scenario's config:

* **alone**: LiteLLM's Router, no plugin. Served, or which error.
* **accepted**: for each deployment, LiteLLM's Router with a filter callback that pins the request
  to that deployment (``Pin``). The deployments that then serve the request are the ones LiteLLM's
  own checks accept for it (context window, tags, order, region, vision, rate limits, cooldowns):
  the oracle, with no re-implementation of those checks in the test.
* **plugin**: LiteLLM's Router governed by the scenario's policy (``litellm_payg.attach``).

The invariant, per request: what LiteLLM alone serves, the plugin serves too, on a deployment the
oracle accepts -- unless a budget refuses it by design. :func:`write_matrix` prints (or, with
``PAYG_DIFF_MATRIX=path``, writes) the feature x end table the lead quotes.

Deployment ids carry a per-run suffix (``id~run``): LiteLLM keeps rate-limit counters in a
process-wide cache keyed by deployment id, so two Routers built from one config would otherwise
share them. Results are compared on the id before the ``~``.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import fnmatch
import itertools
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import litellm
from litellm import Router
from litellm.integrations.custom_logger import CustomLogger

import litellm_payg

#: one word LiteLLM's tokenizers count as one token each time it repeats (" hello")
WORD = "hello "

_PIN: contextvars.ContextVar[str | None] = contextvars.ContextVar("payg_diff_pin", default=None)
_RUNS = itertools.count()


def prompt(tokens: int) -> list[dict]:
    """A user message of about ``tokens`` tokens, built cheaply (a repeated word)."""
    return [{"role": "user", "content": WORD * max(1, tokens)}]


IMAGE = [{"role": "user", "content": [
    {"type": "text", "text": "What is in this picture?"},
    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
]}]
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}]


def base_id(deployment_id: str | None) -> str | None:
    return None if deployment_id is None else str(deployment_id).split("~", 1)[0]


class Pin(CustomLogger):
    """A filter callback that narrows a group to the deployment named in :data:`_PIN` (when the
    group has it): how the oracle asks LiteLLM whether that deployment may serve a request."""

    async def async_filter_deployments(self, model, healthy_deployments, messages, request_kwargs=None,
                                       parent_otel_span=None):
        pin = _PIN.get()
        if pin is None:
            return healthy_deployments
        kept = [d for d in healthy_deployments if base_id((d.get("model_info") or {}).get("id")) == pin]
        return kept or healthy_deployments


@dataclass
class Request:
    """One request of a scenario: the Router call's kwargs and a label for the matrix."""

    label: str
    kwargs: dict
    #: a budget refuses this request by design: the plugin's error is expected
    refused_by_budget: bool = False
    #: the deployments LiteLLM alone sends this request to, where its checks prefer some without
    #: refusing the others (vision, ``order``): the plugin's pick must be one of them too. Checked
    #: against LiteLLM alone on every run. Empty: every deployment the oracle accepts.
    alone_class: tuple[str, ...] = ()


@dataclass
class Scenario:
    feature: str
    model_list: list[dict]
    policy: dict
    requests: list[Request]
    router_kwargs: dict = field(default_factory=dict)
    #: run before each request on a fresh Router (e.g. put a deployment in cooldown)
    prepare: Callable[[Router], None] | None = None
    #: send every request of the scenario to one Router in sequence (rate limits, cooldowns), not
    #: one fresh Router per request
    sequential: bool = False

    def deployment_ids(self) -> list[str]:
        return [str(d["model_info"]["id"]) for d in self.model_list]

    def groups_reached(self, model: str) -> set[str]:
        """The groups a request for ``model`` may be served from: the group (through
        ``model_group_alias`` and wildcard routes) and every fallback group it leads to."""
        aliases = self.router_kwargs.get("model_group_alias") or {}
        names = {d["model_name"] for d in self.model_list}
        start = {aliases.get(model, model)} | {n for n in names if "*" in n and fnmatch.fnmatch(model, n)}
        reached, todo = set(), list(start)
        chains = [*(self.router_kwargs.get("fallbacks") or []), *(self.router_kwargs.get("context_window_fallbacks") or [])]
        while todo:
            group = todo.pop()
            if group in reached:
                continue
            reached.add(group)
            for chain in chains:
                todo.extend(chain.get(group) or [])
        return reached

    def relevant(self, deployment_id: str, request: "Request") -> bool:
        """Whether pinning ``deployment_id`` can tell anything about ``request`` (it is in a group the
        request can reach): the oracle only asks about those, which keeps it fast."""
        group = next(d["model_name"] for d in self.model_list if str(d["model_info"]["id"]) == deployment_id)
        return group in self.groups_reached(str(request.kwargs.get("model")))


@dataclass
class Outcome:
    served_by: str | None
    error: str | None = None

    @property
    def served(self) -> bool:
        return self.served_by is not None


@dataclass
class Row:
    """One request's three runs."""

    feature: str
    request: str
    alone: Outcome
    plugin: Outcome
    accepted: frozenset[str]
    refused_by_budget: bool = False
    alone_class: tuple[str, ...] = ()

    @property
    def same_class(self) -> bool:
        """The plugin's pick is a deployment LiteLLM accepts for this request, and of the class
        LiteLLM alone sends it to (when the scenario names one)."""
        if not self.plugin.served:
            return False
        if self.alone_class and self.plugin.served_by not in self.alone_class:
            return False
        return self.plugin.served_by in self.accepted or not self.accepted

    @property
    def regression(self) -> bool:
        """LiteLLM alone served it; the plugin did not, or on a deployment LiteLLM does not accept."""
        if not self.alone.served or self.refused_by_budget:
            return False
        return not self.same_class

    def describe(self) -> str:
        return (f"{self.feature}/{self.request}: alone={self.alone.served_by or self.alone.error} "
                f"plugin={self.plugin.served_by or self.plugin.error} accepted={sorted(self.accepted)}")


def _suffixed(scenario: Scenario) -> tuple[list[dict], dict, str]:
    """The scenario's model list and policy with this run's id suffix on every deployment id."""
    run = f"~{next(_RUNS)}"
    ids = scenario.deployment_ids()
    model_list = copy.deepcopy(scenario.model_list)
    for d in model_list:
        d["model_info"]["id"] = f"{d['model_info']['id']}{run}"
    text = json.dumps(scenario.policy)
    for i in sorted(ids, key=len, reverse=True):
        text = text.replace(f'"{i}"', f'"{i}{run}"')
    return model_list, json.loads(text), run


async def _call(router: Router, kwargs: Mapping[str, Any]) -> Outcome:
    try:
        response = await router.acompletion(**copy.deepcopy(dict(kwargs)))
    except Exception as exc:  # noqa: BLE001 - the outcome is what is compared
        return Outcome(None, f"{type(exc).__name__}: {str(exc)[:300]}")
    return Outcome(base_id(response._hidden_params.get("model_id")))


#: LiteLLM's process-wide callback lists. A Router registers its routing strategy's handler there
#: (usage-based-routing-v2's checks every Router's picks against its rpm/tpm), and nothing removes
#: it: left in place, one scenario's Router would enforce its strategy on every later scenario's.
_CALLBACK_LISTS = ("callbacks", "success_callback", "_async_success_callback", "failure_callback",
                   "_async_failure_callback", "input_callback", "service_callback")


def _callback_lists() -> dict[str, list]:
    return {name: list(getattr(litellm, name)) for name in _CALLBACK_LISTS if isinstance(getattr(litellm, name, None), list)}


def _restore_callback_lists(saved: dict[str, list]) -> None:
    for name, entries in saved.items():
        getattr(litellm, name)[:] = entries


async def _logged() -> None:
    """Wait until LiteLLM's logging worker has run the callbacks of the requests so far.

    LiteLLM counts a deployment's rpm/tpm (usage-based-routing-v2) in a success callback its logging
    worker runs in the background: whether the next request of a sequential scenario sees the last
    one's tokens depends on event-loop scheduling, for LiteLLM alone as for the plugin (1 run in 8 on
    1.100 saw LiteLLM alone pass over a deployment the plugin's Router, a moment earlier in its loop,
    still found under its limit). A client a moment later sees the counted state: so do all three runs.
    """
    from litellm.litellm_core_utils.logging_worker import GLOBAL_LOGGING_WORKER

    await asyncio.wait_for(GLOBAL_LOGGING_WORKER.flush(), timeout=10)


async def _run(scenario: Scenario, *, policy: bool, pin: str | None = None) -> list[Outcome]:
    """Every request of the scenario through a fresh Router (one per request unless sequential);
    with ``pin``, only the requests that deployment may serve (the others are not sent). What the
    Routers registered in LiteLLM's global callback lists is removed afterwards, as a process
    running one config (a proxy) has only its own Router's."""
    outcomes = []
    saved_callbacks = _callback_lists()
    routers: list[tuple[Router, Any]] = []

    def fresh() -> Router:
        model_list, suffixed_policy, _ = _suffixed(scenario)
        router = Router(model_list=model_list, **copy.deepcopy(scenario.router_kwargs))
        engine = litellm_payg.attach(router, suffixed_policy, ledger="memory://") if policy else None
        routers.append((router, engine))
        if scenario.prepare is not None:
            scenario.prepare(router)
        return router

    token = _PIN.set(pin)
    try:
        router = fresh() if scenario.sequential else None
        for request in scenario.requests:
            if pin is not None and not scenario.relevant(pin, request):
                outcomes.append(Outcome(None, "not asked"))
                continue
            outcomes.append(await _call(router if router is not None else fresh(), request.kwargs))
            if scenario.sequential:
                await _logged()
    finally:
        _PIN.reset(token)
        for _, engine in routers:
            if engine is not None:
                engine.detach()
        _restore_callback_lists(saved_callbacks)
    return outcomes


async def run_scenario(scenario: Scenario) -> list[Row]:
    alone = await _run(scenario, policy=False)
    pinner = Pin()
    litellm.logging_callback_manager.add_litellm_callback(pinner)
    try:
        by_deployment = {d: await _run(scenario, policy=False, pin=d) for d in scenario.deployment_ids()}
    finally:
        litellm.logging_callback_manager.remove_callback_from_all_lists(pinner)
    governed = await _run(scenario, policy=True)
    rows = []
    for i, request in enumerate(scenario.requests):
        accepted = frozenset(d for d, outcomes in by_deployment.items() if outcomes[i].served_by == d)
        if request.alone_class and alone[i].served:
            assert alone[i].served_by in request.alone_class, (
                f"{scenario.feature}/{request.label}: the scenario says LiteLLM alone sends it to {request.alone_class}, "
                f"but LiteLLM sent it to {alone[i].served_by}")
        rows.append(Row(scenario.feature, request.label, alone[i], governed[i], accepted, request.refused_by_budget,
                        request.alone_class))
    return rows


# -- the matrix -------------------------------------------------------------------------------------

MATRIX: list[tuple[str, str, Row]] = []  # (end, feature, row), filled as the suite runs


def record(end: str, rows: Sequence[Row]) -> None:
    MATRIX.extend((end, row.feature, row) for row in rows)


def matrix_text(entries: Sequence[tuple[str, str, Row]] = ()) -> str:
    """feature x end: requests, served by LiteLLM alone, served with the plugin, the plugin's pick
    accepted by LiteLLM's checks and of the class LiteLLM alone picks (``Row.same_class``),
    regressions."""
    entries = entries or MATRIX
    table: dict[tuple[str, str], list[int]] = {}
    for end, feature, row in entries:
        cell = table.setdefault((feature, end), [0, 0, 0, 0, 0])
        cell[0] += 1
        cell[1] += row.alone.served
        cell[2] += row.plugin.served
        cell[3] += row.same_class
        cell[4] += row.regression
    lines = [f"{'feature':<32} {'end':<7} {'requests':>8} {'alone':>6} {'plugin':>7} {'same-class':>10} {'regress':>8}"]
    for (feature, end), (n, alone, plugin, same, bad) in sorted(table.items()):
        lines.append(f"{feature:<32} {end:<7} {n:>8} {alone:>6} {plugin:>7} {same:>10} {bad:>8}")
    totals = [sum(cell[i] for cell in table.values()) for i in range(5)]
    lines.append(f"{'total':<32} {'':<7} {totals[0]:>8} {totals[1]:>6} {totals[2]:>7} {totals[3]:>10} {totals[4]:>8}")
    return "\n".join(lines)


def write_matrix() -> None:
    """With ``PAYG_DIFF_MATRIX`` set: write the matrix there (``-`` prints it)."""
    target = os.environ.get("PAYG_DIFF_MATRIX")
    if not target or not MATRIX:
        return
    text = matrix_text()
    if target == "-":
        print("\n" + text)
    else:
        with open(target, "w", encoding="utf-8") as out:  # the suites so far in this run, all of them
            out.write(text + "\n")
