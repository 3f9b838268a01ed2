"""The backtest and live-trading flows on one shared warehouse: same trades, closed markets, refusals, restarts, ledger.

One module-scoped warehouse holds three weeks of synthetic SPY/VTI/VXUS/BND minute bars
(17 June - 9 July 2024: the 19 June and 4 July holidays, the 3 July half day and two
weekends) and one tiny DQN agent for SPY, trained by the train-agent flow, registered as
a candidate and promoted to production.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl
import pytest
import torch

from adapters.clock import ManualClock
from adapters.protocols import OrderRequest
from adapters.sim_broker import SimulatedBroker
from core.configs import (
    BacktestConfig,
    IngestBarsConfig,
    LiveTradingConfig,
    TrainAgentConfig,
    utc_midnight,
)
from flows import wiring
from flows.backtest import backtest
from flows.ingest_bars import ingest_bars
from flows.live_trading import LiveTradingRefused, live_trading
from flows.train_agent import train_agent
from models.env import FLAT, HOLD, LONG
from models.features import FeatureSpec, compute_features
from models.registry import load_registered_agent, save_agent
from trading.backtest import session_q_paths
from trading.engine import Book
from trading.ledger import Ledger
from trading.reconcile import reconcile
from warehouse.bars import load_bars
from warehouse.db import connect
from warehouse.registry import load_model_row, promote, write_model

pytestmark = [pytest.mark.prefect, pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

NY = ZoneInfo("America/New_York")
SYMBOLS = ["SPY", "VTI", "VXUS", "BND"]
BARS_START, BARS_END = date(2024, 6, 17), date(2024, 7, 10)
TRAIN_END = date(2024, 6, 27)
DAY = date(2024, 7, 1)  # a regular Monday session, after the training range
HALF_DAY = date(2024, 7, 3)  # NYSE closes at 13:00 ET
HOLIDAY = date(2024, 7, 4)
WEEKEND = date(2024, 7, 6)
# The same money, costs and close-out rule for the backtest and the replay.
COMMON: dict[str, Any] = {
    "cash": 50_000.0,
    "fee_bps": 2.0,
    "slippage_bps": 3.0,
    "flatten_before_close_min": 2.0,
}


@dataclass(frozen=True)
class Shared:
    """The module's warehouse, its promoted SPY model, and a folder for reports."""

    warehouse: Path
    model_id: str
    tmp: Path

    def replay(self, day: date = DAY, **kw: Any) -> LiveTradingConfig:
        return LiveTradingConfig(
            mode="replay", replay_date=day, warehouse=str(self.warehouse), **kw
        )


@pytest.fixture(scope="module")
def shared(prefect_harness: None, tmp_path_factory: pytest.TempPathFactory) -> Shared:
    tmp = tmp_path_factory.mktemp("trading-flows")
    warehouse = tmp / "warehouse.duckdb"
    ingested = ingest_bars(
        IngestBarsConfig(
            source="synthetic",
            symbols=SYMBOLS,
            start=BARS_START,
            end=BARS_END,
            warehouse=str(warehouse),
        )
    )
    assert ingested["quarantined"] == {} and ingested["inserted"] > 0
    trained = train_agent(
        TrainAgentConfig(
            symbols=SYMBOLS,
            train_start=BARS_START,
            train_end=TRAIN_END,
            test_start=TRAIN_END,
            test_end=BARS_END,
            cycles=8,
            seeds=[3],
            architecture={"fast_hidden": 8, "slow_hidden": 4, "head_hidden": 8},
            params={"batch_sessions": 4, "train_every": 4},
            checkpoint_every=8,
            warehouse=str(warehouse),
            models_dir=str(tmp / "models"),
        )
    )
    (model_id,) = trained["models"]
    with connect(warehouse) as con:
        row = load_model_row(con, model_id)
        assert row is not None and (row["kind"], row["stage"]) == ("dqn", "candidate")
        bars = load_bars(con, SYMBOLS, "1Min", utc_midnight(BARS_START), utc_midnight(BARS_END))
    make_it_trade(warehouse, row, bars, tmp / "models" / f"{model_id}-trading")
    with connect(warehouse) as con:
        assert promote(con, model_id, datetime(2024, 6, 30, tzinfo=UTC)) is None
    return Shared(warehouse, model_id, tmp)


def make_it_trade(
    warehouse: Path, row: dict[str, Any], bars: pl.DataFrame, directory: Path, day: date = DAY
) -> None:
    """Re-centre the Q head of an agent too briefly trained to leave cash.

    After eight training cycles the agent stays flat all day, so a comparison of its trades
    would compare two empty lists. Lowering `hold` far below the
    others and shifting `long` by the median of Q(long) - Q(flat) over `day`'s session makes
    the choice flip with the features, so the agent trades many times a session; the
    re-saved artifact replaces the registered one (new sha256), still a dqn candidate.
    """
    policy = load_registered_agent(row)
    frame = compute_features(bars, policy.spec).filter(pl.col("session") == day)
    (q,) = session_q_paths(policy, frame).values()
    gap = float(np.median(q[:, 0, LONG] - q[:, 0, FLAT]))
    with torch.no_grad():
        policy.net.advantage.bias[HOLD] -= 1_000.0
        policy.net.advantage.bias[LONG] -= gap
    standard = {"feature_spec", "feature_schema_hash", "scaler", "architecture"}
    extra = {
        k: v for k, v in policy.meta.items() if k not in standard | {"n_features", "n_actions"}
    }
    sha = save_agent(directory, policy.net, policy.spec, policy.scaler, extra)
    with connect(warehouse) as con:
        write_model(con, {**row, "artifact_path": str(directory), "artifact_sha256": sha})


def query(warehouse: Path, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with connect(warehouse) as con:
        return con.execute(sql, params or []).fetchall()


def run_fills(warehouse: Path, run_id: str) -> list[tuple[Any, ...]]:
    """(ts, side, qty, price) of every fill of a run, through orders and decisions."""
    rows = query(
        warehouse,
        "SELECT f.ts, f.side, f.qty, f.price FROM fills f"
        " JOIN orders o USING (client_order_id) JOIN decisions d ON d.decision_id = o.decision_id"
        " WHERE d.run_id = ? ORDER BY f.ts, f.fill_id",
        [run_id],
    )
    return [(ts, side, qty, round(price, 9)) for ts, side, qty, price in rows]


def run_decisions(warehouse: Path, run_id: str) -> list[tuple[Any, ...]]:
    """(ts, action, risk verdict, Q-values) of every decision of a run."""
    return query(
        warehouse,
        "SELECT ts, action, risk_verdict, q_values FROM decisions WHERE run_id = ? ORDER BY ts",
        [run_id],
    )


def run_rows(warehouse: Path, run_id: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every decision, order and fill row of a run, keys first."""
    joins = {
        "decisions": "SELECT d.* FROM decisions d",
        "orders": "SELECT o.* FROM orders o JOIN decisions d USING (decision_id)",
        "fills": "SELECT f.* FROM fills f JOIN orders o USING (client_order_id)"
        " JOIN decisions d ON d.decision_id = o.decision_id",
    }
    return {
        table: query(
            warehouse,
            f"{sql} WHERE d.run_id = ? ORDER BY 1",
            [run_id],
        )
        for table, sql in joins.items()
    }


def events_of(warehouse: Path, account: str) -> list[tuple[Any, ...]]:
    return query(
        warehouse,
        "SELECT symbol, kind, warehouse_qty, broker_qty, action FROM reconciliation_events"
        " WHERE account = ? ORDER BY ts",
        [account],
    )


def ledger_counts(warehouse: Path) -> dict[str, int]:
    tables = ("decisions", "orders", "fills", "equity", "reconciliation_events")
    return {t: query(warehouse, f"SELECT count(*) FROM {t}")[0][0] for t in tables}


def test_backtest_and_replayed_session_make_the_same_trades(shared: Shared) -> None:
    _same_trades(shared.warehouse, shared.tmp / "reports", shared.model_id)


def _same_trades(
    warehouse: Path, reports: Path, model_id: str, **extra: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The production SPY model's backtest of DAY and its replayed session (COMMON settings,
    `extra` over them): same fills, same decisions, the same Q-values bar by bar."""
    settings = {**COMMON, **extra}
    bt = backtest(
        BacktestConfig(
            symbol="SPY",
            start=DAY,
            end=DAY + timedelta(days=1),
            warehouse=str(warehouse),
            reports_dir=str(reports),
            **settings,
        )
    )
    live = live_trading(
        LiveTradingConfig(
            mode="replay", replay_date=DAY, warehouse=str(warehouse), start_minute=0, **settings
        )
    )
    assert bt["model_id"] == live["model_id"] == model_id
    assert live["status"] == "traded" and live["session"] == str(DAY)
    assert bt["decisions"] == live["decisions"] == 390

    bt_fills = run_fills(warehouse, bt["run_id"])
    live_fills = run_fills(warehouse, live["run_id"])
    assert len(bt_fills) >= 4, "the model hardly traded: the comparison would prove little"
    assert live_fills == bt_fills
    assert bt["fills"] == len(bt_fills) and bt["orders"] == live["orders"]
    # Bar by bar, the stepwise LSTM of the live path saw the Q-values of the batched pass.
    bt_decisions = run_decisions(warehouse, bt["run_id"])
    live_decisions = run_decisions(warehouse, live["run_id"])
    assert [d[:3] for d in live_decisions] == [d[:3] for d in bt_decisions]
    for (ts, *_, q_live), (_, *_, q_bt) in zip(live_decisions, bt_decisions, strict=True):
        # (hold's Q sits near -1000 after make_it_trade: hence a relative tolerance too)
        assert q_live == pytest.approx(q_bt, rel=1e-6, abs=1e-5), ts
    return bt, live


def test_a_margin_accounts_day_trade_limit_refuses_the_same_in_backtest_and_replay(
    shared: Shared,
) -> None:
    """account_rules='margin' with $20,000 (below $25k, before 2026-06-04): the agent's fourth
    round trip of the day is refused by the risk engine -- with the reason in its decision --
    in the backtest and in the replayed session alike, so the broker never rejects one."""
    bt, live = _same_trades(
        shared.warehouse,
        shared.tmp / "reports",
        shared.model_id,
        cash=20_000.0,
        account_rules="margin",
    )
    for run in (bt, live):
        reasons = query(
            shared.warehouse,
            "SELECT risk_reason FROM decisions WHERE run_id = ? AND risk_reason IS NOT NULL",
            [run["run_id"]],
        )
        assert any(r.startswith("pattern day trader rule") for (r,) in reasons), run["run_id"]
        rejected = query(
            shared.warehouse,
            "SELECT count(*) FROM orders o JOIN decisions d USING (decision_id)"
            " WHERE d.run_id = ? AND o.status = 'rejected'",
            [run["run_id"]],
        )
        assert rejected == [(0,)]


def test_missing_input_minutes_carried_forward_trade_the_same_in_backtest_and_replay(
    shared: Shared, tmp_path: Path
) -> None:
    """stale_bars (issue 18): VXUS and BND lose every third minute, and VXUS 20 minutes in a
    row on DAY (beyond the reach); an agent trained to carry them forward with staleness
    inputs makes the same trades bar by bar in the backtest (batch features) and the
    replayed session (live features, minute by minute, missing bars and all)."""
    gappy = tmp_path / "gappy.duckdb"
    shutil.copy(shared.warehouse, gappy)
    block = datetime.combine(DAY, time(10, 0), NY).astimezone(UTC)
    with connect(gappy) as con:
        con.execute(
            "DELETE FROM bars WHERE symbol IN ('VXUS', 'BND') AND (epoch(ts)::BIGINT / 60) % 3 = 0"
        )
        con.execute(
            "DELETE FROM bars WHERE symbol = 'VXUS' AND ts >= ? AND ts < ?",
            [block, block + timedelta(minutes=20)],
        )
    trained = train_agent(
        TrainAgentConfig(
            symbols=SYMBOLS,
            stale_bars=5,
            train_start=BARS_START,
            train_end=TRAIN_END,
            test_start=TRAIN_END,
            test_end=BARS_END,
            cycles=4,
            seeds=[3],
            architecture={"fast_hidden": 8, "slow_hidden": 4, "head_hidden": 8},
            params={"batch_sessions": 4, "train_every": 4},
            checkpoint_every=4,
            warehouse=str(gappy),
            models_dir=str(tmp_path / "models"),
        )
    )
    (model_id,) = trained["models"]
    with connect(gappy) as con:
        row = load_model_row(con, model_id)
        assert row is not None
        bars = load_bars(con, SYMBOLS, "1Min", utc_midnight(BARS_START), utc_midnight(BARS_END))
    policy = load_registered_agent(row)
    assert policy.spec.stale_bars == 5 and "a2_stale" in policy.spec.names()
    day = compute_features(bars, policy.spec).filter(pl.col("session") == DAY)
    stale = day.get_column("a2_stale")
    assert ((stale > 0) & (stale < 1)).sum() > 100 and (stale == 1.0).sum() >= 10
    make_it_trade(gappy, row, bars, tmp_path / "models" / f"{model_id}-trading")
    with connect(gappy) as con:
        promote(con, model_id, datetime(2024, 6, 30, 12, tzinfo=UTC))
    _same_trades(gappy, tmp_path / "reports", model_id)


@pytest.mark.parametrize(
    ("day", "next_open"),
    [
        (HOLIDAY, datetime(2024, 7, 5, 13, 30, tzinfo=UTC)),
        (WEEKEND, datetime(2024, 7, 8, 13, 30, tzinfo=UTC)),
    ],
    ids=["independence-day", "saturday"],
)
def test_a_closed_market_replay_decides_nothing(
    shared: Shared, day: date, next_open: datetime
) -> None:
    before = ledger_counts(shared.warehouse)
    result = live_trading(shared.replay(day))
    assert result["status"] == "closed"
    assert datetime.fromisoformat(result["next_open"]) == next_open
    assert ledger_counts(shared.warehouse) == before
    on_day = query(
        shared.warehouse,
        "SELECT count(*) FROM decisions WHERE CAST(timezone('America/New_York', ts) AS DATE) = ?",
        [day],
    )
    assert on_day == [(0,)]


def task_runs_of(flow_run_id: Any) -> list[str]:
    """The names of a flow run's task runs, in the order they started."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import TaskRunSort

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
            sort=TaskRunSort.EXPECTED_START_TIME_ASC,
        )
    return [r.name.rsplit("-", 1)[0] for r in runs]  # "open-session-0" -> "open-session"


def test_a_half_day_replay_stops_at_the_one_oclock_close(shared: Shared) -> None:
    state = live_trading(shared.replay(HALF_DAY, **COMMON), return_state=True)
    result = state.result()
    assert result["status"] == "traded" and result["session"] == str(HALF_DAY)
    # The Prefect UI shows the run's stages as its task runs.
    assert task_runs_of(state.state_details.flow_run_id) == [
        "load-models",
        "check-session",
        "open-session",
        "trade-session",
        "report-session",
    ]
    close = datetime(2024, 7, 3, 13, 0, tzinfo=NY)
    decisions = run_decisions(shared.warehouse, result["run_id"])
    # 09:30-12:59: 210 bars, each decided once when it closed; the last closes at 13:00 itself.
    assert len(decisions) == result["decisions"] == 210
    assert decisions[0][0] == datetime(2024, 7, 3, 9, 31, tzinfo=NY)
    assert max(d[0] for d in decisions) == close
    orders = query(
        shared.warehouse,
        "SELECT o.submitted_at FROM orders o JOIN decisions d ON d.decision_id = o.decision_id"
        " WHERE d.run_id = ? ORDER BY 1",
        [result["run_id"]],
    )
    assert orders and all(ts < close for (ts,) in orders)
    # Flattened before the early close, not the usual 16:00 one.
    fills = run_fills(shared.warehouse, result["run_id"])
    net = sum(qty if side == "buy" else -qty for _, side, qty, _ in fills)
    assert fills and net == 0 and fills[-1][0] < close


def test_a_model_trained_on_other_features_is_refused(shared: Shared, tmp_path: Path) -> None:
    tampered = tmp_path / "tampered.duckdb"
    shutil.copy(shared.warehouse, tampered)
    running = FeatureSpec(symbols=tuple(SYMBOLS)).schema_hash()
    with connect(tampered) as con:
        assert con.execute(
            "SELECT feature_schema_hash FROM models WHERE model_id = ?", [shared.model_id]
        ).fetchall() == [(running,)]
        con.execute(
            "UPDATE models SET feature_schema_hash = 'feedfacefeedface' WHERE model_id = ?",
            [shared.model_id],
        )
    before = ledger_counts(tampered)
    with pytest.raises(LiveTradingRefused) as refused:
        live_trading(
            LiveTradingConfig(
                mode="replay", replay_date=DAY, max_minutes=5, warehouse=str(tampered)
            )
        )
    message = str(refused.value)
    assert "feedfacefeedface" in message and running in message and shared.model_id in message
    assert ledger_counts(tampered) == before


def test_live_mode_without_the_opt_in_is_refused_and_places_nothing(
    shared: Shared, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRADINGML_LIVE_TRADING_OPT_IN", "false")
    monkeypatch.delenv("TRADINGML_MODE", raising=False)

    def no_broker(*args: object, **kwargs: object) -> None:
        raise AssertionError("a refused live run must not build a broker")

    monkeypatch.setattr(wiring.INJECTED, "adapters", no_broker)
    before = ledger_counts(shared.warehouse)
    with pytest.raises(LiveTradingRefused, match="TRADINGML_LIVE_TRADING_OPT_IN=true") as refused:
        live_trading(LiveTradingConfig(mode="live", warehouse=str(shared.warehouse)))
    assert "real money" in str(refused.value) and "mode=paper" in str(refused.value)
    assert ledger_counts(shared.warehouse) == before
    for table in ("decisions", "orders", "fills"):
        assert query(shared.warehouse, f"SELECT count(*) FROM {table} WHERE mode = 'live'") == [
            (0,)
        ]


def test_a_restarted_replay_records_each_order_and_fill_once(shared: Shared) -> None:
    config = shared.replay(max_minutes=45, **COMMON)
    first = live_trading(config)
    assert first["decisions"] == 45
    rows_first = run_rows(shared.warehouse, first["run_id"])
    assert rows_first["fills"], "no fills in the first 45 minutes: nothing to duplicate"

    # Book and simulated broker agreed at every periodic reconciliation of the first run.
    assert events_of(shared.warehouse, first["account"]) == []

    second = live_trading(config)
    assert second["run_id"] == first["run_id"] and second["decisions"] == 45
    # The restarted run's book started from the warehouse's fills; the new simulated broker
    # holds nothing, and the broker's view was adopted (and recorded) before any decision.
    held = sum(f[6] if f[5] == "buy" else -f[6] for f in rows_first["fills"])
    expected = [] if held == 0 else [("SPY", "position_mismatch", held, 0.0, "adopted_broker")]
    assert events_of(shared.warehouse, first["account"]) == expected
    rows_second = run_rows(shared.warehouse, first["run_id"])
    assert rows_second == rows_first
    for table in ("decisions", "orders", "fills"):  # each row's key comes first
        keys = [row[0] for row in rows_second[table]]
        assert len(keys) == len(set(keys)), table

    # Another replay of the same session keeps its own orders and fills beside these.
    other = live_trading(shared.replay(max_minutes=45, **{**COMMON, "cash": 20_000.0}))
    assert other["run_id"] != first["run_id"]
    assert run_rows(shared.warehouse, first["run_id"]) == rows_first
    assert run_rows(shared.warehouse, other["run_id"])["fills"]


def test_reconcile_adopts_the_brokers_position_and_records_the_difference(
    warehouse_path: Path,
) -> None:
    t0 = datetime(2024, 7, 1, 14, 0, tzinfo=UTC)
    clock = ManualClock(t0)
    broker = SimulatedBroker(clock, cash=10_000.0, fee_bps=0.0, slippage_bps=0.0)
    broker.submit_order(OrderRequest(client_order_id="c1", symbol="SPY", side="buy", qty=10))
    assert len(broker.on_bar("SPY", t0, 100.0, 101.0)) == 1
    book = Book(cash=9_000.0, qty={"SPY": 4.0})
    ledger = Ledger(warehouse_path, mode="replay")
    now = t0 + timedelta(minutes=1)
    assert reconcile(book, broker, ledger, account="replay:r1", run_id="r1", now=now) == 1
    assert book.qty == {"SPY": 10.0} and book.cash == 9_000.0
    # Agreeing now, a second pass finds nothing; a cash difference is adopted the same way.
    assert reconcile(book, broker, ledger, account="replay:r1", run_id="r1", now=now) == 0
    book.cash = 8_500.0
    later = now + timedelta(minutes=1)
    assert reconcile(book, broker, ledger, account="replay:r1", run_id="r1", now=later) == 1
    assert book.cash == 9_000.0
    ledger.flush()
    events = query(
        warehouse_path,
        "SELECT ts, account, symbol, kind, warehouse_qty, broker_qty, action"
        " FROM reconciliation_events ORDER BY ts",
    )
    assert events == [
        (now, "replay:r1", "SPY", "position_mismatch", 4.0, 10.0, "adopted_broker"),
        (later, "replay:r1", None, "cash_mismatch", 8_500.0, 9_000.0, "adopted_broker"),
    ]


def test_the_ledger_views_show_a_replayed_session(shared: Shared) -> None:
    result = live_trading(
        shared.replay(
            max_minutes=90, reports_dir=str(shared.tmp / "reports"), **{**COMMON, "cash": 30_000.0}
        )
    )
    run_id, account = result["run_id"], result["account"]
    # The session's HTML report, built from this ledger, labelled synthetic, plots embedded.
    report = Path(result["report"])
    assert report.parent == shared.tmp / "reports"
    text = report.read_text()
    assert "SYNTHETIC data" in text and run_id in text
    assert text.count('<img src="data:image/png;base64,') >= 3
    ledger = query(
        shared.warehouse,
        "SELECT decision_id, model_id, mode, client_order_id, order_qty, filled_qty, fills"
        " FROM v_decision_ledger WHERE decision_id IN"
        " (SELECT decision_id FROM decisions WHERE run_id = ?) ORDER BY ts",
        [run_id],
    )
    assert len(ledger) == len({row[0] for row in ledger}) == result["decisions"] == 90
    assert {(row[1], row[2]) for row in ledger} == {(shared.model_id, "replay")}
    with_orders = [row for row in ledger if row[3] is not None]
    assert len(with_orders) == result["orders"] > 0
    filled = [row for row in with_orders if row[5] is not None]
    assert filled and all(row[5] == row[4] and row[6] == 1 for row in filled)

    trades = query(
        shared.warehouse,
        "SELECT ts, side, qty, round(price, 9), model_id FROM v_trades WHERE run_id = ? ORDER BY ts",
        [run_id],
    )
    assert [t[:4] for t in trades] == run_fills(shared.warehouse, run_id)
    assert len(trades) == len(filled) and {t[4] for t in trades} == {shared.model_id}

    pnl = query(
        shared.warehouse,
        "SELECT day, open_equity, close_equity, pnl FROM v_daily_pnl WHERE account = ?",
        [account],
    )
    assert len(pnl) == 1
    day, open_equity, close_equity, day_pnl = pnl[0]
    assert day == DAY and open_equity == 30_000.0
    assert close_equity == pytest.approx(result["equity"])
    assert day_pnl == pytest.approx(close_equity - open_equity)
