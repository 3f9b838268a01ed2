"""Only warehouse/ runs SQL (issue 15): no call of execute/executemany/sql, duckdb.query or
warehouse.io.load_frame (which runs the SQL text it is given) elsewhere.

Every .py file of the other packages is parsed with `ast` (never imported); a call of an
attribute named `execute`, `executemany` or `sql`, of `duckdb.query`, or of `load_frame`
is SQL run outside the warehouse and is named file:line. The scanner itself is tested on planted source, so a
scanner that stopped finding anything would fail here too.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SCANNED = ("core", "adapters", "models", "trading", "tasks", "benchmarks", "flows")
SQL_METHODS = frozenset({"execute", "executemany", "sql"})
SQL_FUNCTIONS = frozenset({"load_frame"})  # warehouse.io: runs the SQL text it is given

# Files that still run SQL, each debt for issue 15 (none left: the demo's queries moved last);
# the list may only shrink: a listed file with no SQL left fails the
# test below until its entry is removed.
ALLOWED_SQL_FILES: frozenset[str] = frozenset()


def sql_calls(source: str) -> list[tuple[int, str]]:
    """(line, call) of every call in `source` that runs SQL: x.execute/executemany/sql(...),
    duckdb.query(...)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        named = func.id if isinstance(func, ast.Name) else None
        if named in SQL_FUNCTIONS or (
            isinstance(func, ast.Attribute) and func.attr in SQL_FUNCTIONS
        ):
            found.append((node.lineno, ast.unparse(func)))
            continue
        if not isinstance(node.func, ast.Attribute):
            continue
        attr = node.func.attr
        is_duckdb_query = (
            attr == "query"
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "duckdb"
        )
        if attr in SQL_METHODS or is_duckdb_query:
            found.append((node.lineno, ast.unparse(node.func)))
    return sorted(found)


def _scanned_files() -> list[Path]:
    return sorted(path for package in SCANNED for path in (REPO / package).rglob("*.py"))


def test_the_scanner_finds_every_form_of_a_sql_call() -> None:
    source = (
        "import duckdb\n"
        "con = duckdb.connect()\n"
        "con.execute('SELECT 1')\n"
        "con.executemany('INSERT INTO t VALUES (?)', [[1], [2]])\n"
        "rel = con.sql('SELECT 2')\n"
        "duckdb.query('SELECT 3')\n"
        "self.warehouse.con.execute('SELECT 4').fetchall()\n"
        "duckdb.sql('SELECT 5')\n"
        "load_frame(con, 'SELECT 6')\n"
        "io.load_frame(con, 'SELECT 7')\n"
    )
    assert sql_calls(source) == [
        (3, "con.execute"),
        (4, "con.executemany"),
        (5, "con.sql"),
        (6, "duckdb.query"),
        (7, "self.warehouse.con.execute"),
        (8, "duckdb.sql"),
        (9, "load_frame"),
        (10, "io.load_frame"),
    ]


def test_the_scanner_leaves_lookalikes_alone() -> None:
    # A private method named like it, a bare function, a name that is not called, a
    # query() that is not duckdb's and a function named like load_frame are not SQL.
    source = (
        "self._execute(order)\n"
        "execute(plan)\n"
        "run = con.execute\n"
        "frame.query('a > 1')\n"
        "load_frames(paths)\n"
    )
    assert sql_calls(source) == []


def test_the_scan_covers_the_packages_and_finds_the_listed_files() -> None:
    # The control for the test below: the scan walks real files, and those listed do run SQL.
    files = {p.relative_to(REPO).as_posix() for p in _scanned_files()}
    assert {"trading/ledger.py", "trading/live.py", "benchmarks/bench_trading.py"} <= files
    assert ALLOWED_SQL_FILES.issubset(files)
    assert not any(f.startswith("warehouse/") for f in files)


def test_only_warehouse_runs_sql() -> None:
    offenders = []
    for path in _scanned_files():
        name = path.relative_to(REPO).as_posix()
        if name in ALLOWED_SQL_FILES:
            continue
        offenders += [f"{name}:{line} {call}" for line, call in sql_calls(path.read_text())]
    assert offenders == [], "SQL outside warehouse/ -- move it into a warehouse/ function"


def test_the_allow_list_only_shrinks() -> None:
    # A listed file whose queries have moved to warehouse/ must leave the list.
    clean = [name for name in sorted(ALLOWED_SQL_FILES) if not sql_calls((REPO / name).read_text())]
    assert clean == [], f"no SQL left in {clean}: remove them from ALLOWED_SQL_FILES"
