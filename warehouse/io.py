"""polars <-> DuckDB: frame reads and idempotent upserts keyed on natural keys."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import polars as pl


@dataclass(frozen=True)
class UpsertResult:
    """What an upsert did: new keys, keys whose values changed, keys already identical."""

    inserted: int
    updated: int
    unchanged: int

    @property
    def total(self) -> int:
        return self.inserted + self.updated + self.unchanged


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def upsert(
    con: duckdb.DuckDBPyConnection,
    table: str,
    df: pl.DataFrame,
    key: Sequence[str],
    *,
    bookkeeping: Sequence[str] = (),
) -> UpsertResult:
    """INSERT ... ON CONFLICT (key) DO UPDATE, touching only rows whose values differ.

    `bookkeeping` columns (e.g. ingested_at) are written with a changed row but never
    count as a change themselves, so re-running the same load changes nothing at all.
    The frame must not repeat a key (DuckDB refuses to update one row twice in one
    statement); validation deduplicates first.
    """
    if df.height == 0:
        return UpsertResult(0, 0, 0)
    missing = [k for k in key if k not in df.columns]
    if missing:
        raise ValueError(f"upsert into {table}: frame lacks key column(s) {missing}")
    view = f"_upsert_{uuid.uuid4().hex}"
    cols = list(df.columns)
    values = [c for c in cols if c not in key and c not in bookkeeping]
    changed = " OR ".join(f"t.{_q(c)} IS DISTINCT FROM s.{_q(c)}" for c in values) or "FALSE"
    join = " AND ".join(f"t.{_q(k)} = s.{_q(k)}" for k in key)
    col_list = ", ".join(_q(c) for c in cols)
    con.register(view, df.to_arrow())
    try:
        counts = con.execute(
            f"SELECT count(*) FILTER (WHERE t.{_q(key[0])} IS NULL),"
            f" count(*) FILTER (WHERE t.{_q(key[0])} IS NOT NULL AND ({changed}))"
            f" FROM {view} s LEFT JOIN {_q(table)} t ON {join}"
        ).fetchall()[0]
        inserted, updated = int(counts[0]), int(counts[1])
        if inserted or updated:
            update_cols = [c for c in cols if c not in key]
            if update_cols:
                sets = ", ".join(f"{_q(c)} = excluded.{_q(c)}" for c in update_cols)
                where = " OR ".join(
                    f"{_q(table)}.{_q(c)} IS DISTINCT FROM excluded.{_q(c)}" for c in values
                )
                action = f"DO UPDATE SET {sets}" + (f" WHERE {where}" if where else "")
            else:
                action = "DO NOTHING"
            con.execute(
                f"INSERT INTO {_q(table)} ({col_list}) SELECT {col_list} FROM {view}"
                f" ON CONFLICT ({', '.join(_q(k) for k in key)}) {action}"
            )
    finally:
        con.unregister(view)
    return UpsertResult(inserted, updated, df.height - inserted - updated)


def load_frame(
    con: duckdb.DuckDBPyConnection, query: str, params: Sequence[Any] | None = None
) -> pl.DataFrame:
    """Run a query and return a polars frame (timestamps come back in UTC)."""
    return con.sql(query, params=list(params) if params is not None else None).pl()
