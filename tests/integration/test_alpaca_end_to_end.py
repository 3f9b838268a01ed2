"""The Alpaca adapters together: stream gap-fill over the real REST client, and ingest-bars on Alpaca."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from adapters.alpaca import AlpacaBarSource
from adapters.alpaca_stream import AlpacaBarStream
from adapters.clock import ManualClock
from core.configs import IngestBarsConfig
from flows.ingest_bars import ingest_bars
from tests.fakes.alpaca import FakeAlpacaRest, fake_alpaca_rest  # noqa: F401
from tests.fakes.alpaca_stream import (
    FakeAlpacaStreamServer,
    fake_alpaca_stream,  # noqa: F401
)
from warehouse.db import connect

KEY, SECRET = "fake-key-id", "fake-secret-key"  # what the REST fake accepts
T0 = datetime(2024, 3, 4, 15, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)


def _wait(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_stream_reconnect_gap_fills_through_the_real_rest_client(
    fake_alpaca_rest: FakeAlpacaRest,  # noqa: F811
    fake_alpaca_stream: FakeAlpacaStreamServer,  # noqa: F811
) -> None:
    rest = fake_alpaca_rest
    ws = fake_alpaca_stream
    walk = rest.add_random_walk("SPY", T0, 10, price=500.0, seed=3)
    closes = walk["close"].to_list()
    clock = ManualClock(T0 + timedelta(seconds=30))
    gap_source = AlpacaBarSource(KEY, SECRET, base_url=rest.base_url)
    frames: list[pl.DataFrame] = []

    async def handler(frame: pl.DataFrame) -> None:
        frames.append(frame)

    stream = AlpacaBarStream(
        ws.key,
        ws.secret,
        stock_url=ws.stock_url,
        crypto_url=ws.crypto_url,
        gap_fill=gap_source,
        clock=clock,
        backoff_base_s=0.01,
        backoff_cap_s=0.05,
    )
    stream.subscribe(["SPY"], handler)
    runner = threading.Thread(target=stream.run, daemon=True)
    runner.start()
    try:
        ws.wait_subscribed("SPY")
        for m in range(3):
            row = walk.row(m, named=True)
            ws.push_bar("SPY", row["ts"], row["open"], row["high"], row["low"], row["close"], 100)
        _wait(lambda: sum(f.height for f in frames) == 3, "three live bars")
        # Down for minutes 3-5; back at 15:06:20: those three come from GET /v2/stocks/bars.
        clock.set(T0 + 6 * MIN + timedelta(seconds=20))
        ws.drop_connections()
        _wait(lambda: sum(f.height for f in frames) == 6, "the gap-filled bars")
        row = walk.row(6, named=True)
        ws.push_bar("SPY", row["ts"], row["open"], row["high"], row["low"], row["close"], 100)
        _wait(lambda: sum(f.height for f in frames) == 7, "the next live bar")
    finally:
        stream.stop()
        runner.join(10)
    got = pl.concat(frames)
    assert got["ts"].to_list() == [T0 + m * MIN for m in range(7)]
    assert got["close"].to_list() == pytest.approx(closes[:7])
    bar_requests = rest.requests_to("/v2/stocks/bars")
    assert len(bar_requests) == 1
    query = bar_requests[0].query
    assert query["symbols"] == "SPY"
    assert datetime.fromisoformat(query["start"].replace("Z", "+00:00")) == T0 + 3 * MIN
    assert stream.counters.gap_filled == 3 and stream.counters.reconnects == 1


@pytest.fixture
def alpaca_env(
    fake_alpaca_rest: FakeAlpacaRest,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    prefect_harness: None,
) -> Iterator[FakeAlpacaRest]:
    """Settings that send source 'alpaca' (and 'auto') to the fake REST server."""
    from core.settings import get_settings

    monkeypatch.setenv("APCA_API_KEY_ID", KEY)
    monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET)
    monkeypatch.setenv("TRADINGML_ALPACA_BASE_URL", fake_alpaca_rest.base_url)
    get_settings.cache_clear()
    try:
        yield fake_alpaca_rest
    finally:
        get_settings.cache_clear()


def test_ingest_bars_on_alpaca_quarantines_bad_bars_and_resumes(
    alpaca_env: FakeAlpacaRest, warehouse_path: Path
) -> None:
    rest = alpaca_env
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=3)
    rest.add_random_walk("SPY", start, 120, price=500.0, seed=1)
    rest.add_random_walk("BTC/USD", start, 120, price=60_000.0, seed=2)
    rest.malformed_bars_next("/v2/stocks/bars", ["string_ts", "missing_price"])
    config = IngestBarsConfig(
        source="auto",
        symbols=["SPY", "BTC/USD"],
        lookback_days=1,
        incremental=True,
        warehouse=str(warehouse_path),
        # The last three hours may lie outside NYSE hours whenever the test runs: this
        # test is about bad bars and resuming (regular hours: the test below).
        regular_hours_only=False,
    )
    first = ingest_bars(config)
    assert first["source"] == "alpaca"
    assert first["received"] == 240
    # The two broken SPY bars are quarantined with reasons; the other 238 are stored.
    assert first["inserted"] == 238
    assert sum(first["quarantined"].values()) == 2
    # New bars arrive; the next run asks only for what follows the newest stored bar.
    rest.add_random_walk("BTC/USD", start + 120 * MIN, 30, price=61_000.0, seed=4)
    before = len(rest.requests_to("/v1beta3/crypto/us/bars"))
    second = ingest_bars(config)
    crypto = rest.requests_to("/v1beta3/crypto/us/bars")[before:]
    assert second["inserted"] == 30
    assert len(crypto) == 1
    asked = datetime.fromisoformat(crypto[0].query["start"].replace("Z", "+00:00"))
    assert asked == start + 120 * MIN
    with connect(warehouse_path) as con:
        rows = con.execute(
            "SELECT symbol, count(*), min(source) FROM bars GROUP BY 1 ORDER BY 1"
        ).fetchall()
        reasons = con.execute("SELECT reason FROM bars_quarantine ORDER BY 1").fetchall()
    assert rows == [("BTC/USD", 150, "alpaca"), ("SPY", 118, "alpaca")]
    assert len(reasons) == 2


def test_ingest_bars_on_alpaca_holds_pre_and_post_market_stock_bars_back(
    alpaca_env: FakeAlpacaRest, warehouse_path: Path
) -> None:
    rest = alpaca_env
    # 2024-07-02, EDT: pre-market 12:00-13:30 UTC, the session 13:30-20:00, post to 21:00;
    # the coin trades every minute of it.
    start = datetime(2024, 7, 2, 12, 0, tzinfo=UTC)
    rest.add_random_walk("SPY", start, 9 * 60, price=500.0, seed=1)
    rest.add_random_walk("BTC/USD", start, 9 * 60, price=60_000.0, seed=2)
    config = IngestBarsConfig(
        source="alpaca",
        symbols=["SPY", "BTC/USD"],
        start=date(2024, 7, 2),
        end=date(2024, 7, 3),
        warehouse=str(warehouse_path),
    )
    result = ingest_bars(config)
    assert result["received"] == 2 * 9 * 60
    # 90 pre-market + 60 post-market SPY minutes held back with their reason, none lost.
    assert result["quarantined"] == {"outside_regular_hours": 150}
    with connect(warehouse_path) as con:
        stored = con.execute(
            "SELECT symbol, count(*), min(ts), max(ts) FROM bars GROUP BY 1 ORDER BY 1"
        ).fetchall()
        held = con.execute(
            "SELECT count(*), min(ts), max(ts) FROM bars_quarantine"
            " WHERE reason = 'outside_regular_hours' AND symbol = 'SPY'"
        ).fetchall()
    assert stored == [
        ("BTC/USD", 540, start, start + 539 * MIN),
        ("SPY", 390, start + 90 * MIN, start + 479 * MIN),
    ]
    assert held == [(150, start, start + 539 * MIN)]


# ---- split- and dividend-adjusted history (issue 18 item 1) ------------------------------

SPLIT_DAY = date(2024, 7, 2)
BEFORE_OPEN = datetime(2024, 7, 1, 13, 30, tzinfo=UTC)  # 09:30 EDT
SPLIT_OPEN = datetime(2024, 7, 2, 13, 30, tzinfo=UTC)


def _ingest(warehouse: Path, first: date, last: date, adjustment: str = "all") -> dict[str, Any]:
    return ingest_bars(
        IngestBarsConfig(
            source="alpaca",
            symbols=["SPY"],
            start=first,
            end=last + timedelta(days=1),
            adjustment=adjustment,  # type: ignore[arg-type]
            warehouse=str(warehouse),
        )
    )


def test_a_split_learned_rebases_the_stored_history_and_the_next_day_continues_it(
    alpaca_env: FakeAlpacaRest, warehouse_path: Path, tmp_path: Path
) -> None:
    rest = alpaca_env
    # SPY at ~500 on Monday; a 2-for-1 split goes ex on Tuesday, which trades at ~250.
    monday = rest.add_random_walk("SPY", BEFORE_OPEN, 390, price=500.0, seed=3)
    rest.add_random_walk("SPY", SPLIT_OPEN, 390, price=250.0, seed=4)

    # Monday's evening ingest: no split known yet, the bars are stored as they are.
    first = _ingest(warehouse_path, date(2024, 7, 1), date(2024, 7, 1))
    assert first["inserted"] == 390 and first["quarantined"] == {}

    # Tuesday: Alpaca knows the split. The ingest learns it first, re-bases Monday's stored
    # bars (prices halved, volume doubled), and Tuesday's bars continue the series.
    rest.add_split("SPY", SPLIT_DAY, 2.0)
    second = _ingest(warehouse_path, SPLIT_DAY, SPLIT_DAY)
    assert second["inserted"] == 390 and second["quarantined"] == {}
    assert any("SPY 2-for-1 split, ex-date 2024-07-02" in w for w in second["warnings"])
    with connect(warehouse_path) as con:
        stored = con.execute(
            "SELECT ts, close, volume FROM bars WHERE symbol = 'SPY' AND ts < ? ORDER BY ts",
            [SPLIT_OPEN],
        ).fetchall()
        actions = con.execute(
            "SELECT symbol, ex_date, kind, value FROM corporate_actions"
        ).fetchall()
        adjusted = con.execute(
            "SELECT symbol, timeframe, ex_date, kind, price_factor, volume_factor, bars"
            " FROM bar_adjustments"
        ).fetchall()
    assert [c for _, c, _ in stored] == pytest.approx((monday["close"] / 2).to_list())
    assert [v for _, _, v in stored] == pytest.approx((monday["volume"] * 2).to_list())
    assert actions == [("SPY", SPLIT_DAY, "split", 2.0)]
    assert adjusted == [("SPY", "1Min", SPLIT_DAY, "split", 0.5, 2.0, 390)]

    # A re-backfill of both days (adjusted as Alpaca serves them now) finds them as stored:
    # nothing quarantined, nothing re-based twice.
    again = _ingest(warehouse_path, date(2024, 7, 1), SPLIT_DAY)
    assert again["quarantined"] == {} and again["unchanged"] == 780
    with connect(warehouse_path) as con:
        assert con.execute("SELECT count(*) FROM bar_adjustments").fetchall() == [(1,)]

    # Unadjusted, the same two days break at the split: Tuesday is held back as a split.
    raw = tmp_path / "raw.duckdb"
    _ingest(raw, date(2024, 7, 1), date(2024, 7, 1), adjustment="raw")
    held = _ingest(raw, SPLIT_DAY, SPLIT_DAY, adjustment="raw")
    assert held["quarantined"].get("suspected_split", 0) > 0


def test_alpaca_corporate_actions_come_through_the_real_client(
    alpaca_env: FakeAlpacaRest,
) -> None:
    rest = alpaca_env
    rest.add_split("SPY", SPLIT_DAY, 4.0)
    rest.add_split("VXUS", date(2024, 7, 3), 1.0, old_rate=10.0)  # a 1-for-10 reverse split
    rest.add_split("QQQ", date(2024, 9, 1), 2.0)  # outside the window asked for
    source = AlpacaBarSource(KEY, SECRET, base_url=rest.base_url)
    got = source.fetch_corporate_actions(
        ["SPY", "VXUS", "QQQ", "BTC/USD"], date(2024, 7, 1), date(2024, 7, 31)
    )
    assert sorted((a.symbol, a.ex_date, a.kind, a.value) for a in got) == [
        ("SPY", SPLIT_DAY, "split", 4.0),
        ("VXUS", date(2024, 7, 3), "split", 0.1),
    ]
    unadjusted = AlpacaBarSource(KEY, SECRET, base_url=rest.base_url, adjustment="raw")
    assert unadjusted.fetch_corporate_actions(["SPY"], date(2024, 7, 1), date(2024, 7, 31)) == []
    asked = rest.requests_to("/v1/corporate-actions")
    assert len(asked) == 1 and asked[0].query["symbols"] == "QQQ,SPY,VXUS"
