"""Fills by stream (issue 18, item 2): alpaca-py's TradingStream against the fake trade_updates
channel, booked through the REST poller's bookkeeping -- once, whichever route sees it first."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from adapters.alpaca import AlpacaBroker
from adapters.alpaca_trade_updates import AlpacaTradeUpdates
from adapters.protocols import OrderRequest
from tests.fakes.alpaca import FakeAlpacaRest, fake_alpaca_rest  # noqa: F401
from tests.fakes.alpaca_stream import TRADING_PATH, FakeAlpacaStreamServer
from trading.reconcile import OrderFillPoller, StreamedFills

KEY, SECRET = "fake-key-id", "fake-secret-key"


def wait_for(predicate: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@pytest.fixture
def wired(
    fake_alpaca_rest: FakeAlpacaRest,  # noqa: F811
) -> Iterator[tuple[FakeAlpacaRest, FakeAlpacaStreamServer, AlpacaBroker, AlpacaTradeUpdates]]:
    with FakeAlpacaStreamServer(KEY, SECRET) as ws:
        fake_alpaca_rest.trade_stream = ws
        fake_alpaca_rest.set_price("SPY", 500.0)
        broker = AlpacaBroker(KEY, SECRET, base_url=fake_alpaca_rest.base_url)
        updates = AlpacaTradeUpdates(KEY, SECRET, url=ws.url(TRADING_PATH)).start()
        try:
            wait_for(lambda: ws.listening_for_trade_updates() == 1, "the stream to listen")
            yield fake_alpaca_rest, ws, broker, updates
        finally:
            updates.stop()


def test_the_stream_authenticates_listens_and_delivers_each_fill(
    wired: tuple[FakeAlpacaRest, FakeAlpacaStreamServer, AlpacaBroker, AlpacaTradeUpdates],
) -> None:
    _, ws, broker, updates = wired
    assert [(a.path, a.accepted) for a in ws.auth_attempts] == [(TRADING_PATH, True)]
    assert ws.listens == [{"action": "listen", "data": {"streams": ["trade_updates"]}}]
    assert ws.subscriptions == []  # market-data subscriptions are another channel
    placed = broker.submit_order(OrderRequest("cid-1", "SPY", "buy", 10))
    wait_for(lambda: updates.received == 1, "the fill event")
    [(order, when)] = updates.drain()
    assert (order.id, order.client_order_id, order.status) == (placed.id, "cid-1", "filled")
    assert (order.filled_qty, order.filled_avg_price) == (10.0, 500.0)
    assert when is not None and when.tzinfo is not None
    assert updates.drain() == []


def test_a_fill_is_booked_once_by_the_stream_and_never_again_by_the_poll(
    wired: tuple[FakeAlpacaRest, FakeAlpacaStreamServer, AlpacaBroker, AlpacaTradeUpdates],
) -> None:
    rest, _, broker, updates = wired
    watched: list[str] = []
    poller = OrderFillPoller(broker, lambda: watched)
    fills = StreamedFills(poller, updates)

    broker.submit_order(OrderRequest("cid-1", "SPY", "buy", 10))
    watched.append("cid-1")  # still open as far as the engine knows: the poller asks too
    wait_for(lambda: updates.received == 1, "the fill event")
    first = fills()
    assert [(f.client_order_id, f.qty, f.extra["seen_via"]) for f in first] == [
        ("cid-1", 10.0, "stream")
    ]
    assert fills() == []  # the poll sees the same state: nothing new

    # An event the stream lost (a drop, a reconnect): the poll books it.
    rest.lose_trade_updates = 1
    broker.submit_order(OrderRequest("cid-2", "SPY", "sell", 4))
    watched.append("cid-2")
    lost = fills()
    assert [(f.client_order_id, f.qty, f.extra["seen_via"]) for f in lost] == [
        ("cid-2", 4.0, "rest")
    ]
    # An event sent twice (replayed after a reconnect), arriving after the poll booked it.
    rest.repeat_trade_updates = True
    broker.submit_order(OrderRequest("cid-3", "SPY", "buy", 6))
    watched.append("cid-3")
    wait_for(lambda: updates.received == 3, "both copies of the fill event")
    again = fills()
    assert [(f.client_order_id, f.qty, f.extra["seen_via"]) for f in again] == [
        ("cid-3", 6.0, "stream")
    ]
    assert fills() == []
    # One fill id per order state, the same one the poller would have given it.
    ids = [f.fill_id for f in first + lost + again]
    assert len(set(ids)) == 3 and all(":" in i for i in ids)
    assert (fills.streamed, fills.polled) == (2, 1)


def test_after_a_dropped_connection_the_stream_reconnects_and_delivers_again(
    wired: tuple[FakeAlpacaRest, FakeAlpacaStreamServer, AlpacaBroker, AlpacaTradeUpdates],
) -> None:
    _, ws, broker, updates = wired
    assert ws.drop_connections() >= 1
    # alpaca-py's own backoff (1 s at first), then auth and listen again.
    wait_for(
        lambda: ws.listening_for_trade_updates() == 1 and ws.connection_count >= 2, "a reconnect"
    )
    broker.submit_order(OrderRequest("cid-9", "SPY", "buy", 1))
    wait_for(lambda: updates.received == 1, "the fill event on the new connection")
    assert [o.client_order_id for o, _ in updates.drain()] == ["cid-9"]


def test_a_malformed_event_is_skipped_and_the_next_one_delivered(
    wired: tuple[FakeAlpacaRest, FakeAlpacaStreamServer, AlpacaBroker, AlpacaTradeUpdates],
) -> None:
    _, ws, broker, updates = wired
    ws.push_trade_update("fill", {"id": "x", "symbol": "SPY"})  # no side, no quantities
    wait_for(lambda: updates.received == 1, "the malformed event")
    assert updates.malformed == 1 and updates.drain() == []
    broker.submit_order(OrderRequest("cid-5", "SPY", "buy", 2))
    wait_for(lambda: updates.received == 2, "the next event")
    assert [o.client_order_id for o, _ in updates.drain()] == ["cid-5"]


def test_another_flows_fill_on_the_same_account_is_not_booked_by_this_one(
    wired: tuple[FakeAlpacaRest, FakeAlpacaStreamServer, AlpacaBroker, AlpacaTradeUpdates],
) -> None:
    _, _, broker, updates = wired
    watched: list[str] = []
    fills = StreamedFills(OrderFillPoller(broker, lambda: watched), updates)
    # crypto-trading's order on the shared account: its fill is on this stream too.
    broker.submit_order(OrderRequest("crypto-flow-1", "SPY", "buy", 3))
    broker.submit_order(OrderRequest("ours-1", "SPY", "buy", 5))
    watched.append("ours-1")
    wait_for(lambda: updates.received == 2, "both fill events")
    booked = fills()
    assert [(f.client_order_id, f.extra["seen_via"]) for f in booked] == [("ours-1", "stream")]
    assert fills.foreign == 1
