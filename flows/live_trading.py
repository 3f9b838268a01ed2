"""`live-trading` flow: one market session of the production agent, replayed, on paper, or live.

Modes (settings.mode, or the config's `mode`): replay -- a stored session replayed from the
warehouse into the simulated broker (the offline default); paper -- Alpaca's paper
account; live -- real money, refused unless TRADINGML_LIVE_TRADING_OPT_IN=true.
Outside a session it logs when the next one opens and exits. Every bar, decision,
order, fill, equity point and reconciliation difference lands in the warehouse.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.logging import get_run_logger

from adapters.clock import ManualClock, OffsetClock, measure_offset
from adapters.protocols import BarStream, Broker, Clock, TradeUpdates
from adapters.sim_broker import SimulatedBroker
from core.assets import infer_asset_class
from core.costs import CostModel, configured_costs
from core.settings import Settings, get_settings
from core.universe import is_coin
from flows.alerts import alerting
from flows.config import LiveTradingConfig
from flows.session_view import SessionView
from models.registry import AgentPolicy, ModelLoadError, load_registered_agent
from trading.calendar import CryptoCalendar, NYSECalendar, Session, calendar_for
from trading.engine import MINUTE
from trading.live import run_lock
from trading.risk import KILL_SWITCH_FILE, RiskLimits
from trading.session import (
    MinuteFeed,
    ReplayFeed,
    SessionAdapters,
    SessionPlan,
    StreamFeed,
    Traded,
    TradingSession,
)
from trading.session_report import session_report
from warehouse.bars import load_bars
from warehouse.db import connect
from warehouse.registry import choose_model
from warehouse.symbols import load_symbol_infos

LIVE_LOCK_TIMEOUT_S = 2.0
"""paper/live: how long a minute's write or decision waits for a warehouse another process
holds before its rows go to the outbox (the decision is made from the bars in memory)."""
STREAM_WAIT_S = 20.0
"""paper/live: how long after a minute boundary (+3 s) the decision waits for the traded
symbol's bar before deciding without it (the next minute walks it through)."""


class LiveTradingRefused(RuntimeError):
    """The run will not trade: wrong mode settings, no compatible model, or another run active."""


def load_compatible_model(
    con: Any, symbol: str, model_id: str | None
) -> tuple[dict[str, Any], AgentPolicy]:
    """The production model (or the one named), checked to be computed by today's feature code."""
    try:
        row = choose_model(con, symbol, model_id, production_only=True)
    except ValueError as err:
        raise LiveTradingRefused(str(err)) from None
    try:
        policy = load_registered_agent(row)
    except ModelLoadError as err:
        raise LiveTradingRefused(
            f"model {row['model_id']} of {symbol} refused, nothing traded: {err}"
        ) from err
    running = policy.spec.schema_hash()
    if row["feature_schema_hash"] != running:
        raise LiveTradingRefused(
            f"model {row['model_id']} was trained on features {row['feature_schema_hash']}, but "
            f"this pipeline computes {running} for that spec; refusing to trade it -- retrain "
            "(tradingml train) and promote the new model"
        )
    return row, policy


def newest_session(con: Any, symbol: str, timeframe: str) -> date | None:
    rows = con.execute(
        "SELECT max(ts) FROM bars WHERE symbol = ? AND timeframe = ?", [symbol, timeframe]
    ).fetchall()
    newest = rows[0][0] if rows else None
    if newest is None:
        return None
    if is_coin(symbol):
        return (newest.astimezone(UTC) - timedelta(minutes=1)).date()
    from zoneinfo import ZoneInfo

    return newest.astimezone(ZoneInfo("America/New_York")).date()


def symbol_costs(
    warehouse: Path, symbols: Iterable[str], fee_bps: float | None, slippage_bps: float | None
) -> tuple[CostModel, str]:
    """The costs a run over `symbols` charges, and their asset class: configured_costs of the
    class stored with the symbols (else inferred from their names), as train, backtest and
    evaluate charge it. One simulated broker holds one cost model: one class per run."""
    names = list(symbols)
    infos = load_symbol_infos(warehouse, names)
    classes = {infos[s].asset_class if s in infos else infer_asset_class(s) for s in names}
    if len(classes) != 1:
        raise LiveTradingRefused(
            f"{', '.join(names)} span asset classes {sorted(classes)}: one run trades one class"
        )
    asset_class = classes.pop()
    return configured_costs(asset_class, fee_bps, slippage_bps), asset_class


def _session_of_day(symbol: str, day: date) -> Session | None:
    cal = calendar_for(symbol)
    if isinstance(cal, NYSECalendar):
        return cal.session_on(day)
    return CryptoCalendar().session_at(datetime(day.year, day.month, day.day, tzinfo=UTC))


def require_replay_bars(
    warehouse: Path, symbols: list[str], timeframe: str, session: Session, start: datetime
) -> None:
    """Refuse a replay with no stored bar to decide on, instead of reporting an empty session
    as traded (a day outside the stored data, or one whose bars were never ingested)."""
    with connect(warehouse) as con:
        stored = load_bars(
            con, symbols, timeframe, max(start, session.open) - MINUTE, session.close
        )
    if stored.height == 0:
        since = f" from {start:%H:%M} UTC on" if start > session.open else ""
        raise LiveTradingRefused(
            f"no bars for {session.day}: no {timeframe} bars of {', '.join(symbols)}{since} in "
            f"{warehouse}, nothing to replay; ingest that day first (tradingml ingest --start "
            f"{session.day} --end {session.day + timedelta(days=1)} ...) or replay a stored day"
        )


def on_broker_time(clock: Clock, broker: Broker, max_offset_s: float, stream: Any = None) -> Clock:
    """The clock a paper/live run decides on: the local one moved onto the broker's time.

    Compares the local clock with the broker's (Alpaca GET /v2/clock) once at start; past
    `max_offset_s` apart the run refuses to trade, within it every decision (and the
    stream's gap-fill) uses local time + the measured offset.
    """
    offset = measure_offset(clock, lambda: broker.get_clock().timestamp)
    off_s = offset.total_seconds()
    if abs(off_s) > max_offset_s:
        raise LiveTradingRefused(
            f"the local clock is {abs(off_s):.1f} s {'behind' if off_s > 0 else 'ahead of'} the "
            f"broker's (Alpaca /v2/clock), more than max_clock_offset_s={max_offset_s:g}: "
            "refusing to trade on a wrong clock. Sync this machine's clock (NTP: "
            "`timedatectl set-ntp true` or `chronyc makestep`) or raise max_clock_offset_s"
        )
    get_run_logger().info(
        "local clock %.3f s %s the broker's: deciding on broker time",
        abs(off_s),
        "behind" if off_s > 0 else "ahead of",
    )
    broker_clock = OffsetClock(clock, offset)
    if hasattr(stream, "set_clock"):
        stream.set_clock(broker_clock)
    return broker_clock


def check_mode(mode: str, settings: Settings) -> None:
    """Refuse at start: live without the opt-in or with a paper key, paper at the live URL."""
    from core.settings import mode_refusal

    problem = mode_refusal(mode, settings)
    if problem:
        raise LiveTradingRefused(problem)


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
    with connect(warehouse) as con:
        row, policy = load_compatible_model(con, config.symbol, config.model_id)
        replay_day = config.replay_date or newest_session(con, config.symbol, policy.spec.timeframe)
    spec = policy.spec
    costs, asset_class = symbol_costs(
        warehouse, [config.symbol], config.fee_bps, config.slippage_bps
    )
    logger.info(costs.describe(asset_class))

    clock: Clock
    sim: SimulatedBroker | None = None
    stream: BarStream | None = None
    updates: TradeUpdates | None = None
    broker: Broker
    if mode == "replay":
        if replay_day is None:
            raise LiveTradingRefused(
                f"no {config.symbol} bars in {warehouse} to replay; run ingest-bars or make demo"
            )
        session = _session_of_day(config.symbol, replay_day)
        start_at = (
            session.open + timedelta(minutes=config.start_minute)
            if session
            else datetime(replay_day.year, replay_day.month, replay_day.day, 15, tzinfo=UTC)
        )
        clock = ManualClock(start_at)
    else:
        from flows.wiring import build_adapters

        adapters = build_adapters(settings.model_copy(update={"mode": mode}))
        assert adapters.broker is not None
        clock, broker, stream = adapters.clock, adapters.broker, adapters.stream
        updates = adapters.trade_updates
        clock = on_broker_time(clock, broker, config.max_clock_offset_s, stream)

    now = clock.now()
    session_now = calendar_for(config.symbol).session_at(now)
    if session_now is None and mode != "replay":
        # The 09:25 schedule starts a few minutes early: wait for the open, not for tomorrow.
        upcoming = calendar_for(config.symbol).next_session(now)
        wait_s = (upcoming.open - now).total_seconds()
        if 0 < wait_s <= config.wait_for_open_min * 60:
            logger.info("market opens in %.0f s (%s); waiting", wait_s, upcoming.open.isoformat())
            clock.sleep(wait_s)
            now = clock.now()
            session_now = calendar_for(config.symbol).session_at(now)
    if session_now is None:
        nxt = calendar_for(config.symbol).next_session(now)
        logger.info(
            "market closed at %s (%s); next session opens %s -- nothing to do",
            now.isoformat(),
            config.symbol,
            nxt.open.isoformat(),
        )
        return {"status": "closed", "now": now.isoformat(), "next_open": nxt.open.isoformat()}
    if mode == "replay":
        require_replay_bars(warehouse, [spec.traded], spec.timeframe, session_now, now)

    day = session_now.day
    run_id = "-".join([mode, config.symbol.replace("/", "-"), str(day), str(row["model_id"])])
    if mode == "replay":
        digest = hashlib.sha256(config.model_dump_json().encode()).hexdigest()[:6]
        run_id = f"{run_id}-{digest}"
    account = f"replay:{run_id}" if mode == "replay" else mode
    outbox = settings.data_dir / "outbox"
    parts: SessionAdapters
    if mode == "replay":
        assert isinstance(clock, ManualClock)
        # Order and fill ids carry the run id: fills are keyed by fill_id, so ids shared by
        # two replays of one session would let the later run overwrite the earlier's fills.
        sim = SimulatedBroker(
            clock,
            cash=config.cash,
            fee_bps=costs.fee_bps,
            slippage_bps=costs.slippage_bps,
            sell_fee_bps=costs.sell_fee_bps,
            id_prefix=f"sim:{run_id}",
        )
        feed: MinuteFeed = ReplayFeed(
            warehouse, spec.symbols, spec.timeframe, session_now, clock, sim,
            speed=config.replay_speed, outbox=outbox,
        )  # fmt: skip
        parts = SessionAdapters(clock, sim, feed, simulated=sim)
    else:
        assert stream is not None, "paper/live trading needs the Alpaca bar stream"
        feed = StreamFeed(
            stream, clock, session_now, warehouse, spec.symbols, outbox=outbox,
            lock_timeout_s=LIVE_LOCK_TIMEOUT_S, wait_s=STREAM_WAIT_S,
        )  # fmt: skip
        parts = SessionAdapters(clock, broker, feed, trade_updates=updates)
    plan = SessionPlan(
        run_id=run_id,
        mode=mode,
        account=account,
        session=session_now,
        warehouse=warehouse,
        outbox=outbox,
        risk_limits=RiskLimits(**config.risk.limits()),
        kill_file=settings.data_dir / KILL_SWITCH_FILE,
        lock_timeout_s=None if mode == "replay" else LIVE_LOCK_TIMEOUT_S,
        flatten_before_close_min=config.flatten_before_close_min,
        allow_short=config.risk.allow_short,
        reconcile_every_min=config.reconcile_every_min,
        max_minutes=config.max_minutes,
    )
    with run_lock(settings.data_dir / f"live-trading-{config.symbol.replace('/', '-')}.lock"):
        return _run_session(config, mode, run_id, plan, row, policy, parts, costs)


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
    spec, session, warehouse = policy.spec, plan.session, plan.warehouse
    view = SessionView(
        lambda: connect(warehouse, timeout_s=LIVE_LOCK_TIMEOUT_S),
        run_id=run_id,
        account=plan.account,
        symbols=list(spec.symbols[:1]),
        session=session,
        title=f"{mode} session {session.day} of {spec.traded}",
        fee_bps=costs.fee_bps,
        slippage_bps=costs.slippage_bps,
        every_s=config.view_every_s,
    )
    trading = TradingSession(
        plan,
        [Traded(spec.traded, str(row["model_id"]), policy, row.get("params") or {})],
        parts,
        view=view,
        logger=logger,
    )
    warmed = trading.open()
    logger.info(
        "%s %s session %s with %s: warmed up on %d bar(s) of the session so far",
        mode,
        spec.traded,
        session.day,
        row["model_id"],
        warmed,
    )
    trading.run()
    runner = trading.runners[spec.traded]
    summary = session_summary(config, mode, run_id, plan, row, spec, runner, trading, costs)
    logger.info(
        "%s session %s done: %d decisions, %d orders, equity %.2f",
        mode,
        session.day,
        summary["decisions"],
        summary["orders"],
        summary["equity"],
    )
    return summary


def session_summary(
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
    """The run's counts, report and Prefect artifact."""
    session, account = plan.session, plan.account
    with connect(plan.warehouse) as con:
        counts = con.execute(
            "SELECT count(*), count(*) FILTER (WHERE action <> 'hold') FROM decisions WHERE run_id = ?",
            [run_id],
        ).fetchall()[0]
        n_orders = con.execute(
            "SELECT count(*) FROM orders o JOIN decisions d USING (decision_id) WHERE d.run_id = ?",
            [run_id],
        ).fetchall()[0][0]
        reports = (
            Path(config.reports_dir) if config.reports_dir else get_settings().data_dir / "reports"
        )
        notes = [
            f"{mode} session of {spec.traded} with model {row['model_id']}; run {run_id}.",
            "CAGR, Sharpe, Sortino and Calmar of one session are annualised from minute "
            "returns: read them as scale, not as a forecast.",
        ]
        sources = [
            str(r[0])
            for r in con.execute(
                "SELECT DISTINCT source FROM bars WHERE symbol = ? AND ts >= ? AND ts < ?",
                [spec.traded, session.open, session.close],
            ).fetchall()
        ]
        if any(s.startswith("synthetic") for s in sources):
            notes.insert(0, "SYNTHETIC data: these are generated minute bars, not market prices.")
        made = session_report(
            con,
            run_id=run_id,
            account=account,
            symbols=list(spec.symbols[:1]),
            start=session.open,
            end=session.close + MINUTE,
            path=reports / f"{run_id}.html",
            title=f"{mode} session {session.day} of {spec.traded}",
            notes=notes,
            fee_bps=costs.fee_bps,
            slippage_bps=costs.slippage_bps,
        )
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
