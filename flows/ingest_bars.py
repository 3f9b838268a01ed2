"""`ingest-bars` flow: a bar source -> validation -> quarantine -> idempotent upsert into `bars`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.logging import get_run_logger

from adapters.clock import SystemClock
from adapters.files import FileBarSource
from adapters.skfolio_daily import SkfolioDailyBarSource
from adapters.skfolio_daily import asset_class as skfolio_asset_class
from core.assets import SymbolInfo, resolve_symbol_info
from core.configs import IngestBarsConfig, utc_midnight
from core.settings import get_settings
from flows.wiring import build_bar_source, resolve_bar_source
from tasks.bars import (
    SeriesIngest,
    ingest_symbol_bars,
    ingest_synthetic_sentiment,
    learn_corporate_actions,
)
from warehouse.bars import IngestReport, newest_bars, timeframe_step
from warehouse.symbols import load_symbol_infos, store_symbol_infos


def series_rows(
    per_symbol: Mapping[str, SeriesIngest],
    infos: Mapping[str, SymbolInfo],
    symbol_rows: Mapping[str, str],
) -> list[dict[str, Any]]:
    """One row per symbol: what was received, stored and quarantined, and what it is."""
    rows = []
    for name, s in per_symbol.items():
        info = infos.get(name)
        r = s.report
        rows.append(
            {
                "symbol": name,
                "asset_class": info.asset_class if info else None,
                "calendar": info.calendar if info else None,
                "timeframe": s.timeframe,
                "received": r.received,
                "new": r.inserted,
                "updated": r.updated,
                "unchanged": r.unchanged,
                "quarantined": dict(sorted(r.quarantined.items())),
                "stored": s.stored,
                "first": s.first_ts,
                "last": s.last_ts,
                "symbol_row": symbol_rows.get(name),
            }
        )
    return rows


def report_markdown(title: str, rows: list[dict[str, Any]], warnings: list[str]) -> str:
    """A markdown table of per-symbol ingest counts, for the Prefect UI."""
    lines = [
        f"## {title}",
        "",
        "| symbol | class | calendar | timeframe | received | new | updated | unchanged "
        "| quarantined | stored | first | last |",
        "|---|---|---|---|---:|---:|---:|---:|---|---:|---|---|",
    ]
    for r in rows:
        bad = ", ".join(f"{k}: {v}" for k, v in r["quarantined"].items()) or "0"
        lines.append(
            f"| {r['symbol']} | {r['asset_class'] or '-'} | {r['calendar'] or '-'} "
            f"| {r['timeframe'] or '-'} | {r['received']:,} | {r['new']:,} | {r['updated']:,} "
            f"| {r['unchanged']:,} | {bad} | {r['stored']:,} | {r['first'] or '-'} "
            f"| {r['last'] or '-'} |"
        )
    lines += ["", *(f"**warning:** {w}" for w in warnings)]
    return "\n".join(lines)


@dataclass(frozen=True)
class _Symbols:
    """What each symbol of an import is, settled before any bar is written."""

    names: list[str]
    infos: dict[str, SymbolInfo]
    symbol_rows: dict[str, str]
    stamp_zone: str | None
    """The zone of a file's naive stamps; None for other sources."""
    notes: list[str]


def _settle_symbols(
    config: IngestBarsConfig,
    source: Any,
    symbols: list[str | None],
    timeframe: str | None,
    warehouse: Path,
    clock: SystemClock,
    logger: Any,
) -> _Symbols:
    """Each symbol's asset class and calendar, stored (a conflicting re-import refused) before
    any bar is written; a file's symbols and the zone of its stamps are known once it is read."""
    names: list[str] = [s for s in symbols if s]
    stamp_zone: str | None = None
    provenance = source.name
    notes: list[str] = []
    if isinstance(source, FileBarSource):
        names = source.symbols(timeframe, wanted=names)
        stamp_zone = source.naive_zone
        provenance = source.source_label
        if source.close_only:
            # Said once: its bars are stored with null open/high/low, nothing invented.
            notes.append(f"{source.path.name}: close-only: no open/high/low columns")
            logger.info("%s", notes[-1])
    stored = load_symbol_infos(warehouse, names)
    infos = {
        name: resolve_symbol_info(
            name,
            stored.get(name),
            # skfolio's ETFs are ETFs and its index an equity; a name alone cannot say so.
            asset_class=config.asset_class
            or (skfolio_asset_class(name) if isinstance(source, SkfolioDailyBarSource) else None),
            calendar=config.calendar,
            timezone=stamp_zone,
            source=provenance,
            reclassify=config.reclassify,
        )
        for name in names
    }
    symbol_rows = store_symbol_infos(warehouse, list(infos.values()), clock.now())
    return _Symbols(names, infos, symbol_rows, stamp_zone, notes)


def _ingest_series(
    config: IngestBarsConfig,
    source: Any,
    symbols: list[str | None],
    timeframe: str | None,
    span: tuple[datetime, datetime],
    settled: _Symbols,
    warehouse: Path,
    clock: SystemClock,
    logger: Any,
) -> dict[str, SeriesIngest]:
    """Each series validated, quarantined and stored in turn (incremental: from its newest bar on)."""
    start, end = span
    calendars = {n: info.calendar for n, info in settled.infos.items()}
    per_symbol: dict[str, SeriesIngest] = {}
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
            per_symbol[label] = SeriesIngest()
            logger.info("[%d/%d] %s: up to date", i, len(symbols), label)
            continue
        results = ingest_symbol_bars(
            source,
            label,
            symbol,
            timeframe,
            first,
            end,
            warehouse,
            clock,
            # A user's file is checked against the stored history: a misread decimal
            # separator or unit must not overwrite or extend it.
            scale_check=config.source == "file",
            # ...and its clock against the calendar: a wrong zone shifts every bar.
            calendars=calendars if config.source == "file" else None,
            stamp_zone=settled.stamp_zone,
            # Pre- and post-market bars of stocks and ETFs are held back (the agents trade
            # the regular session); coins and FX have no such hours.
            regular_hours=calendars if config.regular_hours_only else None,
        )
        per_symbol.update(results)
        for name, result in results.items():
            logger.info("[%d/%d] %s: %s", i, len(symbols), name, result.report.summary())
    return per_symbol


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
    settled = _settle_symbols(config, source, symbols, timeframe, warehouse, clock, logger)
    logger.info(
        "ingesting %s bars for %d symbol(s), %s to %s, into %s",
        source.name,
        len(settled.names) or len(symbols),
        first_day,
        end_day,
        warehouse,
    )
    # Splits and dividends first: the stored stock bars re-based onto those learned now.
    rebased = learn_corporate_actions(source, settled.names, first_day, clock.now(), warehouse)
    for line in rebased:
        logger.info("%s", line)
    per_symbol = _ingest_series(
        config, source, symbols, timeframe, (start, end), settled, warehouse, clock, logger
    )
    total = sum((s.report for s in per_symbol.values()), IngestReport())
    if config.source == "synthetic" and config.signal == "sentiment":
        ingest_synthetic_sentiment(source, [s for s in symbols if s], start, end, warehouse)
    rows = series_rows(per_symbol, settled.infos, settled.symbol_rows)
    warnings = [*settled.notes, *rebased, *(w for s in per_symbol.values() for w in s.warnings)]
    create_markdown_artifact(
        key="ingest-bars-report",
        markdown=report_markdown(f"ingest-bars ({source.name})", rows, warnings),
        description=total.summary(),
    )
    logger.info("ingest-bars done: %s", total.summary())
    return {
        "source": source.name,
        "warehouse": str(warehouse),
        **total.as_dict(),
        "series": rows,
        "warnings": warnings,
    }


if __name__ == "__main__":
    ingest_bars()
