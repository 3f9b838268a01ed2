"""The `nas_individuals` table: every evaluated genome of every architecture search."""

from __future__ import annotations

import json
from typing import Any

import duckdb
import polars as pl

from warehouse.io import load_frame, upsert


def write_individual(con: duckdb.DuckDBPyConnection, row: dict[str, Any]) -> None:
    data = {**row, "genome": json.dumps(row["genome"], sort_keys=True)}
    frame = pl.DataFrame(
        [data],
        schema_overrides={
            "fitness_per_seed": pl.List(pl.Float64),
            "created_at": pl.Datetime("us", "UTC"),
            "error": pl.String,
            "fitness_std": pl.Float64,
            "fitness": pl.Float64,
            "train_seconds": pl.Float64,
        },
    )
    upsert(
        con,
        "nas_individuals",
        frame,
        ("search_id", "generation", "individual"),
        bookkeeping=("created_at",),
    )


def load_individuals(con: duckdb.DuckDBPyConnection, search_id: str) -> list[dict[str, Any]]:
    rows = load_frame(
        con,
        "SELECT * FROM nas_individuals WHERE search_id = ? ORDER BY generation, individual",
        [search_id],
    ).to_dicts()
    for row in rows:
        row["genome"] = json.loads(row["genome"])
    return rows


def generation_summary(con: duckdb.DuckDBPyConnection, search_id: str) -> pl.DataFrame:
    """Best, median and worst fitness per generation (failed individuals excluded from the median)."""
    return load_frame(
        con,
        "SELECT generation, max(fitness) AS best, median(fitness) FILTER (WHERE status = 'ok') AS median,"
        " min(fitness) FILTER (WHERE status = 'ok') AS worst_ok, count(*) AS individuals,"
        " count(*) FILTER (WHERE status <> 'ok') AS failed"
        " FROM nas_individuals WHERE search_id = ? GROUP BY generation ORDER BY generation",
        [search_id],
    )
