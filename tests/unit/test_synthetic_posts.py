"""The offline post source: deterministic, labelled synthetic, and its tone follows or leads the market."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from adapters.clock import ManualClock
from adapters.protocols import PostSource
from adapters.synthetic import SyntheticBarSource, SyntheticConfig
from adapters.synthetic_posts import ID_PREFIX, SyntheticPostConfig, SyntheticPostSource
from core.post_quality import frame_from_posts
from models.sentiment import compute_post_sentiment, compute_sentiment_aggregates

START = datetime(2024, 2, 1, tzinfo=UTC)
END = START + timedelta(days=14)


def _source(tone: str = "follow", now: datetime = END) -> SyntheticPostSource:
    return SyntheticPostSource(SyntheticPostConfig(tone=tone), ManualClock(now))  # type: ignore[arg-type]


def test_posts_are_labelled_deterministic_and_newest_last() -> None:
    source = _source(now=START + timedelta(days=1))
    assert isinstance(source, PostSource)
    first = list(source.fetch_posts(["wallstreetbets", "Bitcoin"], START, 10_000))
    again = list(source.fetch_posts(["wallstreetbets", "Bitcoin"], START, 10_000))
    assert first == again
    assert 100 < len(first) < 300  # 4 per hour per subreddit on average
    assert all(p.source == "synthetic" and p.id.startswith(ID_PREFIX) for p in first)
    times = [p.created_utc for p in first]
    assert times == sorted(times)
    assert times[0] > START and times[-1] <= START + timedelta(days=1)
    assert len({p.id for p in first}) == len(first)


def test_since_and_limit_select_the_newest_posts() -> None:
    source = _source(now=START + timedelta(days=1))
    every = list(source.fetch_posts(["stocks"], START, 10_000))
    cut = every[len(every) // 2].created_utc
    newer = list(source.fetch_posts(["stocks"], cut, 10_000))
    assert newer == [p for p in every if p.created_utc > cut]
    assert list(source.fetch_posts(["stocks"], START, 5)) == every[-5:]


def test_a_first_fetch_without_since_reaches_back_one_backfill() -> None:
    posts = list(_source(now=START).fetch_posts(["investing"], None, 10_000))
    assert posts and min(p.created_utc for p in posts) > START - timedelta(days=1)


def _lead_lag_correlations(tone: str) -> tuple[float, float]:
    """corr(last hour's mean compound for BTC, the past hour's / the next hour's BTC return)."""
    posts = frame_from_posts(
        _source(tone).fetch_posts(["Bitcoin", "CryptoCurrency"], START - timedelta(days=1), 10**6)
    )
    scored = compute_post_sentiment(posts, END).join(
        posts.select("post_id", "created_utc"), on="post_id"
    )
    hourly = compute_sentiment_aggregates(
        scored,
        START,
        END,
        symbols=["BTC/USD"],
        lag=timedelta(0),
        every=timedelta(hours=1),
        windows=[timedelta(hours=1)],
    ).filter(pl.col("symbol") == "BTC/USD")
    bars = SyntheticBarSource(SyntheticConfig(signal="sentiment" if tone == "lead" else "none"))
    frame = pl.concat(
        list(
            bars.fetch_bars(["BTC/USD"], "1Min", START - timedelta(days=1), END + timedelta(days=1))
        )
    )
    log_close = dict(zip(frame["ts"].to_list(), np.log(frame["close"].to_numpy()), strict=True))
    hour = timedelta(hours=1)
    rows = [
        (
            r["compound_60m"],
            log_close[r["ts"] - hour],
            log_close[r["ts"]],
            log_close[r["ts"] + hour],
        )
        for r in hourly.iter_rows(named=True)
        if r["compound_60m"] is not None
    ]
    a = np.array(rows)
    past, future = a[:, 2] - a[:, 1], a[:, 3] - a[:, 2]
    return float(np.corrcoef(a[:, 0], past)[0, 1]), float(np.corrcoef(a[:, 0], future)[0, 1])


@pytest.mark.slow
def test_follow_tone_reflects_the_past_hour_and_predicts_nothing() -> None:
    past, future = _lead_lag_correlations("follow")
    assert past > 0.25
    assert abs(future) < 0.15


@pytest.mark.slow
def test_lead_tone_predicts_the_next_hour() -> None:
    # The bars' planted sentiment leads returns; posts made from it must carry that lead
    # through VADER and the hourly aggregate (330 hours: t ~ 5 at the measured 0.3).
    _, future = _lead_lag_correlations("lead")
    assert future > 0.15
