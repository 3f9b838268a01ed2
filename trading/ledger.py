"""The trading ledger: decisions, orders, fills, equity and reconciliation events, written idempotently.

Rows are buffered and flushed as keyed upserts (decision_id, client_order_id, fill_id,
(account, ts), event_id), so a retried flush or a restarted run never duplicates a row.
When the warehouse stays locked by another process, a flush goes to an append-only
outbox of Parquet files beside it instead, merged by the next flush that gets the lock.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from adapters.protocols import Fill, Order
from warehouse.db import WarehouseLockedError, connect, is_commit_conflict, transaction
from warehouse.io import insert_rows, upsert
from warehouse.outbox import Outbox

log = logging.getLogger(__name__)

UTC_US = pl.Datetime("us", "UTC")

SCHEMAS: dict[str, dict[str, Any]] = {
    "decisions": {
        "decision_id": pl.String,
        "run_id": pl.String,
        "mode": pl.String,
        "symbol": pl.String,
        "ts": UTC_US,
        "model_id": pl.String,
        "inputs": pl.String,
        "q_values": pl.List(pl.Float64),
        "action": pl.String,
        "allocation": pl.Float64,
        "risk_verdict": pl.String,
        "risk_reason": pl.String,
        "created_at": UTC_US,
    },
    "orders": {
        "client_order_id": pl.String,
        "broker_order_id": pl.String,
        "decision_id": pl.String,
        "mode": pl.String,
        "symbol": pl.String,
        "side": pl.String,
        "qty": pl.Float64,
        "order_type": pl.String,
        "limit_price": pl.Float64,
        "time_in_force": pl.String,
        "status": pl.String,
        "submitted_at": UTC_US,
        "updated_at": UTC_US,
    },
    "fills": {
        "fill_id": pl.String,
        "broker_order_id": pl.String,
        "client_order_id": pl.String,
        "mode": pl.String,
        "symbol": pl.String,
        "side": pl.String,
        "qty": pl.Float64,
        "price": pl.Float64,
        "fee": pl.Float64,
        "ts": UTC_US,
        "seen_via": pl.String,
    },
    "equity": {
        "account": pl.String,
        "ts": UTC_US,
        "cash": pl.Float64,
        "positions_value": pl.Float64,
        "equity": pl.Float64,
    },
    "reconciliation_events": {
        "event_id": pl.String,
        "ts": UTC_US,
        "account": pl.String,
        "symbol": pl.String,
        "kind": pl.String,
        "warehouse_qty": pl.Float64,
        "broker_qty": pl.Float64,
        "action": pl.String,
        "detail": pl.String,
    },
}
KEYS: dict[str, tuple[str, ...]] = {
    "decisions": ("decision_id",),
    "orders": ("client_order_id",),
    "fills": ("fill_id",),
    "equity": ("account", "ts"),
    "reconciliation_events": ("event_id",),
}
FAST_ROWS = 64
"""A flush of at most this many rows tries plain INSERTs first (a live minute's rows)."""
COMMIT_TRIES = 3
"""How often a ledger write runs again after another connection committed its keys first."""

BOOKKEEPING: dict[str, tuple[str, ...]] = {
    "decisions": ("created_at",),
    "orders": ("updated_at",),
}


@dataclass
class Ledger:
    """Buffers ledger rows for one run and flushes them to the warehouse (or the outbox)."""

    warehouse: Path
    mode: str
    outbox: Path | None = None
    lock_timeout_s: float | None = None
    rows: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {name: [] for name in SCHEMAS}
    )
    flushed: dict[str, int] = field(default_factory=lambda: {name: 0 for name in SCHEMAS})
    outboxed: int = 0

    def decision(self, row: dict[str, Any]) -> None:
        self.rows["decisions"].append(row)

    def order(self, order: Order, decision_id: str | None, now: datetime) -> None:
        self.rows["orders"].append(
            {
                "client_order_id": order.client_order_id,
                "broker_order_id": order.id or None,
                "decision_id": decision_id,
                "mode": self.mode,
                "symbol": order.symbol,
                "side": order.side,
                "qty": order.qty,
                "order_type": "market",
                "limit_price": None,
                "time_in_force": None,
                "status": order.status,
                "submitted_at": order.submitted_at,
                "updated_at": now,
            }
        )

    def fill(self, fill: Fill, seen_via: str) -> None:
        self.rows["fills"].append(
            {
                "fill_id": fill.fill_id,
                "broker_order_id": fill.order_id,
                "client_order_id": fill.client_order_id,
                "mode": self.mode,
                "symbol": fill.symbol,
                "side": fill.side,
                "qty": fill.qty,
                "price": fill.price,
                "fee": fill.fee,
                "ts": fill.ts,
                "seen_via": seen_via,
            }
        )

    def equity(self, account: str, ts: datetime, cash: float, positions_value: float) -> None:
        self.rows["equity"].append(
            {
                "account": account,
                "ts": ts,
                "cash": cash,
                "positions_value": positions_value,
                "equity": cash + positions_value,
            }
        )

    def event(self, row: dict[str, Any]) -> None:
        self.rows["reconciliation_events"].append(row)

    @property
    def pending(self) -> int:
        return sum(len(v) for v in self.rows.values())

    def frames(self) -> dict[str, pl.DataFrame]:
        """Buffered rows as typed frames; the last row of a repeated key wins."""
        out = {}
        for name, rows in self.rows.items():
            if rows:
                frame = pl.DataFrame(rows, schema=SCHEMAS[name], orient="row")
                out[name] = frame.unique(subset=list(KEYS[name]), keep="last", maintain_order=True)
        return out

    def write(self, con: duckdb.DuckDBPyConnection) -> dict[str, int]:
        """Upsert everything buffered (and anything in the outbox) in one transaction."""
        outbox_files = self._outbox_files()
        if not outbox_files and 0 < self.pending <= FAST_ROWS:
            try:
                return self._insert_new(con)
            except duckdb.ConstraintException:
                pass  # a key stored before (an order's new status, a re-run): upsert below
            except duckdb.TransactionException as err:
                if not is_commit_conflict(err):
                    raise  # (a key another connection committed first: upsert below too)
        frames = self.frames()
        # Oldest first: outbox files in name (time) order, then the buffer, so that
        # keep="last" keeps the newest version of a repeated key.
        parts: dict[str, list[pl.DataFrame]] = {}
        for name, path in outbox_files:
            parts.setdefault(name, []).append(pl.read_parquet(path))
        for name, older in parts.items():
            frames[name] = pl.concat([*older, *([frames[name]] if name in frames else [])]).unique(
                subset=list(KEYS[name]), keep="last", maintain_order=True
            )
        counts = self._upsert(con, frames)
        Outbox.done(path for _, path in outbox_files)
        for name, n in counts.items():
            self.flushed[name] += n
        self.rows = {name: [] for name in SCHEMAS}
        return counts

    @staticmethod
    def _upsert(con: duckdb.DuckDBPyConnection, frames: dict[str, pl.DataFrame]) -> dict[str, int]:
        """All frames in one transaction; run again when another connection committed the same
        keys first (the upsert is idempotent: the second run updates what the first inserted)."""
        for attempt in range(1, COMMIT_TRIES + 1):
            counts: dict[str, int] = {}
            try:
                with transaction(con):
                    for name, frame in frames.items():
                        counts[name] = upsert(
                            con, name, frame, KEYS[name], bookkeeping=BOOKKEEPING.get(name, ())
                        ).total
                return counts
            except duckdb.TransactionException as err:
                if attempt == COMMIT_TRIES or not is_commit_conflict(err):
                    raise
                log.info("ledger write met another connection's commit (%s); again", err)
        raise AssertionError("unreachable")

    def _insert_new(self, con: duckdb.DuckDBPyConnection) -> dict[str, int]:
        """A minute's few rows with new keys: plain INSERTs in one transaction (no frames).

        Any key already stored raises duckdb.ConstraintException after a rollback, and the
        caller upserts instead -- the same rows end up stored either way.
        """
        counts: dict[str, int] = {}
        with transaction(con):
            for name, rows in self.rows.items():
                if not rows:
                    continue
                cols = list(SCHEMAS[name])
                keyed = {tuple(r.get(k) for k in KEYS[name]): r for r in rows}  # last wins
                counts[name] = insert_rows(
                    con, name, cols, [[r.get(c) for c in cols] for r in keyed.values()]
                )
        for name, n in counts.items():
            self.flushed[name] += n
        self.rows = {name: [] for name in SCHEMAS}
        return counts

    def flush(self, con: duckdb.DuckDBPyConnection | None = None) -> dict[str, int]:
        """Write the buffer; with no connection given, open one (outbox on a lasting lock)."""
        if not self.pending and not self._outbox_files():
            return {}
        if con is not None:
            return self.write(con)
        try:
            with connect(self.warehouse, timeout_s=self.lock_timeout_s) as own:
                return self.write(own)
        except WarehouseLockedError as err:
            if self.outbox is None:
                raise
            self._to_outbox()
            log.warning(
                "warehouse locked (%s); %d rows kept in the outbox", err.holder, self.outboxed
            )
            return {}

    def _outbox_files(self) -> list[tuple[str, Path]]:
        """The ledger's files in the outbox (its tables' kinds; the bars' are BarStore's)."""
        return [] if self.outbox is None else Outbox(self.outbox).waiting(SCHEMAS)

    def _to_outbox(self) -> None:
        assert self.outbox is not None
        for name, frame in self.frames().items():
            Outbox(self.outbox).put(name, frame)
            self.outboxed += frame.height
        self.rows = {name: [] for name in SCHEMAS}
