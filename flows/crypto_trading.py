"""`crypto-trading` flow: the coin agents as one portfolio, 24/7, on the live execution path.

Each coin with a production `dqn` model gets its own engine (policy -> risk -> orders),
all sharing one account, one book and one ledger; every minute the coins' bars are
stored, read back in one query, and every coin decides before the ledger is written.
Weights: the production SVM allocator's for the day (trading/allocation.py: its panel row
for the day before, from each coin's agent), or 1/N of equity each when none is promoted.
Modes: `replay` (a stored UTC day into the simulated broker), `paper` (Alpaca's paper
account: the coins' bars from the crypto websocket stream, orders through the REST API,
until 00:00 UTC or max_minutes) and `live` (the same with real money; refused without
TRADINGML_LIVE_TRADING_OPT_IN). One crypto-trading run at a time (a lock of our own).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, date
from pathlib import Path
from typing import Any

import numpy as np
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from core.configs import CryptoTradingConfig, config_json
from core.settings import Mode, Settings, get_settings
from flows.alerts import alerting
from flows.live_trading import check_session, session_plan
from flows.session_view import SessionView
from flows.wiring import MarketClosed, SessionRequest
from models.env import Costs
from models.registry import AgentPolicy
from tasks.trading import load_models, open_session, trade_session
from trading.allocation import coin_weights
from trading.live import run_lock
from trading.session import Traded, TradingSession
from trading.session_start import (
    LiveTradingRefused,
    check_mode,
    symbol_costs,
)
from warehouse.bars import newest_bar_ts
from warehouse.db import connect
from warehouse.trade_history import run_decisions_by_symbol, run_order_count

COIN_WAIT_S = 5.0
"""paper/live: how long after a minute boundary (+3 s) the decisions wait for every coin's
bar; a coin with no trade that minute has none (Alpaca sends none) and skips it."""


def _newest_day(con: Any, coins: list[str]) -> date | None:
    newest = newest_bar_ts(con, coins, "1Min")
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
    models, skipped = load_models(warehouse, coins, skip_refused=True)
    with connect(warehouse) as con:
        newest = _newest_day(con, coins)
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
    request = _request(config, mode, models, costs, newest, warehouse, settings)
    run = check_session(request, settings, logger)
    assert not isinstance(run, MarketClosed), "the coins' market never closes"
    session, day = run.session, run.session.day
    with connect(warehouse) as con:
        weights, weights_from = coin_weights(con, models, session.open)
    plan = session_plan(run, config, settings)
    view = SessionView.of_plan(
        plan,
        sorted(models),
        f"crypto {mode} {day}: {len(models)} coin agent(s)",
        costs,
        config.view_every_s,
    )
    trading = TradingSession(
        plan,
        [
            Traded(coin, str(row["model_id"]), policy, row.get("params") or {}, weights[coin])
            for coin, (row, policy) in models.items()
        ],
        run.adapters,
        view=view,
        logger=logger,
    )
    with run_lock(settings.data_dir / "crypto-trading.lock"):
        open_session(trading)
        logger.info(
            "%s: UTC day %s for %d coin agent(s); weights from %s: %s",
            mode,
            day,
            len(trading.runners),
            weights_from,
            ", ".join(f"{c} {100 * w:.1f}%" for c, w in sorted(weights.items())),
        )
        result = trade_session(trading)
    return report_crypto_session(
        trading, result.decided, result.decided_ms, day, skipped, weights, weights_from
    )


def _request(
    config: CryptoTradingConfig,
    mode: Mode,
    models: dict[str, tuple[dict[str, Any], AgentPolicy]],
    costs: Costs,
    newest: date | None,
    warehouse: Path,
    settings: Settings,
) -> SessionRequest:
    """The session the coins' run asks for: every coin's agent on one account, one minute loop."""
    symbols = sorted({s for _, policy in models.values() for s in policy.spec.symbols})
    return SessionRequest(
        mode=mode,
        label="crypto",
        calendar_symbol=sorted(models)[0],
        traded=sorted(models),
        symbols=symbols,
        timeframe="1Min",
        warehouse=warehouse,
        outbox=settings.data_dir / "outbox",
        # A restart on the same day with the same models continues the same run (the
        # same decision and client order ids: nothing decided before is ordered again).
        key=hashlib.sha256(
            "|".join(f"{c}={r['model_id']}" for c, (r, _) in sorted(models.items())).encode()
        ).hexdigest()[:8],
        config_digest=hashlib.sha256(config_json(config).encode()).hexdigest()[:8],
        replay_day=config.replay_date or newest,
        costs=costs,
        start_minute=config.start_minute,
        cash=config.cash,
        account_rules=config.account_rules,
        max_clock_offset_s=config.max_clock_offset_s,
        bar_wait_s=COIN_WAIT_S,
        stream_name="crypto-bar-stream",
    )


@task(name="report-session", cache_policy=NO_CACHE)
def report_crypto_session(
    trading: TradingSession,
    decided: int,
    decided_ms: list[float],
    day: date,
    skipped: dict[str, str],
    weights: dict[str, float],
    weights_from: str,
) -> dict[str, Any]:
    """The run's counts and its Prefect artifact."""
    plan, book = trading.plan, trading.book
    with connect(plan.warehouse) as con:
        per_coin = run_decisions_by_symbol(con, plan.run_id)
        n_orders = run_order_count(con, plan.run_id)
    lat = np.array(decided_ms) if decided_ms else np.array([0.0])
    coins = sorted(trading.runners)
    summary = {
        "status": "traded",
        "mode": plan.mode,
        "run_id": plan.run_id,
        "account": plan.account,
        "day": str(day),
        "coins": coins,
        "skipped": sorted(skipped),
        "weight_each": 1.0 / len(coins),
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
                f"# crypto {plan.mode} {day}: {len(coins)} coin agents, weights from "
                f"{weights_from}",
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
    get_run_logger().info(
        "crypto %s %s: %d minutes, %d orders, equity %.2f",
        plan.mode,
        day,
        decided,
        n_orders,
        book.equity(),
    )
    return summary


if __name__ == "__main__":
    crypto_trading()
