"""Nightly-retrain benchmarks: 14 coins over a year of SYNTHETIC minutes, its peak memory, Dask vs serial."""

from __future__ import annotations

import resource
import shutil
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from adapters.clock import ManualClock
from adapters.synthetic import SyntheticBarSource, SyntheticConfig
from adapters.synthetic_posts import SyntheticPostConfig, SyntheticPostSource
from benchmarks.harness import Figure, benchmark
from core.configs import NightlyRetrainConfig
from core.post_quality import frame_from_posts
from core.posts import Post
from core.settings import DEFAULT_SUBREDDITS
from core.universe import COIN_SYMBOLS, EQUITY_SYMBOLS
from flows.nightly_retrain import nightly_retrain
from models.sentiment import compute_post_sentiment
from warehouse.bars import ingest_bar_frames
from warehouse.posts import ingest_post_frames

START, END = datetime(2023, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC)
LAST_DAY = date(2023, 12, 31)
DASK_COINS = list(COIN_SYMBOLS[:4])


def _peak_rss_gb() -> float:
    """Peak resident memory of this process and of every child it waited for, in GB."""
    scale = 1024 if sys.platform != "darwin" else 1  # ru_maxrss is KiB on Linux, bytes on macOS
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * scale
    return max(own, kids) / 1e9


def synthetic_year(
    warehouse: Path, with_equities: bool = False, coins: tuple[str, ...] = COIN_SYMBOLS
) -> None:
    """A year of SYNTHETIC minutes of the coins (and the SPY agent's four ETFs) and posts."""
    bars = SyntheticBarSource(SyntheticConfig(seed=7, signal="sentiment"))
    for coin in coins:
        ingest_bar_frames(bars.fetch_bars([coin], "1Min", START, END), warehouse, END)
    if with_equities:
        ingest_bar_frames(bars.fetch_bars(list(EQUITY_SYMBOLS), "1Min", START, END), warehouse, END)
    posts = SyntheticPostSource(SyntheticPostConfig(seed=7, tone="lead-coins"), ManualClock(END))
    batch: list[Post] = []
    frames = []
    for post in posts.fetch_posts(DEFAULT_SUBREDDITS, START, 10**9):
        batch.append(post)
        if len(batch) == 5000:
            frames.append(frame_from_posts(batch))
            batch = []
    if batch:
        frames.append(frame_from_posts(batch))
    ingest_post_frames(frames, warehouse, END, compute_post_sentiment)


@benchmark("nightly_full")
def bench_nightly_full(scratch: Path) -> list[Figure]:
    """The seed's whole budget every night: 14 coins and the SPY agent, 1000 cycles each."""
    warehouse = scratch / "bench-nightly-full.duckdb"
    synthetic_year(warehouse, with_equities=True)
    rss_before = _peak_rss_gb()
    t = time.perf_counter()
    result = nightly_retrain(
        NightlyRetrainConfig(
            coins=list(COIN_SYMBOLS),
            include_spy=True,
            cycles=1000,
            start=START.date(),
            end=LAST_DAY,
            warehouse=str(warehouse),
            models_dir=str(scratch / "models-full"),
        )
    )
    full_s = time.perf_counter() - t
    peak = _peak_rss_gb()
    agents = sum(len(v.get("agents") or []) for v in result.get("symbols", {}).values())
    print(
        f"  nightly-retrain at the full budget, 14 SYNTHETIC coins + SPY x 1 year of minutes "
        f"(1000 cycles per agent, thread x2, {agents} agents): {full_s:.0f} s, peak RSS "
        f"{peak:.2f} GB (before: {rss_before:.2f} GB); failures: {len(result.get('failures', []))}"
    )
    return [
        Figure("nightly_retrain_full_s", round(full_s, 1), "s", "<= 900"),
        Figure("nightly_full_peak_rss_gb", round(peak, 2), "GB", "<= 4"),
    ]


@benchmark("nightly")
def bench_nightly(scratch: Path) -> list[Figure]:
    warehouse = scratch / "bench-nightly.duckdb"
    synthetic_year(warehouse)
    # Model ids hash the recipe and the data, and a registered one is reused: the serial and
    # Dask runs below each get their own copy of the data, or the second would train nothing.
    copies = {name: scratch / f"bench-nightly-{name}.duckdb" for name in ("serial", "dask")}
    for copy in copies.values():
        shutil.copy(warehouse, copy)
    base: dict[str, Any] = {
        "include_spy": False,
        "start": START.date(),
        "end": LAST_DAY,
        "warehouse": str(warehouse),
        "models_dir": str(scratch / "models"),
    }
    rss_before = _peak_rss_gb()
    t = time.perf_counter()
    full = nightly_retrain(NightlyRetrainConfig(coins=list(COIN_SYMBOLS), **base))
    full_s = time.perf_counter() - t
    peak = _peak_rss_gb()
    print(
        f"  nightly-retrain, 14 SYNTHETIC coins x 1 year of minutes (300 cycles per agent, thread "
        f"x2): {full_s:.0f} s, peak RSS {peak:.2f} GB (before: {rss_before:.2f} GB); "
        f"failures: {len(full.get('failures', []))}"
    )
    # Dask vs serial on a smaller job (4 coins, 100 cycles), separate models folders so
    # neither run finds the other's models already trained.
    small = {**base, "coins": DASK_COINS, "cycles": 100}
    t = time.perf_counter()
    nightly_retrain(
        NightlyRetrainConfig(
            **{**small, "models_dir": str(scratch / "serial"), "warehouse": str(copies["serial"])},
            runner="thread",
            workers=1,
        )
    )
    serial_s = time.perf_counter() - t
    t = time.perf_counter()
    nightly_retrain(
        NightlyRetrainConfig(
            **{**small, "models_dir": str(scratch / "dask"), "warehouse": str(copies["dask"])},
            runner="dask",
            workers=2,
        )
    )
    dask_s = time.perf_counter() - t
    print(f"  4 coins x 100 cycles: serial {serial_s:.0f} s, Dask (2 workers) {dask_s:.0f} s")
    return [
        Figure("nightly_retrain_14_coins_s", round(full_s, 1), "s", "<= 600"),
        Figure("nightly_peak_rss_gb", round(peak, 2), "GB", "<= 4"),
        Figure("dask_speedup_2_workers", round(serial_s / dask_s, 2), "x", "-"),
    ]
