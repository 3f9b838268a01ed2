"""A restarted TradingSession merges what the killed run left in the outbox before it reads.

A paper run that booked a partial fill while another process held the warehouse kept the
rows in the ledger's outbox; killed before a later write merged them, its restart starts
the book, recovers the run's orders and reconciles from the warehouse. Read without those
rows, the order's fill is recovered whole beside the partial one (the fill id is the
cumulative quantity, so they are two rows) and the account holds more than the broker has.
The soak (benchmarks/soak.py, which runs TradingSession) found it; this is the case alone.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import torch

from adapters.clock import ManualClock
from adapters.protocols import OrderRequest
from adapters.sim_broker import SimulatedBroker
from adapters.synthetic import SyntheticBarSource, SyntheticConfig
from benchmarks.soak import FaultyBroker, LockHolder
from core.universe import EQUITY_SYMBOLS
from models.features import FeatureScaler, FeatureSpec, compute_features
from models.qnet import Architecture, NestedLSTMQNet
from models.registry import AgentPolicy
from trading.calendar import NYSECalendar
from trading.engine import MINUTE, decision_id
from trading.ledger import Ledger
from trading.orders import client_order_id
from trading.reconcile import OrderFillPoller
from trading.risk import RiskLimits
from trading.session import ReplayFeed, SessionAdapters, SessionPlan, Traded, TradingSession
from warehouse.bars import ingest_bar_frames
from warehouse.db import connect
from warehouse.trade_history import booked_fills, net_positions

DAY = date(2024, 3, 6)


def test_a_restart_merges_the_outbox_before_recovering_the_runs_orders(tmp_path: Path) -> None:
    session = NYSECalendar().session_on(DAY)
    assert session is not None
    source = SyntheticBarSource(SyntheticConfig(seed=11))
    until = session.open + 10 * MINUTE
    bars = pl.concat(
        list(
            source.fetch_bars(list(EQUITY_SYMBOLS), "1Min", datetime(2024, 3, 4, tzinfo=UTC), until)
        )
    )
    warehouse, outbox = tmp_path / "warehouse.duckdb", tmp_path / "outbox"
    ingest_bar_frames([bars], warehouse, until)
    spec = FeatureSpec()
    torch.manual_seed(3)
    net = NestedLSTMQNet(
        len(spec.names()), Architecture(fast_hidden=8, slow_hidden=4, head_hidden=8)
    )
    net.eval()
    policy = AgentPolicy(
        net, spec, FeatureScaler.fit(compute_features(bars, spec), spec.names()), {}
    )

    # The killed run: its order of the first decision, filled in part by the next bar (at
    # most 0.1% of its volume), that part booked while another process held the warehouse.
    run_id = "paper-restart-1"
    did = decision_id(run_id, "SPY", session.open + MINUTE)
    cid = client_order_id(did)
    clock = ManualClock(session.open + MINUTE)
    sim = SimulatedBroker(clock, cash=100_000.0, id_prefix="sim:restart", max_volume_share=0.001)
    sim.submit_order(OrderRequest(cid, "SPY", "buy", 500.0))
    spy = bars.filter(pl.col("symbol") == "SPY").sort("ts")

    def bar(minute: datetime) -> None:
        row = spy.filter(pl.col("ts") == minute).row(0, named=True)
        sim.on_bar("SPY", minute, row["open"], row["close"], volume=row["volume"])
        clock.set(minute + MINUTE)

    bar(session.open + MINUTE)
    poller = OrderFillPoller(sim, lambda: [cid])
    (partial,) = poller()
    assert 0 < partial.qty < 500.0
    ledger = Ledger(warehouse, mode="paper", outbox=outbox, lock_timeout_s=0.05)
    ledger.order(sim.orders()[0], did, clock.now())
    ledger.fill(partial, "rest")
    holder = LockHolder(warehouse)
    try:
        holder.hold()
        ledger.flush()
        holder.release()
    finally:
        holder.close()
    assert ledger.outboxed >= 2
    bar(session.open + 2 * MINUTE)  # the rest (or more of it) fills while the run is dead
    filled = sim.orders()[0].filled_qty
    assert filled > partial.qty

    plan = SessionPlan(
        run_id=run_id,
        mode="paper",
        account="paper-restart",
        session=session,
        warehouse=warehouse,
        outbox=outbox,
        risk_limits=RiskLimits(),
        kill_file=tmp_path / "no-kill-switch",
        lock_timeout_s=0.05,
    )
    # The paper path (no simulated account of its own), on a broker that lists its orders.
    feed = ReplayFeed(warehouse, spec.symbols, "1Min", session, clock, sim)
    restarted = TradingSession(
        plan, [Traded("SPY", "untrained", policy)], SessionAdapters(clock, FaultyBroker(sim), feed)
    )
    restarted.open()
    restarted.ledger.flush()

    with connect(warehouse) as con:
        assert booked_fills(con, [cid])[cid][0] == filled  # each part once
        assert net_positions(con, run_id=None, mode="paper") == {"SPY": filled}
    assert restarted.book.qty == {"SPY": filled}
