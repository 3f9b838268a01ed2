"""`crypto-trading` flow: the coin agents as one portfolio, 24/7, on the live execution path.

Each coin with a production `dqn` model gets its own engine (policy -> risk -> orders),
all sharing one account, one book and one ledger; every minute the coins' bars are
stored, read back in one query, and every coin decides before the ledger is written.
Weights: the production SVM allocator's for the day (trading/allocation.py: its panel row
for the day before, from each coin's agent), or 1/N of equity each when none is promoted.
Modes: `replay` (a stored UTC day into the simulated broker). Paper and live crypto
trading are refused with a message: they are not built yet.
"""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.logging import get_run_logger

from adapters.clock import ManualClock
from adapters.sim_broker import SimulatedBroker
from core.settings import get_settings
from flows.config import CryptoTradingConfig
from flows.live_trading import LiveTradingRefused, check_mode, load_compatible_model
from trading.allocation import coin_weights
from trading.calendar import CryptoCalendar
from trading.engine import MINUTE, Book, EngineConfig, StepwiseQ, TradingEngine
from trading.inputs import input_loader
from trading.ledger import Ledger
from trading.live import LiveRunner, store_bars
from trading.orders import OrderManager
from trading.reconcile import reconcile
from trading.risk import RiskEngine, RiskLimits
from warehouse.bars import load_bars
from warehouse.db import connect


def _newest_day(con: Any, coins: list[str]) -> date | None:
    rows = con.execute(
        "SELECT max(ts) FROM bars WHERE timeframe = '1Min' AND list_contains(?, symbol)", [coins]
    ).fetchall()
    newest = rows[0][0] if rows else None
    return None if newest is None else newest.astimezone(UTC).date()


@flow(name="crypto-trading", log_prints=True)
def crypto_trading(config: CryptoTradingConfig | None = None) -> dict[str, Any]:
    """Trade the coins that have a production agent as one portfolio (replay mode)."""
    config = config or CryptoTradingConfig()
    settings = get_settings()
    logger = get_run_logger()
    mode = config.mode or settings.mode
    check_mode(mode, settings)
    if mode != "replay":
        raise LiveTradingRefused(
            f"crypto-trading in {mode} mode is not built yet (replay only); "
            "use live-trading for SPY on the paper account"
        )
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
        day = config.replay_date or _newest_day(con, coins)
    for coin, why in skipped.items():
        logger.info("%s: not traded (%s)", coin, why)
    if not models:
        raise LiveTradingRefused(
            "no coin has a production dqn model whose features match this code; train coin "
            "agents (tradingml train --symbols BTC/USD ...) and promote them"
        )
    if day is None:
        raise LiveTradingRefused(f"no coin bars in {warehouse} to replay; run ingest-bars first")

    session = CryptoCalendar().session_at(datetime(day.year, day.month, day.day, tzinfo=UTC))
    assert session is not None
    start = session.open + timedelta(minutes=config.start_minute)
    digest = hashlib.sha256(config.model_dump_json().encode()).hexdigest()[:8]
    run_id = f"{mode}-crypto-{day}-{digest}"
    account = f"replay:{run_id}"
    clock = ManualClock(start)
    sim = SimulatedBroker(
        clock,
        cash=config.cash,
        fee_bps=config.fee_bps,
        slippage_bps=config.slippage_bps,
        id_prefix=f"sim:{run_id}",
    )
    ledger = Ledger(warehouse, mode=mode, outbox=settings.data_dir / "outbox")
    book = Book(cash=config.cash)  # one account: every coin's engine sizes from its equity
    with connect(warehouse) as con:
        weights, weights_from = coin_weights(con, models, session.open)
    weight = 1.0 / len(models)
    runners: dict[str, LiveRunner] = {}
    for coin, (row, policy) in sorted(models.items()):
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
            ),
            StepwiseQ(policy),
            sim,
            RiskEngine(RiskLimits(**config.risk.model_dump())),
            OrderManager(sim),
            ledger,
            book,
            sim.new_fills,
        )
        runners[coin] = LiveRunner(
            engine,
            policy.spec,
            session,
            warehouse,
            sim,
            ledger,
            inputs=input_loader(policy.spec, row.get("params") or {}),
        )
        runners[coin].start(start)
    symbols = sorted({s for r in runners.values() for s in r.spec.symbols})
    logger.info(
        "replaying UTC day %s for %d coin agent(s); weights from %s: %s",
        day,
        len(runners),
        weights_from,
        ", ".join(f"{c} {100 * w:.1f}%" for c, w in sorted(weights.items())),
    )
    all_decided_ms: list[float] = []
    decided = 0
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
                reconcile(book, sim, ledger, account=account, run_id=run_id, now=clock.now())
            if config.max_minutes is not None and decided >= config.max_minutes:
                break
        for r in runners.values():
            r.engine.sync_fills()
            r.con = None
        ledger.flush(con)
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


if __name__ == "__main__":
    crypto_trading()
