"""Start test proxies from one warm process instead of cold ``litellm`` commands.

Why: importing LiteLLM's proxy takes about 8 s of CPU, and the suite starts some thirty proxies; on
a 2-core machine that import was a quarter of the suite's time. A *zygote* process imports
``litellm.proxy.proxy_server`` once; each proxy is then a ``fork()`` of it that runs the very code the
``litellm`` console script runs (the installed ``litellm`` console script's entry point with the same argv), in its own
session, working directory and log file. The proxy served is the real one, from the same CLI entry
point; only the import is shared. ``run_server`` imports ``proxy_server`` before it applies any log
config, so the order of startup is the one a cold start has.

Everything a test can vary (the config file, files beside it) is read after the fork. The environment
is fixed when the zygote starts (tests do not pass one; ``start_proxy`` with ``env=`` starts cold), and
LiteLLM reads some variables at import, which is why a proxy with its own environment never forks.

``PAYG_PROXY_COLD=1`` turns the zygote off (every proxy a cold ``litellm --config``); one test in
``tests/test_proxy.py`` always starts cold, so the console script itself stays tested.

The zygote runs this file as a script: it reads one JSON request a line on stdin
(``{"argv": [...], "cwd": ..., "log": ..., "exit_file": ...}``) and answers ``{"pid": N}``. It imports
nothing of the plugin: the proxy imports ``litellm_payg`` from its config, after the fork, as it would.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Callable, Mapping


class ForkedProxyProcess:
    """The part of ``subprocess.Popen`` that ``RunningProxy`` uses, for a process this one did not fork.

    The zygote is its parent, so the exit status comes from a file the child writes as it exits (a
    proxy killed by a signal writes none: ``returncode`` is then ``-1``), and the wait from a pidfd.
    """

    def __init__(self, pid: int, exit_file: Path):
        self.pid = pid
        self.returncode: int | None = None
        self._exit_file = exit_file
        self._pidfd = os.pidfd_open(pid)

    def _exited(self, timeout: float) -> bool:
        if self.returncode is not None:
            return True
        ready, _, _ = select.select([self._pidfd], [], [], timeout)
        if not ready:
            return False
        try:
            self.returncode = int(self._exit_file.read_text())
        except (OSError, ValueError):
            self.returncode = -1
        os.close(self._pidfd)
        return True

    def poll(self) -> int | None:
        return self.returncode if self._exited(0) else None

    def wait(self, timeout: float | None = None) -> int:
        if not self._exited(timeout if timeout is not None else 1e9):
            raise subprocess.TimeoutExpired(f"proxy pid {self.pid}", timeout or 0)
        return self.returncode  # type: ignore[return-value]


class ProxyZygote:
    """One warm process per test session; ``spawn`` forks a proxy from it."""

    def __init__(self, env: Mapping[str, str]):
        self._lock = threading.Lock()
        self._proc = subprocess.Popen(
            [sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=dict(env),
            text=True, bufsize=1, start_new_session=True,
        )
        self._ready = False

    def _read(self) -> dict:
        line = self._proc.stdout.readline() if self._proc.stdout else ""
        if not line:
            raise RuntimeError(f"the proxy zygote exited ({self._proc.poll()}); run with PAYG_PROXY_COLD=1 to compare")
        return json.loads(line)

    def spawn(self, argv: list[str], cwd: Path, log_path: Path) -> ForkedProxyProcess:
        exit_file = cwd / ".proxy-exit-status"
        with self._lock:
            if not self._ready:
                assert self._read() == {"ready": True}
                self._ready = True
            assert self._proc.stdin is not None
            self._proc.stdin.write(json.dumps({"argv": argv, "cwd": str(cwd), "log": str(log_path),
                                               "exit_file": str(exit_file)}) + "\n")
            pid = self._read()["pid"]
        return ForkedProxyProcess(pid, exit_file)

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(10)


def _console_script() -> "Callable[[], object]":
    """What the installed ``litellm`` command calls (``litellm_cli.main:proxy_server`` on 1.110,
    ``litellm:run_server`` on 1.100): its console-script entry point, loaded as the script does."""
    from importlib.metadata import entry_points

    (script,) = entry_points(group="console_scripts", name="litellm")
    return script.load()


def _serve() -> None:  # pragma: no cover - runs in the zygote process
    import litellm.proxy.proxy_server  # noqa: F401  (the import every proxy shares)

    proxy_server = _console_script()

    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid:
            print(json.dumps({"pid": pid}), flush=True)
            continue
        status = 1
        try:
            os.setsid()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(log, 1)
            os.dup2(log, 2)
            os.chdir(request["cwd"])
            sys.stdin = open(os.devnull)
            sys.argv = list(request["argv"])
            try:
                proxy_server()
                status = 0
            except SystemExit as exit_:
                status = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
            except BaseException:
                import traceback

                traceback.print_exc()
                status = 1
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
                Path(request["exit_file"]).write_text(str(status))
            finally:
                os._exit(status)


if __name__ == "__main__":
    _serve()
