"""Post validation: split fetched posts into rows to store and rows to quarantine with a reason."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl

from adapters.protocols import Post

POST_SCHEMA: dict[str, pl.DataType] = {
    "post_id": pl.String(),
    "subreddit": pl.String(),
    "title": pl.String(),
    "body": pl.String(),
    "author": pl.String(),
    "score": pl.Int64(),
    "num_comments": pl.Int64(),
    "url": pl.String(),
    "created_utc": pl.Datetime("us", "UTC"),
    "fetched_at": pl.Datetime("us", "UTC"),
    "source": pl.String(),
}

MAX_TEXT_CHARS = 40_000  # longer bodies are cut here (Reddit's own self-text limit)
# Clock skew between Reddit and us is small; a post dated further ahead is bad data.
FUTURE_TOLERANCE = timedelta(minutes=5)

REASONS: dict[str, str] = {
    "missing_id": "the post has no id",
    "missing_created": "the post has no creation time",
    "future_created": "the post is dated after it was fetched",
    "empty_text": "title and body are both empty (deleted or removed)",
    "duplicate_id": "another post in the batch has the same id; the last one was kept",
}
QUARANTINE_COLUMNS = ("post_id", "reason", "detail", "subreddit", "title", "created_utc", "source")


@dataclass(frozen=True)
class ValidatedPosts:
    good: pl.DataFrame
    quarantine: pl.DataFrame


def _clean(text: str | None) -> str:
    # NUL bytes are never meaningful in a post and trip some downstream tools.
    return (text or "").replace("\x00", "")[:MAX_TEXT_CHARS]


def frame_from_posts(posts: Iterable[Post]) -> pl.DataFrame:
    """Posts as a frame in POST_SCHEMA, text cleaned of NULs and cut to MAX_TEXT_CHARS."""
    rows = [
        {
            "post_id": p.id,
            "subreddit": p.subreddit,
            "title": _clean(p.title),
            "body": _clean(p.body),
            "author": p.author,
            "score": p.score,
            "num_comments": p.num_comments,
            "url": p.url,
            "created_utc": p.created_utc,
            "fetched_at": p.fetched_at,
            "source": p.source,
        }
        for p in posts
    ]
    return pl.DataFrame(rows, schema=POST_SCHEMA)


def validate_posts(df: pl.DataFrame, now: datetime) -> ValidatedPosts:
    """Apply the rules in REASONS order; a post is quarantined under the first it fails."""
    df = df.with_row_index("_i")
    reason = (
        pl.when(pl.col("post_id").is_null() | (pl.col("post_id").str.strip_chars() == ""))
        .then(pl.lit("missing_id"))
        .when(pl.col("created_utc").is_null())
        .then(pl.lit("missing_created"))
        .when(pl.col("created_utc") > pl.lit(now + FUTURE_TOLERANCE))
        .then(pl.lit("future_created"))
        .when(
            (pl.col("title").fill_null("").str.strip_chars() == "")
            & (pl.col("body").fill_null("").str.strip_chars() == "")
        )
        .then(pl.lit("empty_text"))
        .otherwise(pl.lit(None, dtype=pl.String))
    )
    df = df.with_columns(reason.alias("reason"))
    # A repeated id: keep the last delivery (the freshest score/comment count).
    dup = pl.col("reason").is_null() & (
        pl.col("_i") != pl.col("_i").filter(pl.col("reason").is_null()).max().over("post_id")
    )
    df = df.with_columns(
        pl.when(dup).then(pl.lit("duplicate_id")).otherwise(pl.col("reason")).alias("reason")
    )
    good = df.filter(pl.col("reason").is_null()).drop("_i", "reason")
    bad = df.filter(pl.col("reason").is_not_null()).select(
        pl.col("post_id").fill_null(""),
        "reason",
        pl.col("reason").replace_strict(REASONS, return_dtype=pl.String).alias("detail"),
        "subreddit",
        pl.col("title").str.slice(0, 300),
        "created_utc",
        "source",
    )
    return ValidatedPosts(good=good, quarantine=bad)
