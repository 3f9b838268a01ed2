"""Soak harness: replayed trading days under seeded faults; the ledger must equal the broker's record.

The parts a paper/live session uses, driven in-process minute by minute (no Prefect: a
flow run per restart would be too slow): bars stored by the stream handler's
`store_bars`, `LiveRunner.on_bar_stored` -> engine -> risk -> `TrackedOrderManager` ->
a fault-injecting wrapper around one `SimulatedBroker`, fills from `OrderFillPoller`,
the `Ledger` with its Parquet outbox, `recover_orders` and `reconcile` at every start.
The simulated broker is the broker: it outlives every kill, and its orders and fills are
the record the warehouse is compared with at the end.

Faults, each drawn per minute on a numpy seed:
- kill: every in-memory object but the broker is dropped (the ledger buffer unflushed) at
  one of three points -- before the decision, right after the broker accepted an order, or
  right after fills were polled -- and the run starts again from warehouse + broker;
- lock: another process holds the DuckDB file for a few minutes: bars cannot be stored
  (kept for later, as a gap-fill would), fills polled meanwhile go to the outbox;
- rate_limit: the next submit(s) fail with the broker's 429 error, sometimes AFTER the
  broker accepted the order;
- silence: the bar stream goes quiet for a few minutes (the market and the broker go on),
  then delivers the withheld bars late: no decision is made on them.

Orders fill at most a share of each bar's volume (`max_volume_share`: partial fills over
several bars). Fills come as in a paper session: from the account's trade-updates stream (simulated
here, `SimTradeUpdates`: each fill's order state, lost with `p_stream_loss`, sent twice
with `p_stream_repeat`, the last few sent again after every restart's reconnect) through
`StreamedFills`, with the REST poller as the fallback for what the stream lost.

SYNTHETIC data: generated minute bars of SPY, VTI, VXUS, BND, and an untrained network whose
Q head is re-centred so that it trades often (its decisions are not the point).
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Literal

import duckdb
import numpy as np
import polars as pl
import torch

from adapters.alpaca import AlpacaError
from adapters.clock import ManualClock
from adapters.protocols import Account, Fill, MarketClock, Order, OrderRequest, Position
from adapters.sim_broker import SimulatedBroker
from adapters.synthetic import SyntheticBarSource, SyntheticConfig
from models.env import FLAT, HOLD, LONG
from models.features import FeatureScaler, FeatureSpec, compute_features
from models.qnet import Architecture, NestedLSTMQNet
from models.registry import AgentPolicy
from trading.backtest import session_q_paths
from trading.calendar import NYSECalendar, Session
from trading.engine import FINAL, MINUTE, Book, EngineConfig, StepwiseQ, TradingEngine
from trading.ledger import Ledger
from trading.live import LiveRunner, store_bars
from trading.reconcile import (
    OrderFillPoller,
    StreamedFills,
    TrackedOrderManager,
    reconcile,
    recover_orders,
    session_client_ids,
    warehouse_positions,
)
from trading.risk import RiskEngine
from warehouse.bars import ingest_bar_frames
from warehouse.db import connect, open_connection
from warehouse.trade_history import (
    filled_qty_by_broker_order,
    fills_by_route,
    late_order_count,
    placed_client_order_ids,
)

log = logging.getLogger(__name__)

MODE = "paper"
"""Ledger mode of the soak's rows: a persistent broker account, as paper trading has."""
ACCOUNT = "soak"
WEEK = tuple(date(2024, 6, 24) + timedelta(days=i) for i in range(5))  # Mon-Fri, no holiday
KillPoint = Literal["before_decision", "after_submit", "after_poll"]
KILL_POINTS: tuple[KillPoint, ...] = ("before_decision", "after_submit", "after_poll")
FAULT_KINDS = ("kill", "lock", "rate_limit", "silence")


class SoakKill(BaseException):
    """The process dies here (a BaseException: no `except Exception` of the engine stops it)."""


@dataclass(frozen=True)
class SoakConfig:
    """One soak: which days, how many minutes of each, which faults how often."""

    days: tuple[date, ...] = WEEK
    """NYSE sessions replayed one after another on one broker account."""
    minutes_per_day: int | None = None
    """Minutes of each session replayed from the open; None: the whole session."""
    seed: int = 19
    """Seed of the faults."""
    market_seed: int = 19
    """Seed of the synthetic bars and of the network (19: a network that trades often)."""
    p_kill: float = 0.01
    """Probability per minute of a kill."""
    p_lock: float = 0.01
    """Probability per minute that another process takes the warehouse lock."""
    p_rate_limit: float = 0.02
    """Probability per minute that the next submit(s) meet a 429."""
    p_silence: float = 0.01
    """Probability per minute that the bar stream goes silent."""
    lock_minutes: tuple[int, int] = (1, 4)
    """How long a lock is held, in minutes (inclusive range)."""
    silence_minutes: tuple[int, int] = (1, 4)
    """How long the stream stays silent, in minutes (inclusive range)."""
    cash: float = 100_000.0
    """Starting cash of the broker account."""
    reconcile_every_min: int = 15
    """Periodic reconciliation, as the live loop does it."""
    max_volume_share: float | None = 0.001
    """Partial fills: an order fills at most this share of each bar's volume (the synthetic
    SPY minute trades ~130k shares, so orders of a few hundred shares fill over 2-3 bars at
    quiet minutes); None fills whole orders."""
    trade_updates: bool = True
    """Fills also by the (simulated) trade-updates stream, the poller as the fallback."""
    p_stream_loss: float = 0.05
    """Probability that the stream loses a fill's event (the poller must book it)."""
    p_stream_repeat: float = 0.05
    """Probability that the stream sends a fill's event twice."""


@dataclass
class SoakResult:
    """What the soak did and what it found; the three figures must all be 0."""

    duplicate_orders: int
    lost_fills: int
    position_drift: float
    unrecorded_orders: int
    stale_orders: int
    minutes: int
    decisions: int
    broker_orders: int
    broker_fills: int
    faults: dict[str, int]
    kill_points: dict[str, int]
    rate_limited_after_accept: int
    withheld_bars: int
    outboxed_rows: int
    wall_s: float
    fills_by_stream: int = 0
    """Fills the warehouse booked from the trade-updates stream (seen_via 'stream')."""
    fills_by_rest: int = 0
    """...and from the REST poller (the stream lost them, or the poll came first)."""
    stream_lost: int = 0
    """Fill events the simulated stream lost."""
    stream_repeated: int = 0
    """Fill events it sent twice (and replayed after restarts: stream_replayed)."""
    stream_replayed: int = 0
    partially_filled_orders: int = 0
    """Orders the broker filled in more than one execution (partial fills)."""
    broker_executions: int = 0
    """The broker's fills (executions): one per order, more for partially filled ones."""


# ----------------------------------------------------------------------------- faults


class FaultyBroker:
    """The Broker protocol over the simulated broker, with 429s and kills injected on demand."""

    def __init__(self, sim: SimulatedBroker) -> None:
        self.sim = sim
        self.fail_submits = 0
        """The next this many submits raise the broker's 429 error."""
        self.after_accept = False
        """Whether those 429s come after the broker accepted the order."""
        self.kill_after_submit = False
        self.raised_429 = 0
        self.raised_after_accept = 0
        self.kills = 0

    def submit_order(self, request: OrderRequest) -> Order:
        if self.fail_submits > 0:
            self.fail_submits -= 1
            self.raised_429 += 1
            if self.after_accept and request.client_order_id not in self._known():
                self.sim.submit_order(request)
                self.raised_after_accept += 1
            # What adapters.alpaca raises once alpaca-py's own retries of a 429 ran out.
            raise AlpacaError(
                "Alpaca answered 429 to POST /v2/orders: too many requests",
                status=429,
                alpaca_message="too many requests",
            )
        order = self.sim.submit_order(request)
        if self.kill_after_submit:
            self.kill_after_submit = False
            self.kills += 1
            raise SoakKill("killed right after the broker accepted an order")
        return order

    def _known(self) -> set[str]:
        return {o.client_order_id for o in self.sim.orders()}

    def list_orders(
        self, status: Literal["open", "closed", "all"] = "open", limit: int = 500
    ) -> list[Order]:
        orders = self.sim.orders()[::-1]  # newest first, as Alpaca lists them
        if status == "open":
            orders = [o for o in orders if o.status not in FINAL]
        elif status == "closed":
            orders = [o for o in orders if o.status in FINAL]
        return orders[:limit]

    def get_account(self) -> Account:
        return self.sim.get_account()

    def get_clock(self) -> MarketClock:
        return self.sim.get_clock()

    def get_positions(self) -> list[Position]:
        return self.sim.get_positions()

    def get_order_by_client_id(self, client_order_id: str) -> Order | None:
        return self.sim.get_order_by_client_id(client_order_id)

    def cancel_order(self, order_id: str) -> None:
        self.sim.cancel_order(order_id)

    def close_all_positions(self) -> list[Order]:
        return self.sim.close_all_positions()


HOLDER = textwrap.dedent(
    """
    import sys, duckdb
    con = None
    for line in sys.stdin:
        if line.strip() == "hold":
            con = duckdb.connect(sys.argv[1])
        elif con is not None:
            con.close()
            con = None
        print("ok", flush=True)
    """
)


class SimTradeUpdates:
    """The simulated account's trade_updates stream (the TradeUpdates protocol), with faults.

    `pump()` after each bar queues the order state of every new fill; an event is lost with
    `p_loss` or sent twice with `p_repeat` (its own seeded generator: the soak's other
    faults keep their sequence). `start()` is a reconnect: the last few events come again.
    """

    def __init__(self, sim: SimulatedBroker, seed: int, p_loss: float, p_repeat: float) -> None:
        self.sim = sim
        self.rng = np.random.default_rng(seed)
        self.p_loss, self.p_repeat = p_loss, p_repeat
        self.filled: dict[str, float] = {}
        self.recent: list[tuple[Order, datetime | None]] = []
        self.queue: list[tuple[Order, datetime | None]] = []
        self.lost = self.repeated = self.replayed = 0

    def pump(self, now: datetime) -> None:
        for order in self.sim.orders():
            if order.filled_qty > self.filled.get(order.id, 0.0) + 1e-12:
                self.filled[order.id] = order.filled_qty
                event = (order, now)
                self.recent = [*self.recent[-4:], event]
                draw = self.rng.random(2)
                if draw[0] < self.p_loss:
                    self.lost += 1
                    continue
                self.queue.append(event)
                if draw[1] < self.p_repeat:
                    self.repeated += 1
                    self.queue.append(event)

    def start(self) -> SimTradeUpdates:
        self.queue.extend(self.recent)
        self.replayed += len(self.recent)
        return self

    def drain(self) -> list[tuple[Order, datetime | None]]:
        out, self.queue = self.queue, []
        return out

    def stop(self) -> None:
        self.queue = []


class LockHolder:
    """Another process, started once, that takes and lets go of the warehouse's DuckDB lock."""

    def __init__(self, path: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.held = False

    def _say(self, word: str) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(word + "\n")
        self.proc.stdin.flush()
        if self.proc.stdout.readline().strip() != "ok":
            raise RuntimeError(f"the lock holder did not answer {word!r}")

    def hold(self) -> None:
        self._say("hold")
        self.held = True

    def release(self) -> None:
        if self.held:
            self._say("release")
            self.held = False

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ----------------------------------------------------------------------------- one run


@dataclass
class _Run:
    engine: TradingEngine
    runner: LiveRunner
    ledger: Ledger
    decided: int = 0


@dataclass
class _Soak:
    config: SoakConfig
    warehouse: Path
    outbox: Path
    policy: AgentPolicy
    clock: ManualClock
    broker: FaultyBroker
    stream: SimTradeUpdates | None = None
    kill_after_poll: bool = False
    kills_after_poll: int = 0
    con: duckdb.DuckDBPyConnection | None = None
    """Held across minutes, as a fast replay does; let go whenever another process needs the file."""
    outboxed: int = 0
    decisions: int = 0

    def connection(self) -> duckdb.DuckDBPyConnection:
        if self.con is None:
            self.con = open_connection(self.warehouse, timeout_s=30)
        return self.con

    def let_go(self) -> None:
        if self.con is not None:
            self.con.close()
            self.con = None

    def fills_source(self, poller: OrderFillPoller) -> Callable[[], list[Fill]]:
        routes: Callable[[], list[Fill]] = (
            poller if self.stream is None else StreamedFills(poller, self.stream.start())
        )

        def fills() -> list[Fill]:
            out = routes()
            if out and self.kill_after_poll:
                self.kill_after_poll = False
                self.kills_after_poll += 1
                raise SoakKill("killed right after fills were polled, before the ledger flush")
            return out

        return fills

    def start(self, session: Session, run_id: str) -> _Run:
        """What a trading session does at every start (trading.session.TradingSession.open)."""
        now = self.clock.now()
        self.let_go()
        ledger = Ledger(self.warehouse, mode=MODE, outbox=self.outbox, lock_timeout_s=0.05)
        with connect(self.warehouse, timeout_s=30) as con:
            ours = warehouse_positions(con, run_id=None, mode=MODE)
        book = Book(cash=self.broker.get_account().cash, qty=ours)
        engine_ref: list[TradingEngine] = []
        poller = OrderFillPoller(
            self.broker, lambda: engine_ref[0].open_orders.keys() if engine_ref else ()
        )
        spec = self.policy.spec
        engine = TradingEngine(
            EngineConfig(
                run_id=run_id,
                mode=MODE,
                account=ACCOUNT,
                symbol=spec.traded,
                model_id="soak-untrained",
                feature_names=tuple(spec.names()),
                flatten_before_close_min=2.0,
                store_inputs=False,
            ),
            StepwiseQ(self.policy),
            self.broker,
            RiskEngine(),
            TrackedOrderManager(self.broker, poller, sleep=self.clock.sleep),
            ledger,
            book,
            self.fills_source(poller),
            seen_via="rest",
        )
        engine_ref.append(engine)
        with connect(self.warehouse, timeout_s=30) as con:
            recover_orders(
                engine,
                poller,
                self.broker,
                con,
                candidates=session_client_ids(run_id, spec.traded, session.open, now),
                now=now,
            )
        reconcile(book, self.broker, ledger, account=ACCOUNT, run_id=run_id, now=now)
        runner = LiveRunner(engine, spec, session, self.warehouse, self.broker, ledger)
        runner.start(now)
        return _Run(engine, runner, ledger)

    def finish(self, run: _Run) -> None:
        self.decisions += run.engine.decisions
        self.outboxed += run.ledger.outboxed


def _trading_policy(
    bars: pl.DataFrame, session: pl.DataFrame, spec: FeatureSpec, seed: int
) -> AgentPolicy:
    """A small untrained network whose choice flips with the features (so it trades often).

    As tests/integration/test_trading_flows.make_it_trade does: `hold` pushed far down and
    `long` shifted by the median of Q(long) - Q(flat) over one session.
    """
    torch.manual_seed(seed)
    frame = compute_features(bars, spec)
    one = compute_features(session, spec)
    net = NestedLSTMQNet(
        len(spec.names()), Architecture(fast_hidden=8, slow_hidden=4, head_hidden=8)
    )
    net.eval()
    policy = AgentPolicy(net, spec, FeatureScaler.fit(frame, spec.names()), {})
    q = np.concatenate(list(session_q_paths(policy, one).values()))
    gap = float(np.median(q[:, 0, LONG] - q[:, 0, FLAT]))
    with torch.no_grad():
        net.advantage.bias[HOLD] -= 1_000.0
        net.advantage.bias[LONG] -= gap
    return policy


# ----------------------------------------------------------------------------- the soak


def run_soak(workdir: Path, config: SoakConfig | None = None) -> SoakResult:
    """Replay the configured sessions under faults; compare the warehouse with the broker."""
    config = config or SoakConfig()
    started = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    cal = NYSECalendar()
    sessions = [s for s in (cal.session_on(d) for d in config.days) if s is not None]
    if not sessions:
        raise ValueError(f"no NYSE session among {config.days}")
    spec = FeatureSpec()
    warehouse = workdir / "soak.duckdb"
    outbox = workdir / "outbox"
    history_start = sessions[0].open - timedelta(days=4)
    source = SyntheticBarSource(SyntheticConfig(seed=config.market_seed))
    bars = pl.concat(
        list(source.fetch_bars(list(spec.symbols), "1Min", history_start, sessions[-1].close))
    ).sort("ts", "symbol")
    history = bars.filter(pl.col("ts") < sessions[0].open)
    # Only the history is stored up front; the replayed minutes arrive through the handler.
    ingest_bar_frames([history], warehouse, sessions[0].open)
    # The scaler sees the whole history; the Q head is re-centred on its last session.
    last = history.filter(pl.col("ts") >= pl.col("ts").max() - timedelta(hours=7))
    policy = _trading_policy(history, last, spec, config.market_seed)

    clock = ManualClock(sessions[0].open)
    sim = SimulatedBroker(
        clock, cash=config.cash, id_prefix="sim:soak", max_volume_share=config.max_volume_share
    )
    broker = FaultyBroker(sim)
    soak = _Soak(config, warehouse, outbox, policy, clock, broker)
    if config.trade_updates:
        soak.stream = SimTradeUpdates(
            sim, config.seed + 1, config.p_stream_loss, config.p_stream_repeat
        )
    holder = LockHolder(warehouse)
    faults: Counter[str] = Counter()
    kill_points: Counter[str] = Counter()
    minutes = withheld_bars = 0
    try:
        for session in sessions:
            clock.set(session.open)
            run_id = f"soak-{config.seed}-{session.day}"
            run = soak.start(session, run_id)
            day = bars.filter((pl.col("ts") >= session.open) & (pl.col("ts") < session.close))
            if config.minutes_per_day is not None:
                day = day.filter(pl.col("ts") < session.open + config.minutes_per_day * MINUTE)
            pending: list[pl.DataFrame] = []
            lock_left = silence_left = 0
            for (minute,), frame in day.group_by(["ts"], maintain_order=True):
                assert isinstance(minute, datetime)
                minutes += 1
                clock.set(minute + MINUTE)
                now = clock.now()
                traded = frame.filter(pl.col("symbol") == spec.traded)
                if traded.height:  # the market goes on, whatever our stream delivers
                    sim.on_bar(
                        spec.traded,
                        minute,
                        float(traded["open"][0]),
                        float(traded["close"][0]),
                        volume=float(traded["volume"][0]),
                    )
                if soak.stream is not None:
                    soak.stream.pump(now)
                # The draws: same order every minute, so a seed is one sequence of faults.
                draw = rng.random(4)
                if not lock_left and draw[0] < config.p_lock:
                    soak.let_go()
                    lock_left = int(
                        rng.integers(config.lock_minutes[0], config.lock_minutes[1] + 1)
                    )
                    holder.hold()
                    faults["lock"] += 1
                if not silence_left and draw[1] < config.p_silence:
                    silence_left = int(
                        rng.integers(config.silence_minutes[0], config.silence_minutes[1] + 1)
                    )
                    faults["silence"] += 1
                if draw[2] < config.p_rate_limit:
                    broker.fail_submits = int(rng.integers(1, 3))
                    broker.after_accept = bool(rng.random() < 0.5)
                kill: KillPoint | None = None
                if draw[3] < config.p_kill and not lock_left:
                    kill = KILL_POINTS[int(rng.integers(0, len(KILL_POINTS)))]
                pending.append(frame)
                quiet = silence_left > 0  # kept back; delivered when the stream speaks again
                if quiet:
                    silence_left -= 1
                    withheld_bars += frame.height
                if lock_left:
                    # Nothing can be stored or read: the fills polled go to the outbox.
                    lock_left -= 1
                    run.engine.sync_fills()
                    run.ledger.flush()
                    if not lock_left:
                        holder.release()
                    continue
                delivered = not quiet
                while True:
                    try:
                        run = _minute(soak, run, session, now, pending if delivered else [], kill)
                        break
                    except SoakKill:
                        soak.let_go()
                        faults["kill"] += 1
                        kill_points[kill or "unknown"] += 1
                        kill = None
                        broker.kill_after_submit = soak.kill_after_poll = False
                        soak.finish(run)  # counters only: the buffer is dropped
                        run.ledger.rows = {name: [] for name in run.ledger.rows}
                        run = soak.start(session, run_id)
                if delivered:
                    pending.clear()
                # Arms not triggered this minute lapse.
                broker.kill_after_submit = soak.kill_after_poll = False
            # The close: withheld bars come in, day orders still open expire, last sync.
            holder.release()
            for frame in pending:
                store_bars(warehouse, frame, clock.now(), soak.connection())
            soak.let_go()
            for order in sim.orders():
                if order.status not in FINAL:
                    sim.cancel_order(order.id)
            run.engine.sync_fills()
            run.ledger.flush()
            soak.finish(run)
        faults["rate_limit"] = broker.raised_429
    finally:
        soak.let_go()
        holder.release()
        holder.close()
    result = compare(warehouse, sim, soak)
    result.minutes = minutes
    result.faults = {kind: int(faults[kind]) for kind in FAULT_KINDS}
    result.kill_points = {p: int(kill_points[p]) for p in KILL_POINTS}
    result.rate_limited_after_accept = broker.raised_after_accept
    result.withheld_bars = withheld_bars
    result.partially_filled_orders = sim.partially_filled_orders()
    result.broker_executions = sim.executions()
    if soak.stream is not None:
        result.stream_lost = soak.stream.lost
        result.stream_repeated = soak.stream.repeated
        result.stream_replayed = soak.stream.replayed
    result.wall_s = time.perf_counter() - started
    return result


def _minute(
    soak: _Soak,
    run: _Run,
    session: Session,
    now: datetime,
    deliver: list[pl.DataFrame],
    kill: KillPoint | None,
) -> _Run:
    """One minute of a healthy (not locked) warehouse: store what arrived, decide, reconcile."""
    con = soak.connection()
    for frame in deliver:
        store_bars(soak.warehouse, frame, now, con)
    if kill == "before_decision":
        raise SoakKill("killed before the minute's decision")
    soak.broker.kill_after_submit = kill == "after_submit"
    soak.kill_after_poll = kill == "after_poll"
    run.runner.con = con
    try:
        if run.runner.on_bar_stored(now) is not None:
            run.decided += 1
        if run.decided and run.decided % soak.config.reconcile_every_min == 0:
            run.engine.sync_fills()
            if not run.engine.open_orders:
                reconcile(
                    run.engine.book,
                    soak.broker,
                    run.ledger,
                    account=ACCOUNT,
                    run_id=run.engine.config.run_id,
                    now=now,
                )
            run.ledger.flush(con)
    finally:
        run.runner.con = None
    return run


# ----------------------------------------------------------------------------- the verdict


def compare(warehouse: Path, sim: SimulatedBroker, soak: _Soak) -> SoakResult:
    """The warehouse's orders, fills and positions against the simulated broker's record."""
    orders = sim.orders()
    # Duplicates: one client_order_id twice, or two orders for one decision (one symbol
    # and one decision minute: the engine sends at most one order per decision).
    by_cid = Counter(o.client_order_id for o in orders)
    by_minute = Counter(
        (o.symbol, o.submitted_at.replace(second=0, microsecond=0))
        for o in orders
        if o.submitted_at is not None
    )
    duplicates = sum(n - 1 for n in by_cid.values()) + sum(n - 1 for n in by_minute.values())
    with connect(warehouse, timeout_s=30) as con:
        stored = filled_qty_by_broker_order(con, MODE)
        recorded = placed_client_order_ids(con, MODE)
        ours = warehouse_positions(con, run_id=None, mode=MODE)
        stale = late_order_count(con, MODE)
        routes = fills_by_route(con, MODE)
    filled = {o.id: o.filled_qty for o in orders if o.filled_qty > 0}
    lost = sum(1 for oid, qty in filled.items() if abs(float(stored.get(oid) or 0.0) - qty) > 1e-9)
    lost += sum(1 for oid in stored if oid not in filled)
    theirs = {p.symbol: p.qty for p in sim.get_positions()}
    drift = sum(abs(theirs.get(s, 0.0) - ours.get(s, 0.0)) for s in set(theirs) | set(ours))
    return SoakResult(
        duplicate_orders=duplicates,
        lost_fills=lost,
        position_drift=drift if drift > 1e-9 else 0.0,
        unrecorded_orders=sum(1 for o in orders if o.client_order_id not in recorded),
        stale_orders=int(stale),
        minutes=0,
        decisions=soak.decisions,
        broker_orders=len(orders),
        broker_fills=len(filled),
        faults={},
        kill_points={},
        rate_limited_after_accept=0,
        withheld_bars=0,
        outboxed_rows=soak.outboxed,
        wall_s=0.0,
        fills_by_stream=routes.get("stream", 0),
        fills_by_rest=routes.get("rest", 0),
    )
