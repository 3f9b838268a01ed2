"""The `forecasts` table (point-in-time forecasts, idempotent writes and reads) and forecaster registry rows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import duckdb
import polars as pl

from warehouse.io import UpsertResult, load_frame, upsert
from warehouse.registry import production_model_id, write_model

FORECAST_KEY = ("model_id", "symbol", "ts", "horizon_minutes")
FORECASTER_KIND = "xgb_forecaster"


def write_forecasts(
    con: duckdb.DuckDBPyConnection,
    forecasts: pl.DataFrame,
    *,
    model_id: str,
    horizon_minutes: int,
    created_at: datetime,
) -> UpsertResult:
    """Upsert forecasts (columns ts, symbol, forecast) keyed (model_id, symbol, ts, horizon_minutes).

    Rows whose forecast is null (no model could be trained yet at that time) are not
    stored. `created_at` is bookkeeping: writing the same forecasts again changes nothing.
    """
    frame = forecasts.filter(pl.col("forecast").is_not_null()).select(
        pl.lit(model_id).alias("model_id"),
        pl.col("symbol").cast(pl.String),
        pl.col("ts").cast(pl.Datetime("us", "UTC")),
        pl.lit(horizon_minutes, dtype=pl.Int32).alias("horizon_minutes"),
        pl.col("forecast").cast(pl.Float64).alias("predicted_log_return"),
        pl.lit(created_at).cast(pl.Datetime("us", "UTC")).alias("created_at"),
    )
    return upsert(con, "forecasts", frame, FORECAST_KEY, bookkeeping=("created_at",))


def load_forecasts(
    con: duckdb.DuckDBPyConnection,
    symbol: str,
    start: datetime,
    end: datetime,
    *,
    horizon_minutes: int,
    model_id: str | None = None,
) -> pl.DataFrame:
    """Forecasts made in [start, end) for one symbol: ts, symbol, forecast, sorted by ts.

    The frame is the `forecasts` input of models.features.compute_features. `model_id`
    None means the symbol's production xgb_forecaster; with none promoted the frame is
    empty (the features then read 0.0).
    """
    chosen = model_id or production_model_id(con, FORECASTER_KIND, symbol)
    if chosen is None:
        return pl.DataFrame(
            schema={"ts": pl.Datetime("us", "UTC"), "symbol": pl.String(), "forecast": pl.Float64()}
        )
    return load_frame(
        con,
        "SELECT ts, symbol, predicted_log_return AS forecast FROM forecasts"
        " WHERE model_id = ? AND symbol = ? AND horizon_minutes = ? AND ts >= ? AND ts < ?"
        " ORDER BY ts",
        [chosen, symbol, horizon_minutes, start, end],
    )


def register_forecaster(
    con: duckdb.DuckDBPyConnection,
    *,
    model_id: str,
    symbol: str,
    feature_schema_hash: str,
    metrics: dict[str, Any],
    params: dict[str, Any],
    artifact_path: str,
    artifact_sha256: str,
    created_at: datetime,
) -> None:
    """A `models` row for a forecaster, as a candidate (kind 'xgb_forecaster', symbol = the coin).

    `metrics` are the CV metrics beside the naive zero forecast (their `objective` ranks
    candidates in v_model_leaderboard). Writing a model_id again keeps its stage and
    promotion time (write_model).
    """
    write_model(
        con,
        {
            "model_id": model_id,
            "kind": FORECASTER_KIND,
            "symbol": symbol,
            "feature_schema_hash": feature_schema_hash,
            "architecture": {"model": "xgboost", "tree_method": "hist"},
            "params": params,
            "metrics": metrics,
            "artifact_path": artifact_path,
            "artifact_sha256": artifact_sha256,
            "stage": "candidate",
            "created_at": created_at,
            "promoted_at": None,
        },
    )
