"""The sample user project (tests/sample_user_project/) passes as its own pytest root, using only the
pytest plugin's public fixtures (loaded with -p, as the pytest11 entry point would)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SAMPLE = Path(__file__).resolve().parent / "sample_user_project"


def run_sample(extra_env: dict[str, str] | None = None, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", **(extra_env or {})}
    env.pop("PYTEST_ADDOPTS", None)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(SAMPLE / "pytest.ini"),
         "--rootdir", str(SAMPLE), str(SAMPLE), "-q", *args],
        capture_output=True, text=True, env=env, timeout=300, cwd=str(SAMPLE),
    )


def test_sample_project_passes():
    result = run_sample()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 passed" in result.stdout, result.stdout


def test_sample_project_fails_when_the_cheaper_policy_is_not_cheaper(tmp_path):
    # The sample's assertion can fail: swap the policies' roles and it must.
    (tmp_path / "cassettes").symlink_to(SAMPLE / "cassettes")
    for name in ("config.yaml", "pytest.ini", "conftest.py", "test_policy_cost.py"):
        (tmp_path / name).write_text((SAMPLE / name).read_text())
    (tmp_path / "policy_v1.yaml").write_text((SAMPLE / "policy_v2.yaml").read_text())
    (tmp_path / "policy_v2.yaml").write_text((SAMPLE / "policy_v1.yaml").read_text())
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(tmp_path / "pytest.ini"),
         "--rootdir", str(tmp_path), str(tmp_path), "-q", "-k", "recorded_traffic"],
        capture_output=True, text=True, env=env, timeout=300, cwd=str(tmp_path),
    )
    assert result.returncode == 1 and "1 failed" in result.stdout, result.stdout + result.stderr
