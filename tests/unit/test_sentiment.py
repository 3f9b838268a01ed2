"""VADER + finance lexicon, mention mapping, point-in-time aggregates, post validation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from core.post_quality import MAX_TEXT_CHARS, frame_from_posts, validate_posts
from core.posts import Post
from models.sentiment import (
    FINANCE_LEXICON,
    MARKET,
    MentionMap,
    analyzer,
    compute_post_sentiment,
    compute_sentiment_aggregates,
    score_texts,
)

T0 = datetime(2024, 3, 4, 14, 0, tzinfo=UTC)


def _compound(text: str) -> float:
    return float(score_texts([text])["compound"][0])


@pytest.mark.parametrize(
    ("word", "direction"),
    [
        ("bullish", 1),
        ("moon", 1),
        ("pump", 1),
        ("hodl", 1),
        ("calls", 1),
        ("tendies", 1),
        ("bearish", -1),
        ("dump", -1),
        ("rekt", -1),
        ("puts", -1),
        ("crash", -1),
        ("bagholder", -1),
    ],
)
def test_each_slang_word_moves_the_score_its_way(word: str, direction: int) -> None:
    base = "I am looking at SPY today"
    with_word = f"I am looking at SPY today {word}"
    assert _compound(base) == 0.0
    assert np.sign(_compound(with_word)) == direction
    # The shipped VADER lexicon lacks most of these (or has the wrong sign for traders).
    assert analyzer().lexicon[word] == FINANCE_LEXICON[word]


def test_negation_still_works_with_the_finance_words() -> None:
    assert _compound("SPY is bullish") > 0
    assert _compound("SPY is not bullish") < 0


def test_emoji_rtl_and_long_text_score_without_error() -> None:
    scores = score_texts(["🚀🚀 to the moon", "ביטקוין bullish 🌙", "x" * MAX_TEXT_CHARS, ""])
    assert scores["compound"][0] > 0
    assert scores["compound"][1] > 0
    assert scores["compound"][2] == 0.0 and scores["compound"][3] == 0.0


@pytest.mark.parametrize(
    ("text", "subreddit", "expected"),
    [
        ("$SPY calls printing", "wallstreetbets", ["SPY"]),
        ("spy and vti are my core", "investing", ["SPY", "VTI"]),
        ("Bitcoin cash is underrated", "CryptoCurrency", ["BCH/USD"]),
        ("BTC and bitcoin cash both up", "CryptoCurrency", ["BCH/USD", "BTC/USD"]),
        ("I'll link my analysis, dot the i's", "CryptoCurrency", []),
        (
            "LINK and DOT look strong, $uni too",
            "CryptoCurrency",
            ["DOT/USD", "LINK/USD", "UNI/USD"],
        ),
        ("Ethereum gas fees again", "CryptoCurrency", ["ETH/USD"]),
        ("no names here", "Bitcoin", ["BTC/USD"]),
        ("Shiba Inu and DOGE", "CryptoCurrency", ["DOGE/USD", "SHIB/USD"]),
        ("the S&P 500 at a high", "stocks", ["SPY"]),
    ],
)
def test_mentions_map_tickers_cashtags_and_names(
    text: str, subreddit: str, expected: list[str]
) -> None:
    assert MentionMap.for_universe().symbols_in(text, subreddit) == expected


def test_mentions_respect_a_configured_universe() -> None:
    small = MentionMap.for_universe(equities=["SPY"], coins=["BTC/USD"])
    assert small.symbols_in("ETH and SPY and BTC", None) == ["BTC/USD", "SPY"]


def _post(pid: str | None, **kw: object) -> Post:
    base: dict[str, object] = {
        "id": pid,
        "subreddit": "stocks",
        "title": "SPY to the moon",
        "body": "",
        "author": "a",
        "score": 1,
        "num_comments": 0,
        "created_utc": T0,
        "fetched_at": T0 + timedelta(minutes=1),
    }
    base.update(kw)
    return Post(**base)  # type: ignore[arg-type]


def test_validation_quarantines_bad_posts_and_keeps_good_ones() -> None:
    posts = [
        _post("a1"),
        _post(""),
        _post("a2", title="", body="   "),
        _post("a3", created_utc=T0 + timedelta(days=1)),
        _post("a4", title="first", score=1),
        _post("a4", title="second", score=5),
        _post("a5", title="nul\x00 byte", body="y" * (MAX_TEXT_CHARS + 10)),
    ]
    checked = validate_posts(frame_from_posts(posts), T0 + timedelta(minutes=1))
    assert checked.good["post_id"].to_list() == ["a1", "a4", "a5"]
    kept = checked.good.filter(pl.col("post_id") == "a4").row(0, named=True)
    assert (kept["title"], kept["score"]) == ("second", 5)  # the last delivery wins
    nul = checked.good.filter(pl.col("post_id") == "a5").row(0, named=True)
    assert nul["title"] == "nul byte" and len(nul["body"]) == MAX_TEXT_CHARS
    reasons = dict(zip(checked.quarantine["post_id"], checked.quarantine["reason"], strict=True))
    assert reasons == {
        "": "missing_id",
        "a2": "empty_text",
        "a3": "future_created",
        "a4": "duplicate_id",
    }
    assert checked.quarantine["detail"].null_count() == 0


def test_post_sentiment_rows_carry_model_scores_and_symbols() -> None:
    frame = frame_from_posts(
        [_post("p1", title="$SPY calls, bullish"), _post("p2", title="BTC got rekt")]
    )
    rows = compute_post_sentiment(frame, T0).to_dicts()
    assert rows[0]["symbols"] == ["SPY"] and rows[0]["compound"] > 0.3
    assert rows[1]["symbols"] == ["BTC/USD"] and rows[1]["compound"] < -0.3
    assert {r["model"] for r in rows} == {"vader+finance-v1"}


def _scored(rows: list[tuple[timedelta, float, list[str]]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "created_utc": pl.Series([T0 + d for d, _, _ in rows], dtype=pl.Datetime("us", "UTC")),
            "compound": [c for _, c, _ in rows],
            "symbols": pl.Series([s for _, _, s in rows], dtype=pl.List(pl.String)),
        }
    )


def test_aggregates_count_a_post_only_from_created_plus_lag() -> None:
    scored = _scored(
        [
            (timedelta(minutes=2, seconds=30), 0.8, ["SPY"]),
            (timedelta(minutes=3), -0.6, []),
        ]
    )
    agg = compute_sentiment_aggregates(
        scored, T0, T0 + timedelta(minutes=8), symbols=["SPY"], lag=timedelta(minutes=2)
    )
    spy = agg.filter(pl.col("symbol") == "SPY")
    market = agg.filter(pl.col("symbol") == MARKET)
    # Made 14:02:30, usable from 14:04:30: the 14:04 row must not see it, 14:05 must.
    assert spy["posts_60m"].to_list() == [0, 0, 0, 0, 0, 1, 1, 1]
    assert spy["compound_60m"].to_list()[:5] == [None] * 5
    assert spy["compound_60m"][5] == pytest.approx(0.8)
    # Made 14:03:00, usable exactly at 14:05:00: counted from that row (market-wide only).
    assert market["posts_60m"].to_list() == [0, 0, 0, 0, 0, 2, 2, 2]
    assert market["compound_60m"][5] == pytest.approx(0.1)
    assert market["pos_share_60m"][5] == pytest.approx(0.5)
    assert market["neg_share_60m"][5] == pytest.approx(0.5)


def test_aggregates_drop_posts_when_they_leave_the_window() -> None:
    scored = _scored(
        [(-timedelta(minutes=70), 0.5, ["SPY"]), (-timedelta(minutes=30), -0.5, ["SPY"])]
    )
    agg = compute_sentiment_aggregates(
        scored, T0, T0 + timedelta(minutes=15), symbols=["SPY"], lag=timedelta(0)
    ).filter(pl.col("symbol") == "SPY")
    # At 14:00 the 12:50 post is 70 min old: out of the 60 min window, inside the 24 h one.
    assert agg["posts_60m"][0] == 1 and agg["compound_60m"][0] == pytest.approx(-0.5)
    assert agg["posts_24h"][0] == 2 and agg["compound_24h"][0] == pytest.approx(0.0)


def test_aggregates_match_a_brute_force_count() -> None:
    rng = np.random.default_rng(3)
    n = 400
    offsets = [timedelta(seconds=float(s)) for s in rng.uniform(-7200, 7200, n)]
    comps = rng.uniform(-1, 1, n)
    syms = [["SPY"] if rng.random() < 0.5 else ["BTC/USD", "SPY"] for _ in range(n)]
    scored = _scored(list(zip(offsets, comps.tolist(), syms, strict=True)))
    lag = timedelta(minutes=3)
    agg = compute_sentiment_aggregates(
        scored, T0, T0 + timedelta(hours=2), symbols=["SPY", "BTC/USD"], lag=lag
    )
    created = np.array([(T0 + d).timestamp() for d in offsets])
    for row in agg.filter(pl.col("ts").dt.minute() % 17 == 0).iter_rows(named=True):
        t = row["ts"].timestamp()
        usable = created + lag.total_seconds() <= t
        inside = usable & (created + lag.total_seconds() > t - 3600)
        mentions = np.array([row["symbol"] in s or row["symbol"] == MARKET for s in syms])
        sel = inside & mentions
        assert row["posts_60m"] == int(sel.sum())
        if sel.any():
            assert row["compound_60m"] == pytest.approx(float(comps[sel].mean()))


def test_aggregates_refuse_a_window_that_is_not_a_multiple_of_the_step() -> None:
    with pytest.raises(ValueError, match="multiple"):
        compute_sentiment_aggregates(
            _scored([]),
            T0,
            T0 + timedelta(hours=1),
            symbols=["SPY"],
            lag=timedelta(0),
            windows=[timedelta(seconds=90)],
        )
