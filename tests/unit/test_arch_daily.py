"""The real daily index bars shipped with `arch`."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest

from adapters.arch_daily import ArchDailyBarSource, daily_log_returns

Y2010 = (datetime(2010, 1, 1, tzinfo=UTC), datetime(2011, 1, 1, tzinfo=UTC))


def test_real_sp500_and_nasdaq_daily_bars() -> None:
    frames = {
        f["symbol"][0]: f
        for f in ArchDailyBarSource().fetch_bars(["^GSPC", "^IXIC"], "1Day", *Y2010)
    }
    sp, nq = frames["^GSPC"], frames["^IXIC"]
    assert sp.height == nq.height == 252
    assert sp["source"].unique().to_list() == ["arch:sp500"]
    assert nq["source"].unique().to_list() == ["arch:nasdaq"]
    assert sp["timeframe"].unique().to_list() == ["1Day"]
    # Known real values: the S&P 500 closed 2010 at 1257.64.
    assert sp["close"][-1] == pytest.approx(1257.64, abs=0.01)
    assert (sp["high"] >= sp["low"]).all() and (sp["close"] > 0).all()


def test_daily_bars_start_at_new_york_midnight() -> None:
    sp = next(ArchDailyBarSource().fetch_bars(["^GSPC"], "1Day", *Y2010))
    assert sp["ts"][0] == datetime(2010, 1, 4, 5, tzinfo=UTC)  # EST
    july = sp.filter(pl.col("ts").dt.month() == 7)["ts"][0]
    assert july == datetime(2010, 7, 1, 4, tzinfo=UTC)  # EDT


def test_returns_for_calibration_cover_the_whole_series() -> None:
    r = daily_log_returns("^GSPC")
    assert len(r) == 5030
    assert 0.15 < r.std() * 252**0.5 < 0.25


def test_clear_errors() -> None:
    source = ArchDailyBarSource()
    with pytest.raises(ValueError, match="only has daily bars"):
        list(source.fetch_bars(["^GSPC"], "1Min", *Y2010))
    with pytest.raises(ValueError, match="knows"):
        list(source.fetch_bars(["^DJI"], "1Day", *Y2010))
