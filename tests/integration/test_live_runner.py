"""The live minute path: BarStore (validate, store, remember) and LiveRunner's decisions from memory.

BarStore's quick path must store exactly what the shared rules (validate_bars, as
store_bars applies them) accept; a locked warehouse sends bars to the outbox and the next
write merges them; a minute the runner did not decide is walked through the policy, so
the next decision is the one an uninterrupted run makes.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.clock import ManualClock
from adapters.sim_broker import SimulatedBroker
from adapters.synthetic import SyntheticBarSource, SyntheticConfig
from core.bar_schema import BAR_COLUMNS, BAR_SCHEMA
from core.universe import EQUITY_SYMBOLS
from models.features import FeatureScaler, FeatureSpec, compute_features
from models.qnet import Architecture, NestedLSTMQNet
from models.registry import AgentPolicy
from trading.calendar import NYSECalendar, Session
from trading.engine import MINUTE, Book, EngineConfig, StepwiseQ, TradingEngine
from trading.ledger import Ledger
from trading.live import BarStore, LiveRunner, store_bars
from trading.orders import OrderManager
from trading.risk import RiskEngine
from warehouse.bars import ingest_bar_frames, load_bars
from warehouse.db import connect

DAY = date(2024, 3, 6)
HISTORY = (datetime(2024, 3, 4, tzinfo=UTC), datetime(2024, 3, 6, tzinfo=UTC))


def _session() -> Session:
    session = NYSECalendar().session_on(DAY)
    assert session is not None
    return session


def _day_bars() -> pl.DataFrame:
    session = _session()
    source = SyntheticBarSource(SyntheticConfig(seed=5))
    return pl.concat(
        list(source.fetch_bars(list(EQUITY_SYMBOLS), "1Min", HISTORY[0], session.close))
    )


@pytest.fixture(scope="module")
def day_bars() -> pl.DataFrame:
    return _day_bars()


def _warehouse(tmp_path: Path, bars: pl.DataFrame, until: datetime) -> Path:
    path = tmp_path / "w.duckdb"
    ingest_bar_frames([bars.filter(pl.col("ts") < until)], path, until)
    return path


# --- BarStore ---------------------------------------------------------------------------


def _stored(path: Path) -> tuple[pl.DataFrame, list[str]]:
    with connect(path) as con:
        bars = load_bars(
            con, list(EQUITY_SYMBOLS), "1Min", HISTORY[0], datetime(2100, 1, 1, tzinfo=UTC)
        )
        reasons = sorted(r[0] for r in con.execute("SELECT reason FROM bars_quarantine").fetchall())
    return bars.select(BAR_COLUMNS), reasons


_CORRUPTIONS = ["none", "nan", "zero", "high_below_low", "future", "duplicate", "split", "revise"]


@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(st.sampled_from(_CORRUPTIONS), min_size=6, max_size=6))
def test_the_quick_path_stores_what_the_shared_rules_accept(
    tmp_path_factory: pytest.TempPathFactory, corruptions: list[str]
) -> None:
    """Minute by minute, BarStore and store_bars (validate_bars + upsert) leave the same tables."""
    session = _session()
    bars = _day_bars().filter(pl.col("ts") < session.open + 6 * MINUTE)
    tmp = tmp_path_factory.mktemp("quick")
    ours = _warehouse(tmp / "a", bars, session.open)
    reference = _warehouse(tmp / "b", bars, session.open)
    store = BarStore(ours)
    minutes = bars.filter(pl.col("ts") >= session.open).partition_by("ts", maintain_order=True)
    with connect(ours) as con_a, connect(reference) as con_b:
        for frame, corruption in zip(minutes, corruptions, strict=True):
            minute = frame.get_column("ts")[0]
            now = minute + MINUTE
            if corruption == "nan":
                frame = frame.with_columns(
                    pl.when(pl.col("symbol") == "VTI")
                    .then(float("nan"))
                    .otherwise(pl.col("close"))
                    .alias("close")
                )
            elif corruption == "zero":
                frame = frame.with_columns(
                    pl.when(pl.col("symbol") == "BND")
                    .then(0.0)
                    .otherwise(pl.col("low"))
                    .alias("low")
                )
            elif corruption == "high_below_low":
                frame = frame.with_columns(
                    pl.when(pl.col("symbol") == "SPY")
                    .then(pl.col("low") - 1)
                    .otherwise(pl.col("high"))
                    .alias("high")
                )
            elif corruption == "future":
                now = minute - MINUTE
            elif corruption == "duplicate":
                frame = pl.concat([frame, frame.head(1)])
            elif corruption == "split":
                frame = frame.with_columns(
                    [
                        pl.when(pl.col("symbol") == "VXUS")
                        .then(pl.col(c) / 10)
                        .otherwise(pl.col(c))
                        for c in ("open", "high", "low", "close", "vwap")
                    ]
                )
            elif corruption == "revise":
                store.store(frame, now, con_a)
                store_bars(reference, frame, now, con_b)
                frame = frame.with_columns(pl.col("volume") + 1)
            got = store.store(frame, now, con_a)
            store_bars(reference, frame, now, con_b)
            assert got.height <= frame.height
    a, b = _stored(ours), _stored(reference)
    assert a[0].equals(b[0]), "BarStore stored other bars than the shared rules accept"
    assert a[1] == b[1], "BarStore quarantined other rows (or reasons) than the shared rules"
    if corruptions.count("none") == len(corruptions):
        assert store.checked == 0  # a clean session never needs the slow path


def test_a_locked_warehouse_sends_bars_to_the_outbox_and_the_next_write_merges_them(
    tmp_path: Path, day_bars: pl.DataFrame
) -> None:
    session = _session()
    path = _warehouse(tmp_path, day_bars, session.open)
    store = BarStore(path, outbox=tmp_path / "outbox", lock_timeout_s=0.2)
    minutes = day_bars.filter(pl.col("ts") >= session.open).partition_by("ts", maintain_order=True)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys; con = duckdb.connect(sys.argv[1]); print('held', flush=True);"
            " sys.stdin.read()",
            str(path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"held"
        for frame in minutes[:3]:
            got = store.store(frame, frame.get_column("ts")[0] + MINUTE)
            assert got.height == 4  # accepted, and kept for the decision
            assert store.minute(frame.get_column("ts")[0], EQUITY_SYMBOLS) is not None
        assert store.outboxed == 12
        # One outbox (warehouse.outbox) for bars and ledger rows: the bars' files are its kind.
        assert len(list((tmp_path / "outbox").glob("bars--*.parquet"))) == 3
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
    store.store(minutes[3], minutes[3].get_column("ts")[0] + MINUTE)
    assert list((tmp_path / "outbox").glob("*.parquet")) == []
    with connect(path) as con:
        n = con.execute("SELECT count(*) FROM bars WHERE ts >= ?", [session.open]).fetchall()
    assert n == [(16,)]  # the three outboxed minutes and the fourth, once each


# --- LiveRunner ---------------------------------------------------------------------------


def _runner(path: Path, bars: pl.DataFrame, run_id: str) -> tuple[LiveRunner, SimulatedBroker]:
    spec = FeatureSpec()
    torch.manual_seed(0)
    net = NestedLSTMQNet(len(spec.names()), Architecture())
    net.eval()
    policy = AgentPolicy(
        net, spec, FeatureScaler.fit(compute_features(bars, spec), spec.names()), {}
    )
    session = _session()
    clock = ManualClock(session.open)
    sim = SimulatedBroker(clock, id_prefix=f"sim:{run_id}")
    ledger = Ledger(path, mode="replay")
    engine = TradingEngine(
        EngineConfig(
            run_id=run_id,
            mode="replay",
            account=f"replay:{run_id}",
            symbol="SPY",
            model_id="untrained",
            feature_names=tuple(spec.names()),
        ),
        StepwiseQ(policy),
        sim,
        RiskEngine(),
        OrderManager(sim),
        ledger,
        Book(cash=100_000.0),
        sim.new_fills,
    )
    return LiveRunner(engine, spec, session, path, sim, ledger), sim


def test_a_minute_not_decided_is_walked_so_the_next_decision_is_unchanged(
    tmp_path: Path, day_bars: pl.DataFrame
) -> None:
    session = _session()
    path = _warehouse(tmp_path, day_bars, session.open)
    history = day_bars.filter(pl.col("ts") < session.open)
    steady, _ = _runner(path, history, "steady")
    gappy, _ = _runner(path, history, "gappy")
    steady.start(session.open)
    gappy.start(session.open)
    store = BarStore(path)
    skipped = {session.open + 5 * MINUTE, session.open + 6 * MINUTE}
    minutes = day_bars.filter(
        (pl.col("ts") >= session.open) & (pl.col("ts") < session.open + 12 * MINUTE)
    ).partition_by("ts", maintain_order=True)
    with connect(path) as con:
        steady.con = gappy.con = con
        for frame in minutes:
            minute = frame.get_column("ts")[0]
            now = minute + MINUTE
            store.store(frame, now, con)
            fresh = store.minute(minute, steady.spec.symbols)
            steady.on_bar_stored(now, fresh=fresh)
            if minute not in skipped:  # a silent stream: these come late, never decided
                gappy.on_bar_stored(now, fresh=fresh)
        steady.con = gappy.con = None
        rows = con.execute(
            "SELECT run_id, ts, q_values FROM decisions ORDER BY run_id, ts"
        ).fetchall()
    q = {(r, ts): np.asarray(v) for r, ts, v in rows}
    after = [m + MINUTE for m in sorted({f.get_column("ts")[0] for f in minutes} - skipped)]
    assert len(after) == 10
    for ts in after:
        np.testing.assert_allclose(q[("gappy", ts)], q[("steady", ts)], rtol=1e-6, atol=1e-6)


def test_the_live_store_holds_back_stock_bars_outside_regular_hours(tmp_path: Path) -> None:
    # A paper run started at 09:25 New York time receives the pre-market minutes: held back
    # with the ingest's reason, as ingest-bars holds them back; the coin's bars are kept.
    path = tmp_path / "hours.duckdb"
    open_ = datetime(2024, 7, 2, 13, 30, tzinfo=UTC)  # 09:30 EDT
    store = BarStore(path, regular_hours={"SPY": "XNYS", "BTC/USD": "24/7"})

    def minute(ts: datetime, symbol: str, price: float) -> pl.DataFrame:
        return pl.DataFrame(
            {
                "symbol": [symbol],
                "timeframe": ["1Min"],
                "ts": [ts],
                "open": [price],
                "high": [price * 1.001],
                "low": [price * 0.999],
                "close": [price],
                "volume": [100.0],
                "trade_count": [5],
                "vwap": [price],
                "source": ["alpaca"],
            },
            schema=BAR_SCHEMA,
        )

    for i in range(-3, 3):
        ts = open_ + i * MINUTE
        store.store(
            pl.concat([minute(ts, "BTC/USD", 60_000.0), minute(ts, "SPY", 500.0)]), ts + MINUTE
        )
    with connect(path) as con:
        stored = con.execute(
            "SELECT symbol, count(*), min(ts) FROM bars GROUP BY 1 ORDER BY 1"
        ).fetchall()
        held = con.execute(
            "SELECT symbol, reason, count(*) FROM bars_quarantine GROUP BY 1, 2"
        ).fetchall()
    assert stored == [("BTC/USD", 6, open_ - 3 * MINUTE), ("SPY", 3, open_)]
    assert held == [("SPY", "outside_regular_hours", 3)]
    assert store.minute(open_ - MINUTE, ("SPY",)) is None  # not in memory for a decision
    assert store.minute(open_, ("SPY", "BTC/USD")) is not None
