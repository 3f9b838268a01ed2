"""Architecture-search benchmarks: population 16 x 4 generations, serial vs two process workers."""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from prefect import flow

from adapters.synthetic import SyntheticBarSource
from benchmarks.harness import Figure, benchmark
from core.universe import EQUITY_SYMBOLS
from flows.config import EvolveConfig
from flows.evolve import evolve_architecture
from warehouse.bars import ingest_bar_frames


@flow(name="bench-warm-up")
def _warm_up() -> None:
    """A no-op flow run."""


@benchmark("search")
def bench_search(scratch: Path) -> list[Figure]:
    base = scratch / "search.duckdb"
    frames = SyntheticBarSource().fetch_bars(
        list(EQUITY_SYMBOLS),
        "1Min",
        datetime(2024, 1, 1, tzinfo=UTC),
        datetime(2024, 7, 1, tzinfo=UTC),
    )
    ingest_bar_frames(frames, base, datetime.now(UTC))
    _warm_up()  # start Prefect's temporary API outside the timings: both runs then share it
    seconds: dict[str, float] = {}
    runs: tuple[tuple[Literal["process", "serial"], int], ...] = (("process", 2), ("serial", 1))
    for runner, workers in runs:
        # Each run gets its own copy of the warehouse: the same search would otherwise resume.
        path = scratch / f"search-{runner}.duckdb"
        shutil.copy(base, path)
        config = EvolveConfig(
            population=16, generations=4, cycles=40, runner=runner, workers=workers,
            register_best=False, warehouse=str(path),
        )  # fmt: skip
        start = time.perf_counter()
        result = evolve_architecture(config)
        seconds[runner] = time.perf_counter() - start
        best = result["best"]
        print(
            f"  {runner} x{workers}: {seconds[runner]:.0f} s, best fitness {best['fitness']:.4f}",
            flush=True,
        )
    return [
        Figure("nas_16x4_s", round(seconds["process"], 1), "s", "<= 600"),
        Figure(
            "nas_speedup_2_workers", round(seconds["serial"] / seconds["process"], 2), "x", ">= 1.6"
        ),
    ]
