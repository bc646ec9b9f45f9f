"""The package's import direction follows the review's workflow: a folder imports only folders before it in
LAYERS (registry.py and errors.py are shared by all). A new upward import fails here."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "mmfm"
LAYERS = ["data", "encoders", "objectives", "tasks", "evaluation", "trust", "engine", "workflows", "app", "cli"]


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mmfm."):
            out.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".")[1] for a in node.names if a.name.startswith("mmfm.")}
    return out


def test_no_upward_imports():
    bad = []
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG).parts
        if len(rel) < 2 or rel[0] not in LAYERS:
            continue
        own = LAYERS.index(rel[0])
        for target in _imports(path):
            if target in LAYERS and LAYERS.index(target) > own:
                bad.append(f"{'/'.join(rel)} imports mmfm.{target}")
    assert not bad, bad
