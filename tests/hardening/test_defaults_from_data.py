"""`train` and `backtest` read the data they are given: timeframe and dates from what is stored, printed once."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import exchange_calendars
import numpy as np
import polars as pl
import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from core.configs import BacktestConfig, TrainAgentConfig
from flows import cli
from flows.data_defaults import resolve_backtest_config, resolve_train_config


def _coverage(*rows: tuple[str, str, int, date, date]) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {
                "symbol": s,
                "timeframe": tf,
                "bars": n,
                "first_bar": datetime(a.year, a.month, a.day, 5, tzinfo=UTC),
                "last_bar": datetime(b.year, b.month, b.day, 5, tzinfo=UTC),
            }
            for s, tf, n, a, b in rows
        ]
    )


def test_unset_timeframe_and_dates_come_from_the_stored_bars() -> None:
    coverage = _coverage(
        ("SPY", "1Day", 5031, date(1999, 1, 4), date(2018, 12, 31)),
        ("SPY", "1Hour", 20, date(2024, 1, 2), date(2024, 1, 3)),
    )
    config, using = resolve_train_config(TrainAgentConfig(symbols=["SPY"]), coverage)
    assert config.timeframe == "1Day"
    assert (config.train_start, config.test_end) == (date(1999, 1, 4), date(2019, 1, 1))
    assert config.train_end == config.test_start == date(2015, 1, 1)
    assert using == (
        "using 1Day bars of SPY 1999-01-04 .. 2018-12-31: train 1999-01-04 .. 2014-12-31, "
        "test 2015-01-01 .. 2018-12-31"
    )
    # What the caller gives stays as given.
    given = TrainAgentConfig(symbols=["SPY"], timeframe="1Day", test_start=date(2017, 1, 1))
    config, _ = resolve_train_config(given, coverage)
    assert (config.train_end, config.test_start) == (date(2017, 1, 1), date(2017, 1, 1))


def test_the_backtest_defaults_to_the_models_held_out_range() -> None:
    coverage = _coverage(("SPY", "1Day", 5031, date(1999, 1, 4), date(2018, 12, 31)))
    params = {"test_range": ["2015-01-01", "2019-01-01"]}
    config, using = resolve_backtest_config(BacktestConfig(), coverage, "1Day", params)
    assert (config.start, config.end) == (date(2015, 1, 1), date(2019, 1, 1))
    assert using is not None and "the model's held-out range" in using
    config, _ = resolve_backtest_config(BacktestConfig(), coverage, "1Day", {})
    assert (config.start, config.end) == (date(2015, 1, 1), date(2019, 1, 1))


def daily_csv(path: Path) -> Path:
    """Two years of NYSE daily bars of one stock, no symbol column (as a user exports them)."""
    sessions = exchange_calendars.get_calendar("XNYS").sessions_in_range("2020-01-01", "2021-12-31")
    rng = np.random.default_rng(7)
    close = 100 * np.exp(np.cumsum(rng.normal(0.0004, 0.012, len(sessions))))
    lines = ["Date,Open,High,Low,Close,Volume"]
    for day, c in zip(sessions, close, strict=True):
        lines.append(f"{day:%Y-%m-%d},{c:.2f},{c * 1.01:.2f},{c * 0.99:.2f},{c:.2f},1000000")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.slow
@pytest.mark.prefect
@pytest.mark.usefixtures("prefect_harness")
def test_train_and_backtest_run_on_stored_daily_bars_without_dates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from core.settings import get_settings

    monkeypatch.setenv("TRADINGML_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    warehouse = str(tmp_path / "w.duckdb")
    csv = daily_csv(tmp_path / "acme.csv")
    ingest = ["ingest", "--source", "file", "--path", str(csv), "--symbol", "ACME"]
    assert cli.main([*ingest, "--asset-class", "stock", "--warehouse", warehouse]) == 0
    capsys.readouterr()

    train = ["train", "--symbols", "ACME", "--cycles", "2", "--seeds", "1", "2"]
    assert cli.main([*train, "--warehouse", warehouse]) == 0
    out, err = capsys.readouterr()
    using = [line for line in err.splitlines() if line.startswith("using ")]
    assert using == [
        "using 1Day bars of ACME 2020-01-02 .. 2021-12-31: train 2020-01-02 .. 2021-07-31, "
        "test 2021-08-01 .. 2021-12-31"
    ]
    for word in ("mean ± std (2)", "Buy & hold", "Momentum (30 bars)", "Sharpe", "exposure"):
        assert word in out, word

    assert cli.main(["backtest", "--symbol", "ACME", "--warehouse", warehouse]) == 0
    out, err = capsys.readouterr()
    assert "using 1Day bars of ACME 2020-01-02 .. 2021-12-31: backtest 2021-08-01 .. " in err
    assert "report:" in out


def test_a_flow_command_says_once_where_its_temporary_prefect_server_is(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "cmd_train", lambda args: 0)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert cli.main(["train"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "temporary Prefect server" in err[0], err
    assert "PREFECT_API_URL" in err[0]
    # With a server configured Prefect uses it, and nothing is said.
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:4200/api"}):
        assert cli.main(["train"]) == 0
    assert capsys.readouterr().err == ""
    # A command that runs no flow starts no server: nothing to say.
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        cli.main(["settings"])
    assert "temporary Prefect server" not in capsys.readouterr().err


def test_given_ranges_are_still_checked() -> None:
    with pytest.raises(ValueError, match="each range needs end after start"):
        TrainAgentConfig(train_start=date(2024, 5, 1), train_end=date(2024, 1, 1))
    with pytest.raises(ValueError, match="held-out data must come after"):
        TrainAgentConfig(train_end=date(2024, 5, 1), test_start=date(2024, 4, 1))
    with pytest.raises(ValueError, match="must be before end"):
        BacktestConfig(start=date(2024, 5, 1), end=date(2024, 5, 1))
    # One end given alone is filled from the data later, not checked against a demo default.
    assert BacktestConfig(end=date(2016, 1, 1)).end == date(2016, 1, 1)
