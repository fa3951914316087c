"""The package's layers import only downwards: infra → models → tasks → pipelines → cli."""

from __future__ import annotations

import ast
from pathlib import Path

import facezip

LAYERS = ["infra", "models", "tasks", "pipelines", "cli"]
PACKAGE = Path(facezip.__file__).parent


def _imported_layers(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name.split(".")[1] for name in names if name.startswith("facezip.") and name.split(".")[1] in LAYERS}


def test_imports_go_downwards_only():
    upward = []
    for rank, layer in enumerate(LAYERS):
        for path in sorted((PACKAGE / layer).rglob("*.py")):
            above = {imported for imported in _imported_layers(path) if LAYERS.index(imported) > rank}
            upward += [f"{path.relative_to(PACKAGE)} imports facezip.{name}" for name in sorted(above)]
    assert not upward, "imports that go up a layer:\n" + "\n".join(upward)
