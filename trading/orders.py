"""The order manager: one deterministic client_order_id per decision, and no order is ever sent twice.

Idempotency comes from the id: the same decision always yields the same
client_order_id, so a retried submit (ours, Prefect's, or alpaca-py's own retries of
POST /orders on 429/504) can only meet "client_order_id must be unique" -- which we
resolve by looking the order up. An answer that never came (timeout, 5xx, dropped
connection) is resolved the same way: look up first; resubmit under the same id only
when the broker has no such order, which the id makes safe.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from adapters.protocols import Broker, DuplicateOrderError, Order, OrderRequest, Side

log = logging.getLogger(__name__)


def client_order_id(decision_id: str) -> str:
    """'tml-' + 28 hex chars of sha256(decision_id): stable, short (Alpaca allows 128), opaque."""
    return "tml-" + hashlib.sha256(decision_id.encode()).hexdigest()[:28]


class OrderInDoubtError(RuntimeError):
    """The broker neither confirmed nor denied an order after every lookup."""


def rate_limited(err: BaseException) -> bool:
    """The broker refused the request for the rate limit (429, after the client's own retries).

    A 429 means that request was not processed; the caller skips what needed it (a
    submit is not retried here: the order is looked up on the next sync instead).
    """
    return getattr(err, "status", None) == 429


def transient(err: BaseException) -> bool:
    """A broker failure that the next cycle may not meet: rate limit, transport, 5xx."""
    return rate_limited(err) or _in_doubt(err)


def _in_doubt(err: BaseException) -> bool:
    """An error after which the order may or may not exist at the broker."""
    if isinstance(err, (TimeoutError, ConnectionError)):
        return True
    status = getattr(err, "status", "absent")
    # Broker errors without an HTTP status are transport failures; 5xx may have landed.
    return status is None or (isinstance(status, int) and status >= 500)


@dataclass
class OrderOutcome:
    order: Order
    how: str  # submitted | found-after-duplicate | found-after-error | resubmitted


class OrderManager:
    """Submits orders for decisions through any Broker; every path ends with exactly one order."""

    def __init__(
        self,
        broker: Broker,
        *,
        lookups: int = 3,
        sleep: Callable[[float], None] | None = None,
        lookup_wait_s: float = 0.5,
    ) -> None:
        self.broker = broker
        self.lookups = lookups
        self.sleep = sleep or (lambda _s: None)
        self.lookup_wait_s = lookup_wait_s

    def _lookup(self, cid: str) -> Order | None:
        for attempt in range(self.lookups):
            try:
                found = self.broker.get_order_by_client_id(cid)
            except Exception as err:  # a lookup that fails is retried, then reported
                if not _in_doubt(err) or attempt == self.lookups - 1:
                    raise
                found = None
            if found is not None:
                return found
            if attempt < self.lookups - 1:
                self.sleep(self.lookup_wait_s)
        return None

    def place(self, decision_id: str, symbol: str, side: Side, qty: float) -> OrderOutcome:
        cid = client_order_id(decision_id)
        request = OrderRequest(client_order_id=cid, symbol=symbol, side=side, qty=qty)
        try:
            return OrderOutcome(self.broker.submit_order(request), "submitted")
        except DuplicateOrderError:
            found = self._lookup(cid)
            if found is None:
                raise OrderInDoubtError(
                    f"broker says order {cid} exists but cannot find it; not resubmitting"
                ) from None
            log.info("order %s was already placed (%s); using it", cid, found.status)
            return OrderOutcome(found, "found-after-duplicate")
        except Exception as err:
            if not _in_doubt(err):
                raise
            log.warning("submit of %s in doubt (%s); looking it up", cid, type(err).__name__)
            found = self._lookup(cid)
            if found is not None:
                return OrderOutcome(found, "found-after-error")
        # The broker has no such order: sending it again under the same id cannot duplicate it.
        try:
            return OrderOutcome(self.broker.submit_order(request), "resubmitted")
        except DuplicateOrderError:
            found = self._lookup(cid)
            if found is None:
                raise OrderInDoubtError(f"order {cid} is in doubt after a resubmit") from None
            return OrderOutcome(found, "found-after-duplicate")
