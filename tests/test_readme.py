"""Every code block of the user docs runs, or says why it does not.

Docs: ``README.md``, the pages under ``docs/`` and ``bench/README.md`` (``DOCS``, from ``user_docs``). Each fenced block is handled by its language:

* ``python``: run as a script (``__main__``, a fresh namespace, its own temporary working
  directory beside the repo's files), all blocks in one worker process so LiteLLM is imported once;
  the block fails on any exception or a non-zero ``SystemExit``. A fragment preceded by
  ``<!-- prelude: NAME -->`` runs after the setup ``PRELUDES[NAME]`` (top-level ``await`` allowed
  there only: a script a user copies must not need it).
* ``bash``/``sh``/``shell``: each command (backslash continuations joined, ``#`` comments dropped)
  must be a ``litellm-payg`` command; it runs in this process (``cli.main``) in a temporary
  directory beside the repo's files and must exit 0. ``simulate`` runs the real command with every
  traffic line's count capped (``SMOKE_*``): a smoke run of the flags, policy, scenario and engine;
  the full-volume figures are checked by ``tests/test_simulate.py`` and ``tests/test_simulate_runs.py``.
* ``yaml``: parsed; a policy (``version:``) is loaded with the policy loader, a policy fragment
  (top-level policy keys without ``version``; or a list of rule entries, loaded as a route) is
  loaded inside a minimal policy, a LiteLLM config (``model_list:``) is checked with
  ``litellm-payg check POLICY --config`` against the policy it names (``LITELLM_PAYG_POLICY``, found
  by name in ``policies/``), the policies beside its ``file:``, or an empty policy; a part of a config
  (``litellm_settings:`` ...) has its dotted callbacks imported; a list of budgets (entries with
  ``scope``) is loaded as ``budgets:``. A policy block with
  ``{...}``/``[...]`` placeholders is a reference: its top-level keys must be policy fields.
* ``json``: each JSON value (one per line, or wrapped over several) parsed; traffic lines
  (``group``/``runs``) through ``simulate``'s traffic parser.
* no language or ``text``: program output or a listing, nothing to run.

Markers: an HTML comment on the line(s) right before the fence.
``<!-- not-run: REASON -->`` skips a block (the reason is required); ``<!-- file: PATH -->`` says the
block is a part of that repo file (checked; a python/shell block is then not run here: the file is
run by the suite); ``<!-- given: PATH -->`` on a policy block creates PATH (``{}``, e.g. a JSON
schema the text says is the user's own) beside it before loading. Any other block that cannot run fails with its file, line and first line, and
says how to mark it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

import user_docs

REPO = Path(__file__).resolve().parents[1]
DOCS = tuple(user_docs.names())
PYTHON = {"python", "py", "python3"}
SHELL = {"bash", "sh", "shell"}
TEXT = {"", "text", "txt", "plain", "output"}
#: ``simulate`` smoke run: each request class and each runs line is capped at these counts
SMOKE_REQUESTS = 300
SMOKE_RUNS = 20
#: markers
_MARKER = re.compile(r"^\s*<!--\s*(not-run|file|prelude|given)\s*:\s*(.*?)\s*-->\s*$")
_FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w+-]*)")


@dataclasses.dataclass
class Block:
    doc: str
    line: int  # the fence's line, 1-based
    lang: str
    code: str
    markers: dict[str, str]

    @property
    def where(self) -> str:
        first = next((ln.strip() for ln in self.code.splitlines() if ln.strip()), "")
        return f"{self.doc}:{self.line} ({self.lang or 'no language'} block starting {first[:70]!r})"

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"


def parse_blocks(doc: str, text: str) -> list[Block]:
    """Fenced blocks with their markers (HTML comments on the lines right before the fence)."""
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = m.group(1), m.group(2), m.group(3).lower()
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            j += 1
        if j == len(lines):
            raise AssertionError(f"{doc}:{i + 1}: a ``` fence is never closed")
        body = [ln[len(indent):] if ln.startswith(indent) else ln.lstrip() for ln in lines[i + 1:j]]
        markers: dict[str, str] = {}
        k = i - 1
        while k >= 0 and (mk := _MARKER.match(lines[k])):
            markers[mk.group(1)] = mk.group(2)
            k -= 1
        blocks.append(Block(doc, i + 1, lang, "\n".join(body) + "\n", markers))
        i = j + 1
    return blocks


def all_blocks() -> list[Block]:
    return [b for doc in DOCS for b in parse_blocks(doc, (REPO / doc).read_text(encoding="utf-8"))]


BLOCKS = all_blocks()
# python blocks last: their worker process starts with the first test and runs while the others do
RUN = sorted((b for b in BLOCKS if "not-run" not in b.markers), key=lambda b: b.lang in PYTHON)


# -- where a block runs: a temporary directory beside the repo's files -------------------------------


def _workdir(tmp: Path) -> Path:
    """A directory whose entries are the repo's top-level files (symlinked), so a block reads
    ``policies/...`` as a user in a checkout does, and writes (a ledger file) land here."""
    tmp.mkdir(parents=True, exist_ok=True)
    for entry in REPO.iterdir():
        if entry.name.startswith(".") or entry.name.startswith("payg-ledger"):
            continue
        (tmp / entry.name).symlink_to(entry)
    return tmp


# -- python blocks: one worker process runs them all ----------------------------------------------

#: setups for fragments (``<!-- prelude: NAME -->``): what the surrounding text says exists
PRELUDES = {
    # "In Python, with a Router" (Agent runs): a Router with the agent group, the policy of that
    # section as payg-policy.yaml, a run id and its messages; answers come from mock_response.
    "agent-router": textwrap.dedent('''
        import shutil
        import litellm_payg
        from litellm import Router
        shutil.copy("policies/agent-runs.yaml", "payg-policy.yaml")
        router = Router(model_list=[
            {"model_name": "agent", "litellm_params": {"model": m, "api_key": "sk-not-a-key", "mock_response": "ok"}}
            for m in ("anthropic/claude-sonnet-4-5", "gpt-4o", "gpt-4o-mini")
        ])
        run_id = "run-1"
        messages = [{"role": "user", "content": "Plan the refund for order 1042."}]
    '''),
}

_WORKER = r'''
import ast, asyncio, contextlib, io, json, os, sys, traceback
jobs = json.load(open(sys.argv[1]))
out = {}
for job in jobs:
    os.chdir(job["cwd"])
    buf = io.StringIO()
    error = None
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            ns = {"__name__": "__main__", "__file__": os.path.join(job["cwd"], "block.py")}
            if job["prelude"] is not None:
                exec(compile(job["prelude"], "<prelude>", "exec"), ns)
            flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT if job["prelude"] is not None else 0
            code = compile(job["code"], job["where"], "exec", flags=flags)
            result = eval(code, ns)
            if asyncio.iscoroutine(result):
                asyncio.run(result)
    except SystemExit as exc:
        if exc.code not in (None, 0):
            error = f"SystemExit({exc.code!r})"
    except BaseException:
        error = traceback.format_exc()
    out[job["id"]] = {"error": error, "output": buf.getvalue()[-4000:]}
json.dump(out, open(sys.argv[2], "w"))
'''


@pytest.fixture(scope="module")
def python_results(tmp_path_factory: pytest.TempPathFactory) -> Future:
    """Start the worker once (in the background: the shell blocks run meanwhile); the future gives
    ``{block id: {"error", "output"}}``."""
    root = tmp_path_factory.mktemp("readme-python")
    jobs = []
    for b in RUN:
        if b.lang not in PYTHON or "file" in b.markers:
            continue
        name = b.markers.get("prelude")
        jobs.append({"id": b.id, "where": b.where, "code": b.code, "prelude": PRELUDES.get(name) if name else None,
                     "cwd": str(_workdir(root / b.id.replace("/", "_").replace(":", "_")))})
    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(run_python_jobs, jobs, root) if jobs else _done({})
    yield future
    pool.shutdown(wait=True)


def run_python_jobs(jobs: list[dict[str, Any]], root: Path) -> dict[str, Any]:
    (root / "jobs.json").write_text(json.dumps(jobs))
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    done = subprocess.run([sys.executable, "-c", _WORKER, str(root / "jobs.json"), str(root / "out.json")],
                          capture_output=True, text=True, env=env, timeout=240)
    if done.returncode != 0:
        raise AssertionError(f"the python-block worker failed:\n{done.stdout}\n{done.stderr}")
    return json.loads((root / "out.json").read_text())


def _done(value: Any) -> Future:
    f: Future = Future()
    f.set_result(value)
    return f


# -- shell blocks: litellm-payg in this process ---------------------------------------------------


def shell_commands(code: str) -> list[str]:
    """Logical command lines: continuations joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", code)
    out = []
    for ln in joined.splitlines():
        parts = shlex.split(ln, comments=True)
        if parts:
            out.append(shlex.join(parts))
    return out


def _smoke_traffic(real: Any) -> Any:
    def capped(text: str, source: str) -> Any:
        traffic = real(text, source)
        traffic.classes = [dataclasses.replace(c, count=min(c.count, SMOKE_REQUESTS)) for c in traffic.classes]
        traffic.runs = [dataclasses.replace(r, count=min(r.count, SMOKE_RUNS)) for r in traffic.runs]
        return traffic

    return capped


def run_cli(argv: list[str], cwd: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    from litellm_payg.tools import cli, simulate

    monkeypatch.chdir(cwd)
    monkeypatch.setattr(simulate, "parse_traffic", _smoke_traffic(simulate.parse_traffic))
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            code = cli.main(argv)
        except SystemExit as exc:  # argparse: an unknown flag or a missing argument
            code = exc.code if isinstance(exc.code, int) else 2
    return code, out.getvalue()


# -- yaml blocks ----------------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\{\.\.\.\}|\[\.\.\.\]")


def _policy_fields() -> set[str]:
    from litellm_payg.policy.load import _PolicyDocument

    return {f.alias or name for name, f in _PolicyDocument.model_fields.items()}


def _load_policy_text(text: str, where: Path) -> Any:
    from litellm_payg.policy.load import load_policy

    where.write_text(text, encoding="utf-8")
    return load_policy(where)


def check_yaml(b: Block, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        data = yaml.safe_load(b.code)
    except yaml.YAMLError as exc:
        raise AssertionError(f"{b.where}: not valid YAML: {exc}") from None
    cwd = _workdir(tmp / "cwd")
    # a policy is loaded from beside the shipped ones, so `plugins: [example_plugin.py]` resolves
    # as in policies/eu-residency.yaml; files a block names relative to itself come from policies/
    home = tmp / "policy"
    home.mkdir()
    for f in (REPO / "policies").iterdir():
        (home / f.name).symlink_to(f)
    for given in filter(None, (b.markers.get("given") or "").split()):
        (home / given).parent.mkdir(parents=True, exist_ok=True)
        (home / given).write_text("{}")
    try:
        _check_yaml_data(b, data, cwd, home, monkeypatch)
    except AssertionError:
        raise
    except Exception as exc:  # PolicyError, SimulationError, ...: say which block
        raise AssertionError(f"{b.where}: {type(exc).__name__}: {exc}") from None


def _check_yaml_data(b: Block, data: Any, cwd: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if isinstance(data, dict) and "model_list" in data:
        _check_config(b, data, cwd, monkeypatch)
        return
    if isinstance(data, dict) and data and set(data) <= _CONFIG_KEYS:  # a part of a LiteLLM config
        _check_callbacks(b, data)
        return
    fields = _policy_fields()
    if isinstance(data, dict) and "version" in data and _PLACEHOLDER.search(b.code):
        unknown = sorted(set(data) - fields)
        assert not unknown, f"{b.where}: not policy fields: {unknown} (policy fields: {sorted(fields)})"
        concrete = {k: v for k, v in data.items() if '"..."' not in json.dumps(v)}  # {...} is {"...": null}
        _load_policy_text(yaml.safe_dump(concrete), home / "block.yaml")
        return
    if isinstance(data, dict) and "version" in data:
        _load_policy_text(b.code, home / "block.yaml")
        return
    if isinstance(data, dict) and data and set(data) <= fields:
        _load_policy_text(yaml.safe_dump({"version": 1, **data}), home / "block.yaml")
        return
    if isinstance(data, list) and data and all(isinstance(e, dict) and "scope" in e for e in data):  # budgets
        _load_policy_text(yaml.safe_dump({"version": 1, "budgets": data}), home / "block.yaml")
        return
    if isinstance(data, list) and data and all(isinstance(e, dict) for e in data):
        _load_policy_text(yaml.safe_dump({"version": 1, "routes": {"chat": data}}), home / "block.yaml")
        return
    raise AssertionError(f"{b.where}: a YAML block that is neither a policy, a policy fragment nor a LiteLLM "
                         "config: teach tests/test_readme.py to check it or mark it <!-- not-run: REASON -->")


def _config_policies(b: Block, data: dict[str, Any], tmp: Path) -> list[Path]:
    named = ((data.get("environment_variables") or {}).get("LITELLM_PAYG_POLICY"))
    if named:
        found = REPO / "policies" / Path(named).name
        assert found.is_file(), f"{b.where}: LITELLM_PAYG_POLICY names {named!r}, which is not in policies/"
        return [found]
    if "file" in b.markers:
        beside = [p for p in sorted((REPO / b.markers["file"]).parent.glob("*.yaml"))
                  if isinstance(d := yaml.safe_load(p.read_text()), dict) and "version" in d]
        if beside:
            return beside
    empty = tmp / "empty-policy.yaml"
    empty.write_text("version: 1\nroutes: {}\nledger: memory://\n")
    return [empty]


_CONFIG_KEYS = {"model_list", "litellm_settings", "general_settings", "router_settings", "environment_variables",
                "callback_settings"}


def _check_callbacks(b: Block, data: dict[str, Any]) -> None:
    import importlib

    for cb in (data.get("litellm_settings") or {}).get("callbacks") or []:
        if "." in cb:  # a dotted path the proxy imports (a bare name is one of LiteLLM's own loggers)
            module, _, attr = cb.rpartition(".")
            assert hasattr(importlib.import_module(module), attr), f"{b.where}: callback {cb!r} does not exist"


def _check_config(b: Block, data: dict[str, Any], cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _check_callbacks(b, data)
    config = cwd / "block-config.yaml"
    config.write_text(b.code, encoding="utf-8")
    for policy in _config_policies(b, data, cwd):
        code, out = run_cli(["check", str(policy), "--config", str(config)], cwd, monkeypatch)
        assert code == 0, f"{b.where}: `litellm-payg check {policy.relative_to(REPO) if policy.is_relative_to(REPO) else policy.name} --config <this block>` exited {code}:\n{out}"


# -- json blocks ----------------------------------------------------------------------------------


def json_values(code: str) -> list[Any]:
    decoder = json.JSONDecoder()
    values, i, text = [], 0, code.strip()
    while i < len(text):
        value, end = decoder.raw_decode(text, i)
        values.append(value)
        i = end
        while i < len(text) and text[i].isspace():
            i += 1
    return values


def check_json(b: Block) -> None:
    from litellm_payg.tools.simulate import parse_traffic

    try:
        values = json_values(b.code)
    except ValueError as exc:
        raise AssertionError(f"{b.where}: not JSON values: {exc}") from None
    traffic = [v for v in values if isinstance(v, dict) and ("group" in v or "runs" in v)]
    if traffic:
        try:
            parse_traffic("\n".join(json.dumps(v) for v in traffic), f"{b.where}")
        except Exception as exc:
            raise AssertionError(f"{b.where}: not valid simulate traffic: {exc}") from None


# -- the tests ------------------------------------------------------------------------------------


def test_the_docs_have_blocks_and_every_not_run_marker_gives_a_reason():
    assert len(BLOCKS) > 20, "README.md lost its code blocks? (or the fence parser broke)"
    short = [f"{b.where}: <!-- not-run: {b.markers['not-run']} -->" for b in BLOCKS
             if "not-run" in b.markers and len(b.markers["not-run"].split()) < 3]
    assert not short, "a not-run marker needs a reason (a few words: why this block cannot run here):\n" + "\n".join(short)
    unknown = [b.where for b in BLOCKS if b.markers.get("prelude") and b.markers["prelude"] not in PRELUDES]
    assert not unknown, f"prelude names not in tests/test_readme.py PRELUDES ({sorted(PRELUDES)}): {unknown}"


@pytest.mark.parametrize("block", RUN, ids=[b.id for b in RUN])
def test_block(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, python_results: Future) -> None:
    check_block(block, tmp_path, monkeypatch, python_results)


def check_block(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, python_results: Future) -> None:
    if "file" in block.markers:
        path = REPO / block.markers["file"]
        assert path.is_file(), f"{block.where}: <!-- file: {block.markers['file']} --> names no file"
        have = path.read_text(encoding="utf-8")
        norm = lambda s: "\n".join(ln.rstrip() for ln in s.strip().splitlines())  # noqa: E731
        assert norm(block.code) in norm(have), (
            f"{block.where}: the block is no longer a part of {block.markers['file']}: copy the file's current "
            "text into the README (or fix the marker)")
        if block.lang in PYTHON | SHELL:
            return  # the suite runs that file
    lang = block.lang
    if lang in TEXT:
        return
    if lang in PYTHON:
        result = python_results.result(timeout=300)[block.id]
        assert result["error"] is None, (f"{block.where} failed when run as a script:\n{result['error']}\n"
                                         f"output:\n{result['output']}")
        return
    if lang in SHELL:
        cwd = _workdir(tmp_path / "cwd")
        for command in shell_commands(block.code):
            argv = shlex.split(command)
            while argv and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", argv[0]):  # NAME=value command
                name, _, value = argv.pop(0).partition("=")
                monkeypatch.setenv(name, value)
            assert argv and argv[0] == "litellm-payg", (
                f"{block.where}: cannot run `{command}` here (only litellm-payg commands are run): "
                "mark the block <!-- not-run: REASON --> on the line before its fence")
            code, out = run_cli(argv[1:], cwd, monkeypatch)
            assert code == 0, f"{block.where}: `{command}` exited {code}:\n{out[-3000:]}"
        return
    if lang in ("yaml", "yml"):
        check_yaml(block, tmp_path, monkeypatch)
        return
    if lang in ("json", "jsonl"):
        check_json(block)
        return
    raise AssertionError(f"{block.where}: tests/test_readme.py does not know how to run a {lang!r} block: "
                         "add a handler or mark it <!-- not-run: REASON --> on the line before its fence")


# -- the checker itself fails on what breaks a block ------------------------------------------------


def _one(markdown: str) -> Block:
    (block,) = parse_blocks("DOC.md", textwrap.dedent(markdown))
    return block


def _fails(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    with pytest.raises(AssertionError) as failed:
        check_block(block, tmp_path, monkeypatch, _done({}))
    return str(failed.value)


def test_a_renamed_cli_flag_fails_naming_the_block(tmp_path, monkeypatch):
    block = _one("""
        text

        ```bash
        litellm-payg explain policies/cost-threshold.yaml --model chat --prompt-tokenz 3000
        ```
    """)
    message = _fails(block, tmp_path, monkeypatch)
    assert message.startswith("DOC.md:4 (bash block starting 'litellm-payg explain policies/cost-threshold.yaml")
    assert "exited 2" in message and "--prompt-tokenz" in message


def test_a_renamed_policy_field_fails_naming_the_block(tmp_path, monkeypatch):
    for markdown in ("```yaml\nversion: 1\nroutes:\n  chat:\n    - cost_threshold: {use: gpt-4o, max_usd_per_1k: 1, otherwise: gpt-4o-mini}\n```\n",
                     "```yaml\n- quality_floor: {min_quallity: 0.85}\n```\n",
                     "```yaml\nbudgets:\n  - {scope: global, window: month, limit_usd: 5, on_exced: block}\n```\n"):
        message = _fails(_one(markdown), tmp_path / str(hash(markdown)), monkeypatch)
        assert message.startswith("DOC.md:1 (yaml block") and "PolicyError" in message, message


def test_a_command_with_an_environment_prefix_runs_with_it(tmp_path, monkeypatch):
    check_block(_one("```bash\nLITELLM_PAYG_DOCS_TEST=1 litellm-payg check policies/cost-threshold.yaml\n```\n"),
                tmp_path, monkeypatch, _done({}))
    assert os.environ["LITELLM_PAYG_DOCS_TEST"] == "1"


def test_an_unmarked_block_that_cannot_run_fails_telling_the_author_to_mark_it(tmp_path, monkeypatch):
    message = _fails(_one("```bash\npip install litellm-payg\n```\n"), tmp_path, monkeypatch)
    assert "DOC.md:1 (bash block starting 'pip install litellm-payg')" in message
    assert "mark the block <!-- not-run: REASON -->" in message
    message = _fails(_one("```ruby\nputs 1\n```\n"), tmp_path / "r", monkeypatch)
    assert "does not know how to run a 'ruby' block" in message
    assert "not-run" in _one("<!-- not-run: needs API keys -->\n```bash\npip install x\n```\n").markers


def test_config_parts_and_budget_lists_are_checked(tmp_path, monkeypatch):
    ok = "```yaml\nlitellm_settings:\n  callbacks: [litellm_payg.proxy_handler, prometheus]\n```\n"
    check_block(_one(ok), tmp_path / "a", monkeypatch, _done({}))
    message = _fails(_one(ok.replace("proxy_handler", "proxy_handlr")), tmp_path / "b", monkeypatch)
    assert "DOC.md:1 (yaml block" in message
    check_block(_one("```yaml\n- {scope: global, window: day, limit_usd: 5}\n```\n"), tmp_path / "c", monkeypatch, _done({}))
    message = _fails(_one("```yaml\n- {scope: global, window: dy, limit_usd: 5}\n```\n"), tmp_path / "d", monkeypatch)
    assert "budgets[0].window" in message


def test_bad_traffic_and_a_drifted_file_copy_fail(tmp_path, monkeypatch):
    message = _fails(_one('```json\n{"group": "chat", "prompt_tokens": 1, "completion_tokens": 1, "cont": 5}\n```\n'),
                     tmp_path, monkeypatch)
    assert "not valid simulate traffic" in message and "cont" in message
    message = _fails(_one("<!-- file: policies/cost-threshold.yaml -->\n```yaml\nversion: 2\n```\n"),
                     tmp_path / "f", monkeypatch)
    assert "no longer a part of policies/cost-threshold.yaml" in message


def test_python_blocks_that_raise_exit_or_await_fail(tmp_path, monkeypatch):
    blocks = [_one("```python\nimport json\njson.lods('1')\n```\n"),
              _one("```python\nimport sys\nprint('half')\nsys.exit(3)\n```\n"),
              _one("```python\nimport asyncio\nawait asyncio.sleep(0)\n```\n"),
              _one("```python\nimport asyncio\nasync def main():\n    print('ok')\nasyncio.run(main())\n```\n")]
    for i, b in enumerate(blocks):
        b.line = i + 1
    jobs = [{"id": b.id, "where": b.where, "code": b.code, "prelude": None, "cwd": str(_workdir(tmp_path / str(i)))}
            for i, b in enumerate(blocks)]
    results = _done(run_python_jobs(jobs, tmp_path))
    for b, expected in zip(blocks, ("AttributeError: module 'json' has no attribute 'lods'", "SystemExit(3)",
                                    "SyntaxError: 'await' outside function")):
        with pytest.raises(AssertionError) as failed:
            check_block(b, tmp_path, monkeypatch, results)
        assert str(failed.value).startswith(f"{b.where} failed when run as a script") and expected in str(failed.value)
    check_block(blocks[3], tmp_path, monkeypatch, results)  # a script as a user writes it passes
