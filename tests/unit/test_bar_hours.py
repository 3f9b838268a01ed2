"""Regular hours: pre- and post-market bars of stocks are quarantined at ingest, coins never."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl

from core.bar_hours import OUTSIDE_HOURS, quarantine_outside_hours
from core.bar_quality import validate_bars

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def _bars(symbol: str, timeframe: str, stamps: list[datetime]) -> pl.DataFrame:
    n = len(stamps)
    return pl.DataFrame(
        {
            "symbol": [symbol] * n,
            "timeframe": [timeframe] * n,
            "ts": stamps,
            "open": [100.0] * n,
            "high": [101.0] * n,
            "low": [99.0] * n,
            "close": [100.5] * n,
            "volume": [10.0] * n,
            "trade_count": [1] * n,
            "vwap": [100.2] * n,
            "source": ["test"] * n,
        },
        schema_overrides={"ts": pl.Datetime("us", "UTC")},
    )


def _utc(day: str, hhmm: str) -> datetime:
    return datetime.fromisoformat(f"{day}T{hhmm}:00+00:00")


def test_minute_bars_outside_the_nyse_session_are_quarantined_with_the_reason() -> None:
    # 2024-07-02: a full session, 13:30-20:00 UTC (EDT); 2024-07-03: a half day to 17:00 UTC;
    # 2024-07-04: a holiday; 2024-01-02: winter, 14:30-21:00 UTC.
    stamps = {
        _utc("2024-07-02", "08:00"): False,  # pre-market
        _utc("2024-07-02", "13:29"): False,  # the minute before the open
        _utc("2024-07-02", "13:30"): True,  # the open
        _utc("2024-07-02", "19:59"): True,  # the last minute
        _utc("2024-07-02", "20:00"): False,  # post-market
        _utc("2024-07-03", "16:59"): True,  # the half day's last minute
        _utc("2024-07-03", "17:00"): False,  # after the half day's close
        _utc("2024-07-04", "15:00"): False,  # Independence Day
        _utc("2024-01-02", "14:29"): False,  # winter: the open is 14:30 UTC
        _utc("2024-01-02", "14:30"): True,
        _utc("2024-01-02", "20:30"): True,
        _utc("2024-01-02", "21:00"): False,
    }
    checked = validate_bars(_bars("SPY", "1Min", sorted(stamps)), NOW)
    held = quarantine_outside_hours(checked, {"SPY": "XNYS"})
    kept = set(held.good.get_column("ts").to_list())
    assert kept == {ts for ts, inside in stamps.items() if inside}
    out = held.quarantine.filter(pl.col("reason") == OUTSIDE_HOURS)
    assert set(out.get_column("ts").to_list()) == {
        ts for ts, inside in stamps.items() if not inside
    }
    assert out.get_column("detail").str.contains("pre- or post-market").all()
    assert out.get_column("row_hash").null_count() == 0
    # Every row is somewhere: nothing lost.
    assert held.good.height + held.quarantine.height == len(stamps)


def test_an_hourly_bar_that_overlaps_the_open_is_kept() -> None:
    # 13:00-14:00 UTC holds 13:30-14:00 of the session; 20:00-21:00 holds none of it.
    stamps = [_utc("2024-07-02", h) for h in ("12:00", "13:00", "19:00", "20:00")]
    held = quarantine_outside_hours(
        validate_bars(_bars("SPY", "1Hour", stamps), NOW), {"SPY": "XNYS"}
    )
    assert held.good.get_column("ts").to_list() == stamps[1:3]
    assert held.quarantine.get_column("ts").to_list() == [stamps[0], stamps[3]]


def test_coins_fx_daily_bars_and_unknown_symbols_are_untouched() -> None:
    night = _utc("2024-07-06", "03:00")  # a Saturday night
    frames = pl.concat(
        [
            _bars("BTC/USD", "1Min", [night]),
            _bars("EURUSD", "1Min", [night - timedelta(days=2)]),
            _bars("SPY", "1Day", [_utc("2024-07-02", "04:00")]),
            _bars("QQQ", "1Min", [night]),  # no calendar given: not checked
        ]
    )
    checked = validate_bars(frames, NOW)
    held = quarantine_outside_hours(checked, {"BTC/USD": "24/7", "EURUSD": "24/5", "SPY": "XNYS"})
    assert held.good.height == 4 and held.quarantine.height == 0
