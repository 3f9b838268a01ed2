"""The `models` and `training_runs` tables: registry rows and per-cycle training history."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import duckdb
import polars as pl

from warehouse.io import load_frame, upsert


def write_model(con: duckdb.DuckDBPyConnection, row: dict[str, Any]) -> None:
    """Insert or update one registry row (keyed by model_id); JSON fields given as dicts."""
    data = dict(row)
    for key in ("architecture", "params", "metrics"):
        data[key] = json.dumps(data.get(key) or {}, sort_keys=True)
    frame = pl.DataFrame([data]).with_columns(
        pl.col("created_at").cast(pl.Datetime("us", "UTC")),
        pl.col("promoted_at").cast(pl.Datetime("us", "UTC")),
    )
    upsert(con, "models", frame, ("model_id",))


def load_model_row(con: duckdb.DuckDBPyConnection, model_id: str) -> dict[str, Any] | None:
    rows = load_frame(con, "SELECT * FROM models WHERE model_id = ?", [model_id]).to_dicts()
    if not rows:
        return None
    row = rows[0]
    for key in ("architecture", "params", "metrics"):
        row[key] = json.loads(row[key]) if row[key] else {}
    return row


def production_model_id(con: duckdb.DuckDBPyConnection, kind: str, symbol: str) -> str | None:
    rows = con.execute(
        "SELECT model_id FROM models WHERE kind = ? AND symbol = ? AND stage = 'production'"
        " ORDER BY promoted_at DESC NULLS LAST LIMIT 1",
        [kind, symbol],
    ).fetchall()
    return str(rows[0][0]) if rows else None


def resolve_genome(
    con: duckdb.DuckDBPyConnection, genome_id: str, symbol: str
) -> dict[str, Any] | None:
    """The registry row a train-agent genome_id names: None means the built-in defaults."""
    if genome_id == "builtin":
        return None
    if genome_id == "production":
        chosen = production_model_id(con, "genome", symbol)
        return load_model_row(con, chosen) if chosen else None
    row = load_model_row(con, genome_id)
    if row is None or row["kind"] != "genome":
        raise ValueError(
            f"no registered genome {genome_id!r}; see select * from models where kind = 'genome'"
        )
    return row


def promote(con: duckdb.DuckDBPyConnection, model_id: str, when: datetime) -> str | None:
    """Make model_id the production model of its kind and symbol; the previous one is archived.

    Returns the model it replaced (None if there was none). One transaction: there is never
    a moment with two production models, or none.
    """
    row = load_model_row(con, model_id)
    if row is None:
        raise KeyError(f"no model {model_id!r} in the registry")
    previous = production_model_id(con, str(row["kind"]), str(row["symbol"]))
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(
            "UPDATE models SET stage = 'archived' WHERE kind = ? AND symbol = ? AND stage = 'production'"
            " AND model_id <> ?",
            [row["kind"], row["symbol"], model_id],
        )
        con.execute(
            "UPDATE models SET stage = 'production', promoted_at = ? WHERE model_id = ?",
            [when, model_id],
        )
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return previous if previous != model_id else None


def write_training_runs(con: duckdb.DuckDBPyConnection, frame: pl.DataFrame) -> int:
    """Per-cycle rows keyed (run_id, cycle); a resumed run rewrites nothing it already stored."""
    return upsert(
        con, "training_runs", frame, ("run_id", "cycle"), bookkeeping=("recorded_at",)
    ).inserted


def choose_model(
    con: duckdb.DuckDBPyConnection,
    symbol: str,
    model_id: str | None,
    *,
    kind: str = "dqn",
    production_only: bool = False,
) -> dict[str, Any]:
    """The registry row to trade: `model_id` when given, else the production model of the symbol.

    Backtests (production_only=False) fall back to the best candidate by objective.
    """
    if model_id:
        row = load_model_row(con, model_id)
        if row is None or row["kind"] != kind:
            raise ValueError(
                f"no registered {kind} model {model_id!r}; see tradingml sql "
                '"select model_id, symbol, stage from v_model_leaderboard"'
            )
        return row
    chosen = production_model_id(con, kind, symbol)
    if chosen is None and not production_only:
        rows = con.execute(
            "SELECT model_id FROM models WHERE kind = ? AND symbol = ? ORDER BY"
            " TRY_CAST(json_extract_string(metrics, '$.objective') AS DOUBLE) DESC NULLS LAST,"
            " created_at DESC LIMIT 1",
            [kind, symbol],
        ).fetchall()
        chosen = str(rows[0][0]) if rows else None
    if chosen is None:
        what = "production " if production_only else ""
        raise ValueError(
            f"no {what}{kind} model for {symbol}: train one (tradingml train) and promote it "
            "(tradingml promote MODEL_ID)"
        )
    row = load_model_row(con, chosen)
    assert row is not None
    return row
