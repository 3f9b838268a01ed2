"""The non-price inputs of an agent -- sentiment aggregates and its symbol's forecast -- read for training and trading.

Backtests and live trading must feed an agent exactly what training fed it: the same
point-in-time sentiment definition (models.sentiment.compute_sentiment_inputs, with the
window the model was trained on) and the forecasts of the symbol's production forecaster.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import polars as pl

from core.settings import get_settings
from models.features import FeatureSpec
from models.forecaster import DEFAULT_HORIZON_MINUTES
from models.sentiment import MODEL_NAME, compute_sentiment_inputs, sentiment_lookback
from warehouse.forecasts import FORECASTER_KIND, load_forecasts
from warehouse.posts import load_scored_posts
from warehouse.registry import load_model_row, production_model_id

Inputs = tuple[pl.DataFrame | None, pl.DataFrame | None]
InputLoader = Callable[[Any, datetime, datetime], Inputs]

# A forecast stays the newest known one until the next is made (hourly, refit weekly):
# look back far enough that the first bar of a range still finds one.
FORECAST_LOOKBACK = timedelta(days=35)


def sentiment_window(params: dict[str, Any]) -> timedelta:
    """The sentiment window a model was trained with ('compound_60m' in its params); 60 min by default."""
    match = re.fullmatch(r"compound_(\d+)m", str(params.get("sentiment", "")))
    return timedelta(minutes=int(match.group(1)) if match else 60)


def input_loader(spec: FeatureSpec, params: dict[str, Any]) -> InputLoader | None:
    """A loader of the model's extra inputs over [start, end); None when it has none."""
    if not (spec.sentiment or spec.sentiment_inputs or spec.forecast):
        return None
    window = sentiment_window(params) if spec.sentiment else None
    # A model trained while no post existed saw sentiment 0: keep feeding it 0.
    use_sentiment = bool(spec.sentiment or spec.sentiment_inputs) and (
        params.get("sentiment") != "none"
    )
    horizon = int(params.get("forecast_horizon_minutes", DEFAULT_HORIZON_MINUTES))
    lag = timedelta(minutes=get_settings().sentiment_lag_minutes)
    lookback = sentiment_lookback(spec.sentiment_inputs, window, lag)

    def load(con: Any, start: datetime, end: datetime) -> Inputs:
        sentiment = forecasts = None
        if use_sentiment:
            posts = load_scored_posts(con, start - lookback, end, MODEL_NAME)
            sentiment, _ = compute_sentiment_inputs(
                posts, spec.traded, start, end, lag, spec.sentiment_inputs, window
            )
        if spec.forecast:
            forecasts = load_forecasts(
                con, spec.traded, start - FORECAST_LOOKBACK, end, horizon_minutes=horizon
            )
        return sentiment, forecasts

    return load


def value_at(frame: pl.DataFrame | None, column: str, ts: datetime) -> float | None:
    """The newest value at or before ts (as compute_features' as-of join reads it); None if none."""
    if frame is None or frame.height == 0:
        return None
    known = frame.filter(pl.col("ts") <= ts)
    return None if known.height == 0 else float(known.get_column(column)[-1])


def values_at(spec: FeatureSpec, inputs: Inputs, ts: datetime) -> dict[str, float | None]:
    """Every extra input of `spec` a decision at `ts` reads (column -> value; None: none yet).

    The live path's row of what compute_features joins as of each bar: trading.live_features
    takes it as LiveFeatures.row(ts, inputs=...).
    """
    sentiment, forecasts = inputs
    out: dict[str, float | None] = {}
    for column in (["sentiment"] if spec.sentiment else []) + spec.sentiment_columns():
        out[column] = value_at(sentiment, column, ts)
    if spec.forecast:
        out["forecast"] = value_at(forecasts, "forecast", ts)
    return out


@dataclass(frozen=True)
class TrainingInputs:
    """A spec's extra inputs over a training range, what to record with the model, and notes."""

    sentiment: pl.DataFrame | None = None
    forecasts: pl.DataFrame | None = None
    params: dict[str, Any] = field(default_factory=dict)
    """For the model's params: input_loader reads them back in backtests and live trading."""
    notes: list[str] = field(default_factory=list)
    """Lines to log once (no posts; forecasts that start late)."""


def load_training_inputs(
    con: Any,
    spec: FeatureSpec,
    start: datetime,
    end: datetime,
    window: timedelta = timedelta(minutes=60),
) -> TrainingInputs:
    """The sentiment and forecast inputs `spec` asks for over [start, end), for training.

    Sentiment: the legacy `sentiment` column (over `window`) and the spec's sentiment_inputs,
    point in time with the configured lag (compute_sentiment_inputs); without any post
    they read 0, a note says so and params record sentiment 'none' (trading then keeps
    feeding 0). Forecast: the production forecaster's point-in-time forecasts of the traded
    symbol; a symbol with no production forecaster, or one without forecasts in the range,
    raises -- never a silent 0.
    """
    sentiment = forecasts = None
    params: dict[str, Any] = {}
    notes: list[str] = []
    if spec.sentiment or spec.sentiment_inputs:
        lag = timedelta(minutes=get_settings().sentiment_lag_minutes)
        legacy = window if spec.sentiment else None
        posts = load_scored_posts(
            con, start - sentiment_lookback(spec.sentiment_inputs, legacy, lag), end, MODEL_NAME
        )
        sentiment, note = compute_sentiment_inputs(
            posts, spec.traded, start, end, lag, spec.sentiment_inputs, legacy
        )
        if note is not None:
            notes.append(note)
        minutes = int(window.total_seconds() // 60)
        params["sentiment"] = f"compound_{minutes}m" if sentiment is not None else "none"
    if spec.forecast:
        chosen = production_model_id(con, FORECASTER_KIND, spec.traded)
        if chosen is None:
            raise ValueError(
                f"{spec.traded} has no production forecaster ({FORECASTER_KIND}): the forecast "
                "input needs one (nightly-retrain fits them for coins); train without it"
            )
        row = load_model_row(con, chosen)
        horizon = int(
            ((row or {}).get("params") or {}).get("horizon_minutes", DEFAULT_HORIZON_MINUTES)
        )
        forecasts = load_forecasts(
            con, spec.traded, start - FORECAST_LOOKBACK, end, horizon_minutes=horizon
        )
        if forecasts.height == 0:
            raise ValueError(
                f"{spec.traded}'s production forecaster {chosen} has no {horizon}-minute "
                f"forecasts before {end:%Y-%m-%d}: the forecast input would read 0"
            )
        first = forecasts.get_column("ts").min()
        if isinstance(first, datetime) and first > start:
            notes.append(
                f"{spec.traded}: forecasts of {chosen} start at {first:%Y-%m-%d %H:%M}; the "
                "forecast input reads 0 before"
            )
        params |= {"forecaster": chosen, "forecast_horizon_minutes": horizon}
    return TrainingInputs(sentiment, forecasts, params, notes)
