"""One request's path through litellm-payg's modules: which modules it enters, in what order, how often.

Run (offline, a few seconds)::

    LITELLM_LOCAL_MODEL_COST_MAP=True python bench/request_path.py            # --router, the default
    LITELLM_LOCAL_MODEL_COST_MAP=True python bench/request_path.py --proxy    # LiteLLM's proxy app, in-process

It sends one warm-up request (untraced: first-use imports and caches are not the path), then ONE
ordinary chat request, and records every function call whose code lives in ``litellm_payg/`` from
the moment the request is sent until its spend is settled and its outcome emitted (LiteLLM runs the
success callback a moment after the caller has its answer, on its logging worker or a thread: the
tracer is installed with ``sys.setprofile`` *and* ``threading.setprofile``, and the script waits for
the outcome before it stops tracing). Consecutive calls in the same module are one *step*; the script
prints the steps in order (module, the functions entered there), then ``N modules, M steps`` and how
many steps each module got.

* ``--router``: a ``litellm.Router`` (DeepSeek and Mistral Large answering with LiteLLM's
  ``mock_response``) governed by ``policies/cost-threshold.yaml`` plus a global daily budget on a
  memory ledger, so the request is reserved before the call and settled after it.
* ``--proxy``: LiteLLM's own FastAPI app (``litellm.proxy.proxy_server.app``) configured from a
  temporary ``config.yaml`` with the plugin's proxy line (``litellm_payg.proxy_handler``), the same
  deployments and policy, driven with ``httpx.AsyncClient`` over ``httpx.ASGITransport``: the real
  proxy request path (auth, pre-call hook, Router, callbacks) without a socket.

What counts: a call event for a Python function (comprehensions and generator expressions are
folded into the function that runs them; a coroutine or generator *resumed* after an ``await`` or a
``yield`` is not a new call). Steps measure how often a request crosses a module boundary, which
is what a refactor that splits or merges modules changes; they are not a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dis
import functools
import inspect
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # LiteLLM's bundled price map, no network

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # trace this checkout's package

import litellm  # noqa: E402
from litellm.integrations.custom_logger import CustomLogger  # noqa: E402

import litellm_payg  # noqa: E402

POLICY = REPO / "policies" / "cost-threshold.yaml"
DEEPSEEK = "deepseek/deepseek-chat"
MISTRAL = "mistral/mistral-large-latest"
MESSAGES = [{"role": "user", "content": "What is the capital of France? One word."}]
#: a budget the request is reserved against and settled into (never reached: the request is served)
BUDGET = {"name": "daily", "scope": "global", "window": "day", "limit_usd": 100.0, "on_exceed": "block"}

_RESUMABLE = inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR


@functools.lru_cache(maxsize=None)
def _first_resume(code: Any) -> int:
    """The offset of a code object's first RESUME: a frame that has not passed it is being entered,
    not resumed (a generator or coroutine starts there; later resumes are after a YIELD_VALUE)."""
    for ins in dis.get_instructions(code):
        if ins.opname == "RESUME":
            return ins.offset
    return 0


@dataclass
class Step:
    """Consecutive calls in one module: the module and the functions entered there, in order."""

    module: str
    functions: list[str] = field(default_factory=list)


class ModuleTracer:
    """Records the calls into one package, on every thread, while it is on.

    ``sys.setprofile`` covers the thread that starts it, ``threading.setprofile`` every thread started
    afterwards (LiteLLM's thread-pool workers start lazily, on first use); calls are appended with a
    lock, in the order they happen across threads.
    """

    def __init__(self, package_dir: Path) -> None:
        self.prefix = str(package_dir) + os.sep
        self.calls: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def _profile(self, frame: Any, event: str, arg: Any) -> None:
        if event != "call":
            return
        code = frame.f_code
        if not code.co_filename.startswith(self.prefix):
            return
        name = code.co_name
        if name.startswith("<") and name != "<module>":
            return  # a comprehension or generator expression: part of the function running it
        if code.co_flags & _RESUMABLE and frame.f_lasti > _first_resume(code):
            return  # a coroutine or generator fires "call" on every resume; only its first entry is a call
        module = frame.f_globals.get("__name__", code.co_filename)
        qualname = getattr(code, "co_qualname", name)
        with self._lock:
            self.calls.append((module, qualname))

    def start(self) -> None:
        threading.setprofile(self._profile)
        sys.setprofile(self._profile)

    def stop(self) -> None:
        sys.setprofile(None)
        threading.setprofile(None)  # type: ignore[arg-type]

    def steps(self) -> list[Step]:
        out: list[Step] = []
        for module, function in self.calls:
            if not out or out[-1].module != module:
                out.append(Step(module))
            if not out[-1].functions or out[-1].functions[-1] != function:
                out[-1].functions.append(function)
        return out


def report(steps: list[Step], title: str) -> str:
    """The printed path: numbered steps, the totals line, and the steps per module (most first)."""
    lines = [f"Request path, {title}:", ""]
    width = max((len(s.module) for s in steps), default=0)
    for i, step in enumerate(steps, 1):
        lines.append(f"{i:3d}  {step.module:<{width}}  {', '.join(step.functions)}")
    visits = collections.Counter(s.module for s in steps)
    lines += ["", f"{len(visits)} modules, {len(steps)} steps", "", "steps per module:"]
    for module, count in sorted(visits.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"  {count:3d}  {module}")
    return "\n".join(lines)


class Outcomes:
    """A throw-away plugin: counts the outcomes the plugin emits (the end of a request's path)."""

    def __init__(self) -> None:
        self.seen = 0

    @litellm_payg.hookimpl
    def payg_outcome(self, outcome: Any) -> None:
        self.seen += 1


class SuccessLogs(CustomLogger):
    """Counts LiteLLM's async success log events; registered after the plugin's callback, so when it
    has seen the traced request's event the plugin's ``async_log_success_event`` has run too."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0

    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):
        self.seen += 1


async def wait_for(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"request_path: no {what} within {timeout:.0f}s")
        await asyncio.sleep(0.01)


def policy_dict() -> dict[str, Any]:
    import yaml

    policy = yaml.safe_load(POLICY.read_text(encoding="utf-8"))
    policy["ledger"] = "memory://"
    policy["budgets"] = [BUDGET]
    return policy


def model_list() -> list[dict[str, Any]]:
    return [
        {"model_name": "chat", "litellm_params": {"model": model, "api_key": "sk-test-not-a-key", "mock_response": f"Paris (from {dep_id})"},
         "model_info": {"id": dep_id}}
        for model, dep_id in ((DEEPSEEK, "ds"), (MISTRAL, "ml"))
    ]


async def traced(send: Callable[[], Any], outcomes: Outcomes, engine_of: Callable[[], Any]) -> list[Step]:
    """Send one warm-up request, then the traced one; trace until the request's outcome is out and
    LiteLLM's logging worker has run the success callbacks, then check (untraced) that the spend is
    settled."""
    logs = SuccessLogs()
    litellm.callbacks.append(logs)  # after the plugin's callback: LiteLLM runs them in list order
    try:
        await send()
        await wait_for(lambda: outcomes.seen >= 1 and logs.seen >= 1, "outcome for the warm-up request")
        await _drain(engine_of())
        tracer = ModuleTracer(Path(litellm_payg.__file__).parent)
        outcomes_before, logs_before = outcomes.seen, logs.seen
        tracer.start()
        try:
            await send()
            await wait_for(lambda: outcomes.seen > outcomes_before and logs.seen > logs_before, "outcome for the traced request")
        finally:
            tracer.stop()
        await _drain(engine_of())  # untraced: the check reads the ledger
        if not tracer.calls:
            raise SystemExit("request_path: the tracer recorded no call into litellm_payg")
        return tracer.steps()
    finally:
        litellm.logging_callback_manager.remove_callback_from_all_lists(logs)


async def _drain(engine: Any) -> None:
    await wait_for(lambda: engine.spend.ledger.open_reservations() == 0 and engine.spend.in_flight == 0, "settled spend")


async def run_router() -> list[Step]:
    from litellm import Router

    router = Router(model_list=model_list())
    attached = litellm_payg.attach(router, policy_dict())
    outcomes = Outcomes()
    attached.engine.pm.register(outcomes)
    try:
        async def send() -> None:
            await router.acompletion(model="chat", messages=MESSAGES)

        return await traced(send, outcomes, lambda: attached.engine)
    finally:
        attached.detach()


#: a master key the proxy accepts (it refuses well-known ones such as sk-1234); no database is configured
MASTER_KEY = "sk-payg-request-path-5e1d"
#: environment that would point the in-process proxy at a database, key or policy not chosen here
_PROXY_ENV = ("DATABASE_URL", "DIRECT_URL", "LITELLM_MASTER_KEY", "WORKER_CONFIG", "STORE_MODEL_IN_DB", "REDIS_HOST", "REDIS_URL")


async def run_proxy() -> list[Step]:
    import httpx
    import yaml

    with tempfile.TemporaryDirectory(prefix="payg-request-path-") as tmp:
        policy_path = Path(tmp) / "payg-policy.yaml"
        policy_path.write_text(yaml.safe_dump(policy_dict(), sort_keys=False), encoding="utf-8")
        config_path = Path(tmp) / "config.yaml"
        config = {
            "model_list": model_list(),
            "litellm_settings": {"callbacks": ["litellm_payg.proxy_handler"]},  # the plugin's proxy line
            "general_settings": {"master_key": MASTER_KEY},
        }
        config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        for name in _PROXY_ENV:
            os.environ.pop(name, None)
        os.environ["CONFIG_FILE_PATH"] = str(config_path)
        os.environ["LITELLM_PAYG_POLICY"] = str(policy_path)

        from litellm.proxy.proxy_server import app

        async with app.router.lifespan_context(app):  # the proxy's startup: reads the config, loads the plugin
            from litellm_payg.adapter.proxy import handler

            if handler.engine is None:
                raise SystemExit(f"request_path: the proxy refused its policy: {handler.error}")
            outcomes = Outcomes()
            handler.engine.pm.register(outcomes)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://proxy.invalid") as client:
                async def send() -> None:
                    response = await client.post(
                        "/v1/chat/completions",
                        headers={"Authorization": f"Bearer {MASTER_KEY}"},
                        json={"model": "chat", "messages": MESSAGES},
                    )
                    if response.status_code != 200:
                        raise SystemExit(f"request_path: the proxy answered {response.status_code}: {response.text[:500]}")

                return await traced(send, outcomes, lambda: handler.engine)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--router", action="store_true", help="a litellm.Router with the plugin attached (default)")
    mode.add_argument("--proxy", action="store_true", help="LiteLLM's proxy app in-process, with the plugin's proxy line")
    args = parser.parse_args(argv)
    if args.proxy:
        steps = asyncio.run(run_proxy())
        title = "LiteLLM proxy app (in-process), POST /chat/completions, cost_threshold + global daily budget"
    else:
        steps = asyncio.run(run_router())
        title = "litellm.Router.acompletion, cost_threshold + global daily budget"
    print(report(steps, title))
    return 0


if __name__ == "__main__":
    sys.exit(main())
