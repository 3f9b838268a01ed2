"""The synthetic generator: deterministic, range-independent, calendar-true, and statistically sane."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from adapters.synthetic import SyntheticBarSource, SyntheticConfig, calibrated_garch
from core.bar_quality import validate_bars
from core.bar_schema import BAR_SCHEMA, PRICE_COLUMNS
from core.universe import EQUITY_SYMBOLS


def utc(y: int, m: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return datetime(y, m, d, h, mi, tzinfo=UTC)


def bars(symbol: str, start: datetime, end: datetime, **cfg: object) -> pl.DataFrame:
    source = SyntheticBarSource(SyntheticConfig(**cfg))  # type: ignore[arg-type]
    return pl.concat(list(source.fetch_bars([symbol], "1Min", start, end)))


def log_returns(df: pl.DataFrame) -> np.ndarray:
    return np.log(df.get_column("close").to_numpy() / df.get_column("open").to_numpy())


WEEK = (utc(2024, 3, 4), utc(2024, 3, 9))


def test_same_seed_same_bars_other_seed_other_bars() -> None:
    a = bars("SPY", *WEEK, seed=1)
    assert a.equals(bars("SPY", *WEEK, seed=1))
    assert not a.equals(bars("SPY", *WEEK, seed=2))


@pytest.mark.parametrize("symbol", ["SPY", "ETH/USD"])
def test_bars_do_not_depend_on_the_requested_range(symbol: str) -> None:
    long = bars(symbol, utc(2024, 2, 26), utc(2024, 3, 16))
    short = bars(symbol, utc(2024, 3, 6, 15, 7), utc(2024, 3, 8))
    sliced = long.filter(
        (pl.col("ts") >= utc(2024, 3, 6, 15, 7)) & (pl.col("ts") < utc(2024, 3, 8))
    )
    assert short.height > 0
    assert short.equals(sliced)


def test_a_symbol_alone_equals_the_same_symbol_in_a_batch() -> None:
    source = SyntheticBarSource()
    batch = {f["symbol"][0]: f for f in source.fetch_bars(["SPY", "VTI", "BTC/USD"], "1Min", *WEEK)}
    assert batch["VTI"].equals(bars("VTI", *WEEK))


def test_every_row_is_labelled_synthetic_and_ohlc_is_consistent() -> None:
    source = SyntheticBarSource()
    symbols = ["SPY", "VXUS", "BND", "BTC/USD", "SHIB/USD"]
    frames = list(source.fetch_bars(symbols, "1Min", *MONTH))
    assert [f["symbol"][0] for f in frames] == symbols
    df = pl.concat(frames)
    assert dict(df.schema) == BAR_SCHEMA
    assert df.get_column("source").unique().to_list() == ["synthetic"]
    consistent = (
        (pl.col("high") >= pl.max_horizontal("open", "close"))
        & (pl.col("low") <= pl.min_horizontal("open", "close"))
        & (pl.col("low") > 0)
        & pl.col("vwap").is_between(pl.col("low"), pl.col("high"))
        & (pl.col("volume") > 0)
        & (pl.col("trade_count") >= 1)
    )
    assert df.select(consistent.all()).item()
    checked = validate_bars(df, utc(2030, 1, 1))
    assert checked.quarantine.height == 0 and checked.good.height == df.height
    for f in frames:
        assert f["ts"].is_sorted() and f["ts"].n_unique() == f.height
        # open = previous close within a session; coins have one endless session.
        prev_close = f["close"].shift(1)
        same = f["ts"].dt.date() == f["ts"].dt.date().shift(1)
        continuous = same if f["symbol"][0] in EQUITY_SYMBOLS else prev_close.is_not_null()
        assert (f["open"] == prev_close).filter(continuous).all()
    spy = frames[0].select(PRICE_COLUMNS).to_numpy()
    assert np.array_equal(spy, np.round(spy, 2))  # equities trade in cents


def test_daily_dynamics_are_calibrated_on_the_real_sp500() -> None:
    g = calibrated_garch()
    assert 0 < g.alpha < 1 and 0 < g.beta < 1 and 2 < g.nu < 30
    omega, alpha, beta = g.simulated()
    assert alpha + beta <= 0.99 + 1e-12
    assert omega / (1 - alpha - beta) == pytest.approx(g.sample_var)
    spy = bars("SPY", utc(2024, 1, 1), utc(2025, 1, 1))
    daily = spy.group_by(spy["ts"].dt.date()).agg(pl.col("open").first(), pl.col("close").last())
    assert daily.height == 252
    assert spy["open"][0] == pytest.approx(470, rel=0.02)  # pinned on 2024-01-02
    assert 0.004 < log_returns(daily).std() < 0.025


def per_day(df: pl.DataFrame) -> dict[date, int]:
    counts = df.group_by(pl.col("ts").dt.convert_time_zone("America/New_York").dt.date()).len()
    return dict(counts.iter_rows())


def test_nyse_calendar_holidays_half_days_and_full_sessions() -> None:
    df = bars("SPY", utc(2024, 7, 1), utc(2024, 7, 8))
    assert per_day(df) == {
        date(2024, 7, 1): 390,
        date(2024, 7, 2): 390,
        date(2024, 7, 3): 210,  # half day: 13:00 close
        date(2024, 7, 5): 390,  # 4 July is a holiday; 6-7 July a weekend
    }
    xmas = per_day(bars("VTI", utc(2024, 11, 25), utc(2024, 12, 31)))
    assert date(2024, 11, 28) not in xmas and xmas[date(2024, 11, 29)] == 210
    assert date(2024, 12, 25) not in xmas and xmas[date(2024, 12, 24)] == 210


def test_sessions_follow_daylight_saving_time() -> None:
    jan = bars("SPY", utc(2024, 1, 3), utc(2024, 1, 4))
    jul = bars("SPY", utc(2024, 7, 2), utc(2024, 7, 3))
    assert jan["ts"].min() == utc(2024, 1, 3, 14, 30) and jan["ts"].max() == utc(2024, 1, 3, 20, 59)
    assert jul["ts"].min() == utc(2024, 7, 2, 13, 30) and jul["ts"].max() == utc(2024, 7, 2, 19, 59)


def test_coins_trade_every_minute_of_every_day() -> None:
    df = bars("DOGE/USD", utc(2024, 3, 1), utc(2024, 3, 4))  # Friday to Sunday
    assert df.height == 3 * 1440
    assert df["ts"].diff().drop_nulls().unique().to_list() == [timedelta(minutes=1)]


MONTH = (utc(2024, 3, 1), utc(2024, 4, 1))


def test_etfs_are_correlated_as_designed_and_coins_are_more_volatile() -> None:
    r = {s: log_returns(bars(s, *MONTH)) for s in ("SPY", "VTI", "BND")}
    assert np.corrcoef(r["SPY"], r["VTI"])[0, 1] > 0.85
    assert abs(np.corrcoef(r["SPY"], r["BND"])[0, 1]) < 0.3
    btc = bars("BTC/USD", *MONTH)
    daily = btc.group_by(btc["ts"].dt.date()).agg(pl.col("close").last(), pl.col("open").first())
    spy = bars("SPY", *MONTH)
    spy_daily = spy.group_by(spy["ts"].dt.date()).agg(
        pl.col("close").last(), pl.col("open").first()
    )
    assert log_returns(daily).std() > 2 * log_returns(spy_daily).std()


def test_intraday_volatility_and_volume_are_u_shaped() -> None:
    df = bars("SPY", *MONTH).with_columns(
        pl.int_range(pl.len()).over(pl.col("ts").dt.date()).alias("minute"),
        pl.Series("absret", np.abs(log_returns(bars("SPY", *MONTH)))),
    )
    edges = df.filter((pl.col("minute") < 30) | (pl.col("minute") >= 360))
    middle = df.filter((pl.col("minute") >= 150) & (pl.col("minute") < 240))
    assert edges["absret"].mean() > 1.5 * middle["absret"].mean()  # type: ignore[operator]
    assert edges["volume"].mean() > 1.5 * middle["volume"].mean()  # type: ignore[operator]


def lag1(x: np.ndarray) -> float:
    return float(np.corrcoef(x[1:], x[:-1])[0, 1])


def test_planted_autocorrelation_is_measurable() -> None:
    plain = log_returns(bars("SPY", *MONTH))
    planted = log_returns(bars("SPY", *MONTH, signal="autocorr", signal_strength=0.15))
    assert abs(lag1(plain)) < 0.03
    assert lag1(planted) > 0.08


def test_planted_sentiment_leads_returns() -> None:
    source = SyntheticBarSource(
        SyntheticConfig(signal="sentiment", signal_strength=0.1, sentiment_lag_minutes=5)
    )
    b = pl.concat(list(source.fetch_bars(["ETH/USD"], "1Min", *MONTH)))
    s = source.fetch_sentiment(["ETH/USD"], *MONTH)
    assert s.height == b.height and s["source"].unique().to_list() == ["synthetic"]
    assert s["sentiment"].min() >= -1 and s["sentiment"].max() <= 1  # type: ignore[operator]
    b = b.with_columns(pl.Series("r", log_returns(b)))
    lagged = b.join(s.with_columns(pl.col("ts") + pl.duration(minutes=5)), on="ts")
    stale = b.join(s.with_columns(pl.col("ts") + pl.duration(minutes=60)), on="ts")
    assert np.corrcoef(lagged["r"], lagged["sentiment"])[0, 1] > 0.15
    assert abs(np.corrcoef(stale["r"], stale["sentiment"])[0, 1]) < 0.1


def test_sentiment_only_with_the_sentiment_signal() -> None:
    with pytest.raises(ValueError, match="signal='sentiment'"):
        SyntheticBarSource().fetch_sentiment(["SPY"], *WEEK)


def test_clear_errors_for_bad_requests() -> None:
    source = SyntheticBarSource()
    with pytest.raises(ValueError, match="1Min"):
        list(source.fetch_bars(["SPY"], "1Day", *WEEK))
    with pytest.raises(ValueError, match="no symbol 'QQQ'"):
        list(source.fetch_bars(["QQQ"], "1Min", *WEEK))
    with pytest.raises(ValueError, match="from 2015-01-01"):
        list(source.fetch_bars(["SPY"], "1Min", utc(2010, 1, 1), utc(2010, 2, 1)))
    with pytest.raises(ValueError, match="timezone-aware"):
        list(source.fetch_bars(["SPY"], "1Min", datetime(2024, 3, 4), datetime(2024, 3, 5)))
