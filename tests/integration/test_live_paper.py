"""The live-trading flow in paper mode, end to end: alpaca-py's real clients against the fake Alpaca.

Nothing in the paper path is patched but its clock. build_adapters builds the real
AlpacaBroker (trading REST) and AlpacaBarStream (msgpack websocket), pointed at the fakes
on 127.0.0.1 by the settings' environment variables; `flows.wiring.INJECTED.clock` hands
it a MarketClock: a ManualClock whose sleep() is the market moving on. Each minute
boundary it crosses, the fake stream sends the bars of the minute that just closed (all
symbols in one frame, as Alpaca does) and the fake broker's prices and time follow; so a
session of minutes runs in seconds. The warehouse is a copy of test_trading_flows' (three
weeks of synthetic bars, a promoted SPY agent made to trade) without the bars from the
start minute on: every decision after the first must come from a streamed bar.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from adapters.alpaca import AlpacaBroker
from adapters.clock import ManualClock
from adapters.protocols import OrderRequest
from core.configs import LiveTradingConfig
from core.settings import get_settings
from flows import wiring
from flows.live_trading import live_trading, symbol_costs
from flows.session_view import artifact_key
from tests.fakes.alpaca import FakeAlpacaRest, fake_alpaca_rest  # noqa: F401
from tests.fakes.alpaca_stream import FakeAlpacaStreamServer, bar_messages
from tests.integration.test_trading_flows import (
    DAY,
    NY,
    SYMBOLS,
    Shared,
    ledger_counts,
    query,
    shared,  # noqa: F401
)
from trading.orders import client_order_id
from trading.session_report import session_standing
from warehouse.account_risk import save_account_limits
from warehouse.bars import load_bars
from warehouse.db import connect

pytestmark = [pytest.mark.prefect, pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

KEY, SECRET = "fake-key-id", "fake-secret-key"  # what both fakes accept
MINUTE = timedelta(minutes=1)
# 42 minutes into the 1 July session, where the agent flips often: the warehouse holds the
# bars of 09:30-10:11, the stream sends those from 10:12 on.
OPEN = datetime(2024, 7, 1, 9, 30, tzinfo=NY).astimezone(UTC)
STREAM_FROM = OPEN + timedelta(minutes=42)
START = STREAM_FROM + timedelta(seconds=20)
MINUTES = 6
BY_HAND = "bought-by-hand"


class MarketClock(ManualClock):
    """A ManualClock whose sleep() moves the fake market along with it.

    For every minute boundary a sleep crosses, the bars of the minute that closed there
    go out on the fake stream in one frame (after the client has subscribed) and become
    the fake broker's fill prices; the fake broker's clock is kept at this one's time.
    Bars that closed before the start only set the prices.
    """

    symbols: tuple[str, ...] = tuple(SYMBOLS)
    path = "/v2/iex"  # the stream the bars go out on

    def __init__(
        self,
        start: datetime,
        bars: pl.DataFrame,
        stream: FakeAlpacaStreamServer,
        rest: FakeAlpacaRest,
    ) -> None:
        super().__init__(start)
        self.by_minute: dict[datetime, pl.DataFrame] = {
            minute: frame for (minute,), frame in bars.group_by(["ts"], maintain_order=True)
        }
        self.stream = stream
        self.rest = rest
        self.published: list[datetime] = []
        rest.set_now(start)
        for bar in bars.filter(pl.col("ts") + MINUTE <= self.now()).iter_rows(named=True):
            rest.set_price(bar["symbol"], bar["close"])

    def sleep(self, seconds: float) -> None:
        before = self.now()
        super().sleep(seconds)
        self.rest.set_now(self.now())
        boundary = before.replace(second=0, microsecond=0) + MINUTE
        while boundary <= self.now():
            self._publish(boundary - MINUTE)
            boundary += MINUTE

    def _publish(self, minute: datetime) -> None:
        frame = self.by_minute.get(minute)
        if frame is None:
            return
        for symbol in self.symbols:
            self.stream.wait_subscribed(symbol, self.path, timeout=10.0)
        for bar in frame.iter_rows(named=True):
            self.rest.set_price(bar["symbol"], bar["close"])
        assert self.stream.push_raw(bar_messages(frame), path=self.path) == 1
        self.published.append(minute)


@dataclass
class Market:
    """The fakes, the paper warehouse, and the bars the stream will send."""

    rest: FakeAlpacaRest
    ws: FakeAlpacaStreamServer
    warehouse: Path
    bars: pl.DataFrame
    clocks: list[MarketClock] = field(default_factory=list)

    def clock(self, start: datetime) -> MarketClock:
        made = MarketClock(start, self.bars, self.ws, self.rest)
        self.clocks.append(made)
        return made


@pytest.fixture
def market(
    shared: Shared,  # noqa: F811
    fake_alpaca_rest: FakeAlpacaRest,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Market]:
    warehouse = tmp_path / "paper.duckdb"
    shutil.copy(shared.warehouse, warehouse)
    with connect(warehouse) as con:
        bars = load_bars(con, SYMBOLS, "1Min", STREAM_FROM - MINUTE, STREAM_FROM + 30 * MINUTE)
        con.execute("DELETE FROM bars WHERE ts >= ?", [STREAM_FROM])
    assert bars.filter(pl.col("ts") == STREAM_FROM)["symbol"].sort().to_list() == sorted(SYMBOLS)
    with FakeAlpacaStreamServer(KEY, SECRET) as ws:
        monkeypatch.setenv("APCA_API_KEY_ID", KEY)
        monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET)
        monkeypatch.setenv("TRADINGML_ALPACA_BASE_URL", fake_alpaca_rest.base_url)
        monkeypatch.setenv("TRADINGML_ALPACA_STREAM_URL", f"ws://127.0.0.1:{ws.port}")
        monkeypatch.setenv("TRADINGML_DATA_DIR", str(tmp_path / "data"))
        monkeypatch.delenv("TRADINGML_MODE", raising=False)
        get_settings.cache_clear()  # the module's fixture has read settings before these
        made = Market(fake_alpaca_rest, ws, warehouse, bars)
        monkeypatch.setattr(wiring.INJECTED, "clock", lambda: made.clocks[-1])
        yield made


def paper(market: Market, **kw: Any) -> LiveTradingConfig:
    return LiveTradingConfig(mode="paper", warehouse=str(market.warehouse), **kw)


def test_a_paper_session_streams_decides_orders_and_books_fills_through_alpaca(
    shared: Shared,  # noqa: F811
    market: Market,
) -> None:
    rest, ws = market.rest, market.ws
    # A position the platform never traded: bought by hand on the paper account.
    by_hand = AlpacaBroker(KEY, SECRET, base_url=rest.base_url).submit_order(
        OrderRequest(client_order_id=BY_HAND, symbol="QQQ", side="buy", qty=7)
    )
    assert by_hand.status == "filled"
    clock = market.clock(START)

    # view_every_s tiny: the UI's session view refreshes after every minute of this test.
    result = live_trading(
        paper(market, max_minutes=MINUTES, reconcile_every_min=2, view_every_s=1e-3)
    )

    assert result["status"] == "traded" and result["mode"] == "paper"
    assert result["account"] == "paper" and result["session"] == str(DAY)
    assert result["model_id"] == shared.model_id and result["decisions"] == MINUTES
    run_id = result["run_id"]

    # The bar that closed before the start (stored) first, then one streamed bar a minute.
    streamed = [STREAM_FROM + i * MINUTE for i in range(MINUTES - 1)]
    assert clock.published == streamed
    stored = query(
        market.warehouse,
        "SELECT ts, count(*) FROM bars WHERE source = 'alpaca' GROUP BY ts ORDER BY ts",
    )
    assert stored == [(ts, len(SYMBOLS)) for ts in streamed]
    assert ws.subscriptions and set(ws.subscriptions[0][1]["bars"]) == set(SYMBOLS)

    decisions = query(
        market.warehouse,
        "SELECT decision_id, ts, mode, model_id, action, risk_verdict, q_values FROM decisions"
        " WHERE run_id = ? ORDER BY ts",
        [run_id],
    )
    assert [d[1] for d in decisions] == [STREAM_FROM + i * MINUTE for i in range(MINUTES)]
    assert {(d[2], d[3]) for d in decisions} == {("paper", shared.model_id)}
    # Bar for bar, the paper run decided what a replay of the same minutes decides: the
    # streamed bars are the stored ones, and the policy saw every bar of the session once.
    start_minute = int((STREAM_FROM - OPEN).total_seconds() // 60)
    replay = live_trading(shared.replay(start_minute=start_minute, max_minutes=MINUTES))
    replayed = query(
        shared.warehouse,
        "SELECT ts, action, risk_verdict, q_values FROM decisions WHERE run_id = ? ORDER BY ts",
        [replay["run_id"]],
    )
    assert [d[1:3] for d in replayed] == [d[4:6] for d in decisions]
    assert [d[0] for d in replayed] == [d[1] for d in decisions]
    for (_, *_, q_replay), (*_, q_paper) in zip(replayed, decisions, strict=True):
        assert q_paper == pytest.approx(q_replay, rel=1e-6, abs=1e-5)

    # Orders went out through the real AlpacaBroker under the ledger's client order ids.
    ours = [o for o in rest.orders if o["client_order_id"] != BY_HAND]
    assert ours, "the agent placed no order in these minutes: nothing to check"
    assert len(ours) == replay["orders"] == result["orders"]
    ledger_orders = query(
        market.warehouse,
        "SELECT o.client_order_id, o.broker_order_id, o.decision_id, o.side, o.qty, o.status"
        " FROM orders o JOIN decisions d USING (decision_id) WHERE d.run_id = ?"
        " ORDER BY o.submitted_at",
        [run_id],
    )
    assert [(o[0], o[1], o[3], o[4]) for o in ledger_orders] == [
        (o["client_order_id"], o["id"], o["side"], float(o["qty"])) for o in ours
    ]
    assert all(cid == client_order_id(did) for cid, _, did, *_ in ledger_orders)
    assert {o[5] for o in ledger_orders} == {o["status"] for o in ours} == {"filled"}

    # Every fill in the warehouse is one of the fake's executions, read over REST, once.
    fills = query(
        market.warehouse,
        "SELECT fill_id, broker_order_id, client_order_id, side, qty, price, seen_via, mode"
        " FROM fills ORDER BY ts, fill_id",
    )
    assert len({f[0] for f in fills}) == len(fills) == len(ours)
    by_order = {f[1]: f for f in fills}
    for order in ours:
        fill = by_order[order["id"]]
        assert fill[2:] == (
            order["client_order_id"],
            order["side"],
            float(order["filled_qty"]),
            pytest.approx(float(order["filled_avg_price"])),
            "rest",
            "paper",
        )
    held = sum(f[4] if f[3] == "buy" else -f[4] for f in fills)
    assert held == rest.positions.get("SPY", 0.0)

    # At the start, the hand-bought position was adopted and recorded; the periodic
    # reconciliations after that found the book and the broker in agreement.
    events = query(
        market.warehouse,
        "SELECT symbol, kind, warehouse_qty, broker_qty, action FROM reconciliation_events"
        " WHERE account = 'paper' ORDER BY ts",
    )
    assert events == [("QQQ", "position_mismatch", 0.0, 7.0, "adopted_broker")]

    # While it ran, the Prefect UI showed it: a progress bar, and a table of the last
    # decisions and orders under the position and the equity beside buy-and-hold.
    progress, tables = session_artifacts(run_id)
    assert [a.type for a in progress] == ["progress"] and progress[0].data == 100.0
    # After each minute (the first decided at the start, as a replay's first), and at the end.
    assert len(tables) == MINUTES + 1
    latest = tables[-1]
    rows = latest.data if isinstance(latest.data, list) else json.loads(str(latest.data))
    assert [r["time (UTC)"] for r in rows[:2]] == [
        f"{STREAM_FROM + i * MINUTE:%H:%M}" for i in (MINUTES - 1, MINUTES - 2)
    ]
    ordered = [r for r in rows if r["order"]]
    assert len(ordered) == len(ours) and all("(filled)" in r["order"] for r in ordered)
    description = str(latest.description)
    assert (f"position: SPY {held:g}" if held else "position: none") in description
    costs, _ = symbol_costs(market.warehouse, ["SPY"], None, None)  # as the flow chose them
    with connect(market.warehouse) as con:
        standing = session_standing(
            con,
            run_id=run_id,
            account="paper",
            symbols=["SPY"],
            start=OPEN,
            end=OPEN + timedelta(hours=7),
            fee_bps=costs.fee_bps,
            slippage_bps=costs.slippage_bps,
        )
    assert f"equity {standing['equity']:,.2f}" in description
    assert f"beside buy-and-hold of SPY {standing['buy_and_hold']:,.2f}" in description


def session_artifacts(run_id: str) -> tuple[list[Any], list[Any]]:
    """The session view's progress artifact and its table's versions (oldest first)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    key = artifact_key(run_id)
    with get_client(sync_client=True) as client:
        found = {
            k: client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[k])),
                sort=ArtifactSort.CREATED_DESC,
            )[::-1]
            for k in (f"{key}-progress", key)
        }
    # The test session's Prefect database may hold an earlier run of the same session (the
    # same key): this run's are those of the flow run that made the newest progress artifact.
    progress = found[f"{key}-progress"][-1:]
    this_run = progress[0].flow_run_id if progress else None
    return progress, [a for a in found[key] if a.flow_run_id == this_run]


def test_paper_mode_on_a_saturday_is_closed_and_orders_nothing(market: Market) -> None:
    market.clock(datetime(2024, 7, 6, 11, 0, tzinfo=NY))
    before = ledger_counts(market.warehouse)

    result = live_trading(paper(market, max_minutes=MINUTES))

    assert result["status"] == "closed"
    assert datetime.fromisoformat(result["next_open"]) == datetime(2024, 7, 8, 13, 30, tzinfo=UTC)
    assert market.rest.orders == []
    assert market.rest.requests_to("/v2/orders", "POST") == []
    assert market.ws.connection_count == 0
    assert ledger_counts(market.warehouse) == before


def test_a_stream_that_refuses_the_keys_stops_the_session_with_its_reason(
    market: Market,
) -> None:
    market.ws.reject_auth = True
    market.clock(START)

    with pytest.raises(RuntimeError, match="the bar stream stopped: Alpaca rejected the API keys"):
        live_trading(paper(market, max_minutes=MINUTES))
    # Only the bar already stored before the start was decided (at most one order); nothing
    # after the stream failed.
    with connect(market.warehouse) as con:
        decided = con.execute("SELECT count(*) FROM decisions WHERE mode = 'paper'").fetchall()
    assert decided == [(1,)]
    assert len(market.rest.requests_to("/v2/orders", "POST")) <= 1


def test_the_accounts_limits_stop_this_flow_for_what_another_flow_holds(
    market: Market,
) -> None:
    # crypto-trading holds 1 BTC on the same paper account (~60% of its equity); the account's
    # exposure limit, stored in the warehouse for every flow on it, is 0.5x equity.
    market.rest.set_price("BTC/USD", 60_000.0)
    AlpacaBroker(KEY, SECRET, base_url=market.rest.base_url).submit_order(
        OrderRequest(client_order_id="crypto-flow-btc", symbol="BTC/USD", side="buy", qty=1.0)
    )
    with connect(market.warehouse) as con:
        save_account_limits(con, "paper", 0.05, 0.5, datetime.now(UTC))
    market.clock(START)

    result = live_trading(paper(market, max_minutes=3))

    assert result["status"] == "traded" and result["orders"] == 0
    rows = query(
        market.warehouse,
        "SELECT action, risk_verdict, risk_reason FROM decisions WHERE run_id = ? ORDER BY ts",
        [result["run_id"]],
    )
    assert len(rows) == 3
    # Whatever the agent wanted, nothing that adds risk went out, and each refusal says why.
    refused = [reason for _, verdict, reason in rows if verdict == "rejected"]
    assert refused, rows
    for reason in refused:
        assert "reduce-only: account exposure" in reason
        assert "(all flows on the account)" in reason
    assert [o for o in market.rest.orders if o["symbol"] == "SPY"] == []


class StreamedMarketClock(MarketClock):
    """MarketClock that, before the market moves on, waits until the session's trade-updates
    client has received every fill event the fake broker sent: the next minute's fill sync
    then meets them in the stream's queue (deterministic, where real time would race)."""

    clients: list[Any]
    """The session's trade-updates clients (set by the test)."""

    def sleep(self, seconds: float) -> None:
        sent = self.rest.trade_updates_sent
        deadline = time.monotonic() + 10.0
        clients = getattr(self, "clients", [])
        while clients and clients[-1].received < sent:
            assert time.monotonic() < deadline, "the trade-updates stream delivered nothing"
            time.sleep(0.005)
        super().sleep(seconds)


def test_a_paper_session_books_fills_from_the_trade_updates_stream_and_polls_for_lost_ones(
    market: Market, monkeypatch: pytest.MonkeyPatch
) -> None:
    import adapters.alpaca_trade_updates as module

    clients: list[module.AlpacaTradeUpdates] = []

    class Recorded(module.AlpacaTradeUpdates):
        def __init__(self, *args: Any, **kw: Any) -> None:
            super().__init__(*args, **kw)
            clients.append(self)

    monkeypatch.setattr(module, "AlpacaTradeUpdates", Recorded)
    market.rest.trade_stream = market.ws  # fills go out on the trade_updates channel too
    market.rest.lose_trade_updates = 1  # ...except the first: the stream misses it
    clock = StreamedMarketClock(START, market.bars, market.ws, market.rest)
    clock.clients = clients
    market.clocks.append(clock)

    result = live_trading(paper(market, max_minutes=MINUTES))

    assert result["orders"] >= 2, "too few orders to see both routes"
    [client] = clients
    assert market.rest.trade_updates_sent == result["orders"] - 1  # the first one was lost
    # ...and every other reached the client (the last one may come after the session ended).
    assert client.received >= market.rest.trade_updates_sent - 1
    fills = query(
        market.warehouse,
        "SELECT f.fill_id, f.seen_via, o.submitted_at FROM fills f"
        " JOIN orders o USING (client_order_id) JOIN decisions d USING (decision_id)"
        " WHERE d.run_id = ? ORDER BY o.submitted_at",
        [result["run_id"]],
    )
    # Every order's fill booked once; the one the stream lost came from the poll, the
    # others from the stream (the last one may be polled first: nothing waits after it).
    assert len(fills) == len({f[0] for f in fills}) == result["orders"]
    routes = [f[1] for f in fills]
    assert routes[0] == "rest"
    assert routes[1:-1] == ["stream"] * (len(routes) - 2) and routes[-1] in ("stream", "rest")
    # No drift: the book agrees with the broker.
    held = sum(
        q if side == "buy" else -q
        for side, q in query(market.warehouse, "SELECT side, qty FROM fills WHERE mode = 'paper'")
    )
    assert held == market.rest.positions.get("SPY", 0.0)
