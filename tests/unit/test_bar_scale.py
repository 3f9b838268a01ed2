"""The scale check of an import against the stored history nearest in time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from core.bar_quality import validate_bars
from core.bar_scale import check_scale, compute_scale_mismatches, format_factor
from core.bar_schema import conform_bars
from warehouse.bars import ingest_bar_frames, scale_references
from warehouse.db import connect

T0 = datetime(2024, 3, 1, 14, 30, tzinfo=UTC)
NOW = datetime(2025, 1, 1, tzinfo=UTC)


def bars(symbol: str, closes: list[float], start: datetime = T0, tf: str = "1Min") -> pl.DataFrame:
    n = len(closes)
    return conform_bars(
        pl.DataFrame(
            {
                "symbol": [symbol] * n,
                "timeframe": [tf] * n,
                "ts": [start + timedelta(minutes=i) for i in range(n)],
                "open": closes,
                "high": [c * 1.001 for c in closes],
                "low": [c * 0.999 for c in closes],
                "close": closes,
                "volume": [10.0] * n,
                "source": ["test"] * n,
            }
        )
    )


def ref(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.select("symbol", "timeframe", "ts", "close")


@pytest.mark.parametrize(
    ("factor", "text"),
    [(10_000.0, "x10,000"), (100.0, "x100"), (12.34, "x12.3"), (0.01, "x1/100"), (0.1, "x1/10")],
)
def test_format_factor(factor: float, text: str) -> None:
    assert format_factor(factor) == text


def test_no_history_is_not_checked() -> None:
    assert compute_scale_mismatches(bars("A", [1e6] * 5), ref(bars("A", [])[:0])) == []


def test_overlap_compares_the_same_timestamps() -> None:
    stored = bars("A", [100.0 + i for i in range(50)])
    scaled = bars("A", [(100.0 + i) * 100 for i in range(50)])
    [m] = compute_scale_mismatches(scaled, ref(stored))
    assert (m.symbol, m.timeframe, m.stored_bars) == ("A", "1Min", 50)
    assert m.factor == pytest.approx(100.0)


def test_within_the_band_is_a_market_move_not_a_scale() -> None:
    stored = bars("A", [100.0] * 20)
    later = bars("A", [500.0] * 20, start=T0 + timedelta(days=1))  # x5 < x8
    assert compute_scale_mismatches(later, ref(stored)) == []
    far_off = bars("A", [900.0] * 20, start=T0 + timedelta(days=1))  # x9
    assert [m.factor for m in compute_scale_mismatches(far_off, ref(stored))] == [9.0]


def test_the_batch_side_is_its_bars_nearest_the_history() -> None:
    # A batch that starts next to the stored bars at their level and drifts x20 over its
    # span is a market path, not a unit: its bars nearest the history decide.
    stored = bars("A", [10.0] * 10)
    path = [10.0 * (1 + i / 5) for i in range(100)]  # 10 -> 208
    batch = bars("A", path, start=T0 + timedelta(minutes=10))
    assert compute_scale_mismatches(batch, ref(stored)) == []


def test_only_the_series_that_is_off_is_reported() -> None:
    stored = pl.concat([bars("A", [100.0] * 5), bars("B", [50.0] * 5)])
    batch = pl.concat([bars("A", [101.0] * 5), bars("B", [5e5] * 5)])
    assert [m.symbol for m in compute_scale_mismatches(batch, ref(stored))] == ["B"]


def test_check_scale_moves_good_and_jump_rows_keeps_other_reasons() -> None:
    stored = bars("A", [100.0] * 5)
    batch = bars("A", [1e6, 1e6, float("nan"), 1e6], start=T0 + timedelta(minutes=5))
    checked = validate_bars(batch, NOW, previous=ref(stored).tail(1))
    # Before: the first bar is a price_jump vs the stored close (and the rest compared with it).
    assert set(checked.quarantine["reason"]) == {"price_jump", "nan_price"}
    out = check_scale(checked, ref(stored))
    assert out.good.height == 0
    reasons = sorted(out.quarantine["reason"].to_list())
    assert reasons == ["nan_price", "scale_mismatch", "scale_mismatch", "scale_mismatch"]
    detail = out.quarantine.filter(pl.col("reason") == "scale_mismatch")["detail"][0]
    assert detail.startswith("closes are x10,000 the stored A 1Min history nearest in time")
    assert out.quarantine["row_hash"].null_count() == 0


def test_references_are_the_stored_bars_nearest_in_time(warehouse_path: Path) -> None:
    ingest_bar_frames(
        [bars("A", [100.0] * 30), bars("A", [100.0] * 5, tf="5Min")], warehouse_path, NOW
    )
    with connect(warehouse_path) as con:
        near = scale_references(con, bars("A", [1.0] * 3, start=T0 + timedelta(days=3)), limit=10)
        far = scale_references(con, bars("A", [1.0] * 3, start=T0 + timedelta(days=40)))
        other_tf = scale_references(con, bars("A", [1.0] * 3, tf="1Hour"))
    # The ten newest 1Min bars before the batch, oldest first; nothing past the 31-day window.
    assert near["ts"].to_list() == [T0 + timedelta(minutes=i) for i in range(20, 30)]
    assert set(near["timeframe"]) == {"1Min"}
    assert far.height == 0 and other_tf.height == 0
