"""The scrape-reddit flow on the offline source under a real Prefect API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.settings import Settings
from flows.config import ScrapeRedditConfig
from flows.scrape_reddit import scrape_reddit
from flows.wiring import MissingCredentialsError, build_post_source
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
