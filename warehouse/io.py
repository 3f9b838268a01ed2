"""polars <-> DuckDB: frame reads, plain row inserts and idempotent upserts keyed on natural keys."""

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
    """Insert new keys, update keys whose values differ, leave identical rows untouched.

    `bookkeeping` columns (e.g. ingested_at) are written with a new or changed row but
    never count as a change, so re-running the same load changes nothing at all.
    The frame must not repeat a key; validation deduplicates first. Run it inside a
    transaction when the insert and the update must land together.

    Why not INSERT ... ON CONFLICT DO UPDATE: in DuckDB 2.0 that clause halves the insert
    rate even when no key conflicts; a keyed plain insert of the new rows plus an UPDATE
    of the (usually few) changed ones is about twice as fast.
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
    tbl = _q(table)
    con.register(view, df.to_arrow())
    try:
        if not _any_key_in_box(con, tbl, df, key):
            # Nothing stored inside the batch's key box: every row is new, no join needed.
            con.execute(f"INSERT INTO {tbl} ({col_list}) SELECT {col_list} FROM {view}")
            return UpsertResult(df.height, 0, 0)
        counts = con.execute(
            f"SELECT count(*) FILTER (WHERE t.{_q(key[0])} IS NULL),"
            f" count(*) FILTER (WHERE t.{_q(key[0])} IS NOT NULL AND ({changed}))"
            f" FROM {view} s LEFT JOIN {tbl} t ON {join}"
        ).fetchall()[0]
        inserted, updated = int(counts[0]), int(counts[1])
        if inserted == df.height:
            con.execute(f"INSERT INTO {tbl} ({col_list}) SELECT {col_list} FROM {view}")
        elif inserted:
            con.execute(
                f"INSERT INTO {tbl} ({col_list}) SELECT {', '.join('s.' + _q(c) for c in cols)}"
                f" FROM {view} s ANTI JOIN {tbl} t ON {join}"
            )
        if updated:
            sets = ", ".join(f"{_q(c)} = s.{_q(c)}" for c in cols if c not in key)
            con.execute(f"UPDATE {tbl} AS t SET {sets} FROM {view} s WHERE {join} AND ({changed})")
    finally:
        con.unregister(view)
    return UpsertResult(inserted, updated, df.height - inserted - updated)


def insert_rows(
    con: duckdb.DuckDBPyConnection,
    table: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
) -> int:
    """Plain INSERT of `rows` (values in `columns` order) as ONE statement; returns the row count.

    One multi-row VALUES list, not executemany (a round trip per row). A key already
    stored raises duckdb.ConstraintException and nothing of the statement is written.
    """
    if not rows:
        return 0
    one = "(" + ", ".join("?" * len(columns)) + ")"
    con.execute(
        f"INSERT INTO {_q(table)} ({', '.join(_q(c) for c in columns)}) VALUES "
        + ", ".join([one] * len(rows)),
        [value for row in rows for value in row],
    )
    return len(rows)


def _any_key_in_box(
    con: duckdb.DuckDBPyConnection, tbl: str, df: pl.DataFrame, key: Sequence[str]
) -> bool:
    """Does the table hold any row whose key lies within the frame's min/max of every key column?

    DuckDB answers this from its zone maps, far cheaper than joining the batch.
    """
    bounds = df.select(
        *(pl.col(k).min().alias(f"lo{i}") for i, k in enumerate(key)),
        *(pl.col(k).max().alias(f"hi{i}") for i, k in enumerate(key)),
    ).row(0)
    n = len(key)
    if any(b is None for b in bounds):
        return True  # null keys: let the exact join decide
    where = " AND ".join(f"{_q(k)} BETWEEN ? AND ?" for k in key)
    params: list[Any] = []
    for i in range(n):
        params += [bounds[i], bounds[n + i]]
    found = con.execute(f"SELECT EXISTS (SELECT 1 FROM {tbl} WHERE {where})", params).fetchall()
    return bool(found[0][0])


def load_frame(
    con: duckdb.DuckDBPyConnection, query: str, params: Sequence[Any] | None = None
) -> pl.DataFrame:
    """Run a query and return a polars frame (timestamps come back in UTC)."""
    return con.sql(query, params=list(params) if params is not None else None).pl()
