"""The suite makes no network connection outside 127.0.0.1, and no cassette holds a credential.

A ``sitecustomize.py`` put first on PYTHONPATH of a pytest subprocess patches ``socket.connect`` /
``connect_ex`` / ``getaddrinfo`` / ``create_connection`` to refuse any non-loopback address and
to log each attempt to a file; the test asserts the run passed and the log is empty.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from test_provider_replay import _credential_findings

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "tests" / "sample_user_project"

SITECUSTOMIZE = textwrap.dedent('''
    import ipaddress, os, socket

    _LOG = os.environ["PAYG_NETLOG"]
    _LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}

    def _loopback(host):
        if host is None:
            return True
        if isinstance(host, bytes):
            host = host.decode()
        host = str(host).strip("[]")
        if host in _LOOPBACK_NAMES:
            return True
        try:
            return ipaddress.ip_address(host.split("%")[0]).is_loopback
        except ValueError:
            return False

    def _refuse(what, host, port=None):
        with open(_LOG, "a") as f:
            f.write(f"{what} {host}:{port}\\n")
        raise OSError(f"network blocked by the offline test: {what} {host}:{port}")

    _connect, _connect_ex, _gai = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address[0]):
            _refuse("connect", *address[:2])
        return _connect(self, address)

    def connect_ex(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address[0]):
            _refuse("connect_ex", *address[:2])
        return _connect_ex(self, address)

    def getaddrinfo(host, port, *args, **kwargs):
        if not _loopback(host):
            _refuse("getaddrinfo", host, port)
        return _gai(host, port, *args, **kwargs)

    socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = connect, connect_ex, getaddrinfo
''')


@pytest.fixture
def offline_env(tmp_path):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    log = tmp_path / "netlog.txt"
    log.write_text("")
    env = {**os.environ, "PAYG_NETLOG": str(log), "LITELLM_LOCAL_MODEL_COST_MAP": "True",
           "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")])}
    env.pop("PYTEST_ADDOPTS", None)
    return env, log


def test_the_blocker_blocks(offline_env):
    env, log = offline_env
    code = "import socket\ntry:\n    socket.create_connection(('192.0.2.1', 443), timeout=1)\nexcept OSError as e:\n    print('blocked', e)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert "network blocked" in out.stdout, out.stdout + out.stderr
    assert "192.0.2.1:443" in log.read_text()


def test_representative_suite_runs_offline(offline_env):
    env, log = offline_env
    targets = ["tests/test_provider_replay.py", "tests/test_conformance_spend.py", "tests/test_replay.py",
               "tests/test_budget_enforcement.py::test_500_concurrent_requests_never_overshoot_and_leave_nothing_reserved"]
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *targets],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert log.read_text() == "", f"non-loopback network attempts:\n{log.read_text()}"
    sample = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-c", str(SAMPLE / "pytest.ini"),
         "--rootdir", str(SAMPLE), str(SAMPLE)],
        cwd=SAMPLE, env=env, capture_output=True, text=True, timeout=300,
    )
    assert sample.returncode == 0, sample.stdout[-4000:] + sample.stderr[-2000:]
    assert log.read_text() == "", f"non-loopback network attempts:\n{log.read_text()}"


@pytest.mark.parametrize("folder", ["cassettes", "tests/sample_user_project/cassettes"])
def test_no_credentials_in_cassettes(folder):
    files = sorted((ROOT / folder).rglob("*.yaml"))
    assert files, f"no cassettes under {folder}: this test guards them, so they must exist"
    found = {str(f.relative_to(ROOT)): hits for f in files if (hits := _credential_findings(f.read_text()))}
    assert not found, f"credentials in cassettes: {found}"
