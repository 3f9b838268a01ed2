"""Live (bar-by-bar) features equal the batch features training and backtests use."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl
import pytest

from adapters.synthetic import SyntheticBarSource, SyntheticConfig
from models.features import FeatureSpec, compute_features
from trading.calendar import NYSECalendar
from trading.live_features import LiveFeatures

START = datetime(2024, 3, 4, tzinfo=UTC)
END = datetime(2024, 3, 9, tzinfo=UTC)


def _bars(symbols: list[str], start: datetime, end: datetime) -> pl.DataFrame:
    source = SyntheticBarSource(SyntheticConfig(seed=11))
    return pl.concat(list(source.fetch_bars(symbols, "1Min", start, end)))


NEW_YORK = ZoneInfo("America/New_York")


def _session_times(ts: datetime) -> tuple[float, float]:
    session = NYSECalendar().session_on(ts.astimezone(NEW_YORK).date())
    assert session is not None
    return (
        int((ts - session.open).total_seconds() // 60) / 390.0,
        int((session.close - ts).total_seconds() // 60) / 390.0,
    )


def _coin_times(ts: datetime) -> tuple[float, float]:
    frac = (ts.hour * 60 + ts.minute) / 1440.0
    return frac, 1.0 - frac


@pytest.mark.parametrize(
    ("spec", "times"),
    [
        (FeatureSpec(), _session_times),
        (FeatureSpec(symbols=("BTC/USD", "ETH/USD"), return_windows=(1, 15, 240)), _coin_times),
    ],
    ids=["etfs", "coins"],
)
def test_bar_by_bar_rows_equal_the_batch_rows(spec: FeatureSpec, times: object) -> None:
    bars = _bars(list(spec.symbols), START, END)
    batch = compute_features(bars, spec)
    live = LiveFeatures(spec, times)  # type: ignore[arg-type]
    names = spec.names()
    checked = 0
    by_minute = bars.sort("ts", "symbol").partition_by("ts", maintain_order=True)
    expected = {
        row[0]: np.asarray(row[1:], dtype=np.float32)
        for row in batch.select("ts", *names).iter_rows()
    }
    worst = 0.0
    for frame in by_minute:
        ts = frame.get_column("ts")[0]
        live.push_frame(frame)
        got = live.row(ts)
        if ts not in expected:
            continue
        assert got is not None
        want = expected[ts]
        worst = max(worst, float(np.max(np.abs(got - want) / (np.abs(want) + 1e-6))))
        checked += 1
    assert checked == batch.height
    # float32 rounding of values computed two ways: equal to the last bit or one ulp.
    assert worst < 1e-5, worst


def test_a_bar_that_is_not_the_newest_gives_no_row() -> None:
    spec = FeatureSpec()
    bars = _bars(list(spec.symbols), START, START + timedelta(days=1))
    live = LiveFeatures(spec, _session_times)
    live.push_frame(bars)
    first = bars.get_column("ts").min()
    assert isinstance(first, datetime)
    assert live.row(first) is None


def test_coin_time_of_session_stays_within_the_day() -> None:
    """Regression: hour * 60 + minute overflowed Int8 and made coin times negative."""
    spec = FeatureSpec(symbols=("BTC/USD",))
    frame = compute_features(_bars(["BTC/USD"], START, START + timedelta(days=1)), spec)
    tos = frame.get_column("time_of_session")
    assert tos.min() == 0.0
    assert tos.max() == pytest.approx(1439 / 1440)
    assert frame.filter(pl.col("ts") == START + timedelta(hours=2, minutes=8))[
        "time_of_session"
    ].item() == pytest.approx(128 / 1440)
