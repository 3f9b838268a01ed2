"""One trading session for every mode: the set-up and the minute loop that replay, paper
and live all run, for SPY and for the coins (one symbol is a portfolio of one).

A `TradingSession` holds one `LiveRunner` (policy -> risk -> orders) per traded symbol,
all sharing one account, one book and one ledger. Its minutes come from a `MinuteFeed`:

- `ReplayFeed`: a stored session's bars pushed minute by minute through the stream
  handler's store (`BarStore`), the manual clock set to each minute's close and the
  simulated broker filling from the same bars;
- `StreamFeed`: the live bar stream on its own thread storing bars as they come, the
  decision thread waking a few seconds after each minute boundary and waiting (a bounded
  while) for the traded symbols' bars.

Every minute, whatever the feed: the traded symbols decide on the bars just stored (one
connection, one ledger write), fills are synced and positions reconciled every
`reconcile_every_min` decisions (when no order is open), the account-wide limits are
checked and the view refreshed. What differs by mode is only which feed, clock, broker
and fill source the wiring hands in (`SessionAdapters`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TypeAlias

import polars as pl

from adapters.clock import ManualClock
from adapters.protocols import BarStream, Broker, Clock, TradeUpdates
from adapters.sim_broker import SimulatedBroker
from core.assets import default_calendar, infer_asset_class
from core.universe import is_coin
from models.registry import AgentPolicy
from trading.account_risk import AccountRisk
from trading.alerts import Alert, send
from trading.calendar import Session
from trading.engine import MINUTE, Book, EngineConfig, StepwiseQ, TradingEngine
from trading.inputs import input_loader
from trading.ledger import Ledger
from trading.live import BarStore, LiveRunner, day_start_equity
from trading.orders import OrderManager
from trading.reconcile import (
    OrderFillPoller,
    StreamedFills,
    TrackedOrderManager,
    account_positions,
    reconcile,
    recover_orders,
    session_client_ids,
    warehouse_positions,
)
from trading.risk import RiskEngine, RiskLimits, enforce_account_rules, see_simulated_account
from warehouse.bars import bars_by_minute, load_bars
from warehouse.db import WarehouseLockedError, connect
from warehouse.symbols import load_symbol_infos

log = logging.getLogger(__name__)

Logger: TypeAlias = "logging.Logger | logging.LoggerAdapter[Any]"


def _floor_minute(when: datetime) -> datetime:
    return when.replace(second=0, microsecond=0)


def stored_calendar(warehouse: Path, symbol: str) -> str | None:
    """The symbol's calendar in the symbols table (None: not stored, inferred from its name),
    which the live features' time of session follows as training's did."""
    info = load_symbol_infos(warehouse, [symbol]).get(symbol)
    return None if info is None else info.calendar


def exchange_calendars(warehouse: Path, symbols: Iterable[str]) -> dict[str, str]:
    """symbol -> calendar (the symbols table's, else the one its name implies)."""
    names = list(symbols)
    infos = load_symbol_infos(warehouse, names)
    return {
        s: infos[s].calendar if s in infos else default_calendar(infer_asset_class(s))
        for s in names
    }


# ---- the stream's health ----------------------------------------------------------------


def follow_stream_health(stream: Any, risks: Iterable[RiskEngine], logger: Logger = log) -> None:
    """Reduce-only while the stream says it is stale (decisions rest on back-filled bars after
    a silent or dropped connection); lifted once live bars flow. Logged when it changes."""
    stale = getattr(stream, "stale_reason", None)
    changed = [risk for risk in risks if risk.reduce_only_reason != stale]
    if changed:
        logger.warning(
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


# ---- where the minutes come from ----------------------------------------------------------


class MinuteFeed:
    """Bars into the warehouse (through `store`) and the run's clock onto the next minute.

    Used as a context manager for the session's length; `next_minute()` returns when the
    bars that closed at the last minute boundary are stored (or waited for long enough),
    with the perf_counter moment they were there, or None when the session is over.
    """

    store: BarStore
    lock_timeout_s: float | None = None
    """How long a decision waits for a warehouse another process holds (None: the setting)."""
    held: Any = None
    """A connection held for the whole session (a fast replay), else None."""
    traded: set[str]
    """The symbols that decide (set by the session: its runners' symbols)."""

    @property
    def stale_reason(self) -> str | None:
        """Why the bars are not live (a silent or dropped stream); None while they are."""
        return None

    def __enter__(self) -> MinuteFeed:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def next_minute(self) -> float | None:
        raise NotImplementedError

    def turn(self) -> AbstractContextManager[Any]:
        """Held while this thread reads the stored bars or opens the warehouse."""
        return nullcontext()

    @contextmanager
    def connection(self) -> Iterator[Any]:
        """The warehouse for one minute's decisions; None while another process holds it."""
        if self.held is not None:
            yield self.held
            return
        try:
            con_cm = connect(self.store.warehouse, timeout_s=self.lock_timeout_s)
            con = con_cm.__enter__()
        except WarehouseLockedError as err:
            log.warning("warehouse locked (%s): deciding from the bars in memory", err)
            yield None
            return
        try:
            yield con
        finally:
            con_cm.__exit__(None, None, None)


class ReplayFeed(MinuteFeed):
    """A stored session replayed: each minute's bars stored through the stream handler's
    store, the clock set to the minute's close, the simulated broker filling from them.

    `speed` > 0 paces it (that many minutes per wall-clock minute) and holds no connection
    between minutes; 0 runs as fast as it can on one connection.
    """

    def __init__(
        self,
        warehouse: Path,
        symbols: Iterable[str],
        timeframe: str,
        session: Session,
        clock: ManualClock,
        sim: SimulatedBroker,
        *,
        speed: float = 0.0,
        outbox: Path | None = None,
        bars: pl.DataFrame | None = None,
    ) -> None:
        self.bars = bars
        """The bars to replay, if not the stored ones (bars that arrive for the first time)."""
        self.symbols = sorted(set(symbols))
        self.timeframe, self.session, self.clock, self.sim = timeframe, session, clock, sim
        self.speed = speed
        self.store = BarStore(warehouse, outbox=outbox)
        self.traded = set()
        self._stack = ExitStack()
        self._minutes: Iterator[tuple[tuple[Any, ...], pl.DataFrame]] = iter(())
        self._started = False

    def __enter__(self) -> ReplayFeed:
        start = max(self.clock.now(), self.session.open)
        if self.bars is None:
            with connect(self.store.warehouse) as con:
                bars = load_bars(
                    con, self.symbols, self.timeframe, start - MINUTE, self.session.close
                )
        else:
            bars = self.bars.filter(
                (pl.col("ts") >= start - MINUTE) & (pl.col("ts") < self.session.close)
            )
        bars = bars.sort("ts", "symbol", maintain_order=True)
        self._minutes = iter(bars.group_by(["ts"], maintain_order=True))
        if self.speed == 0:
            self.held = self._stack.enter_context(connect(self.store.warehouse))
        return self

    def __exit__(self, *exc: object) -> None:
        self.held = None
        self._stack.close()

    def next_minute(self) -> float | None:
        if self._started and self.speed > 0:
            time.sleep(60.0 / self.speed)
        self._started = True
        item = next(self._minutes, None)
        if item is None:
            return None
        (minute,), frame = item
        assert isinstance(minute, datetime)
        arrived = time.perf_counter()
        self.clock.set(minute + MINUTE)
        self.store.store(frame, self.clock.now(), self.held)
        for symbol, open_, close in frame.select("symbol", "open", "close").iter_rows():
            if symbol in self.traded:
                self.sim.on_bar(str(symbol), minute, float(open_), float(close))
        return arrived


class StreamFeed(MinuteFeed):
    """Paper/live: the stream's thread stores bars as they come (the handler); this thread
    wakes `grace_s` after each minute boundary (Alpaca sends minute m's bar just after
    m+1:00) and waits up to `wait_s` more for every traded symbol's bar, then up to
    `input_wait_s` (within `wait_s`) for the other symbols' bars the features read. A coin
    with no trade in a minute has no bar (Alpaca sends none): after the wait the symbols
    that have one decide.
    """

    def __init__(
        self,
        stream: BarStream,
        clock: Clock,
        session: Session,
        warehouse: Path,
        symbols: Iterable[str],
        *,
        outbox: Path | None,
        lock_timeout_s: float,
        wait_s: float,
        grace_s: float = 3.0,
        input_wait_s: float = 2.0,
        name: str = "bar-stream",
    ) -> None:
        self.stream, self.clock, self.session = stream, clock, session
        self.symbols = sorted(set(symbols))
        self.wait_s, self.grace_s, self.name = wait_s, grace_s, name
        self.input_wait_s = input_wait_s
        self.lock_timeout_s = lock_timeout_s
        # Bars validated and stored by the handler, kept in memory for the decisions; with
        # the warehouse held by another process they go to the outbox and trading goes on.
        # Stocks' bars outside their regular sessions are held back, as the ingest does.
        self.store = BarStore(
            warehouse,
            outbox=outbox,
            lock_timeout_s=lock_timeout_s,
            regular_hours=exchange_calendars(warehouse, self.symbols),
        )
        self.arrivals = Arrivals()
        # DuckDB (2.0) breaks when two threads of one process open and close connections to
        # one file at the same moment ("python_arrow_scan does not exist", "unique file
        # handle conflict"): the stream thread's writes and the decisions take turns.
        self._turn = threading.Lock()
        self.traded = set()
        self._running: StreamThread | None = None
        self._started = False

    @property
    def stale_reason(self) -> str | None:
        return getattr(self.stream, "stale_reason", None)

    async def _handler(self, frame: pl.DataFrame) -> None:
        with self._turn:
            self.store.store(frame, self.clock.now())
        self.arrivals.stored(frame)

    def __enter__(self) -> StreamFeed:
        self.stream.subscribe(self.symbols, self._handler)
        self._running = StreamThread(self.stream, self.name)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._running is not None:
            self._running.stop()
            if self._running.error is not None:
                log.warning("bar stream ended with: %s", self._running.error)

    def turn(self) -> AbstractContextManager[Any]:
        return self._turn

    def next_minute(self) -> float | None:
        assert self._running is not None, "enter the feed first"
        if not self._started:
            # Started mid-session, the warm-up stopped before the bar that closed at the last
            # boundary: decide it now (when stored), as a replay started there does, so the
            # policy sees every bar of the session once. At the open there is none.
            self._started = True
            return time.perf_counter()
        if self.clock.now() >= self.session.close:
            return None
        self._running.raise_if_stopped()
        now = self.clock.now()
        boundary = _floor_minute(now) + MINUTE
        self.clock.sleep(max(0.0, (boundary - now).total_seconds()) + self.grace_s)
        bar = boundary - MINUTE
        deadline = time.monotonic() + self.wait_s
        for symbol in sorted(self.traded):
            self.arrivals.wait_for(symbol, bar, max(0.0, deadline - time.monotonic()))
        # The inputs (other symbols' bars) a little longer, bounded: a decision without one
        # reads it back from the warehouse, or goes on with its last value.
        inputs_by = min(deadline, time.monotonic() + self.input_wait_s)
        for symbol in sorted(set(self.symbols) - self.traded):
            self.arrivals.wait_for(symbol, bar, max(0.0, inputs_by - time.monotonic()))
        return time.perf_counter()


# ---- the session ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Traded:
    """One symbol's production model in a session."""

    symbol: str
    model_id: str
    policy: AgentPolicy
    params: Mapping[str, Any] = field(default_factory=dict)
    allocation: float = 1.0


@dataclass(frozen=True)
class SessionPlan:
    """What a session trades and under which rules (everything but the adapters)."""

    run_id: str
    mode: str
    account: str
    session: Session
    warehouse: Path
    outbox: Path
    risk_limits: RiskLimits
    kill_file: Path
    lock_timeout_s: float | None = None
    """How long a write waits for a warehouse another process holds before its rows go to
    the outbox (None: the setting; paper/live use a short one)."""
    flatten_before_close_min: float = 1.0
    allow_short: bool = False
    reconcile_every_min: int = 5
    max_minutes: int | None = None


@dataclass
class SessionAdapters:
    """The external systems one session talks to, chosen by the wiring (flows.wiring)."""

    clock: Clock
    broker: Broker
    feed: MinuteFeed
    simulated: SimulatedBroker | None = None
    """The simulated broker when the account is the run's own (a replay): the book starts
    from it, its fills come from it, there is nothing to recover and no account to share."""
    trade_updates: TradeUpdates | None = None
    """The account's fills as they happen (paper/live); the REST poller is the fallback."""


class Ticker(Protocol):
    """Something refreshed after every minute (the Prefect session view)."""

    def tick(self, now: datetime, con: Any = None, *, final: bool = False) -> bool: ...


@dataclass
class SessionResult:
    decided: int
    """Minutes in which at least one symbol decided."""
    decided_ms: list[float]
    """Per such minute: ms from the bars being stored to every symbol having decided."""
    warmed: int


class TradingSession:
    """The traded symbols' runners on one account, book and ledger, driven by a feed."""

    def __init__(
        self,
        plan: SessionPlan,
        traded: Iterable[Traded],
        adapters: SessionAdapters,
        *,
        view: Ticker | None = None,
        logger: Logger = log,
    ) -> None:
        self.plan, self.adapters, self.view, self.log = plan, adapters, view, logger
        self.clock, self.broker, self.feed = adapters.clock, adapters.broker, adapters.feed
        self.ledger = Ledger(
            plan.warehouse, mode=plan.mode, outbox=plan.outbox, lock_timeout_s=plan.lock_timeout_s
        )
        # The book starts from the ledger's fills: of this run on an account of its own (a
        # restarted replay; the new simulated broker's view is then adopted and recorded at
        # reconciliation), of the mode's account otherwise.
        with connect(plan.warehouse) as con:
            # Rows a run killed while the warehouse was locked left in the outbox go in first:
            # the book, the order recovery and the reconciliation read the warehouse (a
            # partial fill booked only there would be recovered again as a bigger one).
            self.ledger.flush(con)
            ours = warehouse_positions(
                con, run_id=plan.run_id if adapters.simulated is not None else None, mode=plan.mode
            )
        self.book = Book(cash=self.broker.get_account().cash, qty=ours)
        self.runners: dict[str, LiveRunner] = {}
        self.unexplained: dict[str, tuple[float, datetime]] = {}
        """Other symbols' quantities on the account no stored fill explained at the last
        reconciliation (another flow's fill not stored yet, or a trade by hand)."""
        self.poller: OrderFillPoller | None = None
        account_fills: Callable[[], Any] | None = None
        if adapters.simulated is None:
            # One poller for the account: a fill is handed out once, to whichever engine
            # syncs first, and booked once in the shared book.
            self.poller = OrderFillPoller(
                self.broker,
                lambda: [c for r in self.runners.values() for c in r.engine.open_orders],
            )
            # Fills as they happen from the trade-updates stream; the poller is the fallback.
            updates = adapters.trade_updates
            account_fills = self.poller if updates is None else StreamedFills(self.poller, updates)
        for t in sorted(traded, key=lambda t: t.symbol):
            self.runners[t.symbol] = self._runner(t, account_fills)
        timeframes = {r.spec.timeframe for r in self.runners.values()}
        if len(timeframes) != 1:
            raise ValueError(f"one session trades one timeframe, not {sorted(timeframes)}")
        self.timeframe = timeframes.pop()
        self.warmed = 0
        self.symbols = sorted({s for r in self.runners.values() for s in r.spec.symbols})
        """Every symbol the runners' features read (the traded ones and their inputs)."""
        self.feed.traded = set(self.runners)
        self.guard = AccountRisk(
            plan.account,
            plan.run_id,
            plan.warehouse,
            plan.lock_timeout_s if plan.lock_timeout_s is not None else 2.0,
            enabled=adapters.simulated is None,
        )

    def _runner(self, t: Traded, account_fills: Callable[[], Any] | None) -> LiveRunner:
        plan, sim = self.plan, self.adapters.simulated
        orders: OrderManager
        if sim is not None:
            fills: Callable[[], Any] = sim.new_fills
            orders = OrderManager(self.broker, sleep=self.clock.sleep)
        else:
            assert self.poller is not None and account_fills is not None
            fills = account_fills
            orders = TrackedOrderManager(self.broker, self.poller, sleep=self.clock.sleep)
        spec = t.policy.spec
        risk = RiskEngine(
            plan.risk_limits,
            kill_file=plan.kill_file,
            alert_as=t.symbol,
            fractional=is_coin(t.symbol),
        )
        if sim is not None:  # a replay's account rules: refuse what its broker would refuse
            enforce_account_rules(
                risk,
                sim.rules,
                coin=is_coin(t.symbol),
                fee_bps=sim.fee_rate * 1e4,
                slippage_bps=sim.slip_rate * 1e4,
            )
        engine = TradingEngine(
            EngineConfig(
                run_id=plan.run_id,
                mode=plan.mode,
                account=plan.account,
                symbol=t.symbol,
                model_id=t.model_id,
                feature_names=tuple(spec.names()),
                allocation=t.allocation,
                fractional=is_coin(t.symbol),
                flatten_before_close_min=plan.flatten_before_close_min,
                allow_short=plan.allow_short,
            ),
            StepwiseQ(t.policy),
            self.broker,
            risk,
            orders,
            self.ledger,
            self.book,
            fills,
            seen_via="sim" if sim is not None else "rest",
        )
        return LiveRunner(
            engine,
            spec,
            plan.session,
            plan.warehouse,
            self.broker,
            self.ledger,
            inputs=input_loader(spec, dict(t.params)),
            calendar=stored_calendar(plan.warehouse, t.symbol),
        )

    @property
    def risks(self) -> list[RiskEngine]:
        return [r.engine.risk for r in self.runners.values()]

    def open(self) -> int:
        """Recover, reconcile, warm up; returns the bars the policies were warmed up on."""
        plan, now = self.plan, self.clock.now()
        for r in self.runners.values():
            if (kill := r.engine.risk.manual_kill_reason()) is not None:
                self.log.warning("%s: this session sends no order that adds risk", kill)
                break
        if self.poller is not None:
            # A run killed between the broker's accept and the ledger's flush: record what
            # the broker has of this run's orders (nothing is resent) before reconciling.
            with connect(plan.warehouse) as con:
                for symbol, r in self.runners.items():
                    recover_orders(
                        r.engine,
                        self.poller,
                        self.broker,
                        con,
                        candidates=session_client_ids(plan.run_id, symbol, plan.session.open, now),
                        now=now,
                    )
        with connect(plan.warehouse) as con:
            found = self._reconcile_with(con, now)
        if found:
            self.log.warning(
                "reconciliation at start: %d difference(s); the broker's view adopted", found
            )
        warmed = max((r.start(now) for r in self.runners.values()), default=0)
        with connect(plan.warehouse) as con:
            started = day_start_equity(con, plan.account, plan.session)
        if started is not None:
            # A restart: the daily loss limit counts from the day's start, not from now.
            for risk in self.risks:
                risk.resume_day(plan.session.day, started)
            self.log.info("restarted mid-day: the daily loss limit counts from %.2f", started)
        # The whole account's limits, checked every minute beside each symbol's own (one
        # account, several flows); not in a replay, whose simulated account is its own.
        self.guard.tick(self.broker, self.risks, self.clock.now())
        self.warmed = warmed
        return warmed

    def run(self) -> SessionResult:
        """The minute loop, to the session's end or max_minutes; the ledger flushed at the end."""
        updates = self.adapters.trade_updates
        if updates is not None:
            updates.start()
        decided, decided_ms = 0, []
        try:
            with self.feed as feed:
                while self.plan.max_minutes is None or decided < self.plan.max_minutes:
                    arrived = feed.next_minute()
                    if arrived is None:
                        break
                    if self._decide(feed, arrived):
                        decided += 1
                        decided_ms.append((time.perf_counter() - arrived) * 1000)
                    if decided and decided % self.plan.reconcile_every_min == 0:
                        self._reconcile()
                    with feed.turn():
                        now = self.clock.now()
                        self.guard.tick(self.broker, self.risks, now, feed.held)
                        if self.view is not None:
                            self.view.tick(now, feed.held)
                for r in self.runners.values():
                    r.engine.sync_fills()  # the last decision's order
        finally:
            if updates is not None:
                updates.stop()
        # Rows still buffered: with the warehouse locked they are kept in the outbox (merged
        # by the next write that gets the file), not lost with this process.
        self.ledger.flush()
        with connect(self.plan.warehouse) as con:
            self.ledger.flush(con)
            if self.view is not None:
                self.view.tick(self.clock.now(), con, final=True)
        return SessionResult(decided, decided_ms, self.warmed)

    def _decide(self, feed: MinuteFeed, arrived: float) -> bool:
        """Every symbol decides on the bars that closed at the last minute boundary."""
        with feed.turn(), feed.connection() as con:
            follow_stream_health(feed, self.risks, self.log)
            for r in self.runners.values():
                r.con = con
                r.lock_timeout_s = feed.lock_timeout_s if con is not None else 0.0
            try:
                now = self.clock.now()
                minute = _floor_minute(now) - MINUTE
                for r in self.runners.values():
                    r.engine.sync_fills()
                symbols = tuple(self.symbols)
                fresh = feed.store.minute(minute, symbols)
                if fresh is None:
                    # A symbol's bar missing in memory (no trade that minute, or late): read
                    # the minute back once for every runner; locked out, take what came.
                    fresh = (
                        bars_by_minute(con, symbols, self.timeframe, minute, minute + MINUTE)
                        if con is not None
                        else feed.store.recent.get(minute)
                    )
                acted = []
                sim = self.adapters.simulated
                for symbol, r in self.runners.items():
                    if sim is not None:  # its account as the simulated broker judges it now,
                        # after the orders the runners before this one placed
                        see_simulated_account(r.engine.risk, sim, symbol, now)
                    acted.append(r.on_bar_stored(now, arrived=arrived, fresh=fresh, flush=False))
                self.ledger.flush(con) if con is not None else self.ledger.flush()
            finally:
                for r in self.runners.values():
                    r.con = None
        return any(a is not None for a in acted)

    def _reconcile(self) -> None:
        # Fills first: one not booked yet would look like a position difference, be adopted,
        # then be booked again when polled. While an order is still open the broker's
        # positions can move between the two reads: reconcile later.
        for r in self.runners.values():
            r.engine.sync_fills()
        if not any(r.engine.open_orders for r in self.runners.values()):
            with self.feed.turn(), self.feed.connection() as con:
                self._reconcile_with(con, self.clock.now())

    def _reconcile_with(self, con: Any, now: datetime) -> int:
        """reconcile() of the symbols this session trades; another flow's positions on the
        account are told apart by the account's stored fills (`con`; None: locked, ask later)."""
        plan = self.plan

        def stored() -> dict[str, float] | None:
            return None if con is None else account_positions(con, plan.mode)

        return reconcile(
            self.book,
            self.broker,
            self.ledger,
            account=plan.account,
            run_id=plan.run_id,
            now=now,
            own=set(self.runners),
            others=stored,
            unexplained=self.unexplained,
        )
