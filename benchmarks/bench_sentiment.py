"""Sentiment benchmark: posts validated, scored (VADER + finance lexicon, mentions) and stored."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from adapters.clock import ManualClock
from adapters.synthetic_posts import SyntheticPostConfig, SyntheticPostSource
from benchmarks.harness import Figure, benchmark
from core.post_quality import frame_from_posts
from core.settings import DEFAULT_SUBREDDITS
from models.sentiment import compute_post_sentiment
from warehouse.posts import ingest_post_frames

START = datetime(2024, 1, 1, tzinfo=UTC)
END = datetime(2024, 4, 1, tzinfo=UTC)
BATCH = 5_000


@benchmark("sentiment")
def bench_sentiment(scratch: Path) -> list[Figure]:
    source = SyntheticPostSource(SyntheticPostConfig(seed=7), ManualClock(END))
    t = time.perf_counter()
    posts = list(source.fetch_posts(DEFAULT_SUBREDDITS, START, 10**9))
    gen_s = time.perf_counter() - t
    frames = [frame_from_posts(posts[i : i + BATCH]) for i in range(0, len(posts), BATCH)]
    path = scratch / "bench-sentiment.duckdb"
    t = time.perf_counter()
    report = ingest_post_frames(frames, path, END, compute_post_sentiment)
    store_s = time.perf_counter() - t
    if report.inserted != len(posts) or report.scored != len(posts):
        raise RuntimeError(f"expected {len(posts)} posts stored and scored, got {report.summary()}")
    t = time.perf_counter()
    again = ingest_post_frames(frames, path, END, compute_post_sentiment)
    rerun_s = time.perf_counter() - t
    if again.inserted or again.updated or again.scored:
        raise RuntimeError(f"a re-run changed rows: {again.summary()}")
    print(
        f"  {len(posts):,} SYNTHETIC posts: generated in {gen_s:.1f} s; validated, scored and "
        f"stored in {store_s:.1f} s; re-run (all unchanged) {rerun_s:.1f} s"
    )
    return [
        Figure("sentiment_posts_per_s", round(len(posts) / store_s), "posts/s", ">= 10000"),
        Figure("sentiment_posts", float(len(posts)), "posts", "-"),
    ]
