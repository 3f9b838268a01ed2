"""The layers hold (issue 15): the import-linter contracts pass on the tree, fail on a planted
forbidden import, and no package imports another module's private name.

The planted imports go into a throwaway tree of empty packages named like ours, checked
against the contracts read from this repository's pyproject.toml -- the real contracts,
not a copy -- so a contract that silently stopped checking anything would fail here.
lint-imports reads files only (grimp parses, never imports); nothing here uses the network.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _config() -> dict[str, Any]:
    with (REPO / "pyproject.toml").open("rb") as f:
        config: dict[str, Any] = tomllib.load(f)["tool"]["importlinter"]
    return config


def _lint(cwd: Path) -> subprocess.CompletedProcess[str]:
    # PYTHONPATH dropped so the packages found are the ones under cwd (lint-imports puts cwd first).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _toml_value(value: Any) -> str:
    # The contracts hold only strings, lists of strings, booleans and integers; their JSON is TOML.
    return json.dumps(value)


def _fake_tree(root: Path, planted: tuple[str, str] | None) -> None:
    """Empty packages named like ours, one module each, and the repository's contracts.

    `planted` is (importer, imported): the importer package gets a module importing the other.
    `ignore_imports` are dropped: the debt they excuse names modules this tree lacks.
    """
    config = _config()
    packages: list[str] = config["root_packages"]
    for package in packages:
        (root / package).mkdir()
        (root / package / "__init__.py").write_text("")
        (root / package / "thing.py").write_text('"""An empty module."""\n')
    if planted is not None:
        importer, imported = planted
        (root / importer / "planted.py").write_text(f"import {imported}.thing\n")
    lines = ["[tool.importlinter]", f"root_packages = {_toml_value(packages)}"]
    for contract in config["contracts"]:
        lines.append("\n[[tool.importlinter.contracts]]")
        lines += [
            f"{key} = {_toml_value(value)}"
            for key, value in contract.items()
            if key != "ignore_imports"
        ]
    (root / "pyproject.toml").write_text("\n".join(lines) + "\n")


def test_the_tree_keeps_every_contract() -> None:
    result = _lint(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    n_contracts = len(_config()["contracts"])
    assert f"Contracts: {n_contracts} kept, 0 broken." in result.stdout


def test_a_tree_of_empty_packages_keeps_every_contract(tmp_path: Path) -> None:
    # The control for the planted cases below: without the planted import, nothing breaks.
    _fake_tree(tmp_path, planted=None)
    result = _lint(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("importer", "imported", "contract"),
    [
        ("core", "adapters", "core imports none of ours"),
        ("core", "flows", "core imports none of ours"),
        ("adapters", "models", "adapters and warehouse import only core"),
        ("warehouse", "trading", "adapters and warehouse import only core"),
        ("warehouse", "adapters", "adapters and warehouse are independent"),
        ("models", "trading", "models never import adapters, trading, warehouse or flows"),
        ("models", "warehouse", "models never import adapters, trading, warehouse or flows"),
        ("trading", "flows", "trading never imports flows or tasks"),
        ("trading", "tasks", "trading never imports flows or tasks"),
        ("tasks", "flows", "tasks never import flows"),
    ],
)
def test_a_forbidden_import_breaks_its_contract(
    tmp_path: Path, importer: str, imported: str, contract: str
) -> None:
    _fake_tree(tmp_path, planted=(importer, imported))
    result = _lint(tmp_path)
    assert result.returncode != 0
    assert f"{contract} BROKEN" in result.stdout
    assert f"{importer}.planted -> {imported}.thing" in result.stdout
    assert "Contracts: " in result.stdout and " 1 broken." in result.stdout


def test_an_import_cycle_between_siblings_breaks_its_contract(tmp_path: Path) -> None:
    _fake_tree(tmp_path, planted=None)
    (tmp_path / "models" / "registry.py").write_text("import models.allocator\n")
    (tmp_path / "models" / "allocator.py").write_text("import models.registry\n")
    result = _lint(tmp_path)
    assert result.returncode != 0
    assert "no import cycles between sibling modules BROKEN" in result.stdout


# --- private names ------------------------------------------------------------------------

PACKAGES = ("core", "adapters", "warehouse", "models", "trading", "tasks", "flows", "benchmarks")

# Private names one module may still take from another, each with its reason. Empty now;
# an entry is debt (issue 15): (importing module, imported module, name).
ALLOWED_PRIVATE_IMPORTS: frozenset[tuple[str, str, str]] = frozenset()


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _our_modules() -> set[str]:
    return {_module_name(p) for package in PACKAGES for p in (REPO / package).rglob("*.py")}


def private_imports(source: str, module: str, ours: set[str]) -> list[tuple[str, str, int]]:
    """(imported module, private name, line) for each private name `module` takes from another
    of `ours`: `from other import _name`, or `other._name` through an imported module."""
    tree = ast.parse(source)
    found: list[tuple[str, str, int]] = []
    aliases: dict[str, str] = {}  # local name -> our module it is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname and alias.name in ours:
                    aliases[alias.asname] = alias.name
                elif not alias.asname:  # `import a.b` binds a; code reaches a.b._x
                    parts = alias.name.split(".")
                    for i in range(1, len(parts) + 1):
                        if ".".join(parts[:i]) in ours:
                            aliases[".".join(parts[:i])] = ".".join(parts[:i])
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                if f"{node.module}.{alias.name}" in ours:
                    aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
                elif (
                    node.module in ours
                    and node.module != module
                    and alias.name.startswith("_")
                    and not alias.name.startswith("__")
                ):
                    found.append((node.module, alias.name, node.lineno))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            target = aliases.get(ast.unparse(node.value))
            if target is not None and target != module:
                found.append((target, node.attr, node.lineno))
    return found


def test_the_private_name_check_finds_both_forms() -> None:
    ours = {"warehouse.bars", "trading.live", "warehouse", "trading"}
    source = (
        "from warehouse.bars import _recent_closes, load\n"
        "from warehouse import bars\n"
        "import warehouse.bars as wb\n"
        "import warehouse.bars\n"
        "bars._helper()\nwb._other\nbars.public()\nwarehouse.bars._third()\n"
    )
    assert sorted(private_imports(source, "trading.live", ours)) == [
        ("warehouse.bars", "_helper", 5),
        ("warehouse.bars", "_other", 6),
        ("warehouse.bars", "_recent_closes", 1),
        ("warehouse.bars", "_third", 8),
    ]
    # A module may use its own private names.
    assert private_imports("from trading.live import _x\n", "trading.live", ours) == []


def test_no_package_imports_a_private_name_from_another_module() -> None:
    ours = _our_modules()
    offenders = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            module = _module_name(path)
            for imported, name, line in private_imports(path.read_text(), module, ours):
                if (module, imported, name) not in ALLOWED_PRIVATE_IMPORTS:
                    offenders.append(f"{path.relative_to(REPO)}:{line} {imported}.{name}")
    assert offenders == []
