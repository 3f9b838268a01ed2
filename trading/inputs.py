"""The non-price inputs an agent was trained with -- sentiment and its coin's forecast -- read for trading.

Backtests and live trading must feed an agent exactly what training fed it: the same
point-in-time sentiment definition (models.sentiment.coin_sentiment, with the window the
model was trained on) and the forecasts of the coin's production forecaster.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import polars as pl

from core.settings import get_settings
from models.features import FeatureSpec
from models.forecaster import DEFAULT_HORIZON_MINUTES
from models.sentiment import MODEL_NAME, coin_sentiment
from warehouse.forecasts import load_forecasts
from warehouse.posts import load_scored_posts

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
    if not (spec.sentiment or spec.forecast):
        return None
    window = sentiment_window(params)
    # A model trained while no post existed saw sentiment 0: keep feeding it 0.
    use_sentiment = spec.sentiment and params.get("sentiment") != "none"
    horizon = int(params.get("forecast_horizon_minutes", DEFAULT_HORIZON_MINUTES))
    lag = timedelta(minutes=get_settings().sentiment_lag_minutes)

    def load(con: Any, start: datetime, end: datetime) -> Inputs:
        sentiment = forecasts = None
        if use_sentiment:
            posts = load_scored_posts(con, start - window - lag, end, MODEL_NAME)
            per_coin, _ = coin_sentiment(posts, [spec.traded], start, end, lag, window)
            sentiment = per_coin.get(spec.traded)
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
