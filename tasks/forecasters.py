"""Prefect task around a coin forecaster: rows, purged CV, the final model, point-in-time forecasts, the artifact."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import polars as pl
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from models.features import FeatureSpec
from models.forecaster import (
    ForecasterConfig,
    compute_forecast_rows,
    cross_validate,
    save_forecaster,
    train_forecaster,
    walk_forward_forecasts,
)
from models.registry import pack_folder


@task(name="fit-forecaster", task_run_name="fit-{model_id}", cache_policy=NO_CACHE)
def fit_forecaster(
    bars: pl.DataFrame,
    spec: dict[str, Any],
    config: dict[str, Any],
    sentiment: pl.DataFrame | None,
    model_id: str,
    extra_meta: dict[str, Any],
    champion_recipe: tuple[dict[str, Any], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Train one coin's forecaster and its walk-forward forecasts; plain values out.

    Writes nothing where the flow keeps its models: the artifact comes back as bytes
    ('artifact': files and sha256; models.registry.unpack_folder writes it in the flow's
    process), so the task can run on a Dask worker that shares no disk with the flow.

    champion_recipe (spec, config) of the production forecaster: its recipe is cross-validated
    on the same rows and folds, so the gate compares both on the same out-of-fold data.
    Raises when the coin has too few labeled rows (the caller records it and goes on).
    """
    logger = get_run_logger()
    feature_spec = FeatureSpec.from_dict(spec)
    cfg = ForecasterConfig(**config)
    rows = compute_forecast_rows(bars, feature_spec, cfg, sentiment)
    fit = train_forecaster(rows, feature_spec, cfg)
    forecasts = walk_forward_forecasts(rows, feature_spec, cfg)
    with tempfile.TemporaryDirectory(prefix="tradingml-artifact-") as tmp:
        folder = Path(tmp) / model_id
        sha = save_forecaster(folder, fit.booster, feature_spec, {**fit.meta, **extra_meta})
        files = pack_folder(folder)
    metrics = fit.cv.to_dict()
    champion_cv: dict[str, Any] | None = None
    if champion_recipe is not None:
        champ_spec = FeatureSpec.from_dict(champion_recipe[0])
        champ_cfg = ForecasterConfig(**champion_recipe[1])
        champ_rows = compute_forecast_rows(bars, champ_spec, champ_cfg, sentiment)
        champion_cv = cross_validate(champ_rows, champ_spec.names(), champ_cfg).to_dict()
    folds = metrics.get("folds") or []
    logger.info(
        "%s: %d training rows, out-of-fold rank IC %.4f (zero forecast 0), %d forecasts",
        model_id,
        fit.meta["train_rows"],
        float(metrics.get("rank_ic", float("nan"))),
        forecasts.filter(pl.col("forecast").is_not_null()).height,
    )
    return {
        "model_id": model_id,
        "sha256": sha,
        "artifact": {"files": files, "sha256": sha},
        "metrics": metrics,
        "meta": {**fit.meta, **extra_meta},
        "eval_start": folds[0]["valid_start"] if folds else None,
        "eval_end": folds[-1]["valid_end"] if folds else None,
        "forecasts": forecasts.filter(pl.col("forecast").is_not_null()).select(
            "ts", "symbol", "forecast"
        ),
        "champion_cv": champion_cv,
    }
