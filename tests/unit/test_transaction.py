"""warehouse.db.transaction: a failed COMMIT is reported as itself, not as the ROLLBACK after it."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from warehouse.db import transaction


class _CommitFails:
    """A connection whose COMMIT fails and ends the transaction, as DuckDB's does on a conflict."""

    def __init__(self) -> None:
        self.statements: list[str] = []

    def execute(self, sql: str) -> None:
        self.statements.append(sql)
        if sql == "COMMIT":
            raise duckdb.TransactionException("write-write conflict on commit")
        if sql == "ROLLBACK":
            raise duckdb.TransactionException("cannot rollback - no transaction is active")


def test_a_failed_commit_raises_its_own_error() -> None:
    con = _CommitFails()
    with (
        pytest.raises(duckdb.TransactionException, match="write-write conflict"),
        transaction(con),  # type: ignore[arg-type]
    ):
        pass
    assert con.statements == ["BEGIN TRANSACTION", "COMMIT", "ROLLBACK"]


def test_an_error_inside_rolls_back_what_was_written(tmp_path: Path) -> None:
    with duckdb.connect(str(tmp_path / "t.duckdb")) as con:
        con.execute("CREATE TABLE t (x INTEGER)")
        with pytest.raises(ValueError, match="boom"), transaction(con):
            con.execute("INSERT INTO t VALUES (1)")
            raise ValueError("boom")
        assert con.execute("SELECT count(*) FROM t").fetchall() == [(0,)]
