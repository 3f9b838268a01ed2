"""Live (bar-by-bar) features equal the batch features training and backtests use."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from adapters.synthetic import SyntheticBarSource, SyntheticConfig
from models.features import FeatureSpec, compute_features
from trading.live_features import LiveFeatures

START = datetime(2024, 3, 4, tzinfo=UTC)
END = datetime(2024, 3, 9, tzinfo=UTC)


def _bars(symbols: list[str], start: datetime, end: datetime) -> pl.DataFrame:
    source = SyntheticBarSource(SyntheticConfig(seed=11))
    return pl.concat(list(source.fetch_bars(symbols, "1Min", start, end)))


FX_START = datetime(2024, 3, 3, 22, tzinfo=UTC)  # Sunday 17:00 New York (EST)
FX_END = datetime(2024, 3, 16, tzinfo=UTC)  # spans the US DST switch of 10 March


def _hourly(symbols: list[str], fx_week: bool) -> pl.DataFrame:
    """SYNTHETIC hourly bars: the synthetic coin minutes summed into hours under other names.

    fx_week keeps the FX week only (Sunday 17:00 to Friday 17:00 New York).
    """
    coins = ["BTC/USD", "ETH/USD"][: len(symbols)]
    minutes = _bars(coins, FX_START, FX_END)
    hours = (
        minutes.sort("ts")
        .group_by_dynamic("ts", every="1h", group_by="symbol")
        .agg(
            pl.col("open").first(),
            pl.col("high").max(),
            pl.col("low").min(),
            pl.col("close").last(),
            pl.col("volume").sum(),
            pl.col("vwap").mean(),
        )
        .with_columns(pl.col("symbol").replace(dict(zip(coins, symbols, strict=True))))
    )
    if fx_week:
        ny = pl.col("ts").dt.convert_time_zone("America/New_York").dt.offset_by("7h")
        hours = hours.filter(ny.dt.weekday() <= 5)
    return hours


@pytest.mark.parametrize(
    ("spec", "calendar", "hourly"),
    [
        (FeatureSpec(), None, None),
        (FeatureSpec(), "XNYS", None),
        (FeatureSpec(symbols=("BTC/USD", "ETH/USD"), return_windows=(1, 15, 240)), None, None),
        (
            FeatureSpec(symbols=("EURUSD", "GBPUSD"), timeframe="1Hour", return_windows=(1, 5)),
            "24/5",
            True,
        ),
        (
            FeatureSpec(symbols=("SOLUSD",), timeframe="1Hour", return_windows=(1, 5)),
            "24/7",
            False,
        ),
        # Bars around the clock on London's schedule: those outside its sessions read 0.
        (
            FeatureSpec(symbols=("VOD",), timeframe="1Hour", return_windows=(1, 5)),
            "XLON",
            False,
        ),
    ],
    ids=["etfs", "etfs-xnys", "coins", "fx-hourly-24/5", "hourly-24/7", "hourly-xlon"],
)
def test_bar_by_bar_rows_equal_the_batch_rows(
    spec: FeatureSpec, calendar: str | None, hourly: bool | None
) -> None:
    """Time of session included: the live side takes the calendar training's features took
    (an FX model on the NYSE clock, or a 24/7 one named without a '/', saw other values)."""
    if hourly is None:
        bars = _bars(list(spec.symbols), START, END)
    else:
        bars = _hourly(list(spec.symbols), hourly)
    batch = compute_features(bars, spec, calendar=calendar)
    if hourly is not None:
        # Not all zeros: the comparison below covers a real time of session.
        assert batch.get_column("time_of_session").n_unique() >= 9
    _assert_live_equals_batch(bars, spec, calendar, batch)


def _assert_live_equals_batch(
    bars: pl.DataFrame, spec: FeatureSpec, calendar: str | None, batch: pl.DataFrame
) -> None:
    live = LiveFeatures(spec, calendar)
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


def test_missing_input_minutes_carry_forward_with_their_staleness_alike_in_batch_and_live() -> None:
    """FeatureSpec.stale_bars: VXUS and BND lose a third of their minutes at random and a
    20-minute block (longer than the reach); the traded SPY keeps all of its own."""
    spec = FeatureSpec(stale_bars=5)
    bars = _bars(list(spec.symbols), START, START + timedelta(days=2))
    rng = np.random.default_rng(3)
    inputs = pl.col("symbol").is_in(["VXUS", "BND"])
    first = bars.get_column("ts").min()
    assert isinstance(first, datetime)
    block = (pl.col("ts") >= first + timedelta(hours=2)) & (
        pl.col("ts") < first + timedelta(hours=2, minutes=20)
    )
    keep = pl.Series(rng.random(bars.height) > 1 / 3)
    gappy = bars.filter(~inputs | (keep & ~block))
    batch = compute_features(gappy, spec)
    assert "a2_stale" in spec.names() and "a0_stale" not in spec.names()
    stale = batch.get_column("a2_stale")
    # Fresh, carried and out-of-reach rows all occur.
    assert (stale == 0.0).sum() > 0 and ((stale > 0) & (stale < 1)).sum() > 0
    assert (stale == 1.0).sum() >= 10
    # A carried row holds the newest bar's values; beyond reach they read 0.
    carried = batch.filter((pl.col("a2_stale") > 0) & (pl.col("a2_stale") < 1))
    assert (carried.get_column("a2_range") != 0).sum() > 0
    gone = batch.filter(pl.col("a2_stale") == 1.0)
    assert (gone.get_column("a2_range") == 0).all()
    # Without stale_bars the same gaps read 0 and there is no staleness column.
    plain = compute_features(gappy, FeatureSpec())
    assert "a2_stale" not in plain.columns
    _assert_live_equals_batch(gappy, spec, None, batch)


def test_stale_bars_changes_the_hash_only_when_set() -> None:
    assert FeatureSpec(stale_bars=0).schema_hash() == FeatureSpec().schema_hash()
    assert "stale_bars" not in FeatureSpec().to_dict()
    spec = FeatureSpec(stale_bars=5)
    assert spec.schema_hash() != FeatureSpec().schema_hash()
    assert FeatureSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="stale_bars"):
        FeatureSpec(stale_bars=-1)


def test_a_bar_that_is_not_the_newest_gives_no_row() -> None:
    spec = FeatureSpec()
    bars = _bars(list(spec.symbols), START, START + timedelta(days=1))
    live = LiveFeatures(spec)
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
