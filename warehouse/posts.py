"""Reddit posts and their sentiment in DuckDB: idempotent writes and point-in-time reads."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from core.post_quality import validate_posts
from warehouse.db import connect
from warehouse.io import load_frame, upsert

Scorer = Callable[[pl.DataFrame, datetime], pl.DataFrame]


@dataclass(frozen=True)
class PostIngestReport:
    """What one scrape did to reddit_posts and post_sentiment."""

    received: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    scored: int = 0
    quarantined: Counter[str] = field(default_factory=Counter)

    def __add__(self, other: PostIngestReport) -> PostIngestReport:
        return PostIngestReport(
            received=self.received + other.received,
            inserted=self.inserted + other.inserted,
            updated=self.updated + other.updated,
            unchanged=self.unchanged + other.unchanged,
            scored=self.scored + other.scored,
            quarantined=self.quarantined + other.quarantined,
        )

    @property
    def quarantined_total(self) -> int:
        return sum(self.quarantined.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "inserted": self.inserted,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "scored": self.scored,
            "quarantined": dict(self.quarantined),
        }

    def summary(self) -> str:
        bad = ", ".join(f"{k}={v}" for k, v in sorted(self.quarantined.items())) or "none"
        return (
            f"{self.received:,} posts received: {self.inserted:,} new, {self.updated:,} updated, "
            f"{self.unchanged:,} unchanged, {self.scored:,} scored; quarantined: {bad}"
        )


def write_posts(con: duckdb.DuckDBPyConnection, good: pl.DataFrame) -> tuple[int, int, int]:
    """Upsert posts by id; fetched_at alone changing is not a change."""
    r = upsert(con, "reddit_posts", good, ("post_id",), bookkeeping=("fetched_at",))
    return r.inserted, r.updated, r.unchanged


def write_post_quarantine(con: duckdb.DuckDBPyConnection, bad: pl.DataFrame, now: datetime) -> int:
    if bad.height == 0:
        return 0
    frame = bad.unique(["post_id", "reason"], keep="last").with_columns(
        pl.lit(now).cast(pl.Datetime("us", "UTC")).alias("quarantined_at")
    )
    return upsert(
        con,
        "reddit_posts_quarantine",
        frame,
        ("post_id", "reason"),
        bookkeeping=("quarantined_at",),
    ).inserted


def write_post_sentiment(con: duckdb.DuckDBPyConnection, scores: pl.DataFrame) -> int:
    """Upsert scores by (post_id, model); returns rows inserted or changed."""
    r = upsert(con, "post_sentiment", scores, ("post_id", "model"), bookkeeping=("scored_at",))
    return r.inserted + r.updated


def ingest_post_frames(
    frames: Iterable[pl.DataFrame], warehouse: Path | str, now: datetime, score: Scorer
) -> PostIngestReport:
    """Validate, store and score each batch of posts in its own transaction.

    A bad post goes to reddit_posts_quarantine with its reason; the rest of its batch is
    still stored. Scores are written for every stored post of the batch, so a re-run
    (or a post whose text was edited) leaves post_sentiment in step with reddit_posts.
    """
    report = PostIngestReport()
    for frame in frames:
        checked = validate_posts(frame, now)
        scores = score(checked.good, now) if checked.good.height else None
        with connect(warehouse) as con:
            con.execute("BEGIN TRANSACTION")
            try:
                write_post_quarantine(con, checked.quarantine, now)
                inserted, updated, unchanged = write_posts(con, checked.good)
                scored = write_post_sentiment(con, scores) if scores is not None else 0
                con.execute("COMMIT")
            except Exception:
                con.execute("ROLLBACK")
                raise
        report = report + PostIngestReport(
            received=frame.height,
            inserted=inserted,
            updated=updated,
            unchanged=unchanged,
            scored=scored,
            quarantined=Counter(checked.quarantine.get_column("reason").to_list()),
        )
    return report


def load_scored_posts(
    con: duckdb.DuckDBPyConnection, start: datetime, end: datetime, model: str
) -> pl.DataFrame:
    """Posts made in [start, end) with one model's scores: created_utc, compound, symbols."""
    return load_frame(
        con,
        "SELECT p.created_utc, s.compound, s.symbols FROM reddit_posts p"
        " JOIN post_sentiment s USING (post_id)"
        " WHERE s.model = ? AND p.created_utc >= ? AND p.created_utc < ?"
        " ORDER BY p.created_utc",
        [model, start, end],
    )


def load_sentiment_features(
    con: duckdb.DuckDBPyConnection,
    symbols: Sequence[str],
    start: datetime,
    end: datetime,
    *,
    lag: timedelta,
    model: str,
    aggregate: Callable[..., pl.DataFrame],
    windows: Sequence[timedelta],
    every: timedelta = timedelta(minutes=1),
) -> pl.DataFrame:
    """Point-in-time sentiment aggregates on a grid in [start, end) (see compute_sentiment_aggregates).

    Reads posts from start - longest window - lag so the first rows are complete, and none
    made at or after `end`: a row never sees a post before it was usable.
    """
    first = start - max(windows) - lag
    posts = load_scored_posts(con, first, end, model)
    return aggregate(posts, start, end, symbols=symbols, lag=lag, windows=windows, every=every)


def newest_post_times(con: duckdb.DuckDBPyConnection, source: str) -> dict[str, datetime]:
    """Per subreddit, created_utc of the newest stored post from a source (where a scrape resumes)."""
    rows = con.execute(
        "SELECT subreddit, max(created_utc) FROM reddit_posts WHERE source = ? GROUP BY ALL",
        [source],
    ).fetchall()
    return {str(sub): ts for sub, ts in rows}
