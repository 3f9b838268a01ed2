"""A coin agent's sentiment and forecast inputs: live reads them minute by minute exactly as the batch features do."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from adapters.clock import ManualClock
from adapters.synthetic import SyntheticBarSource, SyntheticConfig
from adapters.synthetic_posts import SyntheticPostConfig, SyntheticPostSource
from core.post_quality import frame_from_posts
from models.features import SENTIMENT_INPUTS, FeatureSpec, compute_features
from models.sentiment import compute_post_sentiment
from trading.inputs import (
    InputLoader,
    Inputs,
    input_loader,
    load_training_inputs,
    sentiment_window,
    value_at,
    values_at,
)
from trading.live_features import LiveFeatures
from warehouse.bars import ingest_bar_frames, load_bars
from warehouse.db import connect
from warehouse.forecasts import write_forecasts
from warehouse.posts import ingest_post_frames
from warehouse.registry import promote, write_model

COIN = "BTC/USD"
START = datetime(2024, 3, 1, tzinfo=UTC)
DAY = datetime(2024, 3, 4, tzinfo=UTC)


def _warehouse(path: Path) -> None:
    bars = SyntheticBarSource(SyntheticConfig(seed=5, signal="sentiment"))
    later = DAY + timedelta(days=2)  # "now" for validation: after every bar and post
    ingest_bar_frames(bars.fetch_bars([COIN], "1Min", START, DAY + timedelta(days=1)), path, later)
    posts = SyntheticPostSource(
        SyntheticPostConfig(seed=5, tone="lead-coins"), ManualClock(DAY + timedelta(days=1))
    )
    frame = frame_from_posts(list(posts.fetch_posts(["Bitcoin", "CryptoCurrency"], START, 10**6)))
    ingest_post_frames([frame], path, later, compute_post_sentiment)
    hours = pl.datetime_range(START, DAY + timedelta(days=1), "1h", eager=True, time_zone="UTC")
    forecasts = pl.DataFrame(
        {
            "ts": hours,
            "symbol": [COIN] * len(hours),
            "forecast": np.sin(np.arange(len(hours)) / 7.0) / 50,
        }
    )
    with connect(path) as con:
        write_model(
            con,
            {
                "model_id": "xgb-test",
                "kind": "xgb_forecaster",
                "symbol": COIN,
                "feature_schema_hash": "x",
                "architecture": {},
                "params": {},
                "metrics": {},
                "artifact_path": "unused",
                "artifact_sha256": "unused",
                "stage": "candidate",
                "created_at": DAY,
                "promoted_at": None,
            },
        )
        promote(con, "xgb-test", DAY)
        write_forecasts(con, forecasts, model_id="xgb-test", horizon_minutes=40_320, created_at=DAY)


def _assert_live_equals_batch(
    path: Path,
    spec: FeatureSpec,
    loader: InputLoader,
    bars: pl.DataFrame,
    batch: pl.DataFrame,
    row: Callable[[LiveFeatures, Inputs, datetime], np.ndarray | None],
) -> None:
    """Feed DAY's bars minute by minute, reading the inputs each minute as live does: every
    live row equals the batch row of that minute."""
    live = LiveFeatures(spec)
    live.push_frame(bars.filter(pl.col("ts") < DAY))
    expected = {
        r[0]: np.asarray(r[1:], dtype=np.float32)
        for r in batch.select("ts", *spec.names()).iter_rows()
    }
    checked = 0
    with connect(path) as con:
        for frame in bars.filter(pl.col("ts") >= DAY).partition_by("ts", maintain_order=True):
            ts = frame.get_column("ts")[0]
            live.push_frame(frame)
            extra = loader(con, ts, ts + timedelta(minutes=1))  # what live reads each minute
            got = row(live, extra, ts)
            assert got is not None
            np.testing.assert_allclose(got, expected[ts], rtol=1e-5, atol=1e-7)
            checked += 1
    assert checked == batch.height == 360


def test_live_inputs_equal_the_batch_inputs_minute_by_minute(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    _warehouse(path)
    spec = FeatureSpec(symbols=(COIN,), sentiment=True, forecast=True)
    params = {"sentiment": "compound_60m", "forecast_horizon_minutes": 40_320}
    loader = input_loader(spec, params)
    assert loader is not None
    end = DAY + timedelta(hours=6)
    with connect(path) as con:
        bars = load_bars(con, [COIN], "1Min", START, end)
        sentiment, forecasts = loader(con, START, end)
    assert sentiment is not None and forecasts is not None
    batch = compute_features(bars, spec, sentiment, forecasts).filter(pl.col("ts") >= DAY)
    # The inputs vary over the day: the comparison below is not one of zeros.
    assert batch.get_column("sentiment").n_unique() > 5
    assert batch.get_column("forecast").n_unique() > 3

    def legacy_row(live: LiveFeatures, extra: Inputs, ts: datetime) -> np.ndarray | None:
        s, f = extra
        return live.row(ts, value_at(s, "sentiment", ts), value_at(f, "forecast", ts))

    _assert_live_equals_batch(path, spec, loader, bars, batch, legacy_row)


def test_the_sentiment_window_comes_from_the_model() -> None:
    assert sentiment_window({"sentiment": "compound_240m"}) == timedelta(minutes=240)
    assert sentiment_window({}) == timedelta(minutes=60)
    assert input_loader(FeatureSpec(symbols=(COIN,)), {}) is None


def test_the_sentiment_aggregates_live_equal_the_batch_and_training_inputs(tmp_path: Path) -> None:
    """Every sentiment aggregate (the coin's and the market's, 60 minutes and 24 hours) with
    the forecast: training's loader, the backtest's loader and the live minute-by-minute
    row read the same numbers."""
    path = tmp_path / "w.duckdb"
    _warehouse(path)
    spec = FeatureSpec(symbols=(COIN,), forecast=True, sentiment_inputs=SENTIMENT_INPUTS)
    end = DAY + timedelta(hours=6)
    with connect(path) as con:
        bars = load_bars(con, [COIN], "1Min", START, end)
        trained = load_training_inputs(con, spec, START, end)
    assert trained.sentiment is not None and trained.forecasts is not None
    # What the model records is what the trading loader reads back.
    loader = input_loader(spec, trained.params)
    assert loader is not None and trained.params["forecaster"] == "xgb-test"
    with connect(path) as con:
        sentiment, forecasts = loader(con, START, end)
    assert sentiment is not None and forecasts is not None
    batch = compute_features(bars, spec, sentiment, forecasts).filter(pl.col("ts") >= DAY)
    from_training = compute_features(bars, spec, trained.sentiment, trained.forecasts).filter(
        pl.col("ts") >= DAY
    )
    assert batch.select(spec.names()).equals(from_training.select(spec.names()))
    for column in spec.sentiment_columns():
        # Each input varies over the day: the comparison below is not one of zeros.
        assert batch.get_column(column).n_unique() > 3, column
    assert not batch.get_column("sentiment_market_24h").equals(
        batch.get_column("sentiment_symbol_60m")
    )

    def row(live: LiveFeatures, extra: Inputs, ts: datetime) -> np.ndarray | None:
        return live.row(ts, inputs=values_at(spec, extra, ts))

    _assert_live_equals_batch(path, spec, loader, bars, batch, row)


def test_the_configs_and_the_cli_offer_exactly_the_feature_specs_sentiment_inputs() -> None:
    import typing

    from core.configs import SentimentInput
    from flows.cli import build_parser

    assert typing.get_args(SentimentInput) == SENTIMENT_INPUTS
    train = build_parser()._subparsers._group_actions[0].choices["train"]  # type: ignore[union-attr]
    [option] = [a for a in train._actions if a.dest == "sentiment_inputs"]
    assert tuple(option.choices or ()) == SENTIMENT_INPUTS
