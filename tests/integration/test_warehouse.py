"""Warehouse: migrations, lock-aware connections (with a real second process), idempotent upserts."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import polars as pl
import pytest

from warehouse.db import WarehouseLockedError, connect
from warehouse.io import load_frame, upsert
from warehouse.migrate import (
    MigrationError,
    apply_migrations,
    available_migrations,
    current_version,
)

CORE_TABLES = {
    "bars", "bars_quarantine", "reddit_posts", "post_sentiment", "forecasts", "models",
    "training_runs", "nas_individuals", "decisions", "orders", "fills", "equity",
    "reconciliation_events", "schema_version",
}  # fmt: skip
VIEWS = {"v_trades", "v_daily_pnl", "v_positions", "v_model_leaderboard", "v_decision_ledger"}


def test_migrations_from_empty_create_every_core_table_and_view(warehouse_path: Path) -> None:
    with connect(warehouse_path, timeout_s=5) as con:
        tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        views = {
            r[0]
            for r in con.execute(
                "SELECT view_name FROM duckdb_views() WHERE NOT internal"
            ).fetchall()
        }
        assert current_version(con) == len(available_migrations())
    assert tables >= CORE_TABLES
    assert views >= VIEWS


def test_migrations_reapplied_are_a_no_op(warehouse_path: Path) -> None:
    with connect(warehouse_path, timeout_s=5) as con:
        con.execute("INSERT INTO equity VALUES ('paper', now(), 1, 0, 1)")
    con = duckdb.connect(str(warehouse_path))
    try:
        assert apply_migrations(con) == []
        assert apply_migrations(con) == []
        assert con.execute("SELECT count(*) FROM schema_version").fetchall()[0][0] == len(
            available_migrations()
        )
        assert con.execute("SELECT count(*) FROM equity").fetchall()[0][0] == 1
    finally:
        con.close()


def test_every_migration_file_opens_with_a_purpose_comment() -> None:
    for m in available_migrations():
        first = m.sql.lstrip().splitlines()[0]
        assert first.startswith("-- Purpose:"), m.name
        assert "Grain:" in m.sql, m.name


def test_an_edited_applied_migration_is_refused(warehouse_path: Path) -> None:
    with connect(warehouse_path, timeout_s=5):
        pass
    con = duckdb.connect(str(warehouse_path))
    try:
        con.execute("UPDATE schema_version SET checksum = 'edited' WHERE version = 1")
        with pytest.raises(MigrationError, match="forward-only"):
            apply_migrations(con)
    finally:
        con.close()


def _frame(rows: list[tuple[str, int, float]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=["k", "n", "v"], orient="row").with_columns(
        pl.lit(datetime(2024, 1, 1, tzinfo=UTC)).alias("seen_at")
    )


def test_upsert_is_idempotent_and_counts_changes(warehouse_path: Path) -> None:
    with connect(warehouse_path, timeout_s=5, migrate=False) as con:
        con.execute(
            "CREATE TABLE t (k VARCHAR, n INTEGER, v DOUBLE, seen_at TIMESTAMPTZ, PRIMARY KEY (k, n))"
        )
        first = upsert(
            con, "t", _frame([("a", 1, 1.0), ("a", 2, 2.0)]), ("k", "n"), bookkeeping=("seen_at",)
        )
        assert (first.inserted, first.updated, first.unchanged) == (2, 0, 0)
        again = _frame([("a", 1, 1.0), ("a", 2, 2.0)]).with_columns(
            pl.lit(datetime(2025, 1, 1, tzinfo=UTC)).alias("seen_at")
        )
        second = upsert(con, "t", again, ("k", "n"), bookkeeping=("seen_at",))
        assert (second.inserted, second.updated, second.unchanged) == (0, 0, 2)
        # A re-run must not even touch bookkeeping columns of unchanged rows.
        seen = con.execute("SELECT DISTINCT seen_at FROM t").fetchall()
        assert seen == [(datetime(2024, 1, 1, tzinfo=UTC),)]
        revised = upsert(
            con, "t", _frame([("a", 2, 2.5), ("b", 1, 3.0)]), ("k", "n"), bookkeeping=("seen_at",)
        )
        assert (revised.inserted, revised.updated, revised.unchanged) == (1, 1, 0)
        rows = load_frame(con, "SELECT k, n, v FROM t ORDER BY k, n").rows()
    assert rows == [("a", 1, 1.0), ("a", 2, 2.5), ("b", 1, 3.0)]


HOLDER = textwrap.dedent(
    """
    import sys, time, duckdb
    con = duckdb.connect(sys.argv[1])
    print("holding", flush=True)
    time.sleep(float(sys.argv[2]))
    con.close()
    print("released", flush=True)
    time.sleep(30)
    """
)


def _hold(path: Path, seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "holding"
    return proc


def test_lock_held_by_another_process_raises_a_clear_error_naming_it(warehouse_path: Path) -> None:
    with connect(warehouse_path, timeout_s=5):
        pass
    holder = _hold(warehouse_path, 60)
    try:
        started = time.monotonic()
        with pytest.raises(WarehouseLockedError) as err, connect(warehouse_path, timeout_s=1.0):
            pass
        waited = time.monotonic() - started
        assert 1.0 <= waited < 10
        assert f"PID {holder.pid}" in str(err.value)
        assert str(warehouse_path.resolve()) in str(err.value)
    finally:
        holder.kill()
        holder.wait()


def test_lock_conflict_is_retried_until_the_holder_lets_go(warehouse_path: Path) -> None:
    with connect(warehouse_path, timeout_s=5) as con:
        con.execute("INSERT INTO equity VALUES ('paper', now(), 1, 0, 1)")
    holder = _hold(warehouse_path, 1.5)
    try:
        started = time.monotonic()
        with connect(warehouse_path, timeout_s=30) as con:
            assert con.execute("SELECT count(*) FROM equity").fetchall()[0][0] == 1
        # It met the lock and waited for the holder instead of failing at once.
        assert time.monotonic() - started >= 1.0
    finally:
        holder.kill()
        holder.wait()


def test_read_only_connection_to_missing_file_says_what_to_do(tmp_path: Path) -> None:
    with (
        pytest.raises(FileNotFoundError, match="make demo"),
        connect(tmp_path / "nope.duckdb", read_only=True),
    ):
        pass


def test_a_deleted_and_recreated_file_is_migrated_again(warehouse_path: Path) -> None:
    with connect(warehouse_path, timeout_s=5):
        pass
    warehouse_path.unlink()
    Path(f"{warehouse_path}.wal").unlink(missing_ok=True)
    with connect(warehouse_path, timeout_s=5) as con:
        assert current_version(con) == len(available_migrations())
