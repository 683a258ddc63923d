"""``bench/request_path.py`` prints one request's path through the package: the figure #20's refactor
is read by (modules visited, steps). These tests keep the script honest: run as a user runs it, it
must print a path that goes through the adapter, the attempt and the ledger, reserve before settle,
with totals that add up; and its tracer must count a coroutine once however often it is resumed.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "bench" / "request_path.py"
STEP = re.compile(r"^\s*(\d+)\s+(litellm_payg\.\S+)\s+(.+)$")
TOTALS = re.compile(r"^(\d+) modules, (\d+) steps$")
VISITS = re.compile(r"^\s+(\d+)\s+(litellm_payg\.\S+)$")


def _script(monkeypatch):
    spec = importlib.util.spec_from_file_location("request_path_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_router_path_enters_adapter_attempt_and_ledger():
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    done = subprocess.run([sys.executable, str(SCRIPT), "--router"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    steps = [m.groups() for m in map(STEP.match, lines) if m]
    assert steps, f"no step printed:\n{done.stdout}"
    assert [int(n) for n, _, _ in steps] == list(range(1, len(steps) + 1))
    modules = [module for _, module, _ in steps]
    # consecutive calls in one module are one step
    assert all(a != b for a, b in zip(modules, modules[1:]))

    totals = [m.groups() for m in map(TOTALS.match, lines) if m]
    assert totals == [(str(len(set(modules))), str(len(steps)))]
    visits = {module: int(n) for n, module in (m.groups() for m in map(VISITS.match, lines) if m)}
    assert visits == {module: modules.count(module) for module in set(modules)}

    def first(module: str, function: str) -> int:
        at = [i for i, (_, mod, functions) in enumerate(steps) if mod == module and function in functions]
        assert at, f"{module} {function} not on the path:\n{done.stdout}"
        return at[0]

    filtered = first("litellm_payg.adapter.pick_filter", "PickFilter.async_filter_deployments")
    attempt = first("litellm_payg.runtime.attempt", "Attempt.pick")
    reserved = first("litellm_payg.stores.ledger.memory", "MemoryLedger.reserve")
    settled = first("litellm_payg.stores.ledger.memory", "MemoryLedger.settle")
    outcome = first("litellm_payg.default_plugins.decision_log", "payg_outcome")
    first("litellm_payg.adapter.answer_path", "AnswerPath.async_log_success_event")  # the logging worker's turn
    assert filtered < attempt < reserved < settled < outcome


def test_tracer_counts_calls_not_resumes(tmp_path, monkeypatch):
    package = tmp_path / "pathpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "outer.py").write_text(
        "import asyncio\nfrom pathpkg import inner\n\n"
        "async def serve():\n    await asyncio.sleep(0)\n    inner.twice()\n    await asyncio.sleep(0)\n"
        "    return [inner.double(x) for x in (1, 2)]\n"
    )
    (package / "inner.py").write_text(
        "def double(x):\n    return 2 * x\n\n"
        "def twice():\n    return list(_gen())\n\n"
        "def _gen():\n    yield 1\n    yield 2\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    from pathpkg import outer

    tracer = _script(monkeypatch).ModuleTracer(package)
    tracer.start()
    try:
        assert asyncio.run(outer.serve()) == [2, 4]
    finally:
        tracer.stop()
    assert tracer.calls == [("pathpkg.outer", "serve"), ("pathpkg.inner", "twice"), ("pathpkg.inner", "_gen"),
                            ("pathpkg.inner", "double"), ("pathpkg.inner", "double")]
    assert [(s.module, s.functions) for s in tracer.steps()] == [
        ("pathpkg.outer", ["serve"]), ("pathpkg.inner", ["twice", "_gen", "double"])]
