"""The user docs as the tests read them: the README (the quick start, the proxy line, the Router
snippet) and the reference in ``docs/`` (MkDocs pages). A test that checks what the docs say looks a
section up by its title wherever it lives, so moving a section between pages does not break it."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_FENCE = re.compile(r"^(```|~~~)")
_HEADING = re.compile(r"^(#{1,6}) (.*)$")


def files() -> list[Path]:
    """README.md, then every page under docs/ (in name order), then bench/README.md."""
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "bench" / "README.md"]


def names() -> list[str]:
    return [str(p.relative_to(REPO)) for p in files()]


def text() -> str:
    """All of the user docs, one after the other."""
    return "\n".join(p.read_text(encoding="utf-8") for p in files())


def section(title: str) -> str:
    """The body of the first heading titled ``title`` (any level, any page), up to the next heading
    of the same or a higher level: its subsections included. Fails loudly when no heading has it."""
    for path in files():
        lines = path.read_text(encoding="utf-8").splitlines()
        fence = False
        start = level = None
        for i, line in enumerate(lines):
            if _FENCE.match(line):
                fence = not fence
            m = None if fence else _HEADING.match(line)
            if m is None:
                continue
            if start is None and m.group(2).strip() == title:
                start, level = i + 1, len(m.group(1))
            elif start is not None and len(m.group(1)) <= level:
                return "\n".join(lines[start:i])
        if start is not None:
            return "\n".join(lines[start:])
    raise AssertionError(f"no heading {title!r} in the user docs ({', '.join(names())})")
