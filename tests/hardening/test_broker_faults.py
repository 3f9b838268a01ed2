"""Broker faults on the paper path: the real alpaca-py broker against the fake Alpaca.

A paper session here is what trading.session.TradingSession builds, driven directly:
Book from the warehouse's fills and the broker's cash, the REST fill poller, the tracked
order manager, recover_orders + reconcile at the start, then TradingEngine decisions on
hand-set Q-values (no model, no stream). Scenarios (issue 8):
1. killed (SIGKILL) after the broker accepted an order, before the ledger flush;
2. a submit that times out or meets a 504 although the order landed;
3. a 429 storm on every REST path;
5. one fill seen by two routes (stream and REST).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from adapters.alpaca import AlpacaBroker
from adapters.protocols import Fill, Order, OrderRequest
from models.env import FLAT, LONG
from tests.fakes.alpaca import FakeAlpacaRest, fake_alpaca_rest  # noqa: F401
from trading.engine import Book, EngineConfig, PrecomputedQ, TradingEngine, decision_id
from trading.ledger import Ledger
from trading.orders import client_order_id
from trading.reconcile import (
    OrderFillPoller,
    TrackedOrderManager,
    reconcile,
    recover_orders,
    session_client_ids,
    warehouse_positions,
)
from trading.risk import RiskEngine, RiskLimits
from warehouse.db import connect

ROOT = Path(__file__).resolve().parents[2]
KEY, SECRET = "fake-key-id", "fake-secret-key"
SYMBOL = "SPY"
DAY = date(2024, 3, 4)
OPEN = datetime(2024, 3, 4, 14, 30, tzinfo=UTC)  # 09:30 in New York
MIN = timedelta(minutes=1)
RUN = "paper-SPY-2024-03-04-m-1"
PRICE = 500.0
ORDERS = "/v2/orders"
ROW = np.zeros(1)


def _q(*actions: int) -> np.ndarray:
    """Q-values [steps, 2 positions, 3 actions] whose argmax is actions[step]."""
    q = np.zeros((len(actions), 2, 3))
    for step, action in enumerate(actions):
        q[step, :, action] = 1.0
    return q


def _no_sleep(_s: float) -> None:
    return None


@dataclass
class Paper:
    engine: TradingEngine
    poller: OrderFillPoller
    broker: AlpacaBroker
    ledger: Ledger

    def minute(self, step: int, *, flush: bool = True) -> str:
        """Sync fills, then decide on the bar OPEN + step minutes (closed a minute later)."""
        bar_ts = OPEN + step * MIN
        self.engine.sync_fills()
        self.engine.mark(SYMBOL, PRICE)
        action = self.engine.decide(
            now=bar_ts + MIN + timedelta(seconds=3),
            bar_ts=bar_ts,
            price=PRICE,
            row=ROW,
            step=step,
            session_close=None,
        )
        if flush:
            self.ledger.flush()
        return action


def paper_session(
    warehouse: Path,
    base_url: str,
    q: np.ndarray,
    *,
    now: datetime,
    broker: AlpacaBroker | None = None,
    fills: Callable[[OrderFillPoller], Callable[[], list[Fill]]] | None = None,
) -> Paper:
    """The start of a paper session as _run_session does it (recovery, then reconciliation)."""
    broker = broker or AlpacaBroker(KEY, SECRET, base_url=base_url, sleep=_no_sleep)
    ledger = Ledger(warehouse, mode="paper")
    with connect(warehouse) as con:
        ours = warehouse_positions(con, run_id=None, mode="paper")
    book = Book(cash=broker.get_account().cash, qty=ours)
    engine_ref: list[TradingEngine] = []
    poller = OrderFillPoller(broker, lambda: engine_ref[0].open_orders.keys() if engine_ref else ())
    engine = TradingEngine(
        EngineConfig(
            run_id=RUN,
            mode="paper",
            account="paper",
            symbol=SYMBOL,
            model_id="m-1",
            feature_names=("x",),
            allocation=0.5,
        ),
        PrecomputedQ({"s": q}),
        broker,
        RiskEngine(RiskLimits()),
        TrackedOrderManager(broker, poller, sleep=_no_sleep),
        ledger,
        book,
        fills(poller) if fills is not None else poller,
        seen_via="rest",
    )
    engine_ref.append(engine)
    with connect(warehouse) as con:
        recover_orders(
            engine,
            poller,
            broker,
            con,
            candidates=session_client_ids(RUN, SYMBOL, OPEN, now),
            now=now,
        )
    reconcile(book, broker, ledger, account="paper", run_id=RUN, now=now)
    engine.begin_session("s", DAY)
    return Paper(engine, poller, broker, ledger)


def query(warehouse: Path, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with connect(warehouse) as con:
        return con.execute(sql, params or []).fetchall()


@pytest.fixture
def fake(fake_alpaca_rest: FakeAlpacaRest) -> FakeAlpacaRest:  # noqa: F811
    fake_alpaca_rest.set_price(SYMBOL, PRICE)
    fake_alpaca_rest.set_now(OPEN + 2 * MIN)
    return fake_alpaca_rest


@pytest.fixture
def warehouse(warehouse_path: Path) -> Path:
    with connect(warehouse_path, timeout_s=5):
        pass  # created and migrated
    return warehouse_path


def _cid(step: int) -> str:
    """The client order id of the decision on bar OPEN + step minutes."""
    return client_order_id(decision_id(RUN, SYMBOL, OPEN + (step + 1) * MIN))


# -------------------------------------------------- 1: killed between accept and flush

# Minute 0: flat (flushed). Minute 1: long -> the order is accepted and filled -> SIGKILL.
CRASH_Q = _q(FLAT, LONG, LONG, LONG)


class _KilledAfterSubmit(AlpacaBroker):
    """The broker accepted (and filled) the order; the process dies before anything else."""

    def submit_order(self, request: OrderRequest) -> Order:
        order = super().submit_order(request)
        os.kill(os.getpid(), signal.SIGKILL)
        return order  # pragma: no cover -- never reached


def crash_after_submit(warehouse: Path, base_url: str) -> None:
    """The victim: decide minute 0 (flushed), then minute 1, whose submit kills the process."""
    broker = _KilledAfterSubmit(KEY, SECRET, base_url=base_url, sleep=_no_sleep)
    run = paper_session(warehouse, base_url, CRASH_Q, now=OPEN + MIN, broker=broker)
    run.minute(0)
    run.minute(1)
    print("not killed", flush=True)


VICTIM = """
import sys
from pathlib import Path
from tests.hardening.test_broker_faults import crash_after_submit
crash_after_submit(Path(sys.argv[1]), sys.argv[2])
"""


@pytest.mark.slow
def test_killed_after_the_broker_accepted_records_the_fill_once_and_resends_nothing(
    fake: FakeAlpacaRest, warehouse: Path
) -> None:
    victim = subprocess.run(
        [sys.executable, "-c", VICTIM, str(warehouse), fake.base_url],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert victim.returncode == -signal.SIGKILL, victim.stdout + victim.stderr
    cid = _cid(1)
    # The broker has the order, filled; the warehouse has only the flushed minute 0.
    assert [(o["client_order_id"], o["status"]) for o in fake.orders] == [(cid, "filled")]
    assert fake.positions == {SYMBOL: 100.0}
    assert query(warehouse, "SELECT count(*) FROM decisions") == [(1,)]
    assert query(warehouse, "SELECT count(*) FROM orders") == [(0,)]
    assert query(warehouse, "SELECT count(*) FROM fills") == [(0,)]

    # The restart: a fresh session on the same warehouse and broker, at the same minute.
    run = paper_session(warehouse, fake.base_url, CRASH_Q, now=OPEN + 2 * MIN)
    assert run.engine.book.qty == {SYMBOL: 100.0}  # the broker's position, from its fill
    assert run.minute(1) == "long"  # the minute that crashed, decided again: no order
    assert run.minute(2) == "long"

    posts = fake.requests_to(ORDERS, "POST")
    assert [r.body["client_order_id"] for r in posts] == [cid]  # nothing was resent
    assert len(fake.orders) == 1 and fake.positions == {SYMBOL: 100.0}
    order = fake.orders[0]
    fills = query(
        warehouse, "SELECT fill_id, client_order_id, side, qty, price, seen_via FROM fills"
    )
    assert fills == [(f"{order['id']}:100", cid, "buy", 100.0, PRICE, "rest")]
    assert query(
        warehouse, "SELECT client_order_id, broker_order_id, decision_id, status FROM orders"
    ) == [(cid, order["id"], decision_id(RUN, SYMBOL, OPEN + 2 * MIN), "filled")]
    events = query(warehouse, "SELECT kind, broker_qty, action FROM reconciliation_events")
    assert events == [("missing_fill", 100.0, "recorded_broker_fill")]
    assert run.engine.book.qty == {SYMBOL: 100.0}
    assert run.engine.book.cash == pytest.approx(fake.cash)

    # Another restart finds everything recorded: no new row, no event, no order.
    again = paper_session(warehouse, fake.base_url, CRASH_Q, now=OPEN + 3 * MIN)
    again.minute(2)
    assert query(warehouse, "SELECT count(*) FROM fills") == [(1,)]
    assert query(warehouse, "SELECT count(*) FROM reconciliation_events") == [(1,)]
    assert len(fake.requests_to(ORDERS, "POST")) == 1
    with connect(warehouse) as con:
        assert warehouse_positions(con, run_id=None, mode="paper") == fake.positions


# ------------------------------------------- 2: a submit that timed out or met a 504


@pytest.mark.parametrize("fault", ["504-after-accept", "read-timeout"])
def test_a_submit_lost_after_the_broker_accepted_is_one_order_and_one_fill(
    fake: FakeAlpacaRest, warehouse: Path, fault: str
) -> None:
    broker = AlpacaBroker(KEY, SECRET, base_url=fake.base_url, sleep=_no_sleep, timeout_s=0.5)
    run = paper_session(warehouse, fake.base_url, _q(LONG, LONG, LONG), now=OPEN, broker=broker)
    if fault == "504-after-accept":
        fake.inject(ORDERS, method="POST", status=504, after=True)
    else:  # the order is made, the answer comes after the client gave up
        fake.inject(ORDERS, method="POST", delay_after=2.0)

    for step in range(3):
        run.minute(step)
    run.engine.sync_fills()
    run.ledger.flush()

    assert len(fake.orders) == 1 and fake.positions == {SYMBOL: 100.0}
    posts = [r.body["client_order_id"] for r in fake.requests_to(ORDERS, "POST")]
    # The 504 is retried by the client and meets 422; the timeout is not retried at all.
    assert posts == [_cid(0)] * (2 if fault == "504-after-accept" else 1)
    assert query(warehouse, "SELECT client_order_id, status FROM orders") == [(_cid(0), "filled")]
    assert query(warehouse, "SELECT count(*), sum(qty) FROM fills") == [(1, 100.0)]
    assert run.engine.book.qty == {SYMBOL: 100.0}


# ---------------------------------------------------------------- 3: a 429 storm


class VirtualTime:
    """monotonic() and sleep() of the broker's rate limiter and retries, and the fake's log."""

    def __init__(self) -> None:
        self.t = 0.0

    def monotonic(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += max(0.0, seconds)


RATE, BURST = 6, 1  # requests a minute, at once: tighter than the storm's retries want
STORM = (60.0, 420.0)  # virtual seconds: every REST request answers 429 in between


def test_a_429_storm_stays_in_budget_skips_cycles_with_a_log_and_trades_after(
    fake: FakeAlpacaRest, warehouse: Path, caplog: pytest.LogCaptureFixture
) -> None:
    vt = VirtualTime()
    fake.request_clock = vt.monotonic
    broker = AlpacaBroker(
        KEY,
        SECRET,
        base_url=fake.base_url,
        max_requests_per_min=RATE,
        burst=BURST,
        sleep=vt.sleep,
        monotonic=vt.monotonic,
        retry_wait_seconds=1.0,
    )
    steps = 12
    run = paper_session(warehouse, fake.base_url, _q(*[LONG] * steps), now=OPEN, broker=broker)
    # Each 429 says the window refills within 1-2 s: short enough for the broker to wait and
    # retry (a longer reset raises at once: test_alpaca_rest), so the retries press on the
    # token bucket, which must hold them to its budget.
    fake.inject("/v2/", status=429, times=10**9, until=STORM[1], reset_in=1.0)
    caplog.set_level(logging.INFO)

    for step in range(steps):
        vt.t = max(vt.t, STORM[0] + 60.0 * step)  # the next minute boundary (or later)
        run.minute(step)
        if step % 2:
            reconcile(run.engine.book, broker, run.ledger, account="paper", run_id=RUN, now=OPEN)
    run.engine.sync_fills()
    run.ledger.flush()

    # The budget: no 60-second window holds more than the bucket allows.
    stamps = sorted(r.at for r in fake.requests if r.at >= STORM[0])
    assert len(stamps) > 3 * (RATE + BURST)  # the storm made the client want more
    worst = max(sum(1 for t in stamps if s <= t < s + 60.0) for s in stamps)
    assert worst <= BURST + RATE
    stormed = [r for r in fake.requests if STORM[0] <= r.at < STORM[1]]
    assert stormed and all(
        r.method != "POST" or r.body["client_order_id"] == _cid(0) for r in stormed
    )

    # The cycle that could not trade said so, and the session went on.
    skipped = [
        r.getMessage()
        for r in caplog.records
        if r.name == "trading.engine" and "skipped: broker rate-limited" in r.getMessage()
    ]
    assert len(skipped) == 1
    assert decision_id(RUN, SYMBOL, OPEN + MIN) in skipped[0] and "buy 100 SPY" in skipped[0]
    assert run.engine.skipped_cycles == 1
    assert run.engine.decisions == steps
    assert any("reconciliation skipped" in r.getMessage() for r in caplog.records)

    # After the storm: the refused order is known never to have landed, and exactly one
    # order (a later decision's) bought the position.
    assert len(fake.orders) == 1 and fake.positions == {SYMBOL: 100.0}
    traded = fake.orders[0]["client_order_id"]
    assert traded != _cid(0)
    statuses = dict(query(warehouse, "SELECT client_order_id, status FROM orders"))
    assert statuses == {_cid(0): "not_placed", traded: "filled"}
    posts = [r.body["client_order_id"] for r in fake.requests_to(ORDERS, "POST")]
    assert set(posts) == {_cid(0), traded} and posts.count(traded) == 1
    assert query(warehouse, "SELECT count(*), sum(qty) FROM fills") == [(1, 100.0)]
    assert run.engine.book.qty == {SYMBOL: 100.0}
    assert run.engine.book.cash == pytest.approx(fake.cash)


# ---------------------------------------------------- 5: one fill, two routes


class TwoRoutes:
    """Fills from the trade-update stream (pushed by the test) and from the REST poller."""

    def __init__(self, poller: OrderFillPoller) -> None:
        self.poller = poller
        self.stream: list[Fill] = []

    def __call__(self) -> list[Fill]:
        pushed, self.stream = self.stream, []
        polled = [replace(f, extra={"seen_via": "rest"}) for f in self.poller()]
        return pushed + polled


def _stream_fill(order: dict[str, Any]) -> Fill:
    """The fill an Alpaca trade_updates 'fill' event carries for this order state."""
    return Fill(
        fill_id=f"{order['id']}:{float(order['filled_qty']):g}",
        order_id=order["id"],
        client_order_id=order["client_order_id"],
        symbol=order["symbol"],
        side=order["side"],
        qty=float(order["filled_qty"]),
        price=float(order["filled_avg_price"]),
        ts=datetime.fromisoformat(order["filled_at"]),
        extra={"seen_via": "stream"},
    )


def test_a_fill_seen_by_stream_and_rest_is_one_row_and_booked_once(
    fake: FakeAlpacaRest, warehouse: Path
) -> None:
    routes: list[TwoRoutes] = []

    def two_routes(poller: OrderFillPoller) -> TwoRoutes:
        routes.append(TwoRoutes(poller))
        return routes[-1]

    q = _q(LONG, LONG, LONG, LONG)
    run = paper_session(warehouse, fake.base_url, q, now=OPEN, fills=two_routes)
    run.minute(0)  # buys 100; the order fills at the fake at once
    stream_copy = _stream_fill(fake.orders[0])
    routes[-1].stream.append(stream_copy)  # the stream's copy, the same sync as the poll's
    run.minute(1)
    routes[-1].stream.append(stream_copy)  # replayed after a stream reconnect, post-flush
    run.minute(2)

    rows = query(warehouse, "SELECT fill_id, qty, seen_via FROM fills")
    assert rows == [(stream_copy.fill_id, 100.0, "stream")]
    assert run.engine.book.qty == {SYMBOL: 100.0} == fake.positions
    assert run.engine.book.cash == pytest.approx(fake.cash)

    # A restarted session meets the same fill again by both routes: still booked once.
    again = paper_session(warehouse, fake.base_url, q, now=OPEN + 3 * MIN, fills=two_routes)
    # As if the order had still been open at the restart: the poller asks for it again.
    again.engine.open_orders[_cid(0)] = decision_id(RUN, SYMBOL, OPEN + MIN)
    routes[-1].stream.append(stream_copy)
    again.minute(3)
    assert query(warehouse, "SELECT count(*) FROM fills") == [(1,)]
    assert again.engine.book.qty == {SYMBOL: 100.0} == fake.positions
    assert again.engine.book.cash == pytest.approx(fake.cash)
    assert len(fake.orders) == 1
