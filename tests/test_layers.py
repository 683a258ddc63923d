"""The package's import graph has no cycle.

The graph is read statically (``ast``), not by importing: every ``import`` and ``from ... import``
statement in ``litellm_payg/**/*.py`` counts, wherever it is written — at module level, inside a
function (a deferred import is still a dependency, only a later one), or under
``if TYPE_CHECKING:`` (a type-only import still says which module knows about which). A cycle means
two modules cannot be understood, tested or moved apart; the failure names every module on it.

What does not count: importing a submodule does not add an edge to its parent package's
``__init__`` (Python runs it, but every submodule would then depend on it and a re-exporting
``__init__`` would be a cycle by construction), and ``importlib.import_module("...")`` strings (the
plugin registry's ``DEFAULT_PLUGINS``, the package root's lazy names) are data, not imports.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = "litellm_payg"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__.py``)."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute name a (possibly relative) ``from`` target refers to, seen from ``module``."""
    if level == 0:
        return target or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def _known(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of ``name`` that is a module of the package (``a.b.C`` -> ``a.b``)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def imports_of_node(module: str, path: Path, node: ast.AST, modules: dict[str, Path] | None = None) -> set[str]:
    """The package modules one ``import`` statement of ``module`` imports."""
    modules = modules if modules is not None else module_files()
    edges: set[str | None] = set()
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name.split(".")[0] == PACKAGE:
                edges.add(_known(alias.name, modules))
    elif isinstance(node, ast.ImportFrom):
        base = _resolve(module, path.name == "__init__.py", node.level, node.module)
        if base.split(".")[0] == PACKAGE:
            for alias in node.names:
                # `from pkg import sub` imports the submodule; `from pkg import name` the package
                sub = f"{base}.{alias.name}"
                edges.add(sub if sub in modules else _known(base, modules))
    edges.discard(None)
    edges.discard(module)
    return edges  # type: ignore[return-value]


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules ``module`` imports, anywhere in its source."""
    edges: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        edges |= imports_of_node(module, path, node, modules)
    return edges


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    modules = module_files(root)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan), as a path
    ``[a, b, ..., a]`` through the graph, so a failure shows which import closes it."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_path_through(sorted(c), graph, c) for c in components]


def _path_through(members: list[str], graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest cycle from the component's first module back to itself (breadth-first)."""
    start = members[0]
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & component):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start] + path[::-1][1:] + [start] if v != start else [start, start]
                if w not in previous:
                    previous[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle through {start} in {members}")  # pragma: no cover


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    found = cycles(graph)
    assert not found, "import cycles in litellm_payg (a -> b: a imports b):\n" + "\n".join(
        "  " + " -> ".join(c) + _where(c, graph) for c in found
    )


def _where(cycle: list[str], graph: dict[str, set[str]]) -> str:
    """Where each import of the cycle is written, so the failure says which lines to change."""
    lines = []
    for a, b in zip(cycle, cycle[1:]):
        path = module_files()[a]
        stmt = next(
            (n.lineno for n in ast.walk(ast.parse(path.read_text()))
             if isinstance(n, (ast.Import, ast.ImportFrom)) and b in imports_of_node(a, path, n)),
            None,
        )
        lines.append(f"\n      {path.relative_to(ROOT.parent)}:{stmt} imports {b}")
    return "".join(lines)


def importers_of(prefix: str, graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Who imports a module under ``prefix``, from outside ``prefix``: ``{importer: {imported}}``."""
    inside = lambda name: name == prefix or name.startswith(prefix + ".")  # noqa: E731
    return {
        m: {t for t in targets if inside(t)}
        for m, targets in graph.items()
        if not inside(m) and any(inside(t) for t in targets)
    }


def test_default_plugins_are_registered_by_name_and_imported_by_no_other_module():
    """A built-in plugin is a leaf, like a third-party one: the plugin manager loads it by name
    (``plugins.DEFAULT_PLUGINS``), so unregistering it removes its behaviour entirely. Code that
    the request path calls directly (``next_hop.plan_next``) lives outside ``default_plugins``."""
    assert importers_of(f"{PACKAGE}.default_plugins", import_graph()) == {}


def default_plugin_modules(root: Path = ROOT) -> list[Path]:
    """The built-in plugins: every module ``plugins.DEFAULT_PLUGINS`` registers (read from its
    source, not imported) and every module under ``default_plugins/``."""
    tree = ast.parse((root / "plugins.py").read_text())
    names = next(ast.literal_eval(node.value) for node in ast.walk(tree)
                 if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", None) == "DEFAULT_PLUGINS")
    modules = module_files(root)
    found = {modules[name] for name in names}
    found.update(path for name, path in modules.items() if name.startswith(f"{PACKAGE}.default_plugins."))
    return sorted(found)


def _is_hookimpl(decorator: ast.expr) -> bool:
    """``@hookimpl``, ``@litellm_payg.hookimpl``, and either called (``@hookimpl(trylast=True)``)."""
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    return (target.id if isinstance(target, ast.Name) else target.attr if isinstance(target, ast.Attribute)
            else None) == "hookimpl"


def engine_parameters(path: Path) -> list[str]:
    """Every hook implementation in ``path`` (a function or method decorated ``hookimpl``) that
    names ``engine`` among its parameters, as ``file:line hook``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and any(map(_is_hookimpl, node.decorator_list)):
            a = node.args
            params = [x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg) if x is not None]
            if "engine" in params:
                found.append(f"{path.parent.name}/{path.name}:{node.lineno} {node.name}")
    return found


def test_no_builtin_plugin_takes_the_engine():
    """Hooks get a read-only snapshot and plain values; what is written to a store is written by
    the runtime. The ``engine`` argument some hooks keep is deprecated, for third-party plugins
    written for it: a built-in plugin naming it in a hook implementation fails here, with file,
    line and hook."""
    plugins = default_plugin_modules()
    assert len(plugins) >= 10 and ROOT / "policy" / "validators.py" in plugins, plugins  # the built-ins are found
    problems = [hit for path in plugins for hit in engine_parameters(path)]
    assert not problems, "a built-in plugin takes the (deprecated) engine:\n" + "\n".join(problems)


def test_the_engine_check_finds_every_hookimpl_form_and_only_hookimpls(toy):
    pkg = toy({
        "plugins.py": 'DEFAULT_PLUGINS: tuple[str, ...] = ("litellm_payg.extra",)\n',
        "extra.py": "@hookimpl\ndef payg_outcome(outcome):\n    return engine(outcome)  # a body: not a parameter\n",
        "default_plugins/__init__.py": "",
        "default_plugins/p.py": (
            "import litellm_payg\n"
            "@hookimpl\ndef payg_decision(request, decision, engine):\n    pass\n"
            "@hookimpl(trylast=True)\ndef payg_filter_candidates(candidates, *, engine=None):\n    pass\n"
            "def helper(engine):  # not a hook implementation\n    pass\n"
            "class Plugin:\n"
            "    @litellm_payg.hookimpl\n    async def payg_answer_checked(self, problems, engine):\n        pass\n"
            "    @litellm_payg.hookimpl(tryfirst=True)\n    def payg_validate_response(self, response, policy):\n"
            "        pass\n"
        ),
    })
    assert [p.name for p in default_plugin_modules(pkg)] == ["p.py", "extra.py"]
    hits = [hit for path in default_plugin_modules(pkg) for hit in engine_parameters(path)]
    assert hits == ["default_plugins/p.py:3 payg_decision", "default_plugins/p.py:6 payg_filter_candidates",
                    "default_plugins/p.py:12 payg_answer_checked"], hits


def test_ledger_backends_are_reached_only_through_open_ledger():
    """``ledger/__init__.open_ledger`` picks a backend from the URL; nothing else imports one (the
    health store's Redis client comes from ``redis_client``, not from the ledger's backend)."""
    graph = import_graph()
    backends = {f"{PACKAGE}.stores.ledger.{name}" for name in ("memory", "sqlite", "redis")}
    importers = {m: targets & backends for m, targets in graph.items() if targets & backends}
    assert importers == {f"{PACKAGE}.stores.ledger": backends}


#: the engine's spend guard (``Engine.spend``: reserve, settle, release, the ledger behind it) and
#: health store (``Engine.health``: breakers, latency)
STORES = ("spend", "health")


def _through_store(node: ast.AST | None) -> bool:
    """Whether an expression reaches its value through a ``.spend``/``.health`` attribute."""
    while isinstance(node, (ast.Attribute, ast.Call, ast.Subscript)):
        if isinstance(node, ast.Attribute) and node.attr in STORES:
            return True
        node = node.func if isinstance(node, ast.Call) else node.value
    return False


def store_calls(tree: ast.AST) -> list[tuple[int, str]]:
    """Every call on the spend guard or the health store in ``tree``, read statically: a call whose
    receiver is reached through a ``.spend``/``.health`` attribute (``engine.spend.settle(...)``,
    ``x.health.record(...)``, ``engine.spend.ledger.records()``); ``getattr(x, "spend" or
    "health")``, and a store or a part of it bound to a name (``ledger = engine.spend.ledger``):
    the same calls by another spelling. ``report.spend(...)``, a method of that name, is not one
    (only the receiver's chain counts), nor is reading a setting (``bool(engine.spend.budgets)``)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AnnAssign, ast.NamedExpr)) and _through_store(node.value):
            found.append((node.lineno, ast.unparse(node)))
            continue
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if (isinstance(func, ast.Name) and func.id == "getattr" and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant) and node.args[1].value in STORES):
            found.append((node.lineno, ast.unparse(node)))
            continue
        if isinstance(func, ast.Attribute) and _through_store(func.value):
            found.append((node.lineno, ast.unparse(func)))
    return found


def test_only_the_runtime_calls_the_spend_guard_and_the_health_store():
    """How a request's reservation ends and what feeds a breaker is decided in ``runtime/`` (a
    request's ``runtime.attempt.Attempt``; ``runtime.store_access`` for the reads and the judged
    sample); the adapter, the tools and the plugins ask through it, never call the stores."""
    outside = {}
    for module, path in module_files().items():
        if module.startswith(f"{PACKAGE}.runtime."):
            continue
        calls = store_calls(ast.parse(path.read_text(), str(path)))
        if calls:
            outside[module] = calls
    assert outside == {}, "calls on Engine.spend / Engine.health outside runtime/ (go through runtime.attempt or runtime.store_access)"


def test_the_store_call_check_sees_every_spelling(tmp_path):
    """The check above can fail: each spelling of a store call is found, a same-named method is not."""
    source = """
engine.spend.settle("r", 1.0)
self.engine.health.record("d", ok=False)
adapter.engine.spend.ledger.records()
getattr(engine, "health", None)
ledger = engine.spend.ledger
report.spend("provider:x")
bool(engine.spend.budgets)
"""
    assert sorted(line for line, _ in store_calls(ast.parse(source))) == [2, 3, 4, 5, 6]


#: the pure modules: everything in the ``core/`` layer (data, decisions and checks), LiteLLM's wire
#: format as the ``wire/`` layer reads it (without LiteLLM), and the plugin contract a rule or filter
#: is written against
PURE = tuple(sorted(name[len(PACKAGE) + 1:] for name in module_files()
                    if name.startswith((f"{PACKAGE}.core.", f"{PACKAGE}.wire.")))) + ("hook_chain", "hookspecs", "rules")
#: what a pure module must not reach, directly or through another module of the package
HEAVY = ("litellm", "openai", "httpx", "redis", "sqlite3", "fastapi", "prometheus_client")


def external_imports(path: Path) -> set[str]:
    """The top-level names of the third-party or stdlib modules a file imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_the_pure_modules_reach_no_litellm_and_no_io():
    """Each pure module, with everything of the package it imports (transitively), imports none of
    LiteLLM, the HTTP clients, Redis, SQLite or the proxy's web stack. Fails naming the module and
    the chain that reaches the heavy one."""
    assert len(PURE) >= 13, PURE  # the core layer is found (a moved or renamed package would empty it)
    modules = module_files()
    graph = import_graph()
    problems = []
    for name in PURE:
        start = f"{PACKAGE}.{name}"
        chains = {start: [start]}
        todo = [start]
        while todo:
            current = todo.pop()
            heavy = external_imports(modules[current]) & set(HEAVY)
            if heavy:
                problems.append(f"{start} reaches {sorted(heavy)} through {' -> '.join(chains[current])}")
            for target in graph[current]:
                if target not in chains:
                    chains[target] = chains[current] + [target]
                    todo.append(target)
    assert not problems, "\n".join(problems)


#: The layers, bottom to top, and what each may import of the package (besides itself). A module
#: belongs to the first layer whose prefix names it; ``contract`` is the plugin contract at the root.
LAYERS = {
    "core": (),
    "wire": ("core",),  # LiteLLM's request wire format, read without LiteLLM (the core names none of it)
    "contract": ("core",),
    "stores": ("core",),
    "policy": ("core", "wire", "contract", "stores"),
    "runtime": ("core", "contract", "stores", "policy"),
    "default_plugins": ("core", "contract", "stores", "policy", "runtime"),
    "adapter": ("core", "wire", "contract", "stores", "policy", "runtime"),
    "tools": ("core", "wire", "contract", "stores", "policy", "runtime", "adapter"),
    "proxy": ("adapter",),  # the old proxy line, litellm_payg.proxy.handler: a deprecated shim over adapter.proxy
}
CONTRACT = ("", "hookspecs", "hook_chain", "rules", "plugins")  # "" is the package root's __init__
#: which layers may import these third-party packages (the pure layers import none of them)
DRIVERS = {
    "litellm": ("adapter", "tools"),
    "openai": ("adapter", "tools"),
    "httpx": ("adapter", "tools"),
    "fastapi": ("adapter", "tools"),
    "prometheus_client": ("adapter",),
    "redis": ("stores",),
    "sqlite3": ("stores",),
}


def layer_of(module: str) -> str:
    rel = module[len(PACKAGE) + 1:] if module != PACKAGE else ""
    if rel in CONTRACT:
        return "contract"
    top = rel.split(".")[0]
    assert top in LAYERS, f"{module} is in no layer: add it to one (tests/test_layers.py LAYERS)"
    return top


def test_every_module_imports_only_its_own_layer_and_those_below():
    """Each layer's rule, as its package docstring states it. Fails naming the module, the layer
    and what it imports from a layer it may not."""
    graph = import_graph()
    problems = []
    for module, targets in sorted(graph.items()):
        layer = layer_of(module)
        allowed = set(LAYERS[layer]) | {layer}
        for target in sorted(targets):
            if layer_of(target) not in allowed:
                problems.append(f"{module} ({layer}) imports {target} ({layer_of(target)})")
    assert not problems, "imports across layers:\n" + "\n".join(problems)


def test_third_party_drivers_are_imported_only_where_their_layer_allows():
    """LiteLLM is spoken by ``adapter`` and ``tools``; Redis and SQLite only by ``stores``."""
    problems = []
    for module, path in sorted(module_files().items()):
        rel = module[len(PACKAGE) + 1:]
        for driver in sorted(external_imports(path) & set(DRIVERS)):
            if not any(rel == where or rel.startswith(where + ".") for where in DRIVERS[driver]):
                problems.append(f"{module} imports {driver}")
    assert not problems, "\n".join(problems)


#: the layers below the adapter, which reach LiteLLM's price map and token counter only through the
#: price source port (``core/price_source.py``), never by importing it
BELOW_ADAPTER = ("core", "wire", "contract", "default_plugins", "stores", "policy", "runtime")


def test_nothing_below_the_adapter_imports_litellm():
    """Each module of ``core``, the plugin contract (``hookspecs``, ``hook_chain``, ``rules``,
    ``plugins``), ``default_plugins``, ``stores``, ``policy`` and ``runtime`` imports no ``litellm``
    module, anywhere in its source (a deferred import inside a function counts). Prices and token
    counts come through ``core.price_source``, which ``adapter.litellm_prices`` implements."""
    checked, problems = [], []
    for module, path in sorted(module_files().items()):
        if layer_of(module) not in BELOW_ADAPTER:
            continue
        checked.append(module)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                     else [])
            problems += [f"{path.relative_to(ROOT.parent)}:{node.lineno} imports {name}"
                         for name in names if name.split(".")[0] == "litellm"]
    assert {layer_of(m) for m in checked} == set(BELOW_ADAPTER), checked  # every layer is found
    assert not problems, "LiteLLM imported below adapter/ (use core.price_source):\n" + "\n".join(problems)


#: LiteLLM's wire format: the request fields, metadata keys and headers LiteLLM (or its proxy) reads or
#: writes that the plugin reads. A core module names none of them; it works on the plugin's own data
#: (``RouteRequest``, ``RequestIdentity``), which ``wire/`` and ``adapter/`` fill from the request. A
#: name matches as written or as the start of a longer one (``user_api_key`` matches
#: ``user_api_key_hash``), and not inside another word (``max_litellm_params_x`` does not match).
#: Not listed, on purpose: ``metadata``, ``user`` and ``tags`` (OpenAI's field names too, and
#: ``RouteRequest``'s own attributes), and ``model_info`` (the price source port's method mirrors
#: LiteLLM's price-map entry, and a scope hint tells the user where the deployment id is set).
LITELLM_WIRE_NAMES = (
    "user_api_key",            # the key LiteLLM's proxy authenticated: UserAPIKeyAuth, metadata.user_api_key_*
    "proxy_server_request",    # the proxy's copy of the HTTP request (its headers)
    "litellm_metadata",        # the metadata field of the Responses and Anthropic routes
    "litellm_call_id",         # LiteLLM's per-call id
    "litellm_session_id",      # LiteLLM's session id field
    "litellm_trace_id",        # LiteLLM's trace id field
    "litellm_params",          # a deployment's (and a call's) LiteLLM parameters
    "litellm_logging_obj",     # LiteLLM's logging object in a call's kwargs
    "secret_fields",           # the proxy's raw headers, kept beside a request
    "x-litellm",               # LiteLLM's request headers (x-litellm-trace-id, x-litellm-timeout...)
)
_WIRE_NAME = re.compile(r"(?<![A-Za-z0-9_-])(?:" + "|".join(re.escape(n) for n in LITELLM_WIRE_NAMES) + ")",
                        re.IGNORECASE)


def _docstrings(tree: ast.AST) -> set[int]:
    """The ids of the docstring nodes of a module, its classes and functions (documentation may say
    which LiteLLM field the adapter reads; code and messages may not)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                found.add(id(first.value))
    return found


def wire_names_in(path: Path) -> list[str]:
    """Where a module's source names a LiteLLM wire field: in a string literal (an f-string's parts
    too, but not a docstring) or as a name (a variable, attribute, argument, keyword, function, class
    or imported name). Comments are not read."""
    tree = ast.parse(path.read_text(), str(path))
    docstrings = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            texts = [] if id(node) in docstrings else [node.value]
        elif isinstance(node, ast.Name):
            texts = [node.id]
        elif isinstance(node, ast.Attribute):
            texts = [node.attr]
        elif isinstance(node, (ast.arg, ast.keyword)):
            texts = [node.arg or ""]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            texts = [node.name]
        elif isinstance(node, ast.alias):
            texts = [node.name, node.asname or ""]
        else:
            continue
        found += [f"{path.parent.name}/{path.name}:{getattr(node, 'lineno', '?')} names {m.group(0)!r}"
                  for text in texts for m in [_WIRE_NAME.search(text)] if m]
    return found


def test_no_core_module_names_a_litellm_wire_field():
    """The core works on the plugin's own request attributes: LiteLLM's field names, metadata keys
    and headers (:data:`LITELLM_WIRE_NAMES`) are read in ``wire/`` and ``adapter/``. Fails naming the
    file, line and name."""
    core = [path for name, path in module_files().items() if layer_of(name) == "core"]
    assert len(core) >= 13, core  # the core layer is found
    problems = [hit for path in core for hit in wire_names_in(path)]
    assert not problems, "LiteLLM's wire format in core/ (read it in wire/ or adapter/):\n" + "\n".join(problems)


def test_the_wire_name_check_finds_literals_and_names_but_not_docstrings(toy):
    pkg = toy({
        "mod.py": (
            '"""Reads ``litellm_session_id`` (a docstring: allowed)."""\n'
            "def f(data, user_api_key_dict):\n"
            '    """Also a docstring: proxy_server_request."""\n'
            '    a = data.get("litellm_metadata")\n'
            "    b = data.litellm_call_id\n"
            '    c = f"{data}X-LiteLLM-Timeout"\n'
            "    d = data.litellm_max_input_tokens  # litellm_params in a comment: not read\n"
            "    return g(litellm_trace_id=1)\n"
        ),
    })
    hits = wire_names_in(pkg / "mod.py")
    assert sorted(h.split(":", 1)[1] for h in hits) == [
        "2 names 'user_api_key'", "4 names 'litellm_metadata'", "5 names 'litellm_call_id'", "6 names 'X-LiteLLM'",
        "8 names 'litellm_trace_id'"], hits


def test_the_runtime_holds_no_reference_to_the_adapter():
    """The engine is the runtime's, shared with ``simulate`` and ``explain``: what ``attach``
    installs on a Router is kept by the handle it returns (``adapter/attachment.py``), not on the
    engine. No runtime module names an ``adapter`` (an attribute, a variable or an argument), nor
    keeps undo closures for it (``_undo``). Fails naming the file and line."""
    problems = []
    for module, path in sorted(module_files().items()):
        if layer_of(module) != "runtime":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            name = (node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name)
                    else node.arg if isinstance(node, ast.arg) else None)
            if name in ("adapter", "_undo"):
                problems.append(f"{path.relative_to(ROOT.parent)}:{node.lineno} names {name!r}")
    assert not problems, "the runtime refers to the adapter:\n" + "\n".join(problems)


#: what makes a module a test server: the stdlib's HTTP server (the stand-in provider is one)
SERVER_MODULES = ("http.server", "socketserver", "wsgiref.simple_server")


def shipped_modules() -> dict[str, Path]:
    """The modules the wheel holds: the packages pyproject's ``[tool.setuptools.packages.find]``
    discovers (setuptools' own ``find_packages``, with the same include and exclude), each with its
    ``.py`` files."""
    import tomllib

    from setuptools import find_packages

    repo = ROOT.parent
    find = tomllib.loads((repo / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    packages = find_packages(where=str(repo / find.get("where", ["."])[0]), include=find.get("include", ["*"]),
                             exclude=find.get("exclude", ()))
    found = {}
    for package in packages:
        folder = repo.joinpath(*package.split("."))
        for path in sorted(folder.glob("*.py")):
            found[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return found


def test_the_wheel_holds_no_test_server():
    """The stand-in provider the tests run against (``tests/standin``) is a test server, not part of
    what users install: no shipped package is named for it and no shipped module starts an HTTP server
    of the stdlib. Fails naming the module."""
    shipped = shipped_modules()
    assert PACKAGE in shipped and f"{PACKAGE}.adapter.routing" in shipped, sorted(shipped)  # discovery works
    problems = [f"{name} ({path.relative_to(ROOT.parent)}) is a test server"
                for name, path in sorted(shipped.items())
                if "standin" in name.split(".")
                or any(imported == server or imported.startswith(server + ".") for imported in _imported_names(path)
                       for server in SERVER_MODULES)]
    assert not problems, "\n".join(problems)


def _imported_names(path: Path) -> set[str]:
    """The full dotted names a file imports (``from http.server import X`` -> ``http.server``)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


# -- the graph reader itself, on a throw-away package ---------------------------------------------------


@pytest.fixture
def toy(tmp_path):
    """Write a package named like ours (the reader only follows ``litellm_payg`` imports)."""
    pkg = tmp_path / PACKAGE

    def write(files: dict[str, str]) -> Path:
        for rel, text in files.items():
            path = pkg / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        return pkg

    return write


def test_function_level_relative_and_type_checking_imports_count(toy):
    pkg = toy({
        "__init__.py": "",
        "a.py": "def f():\n    from .sub import b\n",
        "sub/__init__.py": "",
        "sub/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..c import Thing\n",
        "c.py": "import litellm_payg.a\n",
    })
    graph = import_graph(pkg)
    assert graph["litellm_payg.a"] == {"litellm_payg.sub.b"}
    assert graph["litellm_payg.sub.b"] == {"litellm_payg.c"}
    assert graph["litellm_payg.c"] == {"litellm_payg.a"}
    assert cycles(graph) == [["litellm_payg.a", "litellm_payg.sub.b", "litellm_payg.c", "litellm_payg.a"]]


def test_a_name_imported_from_a_package_is_an_edge_to_its_init_not_to_its_submodules(toy):
    pkg = toy({
        "__init__.py": "from .hooks import hookimpl\n",
        "hooks.py": "hookimpl = object()\n",
        "plugin.py": "from litellm_payg import hookimpl\nfrom . import hooks\n",
    })
    graph = import_graph(pkg)
    assert graph["litellm_payg.plugin"] == {"litellm_payg", "litellm_payg.hooks"}
    assert cycles(graph) == []
