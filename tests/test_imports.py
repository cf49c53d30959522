"""Imports inside ``ranksim/`` flow one way: no cycles, and no layer imports a higher one.

The graph is read from the source (every ``import`` statement at any depth, function-level ones
included), not from ``sys.modules``, so a cycle that only closes when some function runs is
found as well. Implicit imports of parent packages are not edges: ``ranksim``'s ``__init__`` files
import nothing of their own package, and the check on ``ranksim/__init__.py`` below keeps it so.
"""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = "ranksim"

# Lower layers never import higher ones. The foundation is what every layer needs: the error type,
# the config schema and the process-group helpers (the methods' gathered losses use them too).
LAYERS = {
    "ranksim.errors": 0, "ranksim.config": 0, "ranksim.distributed": 0,
    "ranksim.methods": 1,
    "ranksim.models": 2, "ranksim.data": 2, "ranksim.evaluation": 2,
    "ranksim.engine": 3,
    "ranksim.results": 4,
    "ranksim.tools": 5, "ranksim.convert": 5,  # ranksim.convert: the 'python -m ranksim.convert' shim
}


def module_names(root: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of the package under ``root``."""
    names = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Module -> the modules of the same package that it imports anywhere in its source."""
    modules = module_names(root, package)
    graph = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: resolved against this module's package
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[:len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                for alias in node.names:
                    # 'from pkg import sub' imports the submodule sub when there is one
                    full = f"{base}.{alias.name}"
                    targets.add(full if full in modules else base)
        edges = set()
        for target in targets:
            # 'import a.b.c' where a.b.c is not a module of ours (an attribute): its longest module prefix
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                edges.add(target)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def layer_of(module: str) -> int | None:
    for prefix, layer in LAYERS.items():
        if module == prefix or module.startswith(prefix + "."):
            return layer
    return None


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    return [f"{source} (layer {layer_of(source)}) imports {target} (layer {layer_of(target)})"
            for source, targets in sorted(graph.items()) for target in sorted(targets)
            if layer_of(source) is not None and layer_of(target) is not None and layer_of(target) > layer_of(source)]


# -- the checker itself, on a made-up package -------------------------------------------------------


def write_package(root: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_checker_finds_a_cycle_closed_by_a_nested_function_level_import(tmp_path):
    write_package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/low.py": "import os\n",
        "pkg/a.py": "from pkg.sub.b import thing\n",
        "pkg/sub/__init__.py": "",
        # the import back sits two levels deep in a function, relative, and names a module
        "pkg/sub/b.py": "def thing(x):\n    if x:\n        for _ in x:\n            from .. import a\n    return 1\n",
        "pkg/c.py": "import pkg.low\nfrom pkg import low\n",
    })
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.sub.b"] == {"pkg.a"} and graph["pkg.c"] == {"pkg.low"}
    assert cycles(graph) == [["pkg.a", "pkg.sub.b"]]
    write_package(tmp_path, {"pkg/sub/b.py": "def thing(x):\n    return 1\n"})
    assert cycles(import_graph(tmp_path, "pkg")) == []


def test_checker_finds_a_lower_layer_importing_a_higher_one():
    graph = {"ranksim.methods.lds": {"ranksim.engine.runs"}, "ranksim.engine.loop": {"ranksim.methods.lds"}}
    assert layer_violations(graph) == ["ranksim.methods.lds (layer 1) imports ranksim.engine.runs (layer 3)"]


# -- the package --------------------------------------------------------------------------------------


def test_no_import_cycles_in_the_package():
    graph = import_graph(REPO, PACKAGE)
    assert "ranksim.engine.loop" in graph and "ranksim.methods.regularizer" in graph["ranksim.engine.loop"]
    assert cycles(graph) == []


def test_no_layer_imports_a_higher_one():
    graph = import_graph(REPO, PACKAGE)
    unplaced = sorted(m for m in graph if m != PACKAGE and layer_of(m) is None)
    assert unplaced == [], f"give these modules a layer in LAYERS: {unplaced}"
    assert layer_violations(graph) == []


def test_the_package_init_imports_nothing_of_the_package():
    # Every module imports ranksim/__init__.py first; if it imported a module, that module's
    # imports would close a cycle through it that the graph above does not show.
    assert import_graph(REPO, PACKAGE)[PACKAGE] == set()
