"""Ingest benchmarks: one synthetic year of minute bars for all 18 symbols, generated and upserted."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from adapters.synthetic import SyntheticBarSource, SyntheticConfig
from benchmarks.harness import Figure, benchmark
from core.bar_quality import validate_bars
from core.universe import COIN_SYMBOLS, EQUITY_SYMBOLS
from warehouse.bars import write_bars
from warehouse.db import connect

START = datetime(2023, 1, 1, tzinfo=UTC)
END = datetime(2024, 1, 1, tzinfo=UTC)


@benchmark("ingest")
def bench_ingest(scratch: Path) -> list[Figure]:
    source = SyntheticBarSource(SyntheticConfig(seed=7))
    symbols = [*EQUITY_SYMBOLS, *COIN_SYMBOLS]
    path = scratch / "bench-ingest.duckdb"
    now = datetime.now(UTC)
    gen_s = validate_s = upsert_s = 0.0
    rows = 0
    total_start = time.perf_counter()
    for symbol in symbols:
        t = time.perf_counter()
        frames = list(source.fetch_bars([symbol], "1Min", START, END))
        gen_s += time.perf_counter() - t
        frame = pl.concat(frames)
        t = time.perf_counter()
        checked = validate_bars(frame, now)
        validate_s += time.perf_counter() - t
        if checked.quarantine.height:
            raise RuntimeError(f"synthetic {symbol} produced {checked.quarantine.height} bad rows")
        t = time.perf_counter()
        with connect(path, timeout_s=10) as con:
            inserted, _, _ = write_bars(con, checked.good, now)
        upsert_s += time.perf_counter() - t
        rows += inserted
    total_s = time.perf_counter() - total_start

    # Re-upsert six symbols of the same year: every key exists and compares equal.
    rerun_rows = 0
    rerun_s = 0.0
    for symbol in [*symbols[:4], *symbols[4:6]]:
        frame = pl.concat(list(source.fetch_bars([symbol], "1Min", START, END)))
        checked = validate_bars(frame, now)
        t = time.perf_counter()
        with connect(path, timeout_s=10) as con:
            _, _, unchanged = write_bars(con, checked.good, now)
        rerun_s += time.perf_counter() - t
        if unchanged != checked.good.height:
            raise RuntimeError(f"re-upsert of {symbol} changed rows")
        rerun_rows += unchanged
    print(
        f"  {rows:,} rows: generate {gen_s:.1f} s, validate {validate_s:.1f} s, upsert {upsert_s:.1f} s"
    )
    print(f"  re-upsert of {rerun_rows:,} unchanged rows: {rerun_s:.1f} s")
    return [
        Figure("synthetic_year_all_symbols_s", round(total_s, 2), "s", "<= 60"),
        Figure("synthetic_year_rows", float(rows), "rows", "-"),
        Figure("synthetic_generate_rows_per_s", round(rows / gen_s), "rows/s", "-"),
        Figure("ingest_upsert_rows_per_s", round(rows / upsert_s), "rows/s", ">= 800000"),
        Figure("ingest_reupsert_unchanged_rows_per_s", round(rerun_rows / rerun_s), "rows/s", "-"),
    ]
