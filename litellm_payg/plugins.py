"""The plugin manager: built-in rules, entry points, and modules a policy file names.

Every source registers through the same hooks (``hookspecs.py``). Built-ins are registered first and
marked ``trylast`` where order matters, so a user's plugin runs before them without a flag.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

import pluggy

from litellm_payg import hookspecs
from litellm_payg.core.errors import PluginError
from litellm_payg.core.scopes import ScopeKind, ScopeRegistry
from litellm_payg.hook_chain import HookChain

ENTRY_POINT_GROUP = "litellm_payg"

DEFAULT_PLUGINS: tuple[str, ...] = (
    "litellm_payg.default_plugins.scopes",
    "litellm_payg.default_plugins.cost_threshold",
    "litellm_payg.default_plugins.quality_floor",
    "litellm_payg.default_plugins.split",
    "litellm_payg.default_plugins.decision_log",
    "litellm_payg.default_plugins.budget_guard",
    "litellm_payg.default_plugins.budget_alerts",
    "litellm_payg.default_plugins.failover",
    "litellm_payg.policy.validators",
    "litellm_payg.default_plugins.quality_evidence",
)


def make_plugin_manager(extra_modules: Iterable[str] = (), base_dir: Path | None = None) -> pluggy.PluginManager:
    """A fresh manager with the built-ins, the installed entry points and ``extra_modules``.

    Each policy gets its own manager, so two policies loaded in one process (two Routers, or a test
    and the app) do not see each other's plugins.
    """
    pm = pluggy.PluginManager("litellm_payg")
    pm.add_hookspecs(hookspecs)
    for name in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(name), name=name)
    pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    for ref in extra_modules:
        module = load_module(ref, base_dir)
        if pm.is_registered(module):
            continue
        pm.register(module, name=ref)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(
            f"{exc}. Hint: litellm-payg hooks are {', '.join(hook_names())}; check the spelling."
        ) from None
    return pm


def hook_names() -> list[str]:
    return sorted(name for name in dir(hookspecs) if name.startswith("payg_"))


def load_module(ref: str, base_dir: Path | None = None) -> ModuleType:
    """Import a plugin named in a policy: a dotted module name, or a ``.py`` path (relative to the
    policy file's folder)."""
    if ref.endswith(".py") or "/" in ref:
        path = Path(ref)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        if not path.is_file():
            raise PluginError(f"plugin module {ref!r}: no such file {str(path)!r}")
        mod_name = f"litellm_payg_local_plugins.{path.stem}_{abs(hash(str(path.resolve())))}"
        if mod_name in sys.modules:
            return sys.modules[mod_name]
        spec = importlib.util.spec_from_file_location(mod_name, path)
        if spec is None or spec.loader is None:
            raise PluginError(f"plugin module {ref!r}: cannot be loaded from {str(path)!r}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[mod_name]
            raise PluginError(f"plugin module {ref!r} failed to import: {type(exc).__name__}: {exc}") from exc
        return module
    try:
        return importlib.import_module(ref)
    except ImportError as exc:
        raise PluginError(f"plugin module {ref!r} cannot be imported: {exc}") from None


def rule_types(pm: pluggy.PluginManager) -> dict[str, type]:
    """Every rule type the registered plugins offer, by the name a policy file uses.

    ``payg_register_rules`` is called as a chain (``hook_chain.py``), one implementation at a
    time, so the ``register`` each receives knows its plugin and a clash names both plugins."""
    found: dict[str, type] = {}
    owners: dict[str, str] = {}

    for link in HookChain(pm, "payg_register_rules").links():

        def register(rule_class: type, _owner: str = link.name) -> None:
            name = getattr(rule_class, "name", None)
            if not isinstance(name, str) or not hasattr(rule_class, "Options"):
                raise PluginError(f"plugin {_owner}: {rule_class!r} needs a 'name' and an 'Options' model")
            if name == "when":
                raise PluginError(f"plugin {_owner}: 'when' cannot name a rule type: it is a rule entry's condition")
            if name in found and owners[name] != _owner:
                raise PluginError(
                    f"rule type {name!r} is registered twice: by {owners[name]} and by {_owner}"
                )
            found[name] = rule_class
            owners[name] = _owner

        link.call(register=register)
    return found


def scope_registry(pm: pluggy.PluginManager) -> ScopeRegistry:
    """Every scope kind the registered plugins declare (``payg_register_scopes``), as the
    registry a policy reads them from. Called as a chain, like :func:`rule_types`, so a clash
    names both plugins."""
    registry = ScopeRegistry()
    owners: dict[str, str] = {}
    for link in HookChain(pm, "payg_register_scopes").links():

        def register(kind: ScopeKind, _owner: str = link.name) -> None:
            if not isinstance(kind, ScopeKind):
                raise PluginError(f"plugin {_owner}: payg_register_scopes registers a "
                                  f"litellm_payg.core.scopes.ScopeKind, got {kind!r}")
            if kind.name in owners and registry[kind.name] is not kind:
                raise PluginError(f"scope kind {kind.name!r} is registered twice: by {owners[kind.name]} and by {_owner}")
            try:
                registry.add(kind)
            except ValueError as exc:
                raise PluginError(f"plugin {_owner}: {exc}") from None
            owners.setdefault(kind.name, _owner)

        link.call(register=register)
    return registry


_BUILTIN_SCOPES: list[ScopeRegistry] = []


def builtin_scopes() -> ScopeRegistry:
    """The scope kinds the built-in plugins register (no policy's plugins): what a tool that runs
    before any policy is loaded lists (``explain``'s flags, ``simulate``'s traffic fields)."""
    if not _BUILTIN_SCOPES:
        pm = pluggy.PluginManager("litellm_payg")
        pm.add_hookspecs(hookspecs)
        for name in DEFAULT_PLUGINS:
            pm.register(importlib.import_module(name), name=name)
        _BUILTIN_SCOPES.append(scope_registry(pm))
    return _BUILTIN_SCOPES[0]


def describe_plugins(pm: pluggy.PluginManager, include_builtin: bool) -> list[dict[str, object]]:
    """For ``litellm-payg plugins``: each plugin, its hooks, the rule types and the scope kinds it
    registers."""
    registers = HookChain(pm, "payg_register_rules").links()
    scope_registers = HookChain(pm, "payg_register_scopes").links()
    rows = []
    for name, plugin in pm.list_name_plugin():
        builtin = name in DEFAULT_PLUGINS
        if builtin and not include_builtin:
            continue
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or ())
        rules: list[str] = []
        for link in registers:
            if link.impl.plugin is plugin:
                link.call(register=lambda cls: rules.append(cls.name))
        scopes: list[str] = []
        for link in scope_registers:
            if link.impl.plugin is plugin:
                link.call(register=lambda kind: scopes.append(kind.name))
        rows.append({"name": name, "builtin": builtin, "hooks": hooks, "rules": rules, "scopes": scopes})
    return rows
