"""The `models`, `training_runs` and `promotion_history` tables: registry rows, their stage changes, training history."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

import duckdb
import polars as pl

from warehouse.io import load_frame, upsert

Actor = Literal["promote", "gate", "demote", "rollback"]

# models.search.WORST_FITNESS: what an architecture-search individual scores when every run
# of it crashed or timed out. warehouse/ may not import models/, so the value is repeated here
# (tests/hardening/test_registry_stages.py checks the two agree).
FAILED_OBJECTIVE = -1e9


def write_model(con: duckdb.DuckDBPyConnection, row: dict[str, Any]) -> None:
    """Insert or update one registry row (keyed by model_id); JSON fields given as dicts.

    Stages change only through promote/demote/rollback: a new row is a candidate, and
    writing an existing model_id again (training it again) keeps its stage and promoted_at.
    """
    data = dict(row)
    for key in ("architecture", "params", "metrics"):
        data[key] = json.dumps(data.get(key) or {}, sort_keys=True)
    existing = con.execute(
        "SELECT stage, promoted_at FROM models WHERE model_id = ?", [data["model_id"]]
    ).fetchall()
    if existing:
        data["stage"], data["promoted_at"] = existing[0]
    else:
        if data.get("stage", "candidate") != "candidate" or data.get("promoted_at") is not None:
            raise ValueError(
                f"{data['model_id']}: a new registry row is a candidate; "
                "change its stage with promote (tradingml promote MODEL_ID)"
            )
        data["stage"], data["promoted_at"] = "candidate", None
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


def production_symbols(
    con: duckdb.DuckDBPyConnection, kind: str, symbols: Sequence[str]
) -> list[str]:
    """Which of `symbols` have a production model of `kind`, sorted."""
    rows = con.execute(
        "SELECT DISTINCT symbol FROM models WHERE kind = ? AND stage = 'production'"
        " AND list_contains(?, symbol) ORDER BY symbol",
        [kind, list(symbols)],
    ).fetchall()
    return [str(r[0]) for r in rows]


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


def evaluation_problem(row: dict[str, Any]) -> str | None:
    """Why a registry row has no valid evaluation to be promoted on; None when it has one.

    Every registered kind stores its held-out (or validation) score as metrics.objective;
    a missing or non-finite one, or the search's failure score, means it was never judged.
    """
    metrics = row.get("metrics") or {}
    if not metrics:
        return "it has no evaluation (no metrics)"
    value = metrics.get("objective")
    if value is None:
        return "its metrics have no objective"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"its objective is not a number ({value!r})"
    if not math.isfinite(value):
        return f"its objective is {value}"
    if value <= FAILED_OBJECTIVE:
        return f"its evaluation failed (objective {value:g}: every run crashed or timed out)"
    return None


def require_evaluation(row: dict[str, Any]) -> None:
    """Refuse (ValueError) a row whose evaluation is missing, not finite or failed."""
    problem = evaluation_problem(row)
    if problem is not None:
        raise ValueError(f"{row['model_id']} cannot be promoted: {problem}")


def _record_change(
    con: duckdb.DuckDBPyConnection,
    row: dict[str, Any],
    to_stage: str,
    when: datetime,
    actor: Actor,
    *,
    replaced: str | None = None,
    reason: str | None = None,
) -> None:
    """Set a model's stage and append its promotion_history row; call inside a transaction."""
    if to_stage == "production":
        con.execute(
            "UPDATE models SET stage = 'production', promoted_at = ? WHERE model_id = ?",
            [when, row["model_id"]],
        )
    else:
        con.execute("UPDATE models SET stage = ? WHERE model_id = ?", [to_stage, row["model_id"]])
    con.execute(
        "INSERT INTO promotion_history (changed_at, model_id, kind, symbol, from_stage, to_stage,"
        " actor, replaced_model_id, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            when,
            row["model_id"],
            row["kind"],
            row["symbol"],
            row["stage"],
            to_stage,
            actor,
            replaced,
            reason,
        ],
    )


def _production_rows(con: duckdb.DuckDBPyConnection, kind: str, symbol: str) -> list[str]:
    return [
        str(r[0])
        for r in con.execute(
            "SELECT model_id FROM models WHERE kind = ? AND symbol = ? AND stage = 'production'"
            " ORDER BY promoted_at DESC NULLS LAST",
            [kind, symbol],
        ).fetchall()
    ]


def _make_production(
    con: duckdb.DuckDBPyConnection,
    row: dict[str, Any],
    when: datetime,
    actor: Actor,
    reason: str | None,
) -> str | None:
    """Archive the current production model(s) of row's kind and symbol and promote row, in one
    transaction: there is never a moment with two production models, or none."""
    current = [
        m
        for m in _production_rows(con, str(row["kind"]), str(row["symbol"]))
        if m != row["model_id"]
    ]
    replaced = current[0] if current else None
    con.execute("BEGIN TRANSACTION")
    try:
        for model_id in current:
            old = load_model_row(con, model_id)
            assert old is not None
            _record_change(
                con, old, "archived", when, actor, reason=f"replaced by {row['model_id']}"
            )
        _record_change(con, row, "production", when, actor, replaced=replaced, reason=reason)
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return replaced


def promote(
    con: duckdb.DuckDBPyConnection,
    model_id: str,
    when: datetime,
    *,
    actor: Literal["promote", "gate"] = "promote",
    reason: str | None = None,
) -> str | None:
    """Make model_id the production model of its kind and symbol; the previous one is archived.

    Returns the model it replaced (None if there was none). Both changes are rows of
    promotion_history, written in the same transaction. Promoting the production model
    again changes nothing (a retried promotion is a no-op).
    """
    row = load_model_row(con, model_id)
    if row is None:
        raise KeyError(f"no model {model_id!r} in the registry")
    if row["stage"] == "production":
        return None
    return _make_production(con, row, when, actor, reason)


def demote(
    con: duckdb.DuckDBPyConnection, model_id: str, when: datetime, *, reason: str | None = None
) -> dict[str, Any]:
    """Take a production model out of production (-> archived), leaving none; returns its row."""
    row = load_model_row(con, model_id)
    if row is None:
        raise ValueError(
            f'no model {model_id!r}; see tradingml sql "select * from v_model_leaderboard"'
        )
    if row["stage"] != "production":
        raise ValueError(
            f"{model_id} is not in production (stage {row['stage']}); nothing to demote"
        )
    con.execute("BEGIN TRANSACTION")
    try:
        _record_change(con, row, "archived", when, "demote", reason=reason)
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return row


def rollback_target(con: duckdb.DuckDBPyConnection, kind: str, symbol: str) -> str:
    """The model a rollback of kind/symbol restores: the production model before the current one.

    The current one is the production model, or with none (after a demote) the one that left
    production last. Its latest promotion (by promote or the gate) names what it replaced;
    following those links, repeated rollbacks walk back through earlier production models.
    """
    current = production_model_id(con, kind, symbol)
    if current is None:
        last = con.execute(
            "SELECT model_id FROM promotion_history WHERE kind = ? AND symbol = ?"
            " AND from_stage = 'production' ORDER BY change_id DESC LIMIT 1",
            [kind, symbol],
        ).fetchall()
        if not last:
            raise ValueError(
                f"no production {kind} model for {symbol} has been recorded: nothing to roll back"
            )
        current = str(last[0][0])
    found = con.execute(
        "SELECT replaced_model_id FROM promotion_history WHERE model_id = ?"
        " AND to_stage = 'production' AND actor IN ('promote', 'gate')"
        " ORDER BY change_id DESC LIMIT 1",
        [current],
    ).fetchall()
    if not found:
        raise ValueError(
            f"no promotion of {current} is recorded in promotion_history: no previous "
            f"production {kind} model for {symbol} to roll back to"
        )
    previous = found[0][0]
    if previous is None:
        raise ValueError(
            f"{current} replaced no production model: no previous production {kind} model "
            f"for {symbol} to roll back to"
        )
    return str(previous)


def rollback(
    con: duckdb.DuckDBPyConnection,
    kind: str,
    symbol: str,
    when: datetime,
    *,
    reason: str | None = None,
) -> tuple[str, str | None]:
    """Make the previous production model of kind/symbol production again, archiving the current
    one; returns (restored, archived or None). Refuses when no previous one is recorded."""
    target = rollback_target(con, kind, symbol)
    row = load_model_row(con, target)
    if row is None:
        raise ValueError(f"the previous production model {target} is no longer in the registry")
    return target, _make_production(con, row, when, "rollback", reason)


def load_promotion_history(
    con: duckdb.DuckDBPyConnection, kind: str | None = None, symbol: str | None = None
) -> pl.DataFrame:
    """promotion_history rows, oldest first; optionally of one kind and symbol."""
    where, params = [], []
    if kind is not None:
        where.append("kind = ?")
        params.append(kind)
    if symbol is not None:
        where.append("symbol = ?")
        params.append(symbol)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    return load_frame(con, f"SELECT * FROM promotion_history{clause} ORDER BY change_id", params)


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
