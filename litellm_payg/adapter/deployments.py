"""The deployments a command reasons about when there is no Router: the ``model_list`` of a LiteLLM
``config.yaml``, or, without one, one deployment per model the policy's routes name.

Shared by ``litellm-payg check``/``explain`` (``cli.py``) and ``simulate``; its own module so the
simulator does not import the command line, which imports the simulator to register its command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def candidates_named_by_policy(engine: Any) -> dict[str, list[Any]]:
    """Without a LiteLLM config, one deployment per model the route's rules name (id = model)."""
    from litellm_payg.stores.prices import candidate_from_deployment

    by_group: dict[str, list[Any]] = {}
    for group, rules in engine.routes.items():
        refs: list[str] = []
        for rule in rules:
            refs += [ref for _, ref in rule.model_refs() if ref not in refs]
        if not refs:
            refs = [m for m in engine.policy.models if m not in refs]
        by_group[group] = [
            candidate_from_deployment(
                {"model_name": group, "litellm_params": {"model": ref}, "model_info": {"id": ref}}, engine.policy.models
            )
            for ref in refs
        ]
    return by_group


def candidates_from_config(config_path: str, policy: Any) -> dict[str, list[Any]]:
    """One candidate per deployment of a LiteLLM ``config.yaml``'s ``model_list``, by group; a
    deployment without ``model_info.id`` gets ``<group>-<index>``, as a Router would give it one."""
    import yaml

    from litellm_payg.core.errors import PolicyError, Problem
    from litellm_payg.stores.prices import candidate_from_deployment

    try:
        config = yaml.safe_load(Path(config_path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise PolicyError([Problem("--config", f"cannot read LiteLLM config: {exc}")], config_path) from None
    model_list = config.get("model_list") if isinstance(config, dict) else None
    if not isinstance(model_list, list):
        raise PolicyError([Problem("model_list", "a LiteLLM config needs a model_list")], config_path)
    by_group: dict[str, list[Any]] = {}
    for i, deployment in enumerate(model_list):
        d = dict(deployment)
        d["model_info"] = {"id": f"{d.get('model_name')}-{i}", **(d.get("model_info") or {})}
        by_group.setdefault(str(d.get("model_name")), []).append(candidate_from_deployment(d, policy.models))
    return by_group
