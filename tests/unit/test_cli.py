"""The `tradingml` command answers user mistakes with one clear line and exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.cli import main
from warehouse.db import connect


@pytest.fixture
def migrated(warehouse_path: Path) -> Path:
    with connect(warehouse_path):
        pass
    return warehouse_path


def test_sql_prints_rows(migrated: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sql", "select 41 + 1 as answer", "--warehouse", str(migrated)]) == 0
    assert "42" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("query", "expected"),
    [("selec oops", "syntax error"), ("select * from nope", "nope does not exist")],
)
def test_bad_sql_is_one_line_not_a_traceback(
    migrated: Path, capsys: pytest.CaptureFixture[str], query: str, expected: str
) -> None:
    assert main(["sql", query, "--warehouse", str(migrated)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err and "Traceback" not in err


def test_sql_on_a_missing_warehouse_says_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sql", "select 1", "--warehouse", str(tmp_path / "none.duckdb")]) == 2
    assert "make demo" in capsys.readouterr().err


def test_invalid_flow_config_is_reported_plainly(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["ingest", "--source", "synthetic", "--start", "2024-02-01", "--end", "2024-01-01"])
    assert code == 2
    err = capsys.readouterr().err
    assert "invalid IngestBarsConfig: end (2024-01-01) must be after start (2024-02-01)" in err


def test_settings_hide_secrets(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from core.settings import get_settings

    monkeypatch.setenv("APCA_API_SECRET_KEY", "do-not-print-me")
    get_settings.cache_clear()
    try:
        assert main(["settings"]) == 0
    finally:
        get_settings.cache_clear()
    out = capsys.readouterr().out
    assert "do-not-print-me" not in out and "set (hidden)" in out
