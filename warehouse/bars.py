"""Bar reads and writes: validate a batch, quarantine the bad rows, upsert the good ones."""

from __future__ import annotations

import math
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from core.bar_hours import quarantine_outside_hours
from core.bar_quality import JUMP_REASONS, check_jumps, validate_bars
from core.bar_scale import SCALE_REFERENCE_BARS, SCALE_WINDOW, check_scale
from core.bar_schema import BAR_COLUMNS, BAR_KEY, BAR_SCHEMA
from warehouse.db import connect
from warehouse.io import insert_rows, load_frame, upsert


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
    # The jump/split rule against the newest stored bar: validate_bars saw this minute alone.
    screened = check_jumps(good, recent_closes(con, good))
    if screened.quarantine.height:
        write_quarantine(con, screened.quarantine, now)
        good = screened.good
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


_INSERTED_COLUMNS = (*BAR_COLUMNS, "ingested_at")


def insert_new_bars(con: duckdb.DuckDBPyConnection, good: pl.DataFrame, now: datetime) -> int:
    """Plain INSERT of validated bars with new keys in ONE statement (the live fast path).

    A bar whose key is stored already raises duckdb.ConstraintException and none of the
    frame is written; the caller then upserts (write_stream_bars). Autocommit: `con` must
    not be inside a transaction, which the failed statement would abort. Returns rows written.
    """
    if good.height == 0:
        return 0
    if good.columns != list(BAR_COLUMNS):
        good = good.select(BAR_COLUMNS)
    return insert_rows(con, "bars", _INSERTED_COLUMNS, [(*row, now) for row in good.rows()])


def delete_bars_between(con: duckdb.DuckDBPyConnection, start: datetime, end: datetime) -> int:
    """Delete every stored bar (all symbols and timeframes) with start <= ts < end; returns how many."""
    row = con.execute("DELETE FROM bars WHERE ts >= ? AND ts < ?", [start, end]).fetchone()
    return 0 if row is None else int(row[0])


def _series_stamps(frame: pl.DataFrame) -> pl.DataFrame:
    """(symbol, timeframe, ts) of a raw batch, typed; rows whose keys do not parse dropped."""
    return frame.select(
        pl.col("symbol").cast(pl.String, strict=False),
        pl.col("timeframe").cast(pl.String, strict=False),
        pl.col("ts").cast(pl.Datetime("us", "UTC"), strict=False),
    ).drop_nulls()


def previous_closes(con: duckdb.DuckDBPyConnection, frame: pl.DataFrame) -> pl.DataFrame:
    """Per (symbol, timeframe) of `frame`, the newest stored bar before the frame's first ts.

    The reference of the jump/split rule for a batch's first bar (core.bar_quality).
    """
    if frame.height == 0 or not {"symbol", "timeframe", "ts"} <= set(frame.columns):
        return pl.DataFrame(schema={"symbol": pl.String, "timeframe": pl.String})
    firsts = (
        _series_stamps(frame)
        .group_by("symbol", "timeframe")
        .agg(pl.col("ts").min().alias("first_ts"))
    )
    if firsts.height == 0:
        return pl.DataFrame(schema={"symbol": pl.String, "timeframe": pl.String})
    view = f"_firsts_{uuid.uuid4().hex}"
    con.register(view, firsts.to_arrow())
    try:
        return load_frame(
            con,
            f"SELECT f.symbol, f.timeframe, max(b.ts) AS ts, arg_max(b.close, b.ts) AS close"
            f" FROM {view} f JOIN bars b ON b.symbol = f.symbol AND b.timeframe = f.timeframe"
            " AND b.ts < f.first_ts GROUP BY ALL",
        )
    finally:
        con.unregister(view)


def recent_closes(con: duckdb.DuckDBPyConnection, frame: pl.DataFrame) -> pl.DataFrame:
    """previous_closes for a stream batch (one minute): one small query, 10 days back at most.

    The reference is the newest stored bar before the batch's earliest bar.
    """
    first = frame.get_column("ts").min()
    if not isinstance(first, datetime):
        return pl.DataFrame(schema={"symbol": pl.String, "timeframe": pl.String})
    rows = con.execute(
        "SELECT symbol, timeframe, max(ts), arg_max(close, ts) FROM bars"
        " WHERE list_contains(?, symbol) AND list_contains(?, timeframe) AND ts < ? AND ts >= ?"
        " GROUP BY ALL",
        [
            frame.get_column("symbol").unique().to_list(),
            frame.get_column("timeframe").unique().to_list(),
            first,
            first - timedelta(days=10),
        ],
    ).fetchall()
    return pl.DataFrame(
        rows,
        schema={
            "symbol": pl.String,
            "timeframe": pl.String,
            "ts": pl.Datetime("us", "UTC"),
            "close": pl.Float64,
        },
        orient="row",
    )


def write_quarantine(con: duckdb.DuckDBPyConnection, bad: pl.DataFrame, now: datetime) -> int:
    """Record rejected rows; a row rejected again for the same reason is not duplicated."""
    if bad.height == 0:
        return 0
    frame = bad.with_columns(pl.lit(now).cast(pl.Datetime("us", "UTC")).alias("quarantined_at"))
    return upsert(
        con, "bars_quarantine", frame, ("row_hash", "reason"), bookkeeping=("quarantined_at",)
    ).inserted


def scale_references(
    con: duckdb.DuckDBPyConnection,
    frame: pl.DataFrame,
    window: timedelta = SCALE_WINDOW,
    limit: int = SCALE_REFERENCE_BARS,
) -> pl.DataFrame:
    """Per (symbol, timeframe) of `frame`, up to `limit` stored bars nearest in time to its span
    (inside it first, then the closest before or after, `window` away at most).

    The reference of the scale check of an import (core.bar_scale); sorted by ts.
    """
    schema = pl.Schema(
        {
            "symbol": pl.String(),
            "timeframe": pl.String(),
            "ts": pl.Datetime("us", "UTC"),
            "close": pl.Float64(),
        }
    )
    if frame.height == 0 or not {"symbol", "timeframe", "ts"} <= set(frame.columns):
        return pl.DataFrame(schema=schema)
    spans = (
        _series_stamps(frame)
        .group_by("symbol", "timeframe")
        .agg(pl.col("ts").min().alias("first_ts"), pl.col("ts").max().alias("last_ts"))
    )
    if spans.height == 0:
        return pl.DataFrame(schema=schema)
    view = f"_spans_{uuid.uuid4().hex}"
    con.register(view, spans.to_arrow())
    try:
        rows = con.execute(
            "SELECT b.symbol, b.timeframe, b.ts, b.close"
            f" FROM bars b JOIN {view} s ON b.symbol = s.symbol AND b.timeframe = s.timeframe"
            " AND b.ts >= s.first_ts - to_microseconds(?) AND b.ts <= s.last_ts + to_microseconds(?)"
            " QUALIFY row_number() OVER (PARTITION BY b.symbol, b.timeframe ORDER BY"
            " greatest(epoch(s.first_ts) - epoch(b.ts), epoch(b.ts) - epoch(s.last_ts), 0), b.ts)"
            " <= ? ORDER BY b.ts",
            [window // timedelta(microseconds=1)] * 2 + [limit],
        ).fetchall()
    finally:
        con.unregister(view)
    return pl.DataFrame(rows, schema=schema, orient="row")


def ingest_bar_frames(
    frames: Iterable[pl.DataFrame],
    warehouse: Path | str,
    now: datetime,
    *,
    scale_check: bool = False,
    regular_hours: Mapping[str, str] | None = None,
) -> IngestReport:
    """Validate each frame and write it in its own short transaction.

    A bad row never stops the batch: it goes to bars_quarantine with its reason and
    every good row of the same frame is still upserted. `scale_check` (file imports): a
    series whose closes are an order of magnitude off its stored history nearest in time
    is quarantined whole as `scale_mismatch` (core.bar_scale) and the history is untouched.
    `regular_hours` (symbol -> calendar): intraday bars of those symbols outside their
    calendar's regular sessions are quarantined as `outside_regular_hours` (core.bar_hours).
    """
    report = IngestReport()
    for frame in frames:
        with connect(warehouse) as con:
            checked = validate_bars(frame, now, previous=previous_closes(con, frame))
            if scale_check:
                checked = check_scale(checked, scale_references(con, frame))
            if regular_hours:
                checked = quarantine_outside_hours(checked, regular_hours)
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


def last_bars_before(
    con: duckdb.DuckDBPyConnection,
    symbols: Sequence[str],
    timeframe: str,
    until: datetime,
    n: int,
    *,
    lookback: timedelta = timedelta(days=10),
) -> pl.DataFrame:
    """The last `n` bars of each symbol that start before `until` (searching `lookback` back),
    sorted by (symbol, ts), in the canonical columns."""
    cols = ", ".join(BAR_SCHEMA)
    return load_frame(
        con,
        f"SELECT {cols} FROM bars WHERE timeframe = ? AND list_contains(?, symbol)"
        " AND ts < ? AND ts >= ? QUALIFY row_number() OVER (PARTITION BY symbol ORDER BY ts DESC) <= ?"
        " ORDER BY symbol, ts",
        [timeframe, list(symbols), until, until - lookback, n],
    )


def bars_by_minute(
    con: duckdb.DuckDBPyConnection,
    symbols: Sequence[str],
    timeframe: str,
    start: datetime,
    end: datetime,
) -> pl.DataFrame:
    """Bars with start time in [start, end), sorted by (ts, symbol): minute after minute."""
    cols = ", ".join(BAR_SCHEMA)
    return load_frame(
        con,
        f"SELECT {cols} FROM bars WHERE timeframe = ? AND list_contains(?, symbol)"
        " AND ts >= ? AND ts < ? ORDER BY ts, symbol",
        [timeframe, list(symbols), start, end],
    )


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


@dataclass(frozen=True)
class SplitResult:
    """What apply_split did, per timeframe of the symbol."""

    adjusted: int
    """Stored bars before the effective time that were back-adjusted."""
    released: int
    """Bars held in bars_quarantine for the jump that are now stored."""
    actions: dict[str, str]
    """timeframe -> 'adjusted', 'already adjusted' or why it was left alone."""


def scale_bars(
    con: duckdb.DuckDBPyConnection,
    symbol: str,
    timeframe: str,
    before: datetime,
    price_factor: float,
    volume_factor: float,
    now: datetime,
    source: str | None = None,
) -> int:
    """Multiply the stored bars of one series that start before `before` -- prices by
    price_factor, volume by volume_factor -- as a new version of each row (ingested_at =
    now); only those of `source` (and its feeds, 'alpaca:iex') when given. Returns how many.
    The one back-adjustment of stored bars: apply_split and the corporate actions use it."""
    n = con.execute(
        "UPDATE bars SET open = open * $p, high = high * $p, low = low * $p,"
        " close = close * $p, vwap = vwap * $p, volume = volume * $v, ingested_at = $now"
        " WHERE symbol = $s AND timeframe = $tf AND ts < $t"
        " AND ($src IS NULL OR source = $src OR source LIKE $src || ':%')",
        {
            "p": price_factor,
            "v": volume_factor,
            "now": now,
            "s": symbol,
            "tf": timeframe,
            "t": before,
            "src": source,
        },
    ).fetchall()[0][0]
    return int(n)


def apply_split(
    con: duckdb.DuckDBPyConnection,
    symbol: str,
    effective_ts: datetime,
    ratio: float,
    now: datetime | None = None,
) -> SplitResult:
    """Back-adjust a symbol's stored bars for a split and release the bars held for it.

    `ratio` is price after / price before: 0.1 for a 10:1 split, 3.0 for a 1:3 reverse
    split. Every stored bar of the symbol (all timeframes) that starts before
    `effective_ts` gets open/high/low/close/vwap times `ratio` and volume divided by it;
    then its bars held in bars_quarantine as suspected_split / price_jump at or after
    `effective_ts` are validated again against the adjusted history and the ones that
    pass are stored (and leave the quarantine).

    Idempotent: a timeframe is adjusted only while its newest stored bar before
    `effective_ts` is still at the old level -- its close times `ratio` lies nearer the
    first bar at or after `effective_ts` (stored or held) than its close does. A second
    call finds the levels matching and changes nothing. A timeframe with no bar at or
    after `effective_ts` yet is left alone (nothing to check against): call again later.
    """
    if not math.isfinite(ratio) or ratio <= 0 or ratio == 1.0:
        raise ValueError(f"split ratio must be a positive number other than 1, not {ratio!r}")
    when = now or datetime.now(UTC)
    reasons = list(JUMP_REASONS)
    timeframes = [
        str(r[0])
        for r in con.execute(
            "SELECT DISTINCT timeframe FROM bars WHERE symbol = ?"
            " UNION SELECT DISTINCT timeframe FROM bars_quarantine"
            " WHERE symbol = ? AND list_contains(?, reason) AND timeframe IS NOT NULL ORDER BY 1",
            [symbol, symbol, reasons],
        ).fetchall()
    ]
    adjusted = released = 0
    actions: dict[str, str] = {}
    for tf in timeframes:
        before = con.execute(
            "SELECT arg_max(close, ts) FROM bars WHERE symbol = ? AND timeframe = ? AND ts < ?",
            [symbol, tf, effective_ts],
        ).fetchall()[0][0]
        after = con.execute(
            "SELECT arg_min(close, ts) FROM (SELECT ts, close FROM bars"
            " WHERE symbol = ? AND timeframe = ? AND ts >= ?"
            " UNION ALL SELECT ts, close FROM bars_quarantine WHERE symbol = ? AND timeframe = ?"
            " AND ts >= ? AND list_contains(?, reason) AND close > 0)",
            [symbol, tf, effective_ts, symbol, tf, effective_ts, reasons],
        ).fetchall()[0][0]
        if before is None or after is None or before <= 0:
            actions[tf] = "left alone: no bar on both sides of the effective time yet"
        elif abs(math.log(before * ratio / after)) < abs(math.log(before / after)):
            adjusted += scale_bars(con, symbol, tf, effective_ts, ratio, 1.0 / ratio, when)
            actions[tf] = "adjusted"
        else:
            actions[tf] = "already adjusted"
        if actions[tf] != "adjusted" and actions[tf] != "already adjusted":
            continue
        held = load_frame(
            con,
            f"SELECT {', '.join(BAR_COLUMNS)} FROM bars_quarantine WHERE symbol = ?"
            " AND timeframe = ? AND ts >= ? AND list_contains(?, reason)"
            " ORDER BY ts, quarantined_at",
            [symbol, tf, effective_ts, reasons],
        )
        if held.height == 0:
            continue
        held = held.cast(BAR_SCHEMA).unique(list(BAR_KEY), keep="last", maintain_order=True)  # type: ignore[arg-type]
        checked = validate_bars(held, when, previous=previous_closes(con, held))
        if checked.good.height:
            write_bars(con, checked.good, when)
            view = f"_released_{uuid.uuid4().hex}"
            con.register(view, checked.good.select(BAR_KEY).to_arrow())
            try:
                con.execute(
                    f"DELETE FROM bars_quarantine q USING {view} g WHERE q.symbol = g.symbol"
                    " AND q.timeframe = g.timeframe AND q.ts = g.ts"
                    " AND list_contains(?, q.reason)",
                    [reasons],
                )
            finally:
                con.unregister(view)
            released += checked.good.height
    return SplitResult(adjusted=adjusted, released=released, actions=actions)


def newest_bar_ts(
    con: duckdb.DuckDBPyConnection, symbols: Sequence[str], timeframe: str
) -> datetime | None:
    """Start of the newest stored bar of any of `symbols` in `timeframe` (None: none stored)."""
    rows = con.execute(
        "SELECT max(ts) FROM bars WHERE timeframe = ? AND list_contains(?, symbol)",
        [timeframe, list(symbols)],
    ).fetchall()
    newest = rows[0][0] if rows else None
    return newest if isinstance(newest, datetime) else None


def bar_sources(
    con: duckdb.DuckDBPyConnection, symbol: str, start: datetime, end: datetime
) -> list[str]:
    """The sources of a symbol's stored bars starting in [start, end)."""
    return [
        str(r[0])
        for r in con.execute(
            "SELECT DISTINCT source FROM bars WHERE symbol = ? AND ts >= ? AND ts < ?",
            [symbol, start, end],
        ).fetchall()
    ]


def minute_open_close(
    con: duckdb.DuckDBPyConnection, symbols: Sequence[str], start: datetime, end: datetime
) -> pl.DataFrame:
    """symbol, ts, open, close of the stored 1Min bars starting in [start, end)."""
    return load_frame(
        con,
        "SELECT symbol, ts, open, close FROM bars WHERE timeframe = '1Min'"
        " AND list_contains(?, symbol)"
        " AND ts >= ? AND ts < ? ORDER BY symbol, ts",
        [list(symbols), start, end],
    )
