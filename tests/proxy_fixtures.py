"""A real LiteLLM proxy process for tests: ``litellm --config <tmp>/config.yaml --port <free port>``.

No database, no network: deployments use LiteLLM's own ``mock_response``. Import into conftest with::

    from proxy_fixtures import litellm_proxy_factory  # noqa: F401

``litellm_proxy_factory`` (module scope) gives ``start(config, files=..., env=..., cold=...)`` which launches a
proxy without waiting (forked from a warm process that has imported the proxy once, see
``proxy_zygote.py``; ``cold=True`` runs the ``litellm`` command itself), so several can boot at once; ``RunningProxy.wait_ready()`` then polls
``/health/liveliness``. Every proxy started is killed at the end of the module, also when a test
fails, and a failing test's report gets each proxy's log as a section ("litellm proxy log ...").

The proxy's own requirements are not LiteLLM's (``litellm[proxy]==1.110.2`` does not resolve): the
fixture skips with the missing modules named, or fails when ``CI`` is set.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from proxy_zygote import ProxyZygote

#: a master key the proxy accepts (it refuses well-known ones such as sk-1234)
MASTER_KEY = "sk-payg-test-3c9e7b21d4"

#: import name -> distribution, for what ``litellm --config`` imports at startup beyond LiteLLM's own
#: deps (found by starting it in a fresh venv; the ``proxy`` extra of litellm-payg installs them)
PROXY_MODULES = {
    "fastapi": "fastapi",
    "uvicorn": "uvicorn",
    "backoff": "backoff",
    "orjson": "orjson",
    "apscheduler": "apscheduler",
    "jwt": "pyjwt",
    "multipart": "python-multipart",
    "cryptography": "cryptography",
    "websockets": "websockets",
    "fastapi_sso": "fastapi-sso",
    "mcp": "mcp",
    "semver": "semver",
    "expression": "expression",
    "soundfile": "soundfile",
}
if sys.platform != "win32" and os.environ.get("LITELLM_EVENT_LOOP") != "asyncio":
    PROXY_MODULES["uvloop"] = "uvloop"  # the CLI asks uvicorn for uvloop unless LITELLM_EVENT_LOOP=asyncio

READY_TIMEOUT_S = float(os.environ.get("PAYG_PROXY_READY_TIMEOUT", "90"))

# Env vars that would point the proxy at a database, a master key or a policy we did not choose.
_SCRUBBED_ENV = ("DATABASE_URL", "DIRECT_URL", "LITELLM_MASTER_KEY", "CONFIG_FILE_PATH", "LITELLM_PAYG_POLICY",
                 "STORE_MODEL_IN_DB", "REDIS_HOST", "REDIS_URL")


def warm_up() -> None:
    """Start the zygote's import now, in its own process, so it overlaps the tests collected before
    the first proxy test (called when a test module imports this one, i.e. at collection)."""
    if os.environ.get("PAYG_PROXY_COLD") != "1" and not missing_proxy_modules() and litellm_cli() is not None:
        _zygote(_proxy_env())


def missing_proxy_modules() -> list[str]:
    """Distributions the proxy needs that are not installed (checked without importing them)."""
    return [dist for mod, dist in PROXY_MODULES.items() if importlib.util.find_spec(mod) is None]


def litellm_cli() -> str | None:
    """The ``litellm`` console script of this interpreter's environment."""
    beside = Path(sys.executable).parent / "litellm"
    return str(beside) if beside.exists() else shutil.which("litellm")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunningProxy:
    """One proxy process. ``log()`` is everything it wrote (stdout and stderr)."""

    name: str
    workdir: Path
    port: int
    proc: subprocess.Popen
    log_path: Path
    started_at: float
    ready_after_s: float | None = None
    master_key: str = MASTER_KEY
    _log_file: Any = field(default=None, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> "RunningProxy":
        """Poll ``/health/liveliness`` until 200; fail with the proxy's log if it exits or times out."""
        deadline = self.started_at + timeout
        url = f"{self.base_url}/health/liveliness"
        while True:
            code = self.proc.poll()
            if code is not None:
                raise RuntimeError(f"litellm proxy {self.name!r} exited with {code} before it was ready; log:\n{self.log()}")
            try:
                with urllib.request.urlopen(url, timeout=1) as resp:
                    if resp.status == 200:
                        self.ready_after_s = time.monotonic() - self.started_at
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"litellm proxy {self.name!r} not ready after {timeout:.0f}s; log:\n{self.log()}")
            time.sleep(0.2)

    def wait_for_log(self, text: str, timeout: float = 5.0) -> str:
        """The log once it contains ``text`` (the proxy's loggers write asynchronously to the pipe)."""
        deadline = time.monotonic() + timeout
        while True:
            log = self.log()
            if text in log or time.monotonic() > deadline:
                return log
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            # The CLI runs uvicorn in-process; its own process group holds any helper it spawned.
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=10)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


def start_proxy(
    workdir: Path,
    config: Mapping[str, Any],
    *,
    name: str = "proxy",
    files: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
    cold: bool = False,
) -> RunningProxy:
    """Write ``config`` (a dict; ``general_settings.master_key`` is filled in) and ``files`` into
    ``workdir`` and launch the proxy there; does not wait (call ``wait_ready``).

    The proxy is forked from the session's warm zygote (tests/proxy_zygote.py: the same CLI entry
    point, the import shared) unless ``cold``, ``env`` is given, or ``PAYG_PROXY_COLD=1``: then it is a
    fresh ``litellm --config`` process."""
    cli = litellm_cli()
    if cli is None:
        raise RuntimeError("the `litellm` command is not installed in this environment")
    workdir.mkdir(parents=True, exist_ok=True)
    for rel, text in (files or {}).items():
        (workdir / rel).parent.mkdir(parents=True, exist_ok=True)
        (workdir / rel).write_text(text, encoding="utf-8")
    cfg = dict(config)
    cfg["general_settings"] = {**(cfg.get("general_settings") or {}), "master_key": MASTER_KEY}
    config_path = workdir / "config.yaml"
    config_path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")

    child_env = {**_proxy_env(), **(env or {})}

    port = free_port()
    log_path = workdir / "proxy.log"
    argv = [cli, "--config", str(config_path), "--port", str(port), "--host", "127.0.0.1"]
    if not cold and not env and os.environ.get("PAYG_PROXY_COLD") != "1":
        log_path.touch()
        proc = _zygote(child_env).spawn(argv, workdir, log_path)
        return RunningProxy(name, workdir, port, proc, log_path, time.monotonic())
    log_file = open(log_path, "wb")
    proc = subprocess.Popen(
        argv,
        cwd=workdir,
        env=child_env,
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return RunningProxy(name, workdir, port, proc, log_path, time.monotonic(), _log_file=log_file)


def _proxy_env() -> dict[str, str]:
    """The environment a test proxy starts with: this one, without what would point it elsewhere."""
    child_env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
    child_env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    child_env["PYTHONUNBUFFERED"] = "1"
    return child_env


_ZYGOTE: ProxyZygote | None = None


def _zygote(env: Mapping[str, str]) -> ProxyZygote:
    """The session's warm proxy process (tests/proxy_zygote.py), started on first use."""
    global _ZYGOTE
    if _ZYGOTE is None:
        _ZYGOTE = ProxyZygote(env)
        atexit.register(_ZYGOTE.close)
    return _ZYGOTE


class _ProxyLogReporter:
    """Adds the logs of the module's proxies to the report of a test that failed."""

    def __init__(self, proxies: list[RunningProxy]):
        self.proxies = proxies

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
        outcome = yield
        report = outcome.get_result()
        if report.failed and self.proxies:
            for proxy in self.proxies:
                report.sections.append((f"litellm proxy log: {proxy.name} ({proxy.base_url})", proxy.log()))


def require_proxy_deps() -> None:
    """Skip the calling test when the proxy's requirements are missing, naming them; fail instead
    when ``CI`` is set (a CI job that silently skips the proxy tests proves nothing)."""
    missing = missing_proxy_modules()
    if missing or litellm_cli() is None:
        reason = (
            f"LiteLLM proxy requirements not installed (missing: {', '.join(missing) or 'the litellm command'}); "
            "pip install -e '.[proxy]'"
        )
        if os.environ.get("CI"):
            pytest.fail(reason + " -- CI is set, so this is a failure, not a skip", pytrace=False)
        pytest.skip(reason)


@pytest.fixture(scope="module")
def litellm_proxy_factory(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., RunningProxy]]:
    """``start(config, name=..., files=..., env=...) -> RunningProxy`` (not yet ready)."""
    require_proxy_deps()

    proxies: list[RunningProxy] = []
    reporter = _ProxyLogReporter(proxies)
    plugin_name = f"payg-proxy-log-{id(reporter)}"
    request.config.pluginmanager.register(reporter, plugin_name)

    def start(config: Mapping[str, Any], *, name: str = "proxy", files: Mapping[str, str] | None = None,
              env: Mapping[str, str] | None = None, cold: bool = False) -> RunningProxy:
        proxy = start_proxy(tmp_path_factory.mktemp(f"litellm-proxy-{name}"), config, name=name, files=files,
                            env=env, cold=cold)
        proxies.append(proxy)
        return proxy

    try:
        yield start
    finally:
        for proxy in proxies:
            proxy.stop()
        request.config.pluginmanager.unregister(reporter, plugin_name)


warm_up()
