"""Post sentiment: VADER with a finance/crypto lexicon, symbol mentions, point-in-time aggregates."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

import numpy as np
import polars as pl
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from core.universe import COIN_SYMBOLS, EQUITY_SYMBOLS

# Bump when the lexicon or the scored text changes: scores of different versions are
# different models and live side by side in post_sentiment (grain post_id, model).
MODEL_NAME = "vader+finance-v1"

# VADER's lexicon is built from general social-media text: most market slang is missing
# (bullish, moon, rekt ...) and some words carry the wrong sign for traders ("calls" and
# "puts" are neutral there). Valences use VADER's -4..+4 scale.
FINANCE_LEXICON: dict[str, float] = {
    # bullish
    "bullish": 2.6,
    "bull": 1.5,
    "bulls": 1.5,
    "moon": 2.5,
    "mooning": 2.8,
    "moonshot": 2.5,
    "rocket": 2.0,  # also what VADER's emoji table turns 🚀 into
    "pump": 1.8,
    "pumping": 2.0,
    "hodl": 1.5,
    "hodling": 1.5,
    "calls": 1.5,
    "tendies": 2.4,
    "lambo": 2.0,
    "rally": 2.2,
    "rallying": 2.2,
    "surge": 2.2,
    "surging": 2.2,
    "soar": 2.4,
    "soaring": 2.4,
    "breakout": 1.8,
    "ath": 2.0,
    "btfd": 1.2,
    "undervalued": 1.6,
    "beats": 1.8,
    "outperform": 1.8,
    "upgrade": 1.6,
    "uptrend": 1.8,
    "green": 1.2,
    "stonks": 1.2,
    "printing": 1.6,
    "squeeze": 1.0,
    # bearish
    "bearish": -2.6,
    "bear": -1.5,
    "bears": -1.5,
    "dump": -2.2,
    "dumping": -2.4,
    "dumped": -2.2,
    "rekt": -2.8,
    "puts": -1.5,
    "crash": -2.8,
    "crashing": -3.0,
    "plunge": -2.6,
    "plunging": -2.6,
    "tank": -2.0,
    "tanking": -2.4,
    "bleeding": -2.2,
    "bagholder": -2.2,
    "bagholders": -2.2,
    "bagholding": -2.2,
    "fud": -1.6,
    "rugpull": -3.0,
    "rugged": -2.8,
    "scam": -2.8,
    "capitulation": -2.4,
    "overvalued": -1.6,
    "downgrade": -1.8,
    "downtrend": -1.8,
    "selloff": -2.2,
    "liquidated": -2.6,
    "red": -1.2,
    "recession": -2.2,
    "bubble": -1.4,
}

# The scored text: title plus the start of the body. VADER is linear in text length and a
# 40k-character essay would stall a batch; its opening carries the tone.
SCORED_BODY_CHARS = 2_000

POSITIVE_THRESHOLD = 0.05  # VADER's own convention for a positive compound score
NEGATIVE_THRESHOLD = -0.05


@lru_cache(maxsize=1)
def analyzer() -> SentimentIntensityAnalyzer:
    """VADER with the finance lexicon merged in (built once per process)."""
    a = SentimentIntensityAnalyzer()
    a.lexicon.update(FINANCE_LEXICON)
    return a


def scored_text(title: str, body: str | None) -> str:
    """The text a post is scored on."""
    body = (body or "")[:SCORED_BODY_CHARS]
    return f"{title}. {body}" if body else title


def score_texts(texts: Sequence[str]) -> pl.DataFrame:
    """VADER scores of each text: compound in [-1, 1] and the positive/neutral/negative shares."""
    a = analyzer()
    out = np.empty((len(texts), 4))
    for i, text in enumerate(texts):
        s = a.polarity_scores(text)
        out[i] = (s["compound"], s["pos"], s["neu"], s["neg"])
    return pl.DataFrame(
        {
            "compound": out[:, 0],
            "positive": out[:, 1],
            "neutral": out[:, 2],
            "negative": out[:, 3],
        }
    )


# --- mentions -------------------------------------------------------------------------

# Names and tickers per symbol. Tickers that are ordinary words (LINK, UNI, DOT, BAT, CRV is
# not but 'curve' is) count only when written in capitals or as a cashtag.
_COIN_NAMES: dict[str, tuple[str, ...]] = {
    "BTC/USD": ("bitcoin", "btc", "xbt"),
    "ETH/USD": ("ethereum", "eth", "ether"),
    "LTC/USD": ("litecoin", "ltc"),
    "BCH/USD": ("bch",),
    "LINK/USD": ("chainlink",),
    "UNI/USD": ("uniswap",),
    "AAVE/USD": ("aave",),
    "AVAX/USD": ("avalanche", "avax"),
    "DOGE/USD": ("dogecoin", "doge"),
    "SHIB/USD": ("shib",),
    "DOT/USD": ("polkadot",),
    "XTZ/USD": ("tezos", "xtz"),
    "BAT/USD": (),
    "CRV/USD": ("crv",),
}
_PHRASES: dict[str, str] = {
    "bitcoin cash": "BCH/USD",
    "shiba inu": "SHIB/USD",
    "basic attention token": "BAT/USD",
    "curve finance": "CRV/USD",
    "curve dao": "CRV/USD",
    "s&p 500": "SPY",
    "s&p500": "SPY",
    "total stock market": "VTI",
}
# Words that are ordinary English in lower case but tickers in capitals.
_CAPS_ONLY: dict[str, str] = {
    "LINK": "LINK/USD",
    "UNI": "UNI/USD",
    "DOT": "DOT/USD",
    "BAT": "BAT/USD",
}
# A subreddit about one coin implies it even when a post never names it.
SUBREDDIT_SYMBOLS: dict[str, str] = {"bitcoin": "BTC/USD", "ethereum": "ETH/USD"}

_TOKEN = re.compile(r"\$?[A-Za-z][A-Za-z0-9]*")
_PHRASE = re.compile("|".join(re.escape(p) for p in sorted(_PHRASES, key=len, reverse=True)))


@dataclass(frozen=True)
class MentionMap:
    """Which words point at which symbol; built from a universe of symbols."""

    any_case: dict[str, str]
    caps_only: dict[str, str]

    @classmethod
    def for_universe(
        cls,
        equities: Sequence[str] = EQUITY_SYMBOLS,
        coins: Sequence[str] = COIN_SYMBOLS,
    ) -> MentionMap:
        any_case: dict[str, str] = {}
        caps: dict[str, str] = {}
        for coin in coins:
            base = coin.split("/")[0]
            for name in _COIN_NAMES.get(coin, (base.lower(),)):
                any_case[name] = coin
            caps[base] = coin
        for ticker in equities:
            # None of SPY, VTI, VXUS, BND is an English word: any case counts ("spy calls").
            any_case[ticker.lower()] = ticker
            caps[ticker] = ticker
        caps.update({k: v for k, v in _CAPS_ONLY.items() if v in coins})
        return cls(any_case=any_case, caps_only=caps)

    def symbols_in(self, text: str, subreddit: str | None = None) -> list[str]:
        """Symbols a text mentions (sorted, unique): tickers, $cashtags, coin names, phrases."""
        found: set[str] = set()
        known = set(self.any_case.values()) | set(self.caps_only.values())
        low = text.lower()
        for match in _PHRASE.findall(low):
            if _PHRASES[match] in known:
                found.add(_PHRASES[match])
        for token in _TOKEN.findall(text):
            if token[0] == "$":
                word = token[1:]
                sym = self.caps_only.get(word.upper()) or self.any_case.get(word.lower())
            else:
                sym = self.caps_only.get(token) or self.any_case.get(token.lower())
            if sym is not None:
                found.add(sym)
        if subreddit is not None:
            implied = SUBREDDIT_SYMBOLS.get(subreddit.lower())
            if implied is not None and implied in known:
                found.add(implied)
        # "bitcoin cash" is BCH, not BTC, unless BTC is also named on its own.
        if "BCH/USD" in found and "bitcoin cash" in low:
            rest = low.replace("bitcoin cash", "")
            if not re.search(r"\bbitcoin\b|\bbtc\b|\$btc", rest) and subreddit != "Bitcoin":
                found.discard("BTC/USD")
        return sorted(found)


def compute_post_sentiment(
    posts: pl.DataFrame, scored_at: datetime, mentions: MentionMap | None = None
) -> pl.DataFrame:
    """Rows for `post_sentiment` from posts with post_id, subreddit, title, body."""
    mentions = mentions or MentionMap.for_universe()
    titles = posts["title"].to_list()
    bodies = posts["body"].to_list()
    subs = posts["subreddit"].to_list()
    texts = [scored_text(t, b) for t, b in zip(titles, bodies, strict=True)]
    scores = score_texts(texts)
    symbols = [
        mentions.symbols_in(f"{t} {b or ''}", s)
        for t, b, s in zip(titles, bodies, subs, strict=True)
    ]
    return pl.DataFrame(
        {
            "post_id": posts["post_id"],
            "model": pl.Series([MODEL_NAME] * posts.height, dtype=pl.String),
            "compound": scores["compound"],
            "positive": scores["positive"],
            "neutral": scores["neutral"],
            "negative": scores["negative"],
            "symbols": pl.Series(symbols, dtype=pl.List(pl.String)),
            "scored_at": pl.Series([scored_at] * posts.height, dtype=pl.Datetime("us", "UTC")),
        }
    )


# --- point-in-time aggregates ---------------------------------------------------------

MARKET = "*"  # the market-wide row of the aggregates: every post, whatever it mentions
DEFAULT_WINDOWS: tuple[timedelta, ...] = (timedelta(minutes=60), timedelta(hours=24))


def _window_name(window: timedelta) -> str:
    minutes = int(window.total_seconds() // 60)
    return f"{minutes // 60}h" if minutes % 60 == 0 and minutes >= 120 else f"{minutes}m"


def aggregate_columns(windows: Sequence[timedelta] = DEFAULT_WINDOWS) -> list[str]:
    """The feature columns compute_sentiment_aggregates adds, in order."""
    cols = []
    for w in windows:
        n = _window_name(w)
        cols += [f"posts_{n}", f"compound_{n}", f"pos_share_{n}", f"neg_share_{n}"]
    return cols


def compute_sentiment_aggregates(
    scored: pl.DataFrame,
    start: datetime,
    end: datetime,
    *,
    symbols: Sequence[str],
    lag: timedelta,
    windows: Sequence[timedelta] = DEFAULT_WINDOWS,
    every: timedelta = timedelta(minutes=1),
) -> pl.DataFrame:
    """Rolling sentiment per symbol (and market-wide, symbol '*') on a regular grid in [start, end).

    `scored` holds created_utc, compound and symbols (a list) per post. Point in time: the
    row at T counts a post only once T >= created_utc + lag, and only within the window
    (T - window, T]. Feed it every post from start - max(windows) - lag on, or the first
    rows under-count. Windows with no posts have count 0 and null mean/shares.
    """
    step = int(every.total_seconds() * 1_000_000)
    if step <= 0:
        raise ValueError("every must be positive")
    spans = [int(w.total_seconds() * 1_000_000) for w in windows]
    if any(s <= 0 or s % step for s in spans):
        raise ValueError(f"each window must be a positive multiple of every ({every})")
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end must be timezone-aware")
    n_slots = -(-int((end - start).total_seconds() * 1_000_000) // step)
    warm = max(spans) // step
    start_us = int(start.timestamp() * 1_000_000)
    lag_us = int(lag.total_seconds() * 1_000_000)
    wanted = [*symbols, MARKET]
    # Slot k is the grid time start + k*every. A post known from created+lag first counts in
    # the slot at or after that moment (ceil), never earlier: no look-ahead.
    posts = (
        scored.select(
            (
                (pl.col("created_utc").dt.epoch("us") + (lag_us - start_us + step - 1))
                .floordiv(step)
                .alias("k")
            ),
            pl.col("compound"),
            pl.col("symbols")
            .fill_null([])
            .list.concat(pl.lit([MARKET], dtype=pl.List(pl.String)))
            .alias("symbol"),
        )
        .explode("symbol")
        .filter(pl.col("k").is_between(-warm, n_slots - 1) & pl.col("symbol").is_in(wanted))
        .group_by("symbol", "k")
        .agg(
            pl.len().cast(pl.Int64).alias("n"),
            pl.col("compound").sum().alias("sum"),
            (pl.col("compound") >= POSITIVE_THRESHOLD).sum().cast(pl.Int64).alias("npos"),
            (pl.col("compound") <= NEGATIVE_THRESHOLD).sum().cast(pl.Int64).alias("nneg"),
        )
    )
    dense = (
        pl.DataFrame({"symbol": pl.Series(wanted, dtype=pl.String)})
        .join(pl.DataFrame({"k": pl.int_range(-warm, n_slots, eager=True)}), how="cross")
        .join(posts, on=["symbol", "k"], how="left")
        .with_columns(pl.col("n", "npos", "nneg").fill_null(0), pl.col("sum").fill_null(0.0))
        .sort("symbol", "k")
        # Cumulative sums then a difference m slots back: exact and O(rows) for any window.
        .with_columns(pl.col("n", "sum", "npos", "nneg").cum_sum().over("symbol"))
    )
    out = dense
    for span, w in zip(spans, windows, strict=True):
        m = span // step
        name = _window_name(w)
        back = {
            c: pl.col(c).shift(m, fill_value=0).over("symbol") for c in ("n", "sum", "npos", "nneg")
        }
        n = pl.col("n") - back["n"]
        out = out.with_columns(
            n.alias(f"posts_{name}"),
            pl.when(n > 0).then((pl.col("sum") - back["sum"]) / n).alias(f"compound_{name}"),
            pl.when(n > 0).then((pl.col("npos") - back["npos"]) / n).alias(f"pos_share_{name}"),
            pl.when(n > 0).then((pl.col("nneg") - back["nneg"]) / n).alias(f"neg_share_{name}"),
        )
    return (
        out.filter(pl.col("k") >= 0)
        .with_columns(
            (pl.lit(start_us) + pl.col("k") * step)
            .cast(pl.Datetime("us"))
            .dt.replace_time_zone("UTC")
            .alias("ts")
        )
        .select("symbol", "ts", *aggregate_columns(windows))
        .sort("symbol", "ts")
    )


# Each sentiment input of models.features.SENTIMENT_INPUTS: (whose posts, window).
INPUT_WINDOWS: dict[str, tuple[str, timedelta]] = {
    "symbol_60m": ("symbol", timedelta(minutes=60)),
    "symbol_24h": ("symbol", timedelta(hours=24)),
    "market_60m": ("market", timedelta(minutes=60)),
    "market_24h": ("market", timedelta(hours=24)),
}


def sentiment_lookback(
    inputs: Sequence[str], window: timedelta | None, lag: timedelta
) -> timedelta:
    """How far before `start` compute_sentiment_inputs needs posts: the longest window plus the lag."""
    spans = [INPUT_WINDOWS[x][1] for x in inputs] + ([window] if window is not None else [])
    return (max(spans) if spans else timedelta(0)) + lag


def compute_sentiment_inputs(
    posts: pl.DataFrame,
    symbol: str,
    start: datetime,
    end: datetime,
    lag: timedelta,
    inputs: Sequence[str] = (),
    window: timedelta | None = None,
) -> tuple[pl.DataFrame | None, str | None]:
    """A traded symbol's sentiment inputs on a minute grid in [start, end): the frame compute_features joins.

    Columns: ts, symbol (= `symbol`), `sentiment` when `window` is given (the legacy input:
    mean compound of the posts mentioning the symbol over `window`), then one
    `sentiment_<input>` column per entry of `inputs` (models.features.SENTIMENT_INPUTS).
    Point in time as compute_sentiment_aggregates: a post counts from created_utc + lag.
    A window without a post reads 0. `posts` (created_utc, compound, symbols) must reach
    back sentiment_lookback() before start. Training, backtests and live trading all build
    their inputs here, so they read the same numbers.
    Returns (None, note) without any post (the features then read 0), else (frame, a note
    when no post mentions the symbol, else None).
    """
    if posts.height == 0:
        return None, (
            f"no scored posts ({MODEL_NAME}) from {start.date()} to {end.date()}: {symbol}'s "
            "sentiment inputs read 0"
        )
    wanted = {x: INPUT_WINDOWS[x] for x in inputs}
    windows = sorted({w for _, w in wanted.values()} | ({window} if window is not None else set()))
    agg = compute_sentiment_aggregates(
        posts, start, end, symbols=[symbol], lag=lag, windows=windows
    )
    own = agg.filter(pl.col("symbol") == symbol).sort("ts")
    market = agg.filter(pl.col("symbol") == MARKET).sort("ts")
    # Column names of compute_sentiment_aggregates for a window: posts_<w>, compound_<w>, ...
    count = {w: aggregate_columns((w,))[0] for w in windows}
    mean = {w: aggregate_columns((w,))[1] for w in windows}
    cols = [own.get_column("ts"), pl.Series("symbol", [symbol] * own.height, dtype=pl.String)]
    if window is not None:
        cols.append(own.get_column(mean[window]).fill_null(0.0).alias("sentiment"))
    for name, (whose, w) in wanted.items():
        source = own if whose == "symbol" else market
        cols.append(source.get_column(mean[w]).fill_null(0.0).alias(f"sentiment_{name}"))
    counted = sum(int(own.get_column(count[w]).sum()) for w in windows)
    note = (
        None
        if counted or not (window is not None or any(w == "symbol" for w, _ in wanted.values()))
        else f"{symbol}: no post mentions it in the window; its sentiment reads 0"
    )
    return pl.DataFrame(cols), note


def coin_sentiment(
    posts: pl.DataFrame,
    coins: list[str],
    start: datetime,
    end: datetime,
    lag: timedelta,
    window: timedelta,
) -> tuple[dict[str, pl.DataFrame | None], list[str]]:
    """Each coin's sentiment input on a minute grid in [start, end): ts, symbol, sentiment.

    sentiment = the mean VADER compound of the posts mentioning the coin in the last
    `window`, each counted from created_utc + lag (point in time); 0 where no post
    counts. `posts` (created_utc, compound, symbols) must reach back to start - window - lag.
    Without any post, every coin gets None (its features then read 0) and a note says so.
    """
    if posts.height == 0:
        note = (
            f"no scored posts ({MODEL_NAME}) from {start.date()} to {end.date()}: every coin's "
            "sentiment input reads 0"
        )
        return dict.fromkeys(coins), [note]
    out: dict[str, pl.DataFrame | None] = {}
    notes: list[str] = []
    for coin in coins:
        out[coin], missing = compute_sentiment_inputs(posts, coin, start, end, lag, window=window)
        if missing is not None:
            notes.append(missing)
    return out, notes
