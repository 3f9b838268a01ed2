"""`crypto-trading` flow: the coin agents as one portfolio, 24/7, on the live execution path.

Each coin with a production `dqn` model gets its own engine (policy -> risk -> orders),
all sharing one account, one book and one ledger; every minute the coins' bars are
stored, read back in one query, and every coin decides before the ledger is written.
Weights: the production SVM allocator's for the day (trading/allocation.py: its panel row
for the day before, from each coin's agent), or 1/N of equity each when none is promoted.
Modes: `replay` (a stored UTC day into the simulated broker), `paper` (Alpaca's paper
account: the coins' bars from the crypto websocket stream, orders through the REST API,
until 00:00 UTC or max_minutes) and `live` (the same with real money; refused without
TRADINGML_LIVE_TRADING_OPT_IN). One paper/live crypto run at a time (a lock of our own).
"""

from __future__ import annotations

import hashlib
import threading
import time
from contextlib import ExitStack
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.logging import get_run_logger

from adapters.clock import ManualClock
from adapters.protocols import BarStream, Broker, Clock, TradeUpdates
from adapters.sim_broker import SimulatedBroker
from core.settings import get_settings
from flows.alerts import alerting
from flows.config import CryptoTradingConfig
from flows.live_trading import (
    LIVE_LOCK_TIMEOUT_S,
    Arrivals,
    LiveTradingRefused,
    StreamThread,
    check_mode,
    follow_stream_health,
    load_compatible_model,
    on_broker_time,
    require_replay_bars,
    stored_calendar,
    symbol_costs,
)
from flows.session_view import SessionView
from trading.account_risk import AccountRisk
from trading.allocation import coin_weights
from trading.calendar import CryptoCalendar
from trading.engine import MINUTE, Book, EngineConfig, StepwiseQ, TradingEngine
from trading.inputs import input_loader
from trading.ledger import Ledger
from trading.live import BarStore, LiveRunner, day_start_equity, run_lock, store_bars
from trading.orders import OrderManager
from trading.reconcile import (
    OrderFillPoller,
    StreamedFills,
    TrackedOrderManager,
    reconcile,
    recover_orders,
    session_client_ids,
    warehouse_positions,
)
from trading.risk import KILL_SWITCH_FILE, RiskEngine, RiskLimits
from warehouse.bars import load_bars
from warehouse.db import WarehouseLockedError, connect


def _newest_day(con: Any, coins: list[str]) -> date | None:
    rows = con.execute(
        "SELECT max(ts) FROM bars WHERE timeframe = '1Min' AND list_contains(?, symbol)", [coins]
    ).fetchall()
    newest = rows[0][0] if rows else None
    return None if newest is None else newest.astimezone(UTC).date()


@flow(name="crypto-trading", log_prints=True)
def crypto_trading(config: CryptoTradingConfig | None = None) -> dict[str, Any]:
    """Trade the coins that have a production agent as one portfolio (replay, paper or live).

    Its alerts (kill switch, stale stream, reconciliation difference, refused start) are
    Prefect events (flows.alerts)."""
    config = config or CryptoTradingConfig()
    with alerting("crypto", LiveTradingRefused):
        return _crypto_trading(config)


def _crypto_trading(config: CryptoTradingConfig) -> dict[str, Any]:
    settings = get_settings()
    logger = get_run_logger()
    mode = config.mode or settings.mode
    check_mode(mode, settings)
    warehouse = Path(config.warehouse) if config.warehouse else settings.warehouse_path
    coins = list(config.coins or settings.coin_symbols)
    models: dict[str, tuple[dict[str, Any], Any]] = {}
    skipped: dict[str, str] = {}
    with connect(warehouse) as con:
        for coin in coins:
            try:
                models[coin] = load_compatible_model(con, coin, None)
            except LiveTradingRefused as err:
                skipped[coin] = str(err)
        newest = _newest_day(con, coins)
    for coin, why in skipped.items():
        logger.info("%s: not traded (%s)", coin, why)
    if not models:
        raise LiveTradingRefused(
            "no coin has a production dqn model whose features match this code; train coin "
            "agents (tradingml train --symbols BTC/USD ...) and promote them"
        )

    # The simulated broker's costs in a replay; the session view's benchmark costs in any mode.
    costs, asset_class = symbol_costs(
        warehouse, sorted(models), config.fee_bps, config.slippage_bps
    )
    logger.info("%s: %s", ", ".join(sorted(models)), costs.describe(asset_class))
    sim: SimulatedBroker | None = None
    stream: BarStream | None = None
    updates: TradeUpdates | None = None
    broker: Broker
    clock: Clock
    if mode == "replay":
        day = config.replay_date or newest
        if day is None:
            raise LiveTradingRefused(
                f"no coin bars in {warehouse} to replay; run ingest-bars first"
            )
        session = CryptoCalendar().session_at(datetime(day.year, day.month, day.day, tzinfo=UTC))
        assert session is not None
        start = session.open + timedelta(minutes=config.start_minute)
        require_replay_bars(warehouse, sorted(models), "1Min", session, start)
        digest = hashlib.sha256(config.model_dump_json().encode()).hexdigest()[:8]
        run_id = f"{mode}-crypto-{day}-{digest}"
        account = f"replay:{run_id}"
        clock = ManualClock(start)
        sim = SimulatedBroker(
            clock,
            cash=config.cash,
            fee_bps=costs.fee_bps,
            slippage_bps=costs.slippage_bps,
            sell_fee_bps=costs.sell_fee_bps,
            id_prefix=f"sim:{run_id}",
        )
        broker = sim
    else:
        from flows.wiring import build_adapters

        adapters = build_adapters(settings.model_copy(update={"mode": mode}))
        assert adapters.broker is not None and adapters.stream is not None
        broker, stream, updates = adapters.broker, adapters.stream, adapters.trade_updates
        clock = on_broker_time(adapters.clock, broker, config.max_clock_offset_s, stream)
        start = clock.now()
        session = CryptoCalendar().session_at(start)
        assert session is not None
        day = session.day
        # A restart on the same day with the same models continues the same run (the same
        # decision and client order ids: nothing decided before is ordered again).
        digest = hashlib.sha256(
            "|".join(f"{c}={r['model_id']}" for c, (r, _) in sorted(models.items())).encode()
        ).hexdigest()[:8]
        run_id = f"{mode}-crypto-{day}-{digest}"
        account = mode

    ledger = Ledger(
        warehouse,
        mode=mode,
        outbox=settings.data_dir / "outbox",
        lock_timeout_s=None if sim is not None else LIVE_LOCK_TIMEOUT_S,
    )
    poller: OrderFillPoller | None = None
    if sim is not None:
        book = Book(cash=config.cash)  # one account: every coin's engine sizes from its equity
    else:
        with connect(warehouse) as con:
            ours = warehouse_positions(con, run_id=None, mode=mode)
        book = Book(cash=broker.get_account().cash, qty=ours)
    with connect(warehouse) as con:
        weights, weights_from = coin_weights(con, models, session.open)
    weight = 1.0 / len(models)
    runners: dict[str, LiveRunner] = {}
    if sim is None:
        # One poller for the account: a fill is handed out once, to whichever coin's engine
        # syncs first, and booked once in the shared book.
        poller = OrderFillPoller(
            broker, lambda: [c for r in runners.values() for c in r.engine.open_orders]
        )
    # Fills as they happen from the trade-updates stream; the poller is the fallback.
    account_fills: Any = (
        poller if updates is None or poller is None else StreamedFills(poller, updates)
    )
    for coin, (row, policy) in sorted(models.items()):
        fills: Any
        orders: OrderManager
        if sim is not None:
            fills, orders = sim.new_fills, OrderManager(sim)
        else:
            assert poller is not None
            fills, orders = account_fills, TrackedOrderManager(broker, poller, sleep=clock.sleep)
        engine = TradingEngine(
            EngineConfig(
                run_id=run_id,
                mode=mode,
                account=account,
                symbol=coin,
                model_id=str(row["model_id"]),
                feature_names=tuple(policy.spec.names()),
                allocation=weights[coin],
                fractional=True,
                flatten_before_close_min=config.flatten_before_close_min,
                allow_short=config.risk.allow_short,
            ),
            StepwiseQ(policy),
            broker,
            RiskEngine(
                RiskLimits(**config.risk.limits()),
                kill_file=settings.data_dir / KILL_SWITCH_FILE,
                alert_as=coin,
            ),
            orders,
            ledger,
            book,
            fills,
            seen_via="sim" if sim is not None else "rest",
        )
        runners[coin] = LiveRunner(
            engine,
            policy.spec,
            session,
            warehouse,
            broker,
            ledger,
            inputs=input_loader(policy.spec, row.get("params") or {}),
            calendar=stored_calendar(warehouse, coin),
        )
    if sim is None:
        assert poller is not None
        # A run killed between the broker's accept and the ledger's flush: record what the
        # broker has of this run's orders (nothing is resent) before reconciling.
        with connect(warehouse) as con:
            for coin, r in runners.items():
                recover_orders(
                    r.engine,
                    poller,
                    broker,
                    con,
                    candidates=session_client_ids(run_id, coin, session.open, clock.now()),
                    now=clock.now(),
                )
        found = reconcile(book, broker, ledger, account=account, run_id=run_id, now=clock.now())
        if found:
            logger.warning(
                "reconciliation at start: %d difference(s); the broker's view adopted", found
            )
    for r in runners.values():
        r.start(start)
    with connect(warehouse) as con:
        started = day_start_equity(con, account, session)
    if started is not None:
        # A restart: the daily loss limit counts from the day's start, not from now.
        for r in runners.values():
            r.engine.risk.resume_day(session.day, started)
    symbols = sorted({s for r in runners.values() for s in r.spec.symbols})
    logger.info(
        "%s: UTC day %s for %d coin agent(s); weights from %s: %s",
        mode,
        day,
        len(runners),
        weights_from,
        ", ".join(f"{c} {100 * w:.1f}%" for c, w in sorted(weights.items())),
    )
    # The whole account's limits, checked every minute beside each coin's own (one account,
    # several flows); not in a replay, whose simulated account is its own.
    guard = AccountRisk(account, run_id, warehouse, LIVE_LOCK_TIMEOUT_S, enabled=sim is None)
    guard.tick(broker, [r.engine.risk for r in runners.values()], clock.now())
    view = SessionView(
        lambda: connect(warehouse, timeout_s=LIVE_LOCK_TIMEOUT_S),
        run_id=run_id,
        account=account,
        symbols=sorted(runners),
        session=session,
        title=f"crypto {mode} {day}: {len(runners)} coin agent(s)",
        fee_bps=costs.fee_bps,
        slippage_bps=costs.slippage_bps,
        every_s=config.view_every_s,
    )
    if sim is not None:
        assert isinstance(clock, ManualClock)
        decided, all_decided_ms = _replay(
            config, runners, sim, clock, warehouse, symbols, session, ledger, book, run_id, view,
            guard,
        )  # fmt: skip
    else:
        assert stream is not None
        with run_lock(settings.data_dir / "crypto-trading.lock"):
            if updates is not None:
                updates.start()
            try:
                decided, all_decided_ms = _stream(
                    config, runners, stream, clock, warehouse, symbols, session, ledger,
                    broker, book, run_id, account, view, guard,
                )  # fmt: skip
            finally:
                if updates is not None:
                    updates.stop()
    ledger.flush()  # locked: the rows wait in the outbox for the next write, not lost
    with connect(warehouse) as con:
        ledger.flush(con)
        view.tick(clock.now(), con, final=True)
        per_coin = con.execute(
            "SELECT symbol, count(*), count(*) FILTER (WHERE action = 'long') FROM decisions"
            " WHERE run_id = ? GROUP BY symbol ORDER BY symbol",
            [run_id],
        ).fetchall()
        n_orders = con.execute(
            "SELECT count(*) FROM orders o JOIN decisions d USING (decision_id) WHERE d.run_id = ?",
            [run_id],
        ).fetchall()[0][0]
    lat = np.array(all_decided_ms) if all_decided_ms else np.array([0.0])
    summary = {
        "status": "traded",
        "mode": mode,
        "run_id": run_id,
        "account": account,
        "day": str(day),
        "coins": sorted(runners),
        "skipped": sorted(skipped),
        "weight_each": weight,
        "weights": weights,
        "weights_from": weights_from,
        "minutes": decided,
        "decisions": {str(s): int(n) for s, n, _ in per_coin},
        "orders": int(n_orders),
        "equity": book.equity(),
        "all_coins_decided_p50_ms": float(np.percentile(lat, 50)),
        "all_coins_decided_p99_ms": float(np.percentile(lat, 99)),
    }
    create_markdown_artifact(
        key="crypto-trading-session",
        markdown="\n".join(
            [
                f"# crypto {mode} {day}: {len(runners)} coin agents, weights from {weights_from}",
                "",
                "| coin | decisions | long decisions |",
                "|---|---:|---:|",
                *(f"| {s} | {n} | {lg} |" for s, n, lg in per_coin),
                "",
                f"orders {n_orders}, final equity {book.equity():,.2f}; all coins decided "
                f"within {summary['all_coins_decided_p50_ms']:.1f} ms of a bar (p50)",
            ]
        ),
    )
    logger.info(
        "crypto %s %s: %d minutes, %d orders, equity %.2f",
        mode,
        day,
        decided,
        n_orders,
        book.equity(),
    )
    return summary


def _replay(
    config: CryptoTradingConfig,
    runners: dict[str, LiveRunner],
    sim: SimulatedBroker,
    clock: ManualClock,
    warehouse: Path,
    symbols: list[str],
    session: Any,
    ledger: Ledger,
    book: Book,
    run_id: str,
    view: SessionView,
    guard: AccountRisk,
) -> tuple[int, list[float]]:
    """A stored UTC day, minute by minute: store, fill, read back once, every coin decides."""
    all_decided_ms: list[float] = []
    decided = 0
    start = clock.now()
    with connect(warehouse) as con:
        bars = load_bars(con, symbols, "1Min", start - MINUTE, session.close)
        for r in runners.values():
            r.con = con
        for (minute,), frame in bars.group_by(["ts"], maintain_order=True):
            assert isinstance(minute, datetime)
            arrived = time.perf_counter()
            clock.set(minute + MINUTE)
            store_bars(warehouse, frame, clock.now(), con)
            for sym, open_, close in frame.select("symbol", "open", "close").iter_rows():
                if sym in runners:
                    sim.on_bar(str(sym), minute, float(open_), float(close))
            fresh = load_bars(con, symbols, "1Min", minute, minute + MINUTE)
            acted = [
                r.on_bar_stored(clock.now(), arrived=arrived, fresh=fresh, flush=False)
                for r in runners.values()
            ]
            if any(a is not None for a in acted):
                all_decided_ms.append((time.perf_counter() - arrived) * 1000)
                decided += 1
            ledger.flush(con)
            if decided and decided % config.reconcile_every_min == 0:
                next(iter(runners.values())).engine.sync_fills()
                reconcile(
                    book, sim, ledger, account=f"replay:{run_id}", run_id=run_id, now=clock.now()
                )
            guard.tick(sim, [r.engine.risk for r in runners.values()], clock.now(), con)
            view.tick(clock.now(), con)
            if config.max_minutes is not None and decided >= config.max_minutes:
                break
        for r in runners.values():
            r.engine.sync_fills()
            r.con = None
    return decided, all_decided_ms


def _stream(
    config: CryptoTradingConfig,
    runners: dict[str, LiveRunner],
    stream: BarStream,
    clock: Clock,
    warehouse: Path,
    symbols: list[str],
    session: Any,
    ledger: Ledger,
    broker: Broker,
    book: Book,
    run_id: str,
    account: str,
    view: SessionView,
    guard: AccountRisk,
) -> tuple[int, list[float]]:
    """Paper/live: the stream thread stores the coins' bars; this thread decides every minute.

    A coin with no trade in a minute has no bar for it (Alpaca sends none): after a short
    wait the coins that have one decide, the others skip that minute.
    """
    logger = get_run_logger()
    arrivals = Arrivals()
    turn = threading.Lock()  # DuckDB: the stream's writes and the decisions take turns
    traded = sorted(runners)

    # Bars validated and stored by the handler, kept in memory for the decisions; with the
    # warehouse held by another process they go to the outbox and trading goes on.
    store = BarStore(warehouse, outbox=ledger.outbox, lock_timeout_s=LIVE_LOCK_TIMEOUT_S)

    async def handler(frame: Any) -> None:
        with turn:
            store.store(frame, clock.now())
        arrivals.stored(frame)

    stream.subscribe(symbols, handler)

    def decide(arrived: float) -> bool:
        with turn, ExitStack() as stack:
            try:
                con = stack.enter_context(connect(warehouse, timeout_s=LIVE_LOCK_TIMEOUT_S))
            except WarehouseLockedError as err:
                logger.warning("warehouse locked (%s): deciding from the bars in memory", err)
                con = None
            follow_stream_health(stream, [r.engine.risk for r in runners.values()])
            for r in runners.values():
                r.con = con
                r.lock_timeout_s = LIVE_LOCK_TIMEOUT_S if con is not None else 0.0
            try:
                now = clock.now()
                minute = now.replace(second=0, microsecond=0) - MINUTE
                for r in runners.values():
                    r.engine.sync_fills()
                fresh = store.recent.get(minute)
                if fresh is None and con is not None:
                    fresh = load_bars(con, symbols, "1Min", minute, minute + MINUTE)
                acted = [
                    r.on_bar_stored(now, arrived=arrived, fresh=fresh, flush=False)
                    for r in runners.values()
                ]
                ledger.flush(con) if con is not None else ledger.flush()
            finally:
                for r in runners.values():
                    r.con = None
        return any(a is not None for a in acted)

    running = StreamThread(stream, "crypto-bar-stream")
    decided = 0
    all_decided_ms: list[float] = []
    try:
        # The warm-up stopped before the bar that closed at the last boundary (stored
        # already): decide it first, so that the features see every bar of the day once.
        arrived = time.perf_counter()
        if decide(arrived):
            decided += 1
            all_decided_ms.append((time.perf_counter() - arrived) * 1000)
        while clock.now() < session.close:
            if config.max_minutes is not None and decided >= config.max_minutes:
                break
            running.raise_if_stopped()
            now = clock.now()
            boundary = now.replace(second=0, microsecond=0) + MINUTE
            # Alpaca sends minute m's bars just after m+1:00; give them a few seconds.
            clock.sleep(max(0.0, (boundary - now).total_seconds()) + 3.0)
            for _ in range(5):
                if all(arrivals.wait_for(c, boundary - MINUTE, 0.0) for c in traded):
                    break
                arrivals.wait_for(traded[0], boundary - MINUTE, 1.0)
            arrived = time.perf_counter()
            if decide(arrived):
                decided += 1
                all_decided_ms.append((time.perf_counter() - arrived) * 1000)
            if decided and decided % config.reconcile_every_min == 0:
                # Fills first (one not booked yet would look like a difference); while an
                # order is open the broker's positions can move between reads: later.
                for r in runners.values():
                    r.engine.sync_fills()
                if not any(r.engine.open_orders for r in runners.values()):
                    reconcile(book, broker, ledger, account=account, run_id=run_id, now=clock.now())
            with turn:
                guard.tick(broker, [r.engine.risk for r in runners.values()], clock.now())
                view.tick(clock.now())
        for r in runners.values():
            r.engine.sync_fills()
    finally:
        running.stop()
    if running.error is not None:
        logger.warning("bar stream ended with: %s", running.error)
    return decided, all_decided_ms


if __name__ == "__main__":
    crypto_trading()
