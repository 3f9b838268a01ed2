"""Scenario 7: another process holds the DuckDB file during a paper session.

Trading goes on from the bars in memory, every record of the locked minutes (bars,
decisions, orders, fills, equity) waits in the outbox, and once the file is free the next
writes merge it: at the end the warehouse holds everything, once, and agrees with the broker.

The session is test_live_paper's: the real alpaca-py clients against the fake Alpaca, a
clock whose sleep() moves the fake market. The lock is held by a real second process.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from core.settings import get_settings
from flows.live_trading import live_trading
from tests.fakes.alpaca import fake_alpaca_rest  # noqa: F401
from tests.integration.test_live_paper import (
    START,
    STREAM_FROM,
    Market,
    MarketClock,
    market,  # noqa: F401
    paper,
)
from tests.integration.test_trading_flows import SYMBOLS, query, shared  # noqa: F401
from trading.orders import client_order_id

pytestmark = [pytest.mark.prefect, pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

MINUTE = timedelta(minutes=1)
MINUTES = 7
LOCKED = [STREAM_FROM + k * MINUTE for k in (1, 2, 3)]  # bars that arrive while it is held

_HOLD = """
import sys, time, duckdb
while True:
    try:
        con = duckdb.connect(sys.argv[1])
        break
    except duckdb.IOException:
        time.sleep(0.02)
print("held", flush=True)
sys.stdin.read()
con.close()
"""


class Holder:
    """A second process that opens the warehouse read-write (DuckDB's file lock) until released."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.proc: subprocess.Popen[bytes] | None = None

    def hold(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _HOLD, str(self.path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == b"held"

    def release(self) -> None:
        if self.proc is not None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            assert self.proc.wait(timeout=30) == 0
            self.proc = None


class LockingClock(MarketClock):
    """Takes the lock just before the first LOCKED minute's bars go out, frees it after the last."""

    def __init__(self, holder: Holder, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.holder = holder
        self.held_at: list[datetime] = []

    def _publish(self, minute: datetime) -> None:
        if minute == LOCKED[0]:
            self.holder.hold()
        if minute == LOCKED[-1] + MINUTE:
            self.holder.release()
        if self.holder.proc is not None:
            self.held_at.append(minute)
        super()._publish(minute)


def test_a_locked_warehouse_mid_session_trades_on_and_loses_nothing(
    market: Market,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Give up on the lock quickly (the default is 2 s a write) to keep the test short.
    monkeypatch.setattr("flows.wiring.LIVE_LOCK_TIMEOUT_S", 0.3)
    holder = Holder(market.warehouse)
    clock = LockingClock(holder, START, market.bars, market.ws, market.rest)
    market.clocks.append(clock)
    try:
        result = live_trading(paper(market, max_minutes=MINUTES, reconcile_every_min=2))
    finally:
        holder.release()

    assert clock.held_at == LOCKED  # the lock really was held while those bars came
    assert result["status"] == "traded" and result["decisions"] == MINUTES
    assert result["outboxed_rows"] > 0  # the locked minutes' ledger rows went to the outbox
    run_id = result["run_id"]

    # Every minute was decided, the locked ones included, and is in the warehouse once.
    decided = query(
        market.warehouse, "SELECT ts FROM decisions WHERE run_id = ? ORDER BY ts", [run_id]
    )
    assert [d[0] for d in decided] == [STREAM_FROM + i * MINUTE for i in range(MINUTES)]
    # The bars that came while it was locked were merged from the outbox, each once.
    stored = query(
        market.warehouse,
        "SELECT ts, count(*) FROM bars WHERE source = 'alpaca' GROUP BY ts ORDER BY ts",
    )
    assert stored == [(STREAM_FROM + i * MINUTE, len(SYMBOLS)) for i in range(MINUTES - 1)]
    outbox = get_settings().data_dir / "outbox"
    assert sorted(p.name for p in outbox.rglob("*.parquet")) == []

    # Orders and fills: what the broker has, the ledger has, once each.
    ours = market.rest.orders
    assert ours, "the agent placed no order in these minutes: nothing to check"
    ledger_orders = query(
        market.warehouse,
        "SELECT o.client_order_id, o.side, o.qty, o.decision_id FROM orders o"
        " JOIN decisions d USING (decision_id) WHERE d.run_id = ? ORDER BY o.submitted_at",
        [run_id],
    )
    assert [(c, s, q) for c, s, q, _ in ledger_orders] == [
        (o["client_order_id"], o["side"], float(o["qty"])) for o in ours
    ]
    assert all(cid == client_order_id(did) for cid, _, _, did in ledger_orders)
    fills = query(market.warehouse, "SELECT fill_id, side, qty FROM fills WHERE mode = 'paper'")
    assert len({f[0] for f in fills}) == len(fills) == sum(o["status"] == "filled" for o in ours)
    held = sum(q if s == "buy" else -q for _, s, q in fills)
    assert held == pytest.approx(market.rest.positions.get("SPY", 0.0))
    # One equity point per decided minute, locked ones included.
    equity = query(
        market.warehouse, "SELECT count(DISTINCT ts) FROM equity WHERE account = 'paper'"
    )
    assert equity[0][0] >= MINUTES
