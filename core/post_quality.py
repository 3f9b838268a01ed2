"""Post validation: split fetched posts into rows to store and rows to quarantine with a reason."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import polars as pl

from core.posts import Post

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
    "missing_subreddit": "the post has no subreddit",
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


# What Reddit puts where a deleted or removed post's text (or author) was.
DELETED_TEXTS = frozenset({"[deleted]", "[removed]", "[deleted by user]", "[removed by reddit]"})


def _text(value: object, limit: int = MAX_TEXT_CHARS) -> str | None:
    """A field as clean text, or None when it is not text at all.

    NUL bytes are never meaningful in a post and trip downstream tools; lone surrogates
    (broken emoji from a bad decoder) cannot be stored as UTF-8 and become U+FFFD.
    Emoji and right-to-left text are kept as sent.
    """
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    text = value[:limit].replace("\x00", "")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8").replace("?", "\ufffd")
    return text


def _clean(value: object) -> str:
    """Post text: '' for a missing, non-text or deleted/removed placeholder."""
    text = _text(value) or ""
    return "" if text.strip() in DELETED_TEXTS else text


def _post_id(value: object) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    text = _text(value, 64)
    return text.strip() if text and text.strip() else None


def _count(value: object) -> int | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**63 else None
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    return None


def _time(value: object) -> datetime | None:
    """An aware UTC datetime; naive ones are taken as UTC; anything else None."""
    if not isinstance(value, datetime):
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _row(p: object) -> dict[str, object]:
    author = _text(getattr(p, "author", None), 100)
    return {
        "post_id": _post_id(getattr(p, "id", None)),
        "subreddit": (_text(getattr(p, "subreddit", None), 100) or "").strip() or None,
        "title": _clean(getattr(p, "title", None)),
        "body": _clean(getattr(p, "body", None)),
        "author": None if not author or author.strip() in DELETED_TEXTS else author,
        "score": _count(getattr(p, "score", None)),
        "num_comments": _count(getattr(p, "num_comments", None)),
        "url": _text(getattr(p, "url", None), 2_000),
        "created_utc": _time(getattr(p, "created_utc", None)),
        "fetched_at": _time(getattr(p, "fetched_at", None)),
        "source": _text(getattr(p, "source", None), 100) or "unknown",
    }


def frame_from_posts(posts: Iterable[Post]) -> pl.DataFrame:
    """Posts as a frame in POST_SCHEMA; no field of one post can fail the batch.

    Text is cleaned of NULs and cut to MAX_TEXT_CHARS; '[deleted]'/'[removed]' text and
    authors become empty/None; a field of the wrong type becomes null (an int id becomes
    its text, a naive time is taken as UTC), so validate_posts quarantines what is then
    missing instead of the whole batch failing.
    """
    return pl.DataFrame([_row(p) for p in posts], schema=POST_SCHEMA)


def validate_posts(df: pl.DataFrame, now: datetime) -> ValidatedPosts:
    """Apply the rules in REASONS order; a post is quarantined under the first it fails."""
    df = df.with_row_index("_i")
    reason = (
        pl.when(pl.col("post_id").is_null() | (pl.col("post_id").str.strip_chars() == ""))
        .then(pl.lit("missing_id"))
        .when(pl.col("subreddit").is_null() | (pl.col("subreddit").str.strip_chars() == ""))
        .then(pl.lit("missing_subreddit"))
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
    # The columns the table holds NOT NULL get a value: one odd post must not fail the batch.
    good = (
        df.filter(pl.col("reason").is_null())
        .drop("_i", "reason")
        .with_columns(
            pl.col("title").fill_null(""),
            pl.col("fetched_at").fill_null(pl.lit(now).cast(pl.Datetime("us", "UTC"))),
            pl.col("source").fill_null("unknown"),
        )
    )
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
