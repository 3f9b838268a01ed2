"""Alerts: what a person must hear about while a run goes on, without reading its logs.

The trading code says *that* something happened (`send(Alert(...))`); where it goes is the
caller's choice. Every alert is logged (logger `tradingml.alerts`: trouble at WARNING, news
such as a gate verdict at INFO); a flow adds
`flows.alerts.to_prefect_events` so each becomes a Prefect event (`tradingml.<event>`) that
an automation turns into a notification (automations.yaml). Tests subscribe a list.

The events (the `event` field; the resource is `subject`):
- `kill-switch.engaged`: the daily-loss or the manual kill switch engaged (subject: the symbol).
- `stream.stale` / `stream.live`: the bar stream went silent or dropped / flows again.
- `reconcile.difference`: the book differed from the broker's positions or cash.
- `start.refused`: a trading run refused to start (no model, wrong mode, wrong clock...).
- `gate.promoted` / `gate.passed` / `gate.rejected`: a promotion-gate verdict
  (passed: the gate passed it but another candidate, or the config, kept it from production).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from models.gate import GateDecision

log = logging.getLogger("tradingml.alerts")

EVENTS = (
    "kill-switch.engaged",
    "stream.stale",
    "stream.live",
    "reconcile.difference",
    "start.refused",
    "gate.promoted",
    "gate.passed",
    "gate.rejected",
)
"""Every alert this project sends (automations.yaml matches them as `tradingml.<event>`)."""

_NEWS = frozenset({"stream.live", "gate.promoted", "gate.passed", "gate.rejected"})
"""Alerts that report news rather than trouble: logged at INFO, the others at WARNING."""


@dataclass(frozen=True)
class Alert:
    """One thing to tell the user: which event, about what, in a sentence, and its numbers."""

    event: str
    subject: str
    message: str
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.event not in EVENTS:
            raise ValueError(f"unknown alert {self.event!r}; one of {', '.join(EVENTS)}")


Sink = Callable[[Alert], None]

_sinks: dict[Sink, int] = {}
"""Each subscribed sink and how many `subscribed` blocks hold it (two flows in one process)."""
_lock = threading.Lock()


def send(alert: Alert) -> None:
    """Log the alert and hand it to every subscribed sink; a failing sink is logged, never raised:
    an alert must not stop the trading that it reports on."""
    level = logging.INFO if alert.event in _NEWS else logging.WARNING
    log.log(level, "ALERT %s [%s]: %s", alert.event, alert.subject, alert.message)
    with _lock:
        sinks = list(_sinks)
    for sink in sinks:
        try:
            sink(alert)
        except Exception:  # reported, and trading goes on
            log.exception("alert sink %r failed on %s", sink, alert.event)


@contextmanager
def subscribed(sink: Sink) -> Iterator[Sink]:
    """`sink` receives the alerts sent inside the block, from any thread (once each, however
    many blocks hold it at a time)."""
    with _lock:
        _sinks[sink] = _sinks.get(sink, 0) + 1
    try:
        yield sink
    finally:
        with _lock:
            _sinks[sink] -= 1
            if not _sinks[sink]:
                del _sinks[sink]


@contextmanager
def collected() -> Iterator[list[Alert]]:
    """The alerts sent inside the block, in order (for tests and reports)."""
    seen: list[Alert] = []
    with subscribed(seen.append):
        yield seen


def send_gate_verdicts(decisions: Iterable[GateDecision], promoted: Mapping[str, bool]) -> None:
    """One alert per gate verdict: `gate.promoted`, `gate.passed` (passed, not promoted: another
    candidate won or the config does not promote) or `gate.rejected`, about the symbol."""
    for d in decisions:
        event = (
            "gate.promoted"
            if promoted.get(d.candidate_id)
            else ("gate.passed" if d.verdict.passed else "gate.rejected")
        )
        send(
            Alert(
                event,
                d.symbol,
                f"{d.kind} {d.candidate_id} {event.removeprefix('gate.')}: {d.verdict.reason}",
                {
                    "kind": d.kind,
                    "candidate_id": d.candidate_id,
                    "candidate_objective": d.candidate.objective,
                    "reference": d.reference_name,
                    "reference_objective": d.reference.objective,
                    **d.statistics,
                },
            )
        )
