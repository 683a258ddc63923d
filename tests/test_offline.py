"""The suite makes no network connection outside 127.0.0.1, and no cassette holds a credential.

The whole suite runs behind ``tests/offline_guard/sitecustomize.py``: conftest installs it in the test
process and puts it first on ``PYTHONPATH`` for every Python subprocess (proxy, CLI, the sample user
project's pytest), and fails the session if any non-loopback connection was attempted. These tests
check that the guard is really in place, here and in a subprocess, so the session check cannot pass
by not guarding.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from test_provider_replay import _credential_findings

ROOT = Path(__file__).resolve().parents[1]
GUARD_DIR = ROOT / "tests" / "offline_guard"
PROBE = ("192.0.2.1", 443)  # TEST-NET-1: never routable, so even an unguarded attempt goes nowhere


@pytest.fixture
def redirected_netlog(tmp_path, monkeypatch):
    """Send this test's (deliberate) attempts to its own log, not the session's."""
    log = tmp_path / "netlog.txt"
    log.write_text("")
    monkeypatch.setenv("PAYG_NETLOG", str(log))
    return log


def test_this_process_is_guarded(redirected_netlog, pytestconfig):
    assert pytestconfig.getoption("--record-mode") == "none", "the suite runs with --record-mode=none: guarded"
    assert getattr(socket, "_payg_offline_guard", None), "conftest did not install the network guard"
    with pytest.raises(OSError, match="network blocked by the test suite"):
        socket.create_connection(PROBE, timeout=1)
    with pytest.raises(OSError, match="network blocked"):
        socket.getaddrinfo("api.openai.com", 443)
    assert "192.0.2.1:443" in redirected_netlog.read_text()
    assert "api.openai.com:443" in redirected_netlog.read_text()


def test_loopback_is_allowed(redirected_netlog):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        socket.create_connection(server.getsockname(), timeout=1).close()
    assert redirected_netlog.read_text() == ""


def test_subprocesses_are_guarded(redirected_netlog):
    code = ("import socket\ntry:\n    socket.create_connection(('192.0.2.1', 443), timeout=1)\n"
            "except OSError as e:\n    print('refused:', e)")
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ), capture_output=True, text=True, timeout=60)
    assert "network blocked by the test suite" in out.stdout, out.stdout + out.stderr
    assert str(GUARD_DIR) in os.environ["PYTHONPATH"].split(os.pathsep)
    assert "192.0.2.1:443" in redirected_netlog.read_text()


@pytest.mark.parametrize("folder", ["cassettes", "tests/sample_user_project/cassettes"])
def test_no_credentials_in_cassettes(folder):
    files = sorted((ROOT / folder).rglob("*.yaml"))
    assert files, f"no cassettes under {folder}: this test guards them, so they must exist"
    found = {str(f.relative_to(ROOT)): hits for f in files if (hits := _credential_findings(f.read_text()))}
    assert not found, f"credentials in cassettes: {found}"
