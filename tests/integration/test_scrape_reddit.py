"""The scrape-reddit flow on the offline source under a real Prefect API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.configs import ScrapeRedditConfig
from core.settings import Settings
from flows.scrape_reddit import scrape_reddit
from flows.wiring import MissingCredentialsError, build_post_source
from tests.fakes.reddit import (
    CLIENT_ID,
    CLIENT_SECRET,
    FakeReddit,
    fake_reddit_fixture,  # noqa: F401 - provides `fake_reddit`
)
from warehouse.db import connect

pytestmark = [pytest.mark.prefect, pytest.mark.usefixtures("prefect_harness")]

START = datetime(2024, 3, 1, tzinfo=UTC)


def test_synthetic_scrape_stores_scores_and_resumes(warehouse_path: Path) -> None:
    subs = ["wallstreetbets", "Bitcoin"]
    first = scrape_reddit(
        ScrapeRedditConfig(
            source="synthetic",
            subreddits=subs,
            since=START,
            until=START + timedelta(days=1),
            warehouse=str(warehouse_path),
        )
    )
    assert first["source"] == "synthetic"
    assert first["inserted"] == first["received"] == first["scored"] > 100
    assert first["quarantined"] == {}
    # What a decision at the end of the day would see: the market-wide row and BTC at least.
    seen = {row["symbol"]: row for row in first["sentiment_now"]}
    assert seen["*"]["posts_24h"] > 100 and "BTC/USD" in seen
    # The same day again: nothing new, nothing changed.
    again = scrape_reddit(
        ScrapeRedditConfig(
            source="synthetic",
            subreddits=subs,
            since=START,
            until=START + timedelta(days=1),
            warehouse=str(warehouse_path),
        )
    )
    assert (again["inserted"], again["updated"], again["scored"]) == (0, 0, 0)
    assert again["unchanged"] == first["inserted"]
    # Incremental: without since, each subreddit resumes after its newest stored post.
    later = scrape_reddit(
        ScrapeRedditConfig(
            source="synthetic",
            subreddits=subs,
            until=START + timedelta(days=1, hours=6),
            warehouse=str(warehouse_path),
        )
    )
    assert 0 < later["received"] == later["inserted"] < first["inserted"]
    with connect(warehouse_path) as con:
        posts, scored, sources = con.execute(
            "SELECT count(*), count(s.post_id), list(DISTINCT p.source) FROM reddit_posts p"
            " LEFT JOIN post_sentiment s USING (post_id)"
        ).fetchone()  # type: ignore[misc]
        hourly = con.execute(
            "SELECT sum(posts) FROM v_sentiment_hourly WHERE symbol = '*'"
        ).fetchone()
    assert posts == scored == first["inserted"] + later["inserted"]
    assert sources == ["synthetic"]
    assert hourly == (posts,)


def test_asking_for_reddit_without_credentials_names_the_env_vars() -> None:
    with pytest.raises(MissingCredentialsError, match="REDDIT_CLIENT_ID and REDDIT_CLIENT_SECRET"):
        build_post_source(ScrapeRedditConfig(source="reddit"), Settings())
    # 'auto' without credentials falls back to the labelled offline source.
    assert build_post_source(ScrapeRedditConfig(), Settings()).name == "synthetic"  # type: ignore[attr-defined]


def test_reddit_scrape_through_praw_against_the_fake_server(
    warehouse_path: Path, monkeypatch: pytest.MonkeyPatch, fake_reddit: FakeReddit
) -> None:
    from core.settings import get_settings

    now = datetime.now(UTC)
    t0 = now - timedelta(hours=3)
    for i in range(150):
        fake_reddit.add_post(
            "stocks", f"s{i:03d}", t0 + timedelta(minutes=i), title=f"$SPY calls, bullish {i}"
        )
    fake_reddit.add_post("Bitcoin", "b001", t0, title="BTC dump, got rekt")
    fake_reddit.add_post(
        "Bitcoin",
        "b002",
        t0 + timedelta(minutes=1),
        title="[deleted]",
        selftext="[removed]",
        author=None,
    )
    fake_reddit.add_post(
        "Bitcoin",
        "b003",
        t0 + timedelta(minutes=2),
        title="hodl \x00 🚀 ביטקוין",
        selftext="x" * 50_000,
    )
    fake_reddit.add_post("Bitcoin", "b004", now + timedelta(hours=2), title="from the future")
    monkeypatch.setenv("REDDIT_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("REDDIT_CLIENT_SECRET", CLIENT_SECRET)
    monkeypatch.setenv("TRADINGML_REDDIT_BASE_URL", fake_reddit.url)
    get_settings.cache_clear()
    try:
        config = ScrapeRedditConfig(subreddits=["stocks", "Bitcoin"], warehouse=str(warehouse_path))
        first = scrape_reddit(config)
        assert first["source"] == "reddit"
        # 150 + b001 + b003 stored; the deleted post is skipped; the future one quarantined.
        assert first["inserted"] == first["scored"] == 152
        assert first["quarantined"] == {"future_created": 1}
        with connect(warehouse_path) as con:
            body_len, title = con.execute(
                "SELECT length(body), title FROM reddit_posts WHERE post_id = 'b003'"
            ).fetchone()  # type: ignore[misc]
            spy = con.execute(
                "SELECT count(*), min(compound) FROM post_sentiment"
                " WHERE list_contains(symbols, 'SPY')"
            ).fetchone()
            reasons = con.execute("SELECT post_id, reason FROM reddit_posts_quarantine").fetchall()
        assert body_len == 40_000 and "\x00" not in title and "🚀" in title
        assert spy is not None and spy[0] == 150 and spy[1] > 0
        assert reasons == [("b004", "future_created")]
        # The next run resumes after the newest stored post of each subreddit.
        fake_reddit.add_post("stocks", "s999", now - timedelta(minutes=1), title="SPY puts")
        listed_before = len(fake_reddit.listing_requests("stocks"))
        second = scrape_reddit(config)
        assert second["inserted"] == 1
        # Resuming stops paging at the stored posts: one page, not the two of the first run.
        assert len(fake_reddit.listing_requests("stocks")) - listed_before == 1
    finally:
        get_settings.cache_clear()
