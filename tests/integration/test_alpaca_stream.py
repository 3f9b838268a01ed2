"""alpaca-py's real stream clients, driven by AlpacaBarStream, against the fake Alpaca websocket server."""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import pytest

from adapters.alpaca_stream import (
    AlpacaBarStream,
    AlpacaStreamAuthError,
    AlpacaStreamConnectionLimitError,
)
from adapters.clock import ManualClock
from core.bar_schema import BAR_SCHEMA, conform_bars
from tests.fakes.alpaca_stream import (
    CRYPTO_PATH,
    FakeAlpacaStreamServer,
    bar_message,
    fake_alpaca_stream,  # noqa: F401
)

KEY, SECRET = "test-key-id", "test-secret-key"  # what the fake accepts
T0 = datetime(2024, 3, 4, 15, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)


def _wait(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class Collector:
    """An async handler that keeps every frame it is given (and can be told to raise)."""

    def __init__(self, fail_first: int = 0) -> None:
        self.frames: list[pl.DataFrame] = []
        self._fail = fail_first

    async def __call__(self, frame: pl.DataFrame) -> None:
        self.frames.append(frame)
        if self._fail > 0:
            self._fail -= 1
            raise RuntimeError("handler bug")

    @property
    def rows(self) -> pl.DataFrame:
        return pl.concat(self.frames) if self.frames else pl.DataFrame(schema=BAR_SCHEMA)

    def wait_rows(self, n: int, timeout: float = 5.0) -> pl.DataFrame:
        _wait(lambda: sum(f.height for f in self.frames) >= n, f"{n} bars", timeout)
        return self.rows


class RecordingSleep:
    """Injected backoff sleep: records each delay and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        await asyncio.sleep(0)


class Runner:
    def __init__(self, stream: AlpacaBarStream) -> None:
        self.stream = stream
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.stream.run()
        except Exception as exc:  # noqa: BLE001 - handed to the test thread to assert on
            self.error = exc

    def join(self, timeout: float = 5.0) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "run() did not return"


@contextmanager
def running(stream: AlpacaBarStream) -> Iterator[Runner]:
    runner = Runner(stream)
    try:
        yield runner
    finally:
        stream.stop()
        runner.join()


def make_stream(fake: FakeAlpacaStreamServer, **kwargs: Any) -> AlpacaBarStream:
    options: dict[str, Any] = {
        "stock_url": fake.stock_url,
        "crypto_url": fake.crypto_url,
        "backoff_base_s": 0.01,
        "backoff_cap_s": 0.05,
    }
    options.update(kwargs)
    return AlpacaBarStream(KEY, SECRET, **options)


class GapSource:
    """A BarSource over fixed bars that records each request and waits for `release`."""

    name = "test-gap"

    def __init__(self, bars: pl.DataFrame) -> None:
        self.bars = bars
        self.requests: list[tuple[list[str], str, datetime, datetime]] = []
        self.release = threading.Event()
        self.release.set()

    def fetch_bars(
        self, symbols: Sequence[str], timeframe: str, start: datetime, end: datetime
    ) -> Iterator[pl.DataFrame]:
        self.requests.append((list(symbols), timeframe, start, end))
        assert self.release.wait(5), "test never released the gap-fill"
        for symbol in symbols:
            part = self.bars.filter(
                (pl.col("symbol") == symbol) & (pl.col("ts") >= start) & (pl.col("ts") < end)
            )
            if part.height:
                yield part


def rest_bars(symbol: str, minutes: Sequence[int]) -> pl.DataFrame:
    return conform_bars(
        pl.DataFrame(
            {
                "symbol": [symbol] * len(minutes),
                "timeframe": ["1Min"] * len(minutes),
                "ts": [T0 + m * MIN for m in minutes],
                "open": [100.0 + m for m in minutes],
                "high": [101.0 + m for m in minutes],
                "low": [99.0 + m for m in minutes],
                "close": [100.5 + m for m in minutes],
                "volume": [1000.0] * len(minutes),
                "trade_count": [10] * len(minutes),
                "vwap": [100.2 + m for m in minutes],
                "source": ["alpaca"] * len(minutes),
            }
        )
    )


def push_minute(fake: FakeAlpacaStreamServer, symbol: str, m: int) -> int:
    """Minute m after T0, priced so that close = 100.5 + m."""
    return fake.push_bar(symbol, T0 + m * MIN, 100.0 + m, 101.0 + m, 99.0 + m, 100.5 + m, 1000.0)


@pytest.fixture
def fake(fake_alpaca_stream: FakeAlpacaStreamServer) -> FakeAlpacaStreamServer:  # noqa: F811
    return fake_alpaca_stream


# ---------------------------------------------------------------------------------------


def test_stock_bars_arrive_as_canonical_frames(fake: FakeAlpacaStreamServer) -> None:
    got = Collector()
    stream = make_stream(fake)
    stream.subscribe(["SPY", "VTI"], got)
    with running(stream):
        fake.wait_subscribed("VTI", "/v2/iex")
        assert fake.push_bar("SPY", T0, 500.0, 501.5, 499.25, 501.0, 12345, n=87, vw=500.6) == 1
        got.wait_rows(1)
        # Alpaca sends each minute's bars for many symbols in one frame: one handler call.
        fake.push_raw(
            [
                bar_message("SPY", T0 + MIN, 501.0, 502.0, 500.0, 501.5, 900),
                bar_message("VTI", T0 + MIN, 250.0, 250.5, 249.5, 250.25, 300),
            ]
        )
        got.wait_rows(3)
        # A revision of an already delivered bar ('updatedBars') passes through as an update.
        fake.push_bar("SPY", T0 + MIN, 501.0, 502.0, 500.0, 501.75, 950, updated=True)
        got.wait_rows(4)

    first, pair, revision = got.frames
    assert dict(first.schema) == BAR_SCHEMA
    assert first.row(0, named=True) == {
        "symbol": "SPY",
        "timeframe": "1Min",
        "ts": T0,
        "open": 500.0,
        "high": 501.5,
        "low": 499.25,
        "close": 501.0,
        "volume": 12345.0,
        "trade_count": 87,
        "vwap": 500.6,
        "source": "alpaca",
    }
    assert pair["symbol"].to_list() == ["SPY", "VTI"] and pair["ts"].to_list() == [T0 + MIN] * 2
    assert revision["ts"].to_list() == [T0 + MIN] and revision["close"].to_list() == [501.75]
    c = stream.counters
    assert (c.connects, c.reconnects, c.bars_delivered, c.bars_revised) == (1, 0, 3, 1)
    # What the real alpaca-py client told the server: our keys, then one subscribe.
    (auth,) = fake.auth_attempts
    assert (auth.key, auth.secret, auth.accepted) == (KEY, SECRET, True)
    ((path, sub),) = fake.subscriptions
    assert path == "/v2/iex"
    assert sorted(sub["bars"]) == ["SPY", "VTI"] and sorted(sub["updatedBars"]) == ["SPY", "VTI"]


def test_stocks_and_coins_stream_side_by_side(fake: FakeAlpacaStreamServer) -> None:
    got = Collector()
    stream = make_stream(fake)
    stream.subscribe(["SPY", "BTC/USD", "ETH/USD"], got)
    with running(stream):
        fake.wait_subscribed("SPY", "/v2/iex")
        fake.wait_subscribed("ETH/USD", CRYPTO_PATH)
        assert fake.push_bar("BTC/USD", T0, 60000.0, 60100.0, 59900.0, 60050.0, 1.25) == 1
        assert fake.push_bar("SPY", T0, 500.0, 501.0, 499.0, 500.5, 100) == 1
        rows = got.wait_rows(2)

    assert sorted(fake.connection_paths) == sorted(["/v2/iex", CRYPTO_PATH])
    subs = dict(fake.subscriptions)
    assert subs[CRYPTO_PATH]["bars"] == ["BTC/USD", "ETH/USD"] and subs["/v2/iex"]["bars"] == [
        "SPY"
    ]
    by_symbol = {r["symbol"]: r for r in rows.iter_rows(named=True)}
    assert by_symbol["BTC/USD"]["volume"] == 1.25 and by_symbol["BTC/USD"]["close"] == 60050.0
    assert by_symbol["SPY"]["source"] == "alpaca" and by_symbol["SPY"]["ts"] == T0
    assert stream.counters.connects == 2


def test_drop_reconnects_with_jittered_backoff_and_gap_fills_each_minute_once(
    fake: FakeAlpacaStreamServer,
) -> None:
    clock = ManualClock(T0 + timedelta(seconds=30))
    source = GapSource(rest_bars("SPY", range(0, 10)))
    sleeps = RecordingSleep()
    got = Collector()
    stream = make_stream(
        fake,
        gap_fill=source,
        clock=clock,
        backoff_base_s=0.05,
        backoff_cap_s=0.15,
        rng=random.Random(11),
        sleep=sleeps,
    )
    stream.subscribe(["SPY"], got)
    with running(stream):
        fake.wait_subscribed("SPY")
        for m in (0, 1, 2):
            push_minute(fake, "SPY", m)
        got.wait_rows(3)
        assert source.requests == []  # no gap-fill on the first connection

        # Minutes 15:03-15:05 are missed while the connection is down; the reconnect
        # is refused twice before it gets through.
        clock.set(T0 + 6 * MIN + timedelta(seconds=20))
        source.release.clear()
        fake.fail_next_handshakes(2)
        assert fake.drop_connections() == 1
        fake.wait_subscribed("SPY", min_connections=2)
        # Live bars that arrive while the gap-fill is still fetching: 15:05 (which the
        # REST fetch also returns) and 15:06. They must come after the filled minutes.
        _wait(lambda: len(source.requests) == 1, "the gap-fill request")
        assert push_minute(fake, "SPY", 5) == 1
        assert push_minute(fake, "SPY", 6) == 1
        source.release.set()
        got.wait_rows(7)
        push_minute(fake, "SPY", 7)
        rows = got.wait_rows(8)
        time.sleep(0.1)  # room for a wrongly duplicated frame to show up

    assert rows["ts"].to_list() == [T0 + m * MIN for m in range(8)]  # each minute once, in order
    assert rows["close"].to_list() == [100.5 + m for m in range(8)]
    # Only finished minutes are fetched: [last bar + 1 min, start of the current minute).
    assert source.requests == [(["SPY"], "1Min", T0 + 3 * MIN, T0 + 6 * MIN)]
    gap_frames = [f for f in got.frames if f["ts"].min() == T0 + 3 * MIN]
    assert len(gap_frames) == 1 and gap_frames[0]["ts"].to_list() == [
        T0 + m * MIN for m in (3, 4, 5)
    ]
    c = stream.counters
    assert (c.connects, c.reconnects, c.connect_failures) == (2, 1, 2)
    assert (c.gap_filled, c.duplicates_dropped, c.bars_delivered) == (3, 1, 8)
    assert fake.refused_handshakes == 2
    # Full jitter: the n-th consecutive failure sleeps uniform(0, min(cap, base * 2**(n-1))).
    bounds = [0.05, 0.1, 0.15]
    assert len(sleeps.delays) == 3
    assert all(0 <= d <= b for d, b in zip(sleeps.delays, bounds, strict=True))
    expected_rng = random.Random(11)
    assert sleeps.delays == pytest.approx([expected_rng.uniform(0, b) for b in bounds])
    assert len(set(sleeps.delays)) == 3


def test_silent_connection_is_closed_and_replaced_by_the_watchdog(
    fake: FakeAlpacaStreamServer,
) -> None:
    got = Collector()
    stream = make_stream(fake, silence_timeout_s=1.0)
    stream.subscribe(["SPY"], got)
    with running(stream):
        fake.wait_subscribed("SPY")
        push_minute(fake, "SPY", 0)
        got.wait_rows(1)
        silent_at = time.monotonic()
        assert fake.go_silent() == 1  # open, but nothing more comes and nothing is answered
        fake.wait_subscribed("SPY", min_connections=2, timeout=5)
        waited = time.monotonic() - silent_at
        push_minute(fake, "SPY", 1)
        rows = got.wait_rows(2)
        _wait(lambda: fake.open_connections == 1, "the silent socket to be closed")

    assert 0.9 <= waited < 4.0
    assert rows["ts"].to_list() == [T0, T0 + MIN]
    c = stream.counters
    assert (c.silence_timeouts, c.connects, c.reconnects) == (1, 2, 1)


def test_malformed_messages_and_handler_errors_do_not_stop_the_stream(
    fake: FakeAlpacaStreamServer, caplog: pytest.LogCaptureFixture
) -> None:
    got = Collector(fail_first=1)
    stream = make_stream(fake)
    stream.subscribe(["SPY"], got)
    caplog.set_level(logging.WARNING, logger="adapters.alpaca_stream")
    with running(stream):
        fake.wait_subscribed("SPY")
        push_minute(fake, "SPY", 0)  # the handler raises on this one
        got.wait_rows(1)
        for kind in ("garbage", "text", "not_a_list", "missing_field", "bad_ts", "bad_number"):
            assert fake.send_malformed(kind, ts=T0 + MIN) == 1
        # alpaca-py itself never calls a handler for a bar whose `t` is a string; we read
        # an RFC 3339 string with a zone as the bar's time.
        fake.send_malformed("string_ts", ts=T0 + MIN)
        # One bad bar beside a good one in the same frame: the good one still arrives.
        broken = bar_message("SPY", T0 + 2 * MIN, 1, 2, 0.5, 1.5, 10)
        del broken["o"]
        fake.push_raw([broken, bar_message("SPY", T0 + 2 * MIN, 102, 103, 101, 102.5, 10)])
        push_minute(fake, "SPY", 3)
        rows = got.wait_rows(4)

    assert rows["ts"].to_list() == [T0 + m * MIN for m in range(4)]
    assert rows["close"].to_list() == [100.5, 10.5, 102.5, 103.5]
    c = stream.counters
    assert (c.dropped_malformed, c.handler_errors, c.connects) == (7, 1, 1)
    assert fake.connection_count == 1
    assert "dropped a malformed message" in caplog.text
    assert "the bar handler raised" in caplog.text


def test_bad_keys_raise_without_the_secret_and_without_retrying(
    fake: FakeAlpacaStreamServer, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "wrong-secret-9f8e7d"
    sleeps = RecordingSleep()
    stream = AlpacaBarStream(KEY, secret, stock_url=fake.stock_url, sleep=sleeps)
    stream.subscribe(["SPY"], Collector())
    caplog.set_level(logging.DEBUG)
    runner = Runner(stream)
    runner.join(timeout=5)

    assert isinstance(runner.error, AlpacaStreamAuthError)
    message = str(runner.error)
    assert "APCA_API_KEY_ID" in message and "APCA_API_SECRET_KEY" in message
    assert secret not in message and secret not in caplog.text and secret not in repr(stream)
    (attempt,) = fake.auth_attempts  # one try, no retry loop
    assert attempt.secret == secret and not attempt.accepted
    assert sleeps.delays == [] and stream.counters.connects == 0


def test_connection_limit_is_retried_a_few_times_then_explained(
    fake: FakeAlpacaStreamServer,
) -> None:
    fake.set_limit_exceeded()  # another client holds the account's one connection
    sleeps = RecordingSleep()
    stream = make_stream(fake, sleep=sleeps, max_limit_retries=2)
    stream.subscribe(["SPY"], Collector())
    runner = Runner(stream)
    runner.join(timeout=5)

    assert isinstance(runner.error, AlpacaStreamConnectionLimitError)
    assert "406" in str(runner.error) and "one market-data stream connection" in str(runner.error)
    assert len(fake.auth_attempts) == 3 and len(sleeps.delays) == 2

    # A limit that clears (Alpaca reaping an old connection) is ridden out.
    fake.set_limit_exceeded(1)
    got = Collector()
    stream = make_stream(fake, sleep=RecordingSleep())
    stream.subscribe(["SPY"], got)
    with running(stream):
        fake.wait_subscribed("SPY")
        push_minute(fake, "SPY", 0)
        got.wait_rows(1)
    assert stream.counters.connects == 1 and stream.counters.connect_failures == 1


def test_stop_from_another_thread_ends_run(fake: FakeAlpacaStreamServer) -> None:
    # While streaming.
    stream = make_stream(fake)
    stream.subscribe(["SPY", "BTC/USD"], Collector())
    runner = Runner(stream)
    fake.wait_subscribed("SPY")
    fake.wait_subscribed("BTC/USD")
    stopper = threading.Thread(target=stream.stop)
    stopper.start()
    stopper.join()
    runner.join(timeout=3)
    assert runner.error is None
    _wait(lambda: fake.open_connections == 0, "the stream to close its sockets")

    # While sleeping a long backoff (the real asyncio sleep, not an injected one).
    fake.fail_next_handshakes(1000)
    stream = make_stream(fake, backoff_base_s=30.0, backoff_cap_s=60.0, rng=random.Random(0))
    stream.subscribe(["SPY"], Collector())
    runner = Runner(stream)
    _wait(lambda: fake.refused_handshakes >= 1, "a refused handshake")
    time.sleep(0.1)
    started = time.monotonic()
    threading.Thread(target=stream.stop).start()
    runner.join(timeout=3)
    assert runner.error is None and time.monotonic() - started < 3
    assert stream.counters.connect_failures == 1

    # Before run(): run() returns at once.
    stream = make_stream(fake)
    stream.subscribe(["SPY"], Collector())
    stream.stop()
    runner = Runner(stream)
    runner.join(timeout=3)
    assert runner.error is None
