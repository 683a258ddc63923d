"""Calling a hook as a chain: one pluggy call per implementation, in pluggy's order.

Most hooks are broadcasts: ``pm.hook.payg_decision(...)`` gives every implementation the same
arguments. Two call sites need a chain instead: each ``payg_filter_candidates`` implementation
must see the candidates the previous one kept, and ``payg_register_rules`` must know which plugin
registered each rule type (to name both owners of a clash). Those sites used to loop over
``get_hookimpls()`` and call ``impl.function(...)`` themselves, which bypassed pluggy: an
implementation taking a subset of the arguments got a TypeError, a ``wrapper=True`` generator was
used as the result, and tracing and ``add_hookcall_monitoring`` saw nothing.

How: each *link* is one non-wrapper implementation together with every wrapper of the hook, and
calling a link hands that list to the hook's executor, ``HookCaller._hookexec`` - the function
every pluggy hook call ends in (``pm.hook.x(...)``, ``subset_hook_caller``, ``call_extra``), and
the one tracing and monitoring replace. So, exactly as for a broadcast call:

* argument subsets work: pluggy passes each implementation the arguments it names;
* the links follow the order pluggy calls implementations in: ``tryfirst`` ones, then plain ones
  (last registered first), then ``trylast`` ones (first registered first);
* wrappers (``wrapper=True`` or ``hookwrapper=True``) are part of every link, so a wrapper wraps
  each implementation's call: it sees that link's result list (``[]`` or ``[Step]``), or its
  exception, and may replace it;
* tracing (``pm.trace.root.setwriter`` + ``pm.enable_tracing()``) and ``add_hookcall_monitoring``
  see one call per link, naming the implementations it ran.

Why this and not the alternatives: ``pm.subset_hook_caller`` (the public way to call a hook on some
plugins) works per *plugin*, not per implementation, so a plugin's wrapper would be missing from
the other plugins' links, and it measured 5-8x slower per link (a decision makes two or three of
these calls on every pick); a spec that returns a function applied in order would break every
filter plugin already written; one broadcast call would give every filter the same candidates,
which the hook reference promises it does not. ``_hookexec`` is a private attribute, but a stable
one (pluggy's own ``_SubsetHookCaller`` is built on it since 0.x); ``tests/test_hook_calls.py``
fails if a pluggy release changes it. What ``HookCaller.__call__`` adds before it (spec defaults,
a warning for a missing argument) has nothing to do here: both call sites pass every argument
their spec names, and ``HookChain`` refuses ``firstresult`` and historic hooks.

Links are built once per set of registered implementations and rebuilt when a plugin is
registered or unregistered (compared on every call: a short list of identities).

**Calls nobody hears.** An implementation may say when it does nothing: :func:`silent_when` gives it
a predicate of the call's keyword arguments, true when the call would return None and change
nothing (the decision log below INFO, the failover filter of a policy without ``failover:``). A
link whose implementation is silent for a call is skipped (``Link.silent``), and a broadcast whose
every implementation is (:class:`Broadcast`) is not made: each saves a pluggy call on every pick and
every what-if row. Never while anything watches the calls (``add_hookcall_monitoring``, tracing: the
plugin manager then runs another executor than pluggy's own), never for a link with a wrapper, and
only for implementations that carry a predicate: a plugin registered later is called as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable

import pluggy

try:  # pluggy's own executor: a plugin manager with monitoring or tracing on runs another one
    from pluggy._callers import _multicall as _PLUGGY_MULTICALL
except ImportError:  # another pluggy layout: every call is made
    _PLUGGY_MULTICALL = None

#: the attribute :func:`silent_when` sets on a hook implementation
SILENT = "payg_silent_when"


def silent_when(predicate: Callable[[dict[str, Any]], bool]) -> Callable[[Any], Any]:
    """Mark a hook implementation as doing nothing (returning None, changing nothing) for a call
    whose keyword arguments ``predicate`` is true of. Cheap, and exact: a call it says is silent
    may be skipped (see the module docstring)."""

    def mark(function: Any) -> Any:
        setattr(function, SILENT, predicate)
        return function

    return mark


def unwatched(pm: pluggy.PluginManager) -> bool:
    """No monitoring or tracing replaced pluggy's executor: a skipped call would be seen by nobody."""
    return _PLUGGY_MULTICALL is not None and getattr(pm, "_inner_hookexec", None) is _PLUGGY_MULTICALL


@dataclass(frozen=True)
class Link:
    """One implementation's turn in a chained hook call."""

    impl: pluggy.HookImpl
    #: the implementation, then every wrapper of the hook, in the order pluggy's executor expects
    methods: tuple[pluggy.HookImpl, ...]
    hook_name: str
    execute: Callable[..., Any]
    #: the implementation's :func:`silent_when` predicate when the link has no wrapper, else None
    silent: Callable[[dict[str, Any]], bool] | None = None

    @property
    def name(self) -> str:
        """The plugin's registered name, for messages."""
        return self.impl.plugin_name

    def call(self, **kwargs: Any) -> list[Any]:
        """Run this link as a pluggy hook call: the implementation's non-None results, as wrapped."""
        return self.execute(self.hook_name, self.methods, kwargs, False)


def _is_wrapper(impl: pluggy.HookImpl) -> bool:
    return bool(impl.wrapper or impl.hookwrapper)


class HookChain:
    """The links of one hook of one plugin manager, in the order pluggy would call them."""

    def __init__(self, pm: pluggy.PluginManager, hook_name: str):
        self.hook_name = hook_name
        self.pm = pm
        self._hook: pluggy.HookCaller = getattr(pm.hook, hook_name)
        spec = self._hook.spec
        if spec is not None and (spec.opts.get("firstresult") or spec.opts.get("historic")):
            raise ValueError(f"{hook_name} is firstresult or historic: it cannot be called as a chain")
        self._built_for: list[pluggy.HookImpl] = []
        self._links: list[Link] = []

    def links(self) -> list[Link]:
        impls = getattr(self._hook, "_hookimpls", None)  # pluggy's own list (get_hookimpls copies it on every call)
        if impls is None:
            impls = self._hook.get_hookimpls()
        if impls != self._built_for:  # HookImpl has no __eq__: compares identities
            self._links = self._build(impls)
            self._built_for = list(impls)
        return self._links

    def _build(self, impls: Sequence[pluggy.HookImpl]) -> list[Link]:
        # get_hookimpls() lists plain implementations first, then wrappers; pluggy's executor runs
        # the list in reverse (wrappers first, then the plain ones from the end of the list)
        wrappers = tuple(impl for impl in impls if _is_wrapper(impl))
        execute = self._hook._hookexec
        return [
            Link(impl, (impl, *wrappers), self.hook_name, execute, None if wrappers else getattr(impl.function, SILENT, None))
            for impl in reversed(impls)
            if not _is_wrapper(impl)
        ]


class Broadcast:
    """A broadcast hook call (``pm.hook.<name>(**kwargs)``) that is not made when every
    implementation is silent for it (:func:`silent_when`) and nothing watches the calls."""

    def __init__(self, pm: pluggy.PluginManager, hook_name: str):
        self.pm = pm
        self._hook: pluggy.HookCaller = getattr(pm.hook, hook_name)
        self._built_for: list[pluggy.HookImpl] = []
        self._silent: tuple[Callable[[dict[str, Any]], bool], ...] | None = ()

    def __call__(self, **kwargs: Any) -> list[Any] | None:
        impls = getattr(self._hook, "_hookimpls", None)  # pluggy's own list (get_hookimpls copies it on every call)
        if impls is None:
            impls = self._hook.get_hookimpls()
        if impls != self._built_for:  # HookImpl has no __eq__: compares identities
            preds = tuple(getattr(impl.function, SILENT, None) for impl in impls)
            wrapped = any(_is_wrapper(impl) for impl in impls)
            self._silent = None if wrapped or None in preds else preds
            self._built_for = list(impls)
        silent = self._silent
        # unwatched(self.pm), inlined: every pick's observers pass here
        if (silent is not None and _PLUGGY_MULTICALL is not None
                and getattr(self.pm, "_inner_hookexec", None) is _PLUGGY_MULTICALL):
            for predicate in silent:
                if not predicate(kwargs):
                    break
            else:
                return []  # what pluggy returns when every implementation returned None
        return self._hook(**kwargs)


__all__ = ["Broadcast", "HookChain", "Link", "silent_when", "unwatched"]
