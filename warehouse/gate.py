"""The `promotion_decisions` table: every promotion-gate decision and its numbers (idempotent writes, reads)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import duckdb
import polars as pl

from warehouse.io import UpsertResult, load_frame, upsert

DECISION_KEY = ("decided_at", "candidate_id")

_SCHEMA: dict[str, Any] = {
    "decided_at": pl.Datetime("us", "UTC"),
    "candidate_id": pl.String,
    "kind": pl.String,
    "symbol": pl.String,
    "flow_run_id": pl.String,
    "objective": pl.String,
    "candidate_objective": pl.Float64,
    "candidate_max_drawdown": pl.Float64,
    "reference": pl.String,
    "reference_id": pl.String,
    "reference_objective": pl.Float64,
    "reference_max_drawdown": pl.Float64,
    "baseline": pl.String,
    "baseline_objective": pl.Float64,
    "baseline_max_drawdown": pl.Float64,
    "objective_margin": pl.Float64,
    "drawdown_margin": pl.Float64,
    "beats_objective": pl.Boolean,
    "drawdown_ok": pl.Boolean,
    "passed": pl.Boolean,
    "promoted": pl.Boolean,
    "reason": pl.String,
    "eval_start": pl.Datetime("us", "UTC"),
    "eval_end": pl.Datetime("us", "UTC"),
    "details": pl.String,
    # The statistics of the verdict (migration 0013); null where a test does not apply.
    "test": pl.String,
    "spa_p": pl.Float64,
    "dsr": pl.Float64,
    "n_trials": pl.Int64,
    "sharpe_diff": pl.Float64,
    "sharpe_diff_lo": pl.Float64,
    "sharpe_diff_hi": pl.Float64,
    "p_value": pl.Float64,
    "n_obs": pl.Int64,
}


def _number(value: Any) -> float | None:
    """DOUBLE columns hold finite numbers or null (an infinite objective is stored as null)."""
    if value is None:
        return None
    x = float(value)
    return x if x == x and abs(x) != float("inf") else None


def write_promotion_decisions(
    con: duckdb.DuckDBPyConnection, rows: Sequence[dict[str, Any]]
) -> UpsertResult:
    """Upsert decision rows (models.gate.GateDecision.row()) keyed (decided_at, candidate_id)."""
    if not rows:
        return UpsertResult(0, 0, 0)
    prepared = []
    for row in rows:
        data = {name: row.get(name) for name in _SCHEMA}
        for name, dtype in _SCHEMA.items():
            if dtype == pl.Float64:
                data[name] = _number(data[name])
            elif dtype == pl.Int64:
                value = data[name]
                data[name] = None if value is None else int(value)
        data["details"] = json.dumps(row.get("details") or {}, sort_keys=True, default=str)
        prepared.append(data)
    frame = pl.DataFrame(prepared, schema=_SCHEMA)
    return upsert(con, "promotion_decisions", frame, DECISION_KEY)


def load_promotion_decisions(
    con: duckdb.DuckDBPyConnection, decided_at: Any | None = None
) -> pl.DataFrame:
    """Decisions, newest run first (one run's when decided_at is given), details as JSON text."""
    if decided_at is None:
        return load_frame(
            con, "SELECT * FROM promotion_decisions ORDER BY decided_at DESC, kind, symbol"
        )
    return load_frame(
        con,
        "SELECT * FROM promotion_decisions WHERE decided_at = ? ORDER BY kind, symbol, candidate_id",
        [decided_at],
    )
