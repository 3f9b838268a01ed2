"""Soak harness: replayed trading days under seeded faults; the ledger must equal the broker's record.

The days run through the session paper and live run (trading.session.TradingSession: its
set-up, recovery and reconciliation at every start, and its minute loop), in-process and
without Prefect (a flow run per restart would be too slow), as a paper session on one
broker account: orders through `TrackedOrderManager` to a fault-injecting wrapper around
one `SimulatedBroker`, fills from the trade-updates stream with the `OrderFillPoller` as
the fallback, the `Ledger` with its Parquet outbox, the account-wide risk check. The
simulated broker is the broker: it outlives every kill, and its orders and fills are the
record the warehouse is compared with at the end.

The minutes come from `SoakFeed`, the session's `MinuteFeed`: the market (the simulated
broker fills from every bar), the bar stream (bars through the stream handler's store),
and the faults, each drawn per minute on a numpy seed and injected between the minutes
or armed in the adapters for the minute's decision:
- kill: the process dies (`SoakKill`) at one of three points -- before the decision,
  right after the broker accepted an order, or right after fills were taken from the
  trade-updates stream -- with every in-memory object but the broker (the ledger buffer
  unflushed); a new TradingSession of the same run id is the restart, which recovers and
  reconciles from warehouse + broker and decides the interrupted minute;
- lock: another process holds the DuckDB file for a few minutes: as in a paper session,
  the bars go to the outbox, decisions are made from the bars in memory and their ledger
  rows go to the outbox, all merged by the next write that gets the file;
- rate_limit: the next submit(s) fail with the broker's 429 error, sometimes AFTER the
  broker accepted the order;
- silence: the bar stream goes quiet for a few minutes (the market and the broker go on;
  the stream reports itself stale), then delivers the withheld bars late: no decision is
  made on them.

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
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
import torch

from adapters.alpaca import AlpacaError
from adapters.clock import ManualClock
from adapters.protocols import Account, MarketClock, Order, OrderRequest, Position
from adapters.sim_broker import SimulatedBroker
from adapters.synthetic import SyntheticBarSource, SyntheticConfig
from models.env import FLAT, HOLD, LONG
from models.features import FeatureScaler, FeatureSpec, compute_features
from models.qnet import Architecture, NestedLSTMQNet
from models.registry import AgentPolicy
from trading.backtest import session_q_paths
from trading.calendar import NYSECalendar, Session
from trading.engine import FINAL, MINUTE
from trading.live import BarStore
from trading.reconcile import warehouse_positions
from trading.risk import RiskLimits
from trading.session import MinuteFeed, SessionAdapters, SessionPlan, Traded, TradingSession
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
"""Where a kill strikes: before the minute's decision, right after the broker accepted an
order, right after fills were taken from the trade-updates stream (before they are booked)."""
KILL_POINTS: tuple[KillPoint, ...] = ("before_decision", "after_submit", "after_poll")
FAULT_KINDS = ("kill", "lock", "rate_limit", "silence")
LOCK_TIMEOUT_S = 0.05
"""How long the session's writes and decisions wait for a warehouse another process holds."""


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
    """Periodic reconciliation (SessionPlan.reconcile_every_min): every this many minutes
    decided by one process."""
    max_volume_share: float | None = 0.001
    """Partial fills: an order fills at most this share of each bar's volume (the synthetic
    SPY minute trades ~130k shares, so orders of a few hundred shares fill over 2-3 bars at
    quiet minutes); None fills whole orders."""
    trade_updates: bool = True
    """Fills also by the (simulated) trade-updates stream, the poller as the fallback (without
    it the kill after fills were taken from the stream never strikes)."""
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
    faults keep their sequence). `start()` is a reconnect: the last few events come again;
    `stop()` drops what was not drained (gone with the connection). `kill_after_drain`
    kills the process once events were taken, before the session books them.
    """

    def __init__(self, sim: SimulatedBroker, seed: int, p_loss: float, p_repeat: float) -> None:
        self.sim = sim
        self.rng = np.random.default_rng(seed)
        self.p_loss, self.p_repeat = p_loss, p_repeat
        self.filled: dict[str, float] = {}
        self.recent: list[tuple[Order, datetime | None]] = []
        self.queue: list[tuple[Order, datetime | None]] = []
        self.lost = self.repeated = self.replayed = 0
        self.kill_after_drain = False

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
        if out and self.kill_after_drain:
            self.kill_after_drain = False
            raise SoakKill("killed right after fills were taken from the stream, before booking")
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


# ----------------------------------------------------------------------------- the feed


class SoakFeed(MinuteFeed):
    """The soak's minutes for a TradingSession, its faults drawn per minute between them.

    Each minute: the clock onto the minute's close, the simulated broker filling from the
    traded symbol's bar (the market goes on, whatever the stream delivers), the
    trade-updates stream queueing the new fills; then the minute's draws (the same every
    minute: a seed is one sequence of faults) and the bars through the stream handler's
    store -- or withheld while the stream is silent (it reports itself stale), then
    delivered late with the next ones. A lock taken is held through the decisions of its
    minutes (another process: the store and the ledger send their rows to the outbox). A
    kill strikes here before the decision, or is armed in the broker (after a submit) or
    the trade-updates stream (after fills were taken) for the minute's decision.

    The feed is the world, not the process: it outlives a kill. The soak then builds the
    restarted TradingSession on it, whose first minute is the one the kill interrupted (no
    new draws; its bars were stored or withheld before), read by a new store (the stream
    handler's memory died with the process), as a paper session restarted mid-session
    decides the last closed minute first.
    """

    def __init__(
        self,
        config: SoakConfig,
        bars: pl.DataFrame,
        warehouse: Path,
        outbox: Path,
        clock: ManualClock,
        sim: SimulatedBroker,
        broker: FaultyBroker,
        stream: SimTradeUpdates | None,
    ) -> None:
        self.config, self.bars, self.warehouse, self.outbox = config, bars, warehouse, outbox
        self.clock, self.sim, self.broker, self.stream = clock, sim, broker, stream
        self.rng = np.random.default_rng(config.seed)
        self.holder = LockHolder(warehouse)
        self.lock_timeout_s = LOCK_TIMEOUT_S
        self.store = BarStore(warehouse, outbox=outbox, lock_timeout_s=LOCK_TIMEOUT_S)
        self.traded = set()
        self.faults: Counter[str] = Counter()
        self.kill_points: Counter[str] = Counter()
        self.minutes = self.withheld_bars = 0
        self._minutes: Iterator[tuple[tuple[object, ...], pl.DataFrame]] = iter(())
        self._pending: list[pl.DataFrame] = []
        self._lock_left = self._silence_left = 0
        self._quiet = False
        self._kill: KillPoint | None = None
        self._again = False

    def day(self, session: Session) -> None:
        """The session's minutes (from the open, `minutes_per_day` of them) come next."""
        day = self.bars.filter((pl.col("ts") >= session.open) & (pl.col("ts") < session.close))
        if self.config.minutes_per_day is not None:
            day = day.filter(pl.col("ts") < session.open + self.config.minutes_per_day * MINUTE)
        self._minutes = iter(day.group_by(["ts"], maintain_order=True))
        self._pending, self._lock_left, self._silence_left = [], 0, 0
        self._quiet = self._again = False

    @property
    def stale_reason(self) -> str | None:
        return "the bar stream is silent" if self._quiet else None

    def __enter__(self) -> SoakFeed:
        self.store = BarStore(self.warehouse, outbox=self.outbox, lock_timeout_s=LOCK_TIMEOUT_S)
        if not self.holder.held:
            self._hold()
        return self

    def __exit__(self, *exc: object) -> None:
        self._let_go()

    def _hold(self) -> None:
        """Held across minutes, as a fast replay does; let go whenever another process needs it."""
        if self.held is None:
            self.held = open_connection(self.warehouse, timeout_s=30)

    def _let_go(self) -> None:
        if self.held is not None:
            self.held.close()
            self.held = None

    def _arm(self, kill: KillPoint | None) -> None:
        self.broker.kill_after_submit = kill == "after_submit"
        if self.stream is not None:
            self.stream.kill_after_drain = kill == "after_poll"

    def next_minute(self) -> float | None:
        self._arm(None)  # kills armed for the last minute and not triggered lapse
        if self._again:
            self._again = False
            return time.perf_counter()
        if self.holder.held and not self._lock_left:
            self.holder.release()
            self._hold()
        item = next(self._minutes, None)
        if item is None:
            self._close()
            return None
        (minute,), frame = item
        assert isinstance(minute, datetime)
        self.minutes += 1
        self.clock.set(minute + MINUTE)
        now = self.clock.now()
        for symbol, open_, close, volume in frame.select(
            "symbol", "open", "close", "volume"
        ).iter_rows():
            if symbol in self.traded:
                self.sim.on_bar(symbol, minute, float(open_), float(close), volume=float(volume))
        if self.stream is not None:
            self.stream.pump(now)
        self._kill = self._draw()
        self._pending.append(frame)
        self._quiet = self._silence_left > 0
        if self._quiet:  # kept back; delivered when the stream speaks again
            self._silence_left -= 1
            self.withheld_bars += frame.height
        else:
            for part in self._pending:
                self.store.store(part, now, self.held)
            self._pending.clear()
        arrived = time.perf_counter()
        if self._lock_left:
            self._lock_left -= 1  # let go at the next minute, after this one's decision
        if self._kill == "before_decision":
            raise SoakKill("killed before the minute's decision")
        self._arm(self._kill)
        return arrived

    def _draw(self) -> KillPoint | None:
        """This minute's faults: a lock taken, a silence begun, 429s ahead; the kill, if any."""
        config, rng = self.config, self.rng
        draw = rng.random(4)
        if not self._lock_left and draw[0] < config.p_lock:
            self._let_go()
            low, high = config.lock_minutes
            self._lock_left = int(rng.integers(low, high + 1))
            self.holder.hold()
            self.faults["lock"] += 1
        if not self._silence_left and draw[1] < config.p_silence:
            low, high = config.silence_minutes
            self._silence_left = int(rng.integers(low, high + 1))
            self.faults["silence"] += 1
        if draw[2] < config.p_rate_limit:
            self.broker.fail_submits = int(rng.integers(1, 3))
            self.broker.after_accept = bool(rng.random() < 0.5)
        if draw[3] < config.p_kill and not self._lock_left:
            return KILL_POINTS[int(rng.integers(0, len(KILL_POINTS)))]
        return None

    def killed(self) -> None:
        """The session died (SoakKill): counted; the next one decides the minute again."""
        self.faults["kill"] += 1
        self.kill_points[self._kill or "unknown"] += 1
        self._kill = None
        self._arm(None)
        self._again = True

    def _close(self) -> None:
        """The close: the lock let go, the withheld bars come in, day orders still open expire."""
        self.holder.release()
        self._lock_left = 0
        self._hold()
        for part in self._pending:
            self.store.store(part, self.clock.now(), self.held)
        self._pending.clear()
        self._quiet = False
        for order in self.sim.orders():
            if order.status not in FINAL:
                self.sim.cancel_order(order.id)

    def close(self) -> None:
        self._let_go()
        self.holder.release()
        self.holder.close()


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
    stream = (
        SimTradeUpdates(sim, config.seed + 1, config.p_stream_loss, config.p_stream_repeat)
        if config.trade_updates
        else None
    )
    feed = SoakFeed(config, bars, warehouse, outbox, clock, sim, broker, stream)
    traded = [Traded(spec.traded, "soak-untrained", policy)]
    decisions = outboxed = 0
    try:
        for session in sessions:
            clock.set(session.open)
            feed.day(session)
            plan = SessionPlan(
                run_id=f"soak-{config.seed}-{session.day}",
                mode=MODE,
                account=ACCOUNT,
                session=session,
                warehouse=warehouse,
                outbox=outbox,
                risk_limits=RiskLimits(),
                kill_file=workdir / "KILL_SWITCH",  # never there
                lock_timeout_s=LOCK_TIMEOUT_S,
                flatten_before_close_min=2.0,
                reconcile_every_min=config.reconcile_every_min,
            )
            while True:
                # A start, or the restart after a kill: recovery and reconciliation, warm-up.
                adapters = SessionAdapters(clock, broker, feed, trade_updates=stream)
                trading = TradingSession(plan, traded, adapters)
                try:
                    trading.open()
                    trading.run()
                    break
                except SoakKill:
                    feed.killed()  # the session dropped, its ledger buffer with it
                finally:
                    decisions += sum(r.engine.decisions for r in trading.runners.values())
                    outboxed += trading.ledger.outboxed
        feed.faults["rate_limit"] = broker.raised_429
    finally:
        feed.close()
    result = compare(warehouse, sim, decisions, outboxed)
    result.minutes = feed.minutes
    result.faults = {kind: int(feed.faults[kind]) for kind in FAULT_KINDS}
    result.kill_points = {p: int(feed.kill_points[p]) for p in KILL_POINTS}
    result.rate_limited_after_accept = broker.raised_after_accept
    result.withheld_bars = feed.withheld_bars
    result.partially_filled_orders = sim.partially_filled_orders()
    result.broker_executions = sim.executions()
    if stream is not None:
        result.stream_lost = stream.lost
        result.stream_repeated = stream.repeated
        result.stream_replayed = stream.replayed
    result.wall_s = time.perf_counter() - started
    return result


# ----------------------------------------------------------------------------- the verdict


def compare(warehouse: Path, sim: SimulatedBroker, decisions: int, outboxed: int) -> SoakResult:
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
        decisions=decisions,
        broker_orders=len(orders),
        broker_fills=len(filled),
        faults={},
        kill_points={},
        rate_limited_after_accept=0,
        withheld_bars=0,
        outboxed_rows=outboxed,
        wall_s=0.0,
        fills_by_stream=routes.get("stream", 0),
        fills_by_rest=routes.get("rest", 0),
    )
