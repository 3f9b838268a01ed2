"""The time-of-session features follow the traded symbol's calendar: the FX day, an exchange's own hours, NYSE by default."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from core.sessions import session_rule
from models.features import FeatureScaler, FeatureSpec, compute_features
from models.train import held_out_data

FX_OPEN = datetime(2024, 6, 2, 21, tzinfo=UTC)
"""Sunday 17:00 New York (EDT): the FX week opens."""


def _bars(symbol: str, ts: list[datetime]) -> pl.DataFrame:
    """Synthetic bars: a slow random walk with every column the features read."""
    rng = np.random.default_rng(0)
    close = 1.1 * np.exp(np.cumsum(rng.normal(0.0, 0.001, len(ts))))
    return pl.DataFrame(
        {
            "symbol": [symbol] * len(ts),
            "ts": pl.Series(ts, dtype=pl.Datetime("us", "UTC")),
            "open": close,
            "high": close * 1.001,
            "low": close * 0.999,
            "close": close,
            "volume": np.full(len(ts), 100.0),
            "vwap": close,
        }
    )


def _spec(symbol: str, timeframe: str) -> FeatureSpec:
    return FeatureSpec(
        symbols=(symbol,),
        timeframe=timeframe,
        return_windows=(1,),
        vol_windows=(3,),
        volume_window=3,
    )


def test_hourly_fx_time_of_session_runs_over_the_fx_day() -> None:
    ts = [FX_OPEN + timedelta(hours=h) for h in range(48)]
    frame = compute_features(_bars("EURUSD", ts), _spec("EURUSD", "1Hour"), calendar="24/5")
    hours = np.arange(48) % 24
    assert frame["time_of_session"].to_numpy() == pytest.approx(hours / 24, abs=1e-6)
    assert frame["time_to_close"].to_numpy() == pytest.approx(1 - hours / 24, abs=1e-6)
    # The FX day rolls at 17:00 New York: 21:00 UTC Sunday starts Monday's trading day.
    days = frame["session"].to_list()
    assert days[0] == days[23] == datetime(2024, 6, 3).date() != days[24]
    # On NYSE hours (the old rule for every non-coin symbol) Sunday evening has no session
    # and Monday 00:00 New York is 570 minutes before the stock open.
    nyse = compute_features(_bars("EURUSD", ts), _spec("EURUSD", "1Hour"))
    assert nyse["time_of_session"].to_list()[:7] == [0.0] * 7
    assert nyse["time_of_session"][7] == pytest.approx(-570 / 390, abs=1e-6)


def test_training_reads_the_rules_calendar() -> None:
    ts = [FX_OPEN + timedelta(hours=h) for h in range(120)]
    spec = _spec("EURUSD", "1Hour")
    names = spec.names()
    identity = FeatureScaler(names, [0.0] * len(names), [1.0] * len(names))
    rule = session_rule("EURUSD", "1Hour", "24/5")
    sessions, bars = held_out_data(
        _bars("EURUSD", ts), spec, identity, (ts[0], ts[-1] + timedelta(hours=1)), rule=rule
    )
    col = names.index("time_of_session")
    got = sessions.features[0, : bars.height, col].numpy()
    assert got == pytest.approx((np.arange(120) % 24) / 24, abs=1e-6)


def test_an_exchange_calendar_uses_its_own_hours() -> None:
    # London opens 08:00 BST (07:00 UTC) and closes 16:30: a 510-minute session.
    open_ = datetime(2024, 6, 3, 7, tzinfo=UTC)
    ts = [open_ + timedelta(minutes=m) for m in range(510)]
    frame = compute_features(_bars("VOD", ts), _spec("VOD", "1Min"), calendar="XLON")
    tos = frame["time_of_session"].to_numpy()
    assert tos[0] == 0.0 and tos[-1] == pytest.approx(509 / 510, abs=1e-6)
    assert frame["time_to_close"][0] == pytest.approx(1.0, abs=1e-6)


def test_nyse_stays_the_default_for_stocks() -> None:
    open_ = datetime(2024, 6, 3, 13, 30, tzinfo=UTC)  # 09:30 New York
    ts = [open_ + timedelta(minutes=m) for m in range(390)]
    bars = _bars("SPY", ts)
    default = compute_features(bars, _spec("SPY", "1Min"))
    named = compute_features(bars, _spec("SPY", "1Min"), calendar="XNYS")
    assert default["time_of_session"].to_list() == named["time_of_session"].to_list()
    assert default["time_of_session"][60] == pytest.approx(60 / 390, abs=1e-6)
