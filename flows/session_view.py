"""A trading session as the Prefect UI shows it while it runs: a progress bar and a table.

The progress artifact (`<key>-progress`) is the share of the session's minutes gone; the
table artifact (`<key>`, a new version each time) holds the run's last decisions with their
orders, and its description the positions and equity beside buy-and-hold -- the numbers of
the session report (trading.session_report.session_standing). Both are refreshed at most
every `every_s` seconds of wall time, and once more at the end.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from prefect.artifacts import (
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from core.costs import CostModel
from trading.calendar import Session
from trading.session import SessionPlan
from trading.session_report import session_standing, standing_markdown, standing_rows
from warehouse.db import connect

log = logging.getLogger(__name__)
MINUTE = timedelta(minutes=1)


def artifact_key(run_id: str) -> str:
    """Prefect's artifact keys: lowercase letters, digits and dashes."""
    return "session-" + re.sub(r"[^a-z0-9]+", "-", run_id.lower()).strip("-")[:80]


class SessionView:
    """Progress and standing artifacts of one session (call `tick` after each minute).

    Buy-and-hold is of the first of `symbols` (the session report's benchmark)."""

    def __init__(
        self,
        con_factory: Callable[[], Any],
        *,
        run_id: str,
        account: str,
        symbols: list[str],
        session: Session,
        title: str,
        fee_bps: float,
        slippage_bps: float,
        every_s: float = 120.0,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.con_factory = con_factory
        self.run_id, self.account, self.symbols = run_id, account, symbols
        self.session, self.title = session, title
        self.fee_bps, self.slippage_bps = fee_bps, slippage_bps
        self.every_s, self.timer = every_s, timer
        self.key = artifact_key(run_id)
        self.updates = 0
        self._progress_id: UUID | None = None
        self._last: float | None = None

    @classmethod
    def of_plan(
        cls, plan: SessionPlan, symbols: list[str], title: str, costs: CostModel, every_s: float
    ) -> SessionView:
        """The view of a trading session's plan (its run, account, session and warehouse)."""
        return cls(
            lambda: connect(plan.warehouse, timeout_s=plan.lock_timeout_s),
            run_id=plan.run_id,
            account=plan.account,
            symbols=symbols,
            session=plan.session,
            title=title,
            fee_bps=costs.fee_bps,
            slippage_bps=costs.slippage_bps,
            every_s=every_s,
        )

    def progress(self, now: datetime) -> float:
        """Percent of the session's minutes gone at `now`."""
        total = (self.session.close - self.session.open).total_seconds()
        done = (now - self.session.open).total_seconds()
        return max(0.0, min(100.0, 100.0 * done / total)) if total > 0 else 100.0

    def tick(self, now: datetime, con: Any = None, *, final: bool = False) -> bool:
        """Refresh the artifacts if `every_s` has passed since the last time (or `final`);
        `con` is an open warehouse connection to read from (else one is opened)."""
        moment = self.timer()
        if not final and self._last is not None and moment - self._last < self.every_s:
            return False
        self._last = moment
        try:
            self._publish(now, con, final)
        except Exception as err:  # noqa: BLE001 -- a view that cannot refresh must not stop trading
            log.warning("session view %s not refreshed: %s", self.key, err)
            return False
        self.updates += 1
        return True

    def _publish(self, now: datetime, con: Any, final: bool) -> None:
        percent = 100.0 if final else self.progress(now)
        if self._progress_id is None:
            made = create_progress_artifact(
                percent,
                key=f"{self.key}-progress",
                description=f"{self.title}: share of the session's minutes gone",
            )
            assert isinstance(made, UUID)  # the sync call (Prefect's API is sync-compatible)
            self._progress_id = made
        else:
            update_progress_artifact(self._progress_id, percent)
        if con is None:
            with self.con_factory() as own:
                standing = self._standing(own)
        else:
            standing = self._standing(con)
        create_table_artifact(
            standing_rows(standing) or [{"decision": "none yet"}],
            key=self.key,
            description=standing_markdown(standing, self.title, self.symbols[0]),
        )

    def _standing(self, con: Any) -> dict[str, Any]:
        return session_standing(
            con,
            run_id=self.run_id,
            account=self.account,
            symbols=self.symbols,
            start=self.session.open,
            end=self.session.close + MINUTE,  # the session report's range
            fee_bps=self.fee_bps,
            slippage_bps=self.slippage_bps,
        )
