"""The demo's example query: a daily return for full OHLC and for close-only minute series."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from core.bar_schema import conform_bars
from warehouse.bars import ingest_bar_frames
from warehouse.db import connect
from warehouse.io import load_frame
from warehouse.summary import EXAMPLE_SQL

OPEN_1 = datetime(2024, 3, 4, 14, 30, tzinfo=UTC)  # 09:30 New York
OPEN_2 = OPEN_1 + timedelta(days=1)


def _minutes(symbol: str, closes: list[float], start: datetime, close_only: bool) -> pl.DataFrame:
    """SYNTHETIC minute bars labelled source 'synthetic' (the example query reads those)."""
    ts = [start + timedelta(minutes=i) for i in range(len(closes))]
    opens = [c - 0.01 for c in closes]
    frame = pl.DataFrame(
        {
            "symbol": symbol,
            "timeframe": "1Min",
            "ts": ts,
            "open": None if close_only else opens,
            "high": None if close_only else [c + 0.02 for c in closes],
            "low": None if close_only else [c - 0.03 for c in closes],
            "close": closes,
            "volume": 100.0,
            "source": "synthetic",
        }
    )
    return conform_bars(frame)


def test_the_daily_return_of_a_close_only_series_runs_from_the_previous_close(
    tmp_path: Path,
) -> None:
    """arg_min(open) is NULL for close-only bars: the return used to be NULL."""
    day_1, day_2 = [100.0, 100.5, 101.0], [101.2, 101.6, 102.02]
    frames = [
        _minutes(sym, closes, start, close_only=sym == "VTI")
        for sym in ("SPY", "VTI")
        for closes, start in ((day_1, OPEN_1), (day_2, OPEN_2))
    ]
    path = tmp_path / "w.duckdb"
    ingest_bar_frames(frames, path, OPEN_2 + timedelta(days=1))
    with connect(path) as con:
        out = load_frame(con, EXAMPLE_SQL)
    rows = {(r["symbol"], r["day"]): r for r in out.iter_rows(named=True)}
    assert set(rows) == {
        (s, d) for s in ("SPY", "VTI") for d in (date(2024, 3, 4), date(2024, 3, 5))
    }
    # Full OHLC: from the day's first open, unchanged.
    spy = rows[("SPY", date(2024, 3, 5))]
    assert spy["open"] == pytest.approx(101.19)
    assert spy["return_pct"] == pytest.approx(round(100 * (102.02 / 101.19 - 1), 3))
    # Close-only: no open, so from the previous day's close; no range.
    vti = rows[("VTI", date(2024, 3, 5))]
    assert vti["open"] is None and vti["range_pct"] is None
    assert vti["return_pct"] == pytest.approx(round(100 * (102.02 / 101.0 - 1), 3))
    # Its first day has neither an open nor a previous close.
    assert rows[("VTI", date(2024, 3, 4))]["return_pct"] is None
