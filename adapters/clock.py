"""Clocks: the only place code asks what time it is (inject one; never call datetime.now in logic)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from adapters.protocols import Clock


class SystemClock:
    """Wall-clock time in UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class ManualClock:
    """A clock that moves only when told to: for tests and replays."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("ManualClock needs a timezone-aware start time")
        self._now = start.astimezone(UTC)

    def now(self) -> datetime:
        return self._now

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)

    def set(self, when: datetime) -> None:
        # Already UTC (a backtest sets it every bar): skip the conversion.
        self._now = when if when.tzinfo is UTC else when.astimezone(UTC)


class OffsetClock:
    """Another clock's time moved by a fixed offset: the broker's time read on a local clock.

    Live runs measure how far the machine's clock is from the broker's (`measure_offset`)
    and decide on `OffsetClock(local, offset)`, so a bar's age, the session's open and
    close and every ledger timestamp follow the broker, whatever the machine says.
    Sleeping is the local clock's (a duration is the same on both).
    """

    def __init__(self, local: Clock, offset: timedelta) -> None:
        self.local = local
        self.offset = offset

    def now(self) -> datetime:
        return self.local.now() + self.offset

    def sleep(self, seconds: float) -> None:
        self.local.sleep(seconds)


def measure_offset(local: Clock, remote_now: Callable[[], datetime]) -> timedelta:
    """remote time - local time, the local reading taken halfway through the remote call."""
    before = local.now()
    remote = remote_now()
    after = local.now()
    if remote.tzinfo is None:
        raise ValueError("the remote clock gave a time without a timezone")
    return remote.astimezone(UTC) - (before + (after - before) / 2)
