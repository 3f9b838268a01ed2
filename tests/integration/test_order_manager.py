"""OrderManager: one decision is one order, whatever the broker (simulated, or Alpaca's REST
API through the real alpaca-py client against the fake server) answers on the way."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from adapters.alpaca import AlpacaBroker, AlpacaError
from adapters.clock import ManualClock
from adapters.protocols import Order, OrderRequest
from adapters.sim_broker import SimulatedBroker
from tests.fakes.alpaca import FakeAlpacaRest, fake_alpaca_rest  # noqa: F401
from trading.orders import OrderInDoubtError, OrderManager, client_order_id

T0 = datetime(2024, 3, 4, 14, 30, tzinfo=UTC)
DECISION = "run-1|SPY|2024-03-04T14:31:00+00:00"
ORDERS = "/v2/orders"


class Sleeps:
    """A sleep that only records how long it was asked to wait."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def fake(fake_alpaca_rest: FakeAlpacaRest) -> FakeAlpacaRest:  # noqa: F811
    fake_alpaca_rest.set_price("SPY", 500.0)
    return fake_alpaca_rest


def _alpaca(fake: FakeAlpacaRest, sleeps: Sleeps) -> AlpacaBroker:
    # The guard's retry wait goes through the injected sleep: no real 3 s pauses.
    return AlpacaBroker(
        "fake-key-id",
        "fake-secret-key",
        base_url=fake.base_url,
        sleep=sleeps,
        retry_wait_seconds=0.25,
    )


def _posts(fake: FakeAlpacaRest) -> int:
    return len(fake.requests_to(ORDERS, "POST"))


# ------------------------------------------------------------------- client_order_id


def test_client_order_id_is_deterministic_short_and_distinct() -> None:
    cid = client_order_id(DECISION)
    assert cid == client_order_id(DECISION)
    assert cid.startswith("tml-") and len(cid) <= 128
    assert cid != client_order_id(DECISION.replace("14:31", "14:32"))
    assert len(client_order_id("x" * 10_000)) <= 128


# ---------------------------------------------------------------------- simulated broker


def test_same_decision_twice_is_one_simulated_order() -> None:
    sim = SimulatedBroker(ManualClock(T0))
    manager = OrderManager(sim)

    first = manager.place(DECISION, "SPY", "buy", 10)
    second = manager.place(DECISION, "SPY", "buy", 10)

    assert first.how == "submitted"
    assert second.how == "found-after-duplicate"
    assert second.order.id == first.order.id
    assert first.order.client_order_id == client_order_id(DECISION)
    assert len(sim.orders()) == 1
    # A different decision is a different order.
    assert manager.place(DECISION + "-b", "SPY", "buy", 1).how == "submitted"
    assert len(sim.orders()) == 2


class _FlakySim(SimulatedBroker):
    """A simulated broker whose next submits fail: before or after the order landed."""

    def __init__(self) -> None:
        super().__init__(ManualClock(T0))
        self.fail_before: list[BaseException] = []
        self.fail_after: list[BaseException] = []
        self.hide_lookups = 0
        self.submits = 0

    def submit_order(self, request: OrderRequest) -> Order:
        self.submits += 1
        if self.fail_before:
            raise self.fail_before.pop(0)
        order = super().submit_order(request)
        if self.fail_after:
            raise self.fail_after.pop(0)
        return order

    def get_order_by_client_id(self, client_order_id: str) -> Order | None:
        if self.hide_lookups:
            self.hide_lookups -= 1
            return None
        return super().get_order_by_client_id(client_order_id)


def test_a_timeout_after_the_order_landed_is_resolved_by_lookup() -> None:
    sim = _FlakySim()
    sim.fail_after.append(TimeoutError("read timed out"))
    outcome = OrderManager(sim).place(DECISION, "SPY", "buy", 3)
    assert outcome.how == "found-after-error"
    assert sim.submits == 1 and len(sim.orders()) == 1


def test_a_connection_error_before_the_order_landed_is_resubmitted_once() -> None:
    sim = _FlakySim()
    sim.fail_before.append(ConnectionError("reset"))
    sleeps = Sleeps()
    outcome = OrderManager(sim, lookups=3, sleep=sleeps, lookup_wait_s=0.5).place(
        DECISION, "SPY", "buy", 3
    )
    assert outcome.how == "resubmitted"
    assert outcome.order.client_order_id == client_order_id(DECISION)
    assert sim.submits == 2 and len(sim.orders()) == 1
    assert sleeps.calls == [0.5, 0.5]  # between the three lookups that found nothing


def test_a_duplicate_that_cannot_be_found_is_in_doubt_not_resubmitted() -> None:
    sim = _FlakySim()
    OrderManager(sim).place(DECISION, "SPY", "buy", 3)
    sim.hide_lookups = 10
    with pytest.raises(OrderInDoubtError):
        OrderManager(sim).place(DECISION, "SPY", "buy", 3)
    assert sim.submits == 2 and len(sim.orders()) == 1


def test_an_error_that_is_no_transport_failure_propagates() -> None:
    sim = _FlakySim()
    with pytest.raises(ValueError, match="positive"):
        OrderManager(sim).place(DECISION, "SPY", "buy", 0)
    assert sim.submits == 1 and sim.orders() == []


# ------------------------------------------------------------------- the real Alpaca path


def test_same_decision_twice_is_one_alpaca_order(fake: FakeAlpacaRest) -> None:
    manager = OrderManager(_alpaca(fake, Sleeps()))

    first = manager.place(DECISION, "SPY", "buy", 2)
    second = manager.place(DECISION, "SPY", "buy", 2)

    assert first.how == "submitted" and first.order.status == "filled"
    assert second.how == "found-after-duplicate"
    assert second.order.id == first.order.id
    assert _posts(fake) == 2  # the second POST met 422 "client_order_id must be unique"
    assert len(fake.orders) == 1
    assert fake.orders[0]["client_order_id"] == client_order_id(DECISION)
    assert fake.positions == {"SPY": 2.0}


def test_gateway_timeout_after_the_order_was_accepted_ends_with_one_order(
    fake: FakeAlpacaRest,
) -> None:
    sleeps = Sleeps()
    manager = OrderManager(_alpaca(fake, sleeps))
    fake.inject(ORDERS, method="POST", status=504, after=True)

    outcome = manager.place(DECISION, "SPY", "buy", 2)

    # The guard retried the 504; the retry met 422 and the manager looked the order up.
    assert outcome.how == "found-after-duplicate"
    assert _posts(fake) == 2
    assert sleeps.calls == [0.25]
    assert len(fake.orders) == 1
    assert outcome.order.id == fake.orders[0]["id"]
    assert outcome.order.client_order_id == client_order_id(DECISION)
    assert fake.positions == {"SPY": 2.0}
    assert len(fake.requests_to(f"{ORDERS}:by_client_order_id", "GET")) == 1


def test_server_error_after_the_order_was_accepted_is_found_by_lookup(
    fake: FakeAlpacaRest,
) -> None:
    sleeps = Sleeps()
    manager = OrderManager(_alpaca(fake, sleeps))
    fake.inject(ORDERS, method="POST", status=500, after=True)

    outcome = manager.place(DECISION, "SPY", "buy", 2)

    assert outcome.how == "found-after-error"
    assert _posts(fake) == 1  # a 500 is not retried by the guard
    assert sleeps.calls == []
    assert len(fake.orders) == 1
    assert outcome.order.id == fake.orders[0]["id"]
    assert outcome.order.status == "filled"
    assert fake.positions == {"SPY": 2.0}


def test_server_error_before_the_order_landed_is_resubmitted_under_the_same_id(
    fake: FakeAlpacaRest,
) -> None:
    sleeps = Sleeps()
    manager = OrderManager(_alpaca(fake, sleeps), lookups=2, sleep=sleeps, lookup_wait_s=0.1)
    fake.inject(ORDERS, method="POST", status=500)

    outcome = manager.place(DECISION, "SPY", "buy", 2)

    assert outcome.how == "resubmitted"
    assert _posts(fake) == 2
    assert len(fake.requests_to(f"{ORDERS}:by_client_order_id", "GET")) == 2  # 404 twice
    assert sleeps.calls == [0.1]
    assert len(fake.orders) == 1
    assert {r.body["client_order_id"] for r in fake.requests_to(ORDERS, "POST")} == {
        client_order_id(DECISION)
    }


def test_a_rejected_order_is_not_looked_up_or_resubmitted(fake: FakeAlpacaRest) -> None:
    manager = OrderManager(_alpaca(fake, Sleeps()))
    with pytest.raises(AlpacaError) as info:
        manager.place(DECISION, "SPY", "buy", 1_000)  # $500k on a $100k account
    assert info.value.status == 403
    assert _posts(fake) == 1
    assert fake.requests_to(f"{ORDERS}:by_client_order_id") == []
    assert fake.orders == []


def test_fault_after_leaves_the_handlers_work_in_place(fake: FakeAlpacaRest) -> None:
    """The fake's `after` option itself: the order is made, the answer is the fault's."""
    broker = _alpaca(fake, Sleeps())
    fake.inject(ORDERS, method="POST", status=500, after=True)
    with pytest.raises(AlpacaError) as info:
        broker.submit_order(OrderRequest("direct-1", "SPY", "buy", 1))
    assert info.value.status == 500
    assert [o["client_order_id"] for o in fake.orders] == ["direct-1"]
    # Without `after` the fault answers instead of the handler: no order is made.
    fake.inject(ORDERS, method="POST", status=500)
    with pytest.raises(AlpacaError):
        broker.submit_order(OrderRequest("direct-2", "SPY", "buy", 1))
    assert [o["client_order_id"] for o in fake.orders] == ["direct-1"]
