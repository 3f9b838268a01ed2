"""The warehouse functions that took over the SQL trading/ and benchmarks/ ran (issue 15), on a
real DuckDB file: transactions, one-statement inserts, the bars fast path and the ledger reads.

Every row here is SYNTHETIC (hand-made or from the synthetic bar source).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest

from adapters.protocols import Fill, Order, Side
from adapters.synthetic import SyntheticBarSource, SyntheticConfig
from core.bar_schema import BAR_COLUMNS
from trading.ledger import Ledger
from warehouse.bars import bars_by_minute, delete_bars_between, insert_new_bars, last_bars_before
from warehouse.db import connect, transaction
from warehouse.io import insert_rows
from warehouse.trade_history import (
    booked_fills,
    filled_qty_by_broker_order,
    first_equity_in,
    late_order_count,
    net_positions,
    order_statuses,
    placed_client_order_ids,
    recorded_fill_ids,
)

T0 = datetime(2024, 3, 4, 14, 31, tzinfo=UTC)
EQUITY_COLUMNS = ("account", "ts", "cash", "positions_value", "equity")
EQUITY_ROW = ("paper", T0, 90_000.0, 10_000.0, 100_000.0)


def _equity_count(con: duckdb.DuckDBPyConnection) -> int:
    return int(con.execute("SELECT count(*) FROM equity").fetchall()[0][0])


# --- transaction and insert_rows ----------------------------------------------------------


def test_a_transaction_commits_on_a_clean_exit(warehouse_path: Path) -> None:
    with connect(warehouse_path, timeout_s=5) as con:
        with transaction(con) as same:
            assert same is con
            insert_rows(con, "equity", EQUITY_COLUMNS, [EQUITY_ROW])
        assert _equity_count(con) == 1


def test_a_transaction_rolls_back_and_reraises(warehouse_path: Path) -> None:
    with connect(warehouse_path, timeout_s=5) as con:
        with pytest.raises(KeyError, match="planted"), transaction(con):
            insert_rows(con, "equity", EQUITY_COLUMNS, [EQUITY_ROW])
            raise KeyError("planted")
        assert _equity_count(con) == 0
        # The connection is usable again: no transaction was left open.
        with transaction(con):
            insert_rows(con, "equity", EQUITY_COLUMNS, [EQUITY_ROW])
        assert _equity_count(con) == 1


def _equity(minute: int, equity: float) -> tuple[str, datetime, float, float, float]:
    return ("paper", T0 + timedelta(minutes=minute), equity, 0.0, equity)


def test_insert_rows_is_one_statement_that_refuses_a_stored_key_whole(warehouse_path: Path) -> None:
    with connect(warehouse_path, timeout_s=5) as con:
        assert insert_rows(con, "equity", EQUITY_COLUMNS, []) == 0
        assert insert_rows(con, "equity", EQUITY_COLUMNS, [_equity(0, 1.0), _equity(1, 2.0)]) == 2
        with pytest.raises(duckdb.ConstraintException):
            insert_rows(con, "equity", EQUITY_COLUMNS, [_equity(2, 3.0), _equity(0, 9.0)])
        rows = con.execute("SELECT ts, equity FROM equity ORDER BY ts").fetchall()
    # The new row of the refused statement was not written either, and the old one kept its value.
    assert rows == [(T0, 1.0), (T0 + timedelta(minutes=1), 2.0)]


# --- the bars fast path -------------------------------------------------------------------


def _minute(symbols: list[str], start: datetime) -> pl.DataFrame:
    source = SyntheticBarSource(SyntheticConfig(seed=3))
    return pl.concat(list(source.fetch_bars(symbols, "1Min", start, start + timedelta(minutes=1))))


def test_insert_new_bars_stores_them_and_raises_on_a_stored_key(warehouse_path: Path) -> None:
    frame = _minute(["SPY", "VTI"], T0)
    now = T0 + timedelta(minutes=1)
    with connect(warehouse_path, timeout_s=5) as con:
        assert insert_new_bars(con, frame, now) == 2
        stored = con.execute(
            f"SELECT {', '.join(BAR_COLUMNS)}, ingested_at FROM bars ORDER BY symbol"
        ).fetchall()
        assert stored == [(*row, now) for row in frame.sort("symbol").rows()]
        # The callers rely on this exception to fall back to the upsert.
        with pytest.raises(duckdb.ConstraintException):
            insert_new_bars(
                con, frame.with_columns(pl.col("close") * 1.0), now + timedelta(minutes=1)
            )
        assert con.execute("SELECT count(*) FROM bars").fetchall()[0][0] == 2
        assert insert_new_bars(con, frame.clear(), now) == 0


def test_insert_new_bars_takes_the_columns_by_name(warehouse_path: Path) -> None:
    frame = _minute(["SPY"], T0)
    shuffled = frame.select(list(reversed(BAR_COLUMNS)))
    with connect(warehouse_path, timeout_s=5) as con:
        insert_new_bars(con, shuffled, T0 + timedelta(minutes=1))
        row = con.execute(f"SELECT {', '.join(BAR_COLUMNS)} FROM bars").fetchall()
    assert row == frame.rows()


def test_delete_bars_between_deletes_only_the_half_open_range(warehouse_path: Path) -> None:
    frames = [_minute(["SPY", "VTI"], T0 + timedelta(minutes=i)) for i in range(3)]
    with connect(warehouse_path, timeout_s=5) as con:
        for frame in frames:
            insert_new_bars(con, frame, T0 + timedelta(minutes=5))
        assert delete_bars_between(con, T0 + timedelta(minutes=1), T0 + timedelta(minutes=2)) == 2
        left = con.execute("SELECT DISTINCT ts FROM bars ORDER BY ts").fetchall()
    assert [r[0] for r in left] == [T0, T0 + timedelta(minutes=2)]


def test_the_live_bar_reads(warehouse_path: Path) -> None:
    frames = [_minute(["SPY", "VTI"], T0 + timedelta(minutes=i)) for i in range(4)]
    with connect(warehouse_path, timeout_s=5) as con:
        for frame in frames:
            insert_new_bars(con, frame, T0 + timedelta(minutes=5))
        tail = last_bars_before(con, ["SPY", "VTI"], "1Min", T0 + timedelta(minutes=3), 2)
        walk = bars_by_minute(
            con, ["VTI", "SPY"], "1Min", T0 + timedelta(minutes=1), T0 + timedelta(minutes=3)
        )
        # The lookback bounds the search: nothing starts within 1 minute before T0 + 5.
        none = last_bars_before(
            con, ["SPY"], "1Min", T0 + timedelta(minutes=5), 2, lookback=timedelta(minutes=1)
        )
    assert tail.columns == list(BAR_COLUMNS)
    assert tail.select("symbol", "ts").rows() == [
        ("SPY", T0 + timedelta(minutes=1)),
        ("SPY", T0 + timedelta(minutes=2)),
        ("VTI", T0 + timedelta(minutes=1)),
        ("VTI", T0 + timedelta(minutes=2)),
    ]
    assert walk.select("ts", "symbol").rows() == [
        (T0 + timedelta(minutes=1), "SPY"),
        (T0 + timedelta(minutes=1), "VTI"),
        (T0 + timedelta(minutes=2), "SPY"),
        (T0 + timedelta(minutes=2), "VTI"),
    ]
    assert walk.rows() == pl.concat(frames[1:3]).sort("ts", "symbol").rows()
    assert none.height == 0


# --- the ledger reads ---------------------------------------------------------------------


def _decision(run_id: str, i: int) -> dict[str, Any]:
    return {
        "decision_id": f"{run_id}|SPY|{i}",
        "run_id": run_id,
        "mode": "paper",
        "symbol": "SPY",
        "ts": T0 + timedelta(minutes=i),
        "model_id": "m-1",
        "inputs": "{}",
        "q_values": [0.0, 0.0, 0.0],
        "action": "long",
        "allocation": 1.0,
        "risk_verdict": "accepted",
        "risk_reason": None,
        "created_at": T0 + timedelta(minutes=i),
    }


def _trade(
    ledger: Ledger, run_id: str, i: int, symbol: str, side: Side, qty: float, *, late_s: int = 10
) -> None:
    """One decision, its order (submitted `late_s` after the decision) and one fill."""
    ledger.decision(_decision(run_id, i))
    order = Order(
        id=f"b-{run_id}-{i}",
        client_order_id=f"c-{run_id}-{i}",
        symbol=symbol,
        side=side,
        qty=qty,
        filled_qty=qty,
        filled_avg_price=100.0 + i,
        status="filled",
        submitted_at=T0 + timedelta(minutes=i, seconds=late_s),
    )
    ledger.order(order, f"{run_id}|SPY|{i}", T0 + timedelta(minutes=i))
    ledger.fill(
        Fill(
            fill_id=f"f-{run_id}-{i}",
            order_id=order.id,
            client_order_id=order.client_order_id,
            symbol=symbol,
            side=side,
            qty=qty,
            price=100.0 + i,
            ts=T0 + timedelta(minutes=i, seconds=30),
        ),
        "sim",
    )


@pytest.fixture
def ledger_warehouse(warehouse_path: Path) -> Path:
    ledger = Ledger(warehouse_path, mode="paper")
    _trade(ledger, "run-a", 0, "SPY", "buy", 10.0)
    _trade(ledger, "run-a", 1, "SPY", "sell", 4.0)
    _trade(ledger, "run-a", 2, "BTC/USD", "buy", 0.5, late_s=200)
    _trade(ledger, "run-b", 3, "SPY", "buy", 3.0)
    _trade(ledger, "run-b", 4, "BTC/USD", "sell", 0.5)
    ledger.equity("paper", T0 + timedelta(minutes=2), 90_000.0, 10_500.0)
    ledger.equity("paper", T0 + timedelta(minutes=1), 90_000.0, 10_000.0)
    ledger.equity("live", T0, 1.0, 0.0)
    ledger.flush()
    return warehouse_path


def test_net_positions_of_a_run_and_of_the_account(ledger_warehouse: Path) -> None:
    with connect(ledger_warehouse, timeout_s=5) as con:
        assert net_positions(con, run_id="run-a", mode="paper") == {"SPY": 6.0, "BTC/USD": 0.5}
        # run-b's BTC sell nets the account's BTC to zero: left out.
        assert net_positions(con, run_id=None, mode="paper") == {"SPY": 9.0}
        assert net_positions(con, run_id=None, mode="live") == {}


def test_the_recovery_reads_by_client_order_id(ledger_warehouse: Path) -> None:
    ids = ["c-run-a-0", "c-run-a-1", "c-unknown"]
    with connect(ledger_warehouse, timeout_s=5) as con:
        assert recorded_fill_ids(con, ids) == {"f-run-a-0", "f-run-a-1"}
        assert order_statuses(con, ids) == {"c-run-a-0": "filled", "c-run-a-1": "filled"}
        assert booked_fills(con, ids) == {"c-run-a-0": (10.0, 1000.0), "c-run-a-1": (4.0, 404.0)}
        assert recorded_fill_ids(con, []) == set()


def test_first_equity_in_a_window(ledger_warehouse: Path) -> None:
    with connect(ledger_warehouse, timeout_s=5) as con:
        # after < ts <= until, the earliest first.
        assert first_equity_in(con, "paper", T0, T0 + timedelta(minutes=5)) == 100_000.0
        assert (
            first_equity_in(con, "paper", T0 + timedelta(minutes=1), T0 + timedelta(minutes=2))
            == 100_500.0
        )
        assert (
            first_equity_in(con, "paper", T0 + timedelta(minutes=2), T0 + timedelta(minutes=9))
            is None
        )


def test_the_soak_reads(ledger_warehouse: Path) -> None:
    with connect(ledger_warehouse, timeout_s=5) as con:
        assert filled_qty_by_broker_order(con, "paper") == {
            "b-run-a-0": 10.0,
            "b-run-a-1": 4.0,
            "b-run-a-2": 0.5,
            "b-run-b-3": 3.0,
            "b-run-b-4": 0.5,
        }
        assert placed_client_order_ids(con, "paper") == {
            f"c-run-{r}-{i}" for r, i in [("a", 0), ("a", 1), ("a", 2), ("b", 3), ("b", 4)]
        }
        assert placed_client_order_ids(con, "live") == set()
        # Only run-a's third order went out 200 s after its decision (the limit is 150 s).
        assert late_order_count(con, "paper") == 1
