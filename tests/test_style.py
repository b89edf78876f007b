"""Functions in pytrim/ stay short enough to read at once (the ruff complexity rules are
configured in pyproject.toml; this bounds their length)."""

from __future__ import annotations

import ast

from conftest import ROOT

LIMIT = 60


def test_no_function_in_pytrim_is_longer_than_60_lines() -> None:
    long = []
    for path in sorted((ROOT / "pytrim").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > LIMIT:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length} lines)")
    assert not long, "functions over 60 lines:\n" + "\n".join(long)
