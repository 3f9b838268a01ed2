"""Scenario 14: one bad Reddit post never fails its batch.

The posts go through tasks.reddit.store_posts -- the scrape-reddit flow's own path:
batches -> frame_from_posts -> validate_posts -> reddit_posts / quarantine -> VADER scores
-> post_sentiment -- into a real DuckDB file.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from core.post_quality import MAX_TEXT_CHARS
from core.posts import Post
from models.sentiment import MODEL_NAME
from tasks.reddit import store_posts
from warehouse.db import connect

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def post(i: int, **over: Any) -> Post:
    p = Post(
        id=f"p{i}",
        subreddit="wallstreetbets",
        title=f"SPY calls printing {i}",
        body="to the moon",
        author="someone",
        score=i,
        num_comments=1,
        created_utc=NOW - timedelta(minutes=100 - i),
        fetched_at=NOW,
        url=f"https://example.invalid/{i}",
        source="reddit",
    )
    # Post is frozen and typed; bad data arrives untyped, so fields are forced in.
    for key, value in over.items():
        object.__setattr__(p, key, value)
    return p


def _tables(path: Path) -> dict[str, pl.DataFrame]:
    with connect(path) as con:
        return {
            t: con.sql(f"SELECT * FROM {t} ORDER BY ALL").pl()
            for t in ("reddit_posts", "post_sentiment", "reddit_posts_quarantine")
        }


def _batch() -> tuple[list[Post], dict[str, str], dict[str, str]]:
    """Posts; the good ids with the body they must be stored with; bad ids -> reason."""
    huge = "🚀 bullish " * 100_000  # ~1 MB
    posts = [
        post(0),
        post(1, author="[deleted]"),  # deleted author: a good post, author unknown
        post(2, title="[deleted]", body="[deleted]", author="[deleted]"),
        post(3, title="[removed by reddit]", body="[removed]"),
        post(4, title="", body="   "),
        post(5, body=huge),
        post(6, title="ביטקוין bullish 🌙\u200f", body="مرحبا \x00 world\x00"),
        post(7, title="broken emoji \ud83d here", body=b"bytes body \xff"),
        post(8, title=None, body=12345),  # non-string text is no text
        post(9, score="many", num_comments=None, url=42),  # non-int counts
        post(10, created_utc="2024-06-01"),  # not a datetime
        post(11, created_utc=NOW + timedelta(days=2)),
        post(12, id=None),
        post(13, id="   "),
        post(14, subreddit=None),
        post(15, id=123456),  # an int id is kept as its text
        post(16, fetched_at=None, source=None),
        post(17, body="first delivery"),
        post(17, body="second delivery"),  # duplicate id: the last one is kept
        post(18, created_utc=datetime(2024, 6, 1, 10, 0)),  # naive: taken as UTC
    ]
    good = {
        "p0": "to the moon",
        "p1": "to the moon",
        "p5": huge[:MAX_TEXT_CHARS],
        "p6": "مرحبا  world",
        "p9": "to the moon",
        "123456": "to the moon",
        "p16": "to the moon",
        "p17": "second delivery",
        "p18": "to the moon",
    }
    bad = {
        "p2": "empty_text",
        "p3": "empty_text",
        "p4": "empty_text",
        "p8": "empty_text",
        "p10": "missing_created",
        "p11": "future_created",
        "": "missing_id",
        "p14": "missing_subreddit",
        "p17": "duplicate_id",
    }
    return posts, good, bad


def test_one_bad_post_never_fails_the_batch(warehouse_path: Path) -> None:
    posts, good, bad = _batch()
    report = store_posts(posts, warehouse_path, NOW, batch_size=500)

    t = _tables(warehouse_path)
    stored = t["reddit_posts"]
    bodies = dict(zip(stored["post_id"], stored["body"], strict=True))
    good_ids = {*good, "p7"}
    assert set(bodies) == good_ids
    for pid, body in good.items():
        assert bodies[pid] == body, pid
    # The broken surrogate and the undecodable byte are replaced, not fatal.
    p7 = stored.filter(pl.col("post_id") == "p7").row(0, named=True)
    assert p7["title"] == "broken emoji \ufffd here" and p7["body"] == "bytes body \ufffd"
    by_id = {r["post_id"]: r for r in stored.iter_rows(named=True)}
    assert by_id["p1"]["author"] is None
    assert by_id["p9"]["score"] is None and by_id["p9"]["url"] is None
    assert by_id["p16"]["fetched_at"] == NOW and by_id["p16"]["source"] == "unknown"
    assert by_id["p18"]["created_utc"] == datetime(2024, 6, 1, 10, 0, tzinfo=UTC)
    assert all(
        "\x00" not in (v or "") for v in stored["title"].to_list() + stored["body"].to_list()
    )

    scores = t["post_sentiment"]
    assert set(scores["post_id"]) == good_ids
    assert set(scores["model"]) == {MODEL_NAME}
    assert scores["compound"].is_finite().all()
    assert scores.filter(pl.col("post_id") == "p5")["compound"].item() > 0  # 🚀 bullish

    held = t["reddit_posts_quarantine"]
    assert sorted(zip(held["post_id"], held["reason"], strict=True)) == sorted(bad.items())
    assert held["detail"].is_not_null().all()
    assert report.received == len(posts)
    assert report.inserted == len(good_ids) and report.scored == len(good_ids)
    assert report.quarantined_total == len(posts) - len(good_ids) == 10
    # Both missing ids and the 3 empty posts are one quarantine row per (id, reason).
    assert held.height == len(bad)


def test_a_rerun_changes_nothing(warehouse_path: Path) -> None:
    posts, _, _ = _batch()
    store_posts(posts, warehouse_path, NOW, batch_size=7)
    before = _tables(warehouse_path)
    report = store_posts(posts, warehouse_path, NOW + timedelta(minutes=15), batch_size=7)
    after = _tables(warehouse_path)
    assert (report.inserted, report.updated) == (0, 0)
    for name, table in before.items():
        assert after[name].equals(table), name


def test_small_batches_keep_the_good_posts_of_every_batch(warehouse_path: Path) -> None:
    """Each batch of 3 holds a bad post or two; every good one of every batch is stored."""
    posts, good, _ = _batch()
    store_posts(posts, warehouse_path, NOW, batch_size=3)
    stored = set(_tables(warehouse_path)["reddit_posts"]["post_id"])
    assert set(good) <= stored
    # Across batches, the later delivery of p17 still wins.
    with connect(warehouse_path) as con:
        assert con.execute("SELECT body FROM reddit_posts WHERE post_id = 'p17'").fetchall() == [
            ("second delivery",)
        ]
