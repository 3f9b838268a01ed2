"""live-trading (SPY) and crypto-trading (coins) at once, in paper mode, on ONE Alpaca account
and ONE warehouse (issue 18, item 5).

Both flows run in threads of this process against one FakeAlpacaRest (one account: one cash
balance, one set of positions) and one FakeAlpacaStreamServer (the stock bars on /v2/iex,
the coins' on the crypto path), each on its own market clock (test_live_paper's MarketClock
on the stock stream, the same on the coins' stream) handed out by
`flows.wiring.INJECTED.clock` to the thread that asks. The two clocks move in step, minute by
minute (MarketTime), as the wall clock moves two real flows: within a minute both decide,
order and reconcile at once, in whatever order their threads get there. The warehouse is
test_trading_flows' (SPY and its inputs, a promoted SPY agent made to trade on DAY) with two
coins' bars and tiny promoted coin agents added, without the bars from the stream's start
on: every decision after the first is made on a streamed bar.

What this checks: each flow orders only its own symbols, every order is in the ledger once,
the warehouse's fills add up to the broker's positions, and neither flow takes the other's
positions (or the cash they moved) for a reconciliation difference -- what each did before
the reconciliation learnt to tell another flow's positions apart (issue 18). And the
account's limits, stored once, hold both flows to what they hold together.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import duckdb
import polars as pl
import pytest

from adapters.protocols import Clock
from core.configs import (
    CryptoTradingConfig,
    IngestBarsConfig,
    LiveTradingConfig,
    TrainAgentConfig,
    utc_midnight,
)
from core.settings import get_settings
from flows import wiring
from flows.crypto_trading import crypto_trading
from flows.ingest_bars import ingest_bars
from flows.live_trading import live_trading
from flows.train_agent import train_agent
from tests.fakes.alpaca import FakeAlpacaRest, fake_alpaca_rest  # noqa: F401
from tests.fakes.alpaca_stream import FakeAlpacaStreamServer
from tests.integration.test_crypto_trading import CoinMarketClock
from tests.integration.test_live_paper import MarketClock
from tests.integration.test_trading_flows import (
    BARS_END,
    BARS_START,
    DAY,
    NY,
    SYMBOLS,
    TRAIN_END,
    Shared,
    make_it_trade,
    query,
    shared,  # noqa: F401
)
from trading.alerts import Alert, collected
from trading.orders import client_order_id
from trading.reconcile import warehouse_positions
from warehouse.account_risk import save_account_limits
from warehouse.bars import load_bars
from warehouse.db import _is_lock_conflict, connect
from warehouse.registry import load_model_row, promote

pytestmark = [pytest.mark.prefect, pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

KEY, SECRET = "fake-key-id", "fake-secret-key"  # what both fakes accept
MINUTE = timedelta(minutes=1)
COINS = ["BTC/USD", "ETH/USD"]
# 10:12 New York on Monday 1 July: SPY's session is open, the coins trade around the clock.
STREAM_FROM = datetime(2024, 7, 1, 10, 12, tzinfo=NY).astimezone(UTC)
START = STREAM_FROM + timedelta(seconds=20)
MINUTES = 5
SPY_FLOW, COIN_FLOW = "spy-flow", "coin-flow"


@dataclass(frozen=True)
class Both:
    """One warehouse with a promoted SPY agent and promoted coin agents, all made to trade on DAY."""

    warehouse: Path
    spy_model: str
    coin_models: dict[str, str]


@pytest.fixture(scope="module")
def both(shared: Shared, tmp_path_factory: pytest.TempPathFactory) -> Both:  # noqa: F811
    tmp = tmp_path_factory.mktemp("two-flows")
    warehouse = tmp / "warehouse.duckdb"
    shutil.copy(shared.warehouse, warehouse)
    ingested = ingest_bars(
        IngestBarsConfig(
            source="synthetic",
            symbols=COINS,
            start=BARS_START,
            end=BARS_END,
            warehouse=str(warehouse),
        )
    )
    assert ingested["quarantined"] == {} and ingested["inserted"] > 0
    with connect(warehouse) as con:
        day_bars = load_bars(
            con, COINS, "1Min", utc_midnight(DAY), utc_midnight(DAY + timedelta(days=1))
        )
    models: dict[str, str] = {}
    for coin in COINS:
        trained = train_agent(
            TrainAgentConfig(
                symbols=[coin],
                train_start=BARS_START,
                train_end=TRAIN_END,
                test_start=TRAIN_END,
                test_end=DAY,
                cycles=4,
                seeds=[1],
                architecture={"fast_hidden": 8, "slow_hidden": 4, "head_hidden": 8},
                params={"batch_sessions": 2, "train_every": 2},
                checkpoint_every=4,
                warehouse=str(warehouse),
                models_dir=str(tmp / "models"),
            )
        )
        (models[coin],) = trained["models"]
        with connect(warehouse) as con:
            row = load_model_row(con, models[coin])
        assert row is not None
        # Q re-centred on DAY (a UTC day for a coin), so that the agent flips with the features.
        make_it_trade(warehouse, row, day_bars, tmp / "trading" / coin.replace("/", "-"))
        with connect(warehouse) as con:
            assert promote(con, models[coin], datetime(2024, 6, 30, tzinfo=UTC)) is None
    return Both(warehouse, shared.model_id, models)


class MarketTime:
    """One market time for both flows' clocks, as the wall clock is for two real flows.

    Each clock moves on when its flow sleeps; a clock crossing into a minute waits (in real
    time, bounded) until the other flow's clock has got there too, so neither flow runs
    ahead of the other by more than the minute at hand: within a minute the two decide,
    order and reconcile at once, in whatever order their threads get there. The fake
    broker's clock is the earliest of theirs: each flow compares its clock with the
    broker's once at its start (GET /v2/clock) and finds it at its own start time. A
    finished flow's clock no longer holds the other back.
    """

    def __init__(self, rest: FakeAlpacaRest, wait_s: float = 120.0) -> None:
        self.rest = rest
        self.wait_s = wait_s
        self._at: dict[str, datetime] = {}
        self._changed = threading.Condition()

    def view(self, name: str) -> FakeAlpacaRest:
        """What one flow's MarketClock takes for the fake broker: its times go through here."""
        return cast(FakeAlpacaRest, _ClockView(self, name))

    def set(self, name: str, when: datetime) -> None:
        with self._changed:
            self._at[name] = when
            self.rest.set_now(min(self._at.values()))
            self._changed.notify_all()

    def reach(self, name: str, when: datetime) -> None:
        """`name`'s clock goes to `when` once every other clock is there too."""
        self.set(name, when)
        with self._changed:
            caught_up = self._changed.wait_for(
                lambda: all(t >= when for n, t in self._at.items() if n != name), self.wait_s
            )
        assert caught_up, f"{name} waited {self.wait_s:g} s for the other flow's clock"

    def retire(self, name: str) -> None:
        with self._changed:
            self._at.pop(name, None)
            if self._at:
                self.rest.set_now(min(self._at.values()))
            self._changed.notify_all()


class _ClockView:
    def __init__(self, time: MarketTime, name: str) -> None:
        self._time, self._name = time, name

    def set_now(self, when: datetime) -> None:
        self._time.set(self._name, when)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._time.rest, attr)  # set_price and the rest: the one fake


class InStep(MarketClock):
    """test_live_paper's MarketClock (SPY and its inputs on the stock stream), moving on only
    with the other flow's clock (MarketTime.reach)."""

    def __init__(
        self,
        name: str,
        time: MarketTime,
        start: datetime,
        bars: pl.DataFrame,
        stream: FakeAlpacaStreamServer,
    ) -> None:
        self.name, self.time = name, time
        super().__init__(start, bars, stream, time.view(name))

    def sleep(self, seconds: float) -> None:
        self.time.reach(self.name, self.now() + timedelta(seconds=seconds))
        super().sleep(seconds)


class CoinsInStep(InStep):
    """The same on the crypto stream, for the coins (test_crypto_trading's CoinMarketClock)."""

    symbols = CoinMarketClock.symbols
    path = CoinMarketClock.path


@dataclass
class Account:
    """The shared paper account (fakes), the warehouse, and each flow's market clock."""

    rest: FakeAlpacaRest
    ws: FakeAlpacaStreamServer
    warehouse: Path
    time: MarketTime
    clocks: dict[str, InStep]
    asked: dict[str, int]
    """How often each flow's thread asked INJECTED.clock for its clock."""

    def clock_for_this_thread(self) -> Clock:
        name = threading.current_thread().name
        assert name in self.clocks, f"INJECTED.clock called from thread {name!r}, not a flow's"
        self.asked[name] = self.asked.get(name, 0) + 1
        return self.clocks[name]

    def run_both(
        self, spy: LiveTradingConfig, coins: CryptoTradingConfig, timeout_s: float = 180.0
    ) -> tuple[dict[str, Any], dict[str, Any], list[Alert]]:
        """Both flows at once, each in its own thread; their results and every alert sent."""
        results: dict[str, dict[str, Any]] = {}
        errors: dict[str, BaseException] = {}

        def target(name: str, flow: Callable[[Any], dict[str, Any]], config: Any) -> None:
            try:
                results[name] = flow(config)
            except BaseException as err:  # noqa: BLE001 -- re-raised in the test's thread
                errors[name] = err
            finally:
                self.time.retire(name)

        threads = [
            threading.Thread(target=target, name=name, args=(name, flow, config), daemon=True)
            for name, flow, config in (
                (SPY_FLOW, live_trading, spy),
                (COIN_FLOW, crypto_trading, coins),
            )
        ]
        with collected() as alerts:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout_s)
        stuck = [t.name for t in threads if t.is_alive()]
        assert not stuck, f"still running after {timeout_s:.0f} s: {stuck}"
        for name, err in errors.items():
            raise AssertionError(f"the {name} thread failed: {err!r}") from err
        assert self.asked == {SPY_FLOW: 1, COIN_FLOW: 1}
        return results[SPY_FLOW], results[COIN_FLOW], list(alerts)


@pytest.fixture
def account(
    both: Both,
    fake_alpaca_rest: FakeAlpacaRest,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Account]:
    warehouse = tmp_path / "paper.duckdb"
    shutil.copy(both.warehouse, warehouse)
    with connect(warehouse) as con:
        spy_bars = load_bars(con, SYMBOLS, "1Min", STREAM_FROM - MINUTE, STREAM_FROM + 30 * MINUTE)
        coin_bars = load_bars(con, COINS, "1Min", STREAM_FROM - MINUTE, STREAM_FROM + 30 * MINUTE)
        con.execute("DELETE FROM bars WHERE ts >= ?", [STREAM_FROM])
    for bars, symbols in ((spy_bars, SYMBOLS), (coin_bars, COINS)):
        first = bars.filter(pl.col("ts") == STREAM_FROM)["symbol"].sort().to_list()
        assert first == sorted(symbols)
    with FakeAlpacaStreamServer(KEY, SECRET) as ws:
        monkeypatch.setenv("APCA_API_KEY_ID", KEY)
        monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET)
        monkeypatch.setenv("TRADINGML_ALPACA_BASE_URL", fake_alpaca_rest.base_url)
        monkeypatch.setenv("TRADINGML_ALPACA_STREAM_URL", f"ws://127.0.0.1:{ws.port}")
        monkeypatch.setenv("TRADINGML_DATA_DIR", str(tmp_path / "data"))
        monkeypatch.delenv("TRADINGML_MODE", raising=False)
        get_settings.cache_clear()  # the module's fixtures have read settings before these
        time = MarketTime(fake_alpaca_rest)
        clocks = {
            SPY_FLOW: InStep(SPY_FLOW, time, START, spy_bars, ws),
            COIN_FLOW: CoinsInStep(COIN_FLOW, time, START, coin_bars, ws),
        }
        made = Account(fake_alpaca_rest, ws, warehouse, time, clocks, {})
        monkeypatch.setattr(wiring.INJECTED, "clock", made.clock_for_this_thread)
        monkeypatch.setattr("warehouse.db._is_lock_conflict", lock_conflict_in_one_process)
        yield made


def lock_conflict_in_one_process(exc: BaseException) -> bool:
    """What warehouse.db retries on opening the file: another process's lock, or here -- two
    flows in threads of one process, where in production each runs in a process of its own
    (the local work pool) -- DuckDB's answer to an open racing another thread's open or close
    of the same file, which two processes never meet (they wait on the file lock instead)."""
    return _is_lock_conflict(exc) or (
        isinstance(exc, duckdb.Error) and "Unique file handle conflict" in str(exc)
    )


def configs(
    account: Account, minutes: int = MINUTES
) -> tuple[LiveTradingConfig, CryptoTradingConfig]:
    spy = LiveTradingConfig(
        mode="paper",
        max_minutes=minutes,
        reconcile_every_min=2,
        warehouse=str(account.warehouse),
    )
    coins = CryptoTradingConfig(
        coins=COINS,
        mode="paper",
        max_minutes=minutes,
        reconcile_every_min=2,
        flatten_before_close_min=0,
        warehouse=str(account.warehouse),
    )
    return spy, coins


def run_orders(warehouse: Path, run_id: str) -> list[tuple[Any, ...]]:
    """(client_order_id, symbol, side, qty, status, decision_id) of every order of a run."""
    return query(
        warehouse,
        "SELECT o.client_order_id, o.symbol, o.side, o.qty, o.status, o.decision_id FROM orders o"
        " JOIN decisions d USING (decision_id) WHERE d.run_id = ? ORDER BY o.submitted_at",
        [run_id],
    )


def assert_no_cross_talk(
    account: Account, spy: dict[str, Any], coins: dict[str, Any], alerts: list[Alert]
) -> None:
    """Neither flow took the other's positions, or the cash they moved, for a difference with
    the broker (the account held nothing the two flows did not trade)."""
    events = query(
        account.warehouse,
        "SELECT symbol, kind, warehouse_qty, broker_qty, event_id FROM reconciliation_events"
        " WHERE account = 'paper' ORDER BY ts",
    )
    theirs = {spy["run_id"]: set(COINS), coins["run_id"]: {"SPY"}}
    cross_talk = [
        e
        for e in events
        if e[0] is None
        or any(e[4].startswith(f"{run}|") and e[0] in of for run, of in theirs.items())
    ]
    assert cross_talk == [], "a flow recorded the other flow's positions or cash as differences"
    differences = [a.message for a in alerts if a.event == "reconcile.difference"]
    assert differences == []
    assert events == []


def test_spy_and_coins_trade_at_once_on_one_account_without_cross_talk(
    both: Both, account: Account
) -> None:
    rest = account.rest
    spy, coins = configs(account)

    spy_result, coin_result, alerts = account.run_both(spy, coins)

    assert spy_result["status"] == coin_result["status"] == "traded"
    # What this issue fixed: neither flow takes the other's trading for a difference.
    assert_no_cross_talk(account, spy_result, coin_result, alerts)
    assert spy_result["account"] == coin_result["account"] == "paper"
    assert spy_result["model_id"] == both.spy_model
    assert coin_result["coins"] == COINS and coin_result["weight_each"] == 0.5
    coin_models = query(
        account.warehouse,
        "SELECT symbol, any_value(model_id) FROM decisions WHERE run_id = ? GROUP BY symbol",
        [coin_result["run_id"]],
    )
    assert dict(coin_models) == both.coin_models
    assert spy_result["decisions"] == MINUTES
    assert coin_result["decisions"] == {coin: MINUTES for coin in COINS}
    # Each market streamed its own bars (the minute before the start was stored).
    for clock in account.clocks.values():
        assert clock.published == [STREAM_FROM + i * MINUTE for i in range(MINUTES - 1)]

    # Both flows traded, each only its own symbols, under the ledger's client order ids.
    spy_orders = run_orders(account.warehouse, spy_result["run_id"])
    coin_orders = run_orders(account.warehouse, coin_result["run_id"])
    assert spy_orders, "the SPY agent placed no order in these minutes: nothing to check"
    assert coin_orders, "the coin agents placed no order in these minutes: nothing to check"
    assert {o[1] for o in spy_orders} == {"SPY"}
    assert {o[1] for o in coin_orders} <= set(COINS)
    assert len(spy_orders) == spy_result["orders"]
    assert len(coin_orders) == coin_result["orders"]
    for cid, *_, did in spy_orders + coin_orders:
        assert cid == client_order_id(did)

    # Every order at the broker is one of theirs, once, with the ledger's side, quantity and
    # status. The account's cash is one for both: an order it could not pay for was refused
    # (403, insufficient buying power), is in the ledger as rejected and not at the broker.
    at_broker = {o["client_order_id"]: o for o in rest.orders}
    assert len(at_broker) == len(rest.orders)
    ledger = {o[0]: o for o in spy_orders + coin_orders}
    assert len(ledger) == len(spy_orders) + len(coin_orders)
    assert at_broker.keys() <= ledger.keys()
    for cid, order in at_broker.items():
        assert (order["symbol"], order["side"], float(order["qty"]), order["status"]) == ledger[
            cid
        ][1:5]
    assert {ledger[cid][4] for cid in ledger.keys() - at_broker.keys()} <= {"rejected"}
    for orders in (spy_orders, coin_orders):
        assert any(o[0] in at_broker and o[4] == "filled" for o in orders), orders

    # No drift: the account's fills in the warehouse add up to the broker's positions.
    with connect(account.warehouse) as con:
        held = warehouse_positions(con, run_id=None, mode="paper")
        fills = con.execute("SELECT count(*), count(DISTINCT fill_id) FROM fills").fetchall()[0]
    assert fills[0] == fills[1] == sum(1 for o in rest.orders if o["status"] == "filled")
    broker = {s: q for s, q in rest.positions.items() if abs(q) > 1e-12}
    assert held.keys() == broker.keys()
    for symbol, qty in broker.items():
        assert held[symbol] == pytest.approx(qty, abs=1e-9), symbol


def test_the_accounts_exposure_limit_holds_both_flows_to_what_they_hold_together(
    account: Account,
) -> None:
    # 0.3x equity for the whole account, stored once and read by both flows every minute:
    # either agent going long (SPY with all of its equity, each coin with half) passes it.
    with connect(account.warehouse) as con:
        save_account_limits(con, "paper", 0.5, 0.3, datetime.now(UTC))
    spy, coins = configs(account)

    spy_result, coin_result, alerts = account.run_both(spy, coins)

    assert spy_result["status"] == coin_result["status"] == "traded"
    assert_no_cross_talk(account, spy_result, coin_result, alerts)
    refusals = query(
        account.warehouse,
        "SELECT d.run_id, d.ts, d.risk_reason, o.client_order_id FROM decisions d"
        " LEFT JOIN orders o USING (decision_id)"
        " WHERE d.run_id IN (?, ?) AND d.risk_verdict = 'rejected'"
        " AND d.risk_reason LIKE '%account exposure%' ORDER BY d.ts",
        [spy_result["run_id"], coin_result["run_id"]],
    )
    assert refusals, "neither flow was held back by the account's exposure"
    for _, _, reason, sent in refusals:
        assert sent is None  # nothing went out for a refused decision
        assert reason.startswith("reduce-only: account exposure ")
        assert "(all flows on the account)" in reason
        cited = float(reason.removeprefix("reduce-only: account exposure ").split("x", 1)[0])
        assert cited > 0.3
    # The limit counts what the other flow holds: a flow holding nothing itself was refused.
    held_then = [
        query(
            account.warehouse,
            "SELECT coalesce(max(abs(net)), 0) FROM (SELECT f.symbol,"
            " sum(CASE f.side WHEN 'buy' THEN f.qty ELSE -f.qty END) AS net"
            " FROM fills f JOIN orders o USING (client_order_id)"
            " JOIN decisions d ON d.decision_id = o.decision_id"
            " WHERE d.run_id = ? AND f.ts < ? GROUP BY f.symbol)",
            [run_id, ts + MINUTE],  # the fills of its decisions before this one
        )[0][0]
        for run_id, ts, _, _ in refusals
    ]
    assert any(abs(q) < 1e-12 for q in held_then), list(zip(refusals, held_then, strict=True))
