"""The supported LiteLLM range is declared once in spirit: pyproject, litellm_versions and both_ends.sh agree."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from litellm_payg.adapter import litellm_versions as lv

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_declares_the_range_litellm_versions_names():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    litellm = [d for d in deps if re.match(r"litellm\b", d)]
    assert litellm == ["litellm" + lv.SUPPORTED]


def test_both_ends_tests_the_floor_of_the_range():
    script = (ROOT / "tests" / "both_ends.sh").read_text()
    assert f'OLDEST_LITELLM="{".".join(map(str, lv.OLDEST))}"' in script


@pytest.mark.parametrize("release,supported", [
    ("1.99.4", False), ("1.100.0", True), ("1.104.0", True), ("1.106.12", True), ("1.107.0", False),
    ("1.107.0rc2", False), ("1.108.0", True), ("1.110.2", True), ("1.111.0", False),
])
def test_is_supported(release, supported):
    assert lv.is_supported(release) is supported


def test_version_tuple_drops_suffixes():
    assert lv.version_tuple("1.107.0rc2") == (1, 107, 0)
    assert lv.version_tuple("1.74.15.post2") == (1, 74, 15)
    assert lv.version_tuple("1.110") == (1, 110, 0)


def test_the_installed_release_is_supported_and_described():
    assert lv.is_supported(), lv.litellm_version()
    assert lv.describe().startswith(f"LiteLLM {lv.litellm_version()}; ")
    assert lv.price_map()["source"] in ("bundled", "remote")


def test_request_has_image_answers_as_litellm_does_with_plain_text_told_without_it():
    """The Router's vision check reads ``request_contains_image_content``; plain text messages are
    answered without it (it validates the whole list on every pick), everything else by it."""
    from litellm.litellm_core_utils.prompt_templates.common_utils import request_contains_image_content

    from litellm_payg.adapter.litellm_versions import request_has_image

    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    cases = [
        [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        [{"role": "user", "content": [{"type": "text", "text": "what is this?"}, image]}],
        [{"role": "user", "content": [{"type": "text", "text": "no picture"}]}],
        [{"role": "user", "content": "look"}, {"type": "function_call_output", "call_id": "c", "output": [
            {"type": "input_image", "image_url": "data:image/png;base64,AAAA"}]}],
        [{"role": "user", "content": "plain", "output": "text"}],
    ]
    for messages in cases:
        assert request_has_image(messages, {}) == bool(request_contains_image_content(messages)), messages
    assert request_has_image(None, {"input": cases[3]}) == bool(request_contains_image_content(cases[3]))
    assert request_has_image(cases[1], {}) and not request_has_image(cases[0], {})
