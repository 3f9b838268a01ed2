"""The real alpaca-py clients, through adapters/alpaca.py, against the fake Alpaca REST server."""

from __future__ import annotations

import logging
import time
from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest

from adapters.alpaca import (
    AlpacaAuthError,
    AlpacaBarSource,
    AlpacaBroker,
    AlpacaError,
    DuplicateClientOrderIdError,
    TokenBucket,
    rate_limit_wait,
)
from adapters.protocols import BarSource, Broker, OrderRequest
from core.bar_quality import validate_bars
from tests.fakes.alpaca import (
    CRYPTO_BARS_PATH,
    STOCK_BARS_PATH,
    FakeAlpacaRest,
    fake_alpaca_rest,  # noqa: F401
)

KEY, SECRET = "fake-key-id", "fake-secret-key"
T0 = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
LATER = datetime(2030, 1, 1, tzinfo=UTC)  # validation's "now": nothing here is in the future


class FakeClock:
    """Monotonic time that only moves when slept on; records every sleep."""

    def __init__(self) -> None:
        self.t = 1_000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds


def _source(fake: FakeAlpacaRest, clock: FakeClock | None = None, **kw: object) -> AlpacaBarSource:
    clock = clock or FakeClock()
    args: dict[str, object] = {
        "base_url": fake.base_url,
        "sleep": clock.sleep,
        "monotonic": clock.monotonic,
    }
    args.update(kw)
    return AlpacaBarSource(
        str(args.pop("api_key", KEY)),
        str(args.pop("secret_key", SECRET)),
        **args,  # type: ignore[arg-type]
    )


def _broker(fake: FakeAlpacaRest, clock: FakeClock | None = None, **kw: object) -> AlpacaBroker:
    clock = clock or FakeClock()
    return AlpacaBroker(
        str(kw.pop("api_key", KEY)),
        str(kw.pop("secret_key", SECRET)),
        base_url=fake.base_url,
        sleep=clock.sleep,
        monotonic=clock.monotonic,
        **kw,  # type: ignore[arg-type]
    )


def _all(frames: list[pl.DataFrame]) -> pl.DataFrame:
    return pl.concat(frames) if frames else pl.DataFrame()


@pytest.fixture
def fake(fake_alpaca_rest: FakeAlpacaRest) -> FakeAlpacaRest:  # noqa: F811
    return fake_alpaca_rest


# ------------------------------------------------------------------------------ bars


def test_adapters_satisfy_the_protocols(fake: FakeAlpacaRest) -> None:
    assert isinstance(_source(fake), BarSource)
    assert isinstance(_broker(fake), Broker)
    assert _source(fake).name == "alpaca"


def test_multi_page_stock_bars_arrive_once_in_order(fake: FakeAlpacaRest) -> None:
    fake.page_limit = 500  # the server caps pages below the 10,000 we ask for
    spy = fake.add_random_walk("SPY", T0, 1_200, seed=1)
    vti = fake.add_random_walk("VTI", T0, 700, seed=2)
    source = _source(fake)

    frames = list(source.fetch_bars(["SPY", "VTI"], "1Min", T0, T0 + timedelta(days=5)))

    calls = fake.requests_to(STOCK_BARS_PATH)
    assert len(calls) == 4  # 1,900 bars in pages of 500
    assert "page_token" not in calls[0].query
    tokens = [c.query["page_token"] for c in calls[1:]]
    assert len(set(tokens)) == 3
    assert all(c.query["limit"] == "10000" for c in calls)
    assert all(c.query["symbols"] == "SPY,VTI" for c in calls)
    # One symbol per frame, several frames per symbol: the backfill streams page by page.
    assert all(f.get_column("symbol").n_unique() == 1 for f in frames)
    assert [f.get_column("symbol")[0] for f in frames] == ["SPY", "SPY", "SPY", "VTI", "VTI"]
    got = _all(frames)
    assert got.height == 1_900
    assert got.select(pl.struct("symbol", "ts").is_unique().all()).item()
    assert (got.get_column("source") == "alpaca").all()
    assert got.schema["ts"] == pl.Datetime("us", "UTC")
    for symbol, want in (("SPY", spy), ("VTI", vti)):
        mine = got.filter(pl.col("symbol") == symbol)
        assert mine.get_column("ts").to_list() == want.get_column("ts").to_list()
        assert mine.get_column("close").to_list() == want.get_column("close").to_list()
        assert mine.get_column("trade_count").to_list() == want.get_column("trade_count").to_list()
        assert mine.get_column("vwap").to_list() == want.get_column("vwap").to_list()
    assert source.requests_made == 4


def test_crypto_bars_use_the_crypto_endpoint(fake: FakeAlpacaRest) -> None:
    fake.add_random_walk("BTC/USD", T0, 50, price=40_000.0)
    fake.add_random_walk("ETH/USD", T0, 30, price=2_000.0)
    fake.add_random_walk("SPY", T0, 20)

    got = _all(
        list(
            _source(fake).fetch_bars(
                ["BTC/USD", "SPY", "ETH/USD"], "1Min", T0, T0 + timedelta(hours=2)
            )
        )
    )

    crypto = fake.requests_to(CRYPTO_BARS_PATH)
    assert len(crypto) == 1
    assert crypto[0].query["symbols"] == "BTC/USD,ETH/USD"
    assert "feed" not in crypto[0].query
    assert fake.requests_to(STOCK_BARS_PATH)[0].query["symbols"] == "SPY"
    counts = dict(got.group_by("symbol").len().iter_rows())
    assert counts == {"BTC/USD": 50, "ETH/USD": 30, "SPY": 20}


def test_start_end_are_half_open(fake: FakeAlpacaRest) -> None:
    fake.add_random_walk("SPY", T0, 10)
    start, end = T0 + timedelta(minutes=2), T0 + timedelta(minutes=5)

    got = _all(list(_source(fake).fetch_bars(["SPY"], "1Min", start, end)))

    assert got.get_column("ts").to_list() == [T0 + timedelta(minutes=m) for m in (2, 3, 4)]
    sent = fake.requests_to(STOCK_BARS_PATH)[0].query
    assert datetime.fromisoformat(sent["start"]) == start
    assert datetime.fromisoformat(sent["end"]) == end  # Alpaca includes it; we drop it
    # An empty or inverted range asks nothing.
    assert list(_source(fake).fetch_bars(["SPY"], "1Min", end, start)) == []
    assert len(fake.requests_to(STOCK_BARS_PATH)) == 1


def test_feed_is_sent_and_checked(fake: FakeAlpacaRest) -> None:
    fake.add_random_walk("SPY", T0, 5)
    list(_source(fake).fetch_bars(["SPY"], "1Min", T0, T0 + timedelta(hours=1)))
    list(_source(fake, feed="sip").fetch_bars(["SPY"], "1Min", T0, T0 + timedelta(hours=1)))
    assert [r.query["feed"] for r in fake.requests_to(STOCK_BARS_PATH)] == ["iex", "sip"]
    with pytest.raises(ValueError, match="unknown Alpaca stock feed"):
        _source(fake, feed="nasdaq")
    with pytest.raises(ValueError, match="timeframe"):
        list(_source(fake).fetch_bars(["SPY"], "2Min", T0, T0 + timedelta(hours=1)))


def test_sip_without_subscription_is_an_auth_error(fake: FakeAlpacaRest) -> None:
    fake.sip_allowed = False
    with pytest.raises(AlpacaAuthError, match="subscription does not permit") as info:
        list(_source(fake, feed="sip").fetch_bars(["SPY"], "1Min", T0, T0 + timedelta(hours=1)))
    assert info.value.status == 403


def test_rate_limiter_sleeps_for_requests_beyond_the_budget(
    fake: FakeAlpacaRest,
) -> None:
    fake.page_limit = 5
    fake.add_random_walk("SPY", T0, 150)  # 30 pages -> 30 requests
    clock = FakeClock()
    source = _source(fake, clock)  # production budget: 190/min, burst 10

    began = time.monotonic()
    got = _all(list(source.fetch_bars(["SPY"], "1Min", T0, T0 + timedelta(days=1))))

    assert got.height == 150
    assert len(fake.requests_to(STOCK_BARS_PATH)) == 30
    # The first 10 go at once; each of the other 20 waits 60/190 s for its token.
    assert len(clock.sleeps) == 20
    assert sum(clock.sleeps) == pytest.approx(20 * 60 / 190, rel=1e-6)
    assert source.limiter.acquired == 30
    assert time.monotonic() - began < 5  # the waiting was simulated, not real


def test_token_bucket_refills_with_time() -> None:
    clock = FakeClock()
    bucket = TokenBucket(60, burst=3, sleep=clock.sleep, monotonic=clock.monotonic)
    assert [bucket.acquire() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.acquire() == pytest.approx(1.0)
    clock.t += 30  # idle: the bucket fills up again, but never beyond its burst
    assert [bucket.acquire() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.acquire() == pytest.approx(1.0)
    with pytest.raises(ValueError):
        TokenBucket(0)


def test_429_then_success_waits_as_long_as_alpacas_rate_limit_headers_ask(
    fake: FakeAlpacaRest,
) -> None:
    fake.add_random_walk("SPY", T0, 30)
    # Alpaca's 429 says when its window refills (X-RateLimit-Reset, Remaining 0): ~2 s here.
    fake.fail_next(STOCK_BARS_PATH, 429, times=2, reset_in=2.0)
    clock = FakeClock()

    source = _source(fake, clock)
    got = _all(list(source.fetch_bars(["SPY"], "1Min", T0, T0 + timedelta(hours=1))))

    assert got.height == 30
    assert len(fake.requests_to(STOCK_BARS_PATH)) == 3
    assert source.limiter.acquired == 3  # every retry took its own rate-limit token
    # The reset is a whole epoch second, 2 s away when sent: waited 1-3 s, not the 3 s default.
    assert len(clock.sleeps) == 2 and all(1.0 <= w <= 3.0 for w in clock.sleeps), clock.sleeps

    # A Retry-After header (a proxy's) wins over the reset.
    fake.fail_next(STOCK_BARS_PATH, 429, reset_in=30.0, retry_after="7")
    clock = FakeClock()
    _all(list(_source(fake, clock).fetch_bars(["SPY"], "1Min", T0, T0 + timedelta(hours=1))))
    assert clock.sleeps == [7.0]


def test_the_broker_does_not_block_its_minute_on_a_long_rate_limit_wait(
    fake: FakeAlpacaRest,
) -> None:
    # 60 s to the reset: more than the broker waits (5 s). One request, then a clear error
    # (the engine skips that cycle, logged); a short wait is waited and retried.
    fake.fail_next("/v2/account", 429, reset_in=60.0)
    clock = FakeClock()
    broker = _broker(fake, clock)
    with pytest.raises(
        AlpacaError, match=r"asks to wait (59|60|61) s, more than this client waits \(5 s\)"
    ) as info:
        broker.get_account()
    assert info.value.status == 429 and clock.sleeps == []
    assert len(fake.requests_to("/v2/account")) == 1
    fake.fail_next("/v2/account", 429, retry_after="2")
    assert broker.get_account().cash > 0
    assert clock.sleeps == [2.0]


def test_rate_limit_wait_reads_retry_after_and_the_reset_headers() -> None:
    now = 1_700_000_000.0
    assert rate_limit_wait({"Retry-After": "12"}, now) == 12.0
    assert rate_limit_wait({"retry-after": "Tue, 14 Nov 2023 22:13:40 GMT"}, now) == 20.0
    reset = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(now) + 42)}
    assert rate_limit_wait(reset, now) == 42.0
    assert rate_limit_wait({**reset, "X-RateLimit-Remaining": "5"}, now) is None
    assert rate_limit_wait({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "soon"}, now) is None
    assert rate_limit_wait({"Retry-After": "-3"}, now) == 0.0  # never negative
    assert rate_limit_wait({"Retry-After": "whenever"}, now) is None
    assert rate_limit_wait({}, now) is None


def test_gateway_timeout_html_is_retried(fake: FakeAlpacaRest) -> None:
    fake.add_random_walk("SPY", T0, 10)
    fake.fail_next(STOCK_BARS_PATH, 504)
    clock = FakeClock()
    source = _source(fake, clock, retry_wait_seconds=0.5)
    got = _all(list(source.fetch_bars(["SPY"], "1Min", T0, T0 + timedelta(hours=1))))
    assert got.height == 10
    assert clock.sleeps == [0.5]


def test_persistent_errors_raise_alpaca_error(fake: FakeAlpacaRest) -> None:
    fake.add_random_walk("SPY", T0, 10)
    fake.fail_next(STOCK_BARS_PATH, 500, times=100)
    with pytest.raises(AlpacaError, match="internal server error") as info:
        list(_source(fake).fetch_bars(["SPY"], "1Min", T0, T0 + timedelta(hours=1)))
    assert info.value.status == 500
    assert not isinstance(info.value, AlpacaAuthError)
    assert len(fake.requests_to(STOCK_BARS_PATH)) == 1  # 500 is not retried

    fake.clear_faults()
    fake.fail_next(STOCK_BARS_PATH, 429, times=100)
    clock = FakeClock()
    with pytest.raises(AlpacaError, match="429") as info:
        list(_source(fake, clock).fetch_bars(["SPY"], "1Min", T0, T0 + timedelta(hours=1)))
    assert info.value.status == 429
    assert len(fake.requests_to(STOCK_BARS_PATH)) == 1 + 4  # first try + 3 retries
    # Each wait until the window's reset, ~60 s away (a history backfill waits it out).
    assert len(clock.sleeps) == 3 and all(58.0 <= w <= 61.0 for w in clock.sleeps)


def test_malformed_json_is_an_alpaca_error(fake: FakeAlpacaRest) -> None:
    fake.add_random_walk("SPY", T0, 10)
    fake.malformed_json_next(STOCK_BARS_PATH)
    with pytest.raises(AlpacaError, match="not valid JSON"):
        list(_source(fake).fetch_bars(["SPY"], "1Min", T0, T0 + timedelta(hours=1)))


def test_bad_credentials_name_the_env_vars_and_never_the_secret(
    fake: FakeAlpacaRest, caplog: pytest.LogCaptureFixture
) -> None:
    fake.add_random_walk("SPY", T0, 10)
    key, secret = "wrong-key-id-for-tests", "wr0ng-s3cret-DO-NOT-PRINT"
    caplog.set_level(logging.DEBUG)
    source = _source(fake, api_key=key, secret_key=secret)

    with pytest.raises(AlpacaAuthError) as info:
        list(source.fetch_bars(["SPY"], "1Min", T0, T0 + timedelta(hours=1)))

    err = info.value
    assert err.status == 401
    text = str(err)
    assert "APCA_API_KEY_ID" in text and "APCA_API_SECRET_KEY" in text
    assert "paper" in text and "request is not authorized" in text
    chain = [text, repr(err), str(err.__cause__), caplog.text]
    assert not any(secret in t or key in t for t in chain)
    assert not fake.requests[0].authorized
    assert len(fake.requests) == 1  # 401 is not retried

    broker = _broker(fake, api_key=key, secret_key=secret)
    with pytest.raises(AlpacaAuthError, match="APCA_API_SECRET_KEY") as info2:
        broker.get_account()
    assert secret not in str(info2.value) and key not in str(info2.value)


def test_injected_401_on_good_keys(fake: FakeAlpacaRest) -> None:
    fake.fail_next("/v2/account", 401)
    broker = _broker(fake)
    with pytest.raises(AlpacaAuthError):
        broker.get_account()
    assert broker.get_account().cash == 100_000.0  # the fault was used up


def test_malformed_bars_are_quarantined_and_good_bars_kept(
    fake: FakeAlpacaRest,
) -> None:
    fake.add_random_walk("SPY", T0, 20)
    kinds = ("string_number", "string_ts", "missing_price", "not_a_dict", "missing_nvw")
    fake.malformed_bars_next(STOCK_BARS_PATH, kinds)

    frames = list(_source(fake).fetch_bars(["SPY"], "1Min", T0, T0 + timedelta(hours=1)))

    assert len(frames) == 1
    frame = frames[0]
    assert frame.height == 20
    checked = validate_bars(frame, LATER)
    q = checked.quarantine
    assert q.height == 4
    reasons = dict(
        zip(q.get_column("raw").to_list(), q.get_column("reason").to_list(), strict=True)
    )
    by_kind = {
        "string_number": next(r for raw, r in reasons.items() if '"o": "' in raw),
        "string_ts": next(r for raw, r in reasons.items() if "not-a-timestamp" in raw),
        "missing_price": next(
            r for raw, r in reasons.items() if raw.startswith("{") and '"c"' not in raw
        ),
        "not_a_dict": next(r for raw, r in reasons.items() if raw == '"garbage"'),
    }
    assert by_kind == {
        "string_number": "nan_price",  # "101.5" as a string is not trusted
        "string_ts": "missing_key",
        "missing_price": "nan_price",
        "not_a_dict": "missing_key",
    }
    assert q.get_column("detail").is_not_null().all()
    # The bar without n/vw is still a valid bar: kept, with nulls where Alpaca sent nothing.
    good = checked.good
    assert good.height == 16
    nvw = good.filter(pl.col("ts") == T0 + timedelta(minutes=4))
    assert nvw.height == 1
    assert nvw.get_column("trade_count").is_null().all()
    assert nvw.get_column("vwap").is_null().all()
    assert good.filter(pl.col("ts") > T0 + timedelta(minutes=4)).height == 15


# ---------------------------------------------------------------------------- broker


def test_account_clock_and_calendar(fake: FakeAlpacaRest) -> None:
    fake.set_now(datetime(2024, 1, 2, 15, 0, tzinfo=UTC))  # Tuesday 10:00 New York
    fake.holidays = {date(2024, 1, 1), date(2024, 1, 15)}
    fake.early_closes = {date(2024, 1, 3): datetime(2024, 1, 3, 13, 0).time()}
    broker = _broker(fake)

    account = broker.get_account()
    assert (account.cash, account.equity, account.buying_power) == (100_000.0, 100_000.0, 100_000.0)
    assert account.paper and account.currency == "USD"

    clock = broker.get_clock()
    assert clock.is_open
    assert clock.timestamp == datetime(2024, 1, 2, 15, 0, tzinfo=UTC)
    assert clock.next_close == datetime(2024, 1, 2, 21, 0, tzinfo=UTC)
    assert clock.next_open == datetime(2024, 1, 3, 14, 30, tzinfo=UTC)
    assert clock.timestamp.tzinfo is not None

    days = broker.get_calendar(date(2024, 1, 1), date(2024, 1, 16))
    assert [d.date for d in days][:3] == [date(2024, 1, 2), date(2024, 1, 3), date(2024, 1, 4)]
    assert date(2024, 1, 15) not in [d.date for d in days]  # holiday
    assert date(2024, 1, 6) not in [d.date for d in days]  # Saturday
    assert days[0].open == datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
    assert days[1].close == datetime(2024, 1, 3, 18, 0, tzinfo=UTC)  # early close 13:00 NY
    assert fake.requests_to("/v2/calendar")[0].query == {"start": "2024-01-01", "end": "2024-01-16"}


def test_market_orders_fill_and_positions_appear(fake: FakeAlpacaRest) -> None:
    fake.set_price("SPY", 500.0)
    fake.set_price("BTC/USD", 40_000.0)
    broker = _broker(fake)

    order = broker.submit_order(OrderRequest("dec-1", "SPY", "buy", 2.5))
    assert (order.client_order_id, order.symbol, order.side) == ("dec-1", "SPY", "buy")
    assert (order.qty, order.filled_qty, order.filled_avg_price) == (2.5, 2.5, 500.0)
    assert order.status == "filled" and order.submitted_at is not None

    coin = broker.submit_order(OrderRequest("dec-2", "BTC/USD", "buy", 0.01))
    assert coin.status == "filled"
    posted = fake.requests_to("/v2/orders", "POST")
    assert posted[0].body["time_in_force"] == "day"
    assert posted[1].body["time_in_force"] == "gtc"  # crypto takes no 'day'
    assert posted[0].body["client_order_id"] == "dec-1"

    positions = {p.symbol: p for p in broker.get_positions()}
    assert set(positions) == {"SPY", "BTC/USD"}  # Alpaca's "BTCUSD" mapped back
    assert positions["SPY"].qty == 2.5
    assert positions["SPY"].avg_entry_price == 500.0
    assert positions["SPY"].market_value == 1_250.0
    assert broker.get_account().cash == pytest.approx(100_000 - 1_250 - 400)


def test_duplicate_client_order_id_then_lookup_finds_the_original(
    fake: FakeAlpacaRest,
) -> None:
    broker = _broker(fake)
    first = broker.submit_order(OrderRequest("dec-7", "SPY", "buy", 1))

    with pytest.raises(DuplicateClientOrderIdError) as info:
        broker.submit_order(OrderRequest("dec-7", "SPY", "buy", 1))

    assert isinstance(info.value, AlpacaError)
    assert info.value.client_order_id == "dec-7"
    assert info.value.status == 422
    found = broker.get_order_by_client_id("dec-7")
    assert found is not None and found.id == first.id
    assert broker.get_order_by_client_id("never-sent") is None
    assert len(fake.orders) == 1
    assert broker.get_positions()[0].qty == 1


def test_retried_submit_that_landed_surfaces_as_duplicate(fake: FakeAlpacaRest) -> None:
    broker = _broker(fake)
    broker.submit_order(OrderRequest("dec-9", "SPY", "buy", 1))
    # A 504 whose order had in fact landed: the retry meets the unique client_order_id.
    fake.fail_next("/v2/orders", 504, method="POST")
    with pytest.raises(DuplicateClientOrderIdError):
        broker.submit_order(OrderRequest("dec-9", "SPY", "buy", 1))
    assert len(fake.requests_to("/v2/orders", "POST")) == 3


def test_limit_orders_list_and_cancel(fake: FakeAlpacaRest) -> None:
    fake.set_price("SPY", 500.0)
    broker = _broker(fake)

    resting = broker.submit_order(
        OrderRequest("dec-20", "SPY", "buy", 1, order_type="limit", limit_price=450.0)
    )
    assert resting.status == "new" and resting.filled_qty == 0.0
    assert fake.requests_to("/v2/orders", "POST")[0].body["limit_price"] == 450.0
    assert [o.id for o in broker.list_orders()] == [resting.id]

    broker.cancel_order(resting.id)
    assert broker.list_orders() == []
    canceled = broker.get_order_by_client_id("dec-20")
    assert canceled is not None and canceled.status == "canceled"
    assert [o.status for o in broker.list_orders("all")] == ["canceled"]

    with pytest.raises(AlpacaError) as info:
        broker.cancel_order(resting.id)  # already canceled
    assert info.value.status == 422
    with pytest.raises(ValueError, match="limit_price"):
        broker.submit_order(OrderRequest("dec-21", "SPY", "buy", 1, order_type="limit"))


def test_rejected_order_is_not_an_auth_error(fake: FakeAlpacaRest) -> None:
    fake.set_price("SPY", 500.0)
    with pytest.raises(AlpacaError, match="insufficient buying power") as info:
        _broker(fake).submit_order(OrderRequest("dec-30", "SPY", "buy", 1_000))
    assert info.value.status == 403
    assert not isinstance(info.value, AlpacaAuthError)


def test_close_all_positions_cancels_orders_and_liquidates(
    fake: FakeAlpacaRest,
) -> None:
    fake.set_price("SPY", 500.0)
    fake.set_price("ETH/USD", 2_000.0)
    broker = _broker(fake)
    broker.submit_order(OrderRequest("a", "SPY", "buy", 3))
    broker.submit_order(OrderRequest("b", "ETH/USD", "buy", 0.5))
    broker.submit_order(OrderRequest("c", "SPY", "buy", 1, order_type="limit", limit_price=1.0))

    closing = broker.close_all_positions()

    assert {(o.symbol, o.side, o.qty) for o in closing} == {
        ("SPY", "sell", 3),
        ("ETH/USD", "sell", 0.5),
    }
    assert all(o.status == "filled" for o in closing)
    assert broker.get_positions() == []
    assert broker.list_orders() == []  # the resting limit order was cancelled first
    assert fake.requests_to("/v2/positions", "DELETE")[0].query["cancel_orders"].lower() == "true"
    assert broker.get_account().cash == pytest.approx(100_000.0)


def test_live_trading_needs_an_explicit_opt_in(fake: FakeAlpacaRest) -> None:
    with pytest.raises(ValueError, match="live_opt_in=True"):
        AlpacaBroker(KEY, SECRET, paper=False)
    with pytest.raises(ValueError, match="live_opt_in"):
        AlpacaBroker(KEY, SECRET, paper=False, base_url=fake.base_url)
    live = AlpacaBroker(KEY, SECRET, paper=False, live_opt_in=True, base_url=fake.base_url)
    assert live.get_account().paper is False
    paper = AlpacaBroker(KEY, SECRET)
    assert paper.paper and paper.endpoint == "https://paper-api.alpaca.markets"
    assert live.endpoint == fake.base_url


def test_fake_pages_like_alpaca_for_alpaca_py_itself(fake: FakeAlpacaRest) -> None:
    """alpaca-py's own paging and pydantic models accept what the fake serves (desc sort too)."""
    from alpaca.common.enums import Sort
    from alpaca.data.historical.stock import StockHistoricalDataClient
    from alpaca.data.requests import StockBarsRequest
    from alpaca.data.timeframe import TimeFrame

    fake.page_limit = 10
    walk = fake.add_random_walk("SPY", T0, 40)
    client = StockHistoricalDataClient(KEY, SECRET, url_override=fake.base_url)
    req = StockBarsRequest(
        symbol_or_symbols="SPY",
        timeframe=TimeFrame.Minute,
        start=T0,
        end=T0 + timedelta(hours=1),
        limit=25,
        sort=Sort.DESC,
    )

    bars = client.get_stock_bars(req).data["SPY"]

    assert len(bars) == 25
    want = walk.sort("ts", descending=True).head(25)
    assert [b.timestamp for b in bars] == want.get_column("ts").to_list()
    assert [b.close for b in bars] == want.get_column("close").to_list()
    assert [r.query["limit"] for r in fake.requests_to(STOCK_BARS_PATH)] == ["25", "15", "5"]
