"""Scaling benchmarks: per-symbol costs (ingest, storage, memory) and nightly-retrain on 1 and 2 workers.

The README's "Past one machine" projection (500 symbols x 5 years onto N workers) is built
from these figures and from `nightly_retrain_full_s`; all data is SYNTHETIC.
"""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from adapters.synthetic import SyntheticBarSource, SyntheticConfig
from benchmarks.bench_nightly import END, LAST_DAY, START, synthetic_year
from benchmarks.harness import Figure, benchmark
from core.bar_quality import validate_bars
from core.configs import NightlyRetrainConfig
from core.universe import COIN_SYMBOLS
from flows.nightly_retrain import nightly_retrain
from warehouse.bars import write_bars
from warehouse.db import connect

SCALING_COINS = COIN_SYMBOLS[:4]
CYCLES = 300


def _checkpointed_size(path: Path) -> int:
    """The warehouse's bytes on disk: DuckDB folds its WAL into the file when the last
    connection closes; a WAL still beside it is counted too."""
    wal = path.with_name(path.name + ".wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def _per_symbol_year(scratch: Path) -> tuple[float, int, float, float]:
    """Seconds to validate and upsert one coin-year of minutes (a 24/7 symbol: the largest),
    its rows, the warehouse megabytes it adds and the megabytes its frame holds in memory."""
    path = scratch / "bench-scaling-symbol.duckdb"
    source = SyntheticBarSource(SyntheticConfig(seed=7))
    now = datetime.now(UTC)
    # The schema and the first symbol in place, so the size below is one more symbol-year.
    first = pl.concat(list(source.fetch_bars([COIN_SYMBOLS[-1]], "1Min", START, END)))
    with connect(path) as con:
        write_bars(con, validate_bars(first, now).good, now)
    before = _checkpointed_size(path)
    frame = pl.concat(list(source.fetch_bars([COIN_SYMBOLS[0]], "1Min", START, END)))
    t = time.perf_counter()
    checked = validate_bars(frame, now)
    with connect(path) as con:
        inserted, _, _ = write_bars(con, checked.good, now)
    ingest_s = time.perf_counter() - t
    added_mb = (_checkpointed_size(path) - before) / 1e6
    return ingest_s, inserted, added_mb, checked.good.estimated_size() / 1e6


def _nightly(warehouse: Path, models: Path, workers: int) -> float:
    t = time.perf_counter()
    result = nightly_retrain(
        NightlyRetrainConfig(
            coins=list(SCALING_COINS),
            include_spy=False,
            cycles=CYCLES,
            start=START.date(),
            end=LAST_DAY,
            runner="thread",
            workers=workers,
            warehouse=str(warehouse),
            models_dir=str(models),
        )
    )
    seconds = time.perf_counter() - t
    if len(result.get("failures", [])) > 1:  # the allocator may find one label on 4 coins
        raise RuntimeError(f"nightly-retrain failed: {result['failures']}")
    return seconds


@benchmark("scaling")
def bench_scaling(scratch: Path) -> list[Figure]:
    ingest_s, rows, added_mb, frame_mb = _per_symbol_year(scratch)
    print(
        f"  one coin-year ({rows:,} SYNTHETIC minutes): validate + upsert {ingest_s:.1f} s, "
        f"+{added_mb:.1f} MB of warehouse, {frame_mb:.1f} MB as a frame in memory"
    )
    base = scratch / "bench-scaling-nightly.duckdb"
    synthetic_year(base, coins=SCALING_COINS)
    # Model ids hash the recipe and the data, and a registered one is reused: each run gets
    # its own copy of the warehouse and its own models folder.
    seconds = {}
    for workers in (1, 2):
        copy = scratch / f"bench-scaling-{workers}.duckdb"
        shutil.copy(base, copy)
        seconds[workers] = _nightly(copy, scratch / f"models-{workers}", workers)
    print(
        f"  nightly-retrain, {len(SCALING_COINS)} SYNTHETIC coins x 1 year, {CYCLES} cycles: "
        f"1 worker {seconds[1]:.0f} s, 2 workers {seconds[2]:.0f} s "
        f"({seconds[1] / seconds[2]:.2f}x)"
    )
    return [
        Figure("symbol_year_ingest_s", round(ingest_s, 2), "s", "-"),
        Figure("symbol_year_rows", float(rows), "rows", "-"),
        Figure("warehouse_mb_per_symbol_year", round(added_mb, 1), "MB", "-"),
        Figure("symbol_year_frame_mb", round(frame_mb, 1), "MB", "-"),
        Figure("nightly_4_coins_1_worker_s", round(seconds[1], 1), "s", "-"),
        Figure("nightly_4_coins_2_workers_s", round(seconds[2], 1), "s", "-"),
        Figure("nightly_speedup_2_workers", round(seconds[1] / seconds[2], 2), "x", "-"),
    ]
