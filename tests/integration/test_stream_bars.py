"""The stream handler's one-statement upsert: new bars in, changed bars updated, identical ones untouched."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from adapters.synthetic import SyntheticBarSource, SyntheticConfig
from trading.live import store_bars
from warehouse.db import connect

T0 = datetime(2024, 3, 4, 15, 0, tzinfo=UTC)


def _minute(symbols: list[str]) -> pl.DataFrame:
    source = SyntheticBarSource(SyntheticConfig(seed=3))
    return pl.concat(list(source.fetch_bars(symbols, "1Min", T0, T0 + timedelta(minutes=1))))


def _rows(path: Path) -> list[tuple[object, ...]]:
    with connect(path) as con:
        return con.execute(
            "SELECT symbol, ts, close, ingested_at FROM bars ORDER BY symbol"
        ).fetchall()


def test_store_bars_inserts_updates_and_leaves_identical_rows(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    frame = _minute(["SPY", "VTI"])
    first = T0 + timedelta(minutes=1)
    with connect(path) as con:
        assert store_bars(path, frame, first, con) == 2
    stored = _rows(path)
    assert [r[0] for r in stored] == ["SPY", "VTI"]
    assert all(r[3] == first for r in stored)

    # The same bars again, later: nothing changes, not even ingested_at.
    with connect(path) as con:
        store_bars(path, frame, first + timedelta(minutes=5), con)
    assert _rows(path) == stored

    # A revised SPY bar: only that row changes.
    revised = frame.with_columns(
        pl.when(pl.col("symbol") == "SPY")
        .then(pl.col("close") * 1.001)
        .otherwise(pl.col("close"))
        .alias("close")
    ).with_columns(pl.max_horizontal("high", "close").alias("high"))
    later = first + timedelta(minutes=9)
    with connect(path) as con:
        store_bars(path, revised, later, con)
    after = {r[0]: r for r in _rows(path)}
    assert after["SPY"][2] == revised.filter(pl.col("symbol") == "SPY")["close"].item()
    assert after["SPY"][3] == later
    assert after["VTI"] == {r[0]: r for r in stored}["VTI"]


def test_a_bad_bar_is_quarantined_and_the_good_one_stored(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    frame = _minute(["SPY", "VTI"]).with_columns(
        pl.when(pl.col("symbol") == "VTI").then(-1.0).otherwise(pl.col("low")).alias("low")
    )
    with connect(path) as con:
        store_bars(path, frame, T0 + timedelta(minutes=1), con)
        stored = con.execute("SELECT symbol FROM bars").fetchall()
        quarantined = con.execute("SELECT symbol, reason FROM bars_quarantine").fetchall()
    assert stored == [("SPY",)]
    assert [q[0] for q in quarantined] == ["VTI"]
