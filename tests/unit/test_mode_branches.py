"""Only the wiring chooses by mode (issue 15): no other module compares a `mode` with
'replay', 'paper' or 'live'. core/settings.py holds the rules about modes themselves
(live needs the opt-in, paper must not point at the live endpoint)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("core", "adapters", "warehouse", "models", "trading", "tasks", "flows")
ALLOWED = {"flows/wiring.py", "core/settings.py"}
MODES = {"replay", "paper", "live"}


def _is_mode(node: ast.AST) -> bool:
    return (isinstance(node, ast.Name) and node.id == "mode") or (
        isinstance(node, ast.Attribute) and node.attr == "mode"
    )


def mode_branches(source: str) -> list[int]:
    """Lines comparing a `mode` with a mode's name."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            named = any(isinstance(s, ast.Constant) and s.value in MODES for s in sides)
            if named and any(_is_mode(s) for s in sides):
                lines.append(node.lineno)
    return lines


def test_the_scan_finds_a_mode_branch() -> None:
    assert mode_branches("if config.mode == 'replay':\n    pass\n") == [1]
    assert mode_branches("x = 'paper' != mode\n") == [1]
    assert mode_branches("if sim is None:\n    pass\n") == []


def test_only_the_wiring_branches_on_the_mode() -> None:
    found = {
        f"{path.relative_to(ROOT)}:{line}"
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        for line in mode_branches(path.read_text())
        if str(path.relative_to(ROOT)) not in ALLOWED
    }
    assert found == set(), "mode branches outside flows/wiring.py"
