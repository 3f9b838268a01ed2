"""Ingest into a real DuckDB file: quarantine with reasons, nothing good lost, re-runs change nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from tests.unit.test_bar_quality import CASES, NOW, T0, bar, frame
from warehouse.bars import ingest_bar_frames, last_bar_ts, load_bars
from warehouse.db import connect


def _mixed_batch() -> pl.DataFrame:
    rows = [bar(i) for i in range(0, 40, 2)]  # 20 good rows at even minutes
    rows += [bar(100 + i, **override) for i, (_, override) in enumerate(CASES)]
    return frame(rows)


def test_bad_rows_are_quarantined_and_every_good_row_is_stored(warehouse_path: Path) -> None:
    report = ingest_bar_frames([_mixed_batch()], warehouse_path, NOW)
    assert report.inserted == 20
    assert report.quarantined_total == len(CASES)
    with connect(warehouse_path) as con:
        stored = load_bars(con, ["SPY"], "1Min", T0, NOW)
        reasons = sorted(r[0] for r in con.execute("SELECT reason FROM bars_quarantine").fetchall())
    assert stored.height == 20
    assert stored.get_column("ts").to_list() == [T0 + timedelta(minutes=i) for i in range(0, 40, 2)]
    assert reasons == sorted(reason for reason, _ in CASES)


def test_rerunning_the_same_ingestion_changes_nothing(warehouse_path: Path) -> None:
    ingest_bar_frames([_mixed_batch()], warehouse_path, NOW)
    with connect(warehouse_path) as con:
        before_bars = con.sql("SELECT * FROM bars ORDER BY ts").pl()
        before_q = con.sql("SELECT * FROM bars_quarantine ORDER BY row_hash").pl()
    later = NOW + timedelta(seconds=30)  # the "future" bar is still in the future
    report = ingest_bar_frames([_mixed_batch()], warehouse_path, later)
    assert (report.inserted, report.updated, report.unchanged) == (0, 0, 20)
    with connect(warehouse_path) as con:
        after_bars = con.sql("SELECT * FROM bars ORDER BY ts").pl()
        after_q = con.sql("SELECT * FROM bars_quarantine ORDER BY row_hash").pl()
    assert after_bars.equals(before_bars)  # ingested_at included: untouched
    assert after_q.equals(before_q)


def test_a_revised_bar_updates_in_place(warehouse_path: Path) -> None:
    ingest_bar_frames([frame([bar(0), bar(1)])], warehouse_path, NOW)
    report = ingest_bar_frames([frame([bar(1, close=100.75)])], warehouse_path, NOW)
    assert (report.inserted, report.updated) == (0, 1)
    with connect(warehouse_path) as con:
        closes = load_bars(con, ["SPY"], "1Min", T0, NOW).get_column("close").to_list()
        assert last_bar_ts(con, "SPY", "1Min") == T0 + timedelta(minutes=1)
        assert last_bar_ts(con, "QQQ", "1Min") is None
    assert closes == [100.5, 100.75]


def test_timestamps_round_trip_in_utc(warehouse_path: Path) -> None:
    ingest_bar_frames([frame([bar(0)])], warehouse_path, NOW)
    with connect(warehouse_path) as con:
        df = load_bars(con, ["SPY"], "1Min", T0, NOW)
    assert df.schema["ts"] == pl.Datetime("us", "UTC")
    assert df.get_column("ts").to_list() == [datetime(2024, 1, 2, 14, 30, tzinfo=UTC)]
