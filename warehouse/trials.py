"""The `trials` table: every evaluated configuration and its out-of-sample Sharpe, recorded idempotently and read back for the deflated Sharpe ratio."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal, get_args

import duckdb
import polars as pl

from warehouse.io import UpsertResult, load_frame, upsert

TrialKind = Literal["agent", "forecaster", "allocator", "genome"]
TRIAL_KINDS: tuple[str, ...] = get_args(TrialKind)

_SCHEMA: dict[str, Any] = {
    "trial_id": pl.String,
    "kind": pl.String,
    "dataset": pl.String,
    "data_start": pl.Datetime("us", "UTC"),
    "data_end": pl.Datetime("us", "UTC"),
    "config": pl.String,
    "genome": pl.String,
    "seed": pl.Int64,
    "sharpe": pl.Float64,
    "periods_per_year": pl.Float64,
    "n_obs": pl.Int64,
    "created_at": pl.Datetime("us", "UTC"),
}


def _json(value: Mapping[str, Any] | None) -> str | None:
    # Sorted keys: the same configuration always serialises, and hashes, the same way.
    return None if value is None else json.dumps(dict(value), sort_keys=True, default=str)


def _utc_text(ts: datetime) -> str:
    if ts.tzinfo is None:
        raise ValueError(f"trial range bound {ts!r} has no time zone; pass UTC-aware datetimes")
    return ts.isoformat()


def trial_id(
    *,
    kind: str,
    dataset: str,
    data_start: datetime,
    data_end: datetime,
    config: Mapping[str, Any],
    genome: Mapping[str, Any] | None = None,
    seed: int | None = None,
) -> str:
    """The trial's key: sha256 of what defines it (not its result, not when it was recorded)."""
    identity = {
        "kind": kind,
        "dataset": dataset,
        "data_start": _utc_text(data_start),
        "data_end": _utc_text(data_end),
        "config": _json(config),
        "genome": _json(genome),
        "seed": seed,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def record_trial(
    con: duckdb.DuckDBPyConnection,
    *,
    kind: str,
    dataset: str,
    data_start: datetime,
    data_end: datetime,
    config: Mapping[str, Any],
    sharpe: float,
    n_obs: int,
    periods_per_year: float,
    created_at: datetime,
    genome: Mapping[str, Any] | None = None,
    seed: int | None = None,
) -> tuple[str, UpsertResult]:
    """Upsert one trial keyed by :func:`trial_id`; returns the id and what the write did.

    Recording the same trial again changes nothing (``created_at`` is bookkeeping, kept from
    the first record unless the result changed); a re-run that got another Sharpe updates it.
    A non-finite Sharpe is stored as null (the trial still counts towards N).
    """
    if kind not in TRIAL_KINDS:
        raise ValueError(f"kind must be one of {TRIAL_KINDS}, not {kind!r}")
    if n_obs < 0 or not periods_per_year > 0.0:
        raise ValueError("n_obs must be >= 0 and periods_per_year > 0")
    key = trial_id(
        kind=kind,
        dataset=dataset,
        data_start=data_start,
        data_end=data_end,
        config=config,
        genome=genome,
        seed=seed,
    )
    row = {
        "trial_id": key,
        "kind": kind,
        "dataset": dataset,
        "data_start": data_start,
        "data_end": data_end,
        "config": _json(config),
        "genome": _json(genome),
        "seed": seed,
        "sharpe": float(sharpe) if math.isfinite(sharpe) else None,
        "periods_per_year": float(periods_per_year),
        "n_obs": int(n_obs),
        "created_at": created_at,
    }
    frame = pl.DataFrame([row], schema=_SCHEMA)
    return key, upsert(con, "trials", frame, ("trial_id",), bookkeeping=("created_at",))


def load_trial_sharpes(
    con: duckdb.DuckDBPyConnection, dataset: str, kind: str | None = None
) -> pl.DataFrame:
    """The trials on a dataset (of one kind, if given), oldest first, to feed the deflated Sharpe ratio.

    Columns: trial_id, kind, sharpe (annualised; null where undefined), periods_per_year,
    n_obs, data_start, data_end. N is the frame's height (every trial tried counts, a
    failed one too); V[SR] comes from the non-null Sharpes
    (models.evaluation.trial_sharpe_variance with their periods_per_year).
    """
    query = (
        "SELECT trial_id, kind, sharpe, periods_per_year, n_obs, data_start, data_end"
        " FROM trials WHERE dataset = ?"
    )
    params: list[Any] = [dataset]
    if kind is not None:
        query += " AND kind = ?"
        params.append(kind)
    return load_frame(con, query + " ORDER BY created_at, trial_id", params)
