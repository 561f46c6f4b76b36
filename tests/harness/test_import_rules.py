"""The layering of ARCHITECTURE.md, enforced on the source (every import statement, lazy ones included).

core (harness/*.py) <- heads <- suites;  core <- encoders;  core <- results <- reports;
the command layer (harness/commands/) is the only place that wires plugin packages together. Plugins
reach each other only through the registries in harness/registry.py (lazy "module:attr" strings).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("harness", "encoders", "suites", "heads", "results", "reports")

# which top-level packages each layer may import (itself included)
ALLOWED = {
    "harness": {"harness"},                      # the core
    "harness.commands": set(PACKAGES),           # the command layer
    "heads": {"harness", "heads"},
    "suites": {"harness", "heads", "suites"},
    "encoders": {"harness", "encoders"},
    "results": {"harness", "results"},
    "reports": {"harness", "results", "reports"},
}

# module-level mutable state that is a per-process resource, not configuration (with the reason)
ALLOWED_GLOBALS = {
    "suites/synthetic/render.py": "one EGL context per process, recreated after fork; closed at exit",
}


def _layer(rel: Path) -> str:
    parts = rel.parts
    if parts[0] == "harness" and len(parts) > 2 and parts[1] == "commands":
        return "harness.commands"
    return parts[0]


def _imports(tree: ast.AST):
    """(line, top-level package) of every import, skipping ``if TYPE_CHECKING:`` blocks."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in ast.walk(node):
                skip.add(id(sub))
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module


def _sources():
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            yield path.relative_to(ROOT), path


def test_every_import_respects_the_layers():
    bad = []
    for rel, path in _sources():
        layer = _layer(rel)
        tree = ast.parse(path.read_text(), str(rel))
        for line, module in _imports(tree):
            top = module.split(".")[0]
            if top not in PACKAGES:
                continue
            if module.startswith("harness.commands") and layer != "harness.commands":
                bad.append(f"{rel}:{line} imports {module} (only the command layer may)")
            elif top not in ALLOWED[layer]:
                bad.append(f"{rel}:{line} imports {module} ({layer} may import {sorted(ALLOWED[layer])})")
    assert not bad, "layering violations:\n" + "\n".join(bad)


def test_the_rule_test_catches_a_violation(tmp_path):
    """The checker itself: an upward import in a core module is found."""
    tree = ast.parse("def f():\n    from suites.images import DataError\n")
    assert [m for _, m in _imports(tree)] == ["suites.images"]
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from encoders.base import Encoder\n")
    assert [m for _, m in _imports(tree)] == ["typing"]


def test_no_hidden_global_state():
    """No ``global`` rebinding (a process-wide 'current' workspace, preset, ...) outside the allow-list."""
    bad = []
    for rel, path in _sources():
        if str(rel) in ALLOWED_GLOBALS:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(rel))):
            if isinstance(node, ast.Global):
                bad.append(f"{rel}:{node.lineno} global {', '.join(node.names)}")
    assert not bad, "module-level mutable state:\n" + "\n".join(bad)
    import harness.workspace as ws
    assert not hasattr(ws, "current") and not hasattr(ws, "use_workspace")
    import suites.synthetic.defaults as d
    assert not hasattr(d, "_preset") and not hasattr(d, "use_preset")


@pytest.mark.parametrize("pkg", PACKAGES)
def test_no_source_file_over_500_lines(pkg):
    long = [f"{rel} ({n} lines)" for rel, path in _sources() if rel.parts[0] == pkg
            and (n := len(path.read_text().splitlines())) > 500]
    assert not long, "files doing several jobs (split by job):\n" + "\n".join(long)
