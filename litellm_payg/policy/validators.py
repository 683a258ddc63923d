"""Response validators: is a successful answer actually usable?

A provider can answer HTTP 200 with nothing (empty text), with a cut-off answer (``finish_reason``
``length``; LiteLLM maps Anthropic's ``max_tokens`` and Gemini's ``MAX_TOKENS`` to it) or with text
that is not the JSON the caller needs. The policy's ``validate:`` list names checks over a LiteLLM
``ModelResponse`` (non-streaming, or a stream assembled with ``litellm.stream_chunk_builder``)::

    validate:
      - non_empty
      - finish_reason_not: length          # or a list: [length, content_filter]
      - json_schema: schemas/answer.json   # relative to the policy file's folder

Each validator returns a list of problems (plain sentences; empty when fine). ``check`` raises
:class:`litellm_payg.core.failure.InvalidResponseError`, which ``failures.classify`` reports as
``invalid_response``. This module is also a plugin: its ``payg_validate_response`` implementation
runs the policy's ``validate:`` list.
"""

from __future__ import annotations

import json
import re
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from litellm_payg.policy.failover import FinishReasonNot, JsonSchemaCheck, ValidatorSpec
from litellm_payg import hookimpl
from litellm_payg.core.failure import InvalidResponseError

__all__ = ["Validator", "build_validators", "check", "problems_of", "texts_of"]


@dataclass(frozen=True)
class Validator:
    """A named check: ``fn(response) -> list of problems``."""

    name: str
    fn: Callable[[Any], list[str]]

    def __call__(self, response: Any) -> list[str]:
        return self.fn(response)


# -- reading a ModelResponse (objects or plain dicts) ---------------------------------------------------


def _get(obj: Any, key: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, key, None)


def _choices(response: Any) -> list[Any]:
    return list(_get(response, "choices") or [])


def texts_of(response: Any) -> list[str]:
    """The text content of each choice ("" when it has none)."""
    out = []
    for choice in _choices(response):
        message = _get(choice, "message") or _get(choice, "delta")
        content = _get(message, "content") if message is not None else None
        if isinstance(content, list):  # content parts
            content = "".join(str(_get(p, "text") or "") for p in content)
        out.append(content if isinstance(content, str) else "")
    return out


def _has_tool_calls(choice: Any) -> bool:
    message = _get(choice, "message")
    return bool(message is not None and (_get(message, "tool_calls") or _get(message, "function_call")))


# -- the validators -----------------------------------------------------------------------------------


def non_empty(response: Any) -> list[str]:
    choices = _choices(response)
    if not choices:
        return ["the response has no choices"]
    texts = texts_of(response)
    if any(t.strip() for t in texts) or any(_has_tool_calls(c) for c in choices):
        return []
    return ["empty completion: no text and no tool calls"]


def finish_reason_not(reasons: Sequence[str]) -> Callable[[Any], list[str]]:
    banned = {r.lower() for r in reasons}

    def fn(response: Any) -> list[str]:
        out = []
        for i, choice in enumerate(_choices(response)):
            reason = _get(choice, "finish_reason")
            if isinstance(reason, str) and reason.lower() in banned:
                which = "" if len(_choices(response)) == 1 else f" (choice {i})"
                cut = " (the answer was cut off by the token limit)" if reason.lower() == "length" else ""
                out.append(f"finish_reason is {reason!r}{which}{cut}")
        return out

    return fn


_FENCE = re.compile(r"^\s*```(?:json)?\s*\n(?P<body>.*?)\n?```\s*$", re.DOTALL | re.IGNORECASE)


def json_schema(path: Path, label: str | None = None) -> Callable[[Any], list[str]]:
    """Every choice's text must be JSON (optionally inside one ```json fence) valid against the schema."""
    import jsonschema  # declared dependency of this validator only

    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ValueError(f"json_schema: cannot read {path}: {e}") from e
    except json.JSONDecodeError as e:
        raise ValueError(f"json_schema: {path} is not JSON: {e}") from e
    cls = jsonschema.validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as e:
        raise ValueError(f"json_schema: {path} is not a valid JSON Schema: {e.message}") from e
    validator = cls(schema)
    name = label or str(path)

    def fn(response: Any) -> list[str]:
        out = []
        texts = texts_of(response)
        for i, text in enumerate(texts):
            which = "" if len(texts) == 1 else f" (choice {i})"
            m = _FENCE.match(text)
            body = m.group("body") if m else text
            try:
                value = json.loads(body)
            except json.JSONDecodeError as e:
                out.append(f"not JSON{which}: {e.msg} at line {e.lineno} column {e.colno}")
                continue
            errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
            for err in errors[:3]:
                out.append(f"does not match {name}{which} at {err.json_path}: {err.message}")
            if len(errors) > 3:
                out.append(f"... and {len(errors) - 3} more schema errors")
        return out

    return fn


_SPEC = TypeAdapter(list[ValidatorSpec])


def build_validators(specs: Sequence[Any], base_dir: Path | None = None) -> list[Validator]:
    """Validators from a policy's ``validate:`` list (strings/dicts or parsed ``ValidatorSpec``s).

    Raises ``ValueError`` (pydantic's ``ValidationError`` for a malformed entry) at load time: a
    schema file that is missing or not a JSON Schema fails the policy, not the first request.
    """
    out = []
    for spec in _SPEC.validate_python(list(specs)):
        if spec == "non_empty":
            out.append(Validator("non_empty", non_empty))
        elif isinstance(spec, FinishReasonNot):
            reasons = [spec.finish_reason_not] if isinstance(spec.finish_reason_not, str) else spec.finish_reason_not
            out.append(Validator(f"finish_reason_not: {', '.join(reasons)}", finish_reason_not(reasons)))
        elif isinstance(spec, JsonSchemaCheck):
            path = Path(spec.json_schema)
            if not path.is_absolute() and base_dir is not None:
                path = base_dir / path
            out.append(Validator(f"json_schema: {spec.json_schema}", json_schema(path, spec.json_schema)))
    return out


def problems_of(response: Any, validators: Sequence[Validator]) -> list[str]:
    """Every problem every validator finds (prefixed by the validator's name)."""
    return [f"{v.name}: {p}" for v in validators for p in v(response)]


def check(response: Any, validators: Sequence[Validator], model: str | None = None,
          deployment_id: str | None = None) -> None:
    """Raise :class:`InvalidResponseError` if any validator finds a problem."""
    problems = problems_of(response, validators)
    if problems:
        raise InvalidResponseError(problems, model=model, deployment_id=deployment_id)


# -- as a plugin ----------------------------------------------------------------------------------------

#: validators built from a hand-made policy's ``validate:`` list, by ``id(policy)`` (dropped with it)
_BUILT: dict[int, list[Validator]] = {}


def validators_for(policy: Any) -> list[Validator]:
    """The validators of a policy: ``policy.validators`` when the loader built them (preferred: a
    bad schema then fails the load with file and line), else built from ``policy.validate``,
    relative paths resolved against ``policy.base_dir`` or the policy file's folder, once per
    policy that can be weakly referenced (a ``SimpleNamespace`` cannot: built on each call)."""
    ready = getattr(policy, "validators", None)
    if ready is not None:
        return list(ready)
    built = _BUILT.get(id(policy))
    if built is None:
        specs = getattr(policy, "validate", None) or []
        base_dir = getattr(policy, "base_dir", None)
        source = getattr(policy, "source", None)
        if base_dir is None and isinstance(source, str) and source and not source.startswith("<"):
            base_dir = Path(source).resolve().parent
        built = build_validators(specs, base_dir)
        try:
            weakref.finalize(policy, _BUILT.pop, id(policy), None)
        except TypeError:  # not weakly referenceable: no way to know when its id is reused
            return built
        _BUILT[id(policy)] = built
    return built


# Registered as a built-in plugin (``plugins.DEFAULT_PLUGINS``) once hookspecs.py declares the hook.
@hookimpl
def payg_validate_response(response, policy):
    return problems_of(response, validators_for(policy)) or None
