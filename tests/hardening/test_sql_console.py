"""`tradingml sql` is read-only for real: no file written or read outside the warehouse, no
extension installed or loaded, no URL, no setting turned back; each refusal is one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.cli import main
from warehouse.db import connect


@pytest.fixture
def console_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A migrated warehouse in tmp_path, which is also the working directory."""
    for name in ("warehouse.duckdb", "other.duckdb"):  # other: a real database to ATTACH
        with connect(tmp_path / name):
            pass
    (tmp_path / "outside.csv").write_text("secret,value\nkey,42\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _files(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


def _sql(root: Path, query: str) -> int:
    return main(["sql", query, "--warehouse", str(root / "warehouse.duckdb")])


REFUSED = [
    pytest.param("copy (select 1 as x) to 'x.csv'", "x.csv", id="copy-csv"),
    pytest.param("copy (select 1 as x) to 'x.parquet' (format parquet)", "x.parquet", id="copy-pq"),
    pytest.param("copy bars to 'bars.csv'", "bars.csv", id="copy-table"),
    pytest.param("EXPORT DATABASE 'dump'", "dump", id="export"),
    pytest.param("select * from read_csv('outside.csv')", "outside.csv", id="read-csv"),
    pytest.param("select * from 'outside.csv'", "outside.csv", id="replacement-scan"),
    pytest.param("select * from read_text('/etc/hostname')", "/etc/hostname", id="read-text"),
    pytest.param("select * from glob('*')", "*", id="glob"),
    pytest.param("INSTALL httpfs", "extensions", id="install"),
    pytest.param("LOAD httpfs", "extensions", id="load"),
    pytest.param("ATTACH 'other.duckdb' AS other", "other.duckdb", id="attach"),
    # With external access off DuckDB refuses the path itself: httpfs is never installed
    # or loaded, so no connection is attempted (the netguard cannot see DuckDB's own sockets).
    pytest.param(
        "select * from read_parquet('https://example.com/x.parquet')",
        "https://example.com/x.parquet",
        id="https-url",
    ),
    pytest.param(
        "ATTACH 'https://example.com/x.duckdb' AS remote",
        "https://example.com/x.duckdb",
        id="attach-url",
    ),
]


@pytest.mark.parametrize(("query", "named"), REFUSED)
def test_file_extension_and_network_access_is_refused(
    console_dir: Path, capsys: pytest.CaptureFixture[str], query: str, named: str
) -> None:
    before = _files(console_dir)
    assert _sql(console_dir, query) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: refused: the SQL console is read-only"), lines[0]
    assert named in lines[0]
    assert captured.out == ""
    assert _files(console_dir) == before  # nothing written, not even a partial file


@pytest.mark.parametrize(
    "query",
    [
        "SET enable_external_access = true",
        "SET lock_configuration = false",
        "RESET enable_external_access",
        "SET GLOBAL autoinstall_known_extensions = true",
        "PRAGMA enable_external_access = true",
        "SET enable_external_access = true; copy (select 1) to 'x.csv'",
    ],
)
def test_the_restrictions_cannot_be_set_back(
    console_dir: Path, capsys: pytest.CaptureFixture[str], query: str
) -> None:
    before = _files(console_dir)
    assert _sql(console_dir, query) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: refused: the SQL console's settings are locked"), lines[0]
    assert _files(console_dir) == before


@pytest.mark.parametrize(
    "query",
    [
        "drop view v_daily_pnl",
        "insert into bars_quarantine select * from bars_quarantine",
        "create table t (x int)",
        "delete from bars",
    ],
)
def test_writes_to_the_warehouse_are_refused_in_one_line(
    console_dir: Path, capsys: pytest.CaptureFixture[str], query: str
) -> None:
    before = _files(console_dir)
    assert _sql(console_dir, query) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: refused: the SQL console is read-only ("), lines[0]
    assert _files(console_dir) == before


@pytest.mark.parametrize(
    "query",
    [
        "select 41 + 1 as answer",
        "select count(*) as answer from v_daily_pnl",
        "select count(*) as answer from v_model_leaderboard",
        "select current_setting('TimeZone') as answer",
    ],
)
def test_queries_and_views_still_work(
    console_dir: Path, capsys: pytest.CaptureFixture[str], query: str
) -> None:
    assert _sql(console_dir, query) == 0
    out = capsys.readouterr().out
    assert "answer" in out and "1 row(s)" in out


@pytest.mark.parametrize("query", ["", "   ", "\n\t", "-- only a comment", ";"])
def test_an_empty_query_is_one_line(
    console_dir: Path, capsys: pytest.CaptureFixture[str], query: str
) -> None:
    assert _sql(console_dir, query) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "query" in lines[0] and "Traceback" not in captured.err


def test_a_multi_line_duckdb_error_is_shown_as_one_line(
    console_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The CSV sniffer's message runs to ~20 lines; reading the warehouse file itself is allowed.
    assert _sql(console_dir, "select * from read_csv('warehouse.duckdb')") == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
