"""Prefect tasks around bar ingestion: one task per symbol, retried on transient errors."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State
from prefect.logging import get_run_logger

from adapters.protocols import BarSource, Clock
from warehouse.bars import IngestReport, ingest_bar_frames, write_synthetic_sentiment
from warehouse.db import connect


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
) -> IngestReport:
    """Fetch one symbol's bars (all of a file's when symbol is None), validate, upsert."""
    symbols = [symbol] if symbol else []
    frames = source.fetch_bars(symbols, timeframe or "", start, end)
    report = ingest_bar_frames(frames, warehouse, clock.now())
    if report.quarantined_total:
        get_run_logger().warning(
            "%s: %d row(s) quarantined (see bars_quarantine): %s",
            label,
            report.quarantined_total,
            ", ".join(f"{k}={v}" for k, v in sorted(report.quarantined.items())),
        )
    return report


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
