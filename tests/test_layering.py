"""The module boundaries are the public API: ``edge`` (what runs beside the line) imports neither the
workstation packages ``boxinspect`` and ``convert`` nor TensorFlow/Keras, at module level or inside a function.
It may reuse ``training``'s TensorFlow-free modules (the head, the operating point, the groups of
``boxinspect retrain``), and only those: a ``training`` module edge imports must not import TensorFlow/Keras
at its own module level. Checked on the source, so a lazy import in a rarely used path cannot hide."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

EDGE = Path(__file__).resolve().parents[1] / "edge"
FORBIDDEN = ("boxinspect", "convert", "tensorflow", "keras")
TF = ("tensorflow", "keras")


def imported(path: Path, top_level_only: bool = False) -> set[tuple[str, int]]:
    """(dotted module, line) of every absolute import in the file (``from a import b`` gives ``a`` and ``a.b``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[tuple[str, int]] = set()
    for node in tree.body if top_level_only else ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update((a.name, node.lineno) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add((node.module, node.lineno))
            found.update((f"{node.module}.{a.name}", node.lineno) for a in node.names)
    return found


def imported_roots(path: Path) -> set[tuple[str, int]]:
    return {(name.split(".")[0], line) for name, line in imported(path)}


@pytest.mark.parametrize("path", sorted(EDGE.rglob("*.py")), ids=lambda p: p.name)
def test_edge_imports_no_workstation_package(path: Path) -> None:
    bad = sorted((name, line) for name, line in imported_roots(path) if name in FORBIDDEN)
    assert not bad, f"{path.relative_to(EDGE.parent)} imports {', '.join(f'{n} (line {ln})' for n, ln in bad)}"
    for name, line in sorted(imported(path)):
        module = EDGE.parent / (name.replace(".", "/") + ".py")
        if name.startswith("training.") and module.is_file():
            heavy = sorted(n for n, _ in imported(module, top_level_only=True) if n.split(".")[0] in TF)
            assert not heavy, f"{path.name}:{line} imports {name}, which imports {heavy} at module level"


def test_the_check_sees_a_forbidden_import(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from boxinspect.broker import DemoBroker\n    import tensorflow as tf\n")
    assert {n for n, _ in imported_roots(f)} == {"boxinspect", "tensorflow"}


# ---------------------------------------------------------------- import cycles and the layers (issue 22)
#
# The graph: one node per module of the first-party packages, one edge per import of another of them, at module
# level or inside a function (both run sooner or later), relative imports resolved; imports under
# ``if TYPE_CHECKING:`` are left out (they never run). A cycle is a strongly connected component of two or
# more modules (or a module importing itself).

PACKAGES = ("edge", "training", "convert", "boxinspect", "historian")
# Which top-level package may import which. edge is the bottom layer (runs on the device, no TensorFlow) and
# may reuse training's TensorFlow-free modules (checked above); convert and boxinspect sit on top.
ALLOWED = {
    "edge": {"edge", "training"},
    "training": {"training", "edge"},
    "convert": {"convert", "edge", "training"},
    "boxinspect": {"boxinspect", "edge", "training", "convert", "historian"},
    "historian": {"historian", "edge"},  # the plant's consumer: reuses edge's config and MQTT helpers (no TensorFlow)
}
REPO = EDGE.parent


def module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _runtime_nodes(node: ast.AST):
    """Every node below ``node`` except the bodies of ``if TYPE_CHECKING:`` (their ``else:`` does run)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child):
            for n in child.orelse:
                yield n
                yield from _runtime_nodes(n)
            continue
        yield child
        yield from _runtime_nodes(child)


def _imports(tree: ast.Module, name: str, is_package: bool) -> list[tuple[str, int]]:
    """(dotted target, line) of each runtime import in a module; ``from a import b`` gives ``a.b``."""
    here = name if is_package else name.rpartition(".")[0]
    out = []
    for n in _runtime_nodes(tree):
        if isinstance(n, ast.Import):
            out += [(a.name, n.lineno) for a in n.names]
        elif isinstance(n, ast.ImportFrom):
            base = n.module or ""
            if n.level:
                up = here.split(".")[: len(here.split(".")) - (n.level - 1)]
                base = ".".join(up + ([n.module] if n.module else []))
            out += [(f"{base}.{a.name}", n.lineno) for a in n.names]
    return out


def module_graph(root: Path, packages: tuple[str, ...]) -> dict[str, dict[str, int]]:
    """{module: {first-party module it imports: line}} over the .py files of ``packages`` under ``root``."""
    files = {module_name(root, p): p for pkg in packages for p in sorted((root / pkg).rglob("*.py"))}
    graph: dict[str, dict[str, int]] = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        deps: dict[str, int] = {}
        for target, line in _imports(tree, name, path.name == "__init__.py"):
            while target and target not in files:  # a.b.NAME -> a.b (the module that defines NAME)
                target = target.rpartition(".")[0]
            if target:
                deps.setdefault(target, line)
        graph[name] = deps
    return graph


def import_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The import cycles of ``graph``: its strongly connected components with a cycle (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, {}):
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def layer_violations(graph: dict[str, dict[str, int]], allowed: dict[str, set[str]]) -> list[str]:
    """``module:line imports target`` for each import of a top-level package its layer may not import."""
    bad = []
    for name, deps in sorted(graph.items()):
        top = name.split(".")[0]
        for target, line in sorted(deps.items()):
            if target.split(".")[0] not in allowed.get(top, {top}):
                bad.append(f"{name}:{line} imports {target}")
    return bad


def _describe(graph: dict[str, dict[str, int]], cycle: list[str]) -> str:
    return "; ".join(f"{a} -> {b} (line {graph[a][b]})" for a in cycle for b in sorted(graph[a]) if b in cycle)


def test_no_import_cycles() -> None:
    graph = module_graph(REPO, PACKAGES)
    assert len(graph) > 50 and "edge.daemon" in graph and "training.cv" in graph  # the walk saw the code
    cycles = import_cycles(graph)
    assert not cycles, "import cycles (function-level imports count):\n" + "\n".join(
        _describe(graph, c) for c in cycles)


def test_each_package_imports_only_its_allowed_layers() -> None:
    bad = layer_violations(module_graph(REPO, PACKAGES), ALLOWED)
    assert not bad, "imports across layers that docs/ARCHITECTURE.md does not allow:\n" + "\n".join(bad)


# Inside edge/: one subpackage per concern (docs/ARCHITECTURE.md). Bottom to top: the foundation (config, state,
# runtime), then capture and judge, deliver, learn, the HTTP api, and the daemon/CLI/bench that wire them up.
# A subpackage may import its own modules and those listed; ``edge`` itself (its __init__) only says the version.
_FOUNDATION = {"edge", "edge.config", "edge.state", "edge.runtime"}
EDGE_ALLOWED = {
    "edge": set(),
    "edge.config": set(),
    "edge.state": set(),
    "edge.runtime": {"edge.state"},
    "edge.capture": _FOUNDATION,
    "edge.judge": _FOUNDATION,
    "edge.deliver": _FOUNDATION | {"edge.judge"},
    "edge.learn": _FOUNDATION | {"edge.judge", "edge.deliver"},
    "edge.api": _FOUNDATION | {"edge.capture", "edge.judge", "edge.deliver", "edge.learn"},
}
EDGE_TOP = ("edge.daemon", "edge.cli", "edge.bench")  # they wire the parts up: may import any of edge


def edge_layer(module: str) -> str:
    """``edge.judge.classifier`` -> ``edge.judge``; ``edge.config`` -> itself; ``edge`` -> itself."""
    return ".".join(module.split(".")[:2])


def edge_layer_violations(graph: dict[str, dict[str, int]]) -> list[str]:
    bad = []
    for name, deps in sorted(graph.items()):
        here = edge_layer(name)
        if not name.startswith("edge") or here in EDGE_TOP:
            continue
        if here not in EDGE_ALLOWED:
            bad.append(f"{name}: {here} is not a known layer (add it to EDGE_ALLOWED and docs/ARCHITECTURE.md)")
            continue
        for target, line in sorted(deps.items()):
            there = edge_layer(target)
            if target.startswith("edge") and there != here and there not in EDGE_ALLOWED[here]:
                bad.append(f"{name}:{line} imports {target}")
    return bad


def test_edge_subpackages_import_only_the_layers_below() -> None:
    graph = module_graph(REPO, ("edge",))
    assert {"edge.api.app", "edge.judge.classifier", "edge.capture.frames", "edge.learn.shadow"} <= set(graph)
    bad = edge_layer_violations(graph)
    assert not bad, "imports inside edge/ that its layers do not allow (docs/ARCHITECTURE.md):\n" + "\n".join(bad)


def test_edge_has_no_loose_modules() -> None:
    """The folder shows the design: every module of edge/ sits in a subpackage, but the few that wire or found it."""
    loose = sorted(p.name for p in EDGE.glob("*.py"))
    assert loose == ["__init__.py", "cli.py", "config.py", "daemon.py", "state.py"], loose


def test_the_edge_layer_check_sees_an_upward_import() -> None:
    graph = {"edge.judge.decision": {"edge.api.app": 7, "edge.config": 3}, "edge.api.app": {"edge.judge.decision": 1},
             "edge.daemon": {"edge.api.app": 1}, "edge.weird.x": {}}
    assert edge_layer_violations(graph) == [
        "edge.judge.decision:7 imports edge.api.app",
        "edge.weird.x: edge.weird is not a known layer (add it to EDGE_ALLOWED and docs/ARCHITECTURE.md)"]


def _planted(tmp_path: Path, files: dict[str, str]) -> dict[str, dict[str, int]]:
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return module_graph(tmp_path, ("pkg", "top"))


def test_the_cycle_check_finds_a_planted_cycle(tmp_path: Path) -> None:
    graph = _planted(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "def f():\n    from pkg.b import g\n    return g\n",  # inside a function: still a cycle
        "pkg/b.py": "from . import a\n\ndef g():\n    return a\n",  # relative import
        "pkg/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.d import X\nelse:\n"
                    "    import pkg.a\n",  # the TYPE_CHECKING import never runs: no c <-> d cycle
        "pkg/d.py": "import pkg.c as c\nX = 1\n",
        "pkg/e.py": "import pkg.e\n",  # a module importing itself
        "top/__init__.py": "from pkg.a import f\n",
    })
    assert graph["pkg.a"] == {"pkg.b": 2} and graph["pkg.b"] == {"pkg.a": 1} and graph["pkg.c"] == {"pkg.a": 5}
    assert import_cycles(graph) == [["pkg.a", "pkg.b"], ["pkg.e"]]
    assert "pkg.a -> pkg.b (line 2)" in _describe(graph, ["pkg.a", "pkg.b"])
    # a clean package has none
    assert import_cycles({"x.a": {"x.b": 1}, "x.b": {}}) == []


def test_the_layer_check_finds_a_planted_violation(tmp_path: Path) -> None:
    graph = _planted(tmp_path, {"pkg/__init__.py": "", "pkg/m.py": "def f():\n    import top\n",
                                "top/__init__.py": "import pkg.m\n"})
    assert layer_violations(graph, {"pkg": {"pkg"}, "top": {"top", "pkg"}}) == ["pkg.m:2 imports top"]


# ---------------------------------------------------------------- private names stay private (issue 22)

FIRST_PARTY = ("edge", "training", "convert", "boxinspect", "tests")


def private_uses(path: Path, first_party: tuple[str, ...] = FIRST_PARTY) -> set[str]:
    """Another first-party module's ``_private`` names this file uses: ``from m import _x`` and ``m._x`` where
    ``m`` is an imported module (dunders are public)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    modules: dict[str, str] = {}
    found: set[str] = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.ImportFrom) and n.level == 0 and (n.module or "").split(".")[0] in first_party:
            for a in n.names:
                if a.name.startswith("_") and not a.name.startswith("__"):
                    found.add(f"{n.module}.{a.name}")
                modules[a.asname or a.name] = f"{n.module}.{a.name}"
        elif isinstance(n, ast.Import):
            for a in n.names:
                if a.name.split(".")[0] in first_party:
                    modules[a.asname or a.name.split(".")[0]] = a.asname and a.name or a.name.split(".")[0]
    for n in ast.walk(tree):
        if (isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id in modules
                and n.attr.startswith("_") and not n.attr.startswith("__")):
            found.add(f"{modules[n.value.id]}.{n.attr}")
    return found


def test_no_module_uses_another_modules_private_names() -> None:
    files = [p for d in (*PACKAGES, "tests", "studies") for p in sorted((REPO / d).rglob("*.py"))]
    bad = sorted((str(p.relative_to(REPO)), name) for p in files for name in private_uses(p))
    assert not bad, f"private names used across modules: {bad}"


def test_the_private_check_sees_both_forms(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text("import edge.judge.classifier as clf\nfrom edge.api.app import _status, create_app\n"
                 "x = clf._secret(create_app.__name__)\n")
    assert private_uses(f) == {"edge.api.app._status", "edge.judge.classifier._secret"}
