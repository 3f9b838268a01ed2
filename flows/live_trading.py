"""`live-trading` flow: one market session of the production agent, replayed, on paper, or live.

Modes (settings.mode, or the config's `mode`): replay -- a stored session replayed from the
warehouse into the simulated broker (the offline default); paper -- Alpaca's paper
account; live -- real money, refused unless TRADINGML_LIVE_TRADING_OPT_IN=true.
Outside a session it logs when the next one opens and exits. Every bar, decision,
order, fill, equity point and reconciliation difference lands in the warehouse.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, date, timedelta
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from core.configs import CryptoTradingConfig, LiveTradingConfig, config_json
from core.costs import CostModel
from core.settings import Settings, get_settings
from core.universe import is_coin
from flows.alerts import alerting
from flows.session_view import SessionView
from flows.wiring import MarketClosed, SessionRequest, TradingRun, trading_run
from models.registry import AgentPolicy
from tasks.trading import load_models, open_session, trade_session
from trading.engine import MINUTE
from trading.live import run_lock
from trading.risk import KILL_SWITCH_FILE, RiskLimits
from trading.session import SessionAdapters, SessionPlan, Traded, TradingSession
from trading.session_report import session_report
from trading.session_start import (
    LiveTradingRefused,
    check_mode,
    load_compatible_model,
    symbol_costs,
)
from warehouse.bars import bar_sources, newest_bar_ts
from warehouse.db import connect
from warehouse.trade_history import run_decision_counts, run_order_count

check_session = task(name="check-session", cache_policy=NO_CACHE)(trading_run)
"""The calendar, the clock and the adapters for the mode (flows.wiring.trading_run), as a task."""

__all__ = ["LiveTradingRefused", "live_trading", "load_compatible_model", "symbol_costs"]

STREAM_WAIT_S = 20.0
"""paper/live: how long after a minute boundary (+3 s) the decision waits for the traded
symbol's bar before deciding without it (the next minute walks it through)."""


def newest_session(con: Any, symbol: str, timeframe: str) -> date | None:
    newest = newest_bar_ts(con, [symbol], timeframe)
    if newest is None:
        return None
    if is_coin(symbol):
        return (newest.astimezone(UTC) - timedelta(minutes=1)).date()
    from zoneinfo import ZoneInfo

    return newest.astimezone(ZoneInfo("America/New_York")).date()


@flow(name="live-trading", log_prints=True)
def live_trading(config: LiveTradingConfig | None = None) -> dict[str, Any]:
    """Trade one session of the production agent; exits at once while the market is closed.

    Its alerts (kill switch, stale stream, reconciliation difference, refused start) are
    Prefect events (flows.alerts)."""
    config = config or LiveTradingConfig()
    with alerting(config.symbol, LiveTradingRefused):
        return _live_trading(config)


def _live_trading(config: LiveTradingConfig) -> dict[str, Any]:
    settings = get_settings()
    logger = get_run_logger()
    mode = config.mode or settings.mode
    check_mode(mode, settings)
    warehouse = Path(config.warehouse) if config.warehouse else settings.warehouse_path
    models, _ = load_models(warehouse, [config.symbol], config.model_id)
    row, policy = models[config.symbol]
    with connect(warehouse) as con:
        replay_day = config.replay_date or newest_session(con, config.symbol, policy.spec.timeframe)
    spec = policy.spec
    costs, asset_class = symbol_costs(
        warehouse, [config.symbol], config.fee_bps, config.slippage_bps
    )
    logger.info(costs.describe(asset_class))
    run = check_session(
        SessionRequest(
            mode=mode,
            label=config.symbol.replace("/", "-"),
            calendar_symbol=config.symbol,
            traded=[spec.traded],
            symbols=list(spec.symbols),
            timeframe=spec.timeframe,
            warehouse=warehouse,
            outbox=settings.data_dir / "outbox",
            key=str(row["model_id"]),
            config_digest=hashlib.sha256(config_json(config).encode()).hexdigest()[:6],
            replay_day=replay_day,
            costs=costs,
            start_minute=config.start_minute,
            cash=config.cash,
            account_rules=config.account_rules,
            replay_speed=config.replay_speed,
            max_clock_offset_s=config.max_clock_offset_s,
            wait_for_open_min=config.wait_for_open_min,
            bar_wait_s=STREAM_WAIT_S,
        ),
        settings,
        logger,
    )
    if isinstance(run, MarketClosed):
        logger.info(
            "market closed at %s (%s); next session opens %s -- nothing to do",
            run.now.isoformat(),
            config.symbol,
            run.next_open.isoformat(),
        )
        return {
            "status": "closed",
            "now": run.now.isoformat(),
            "next_open": run.next_open.isoformat(),
        }
    plan = session_plan(run, config, settings)
    with run_lock(settings.data_dir / f"live-trading-{config.symbol.replace('/', '-')}.lock"):
        return _run_session(config, mode, run.run_id, plan, row, policy, run.adapters, costs)


def session_plan(
    run: TradingRun, config: LiveTradingConfig | CryptoTradingConfig, settings: Settings
) -> SessionPlan:
    """The session's rules from a trading flow's config."""
    return SessionPlan(
        run_id=run.run_id,
        mode=run.mode,
        account=run.account,
        session=run.session,
        warehouse=Path(config.warehouse) if config.warehouse else settings.warehouse_path,
        outbox=settings.data_dir / "outbox",
        risk_limits=RiskLimits(**config.risk.limits()),
        kill_file=settings.data_dir / KILL_SWITCH_FILE,
        lock_timeout_s=run.lock_timeout_s,
        flatten_before_close_min=config.flatten_before_close_min,
        allow_short=config.risk.allow_short,
        reconcile_every_min=config.reconcile_every_min,
        max_minutes=config.max_minutes,
    )


def _run_session(
    config: LiveTradingConfig,
    mode: str,
    run_id: str,
    plan: SessionPlan,
    row: dict[str, Any],
    policy: AgentPolicy,
    parts: SessionAdapters,
    costs: CostModel,
) -> dict[str, Any]:
    logger = get_run_logger()
    spec, session = policy.spec, plan.session
    view = SessionView.of_plan(
        plan,
        list(spec.symbols[:1]),
        f"{mode} session {session.day} of {spec.traded}",
        costs,
        config.view_every_s,
    )
    trading = TradingSession(
        plan,
        [Traded(spec.traded, str(row["model_id"]), policy, row.get("params") or {})],
        parts,
        view=view,
        logger=logger,
    )
    warmed = open_session(trading)
    logger.info(
        "%s %s session %s with %s: warmed up on %d bar(s) of the session so far",
        mode,
        spec.traded,
        session.day,
        row["model_id"],
        warmed,
    )
    trade_session(trading)
    runner = trading.runners[spec.traded]
    summary = report_session(config, mode, run_id, plan, row, spec, runner, trading, costs)
    logger.info(
        "%s session %s done: %d decisions, %d orders, equity %.2f",
        mode,
        session.day,
        summary["decisions"],
        summary["orders"],
        summary["equity"],
    )
    return summary


def _html_report(
    config: LiveTradingConfig,
    mode: str,
    run_id: str,
    plan: SessionPlan,
    row: dict[str, Any],
    spec: Any,
    costs: CostModel,
) -> tuple[Path, dict[str, Any]] | None:
    """The session's HTML report beside its benchmarks (trading.session_report); None before
    two equity points."""
    session = plan.session
    reports = (
        Path(config.reports_dir) if config.reports_dir else get_settings().data_dir / "reports"
    )
    notes = [
        f"{mode} session of {spec.traded} with model {row['model_id']}; run {run_id}.",
        "CAGR, Sharpe, Sortino and Calmar of one session are annualised from minute "
        "returns: read them as scale, not as a forecast.",
    ]
    with connect(plan.warehouse) as con:
        sources = bar_sources(con, spec.traded, session.open, session.close)
        if any(s.startswith("synthetic") for s in sources):
            notes.insert(0, "SYNTHETIC data: these are generated minute bars, not market prices.")
        return session_report(
            con,
            run_id=run_id,
            account=plan.account,
            symbols=list(spec.symbols[:1]),
            start=session.open,
            end=session.close + MINUTE,
            path=reports / f"{run_id}.html",
            title=f"{mode} session {session.day} of {spec.traded}",
            notes=notes,
            fee_bps=costs.fee_bps,
            slippage_bps=costs.slippage_bps,
        )


@task(name="report-session", cache_policy=NO_CACHE)
def report_session(
    config: LiveTradingConfig,
    mode: str,
    run_id: str,
    plan: SessionPlan,
    row: dict[str, Any],
    spec: Any,
    runner: Any,
    trading: TradingSession,
    costs: CostModel,
) -> dict[str, Any]:
    """The run's counts, its HTML report and its Prefect artifact."""
    session, account = plan.session, plan.account
    with connect(plan.warehouse) as con:
        counts = run_decision_counts(con, run_id)
        n_orders = run_order_count(con, run_id)
    made = _html_report(config, mode, run_id, plan, row, spec, costs)
    lat = sorted(runner.latencies_ms)
    summary = {
        "status": "traded",
        "mode": mode,
        "run_id": run_id,
        "account": account,
        "model_id": row["model_id"],
        "session": str(session.day),
        "decisions": int(counts[0]),
        "orders": int(n_orders),
        "equity": trading.book.equity(),
        "latency_p50_ms": lat[len(lat) // 2] if lat else None,
        "latency_p99_ms": lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else None,
        "outboxed_rows": trading.ledger.outboxed,
        "report": str(made[0]) if made else None,
    }
    create_markdown_artifact(
        key="live-trading-session",
        markdown="\n".join(
            [
                f"# {mode} session {session.day} of {spec.traded}",
                f"model `{row['model_id']}`, run `{run_id}`",
                "",
                "| decisions | orders | final equity | p50 latency (ms) |",
                "|---:|---:|---:|---:|",
                f"| {summary['decisions']} | {summary['orders']} | {summary['equity']:,.2f} "
                f"| {summary['latency_p50_ms'] or 0:.2f} |",
                "",
                f'Ledger: `tradingml sql "select * from v_decision_ledger where decision_id like '
                f"'{run_id}%' order by ts\"`",
                "",
                f"Report: {made[0].resolve().as_uri()}" if made else "(no report: nothing decided)",
            ]
        ),
    )
    return summary


if __name__ == "__main__":
    live_trading()
