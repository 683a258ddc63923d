"""The reference in ``docs/`` builds with MkDocs in strict mode (a broken link, a missing anchor, a
page missing from the nav or a nav entry without a page fails), and every relative link in the
README reaches a file, and an anchor, that exist. Under CI a missing MkDocs fails instead of skipping."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import user_docs

REPO = user_docs.REPO
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _mkdocs() -> list[str]:
    try:
        import mkdocs  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("MkDocs is not installed (the test extra has it): the docs cannot be checked")
        pytest.skip("MkDocs is not installed: pip install -e '.[test]'")
    return [sys.executable, "-m", "mkdocs"]


def test_the_docs_build_in_strict_mode(tmp_path: Path) -> None:
    result = subprocess.run([*_mkdocs(), "build", "--strict", "--site-dir", str(tmp_path / "site")], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "budgets" / "index.html").exists()


def test_strict_mode_fails_on_a_broken_link(tmp_path: Path) -> None:
    """The check can fail: a copy of the docs with one link to a page that does not exist."""
    copy = tmp_path / "repo"
    shutil.copytree(REPO / "docs", copy / "docs")
    shutil.copy(REPO / "mkdocs.yml", copy / "mkdocs.yml")
    with (copy / "docs" / "cli.md").open("a", encoding="utf-8") as page:
        page.write("\nSee [the missing page](no-such-page.md#nowhere).\n")
    result = subprocess.run([*_mkdocs(), "build", "--strict", "--site-dir", str(tmp_path / "site")], cwd=copy,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "no-such-page.md" in result.stdout + result.stderr


def _anchors(path: Path) -> set[str]:
    found, fence = set(), False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith(("```", "~~~")):
            fence = not fence
        if not fence and (m := re.match(r"^#{1,6} (.*)$", line)):
            title = re.sub(r"[`*_]", "", m.group(1)).strip().lower()
            found.add(re.sub(r" ", "-", re.sub(r"[^\w\- ]", "", title)))
    return found


def test_every_readme_link_resolves() -> None:
    readme = REPO / "README.md"
    broken = []
    for target in _LINK.findall(readme.read_text(encoding="utf-8")):
        if re.match(r"^[a-z]+:", target):
            continue  # https://, mailto:
        path, _, anchor = target.partition("#")
        file = readme if not path else (REPO / path)
        if not file.exists():
            broken.append(f"{target}: no file {path}")
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            broken.append(f"{target}: no heading #{anchor} in {path or 'README.md'}")
    assert not broken, "README links that go nowhere:\n" + "\n".join(broken)


def test_the_readme_is_what_a_newcomer_needs() -> None:
    """The README keeps to the quick start, the proxy line, the Router snippet and links into docs/."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) < 250, "the reference belongs in docs/, not the README"
    for needed in ("## Quick start", "litellm_payg.proxy_handler", "litellm_payg.attach(router", "docs/budgets.md"):
        assert needed in text, needed
