"""One session loop for every mode (trading/session.py), driven by injected adapter sets.

The same TradingSession runs a stored day from the replay feed and from a bar stream on its
own thread (the paper/live feed, here fed in-process by a stream that delivers each minute's
bars once the clock has passed it); both make the same decisions on the same bars and send
the same orders, book what the broker filled, and reconcile to no difference. Nothing is patched: the test hands
each session its clock, broker and feed.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import torch

from adapters.clock import ManualClock
from adapters.protocols import BarHandler
from adapters.sim_broker import SimulatedBroker
from adapters.synthetic import SyntheticBarSource, SyntheticConfig
from core.universe import EQUITY_SYMBOLS
from models.features import FeatureScaler, FeatureSpec, compute_features
from models.qnet import Architecture, NestedLSTMQNet
from models.registry import AgentPolicy
from trading.calendar import NYSECalendar, Session
from trading.engine import MINUTE
from trading.risk import RiskLimits
from trading.session import (
    MinuteFeed,
    ReplayFeed,
    SessionAdapters,
    SessionPlan,
    StreamFeed,
    Traded,
    TradingSession,
)
from warehouse.bars import ingest_bar_frames
from warehouse.db import connect

DAY = date(2024, 3, 6)
HISTORY_START = datetime(2024, 3, 4, tzinfo=UTC)
MINUTES = 40


def _session() -> Session:
    session = NYSECalendar().session_on(DAY)
    assert session is not None
    return session


@pytest.fixture(scope="module")
def day_bars() -> pl.DataFrame:
    source = SyntheticBarSource(SyntheticConfig(seed=11, signal="autocorr", signal_strength=0.5))
    return pl.concat(
        list(source.fetch_bars(list(EQUITY_SYMBOLS), "1Min", HISTORY_START, _session().close))
    )


@pytest.fixture(scope="module")
def policy(day_bars: pl.DataFrame) -> AgentPolicy:
    spec = FeatureSpec()
    torch.manual_seed(3)
    net = NestedLSTMQNet(len(spec.names()), Architecture())
    with torch.no_grad():  # an untrained net that changes its mind: sharp advantages
        net.advantage.weight.mul_(200.0)
        net.advantage.bias.zero_()
    net.eval()
    scaler = FeatureScaler.fit(compute_features(day_bars, spec), spec.names())
    return AgentPolicy(net, spec, scaler, {})


class InProcessStream:
    """A BarStream on its own thread: each minute's bars, once the clock has passed the
    minute's close, filled by the simulated broker first (as the exchange would) and then
    handed to the handler -- what Alpaca's stream does over a socket."""

    def __init__(self, bars: pl.DataFrame, clock: ManualClock, sim: SimulatedBroker) -> None:
        self.minutes = list(bars.sort("ts", "symbol").group_by(["ts"], maintain_order=True))
        self.clock, self.sim = clock, sim
        self.handler: BarHandler | None = None
        self._stop = threading.Event()

    def subscribe(self, symbols: Sequence[str], handler: BarHandler) -> None:
        self.handler = handler

    def run(self) -> None:
        assert self.handler is not None
        for (minute,), frame in self.minutes:
            while self.clock.now() < minute + MINUTE:
                if self._stop.wait(0.002):
                    return
            for symbol, open_, close in frame.select("symbol", "open", "close").iter_rows():
                if symbol == "SPY":
                    self.sim.on_bar(symbol, minute, open_, close)
            asyncio.run(self._deliver(frame))
        self._stop.wait()

    async def _deliver(self, frame: pl.DataFrame) -> None:
        assert self.handler is not None
        await self.handler(frame)

    def stop(self) -> None:
        self._stop.set()


def _warehouse(tmp_path: Path, name: str, bars: pl.DataFrame, until: datetime) -> Path:
    path = tmp_path / f"{name}.duckdb"
    ingest_bar_frames([bars.filter(pl.col("ts") < until)], path, until)
    return path


def _session_run(
    warehouse: Path, policy: AgentPolicy, feed_for: Any, run_id: str, tmp_path: Path
) -> dict[str, Any]:
    session = _session()
    clock = ManualClock(session.open)
    sim = SimulatedBroker(clock, cash=100_000.0, id_prefix=f"sim:{run_id}")
    feed: MinuteFeed = feed_for(clock, sim)
    plan = SessionPlan(
        run_id=run_id,
        mode="replay",
        account=f"replay:{run_id}",
        session=session,
        warehouse=warehouse,
        outbox=tmp_path / "outbox",
        risk_limits=RiskLimits(),
        kill_file=tmp_path / "no-kill-switch",
        max_minutes=MINUTES,
        reconcile_every_min=3,
    )
    trading = TradingSession(
        plan, [Traded("SPY", "untrained", policy)], SessionAdapters(clock, sim, feed, simulated=sim)
    )
    trading.open()
    result = trading.run()
    with connect(warehouse) as con:
        decisions = con.execute(
            "SELECT ts, action FROM decisions WHERE run_id = ? ORDER BY ts", [run_id]
        ).fetchall()
        fills = con.execute(
            "SELECT f.side, f.qty, f.price, f.ts FROM fills f JOIN orders o USING (client_order_id)"
            " JOIN decisions d USING (decision_id) WHERE d.run_id = ? ORDER BY f.ts",
            [run_id],
        ).fetchall()
        mismatches = con.execute(
            "SELECT count(*) FROM reconciliation_events WHERE account = ?", [plan.account]
        ).fetchall()[0][0]
    return {
        "result": result,
        "decisions": decisions,
        "fills": fills,
        "mismatches": mismatches,
        "book": dict(trading.book.qty),
        "broker": {p.symbol: p.qty for p in sim.get_positions()},
    }


def test_replay_and_stream_feeds_run_one_loop_to_the_same_decisions(
    tmp_path: Path, day_bars: pl.DataFrame, policy: AgentPolicy
) -> None:
    session = _session()
    symbols = FeatureSpec().symbols

    replay_wh = _warehouse(tmp_path, "replay", day_bars, session.close)
    replayed = _session_run(
        replay_wh,
        policy,
        lambda clock, sim: ReplayFeed(replay_wh, symbols, "1Min", session, clock, sim),
        "replay-1",
        tmp_path,
    )

    # The stream's warehouse holds only the history: the session's bars come by the stream.
    stream_wh = _warehouse(tmp_path, "stream", day_bars, session.open)
    streamed_bars = day_bars.filter(pl.col("ts") >= session.open)
    started = time.monotonic()
    streamed = _session_run(
        stream_wh,
        policy,
        lambda clock, sim: StreamFeed(
            InProcessStream(streamed_bars, clock, sim),
            clock,
            session,
            stream_wh,
            symbols,
            outbox=tmp_path / "outbox",
            lock_timeout_s=2.0,
            wait_s=10.0,
            grace_s=0.0,  # decide at the boundary, as the replay does
        ),
        "replay-2",
        tmp_path,
    )
    assert time.monotonic() - started < 120  # no minute waited out its whole bar wait

    # Bars not stored yet, replayed as they would arrive (the trading benchmark's way).
    fresh_wh = _warehouse(tmp_path, "fresh", day_bars, session.open)
    fresh = _session_run(
        fresh_wh,
        policy,
        lambda clock, sim: ReplayFeed(
            fresh_wh, symbols, "1Min", session, clock, sim, bars=streamed_bars
        ),
        "replay-3",
        tmp_path,
    )
    assert fresh["decisions"] == replayed["decisions"]

    for run in (replayed, streamed):
        assert run["result"].decided == MINUTES
        assert len(run["decisions"]) == MINUTES
        assert run["decisions"][0][0] == session.open + MINUTE  # on the session's first bar
        assert run["book"] == {s: q for s, q in run["broker"].items() if q}
        assert run["mismatches"] == 0
    assert {a for _, a in replayed["decisions"]} - {"hold"}, "the policy never traded"
    assert replayed["fills"], "nothing filled: nothing to compare"
    assert streamed["decisions"] == replayed["decisions"]
    assert streamed["fills"] == replayed["fills"]


class SilentStream:
    """A stream that delivers nothing by itself: the test stores bars through the handler."""

    def __init__(self) -> None:
        self.handler: BarHandler | None = None
        self._stop = threading.Event()

    def subscribe(self, symbols: Sequence[str], handler: BarHandler) -> None:
        self.handler = handler

    def run(self) -> None:
        self._stop.wait()

    def stop(self) -> None:
        self._stop.set()


def test_the_stream_feed_waits_a_bounded_while_for_the_inputs_bars(
    tmp_path: Path, day_bars: pl.DataFrame
) -> None:
    session = _session()
    warehouse = _warehouse(tmp_path, "wait", day_bars, session.open)
    clock = ManualClock(session.open + 30 * MINUTE)
    stream = SilentStream()
    feed = StreamFeed(
        stream, clock, session, warehouse, ["SPY", "VTI"], outbox=None,
        lock_timeout_s=2.0, wait_s=30.0, grace_s=0.0, input_wait_s=3.0,
    )  # fmt: skip
    feed.traded = {"SPY"}
    minute = session.open + 30 * MINUTE
    bars = day_bars.filter(pl.col("ts") == minute)

    def arrive(symbol: str, after_s: float) -> threading.Thread:
        frame = bars.filter(pl.col("symbol") == symbol)

        async def handle() -> None:
            assert stream.handler is not None
            await stream.handler(frame)

        def deliver() -> None:
            time.sleep(after_s)
            asyncio.run(handle())

        thread = threading.Thread(target=deliver)
        thread.start()
        return thread

    with feed:
        assert feed.next_minute() is not None  # the first minute: at once
        # SPY after 0.1 s, VTI after 0.2 s (inside the inputs' wait): both there on return.
        threads = [arrive("SPY", 0.1), arrive("VTI", 0.2)]
        assert feed.next_minute() is not None
        assert feed.store.minute(minute, ("SPY", "VTI")) is not None
        for thread in threads:
            thread.join()
        # The next minute SPY comes and VTI never does: the feed gives up on it and returns.
        minute += MINUTE
        bars = day_bars.filter(pl.col("ts") == minute)
        spy = arrive("SPY", 0.1)
        assert feed.next_minute() is not None
        spy.join()
        assert feed.store.minute(minute, ("SPY",)) is not None
        assert feed.store.minute(minute, ("SPY", "VTI")) is None
