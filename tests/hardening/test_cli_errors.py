"""Every `tradingml` error is one line on stderr and a non-zero exit; tracebacks only with --debug.

Prefect's console logging and DuckDB's exit-time "nanobind: leaked ..." warnings show only
in a real process, so the flow failures run `.venv/bin/tradingml` as a subprocess (against
the test harness's Prefect API); folders that cannot be written are refused before any
work, naming the path and the setting to change.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

import flows.cli as cli
from core.configs import BacktestConfig
from core.settings import NotWritableError, get_settings, unwritable_reason
from flows.backtest import backtest
from flows.cli import main
from tests.hardening.trading_world import World, build_world
from warehouse.db import connect

TRADINGML = Path(sys.executable).parent / "tradingml"
PREFECT_LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} \| [A-Z]+ +\| ")


def stderr_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("cli-errors"))


@pytest.fixture
def empty_warehouse(tmp_path: Path) -> Path:
    path = tmp_path / "warehouse.duckdb"
    with connect(path):
        pass  # migrated: every table, no model
    return path


def run_cli(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`tradingml ARGS` in a fresh process, on the harness's Prefect API (no server start)."""
    from prefect.settings import PREFECT_API_URL

    env = {
        **os.environ,
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "TRADINGML_DATA_DIR": str(tmp_path / "data"),
    }
    env.pop("TRADINGML_DEBUG", None)
    env.pop("PREFECT_LOGGING_HANDLERS_CONSOLE_CLASS", None)
    return subprocess.run(
        [str(TRADINGML), *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


# ---- a failed flow run, in a real process --------------------------------------------


@pytest.mark.slow
@pytest.mark.prefect
@pytest.mark.usefixtures("prefect_harness")
def test_a_failed_flow_is_one_error_line_without_traceback_or_nanobind(
    empty_warehouse: Path, tmp_path: Path
) -> None:
    done = run_cli(["backtest", "--warehouse", str(empty_warehouse)], tmp_path)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "nanobind" not in done.stderr, done.stderr
    # Prefect's own log lines may stay (the run's start and its Failed state); everything
    # else on stderr is the one error line.
    others = [line for line in stderr_lines(done.stderr) if not PREFECT_LOG_LINE.match(line)]
    assert len(others) == 1, done.stderr
    assert others[0].startswith("error: no dqn model for SPY"), done.stderr


@pytest.mark.slow
@pytest.mark.prefect
@pytest.mark.usefixtures("prefect_harness")
def test_debug_shows_the_traceback_but_still_no_nanobind_noise(
    empty_warehouse: Path, tmp_path: Path
) -> None:
    done = run_cli(["backtest", "--warehouse", str(empty_warehouse), "--debug"], tmp_path)
    assert done.returncode == 2, done.stderr
    assert "Traceback (most recent call last)" in done.stderr, done.stderr
    assert "nanobind" not in done.stderr, done.stderr
    assert any(line.startswith("error: no dqn model") for line in stderr_lines(done.stderr))


# ---- any exception, in process ------------------------------------------------------


def boom(args: object) -> int:
    raise KeyError("boom")


def test_an_unexpected_error_is_one_line_with_its_type_and_a_hint(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("TRADINGML_DEBUG", raising=False)
    monkeypatch.setattr(cli, "cmd_settings", boom)
    assert main(["settings"]) == 1
    assert stderr_lines(capsys.readouterr().err) == [
        "error: KeyError: 'boom' (run with --debug for the traceback)"
    ]


@pytest.mark.parametrize(
    "argv", [["--debug", "settings"], ["settings", "--debug"]], ids=["before", "after"]
)
def test_debug_flag_prints_the_traceback_then_the_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    monkeypatch.setenv("TRADINGML_DEBUG", "")  # main sets it; restored after the test
    monkeypatch.setattr(cli, "cmd_settings", boom)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and 'raise KeyError("boom")' in err
    assert stderr_lines(err)[-1] == "error: KeyError: 'boom'"


def test_the_debug_variable_still_shows_tracebacks(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TRADINGML_DEBUG", "1")
    monkeypatch.setattr(cli, "cmd_settings", boom)
    assert main(["settings"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert stderr_lines(err)[-1] == "error: KeyError: 'boom'"


# ---- folders that cannot be written ---------------------------------------------------


def ledger_rows(warehouse: Path) -> int:
    with connect(warehouse) as con:
        row = con.execute(
            "SELECT (SELECT count(*) FROM decisions) + (SELECT count(*) FROM orders)"
            " + (SELECT count(*) FROM equity)"
        ).fetchall()[0]
    return int(row[0])


def test_a_data_dir_that_cannot_be_made_is_refused_before_any_work(
    world: World,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A regular file where a folder should be: refused even for root (unlike chmod).
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    monkeypatch.setenv("TRADINGML_DATA_DIR", str(blocker / "data"))
    get_settings.cache_clear()
    mine = world.copy(tmp_path / "world")
    argv = [
        "backtest",
        "--start",
        "2024-07-01",
        "--end",
        "2024-07-03",
        "--warehouse",
        str(mine.warehouse),
    ]
    assert main(argv) == 2
    lines = stderr_lines(capsys.readouterr().err)
    assert len(lines) == 1, lines
    assert str(blocker / "data") in lines[0] and "TRADINGML_DATA_DIR" in lines[0]
    assert "is a file, not a folder" in lines[0]
    assert ledger_rows(mine.warehouse) == 0  # nothing ran
    # Reading needs no data dir: sql still answers.
    assert main(["sql", "select count(*) AS n FROM bars", "--warehouse", str(mine.warehouse)]) == 0


def test_a_read_only_data_dir_is_refused(
    world: World,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o555)
    try:
        if os.access(data, os.W_OK):
            pytest.skip("running as root: permission bits do not stop this process")
        monkeypatch.setenv("TRADINGML_DATA_DIR", str(data))
        get_settings.cache_clear()
        mine = world.copy(tmp_path / "world")
        assert (
            main(["trade", "--replay-date", "2024-07-01", "--warehouse", str(mine.warehouse)]) == 2
        )
        lines = stderr_lines(capsys.readouterr().err)
        assert len(lines) == 1 and "read-only" in lines[0] and str(data) in lines[0], lines
        assert ledger_rows(mine.warehouse) == 0
    finally:
        data.chmod(0o755)


def test_a_warehouse_whose_folder_cannot_be_made_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    assert main(["ingest", "--warehouse", str(blocker / "warehouse.duckdb")]) == 2
    lines = stderr_lines(capsys.readouterr().err)
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"error: the warehouse {blocker / 'warehouse.duckdb'}")
    assert "TRADINGML_WAREHOUSE" in lines[0]


@pytest.mark.prefect
@pytest.mark.usefixtures("prefect_harness")
def test_the_backtest_flow_checks_its_reports_folder_first(world: World, tmp_path: Path) -> None:
    """A deployment run (no CLI in front) finds it too, before any ledger row is written."""
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    mine = world.copy(tmp_path / "world")
    config = BacktestConfig(
        start=date(2024, 7, 1),
        end=date(2024, 7, 3),
        warehouse=str(mine.warehouse),
        reports_dir=str(blocker / "reports"),
    )
    with pytest.raises(NotWritableError, match=r"the reports folder .* is a file, not a folder"):
        backtest(config)
    assert ledger_rows(mine.warehouse) == 0


def test_unwritable_reason(tmp_path: Path) -> None:
    assert unwritable_reason(tmp_path / "new" / "deeper") is None  # made on demand: fine
    assert not (tmp_path / "new").exists()  # and the check made nothing
    (tmp_path / "f").write_text("x")
    assert unwritable_reason(tmp_path / "f" / "sub") == f"{tmp_path / 'f'} is a file, not a folder"
    assert unwritable_reason(tmp_path / "f") == f"{tmp_path / 'f'} is a file, not a folder"
