"""Offline PostSource: SYNTHETIC Reddit-like posts whose tone follows (or leads) the synthetic market."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Literal

import numpy as np
import polars as pl

from adapters.clock import SystemClock
from adapters.protocols import Clock
from adapters.synthetic import SyntheticBarSource, SyntheticConfig, named_rng
from core.posts import Post
from core.universe import COIN_SYMBOLS, is_coin

SYNTHETIC_POST_SOURCE = "synthetic"
ID_PREFIX = "syn-"  # real Reddit ids are base-36 without dashes: these can never collide

Tone = Literal["follow", "lead", "lead-coins"]


@dataclass(frozen=True)
class SyntheticPostConfig:
    """Settings of the synthetic post generator."""

    seed: int = 7
    """Seed: the same seed gives the same posts (ids, times and text)."""
    posts_per_hour: float = 4.0
    """Mean posts per hour in each subreddit."""
    tone: Tone = "follow"
    """follow: tone reflects the subject's return over the past hour (no predictive value);
    lead: tone reflects the bars' planted sentiment series, which leads returns (bars must be
    generated with signal='sentiment' and the same seed and strength); lead-coins: coins lead,
    equities follow (the demo's coin bars carry the planted signal, its ETF bars do not)."""
    signal_strength: float = 0.1
    """lead: the bars' planted signal strength (must match the bars in the warehouse)."""
    noise: float = 0.35
    """Standard deviation of a post's tone around the market's."""
    backfill: timedelta = timedelta(days=1)
    """How far back a first fetch (no `since`) reaches."""


# Which symbols a subreddit talks about, with weights.
_EQUITY_MIX = {"SPY": 0.55, "VTI": 0.2, "VXUS": 0.15, "BND": 0.1}
_COIN_MIX = {
    "BTC/USD": 0.3,
    "ETH/USD": 0.2,
    **{c: 0.5 / (len(COIN_SYMBOLS) - 2) for c in COIN_SYMBOLS[2:]},
}
SUBREDDIT_MIX: dict[str, dict[str, float]] = {
    "wallstreetbets": _EQUITY_MIX,
    "stocks": _EQUITY_MIX,
    "investing": _EQUITY_MIX,
    "stockmarket": _EQUITY_MIX,
    "cryptocurrency": _COIN_MIX,
    "bitcoin": {"BTC/USD": 1.0},
    "ethereum": {"ETH/USD": 1.0},
}
_ANY_MIX = {
    **{k: v / 2 for k, v in _EQUITY_MIX.items()},
    **{k: v / 2 for k, v in _COIN_MIX.items()},
}
GENERAL_SHARE = 0.15  # posts that name no symbol (they still count market-wide)

_NAMES: dict[str, tuple[str, ...]] = {
    "SPY": ("$SPY", "SPY", "spy"),
    "VTI": ("$VTI", "VTI"),
    "VXUS": ("$VXUS", "VXUS"),
    "BND": ("$BND", "BND"),
    "BTC/USD": ("$BTC", "BTC", "Bitcoin"),
    "ETH/USD": ("$ETH", "ETH", "Ethereum"),
    "LTC/USD": ("$LTC", "LTC", "Litecoin"),
    "BCH/USD": ("$BCH", "BCH", "Bitcoin Cash"),
    "LINK/USD": ("$LINK", "LINK", "Chainlink"),
    "UNI/USD": ("$UNI", "UNI", "Uniswap"),
    "AAVE/USD": ("$AAVE", "AAVE"),
    "AVAX/USD": ("$AVAX", "AVAX", "Avalanche"),
    "DOGE/USD": ("$DOGE", "DOGE", "Dogecoin"),
    "SHIB/USD": ("$SHIB", "SHIB", "Shiba Inu"),
    "DOT/USD": ("$DOT", "DOT", "Polkadot"),
    "XTZ/USD": ("$XTZ", "XTZ", "Tezos"),
    "BAT/USD": ("$BAT", "BAT"),
    "CRV/USD": ("$CRV", "CRV", "Curve Finance"),
}
_GENERAL_NAMES = ("the market", "this market", "my portfolio", "everything")

# Title templates from strongly bearish to strongly bullish; {m} is the subject.
_TITLES: tuple[tuple[str, ...], ...] = (
    (
        "{m} crashing, got rekt",
        "Buying puts on {m}, this is bearish",
        "{m} dump incoming, bagholders everywhere",
        "{m} plunging, total capitulation",
        "Liquidated on {m} again. Terrible",
    ),
    (
        "{m} looking weak today",
        "Not sure about {m} anymore, a bit worried",
        "{m} slowly bleeding",
        "Sold half my {m}, feels overvalued",
    ),
    (
        "Daily discussion: {m}",
        "What is everyone's plan for {m} this week?",
        "{m} chart for today",
        "Question about {m} fees",
        "How do you track {m}?",
    ),
    (
        "{m} looking good today",
        "Bought some more {m}",
        "{m} slowly grinding up, I like it",
        "Nice green day for {m}",
    ),
    (
        "{m} to the moon 🚀🚀",
        "Loading up on {m} calls, this is bullish",
        "{m} breakout confirmed, tendies incoming",
        "{m} is pumping hard, new ATH soon",
        "Diamond hands on {m}, hodl and enjoy the gains",
    ),
)
_BODIES: tuple[str, ...] = (
    "",
    "",
    "Not financial advice.",
    "Thoughts?",
    "Posting this from the train, sorry for formatting.",
    "Curious what others here think.",
)
_TONE_EDGES = np.array([-0.5, -0.15, 0.15, 0.5])


def _pick(rng: np.random.Generator, mix: dict[str, float], n: int) -> list[str]:
    names = list(mix)
    p = np.array([mix[k] for k in names])
    return [names[i] for i in rng.choice(len(names), size=n, p=p / p.sum())]


class SyntheticPostSource:
    """PostSource of SYNTHETIC posts (source='synthetic', ids 'syn-...') up to the clock's now.

    Posts are made per (subreddit, UTC day) from a seeded generator, so any window always
    yields the same posts: re-running a scrape is idempotent.
    """

    name = "synthetic"

    def __init__(self, config: SyntheticPostConfig | None = None, clock: Clock | None = None):
        self.config = config or SyntheticPostConfig()
        self.clock = clock or SystemClock()
        cfg = self.config
        self._plain = SyntheticBarSource(SyntheticConfig(seed=cfg.seed))
        self._planted = SyntheticBarSource(
            SyntheticConfig(seed=cfg.seed, signal="sentiment", signal_strength=cfg.signal_strength)
        )

    def fetch_posts(
        self, subreddits: Sequence[str], since: datetime | None, limit: int
    ) -> Iterator[Post]:
        """Posts made in (since, now], at most `limit` (the newest) per subreddit, newest last."""
        now = self.clock.now()
        start = since if since is not None else now - self.config.backfill
        if start.tzinfo is None:
            raise ValueError("since must be timezone-aware")
        if start >= now:
            return
        frames = [self._day_posts(sub, day) for sub in subreddits for day in _days(start, now)]
        posts = pl.concat([f for f in frames if f.height], how="vertical") if frames else None
        if posts is None or posts.height == 0:
            return
        posts = posts.filter((pl.col("created_utc") > start) & (pl.col("created_utc") <= now))
        posts = posts.sort("created_utc").group_by("subreddit", maintain_order=True).tail(limit)
        posts = self._add_text(posts.sort("created_utc", "post_id"), start, now)
        for row in posts.iter_rows(named=True):
            yield Post(
                id=row["post_id"],
                subreddit=row["subreddit"],
                title=row["title"],
                body=row["body"],
                author=row["author"],
                score=row["score"],
                num_comments=row["num_comments"],
                created_utc=row["created_utc"],
                fetched_at=now,
                url=None,
                source=SYNTHETIC_POST_SOURCE,
            )

    def _day_posts(self, subreddit: str, day: date) -> pl.DataFrame:
        """One subreddit's posts of one UTC day: ids, times, subjects, random draws for text."""
        cfg = self.config
        ordinal = (day - date(1970, 1, 1)).days
        rng = named_rng(cfg.seed, f"posts:{subreddit.lower()}", ordinal)
        n = int(rng.poisson(cfg.posts_per_hour * 24))
        mix = SUBREDDIT_MIX.get(subreddit.lower(), _ANY_MIX)
        seconds = np.sort(rng.uniform(0, 86_400, n))
        midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
        return pl.DataFrame(
            {
                "post_id": [f"{ID_PREFIX}{subreddit.lower()}-{ordinal}-{k}" for k in range(n)],
                "subreddit": [subreddit] * n,
                "created_utc": pl.Series(
                    [midnight + timedelta(seconds=float(s)) for s in seconds],
                    dtype=pl.Datetime("us", "UTC"),
                ),
                "subject": pl.Series(_pick(rng, mix, n), dtype=pl.String),
                "general": rng.random(n) < GENERAL_SHARE,
                "noise": rng.standard_normal(n),
                "u_name": rng.random(n),
                "u_title": rng.random(n),
                "u_body": rng.random(n),
                "score": rng.geometric(0.05, n).astype(np.int64),
                "num_comments": rng.geometric(0.1, n).astype(np.int64) - 1,
                "author_k": rng.integers(0, 5000, n),
            },
            schema_overrides={"post_id": pl.String, "subreddit": pl.String},
        )

    def _market_tone(self, posts: pl.DataFrame, start: datetime, end: datetime) -> np.ndarray:
        """The market's tone in [-1, 1] at each post's time for its subject."""
        tone = np.zeros(posts.height)
        tone_mode = self.config.tone
        for subject in posts["subject"].unique().to_list():
            lead = tone_mode == "lead" or (tone_mode == "lead-coins" and is_coin(subject))
            mask = (posts["subject"] == subject).to_numpy()
            at = posts.filter(pl.col("subject") == subject).select("created_utc")
            lo, hi = _bar_window(start, end)
            if lead:
                series = self._planted.fetch_sentiment([subject], lo, hi).sort("ts")
                joined = at.join_asof(series, left_on="created_utc", right_on="ts")
                tone[mask] = 1.5 * joined["sentiment"].fill_null(0.0).to_numpy()
                continue
            bars = pl.concat(list(self._plain.fetch_bars([subject], "1Min", lo, hi)))
            closes = bars.select("ts", pl.col("close").log().alias("lc")).sort("ts")
            now_lc = at.join_asof(closes, left_on="created_utc", right_on="ts")["lc"]
            then = at.with_columns(pl.col("created_utc") - timedelta(hours=1))
            then_lc = then.join_asof(closes, left_on="created_utc", right_on="ts")["lc"]
            ret = (now_lc - then_lc).fill_null(0.0).to_numpy()
            hourly = closes["lc"].diff(60).drop_nulls().to_numpy()
            sd = float(np.std(hourly)) if hourly.size > 10 else 0.0
            tone[mask] = np.tanh(ret / sd) if sd > 0 else 0.0
        return tone

    def _add_text(self, posts: pl.DataFrame, start: datetime, end: datetime) -> pl.DataFrame:
        if posts.height == 0:
            return posts.with_columns(
                pl.lit("").alias("title"), pl.lit("").alias("body"), pl.lit("").alias("author")
            )
        market = self._market_tone(posts, start, end)
        tone = np.clip(market + self.config.noise * posts["noise"].to_numpy(), -1.0, 1.0)
        bucket = np.digitize(tone, _TONE_EDGES)
        titles = []
        bodies = []
        for subject, general, b, u_name, u_title, u_body in zip(
            posts["subject"].to_list(),
            posts["general"].to_list(),
            bucket,
            posts["u_name"].to_list(),
            posts["u_title"].to_list(),
            posts["u_body"].to_list(),
            strict=True,
        ):
            names = _GENERAL_NAMES if general else _NAMES[subject]
            options = _TITLES[b]
            title = options[int(u_title * len(options))].format(m=names[int(u_name * len(names))])
            titles.append(title[0].upper() + title[1:])
            bodies.append(_BODIES[int(u_body * len(_BODIES))])
        return posts.with_columns(
            pl.Series("title", titles, dtype=pl.String),
            pl.Series("body", bodies, dtype=pl.String),
            ("synthetic_user_" + pl.col("author_k").cast(pl.String)).alias("author"),
        )


def _days(start: datetime, end: datetime) -> list[date]:
    first = start.astimezone(UTC).date()
    last = end.astimezone(UTC).date()
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def _bar_window(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """Whole UTC days around [start, end]: room for the hour's look-back across weekends and holidays."""
    lo = datetime.combine(
        start.astimezone(UTC).date() - timedelta(days=4), datetime.min.time(), UTC
    )
    hi = datetime.combine(end.astimezone(UTC).date() + timedelta(days=1), datetime.min.time(), UTC)
    return lo, hi
