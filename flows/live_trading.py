"""`live-trading` flow: one market session of the production agent, replayed, on paper, or live.

Modes (settings.mode, or the config's `mode`): replay -- a stored session replayed from the
warehouse into the simulated broker (the offline default); paper -- Alpaca's paper
account; live -- real money, refused unless TRADINGML_LIVE_TRADING_OPT_IN=true.
Outside a session it logs when the next one opens and exits. Every bar, decision,
order, fill, equity point and reconciliation difference lands in the warehouse.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.logging import get_run_logger

from adapters.clock import ManualClock, OffsetClock, measure_offset
from adapters.protocols import BarStream, Broker, Clock, TradeUpdates
from adapters.sim_broker import SimulatedBroker
from core.assets import infer_asset_class
from core.costs import CostModel, configured_costs
from core.settings import Settings, get_settings
from flows.alerts import alerting
from flows.config import LiveTradingConfig
from flows.session_view import SessionView
from models.registry import AgentPolicy, ModelLoadError, load_registered_agent
from trading.account_risk import AccountRisk
from trading.alerts import Alert, send
from trading.calendar import CryptoCalendar, NYSECalendar, Session, calendar_for
from trading.engine import MINUTE, Book, EngineConfig, StepwiseQ, TradingEngine
from trading.inputs import input_loader
from trading.ledger import Ledger
from trading.live import BarStore, LiveRunner, day_start_equity, run_lock
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
from trading.session_report import session_report
from warehouse.bars import load_bars
from warehouse.db import connect
from warehouse.registry import choose_model
from warehouse.symbols import load_symbol_infos

LIVE_LOCK_TIMEOUT_S = 2.0
"""paper/live: how long a minute's write or decision waits for a warehouse another process
holds before its rows go to the outbox (the decision is made from the bars in memory)."""


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
    if "/" in symbol:
        return (newest.astimezone(UTC) - timedelta(minutes=1)).date()
    from zoneinfo import ZoneInfo

    return newest.astimezone(ZoneInfo("America/New_York")).date()


def stored_calendar(warehouse: Path, symbol: str) -> str | None:
    """The symbol's calendar in the symbols table (None: not stored, inferred from its name),
    which the live features' time of session follows as training's did."""
    info = load_symbol_infos(warehouse, [symbol]).get(symbol)
    return None if info is None else info.calendar


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
    if mode == "replay":
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
        broker = sim
    with run_lock(settings.data_dir / f"live-trading-{config.symbol.replace('/', '-')}.lock"):
        return _run_session(
            config,
            mode,
            run_id,
            account,
            row,
            policy,
            spec,
            warehouse,
            clock,
            broker,
            sim,
            stream,
            session_now,
            settings.data_dir / "outbox",
            costs,
            updates,
        )


def _run_session(
    config: LiveTradingConfig,
    mode: str,
    run_id: str,
    account: str,
    row: dict[str, Any],
    policy: AgentPolicy,
    spec: Any,
    warehouse: Path,
    clock: Clock,
    broker: Broker,
    sim: SimulatedBroker | None,
    stream: BarStream | None,
    session: Session,
    outbox: Path,
    costs: CostModel,
    updates: TradeUpdates | None = None,
) -> dict[str, Any]:
    logger = get_run_logger()
    ledger = Ledger(
        warehouse,
        mode=mode,
        outbox=outbox,
        lock_timeout_s=None if mode == "replay" else LIVE_LOCK_TIMEOUT_S,
    )
    with connect(warehouse) as con:
        ours = warehouse_positions(con, run_id=run_id if mode == "replay" else None, mode=mode)
    book = Book(cash=broker.get_account().cash, qty=ours)
    engine_ref: list[TradingEngine] = []
    fills: Any
    orders: OrderManager
    poller: OrderFillPoller | None = None
    if sim is not None:
        fills = sim.new_fills
        orders = OrderManager(broker, sleep=clock.sleep)
    else:
        poller = OrderFillPoller(
            broker, lambda: engine_ref[0].open_orders.keys() if engine_ref else ()
        )
        orders = TrackedOrderManager(broker, poller, sleep=clock.sleep)
        # Fills as they happen from the trade-updates stream; the poller is the fallback.
        fills = poller if updates is None else StreamedFills(poller, updates)
    engine = TradingEngine(
        EngineConfig(
            run_id=run_id,
            mode=mode,
            account=account,
            symbol=spec.traded,
            model_id=str(row["model_id"]),
            feature_names=tuple(spec.names()),
            fractional="/" in spec.traded,
            flatten_before_close_min=config.flatten_before_close_min,
            allow_short=config.risk.allow_short,
        ),
        StepwiseQ(policy),
        broker,
        RiskEngine(
            RiskLimits(**config.risk.limits()),
            kill_file=get_settings().data_dir / KILL_SWITCH_FILE,
            alert_as=spec.traded,
        ),
        orders,
        ledger,
        book,
        fills,
        seen_via="sim" if sim is not None else "rest",
    )
    engine_ref.append(engine)
    if (kill := engine.risk.manual_kill_reason()) is not None:
        logger.warning("%s: this session sends no order that adds risk", kill)
    if poller is not None:
        # A run killed between the broker's accept and the ledger's flush: record what the
        # broker has of this run's orders (nothing is resent) before reconciling.
        with connect(warehouse) as con:
            recover_orders(
                engine,
                poller,
                broker,
                con,
                candidates=session_client_ids(run_id, spec.traded, session.open, clock.now()),
                now=clock.now(),
            )
    found = reconcile(book, broker, ledger, account=account, run_id=run_id, now=clock.now())
    if found:
        logger.warning(
            "reconciliation at start: %d difference(s); the broker's view adopted", found
        )
    runner = LiveRunner(
        engine,
        spec,
        session,
        warehouse,
        broker,
        ledger,
        inputs=input_loader(spec, row.get("params") or {}),
        calendar=stored_calendar(warehouse, spec.traded),
    )
    warmed = runner.start(clock.now())
    with connect(warehouse) as con:
        started = day_start_equity(con, account, session)
    if started is not None:
        # A restart: the daily loss limit counts from the day's start, not from now.
        engine.risk.resume_day(session.day, started)
        logger.info("restarted mid-day: the daily loss limit counts from %.2f", started)
    logger.info(
        "%s %s session %s with %s: warmed up on %d bar(s) of the session so far",
        mode,
        spec.traded,
        session.day,
        row["model_id"],
        warmed,
    )
    # The whole account's limits, checked every minute beside this flow's own (one account,
    # several flows); not in a replay, whose simulated account is its own.
    guard = AccountRisk(account, run_id, warehouse, LIVE_LOCK_TIMEOUT_S, enabled=mode != "replay")
    guard.tick(broker, [engine.risk], clock.now())  # an account past its limit: from the start
    view = SessionView(
        lambda: connect(warehouse, timeout_s=LIVE_LOCK_TIMEOUT_S),
        run_id=run_id,
        account=account,
        symbols=list(spec.symbols[:1]),
        session=session,
        title=f"{mode} session {session.day} of {spec.traded}",
        fee_bps=costs.fee_bps,
        slippage_bps=costs.slippage_bps,
        every_s=config.view_every_s,
    )
    if mode == "replay":
        assert sim is not None and isinstance(clock, ManualClock)
        _replay(
            config, runner, sim, clock, warehouse, spec, session, ledger, broker, run_id, account,
            view, guard,
        )  # fmt: skip
    else:
        assert stream is not None, "paper/live trading needs the Alpaca bar stream"
        if updates is not None:
            updates.start()
        try:
            _live_loop(
                config, runner, stream, clock, warehouse, spec, session, ledger, broker,
                run_id, account, view, guard,
            )  # fmt: skip
        finally:
            if updates is not None:
                updates.stop()
    # Rows still buffered first: with the warehouse locked they are kept in the outbox
    # (merged by the next write that gets the file), not lost with this process.
    ledger.flush()
    with connect(warehouse) as con:
        ledger.flush(con)
        view.tick(clock.now(), con, final=True)
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
        "equity": engine.book.equity(),
        "latency_p50_ms": lat[len(lat) // 2] if lat else None,
        "latency_p99_ms": lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else None,
        "outboxed_rows": ledger.outboxed,
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
    logger.info(
        "%s session %s done: %d decisions, %d orders, equity %.2f",
        mode,
        session.day,
        summary["decisions"],
        summary["orders"],
        summary["equity"],
    )
    return summary


def _replay(
    config: LiveTradingConfig,
    runner: LiveRunner,
    sim: SimulatedBroker,
    clock: ManualClock,
    warehouse: Path,
    spec: Any,
    session: Session,
    ledger: Ledger,
    broker: Broker,
    run_id: str,
    account: str,
    view: SessionView,
    guard: AccountRisk,
) -> None:
    """Push the stored session's bars minute by minute through the stream handler and the runner."""
    start = max(clock.now(), session.open)
    with connect(warehouse) as con:
        bars = load_bars(con, list(spec.symbols), spec.timeframe, start - MINUTE, session.close)
        # A fast replay holds one connection; a paced one (speed > 0) waits, so it does not.
        runner.con = con if config.replay_speed == 0 else None
        try:
            _replay_minutes(
                config, runner, sim, clock, warehouse, spec, bars, ledger, broker, run_id, account,
                view, guard,
            )  # fmt: skip
        finally:
            runner.con = None


def _replay_minutes(
    config: LiveTradingConfig,
    runner: LiveRunner,
    sim: SimulatedBroker,
    clock: ManualClock,
    warehouse: Path,
    spec: Any,
    bars: pl.DataFrame,
    ledger: Ledger,
    broker: Broker,
    run_id: str,
    account: str,
    view: SessionView,
    guard: AccountRisk,
) -> None:
    start = clock.now()
    bars = bars.filter(pl.col("ts") >= start - MINUTE)
    decided = 0
    # The stream handler's store, as in paper/live: the bars are stored (here: again) and the
    # decision takes them from memory.
    store = BarStore(warehouse, outbox=ledger.outbox)
    for (minute,), frame in bars.group_by(["ts"], maintain_order=True):
        assert isinstance(minute, datetime)
        arrived = time.perf_counter()
        clock.set(minute + MINUTE)
        store.store(frame, clock.now(), runner.con)
        traded = frame.filter(pl.col("symbol") == spec.traded)
        if traded.height:
            sim.on_bar(spec.traded, minute, float(traded["open"][0]), float(traded["close"][0]))
        fresh = store.minute(minute, spec.symbols)
        if runner.on_bar_stored(clock.now(), arrived=arrived, fresh=fresh) is not None:
            decided += 1
        if decided and decided % config.reconcile_every_min == 0:
            runner.engine.sync_fills()
            reconcile(
                runner.engine.book, broker, ledger, account=account, run_id=run_id, now=clock.now()
            )
        guard.tick(broker, [runner.engine.risk], clock.now(), runner.con)
        view.tick(clock.now(), runner.con)
        if config.max_minutes is not None and decided >= config.max_minutes:
            break
        if config.replay_speed > 0:
            time.sleep(60.0 / config.replay_speed)
    runner.engine.sync_fills()


def follow_stream_health(stream: Any, risks: Iterable[RiskEngine]) -> None:
    """Reduce-only while the stream says it is stale (decisions rest on back-filled bars after
    a silent or dropped connection); lifted once live bars flow. Logged when it changes."""
    stale = getattr(stream, "stale_reason", None)
    changed = [risk for risk in risks if risk.reduce_only_reason != stale]
    if changed:
        get_run_logger().warning(
            "bar stream %s: %s", "stale" if stale else "live again", stale or "trading resumes"
        )
        for risk in changed:
            risk.set_reduce_only(stale)
        subjects = sorted(risk.alert_as or "?" for risk in changed)
        send(
            Alert(
                "stream.stale" if stale else "stream.live",
                ",".join(subjects),
                f"bar stream stale: {stale}; reduce-only until live bars flow again"
                if stale
                else "bar stream live again; trading resumes",
                {"symbols": subjects, "reason": stale},
            )
        )


class StreamThread:
    """The bar stream running on its own thread, started at once; a stream that stops hands
    its error to the decision loop (`raise_if_stopped`)."""

    def __init__(self, stream: BarStream, name: str) -> None:
        self.stream = stream
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.stream.run()
        except BaseException as err:  # noqa: BLE001 -- reported by the decision loop
            self.error = err

    def raise_if_stopped(self) -> None:
        """Without bars there is nothing to decide on: stop with the stream's reason."""
        if self.error is not None:
            raise RuntimeError(
                f"the bar stream stopped: {self.error}; no further decisions"
            ) from self.error

    def stop(self) -> None:
        self.stream.stop()
        self.thread.join(timeout=10)


class Arrivals:
    """The newest bar the stream handler has stored, per symbol; the decision loop waits on it.

    Bars come over a real socket into the stream's thread whatever the clock says, so the
    decision loop waits for them in real time (a condition the handler signals after its
    write is committed), not on the run's clock: with a ManualClock a clock.sleep() is
    instant and would race the stream thread; with the wall clock it is the same wait,
    cut short when the bar comes.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._newest: dict[str, datetime] = {}

    def stored(self, frame: pl.DataFrame) -> None:
        newest = frame.group_by("symbol").agg(pl.col("ts").max())
        with self._cond:
            for symbol, ts in newest.iter_rows():
                if symbol not in self._newest or ts > self._newest[symbol]:
                    self._newest[symbol] = ts
            self._cond.notify_all()

    def wait_for(self, symbol: str, ts: datetime, timeout_s: float) -> bool:
        """True once a bar of `symbol` at or after `ts` is stored; False after timeout_s."""

        def there() -> bool:
            got = self._newest.get(symbol)
            return got is not None and got >= ts

        with self._cond:
            return self._cond.wait_for(there, timeout_s)


def _live_loop(
    config: LiveTradingConfig,
    runner: LiveRunner,
    stream: BarStream,
    clock: Clock,
    warehouse: Path,
    spec: Any,
    session: Session,
    ledger: Ledger,
    broker: Broker,
    run_id: str,
    account: str,
    view: SessionView,
    guard: AccountRisk,
) -> None:
    """Paper/live: the stream thread stores bars; this thread decides on minute boundaries."""
    arrivals = Arrivals()
    # DuckDB (2.0) breaks when two threads of one process open and close connections to
    # one file at the same moment ("python_arrow_scan does not exist", "unique file handle
    # conflict"): the stream thread's writes and this thread's decisions take turns.
    warehouse_turn = threading.Lock()
    # Bars validated and stored by the handler, kept in memory for the decision (no read-back);
    # with the warehouse held by another process they go to the outbox and trading goes on.
    store = BarStore(warehouse, outbox=ledger.outbox, lock_timeout_s=LIVE_LOCK_TIMEOUT_S)
    runner.lock_timeout_s = LIVE_LOCK_TIMEOUT_S

    async def handler(frame: pl.DataFrame) -> None:
        with warehouse_turn:
            store.store(frame, clock.now())
        arrivals.stored(frame)

    def decide() -> bool:
        with warehouse_turn:
            follow_stream_health(stream, [runner.engine.risk])
            now = clock.now()
            fresh = store.minute(now.replace(second=0, microsecond=0) - MINUTE, spec.symbols)
            return runner.on_bar_stored(now, fresh=fresh) is not None

    def done() -> bool:
        return config.max_minutes is not None and decided >= config.max_minutes

    stream.subscribe(list(spec.symbols), handler)
    running = StreamThread(stream, "bar-stream")
    decided = 0
    try:
        # Started mid-session, the warm-up stopped before the bar that closed at the last
        # boundary: decide it now (when stored), as a replay started there does, so the
        # policy sees every bar of the session once. At the open there is none.
        if decide():
            decided += 1
        while clock.now() < session.close and not done():
            running.raise_if_stopped()
            now = clock.now()
            boundary = now.replace(second=0, microsecond=0) + MINUTE
            # Alpaca sends minute m's bar just after m+1:00; decide a few seconds later.
            clock.sleep(max(0.0, (boundary - now).total_seconds()) + 3.0)
            for _ in range(10):
                if decide():
                    decided += 1
                    break
                arrivals.wait_for(spec.traded, boundary - MINUTE, 2.0)
            if decided and decided % config.reconcile_every_min == 0:
                # Fills first: one not booked yet would look like a position difference, be
                # adopted, then be booked again when polled. While an order is still open
                # the broker's positions can move between the two reads: reconcile later.
                runner.engine.sync_fills()
                if not runner.engine.open_orders:
                    reconcile(
                        runner.engine.book,
                        broker,
                        ledger,
                        account=account,
                        run_id=run_id,
                        now=clock.now(),
                    )
            with warehouse_turn:
                guard.tick(broker, [runner.engine.risk], clock.now())
                view.tick(clock.now())
        runner.engine.sync_fills()  # the last decision's order
    finally:
        running.stop()


if __name__ == "__main__":
    live_trading()
