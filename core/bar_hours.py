"""Regular hours: intraday bars of an exchange-traded symbol outside its sessions are held back.

Alpaca's stock history (and many vendors' files) include pre- and post-market bars. The
agents trade the regular session only (the NYSE calendar of core.sessions), so those bars
would reach features that training never saw in the same place. At ingest they go to the
quarantine as `outside_regular_hours` -- kept, with the reason, not lost -- unless the
ingest asks for extended hours (`regular_hours_only: false`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

import polars as pl

from core.assets import CALENDAR_24_5, CALENDAR_24_7
from core.bar_quality import QUARANTINE_COLUMNS, REASONS, ValidatedBars, row_hash
from core.bar_schema import BAR_COLUMNS
from core.sessions import TIMEFRAME_SPANS
from core.stamp_shift import regular_sessions

OUTSIDE_HOURS = "outside_regular_hours"


def outside_sessions(ts: pl.Series, span: timedelta, sessions: pl.DataFrame) -> pl.Series:
    """Whether each bar [ts, ts + span) misses every session [open, close): a bar that overlaps
    one (an hourly bar stamped 09:00 holds 09:30-10:00) is inside."""
    frame = pl.DataFrame({"ts": ts.cast(pl.Datetime("us", "UTC"))}).with_row_index("i")
    ordered = frame.sort("ts")
    before = ordered.join_asof(sessions, left_on="ts", right_on="open", strategy="backward")
    after = ordered.join_asof(
        sessions.rename({"open": "next_open", "close": "next_close"}),
        left_on="ts",
        right_on="next_open",
        strategy="forward",
    )
    inside = (pl.col("close").is_not_null() & (pl.col("ts") < pl.col("close"))) | (
        pl.col("next_open").is_not_null() & (pl.col("ts") + span > pl.col("next_open"))
    )
    flags = (
        before.select("i", "ts", "close")
        .hstack(after.select("next_open"))
        .select("i", (~inside).alias("outside"))
    )
    return flags.sort("i").get_column("outside")


def quarantine_outside_hours(checked: ValidatedBars, calendars: Mapping[str, str]) -> ValidatedBars:
    """Move accepted intraday bars of symbols on an exchange calendar (`calendars`: symbol ->
    calendar name, e.g. XNYS) that lie outside every regular session to the quarantine as
    `outside_regular_hours`. Coins (24/7), FX (24/5), daily and longer bars are untouched."""
    good = checked.good
    if good.height == 0:
        return checked
    keys = good.select("symbol", "timeframe").unique(maintain_order=True)
    flags = pl.Series("outside", [False] * good.height)
    for symbol, timeframe in keys.iter_rows():
        calendar = calendars.get(str(symbol))
        span = TIMEFRAME_SPANS.get(str(timeframe))
        if calendar in (None, CALENDAR_24_7, CALENDAR_24_5) or span is None:
            continue
        if span >= timedelta(days=1):
            continue
        rows = (pl.col("symbol") == symbol) & (pl.col("timeframe") == timeframe)
        index = good.with_row_index("_row").filter(rows).get_column("_row")
        ts = good.get_column("ts").gather(index)
        lo, hi = ts.min(), ts.max()
        assert isinstance(lo, datetime) and isinstance(hi, datetime)
        sessions = regular_sessions(
            str(calendar), (lo - timedelta(days=3)).date(), (hi + timedelta(days=3)).date()
        )
        outside = outside_sessions(ts, span, sessions)
        flags = flags.scatter(index.filter(outside), True)
    if not flags.any():
        return checked
    off = good.filter(flags)
    moved = off.with_columns(
        pl.lit(None, dtype=pl.String).alias("raw"),
        pl.lit(OUTSIDE_HOURS).alias("reason"),
        pl.lit(REASONS[OUTSIDE_HOURS]).alias("detail"),
    )
    hashes = [row_hash(r) for r in moved.select(*BAR_COLUMNS, "raw").iter_rows(named=True)]
    moved = moved.with_columns(pl.Series("row_hash", hashes, dtype=pl.String))
    quarantine = pl.concat(
        [checked.quarantine.select(QUARANTINE_COLUMNS), moved.select(QUARANTINE_COLUMNS)],
        how="vertical_relaxed",
    )
    return ValidatedBars(good=good.filter(~flags), quarantine=quarantine)
