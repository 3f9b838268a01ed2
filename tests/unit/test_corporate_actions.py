"""Corporate actions and the stored bars re-based onto them (core/warehouse corporate_actions)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from core.corporate_actions import CorporateAction
from warehouse.bars import ingest_bar_frames
from warehouse.corporate_actions import learn_actions
from warehouse.db import connect

MIN = timedelta(minutes=1)
MONDAY = datetime(2024, 7, 1, 13, 30, tzinfo=UTC)  # 09:30 EDT
NOW = datetime(2024, 7, 3, 12, 0, tzinfo=UTC)


def _bars(symbol: str, start: datetime, closes: list[float], source: str) -> pl.DataFrame:
    n = len(closes)
    return pl.DataFrame(
        {
            "symbol": [symbol] * n,
            "timeframe": ["1Min"] * n,
            "ts": [start + i * MIN for i in range(n)],
            "open": closes,
            "high": [c * 1.001 for c in closes],
            "low": [c * 0.999 for c in closes],
            "close": closes,
            "volume": [1_000.0] * n,
            "trade_count": [10] * n,
            "vwap": closes,
            "source": [source] * n,
        }
    )


def _stored(path: Path, symbol: str) -> list[tuple[float, float]]:
    with connect(path) as con:
        rows = con.execute(
            "SELECT close, volume FROM bars WHERE symbol = ? ORDER BY ts", [symbol]
        ).fetchall()
    return [(float(c), float(v)) for c, v in rows]


def test_the_factors_of_a_split_a_reverse_split_and_a_dividend() -> None:
    assert CorporateAction("SPY", date(2024, 7, 2), "split", 4.0).factors(None) == (0.25, 4.0)
    assert CorporateAction("X", date(2024, 7, 2), "split", 0.1).factors(None) == (10.0, 0.1)
    dividend = CorporateAction("SPY", date(2024, 7, 2), "dividend", 2.0)
    assert dividend.factors(100.0) == (pytest.approx(0.98), 1.0)
    assert dividend.factors(None) == (1.0, 1.0)  # nothing stored before it: nothing to do
    assert dividend.starts() == datetime(2024, 7, 2, 4, 0, tzinfo=UTC)  # midnight in New York
    with pytest.raises(ValueError, match="must be > 0"):
        CorporateAction("SPY", date(2024, 7, 2), "split", 0.0)


def test_learning_an_action_rebases_the_sources_bars_before_it_once(warehouse_path: Path) -> None:
    ingest_bar_frames(
        [
            _bars("SPY", MONDAY, [500.0, 502.0, 504.0], "alpaca"),
            # On the ex-date (same level: the boundary is what this checks).
            _bars("SPY", MONDAY + timedelta(days=1), [505.0, 506.0], "alpaca"),
            _bars("QQQ", MONDAY, [400.0, 401.0], "alpaca"),
            _bars("VTI", MONDAY, [250.0, 251.0], "file:vti.csv"),
        ],
        warehouse_path,
        NOW,
    )
    split = CorporateAction("SPY", date(2024, 7, 2), "split", 2.0)
    dividend = CorporateAction("QQQ", date(2024, 7, 2), "dividend", 4.01)
    foreign = CorporateAction("VTI", date(2024, 7, 2), "split", 2.0)
    with connect(warehouse_path) as con:
        done = learn_actions(con, [split, dividend, foreign], NOW, source="alpaca")
    # VTI's split is recorded, but its bars came from a file: not Alpaca's basis, untouched.
    assert [(r.action.symbol, r.price_factor, r.volume_factor, r.bars) for r in done] == [
        ("QQQ", pytest.approx(0.99), 1.0, 2),
        ("SPY", 0.5, 2.0, 3),
    ]
    # Monday halved (volume doubled), Tuesday (on or after the ex-date) untouched.
    assert _stored(warehouse_path, "SPY") == [
        (250.0, 2_000.0),
        (251.0, 2_000.0),
        (252.0, 2_000.0),
        (505.0, 1_000.0),
        (506.0, 1_000.0),
    ]
    assert _stored(warehouse_path, "QQQ") == [
        (pytest.approx(396.0), 1_000.0),
        (pytest.approx(396.99), 1_000.0),
    ]
    assert _stored(warehouse_path, "VTI") == [(250.0, 1_000.0), (251.0, 1_000.0)]
    # Learned again (the next ingest lists it again): nothing changes.
    with connect(warehouse_path) as con:
        assert learn_actions(con, [split, dividend], NOW, source="alpaca") == []
        recorded = con.execute(
            "SELECT symbol, kind, bars FROM bar_adjustments ORDER BY symbol"
        ).fetchall()
        learned = con.execute("SELECT symbol FROM corporate_actions ORDER BY 1").fetchall()
    assert _stored(warehouse_path, "SPY")[0] == (250.0, 2_000.0)
    assert recorded == [("QQQ", "dividend", 2), ("SPY", "split", 3)]
    assert learned == [("QQQ",), ("SPY",), ("VTI",)]
