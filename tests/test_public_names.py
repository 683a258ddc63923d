"""Every name the README tells a user to write resolves: the proxy's one line (and its old
spelling, with a deprecation warning), the imports and dotted names in its code blocks, and the
package's entry points. A module that moves must not break a config or a script written from the
README (the handler's move to ``litellm_payg.adapter.proxy`` once did: "Could not import handler")."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import user_docs

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

#: the proxy line, loaded the way LiteLLM's proxy loads ``litellm_settings.callbacks`` entries
_LOAD = r"""
import json, sys, warnings
from litellm.proxy.types_utils.utils import get_instance_fn
from litellm_payg.adapter.proxy import ProxyPaygRouting
warnings.simplefilter("always")
out = {}
for line in sys.argv[1:]:
    with warnings.catch_warnings(record=True) as seen:
        instance = get_instance_fn(value=line, config_file_path=sys.argv[0])
    out[line] = {"type": type(instance).__name__, "id": id(instance), "handler": isinstance(instance, ProxyPaygRouting),
                 "warnings": [f"{w.category.__name__}: {w.message}" for w in seen if "litellm-payg" in str(w.message)]}
print(json.dumps(out))
"""


def _load_callbacks(tmp_path: Path, *lines: str) -> dict:
    policy = tmp_path / "payg-policy.yaml"
    policy.write_text("version: 1\nledger: memory://\n")
    result = subprocess.run([sys.executable, "-c", _LOAD, *lines], capture_output=True, text=True, timeout=120,
                            cwd=tmp_path, env={**__import__("os").environ, "LITELLM_PAYG_POLICY": str(policy),
                                              "LITELLM_LOCAL_MODEL_COST_MAP": "True"})
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_proxy_line_and_its_old_spelling_load_one_handler(tmp_path):
    loaded = _load_callbacks(tmp_path, "litellm_payg.proxy_handler", "litellm_payg.proxy.handler")
    new, old = loaded["litellm_payg.proxy_handler"], loaded["litellm_payg.proxy.handler"]
    assert new["handler"] and new["warnings"] == [], new
    assert old["handler"] and old["id"] == new["id"], "the old line must load the same handler"
    assert old["warnings"] and "DeprecationWarning" in old["warnings"][0], old
    assert "litellm_payg.proxy_handler" in old["warnings"][0], "the warning names the line to write instead"


def test_the_readme_writes_the_permanent_proxy_line():
    text = user_docs.text()
    lines = re.findall(r'callbacks:\s*\[([^\]]*)\]', text)
    named = {name.strip().strip("'\"") for line in lines for name in line.split(",")}
    payg = {name for name in named if name.startswith("litellm_payg")}
    assert payg == {"litellm_payg.proxy_handler"}, payg


def _code_blocks(text: str) -> list[str]:
    return re.findall(r"^```[a-zA-Z]*\n(.*?)^```", text, flags=re.S | re.M)


def _dotted_names(text: str) -> set[str]:
    names: set[str] = set()
    for block in _code_blocks(text):
        for line in block.splitlines():
            m = re.match(r"\s*from\s+(litellm_payg[\w.]*)\s+import\s+(.+)", line)
            if m:
                for attr in m.group(2).strip("() ").split(","):
                    attr = attr.split(" as ")[0].strip()
                    if attr and attr.isidentifier():
                        names.add(f"{m.group(1)}.{attr}")
                continue
            names.update(re.findall(r"(?<![\w/])(litellm_payg(?:\.[A-Za-z_]\w*)+)", line))
    return names


def _resolve(dotted: str) -> object:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(dotted)


def test_every_dotted_name_in_the_readmes_code_blocks_resolves():
    names = _dotted_names(user_docs.text())
    assert "litellm_payg.proxy_handler" in names and len(names) >= 3, names
    missing = []
    for name in sorted(names - {"litellm_payg.proxy_handler"}):  # the handler: loaded in a subprocess above
        try:
            _resolve(name)
        except (ImportError, AttributeError) as exc:
            missing.append(f"{name}: {exc}")
    assert not missing, "README names that do not resolve:\n" + "\n".join(missing)


def test_the_entry_points_resolve():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    targets = list(project["scripts"].values()) + [
        target for group in project.get("entry-points", {}).values() for target in group.values()]
    assert targets, "pyproject declares no entry points"
    for target in targets:
        module, _, attr = target.partition(":")
        obj = importlib.import_module(module)
        if attr:
            assert callable(getattr(obj, attr)), target


def test_a_name_that_does_not_exist_is_reported():
    """The checker itself: a misspelled name fails to resolve (so the test above can fail)."""
    with pytest.raises((ImportError, AttributeError)):
        _resolve("litellm_payg.proxy_handlr")
    with pytest.raises((ImportError, AttributeError)):
        _resolve("litellm_payg.adapter.proxy.nothing_here")
