"""The real daily index bars shipped with `arch`."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest

from adapters.arch_daily import ArchDailyBarSource, daily_log_returns
from core.bar_schema import BAR_SCHEMA

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
    for f in (sp, nq):
        assert dict(f.schema) == BAR_SCHEMA
        assert f["ts"].is_sorted() and f["ts"].n_unique() == f.height
        sane = (
            (pl.col("low") <= pl.min_horizontal("open", "close"))
            & (pl.col("high") >= pl.max_horizontal("open", "close"))
            & (pl.col("low") > 0)
            & (pl.col("volume") >= 0)
        )
        assert f.select(sane.all()).item()
        assert f["trade_count"].is_null().all() and f["vwap"].is_null().all()
    # Unadjusted OHLC: the open of 2010-01-04 was 1116.56, the close 1132.99.
    assert (sp["open"][0], sp["close"][0]) == pytest.approx((1116.56, 1132.99), abs=0.01)


def test_range_is_half_open() -> None:
    source = ArchDailyBarSource()
    start, end = datetime(2010, 1, 5, 5, tzinfo=UTC), datetime(2010, 1, 8, 5, tzinfo=UTC)
    sp = next(source.fetch_bars(["^GSPC"], "1Day", start, end))
    assert sp["ts"].to_list() == [datetime(2010, 1, d, 5, tzinfo=UTC) for d in (5, 6, 7)]
    assert next(source.fetch_bars(["^GSPC"], "1Day", start, start)).height == 0


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
