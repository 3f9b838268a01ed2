"""`ingest-bars` flow: a bar source -> validation -> quarantine -> idempotent upsert into `bars`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.logging import get_run_logger

from adapters.clock import SystemClock
from core.settings import get_settings
from flows.config import IngestBarsConfig, utc_midnight
from flows.wiring import build_bar_source, resolve_bar_source
from tasks.bars import ingest_symbol_bars, ingest_synthetic_sentiment
from warehouse.bars import IngestReport, newest_bars, timeframe_step


def report_markdown(title: str, reports: dict[str, IngestReport]) -> str:
    """A markdown table of per-symbol ingest counts, for the Prefect UI."""
    lines = [
        f"## {title}",
        "",
        "| symbol | received | new | updated | unchanged | quarantined |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in reports.items():
        bad = ", ".join(f"{k}: {v}" for k, v in sorted(r.quarantined.items())) or "0"
        lines.append(
            f"| {name} | {r.received:,} | {r.inserted:,} | {r.updated:,} | {r.unchanged:,} | {bad} |"
        )
    return "\n".join(lines)


@flow(name="ingest-bars", log_prints=True)
def ingest_bars(config: IngestBarsConfig | None = None) -> dict[str, Any]:
    """Ingest bars from one source into the warehouse; re-running it changes nothing."""
    config = config or IngestBarsConfig()
    settings = get_settings()
    logger = get_run_logger()
    warehouse = Path(config.warehouse) if config.warehouse else settings.warehouse_path
    config = resolve_bar_source(config, settings)
    source = build_bar_source(config, settings)
    clock = SystemClock()
    first_day, end_day = config.date_range()
    start, end = utc_midnight(first_day), utc_midnight(end_day)
    if config.source in ("alpaca", "synthetic"):
        # Never ask for bars that cannot exist yet (synthetic ones would be quarantined as future).
        end = min(end, clock.now().replace(second=0, microsecond=0))
    universe = config.default_symbols()
    if config.source == "alpaca" and not config.symbols:
        universe = [*settings.equity_symbols, *settings.coin_symbols]
    symbols: list[str | None] = list(universe) or [None]
    timeframe = config.default_timeframe()
    logger.info(
        "ingesting %s bars for %d symbol(s), %s to %s, into %s",
        source.name,
        len(symbols),
        first_day,
        end_day,
        warehouse,
    )
    per_symbol: dict[str, IngestReport] = {}
    resume = (
        newest_bars(warehouse, [s for s in symbols if s], timeframe)
        if config.incremental and timeframe
        else {}
    )
    for i, symbol in enumerate(symbols, start=1):
        label = symbol or Path(config.path or "file").name
        first = start
        if symbol in resume:
            # Incremental: resume just after the newest stored bar of this series.
            first = max(start, resume[symbol] + timeframe_step(timeframe or "1Min"))
        if first >= end:
            per_symbol[label] = IngestReport()
            logger.info("[%d/%d] %s: up to date", i, len(symbols), label)
            continue
        report = ingest_symbol_bars(source, label, symbol, timeframe, first, end, warehouse, clock)
        per_symbol[label] = report
        logger.info("[%d/%d] %s: %s", i, len(symbols), label, report.summary())
    total = sum(per_symbol.values(), IngestReport())
    if config.source == "synthetic" and config.signal == "sentiment":
        ingest_synthetic_sentiment(source, [s for s in symbols if s], start, end, warehouse)
    create_markdown_artifact(
        key="ingest-bars-report",
        markdown=report_markdown(f"ingest-bars ({source.name})", per_symbol),
        description=total.summary(),
    )
    logger.info("ingest-bars done: %s", total.summary())
    return {"source": source.name, "warehouse": str(warehouse), **total.as_dict()}


if __name__ == "__main__":
    ingest_bars()
