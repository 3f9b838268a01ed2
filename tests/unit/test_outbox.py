"""The one outbox (warehouse/outbox.py): whole files or none, each writer merges its own kinds,
oldest first; the ledger and the bar store share one folder without taking each other's rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from adapters.synthetic import SyntheticBarSource
from trading.ledger import Ledger
from trading.live import BarStore
from warehouse.db import connect
from warehouse.outbox import Outbox


def test_files_come_back_by_kind_oldest_first_and_whole(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox")
    assert box.waiting({"bars"}) == []  # no folder yet
    first = box.put("bars", pl.DataFrame({"x": [1]}))
    box.put("decisions", pl.DataFrame({"x": [2]}))
    second = box.put("bars", pl.DataFrame({"x": [3]}))
    (tmp_path / "outbox" / ".bars--half-written.tmp").write_bytes(b"partial")
    assert box.waiting({"bars"}) == [("bars", first), ("bars", second)]
    assert [k for k, _ in box.waiting({"bars", "decisions"})] == ["bars", "bars", "decisions"]
    Outbox.done([first])
    assert box.waiting({"bars"}) == [("bars", second)]


def test_ledger_and_bar_store_share_the_outbox_and_merge_only_their_own(tmp_path: Path) -> None:
    warehouse, outbox = tmp_path / "w.duckdb", tmp_path / "outbox"
    start = datetime(2024, 3, 4, 14, 30, tzinfo=UTC)
    bars = pl.concat(
        list(SyntheticBarSource().fetch_bars(["SPY"], "1Min", start, start + timedelta(minutes=3)))
    )
    with connect(warehouse):
        pass  # migrated
    store = BarStore(warehouse, outbox=outbox)
    store._to_outbox(store._validate(None, bars, start + timedelta(minutes=3)), start)
    # A bar file left by an earlier version in outbox/bars is merged too.
    Outbox(outbox / "bars").put("bars", bars.head(1).with_columns(_at=pl.lit(start)))
    ledger = Ledger(warehouse, mode="paper", outbox=outbox)
    ledger.equity("paper", start, 1000.0, 0.0)
    ledger._to_outbox()
    assert sorted(k for k, _ in Outbox(outbox).waiting({"bars", "equity", "quarantine"})) == [
        "bars",
        "equity",
    ]

    ledger.flush()  # merges the equity row, leaves the bars to the store
    assert [k for k, _ in Outbox(outbox).waiting({"bars", "equity"})] == ["bars"]
    with connect(warehouse) as con:
        assert con.execute("SELECT count(*) FROM equity").fetchone() == (1,)
        assert store._merge_outbox(con, start + timedelta(minutes=4)) == bars.height + 1
        stored = con.execute("SELECT count(*) FROM bars").fetchone()
    assert stored == (bars.height,)  # the legacy file's bar is one of them: stored once
    assert list(outbox.rglob("*.parquet")) == []
