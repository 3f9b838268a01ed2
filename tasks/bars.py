"""Prefect tasks around bar ingestion: one task per symbol, retried on transient errors."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import polars as pl
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State
from prefect.logging import get_run_logger

from adapters.protocols import BarSource, Clock
from core.bar_schema import TIMEFRAMES
from core.stamp_shift import find_stamp_shift
from core.universe import is_coin
from warehouse.bars import (
    IngestReport,
    ingest_bar_frames,
    timeframe_step,
    write_synthetic_sentiment,
)
from warehouse.corporate_actions import learn_actions, oldest_newest_bar
from warehouse.db import connect
from warehouse.symbols import load_stored_span


def retry_transient(task: object, task_run: object, state: State) -> bool:
    """Retry I/O trouble (a locked warehouse, a flaky source), not bad input: a missing
    file or an invalid request fails the same way every time."""
    try:
        state.result()
    except (ValueError, TypeError, FileNotFoundError):
        return False
    except Exception:  # noqa: BLE001 -- anything else may be transient
        return True
    return True


NO_SYMBOL = "(no symbol)"
"""The key of a file's rows without a symbol (all quarantined as missing_key)."""


@dataclass
class SeriesIngest:
    """One symbol's part of an ingest: the counts, what of it is stored, and any warnings."""

    report: IngestReport = field(default_factory=IngestReport)
    timeframe: str | None = None
    source: str | None = None
    """The bars' provenance label (bars.source)."""
    stored: int = 0
    """Bars of this series and source now stored over the span received (new or not)."""
    first_ts: datetime | None = None
    """Start of the first of those stored bars (UTC)."""
    last_ts: datetime | None = None
    """Start of the last of those stored bars (UTC)."""
    warnings: list[str] = field(default_factory=list)


@task(
    name="ingest-symbol-bars",
    task_run_name="ingest-{label}",
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=retry_transient,
    # Inputs include a source object and the result is cheap to recompute: no caching.
    cache_policy=NO_CACHE,
)
def ingest_symbol_bars(
    source: BarSource,
    label: str,
    symbol: str | None,
    timeframe: str | None,
    start: datetime,
    end: datetime,
    warehouse: Path,
    clock: Clock,
    scale_check: bool = False,
    calendars: Mapping[str, str] | None = None,
    stamp_zone: str | None = None,
    regular_hours: Mapping[str, str] | None = None,
) -> dict[str, SeriesIngest]:
    """Fetch one symbol's bars (all of a file's when symbol is None), validate, upsert.

    Returns what happened per symbol received. `scale_check`: quarantine a series an order
    of magnitude off its stored history. `calendars` (symbol -> calendar name): check each
    series' intraday timestamps against its calendar's sessions and warn when they look a
    whole number of hours off; `stamp_zone` is the zone naive timestamps were read in.
    `regular_hours` (symbol -> calendar): quarantine intraday bars outside the regular
    sessions as `outside_regular_hours`.
    """
    logger = get_run_logger()
    now = clock.now()
    out: dict[str, SeriesIngest] = {}
    spans: dict[str, list[pl.Series]] = {}
    frames = source.fetch_bars([symbol] if symbol else [], timeframe or "", start, end)
    for frame in frames:
        names = frame.get_column("symbol").unique()
        parts = frame.partition_by("symbol", maintain_order=True) if names.len() > 1 else [frame]
        for part in parts:
            name = part.get_column("symbol").drop_nulls().first()
            key = str(name) if name is not None else (symbol or NO_SYMBOL)
            series = out.setdefault(key, SeriesIngest())
            series.report = series.report + ingest_bar_frames(
                [part], warehouse, now, scale_check=scale_check, regular_hours=regular_hours
            )
            if part.height:
                tf, src = (part.get_column(c).drop_nulls().first() for c in ("timeframe", "source"))
                series.timeframe = series.timeframe or (str(tf) if tf is not None else None)
                series.source = series.source or (str(src) if src is not None else None)
                spans.setdefault(key, []).append(part.get_column("ts"))
    for key, series in out.items():
        report = series.report
        if report.quarantined_total:
            logger.warning(
                "%s: %d row(s) quarantined (see bars_quarantine): %s",
                key,
                report.quarantined_total,
                ", ".join(f"{k}={v}" for k, v in sorted(report.quarantined.items())),
            )
        if key == NO_SYMBOL or series.timeframe is None or series.source is None:
            continue
        stamps = pl.concat(spans[key])
        span = load_stored_span(
            warehouse, key, series.timeframe, series.source, stamps.min(), stamps.max()
        )
        series.stored, series.first_ts, series.last_ts = span
        if calendars and key in calendars and series.timeframe in TIMEFRAMES:
            shift = find_stamp_shift(
                stamps, calendars[key], timeframe_step(series.timeframe), stamp_zone
            )
            if shift is not None:
                series.warnings.append(shift.message(key))
                logger.warning(shift.message(key))
    return out


@task(
    name="ingest-synthetic-sentiment", retries=2, retry_delay_seconds=[2, 10], cache_policy=NO_CACHE
)
def ingest_synthetic_sentiment(
    source: BarSource, symbols: list[str], start: datetime, end: datetime, warehouse: Path
) -> int:
    """Store the sentiment series the generator planted (signal='sentiment' only)."""
    fetch = getattr(source, "fetch_sentiment", None)
    if fetch is None:
        raise TypeError(f"bar source {source.name!r} has no planted sentiment series")
    frame = fetch(symbols, start, end)
    with connect(warehouse) as con:
        inserted = write_synthetic_sentiment(con, frame)
    get_run_logger().info(
        "synthetic sentiment: %s rows new of %s", f"{inserted:,}", f"{frame.height:,}"
    )
    return inserted


def learn_corporate_actions(
    source: Any, symbols: list[str], since: date, now: datetime, warehouse: Path
) -> list[str]:
    """Before adjusted bars are fetched (or streamed): the stocks' splits and dividends from
    the source (AlpacaBarSource.fetch_corporate_actions) since `since` -- or since the
    earliest newest stored bar, if older -- recorded, and the stored bars fetched before
    each newly learned one re-based onto it. Returns one line per re-based series. A
    source without corporate actions (files, synthetic, coins) returns nothing."""
    fetch = getattr(source, "fetch_corporate_actions", None)
    stocks = [s for s in symbols if s and not is_coin(s)]
    if fetch is None or not stocks:
        return []
    with connect(warehouse) as con:
        newest = oldest_newest_bar(con, stocks)
    start = min(since, newest.date()) if newest is not None else since
    actions = fetch(stocks, start, now.date())
    with connect(warehouse) as con:
        rebased = learn_actions(con, actions, now, source=source.name)
    return [
        f"{r.action.describe()}: {r.bars:,} stored {r.timeframe} bar(s) before it re-based "
        f"(prices x{r.price_factor:.6g}, volume x{r.volume_factor:.6g})"
        for r in rebased
    ]
