"""Walk-forward evaluation results in the warehouse: the run with its verdict, metrics per fold and overall, per-bar returns."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import duckdb
import polars as pl

from warehouse.io import load_frame

METRIC_COLUMNS: tuple[str, ...] = (
    "n_obs",
    "total_return",
    "cagr",
    "sharpe",
    "sortino",
    "max_drawdown",
    "calmar",
    "exposure",
    "turnover",
)
"""The metric columns of evaluation_metrics, as models.evaluation.compute_return_metrics names them."""


def _metric_rows(
    eval_id: str, scope: str, frame: pl.DataFrame, fold: int | None = None
) -> pl.DataFrame:
    cols = [pl.lit(eval_id).alias("eval_id"), pl.lit(scope).alias("scope")]
    if fold is None:
        cols += [pl.col("fold").cast(pl.Int32), pl.col("label").cast(pl.String)]
    else:
        cols += [pl.lit(fold, dtype=pl.Int32).alias("fold"), pl.lit("all").alias("label")]
    cols += [pl.col("policy"), pl.col("seed").cast(pl.Int32)]
    for name in METRIC_COLUMNS:
        value = pl.col(name) if name in frame.columns else pl.lit(None)
        dtype = pl.Int32 if name == "n_obs" else pl.Float64
        # NaN (an undefined Sharpe of a flat book) is stored as null.
        cols.append(
            value.cast(dtype).fill_nan(None).alias(name)
            if dtype == pl.Float64
            else value.cast(dtype).alias(name)
        )
    return frame.select(cols)


def write_evaluation(
    con: duckdb.DuckDBPyConnection,
    run: Mapping[str, Any],
    fold_metrics: pl.DataFrame,
    overall_metrics: pl.DataFrame,
    returns: pl.DataFrame,
) -> None:
    """Replace every row of the evaluation ``run['eval_id']`` in one transaction (idempotent).

    ``run`` holds the evaluations columns (config and reasons as Python values, JSON-encoded
    here); ``fold_metrics`` / ``overall_metrics`` are models.walk_forward.WalkForwardSummary's
    frames; ``returns`` is models.walk_forward.result_frame. A re-run keeps ``created_at``.
    """
    eval_id = str(run["eval_id"])
    row = dict(run)
    row["config"] = json.dumps(row["config"], sort_keys=True, default=str)
    row["reasons"] = json.dumps(list(row["reasons"]))
    metrics = pl.concat(
        [
            _metric_rows(eval_id, "fold", fold_metrics),
            _metric_rows(eval_id, "overall", overall_metrics, fold=-1),
        ]
    )
    per_bar = returns.select(
        pl.lit(eval_id).alias("eval_id"),
        "policy",
        pl.col("seed").cast(pl.Int32),
        "ts",
        pl.col("fold").cast(pl.Int32),
        "position",
        pl.col("return").alias("ret"),
    )
    con.execute("BEGIN TRANSACTION")
    try:
        previous = con.execute(
            "SELECT created_at FROM evaluations WHERE eval_id = ?", [eval_id]
        ).fetchone()
        if previous is not None:
            row["created_at"] = previous[0]
        for table in ("evaluation_returns", "evaluation_metrics", "evaluations"):
            con.execute(f"DELETE FROM {table} WHERE eval_id = ?", [eval_id])
        columns = list(row)
        con.execute(
            f"INSERT INTO evaluations ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})",
            [row[c] for c in columns],
        )
        con.register("_eval_metrics", metrics)
        con.execute(
            f"INSERT INTO evaluation_metrics ({', '.join(metrics.columns)}) SELECT * FROM _eval_metrics"
        )
        con.register("_eval_returns", per_bar)
        con.execute(
            f"INSERT INTO evaluation_returns ({', '.join(per_bar.columns)}) SELECT * FROM _eval_returns"
        )
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    finally:
        for name in ("_eval_metrics", "_eval_returns"):
            with contextlib.suppress(duckdb.Error):
                con.unregister(name)


def load_evaluation(con: duckdb.DuckDBPyConnection, eval_id: str) -> dict[str, Any] | None:
    """The evaluations row of ``eval_id`` as a dict (config and reasons decoded), or None."""
    frame = load_frame(con, "SELECT * FROM evaluations WHERE eval_id = ?", [eval_id])
    if frame.height == 0:
        return None
    row = frame.row(0, named=True)
    row["config"] = json.loads(row["config"])
    row["reasons"] = json.loads(row["reasons"])
    return row


def load_evaluation_metrics(
    con: duckdb.DuckDBPyConnection, eval_id: str, scope: str | None = None
) -> pl.DataFrame:
    """Its metric rows, fold then policy then seed order (one scope, if given)."""
    query = "SELECT * FROM evaluation_metrics WHERE eval_id = ?"
    params: list[Any] = [eval_id]
    if scope is not None:
        query += " AND scope = ?"
        params.append(scope)
    return load_frame(con, query + " ORDER BY scope, fold, policy, seed", params)


def load_evaluation_returns(
    con: duckdb.DuckDBPyConnection, eval_id: str, policies: Sequence[str] | None = None
) -> pl.DataFrame:
    """Its per-bar returns (policy, seed, ts, fold, position, ret) in time order."""
    query = "SELECT policy, seed, ts, fold, position, ret FROM evaluation_returns WHERE eval_id = ?"
    params: list[Any] = [eval_id]
    if policies:
        query += f" AND policy IN ({', '.join('?' for _ in policies)})"
        params += list(policies)
    return load_frame(con, query + " ORDER BY policy, seed, ts", params)


def evaluation_created(con: duckdb.DuckDBPyConnection, eval_id: str) -> datetime | None:
    """When ``eval_id`` was first written, or None."""
    found = con.execute(
        "SELECT created_at FROM evaluations WHERE eval_id = ?", [eval_id]
    ).fetchone()
    return None if found is None else found[0]
