"""kill -9 during warehouse writes: the file reopens consistent, and the trades match the broker's.

The victim writes what a trading run writes, in a loop, through the real Ledger: per
minute it first appends the order it "sent" to a broker log (the broker's record), then
flushes a decision, that order, its fill and an equity point as one transaction (now and
then a CHECKPOINT too). It is killed with SIGKILL at a random moment once a few
transactions are in. Reopened, the warehouse must pass the migrations check, hold every
committed transaction whole and no part of any other; recovery + reconciliation against
the broker's record then make the trades match it exactly.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import numpy as np
import pytest

from adapters.protocols import Account, MarketClock, Order, OrderRequest, Position
from trading.engine import Book, EngineConfig, PrecomputedQ, TradingEngine, decision_id
from trading.ledger import Ledger
from trading.orders import OrderManager, client_order_id
from trading.reconcile import (
    OrderFillPoller,
    reconcile,
    recover_orders,
    session_client_ids,
    warehouse_positions,
)
from trading.risk import RiskEngine
from warehouse.db import connect
from warehouse.migrate import available_migrations, current_version

ROOT = Path(__file__).resolve().parents[2]
RUN, SYMBOL = "paper-SPY-2024-03-04-m-1", "SPY"
OPEN = datetime(2024, 3, 4, 14, 30, tzinfo=UTC)
CASH = 100_000.0
MINUTES = 380  # the victim's whole run, if nobody stopped it

VICTIM = f"""
import json, sys
from datetime import datetime, timedelta
from pathlib import Path
from adapters.protocols import Fill, Order
from trading.ledger import Ledger
from trading.orders import client_order_id
from warehouse.db import connect

warehouse, broker_log = Path(sys.argv[1]), Path(sys.argv[2])
run, symbol = {RUN!r}, {SYMBOL!r}
opened = datetime.fromisoformat({OPEN.isoformat()!r})
ledger = Ledger(warehouse, mode="paper")
with connect(warehouse, timeout_s=30) as con, broker_log.open("a") as sent:
    for i in range({MINUTES}):
        when = opened + timedelta(minutes=i + 1)
        did = f"{{run}}|{{symbol}}|{{when.isoformat()}}"  # trading.engine.decision_id
        cid = client_order_id(did)
        side = "buy" if i % 2 == 0 else "sell"
        price = 500.0 + i % 7
        order = Order(f"b-{{i}}", cid, symbol, side, 10.0, 10.0, price, "filled", when)
        # The broker has it (and filled it) before anything is written here.
        sent.write(json.dumps({{"cid": cid, "id": order.id, "side": side, "price": price,
                               "ts": when.isoformat()}}) + "\\n")
        sent.flush()
        ledger.decision({{"decision_id": did, "run_id": run, "mode": "paper", "symbol": symbol,
            "ts": when, "model_id": "m-1", "inputs": None, "q_values": [0.0, 1.0, 0.0],
            "action": "long", "allocation": 1.0, "risk_verdict": "accepted",
            "risk_reason": None, "created_at": when}})
        ledger.order(order, did, when)
        ledger.fill(Fill(f"b-{{i}}:10", order.id, cid, symbol, side, 10.0, price, when), "rest")
        ledger.equity("paper", when, 100_000.0 - i, 0.0)  # the transaction's marker row
        ledger.flush(con)  # one transaction
        if i % 5 == 4:
            con.execute("CHECKPOINT")
        print(i, flush=True)
print("finished", flush=True)
"""


class LoggedBroker:
    """The broker's side, read back from the victim's log: every order filled at its price."""

    def __init__(self, log: Path) -> None:
        self.orders: list[Order] = []
        for line in log.read_text().splitlines():
            try:
                d = json.loads(line)
            except ValueError:
                continue  # a line cut by the kill: that order was never sent
            ts = datetime.fromisoformat(d["ts"])
            self.orders.append(
                Order(d["id"], d["cid"], SYMBOL, d["side"], 10.0, 10.0, d["price"], "filled", ts)
            )

    def _signed(self, o: Order) -> float:
        return o.qty if o.side == "buy" else -o.qty

    def get_account(self) -> Account:
        cash = CASH - sum(self._signed(o) * (o.filled_avg_price or 0.0) for o in self.orders)
        return Account(cash=cash, equity=cash, buying_power=cash)

    def get_clock(self) -> MarketClock:
        raise NotImplementedError

    def get_positions(self) -> list[Position]:
        qty = sum(self._signed(o) for o in self.orders)
        return [Position(SYMBOL, qty, 0.0, 0.0)] if abs(qty) > 1e-9 else []

    def list_orders(
        self, status: Literal["open", "closed", "all"] = "open", limit: int = 500
    ) -> list[Order]:
        return list(reversed(self.orders))[:limit]

    def submit_order(self, request: OrderRequest) -> Order:
        raise AssertionError("recovery must never send an order")

    def get_order_by_client_id(self, client_order_id: str) -> Order | None:
        return next((o for o in self.orders if o.client_order_id == client_order_id), None)

    def cancel_order(self, order_id: str) -> None:
        raise NotImplementedError

    def close_all_positions(self) -> list[Order]:
        raise NotImplementedError


def _kill_mid_run(warehouse: Path, broker_log: Path, seed: int) -> int:
    """Start the victim, SIGKILL it at a random moment after its 5th commit; its last commit."""
    victim = subprocess.Popen(
        [sys.executable, "-c", VICTIM, str(warehouse), str(broker_log)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert victim.stdout is not None
    lines: list[str] = []
    for line in victim.stdout:
        lines.append(line.strip())
        if line.strip() == "4":
            break
    time.sleep(random.Random(seed).uniform(0.0, 0.6))
    os.kill(victim.pid, signal.SIGKILL)
    rest, _ = victim.communicate(timeout=30)
    lines += rest.split()
    assert victim.returncode == -signal.SIGKILL, "\n".join(lines)
    assert "finished" not in lines, "the victim finished before the kill: nothing interrupted"
    return max(int(x) for x in lines if x.isdigit())


def _recovering_engine(warehouse: Path, broker: LoggedBroker) -> tuple[TradingEngine, Ledger]:
    ledger = Ledger(warehouse, mode="paper")
    with connect(warehouse, timeout_s=30) as con:
        ours = warehouse_positions(con, run_id=None, mode="paper")
    engine = TradingEngine(
        EngineConfig(RUN, "paper", "paper", SYMBOL, "m-1", ("x",)),
        PrecomputedQ({"s": np.zeros((1, 2, 3))}),
        broker,
        RiskEngine(),
        OrderManager(broker),
        ledger,
        Book(cash=broker.get_account().cash, qty=ours),
        list,
        seen_via="rest",
    )
    return engine, ledger


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kill_9_during_ledger_writes_leaves_whole_transactions_and_trades_match(
    tmp_path: Path, seed: int
) -> None:
    warehouse, broker_log = tmp_path / "w.duckdb", tmp_path / "broker.jsonl"
    with connect(warehouse, timeout_s=30):
        pass  # created and migrated before the victim starts
    last_reported = _kill_mid_run(warehouse, broker_log, seed)
    broker = LoggedBroker(broker_log)
    sent = {o.client_order_id for o in broker.orders}

    # The file opens, and the migrations check passes: nothing to apply, nothing changed.
    with connect(warehouse, timeout_s=30) as con:
        assert current_version(con) == available_migrations()[-1].version
        committed = con.execute(
            "SELECT d.decision_id, o.client_order_id, f.fill_id, e.ts"
            " FROM decisions d FULL JOIN orders o USING (decision_id)"
            " FULL JOIN fills f USING (client_order_id)"
            " FULL JOIN equity e ON e.ts = d.ts AND e.account = 'paper' ORDER BY e.ts"
        ).fetchall()
    # Every transaction whole (decision, order, fill, marker all there) or not at all.
    assert all(None not in row for row in committed), [r for r in committed if None in r]
    n = len(committed)
    assert n >= last_reported + 1  # what it reported committed is there
    # The committed ones are the first n minutes, in order; the broker got at most one more.
    minutes = [decision_id(RUN, SYMBOL, OPEN + timedelta(minutes=i + 1)) for i in range(n)]
    assert [r[0] for r in committed] == minutes
    assert {r[1] for r in committed} <= sent and len(sent) - n in (0, 1)

    # Restart: recovery records what the broker has and the warehouse lost; reconcile agrees.
    engine, ledger = _recovering_engine(warehouse, broker)
    now = OPEN + timedelta(minutes=n + 2)
    poller = OrderFillPoller(broker, list)
    with connect(warehouse, timeout_s=30) as con:
        recovered = recover_orders(
            engine,
            poller,
            broker,
            con,
            candidates=session_client_ids(RUN, SYMBOL, OPEN, now),
            now=now,
        )
    assert len(recovered) == len(sent) - n
    assert reconcile(engine.book, broker, ledger, account="paper", run_id=RUN, now=now) == 0
    ledger.flush()
    with connect(warehouse, timeout_s=30) as con:
        fills = con.execute("SELECT client_order_id, side, qty, price FROM fills").fetchall()
        assert warehouse_positions(con, run_id=None, mode="paper") == {
            p.symbol: p.qty for p in broker.get_positions()
        }
    assert sorted(fills) == sorted(
        (o.client_order_id, o.side, o.qty, o.filled_avg_price) for o in broker.orders
    )
    assert {client_order_id(m) for m in minutes} <= sent
