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
