"""Alerts as Prefect events: what trading.alerts sends becomes `tradingml.<event>` on the server.

automations.yaml's `notify-on-trading-alerts` turns those events into a notification
through a notification block (README, "Alerts"). The flows that trade or judge models run
inside `alerting(...)`; outside a Prefect server (no PREFECT_API_URL, no ephemeral server)
Prefect drops the event and the alert is only logged.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prefect.events import emit_event

from trading.alerts import Alert, send, subscribed

EVENT_PREFIX = "tradingml."


def resource_id(subject: str) -> str:
    """The Prefect resource of an alert's subject: `tradingml.subject.<subject>`."""
    return f"{EVENT_PREFIX}subject.{subject}"


def _json_safe(value: Any) -> Any:
    """Details as JSON: datetimes as ISO text, non-finite numbers as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value.isoformat()) if hasattr(value, "isoformat") else str(value)


def to_prefect_events(alert: Alert) -> None:
    """Emit the alert as the Prefect event `tradingml.<event>` (related to the flow run it
    happened in); its message and details are the payload."""
    emit_event(
        event=EVENT_PREFIX + alert.event,
        resource={
            "prefect.resource.id": resource_id(alert.subject),
            "prefect.resource.name": alert.subject,
        },
        payload=json.loads(
            json.dumps({"message": alert.message, **_json_safe(dict(alert.details))})
        ),
    )


@contextmanager
def alerting(
    subject: str, refusal: type[BaseException] | tuple[type[BaseException], ...] = ()
) -> Iterator[None]:
    """Alerts sent inside the block become Prefect events; a `refusal` raised inside it is
    first sent as `start.refused` about `subject`, then raised."""
    with subscribed(to_prefect_events):
        try:
            yield
        except refusal as err:
            send(Alert("start.refused", subject, str(err), {"error": type(err).__name__}))
            raise
