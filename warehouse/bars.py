"""Bar reads and writes: validate a batch, quarantine the bad rows, upsert the good ones."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from adapters.schema import BAR_KEY, BAR_SCHEMA
from core.bar_quality import validate_bars
from warehouse.db import connect
from warehouse.io import load_frame, upsert


@dataclass
class IngestReport:
    """Counts from one or more ingested batches."""

    received: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    quarantined: Counter[str] = field(default_factory=Counter)
    symbols: list[str] = field(default_factory=list)

    def __add__(self, other: IngestReport) -> IngestReport:
        return IngestReport(
            received=self.received + other.received,
            inserted=self.inserted + other.inserted,
            updated=self.updated + other.updated,
            unchanged=self.unchanged + other.unchanged,
            quarantined=self.quarantined + other.quarantined,
            symbols=sorted(set(self.symbols) | set(other.symbols)),
        )

    @property
    def quarantined_total(self) -> int:
        return sum(self.quarantined.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "inserted": self.inserted,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "quarantined": dict(self.quarantined),
            "symbols": list(self.symbols),
        }

    def summary(self) -> str:
        bad = ", ".join(f"{k}={v}" for k, v in sorted(self.quarantined.items())) or "none"
        return (
            f"{self.received:,} rows: {self.inserted:,} new, {self.updated:,} updated, "
            f"{self.unchanged:,} unchanged; quarantined: {bad}"
        )


def write_bars(
    con: duckdb.DuckDBPyConnection, good: pl.DataFrame, now: datetime
) -> tuple[int, int, int]:
    """Upsert validated bars; returns (inserted, updated, unchanged)."""
    frame = good.with_columns(pl.lit(now).cast(pl.Datetime("us", "UTC")).alias("ingested_at"))
    result = upsert(con, "bars", frame, BAR_KEY, bookkeeping=("ingested_at",))
    return result.inserted, result.updated, result.unchanged


def write_stream_bars(con: duckdb.DuckDBPyConnection, good: pl.DataFrame, now: datetime) -> None:
    """Upsert a handful of validated bars in ONE statement (the live stream's per-minute write).

    Same result as write_bars -- new keys inserted, changed bars updated, identical ones
    untouched (ingested_at included) -- but a single INSERT ... ON CONFLICT: for a few rows
    that is about twice as fast as write_bars' check-then-write, while for bulk loads
    write_bars is the faster one.
    """
    if good.height == 0:
        return
    frame = good.with_columns(pl.lit(now).cast(pl.Datetime("us", "UTC")).alias("ingested_at"))
    cols = frame.columns
    values = [c for c in cols if c not in (*BAR_KEY, "ingested_at")]
    view = f"_stream_{uuid.uuid4().hex}"
    con.register(view, frame.to_arrow())
    try:
        con.execute(
            f"INSERT INTO bars ({', '.join(cols)}) SELECT {', '.join(cols)} FROM {view}"
            f" ON CONFLICT ({', '.join(BAR_KEY)}) DO UPDATE SET "
            + ", ".join(f"{c} = excluded.{c}" for c in [*values, "ingested_at"])
            + " WHERE "
            + " OR ".join(f"bars.{c} IS DISTINCT FROM excluded.{c}" for c in values)
        )
    finally:
        con.unregister(view)


def write_quarantine(con: duckdb.DuckDBPyConnection, bad: pl.DataFrame, now: datetime) -> int:
    """Record rejected rows; a row rejected again for the same reason is not duplicated."""
    if bad.height == 0:
        return 0
    frame = bad.with_columns(pl.lit(now).cast(pl.Datetime("us", "UTC")).alias("quarantined_at"))
    return upsert(
        con, "bars_quarantine", frame, ("row_hash", "reason"), bookkeeping=("quarantined_at",)
    ).inserted


def ingest_bar_frames(
    frames: Iterable[pl.DataFrame], warehouse: Path | str, now: datetime
) -> IngestReport:
    """Validate each frame and write it in its own short transaction.

    A bad row never stops the batch: it goes to bars_quarantine with its reason and
    every good row of the same frame is still upserted.
    """
    report = IngestReport()
    for frame in frames:
        checked = validate_bars(frame, now)
        with connect(warehouse) as con:
            con.execute("BEGIN TRANSACTION")
            try:
                write_quarantine(con, checked.quarantine, now)
                inserted, updated, unchanged = write_bars(con, checked.good, now)
                con.execute("COMMIT")
            except Exception:
                con.execute("ROLLBACK")
                raise
        symbols = frame.get_column("symbol").drop_nulls().unique().to_list() if frame.height else []
        report = report + IngestReport(
            received=frame.height,
            inserted=inserted,
            updated=updated,
            unchanged=unchanged,
            quarantined=Counter(checked.quarantine.get_column("reason").to_list()),
            symbols=sorted(str(s) for s in symbols),
        )
    return report


def write_synthetic_sentiment(con: duckdb.DuckDBPyConnection, df: pl.DataFrame) -> int:
    """Upsert the generator's planted sentiment series; returns rows inserted."""
    return upsert(con, "synthetic_sentiment", df, ("symbol", "ts")).inserted


def load_bars(
    con: duckdb.DuckDBPyConnection,
    symbols: Sequence[str],
    timeframe: str,
    start: datetime,
    end: datetime,
) -> pl.DataFrame:
    """Bars with start time in [start, end), sorted by (symbol, ts), in the canonical schema."""
    cols = ", ".join(BAR_SCHEMA)
    df = load_frame(
        con,
        f"SELECT {cols} FROM bars WHERE symbol IN (SELECT unnest(?)) AND timeframe = ?"
        " AND ts >= ? AND ts < ? ORDER BY symbol, ts",
        [list(symbols), timeframe, start, end],
    )
    return df.cast(BAR_SCHEMA)  # type: ignore[arg-type]


def last_bar_ts(con: duckdb.DuckDBPyConnection, symbol: str, timeframe: str) -> datetime | None:
    """Start time of the newest stored bar, for incremental ingestion."""
    rows = con.execute(
        "SELECT max(ts) FROM bars WHERE symbol = ? AND timeframe = ?", [symbol, timeframe]
    ).fetchall()
    value = rows[0][0]
    return value if isinstance(value, datetime) else None


_STEPS = {
    "1Min": timedelta(minutes=1),
    "5Min": timedelta(minutes=5),
    "15Min": timedelta(minutes=15),
    "30Min": timedelta(minutes=30),
    "1Hour": timedelta(hours=1),
    "1Day": timedelta(days=1),
}


def timeframe_step(timeframe: str) -> timedelta:
    """The length of one bar of a timeframe (bars are stamped with their start time)."""
    try:
        return _STEPS[timeframe]
    except KeyError:
        raise ValueError(f"unknown timeframe {timeframe!r}; one of {', '.join(_STEPS)}") from None


def newest_bars(warehouse: Path | str, symbols: list[str], timeframe: str) -> dict[str, datetime]:
    """Start time of the newest stored bar per symbol (absent when none is stored)."""
    if not symbols:
        return {}
    with connect(warehouse) as con:
        rows = con.execute(
            "SELECT symbol, max(ts) FROM bars WHERE timeframe = ? AND list_contains(?, symbol)"
            " GROUP BY symbol",
            [timeframe, symbols],
        ).fetchall()
    return {str(sym): ts for sym, ts in rows if isinstance(ts, datetime)}
