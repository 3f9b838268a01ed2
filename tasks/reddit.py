"""Prefect tasks around Reddit scraping: one task per subreddit, retried on transient errors."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from itertools import islice
from pathlib import Path

import polars as pl
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from adapters.protocols import Clock, PostSource
from core.post_quality import frame_from_posts
from core.posts import Post
from models.sentiment import compute_post_sentiment
from tasks.bars import retry_transient
from warehouse.posts import PostIngestReport, ingest_post_frames


def _batches(posts: Iterator[Post], size: int) -> Iterator[pl.DataFrame]:
    while True:
        chunk = list(islice(posts, size))
        if not chunk:
            return
        yield frame_from_posts(chunk)


def store_posts(
    posts: Iterable[Post], warehouse: Path, now: datetime, batch_size: int
) -> PostIngestReport:
    """The scrape's whole storing path: batches -> validation -> reddit_posts -> scores.

    A bad post is quarantined with its reason; it never fails its batch.
    """
    return ingest_post_frames(
        _batches(iter(posts), batch_size), warehouse, now, compute_post_sentiment
    )


@task(
    name="scrape-subreddit",
    task_run_name="scrape-r/{subreddit}",
    retries=2,
    retry_delay_seconds=[5, 30],
    retry_condition_fn=retry_transient,
    cache_policy=NO_CACHE,
)
def scrape_subreddit(
    source: PostSource,
    subreddit: str,
    since: datetime | None,
    limit: int,
    warehouse: Path,
    batch_size: int,
    clock: Clock,
) -> PostIngestReport:
    """Fetch a subreddit's new posts, store them by id, score them into post_sentiment."""
    report = store_posts(
        source.fetch_posts([subreddit], since, limit), warehouse, clock.now(), batch_size
    )
    if report.quarantined_total:
        get_run_logger().warning(
            "r/%s: %d post(s) quarantined (see reddit_posts_quarantine): %s",
            subreddit,
            report.quarantined_total,
            ", ".join(f"{k}={v}" for k, v in sorted(report.quarantined.items())),
        )
    return report
