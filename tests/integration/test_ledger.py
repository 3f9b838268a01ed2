"""Ledger over a real DuckDB warehouse: idempotent keyed upserts, and the Parquet outbox that
takes a flush while another process holds the warehouse lock."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from adapters.protocols import Fill, Order
from trading.ledger import Ledger
from warehouse.db import WarehouseLockedError, connect

T0 = datetime(2024, 3, 4, 14, 31, tzinfo=UTC)
TABLES = ("decisions", "orders", "fills", "equity", "reconciliation_events")


def _decision(i: int) -> dict[str, Any]:
    return {
        "decision_id": f"run-1|SPY|{i}",
        "run_id": "run-1",
        "mode": "paper",
        "symbol": "SPY",
        "ts": T0 + timedelta(minutes=i),
        "model_id": "m-1",
        "inputs": '{"ret_1": 0.001}',
        "q_values": [0.1, 0.2, 0.3],
        "action": "long",
        "allocation": 1.0,
        "risk_verdict": "accepted",
        "risk_reason": None,
        "created_at": T0 + timedelta(minutes=i),
    }


def _order(i: int, status: str = "new") -> Order:
    return Order(
        id=f"broker-{i}",
        client_order_id=f"tml-{i}",
        symbol="SPY",
        side="buy",
        qty=10.0,
        filled_qty=0.0,
        filled_avg_price=None,
        status=status,
        submitted_at=T0 + timedelta(minutes=i),
    )


def _fill(i: int) -> Fill:
    return Fill(
        fill_id=f"broker-{i}-1",
        order_id=f"broker-{i}",
        client_order_id=f"tml-{i}",
        symbol="SPY",
        side="buy",
        qty=10.0,
        price=500.0 + i,
        ts=T0 + timedelta(minutes=i, seconds=30),
        fee=0.5,
    )


def _fill_ledger(ledger: Ledger, n: int = 3, status: str = "new") -> None:
    for i in range(n):
        ledger.decision(_decision(i))
        ledger.order(_order(i, status), f"run-1|SPY|{i}", T0 + timedelta(minutes=i))
        ledger.fill(_fill(i), "sim")
        ledger.equity("paper", T0 + timedelta(minutes=i), 90_000.0, 10_000.0 + i)
    ledger.event(
        {
            "event_id": "ev-1",
            "ts": T0,
            "account": "paper",
            "symbol": "SPY",
            "kind": "position_mismatch",
            "warehouse_qty": 10.0,
            "broker_qty": 9.0,
            "action": "adopted_broker",
            "detail": None,
        }
    )


def _counts(path: Path) -> dict[str, int]:
    with connect(path, timeout_s=5) as con:
        return {t: int(con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0]) for t in TABLES}


def _statuses(path: Path) -> dict[str, str]:
    with connect(path, timeout_s=5) as con:
        rows = con.execute("SELECT client_order_id, status FROM orders").fetchall()
    return {str(k): str(v) for k, v in rows}


@pytest.fixture
def warehouse(warehouse_path: Path) -> Path:
    with connect(warehouse_path, timeout_s=5):
        pass  # created and migrated
    return warehouse_path


def test_flushing_the_same_rows_twice_leaves_one_row_per_key(warehouse: Path) -> None:
    ledger = Ledger(warehouse, mode="paper", lock_timeout_s=5)
    _fill_ledger(ledger)
    first = ledger.flush()
    assert first == {
        "decisions": 3,
        "orders": 3,
        "fills": 3,
        "equity": 3,
        "reconciliation_events": 1,
    }
    assert ledger.pending == 0
    assert ledger.flush() == {}  # nothing buffered: nothing to do

    # A restarted run writes the very same rows again.
    again = Ledger(warehouse, mode="paper", lock_timeout_s=5)
    _fill_ledger(again)
    again.flush()

    assert _counts(warehouse) == {
        "decisions": 3,
        "orders": 3,
        "fills": 3,
        "equity": 3,
        "reconciliation_events": 1,
    }
    with connect(warehouse, timeout_s=5) as con:
        q = con.execute(
            "SELECT q_values, inputs FROM decisions WHERE decision_id = 'run-1|SPY|0'"
        ).fetchall()
        eq = con.execute("SELECT equity FROM equity ORDER BY ts").fetchall()
    assert q == [([0.1, 0.2, 0.3], '{"ret_1": 0.001}')]
    assert [r[0] for r in eq] == [100_000.0, 100_001.0, 100_002.0]


def test_a_repeated_key_in_one_buffer_keeps_the_last_row(warehouse: Path) -> None:
    ledger = Ledger(warehouse, mode="paper", lock_timeout_s=5)
    ledger.order(_order(0, "new"), "d-0", T0)
    ledger.order(_order(0, "filled"), "d-0", T0 + timedelta(seconds=5))
    ledger.flush()
    assert _statuses(warehouse) == {"tml-0": "filled"}


def test_an_order_updated_with_a_new_status_replaces_the_old_row(warehouse: Path) -> None:
    ledger = Ledger(warehouse, mode="paper", lock_timeout_s=5)
    ledger.order(_order(0, "new"), "d-0", T0)
    ledger.order(_order(1, "new"), "d-1", T0)
    ledger.flush()
    filled = replace(_order(0, "filled"), filled_qty=10.0, filled_avg_price=500.0)
    ledger.order(filled, "d-0", T0 + timedelta(minutes=1))
    ledger.flush()

    assert _statuses(warehouse) == {"tml-0": "filled", "tml-1": "new"}
    with connect(warehouse, timeout_s=5) as con:
        updated = con.execute(
            "SELECT updated_at FROM orders WHERE client_order_id = 'tml-0'"
        ).fetchall()
    assert updated == [(T0 + timedelta(minutes=1),)]


def test_a_given_connection_is_used_as_is(warehouse: Path) -> None:
    ledger = Ledger(warehouse, mode="paper")
    _fill_ledger(ledger, n=1)
    with connect(warehouse, timeout_s=5) as con:
        assert ledger.flush(con)["decisions"] == 1
    assert ledger.flushed["fills"] == 1
    assert _counts(warehouse)["fills"] == 1


class _CommitsFirst:
    """A connection whose first COMMIT is preceded by another connection's COMMIT of the same
    equity row: two flows of one process writing the account's minute at once."""

    def __init__(self, con: Any, other: Any) -> None:
        self._con, self._other, self.raced = con, other, False

    def execute(self, sql: str, *args: Any) -> Any:
        if sql == "COMMIT" and not self.raced:
            self.raced = True
            self._other.execute("COMMIT")
        return self._con.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)


@pytest.mark.parametrize("rows", [1, 70], ids=["fast-insert", "upsert"])
def test_a_key_another_connection_commits_first_is_written_again_not_lost(
    warehouse: Path, rows: int
) -> None:
    """Both paths of a flush (plain INSERTs, the upsert) meet DuckDB's optimistic commit: the
    other connection's equity row wins the race, this write runs again and updates it."""
    with connect(warehouse, timeout_s=5) as con:
        other = con.cursor()
        other.execute("BEGIN TRANSACTION")
        other.execute(
            "INSERT INTO equity (account, ts, cash, positions_value, equity) "
            "VALUES ('paper', ?, 1.0, 0.0, 1.0)",
            [T0],
        )
        ledger = Ledger(warehouse, mode="paper")
        for i in range(rows):
            ledger.equity("paper", T0 + timedelta(minutes=i), 100.0, 5.0)
        racing = _CommitsFirst(con, other)
        ledger.flush(racing)  # type: ignore[arg-type]
        assert racing.raced
        stored = con.execute(
            "SELECT count(*), max(equity) FILTER (WHERE ts = ?) FROM equity", [T0]
        ).fetchall()
    assert stored == [(rows, 105.0)]


HOLDER = textwrap.dedent(
    """
    import sys, duckdb
    con = duckdb.connect(sys.argv[1])
    print("holding", flush=True)
    sys.stdin.readline()  # hold the lock until told to let go
    con.close()
    """
)


class _Holder:
    """Another process that holds the warehouse's DuckDB lock until released."""

    def __init__(self, path: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "holding"

    def release(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()  # readline() returns: it closes and exits
            self.proc.wait(timeout=10)


@pytest.fixture
def holder(warehouse: Path) -> Iterator[_Holder]:
    held = _Holder(warehouse)
    try:
        yield held
    finally:
        if held.proc.poll() is None:
            held.proc.kill()
        held.proc.wait()


def test_a_locked_warehouse_without_an_outbox_raises(warehouse: Path, holder: _Holder) -> None:
    ledger = Ledger(warehouse, mode="paper", lock_timeout_s=0.1)
    _fill_ledger(ledger, n=1)
    with pytest.raises(WarehouseLockedError, match=f"PID {holder.proc.pid}"):
        ledger.flush()
    assert ledger.pending == 5  # nothing was lost


def test_a_locked_warehouse_sends_the_flush_to_the_outbox_merged_later(
    warehouse: Path, holder: _Holder, tmp_path: Path
) -> None:
    outbox = tmp_path / "outbox"
    ledger = Ledger(warehouse, mode="paper", outbox=outbox, lock_timeout_s=0.1)
    _fill_ledger(ledger, status="new")

    assert ledger.flush() == {}  # no exception: the rows went to the outbox
    files = sorted(p.name.split("--")[0] for p in outbox.glob("*.parquet"))
    assert files == sorted(TABLES)
    assert ledger.pending == 0 and ledger.outboxed == 13

    # A second locked flush: the same orders, now filled, plus one more decision.
    for i in range(3):
        ledger.order(_order(i, "filled"), f"run-1|SPY|{i}", T0 + timedelta(minutes=5))
    ledger.decision(_decision(3))
    assert ledger.flush() == {}
    assert len(list(outbox.glob("*.parquet"))) == 7
    assert not list(outbox.glob("*.tmp")) and not list(outbox.glob(".*"))

    holder.release()
    # Nothing buffered, but the outbox is there: this flush merges it.
    merged = ledger.flush()

    assert merged["orders"] == 3 and merged["decisions"] == 4
    assert list(outbox.glob("*.parquet")) == []
    assert _counts(warehouse) == {
        "decisions": 4,
        "orders": 3,
        "fills": 3,
        "equity": 3,
        "reconciliation_events": 1,
    }
    # The newer outbox file wins for a repeated key.
    assert _statuses(warehouse) == {f"tml-{i}": "filled" for i in range(3)}
    # And a later flush of the same rows changes nothing.
    _fill_ledger(ledger, status="filled")
    ledger.decision(_decision(3))
    ledger.flush()
    assert _counts(warehouse)["decisions"] == 4
    assert _counts(warehouse)["fills"] == 3


def test_buffered_rows_win_over_the_outbox_when_merging(
    warehouse: Path, holder: _Holder, tmp_path: Path
) -> None:
    outbox = tmp_path / "outbox"
    ledger = Ledger(warehouse, mode="paper", outbox=outbox, lock_timeout_s=0.1)
    ledger.order(_order(0, "new"), "d-0", T0)
    ledger.flush()
    holder.release()
    ledger.order(_order(0, "filled"), "d-0", T0 + timedelta(minutes=1))
    assert ledger.flush()["orders"] == 1
    assert _statuses(warehouse) == {"tml-0": "filled"}
    assert list(outbox.glob("*.parquet")) == []
