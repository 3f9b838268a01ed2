"""Coin forecaster: labels, purged folds, point-in-time forecasts, artifacts, skill on a planted signal, its warehouse rows and the forecast feature."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy.signal import lfilter

from models.features import FeatureSpec, compute_features
from models.forecaster import (
    DEFAULT_HORIZON_MINUTES,
    ForecasterConfig,
    Scheme,
    compute_forecast_rows,
    compute_labels,
    forecast_metrics,
    forecaster_sha256,
    forecaster_spec,
    load_forecaster,
    purged_folds,
    save_forecaster,
    train_forecaster,
    walk_forward_forecasts,
)
from models.registry import ModelLoadError
from warehouse.db import connect
from warehouse.forecasts import load_forecasts, register_forecaster, write_forecasts
from warehouse.registry import load_model_row

T0 = datetime(2024, 1, 1, tzinfo=UTC)
COIN = "BTC/USD"
# Short windows and horizon: the horizon is a parameter; 40,320 minutes is only the default.
SPEC = FeatureSpec(
    symbols=(COIN,),
    return_windows=(15, 60, 240),
    vol_windows=(60,),
    volume_window=60,
    sentiment=True,
)
# One thread: on a busy two-core machine XGBoost's second thread mostly waits.
CFG = ForecasterConfig(
    horizon_minutes=720,
    every_minutes=30,
    n_folds=4,
    refit_every_days=2,
    min_train_rows=100,
    n_estimators=60,
    n_jobs=1,
)


def minutes(n: int, start: datetime = T0) -> pl.Series:
    return pl.datetime_range(start, start + timedelta(minutes=n - 1), "1m", eager=True).alias("ts")


def bar_frame(ts: pl.Series, close: np.ndarray, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "symbol": COIN,
            "timeframe": "1Min",
            "ts": ts,
            "open": close,
            "high": close * 1.001,
            "low": close * 0.999,
            "close": close,
            "volume": rng.uniform(1.0, 2.0, len(close)),
            "vwap": close,
        }
    )


def planted_market(days: int, seed: int = 0) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Minute bars whose drift follows a slow sentiment series (about a day of memory)."""
    n = days * 1440
    rng = np.random.default_rng(seed)
    phi = 1.0 - 1.0 / 1440
    s = lfilter([math.sqrt(1 - phi**2)], [1.0, -phi], rng.standard_normal(n))
    close = 100.0 * np.exp(np.cumsum(2e-4 * s + 1e-3 * rng.standard_normal(n)))
    ts = minutes(n)
    sentiment = pl.DataFrame({"ts": ts, "symbol": COIN, "sentiment": np.tanh(s)})
    return bar_frame(ts, close, seed), sentiment


@pytest.fixture(scope="module")
def market() -> tuple[pl.DataFrame, pl.DataFrame]:
    return planted_market(24)


# ---- labels ----


def test_labels_exact_values_with_a_missing_bar_and_an_unlabeled_tail() -> None:
    # Minutes 0..9 with log close 0.1 * i; the bar of minute 6 is missing.
    kept = [i for i in range(10) if i != 6]
    bars = pl.DataFrame(
        {
            "ts": [T0 + timedelta(minutes=i) for i in kept],
            "close": [math.exp(0.1 * i) for i in kept],
        }
    )
    out = compute_labels(bars, bars, horizon_minutes=3)
    labels = dict(
        zip([round((t - T0).total_seconds() / 60) for t in out["ts"]], out["label"], strict=True)
    )
    expected = {0: 0.3, 1: 0.3, 2: 0.3, 3: 0.2, 4: 0.3, 5: 0.3}  # 3 -> minute 6 missing -> bar 5
    assert {k: v for k, v in labels.items() if v is not None} == pytest.approx(expected)
    # The horizon end of 7, 8, 9 is after the last bar: unlabeled, still present.
    assert [k for k, v in labels.items() if v is None] == [7, 8, 9]
    assert out.height == bars.height
    assert out["label_end"][0] == T0 + timedelta(minutes=3)


def test_forecast_rows_sample_a_grid_and_keep_unlabeled_rows() -> None:
    n = 600
    close = np.exp(0.001 * np.arange(n))
    bars = bar_frame(minutes(n), close).filter(pl.col("ts") != T0 + timedelta(minutes=300))
    cfg = ForecasterConfig(horizon_minutes=120, every_minutes=60)
    rows = compute_forecast_rows(bars, SPEC, cfg)
    # One row per hour; the missing bar at minute 300 is stood in for by minute 299.
    assert rows.height == 10
    assert rows["ts"].to_list() == [T0 + timedelta(hours=i) for i in range(10)]
    assert rows.filter(pl.col("ts") == T0 + timedelta(hours=5))["bar_ts"][0] == T0 + timedelta(
        minutes=299
    )
    assert rows.schema[SPEC.names()[0]] == pl.Float32
    # Last bar at minute 599: rows at 480 and 540 see no outcome yet; kept, unlabeled.
    assert rows["label"].is_null().to_list() == [False] * 8 + [True] * 2
    assert rows["label"][0] == pytest.approx(0.12)
    # Warm once the longest window (240 bars) is filled.
    assert rows["warm"].to_list() == [False] * 4 + [True] * 6


def test_default_forecaster_features_span_hours_to_weeks() -> None:
    spec = forecaster_spec("ETH/USD")
    assert spec.traded == "ETH/USD" and spec.sentiment
    assert min(spec.return_windows) == 60 and max(spec.return_windows) >= 10_080
    assert ForecasterConfig().horizon_minutes == DEFAULT_HORIZON_MINUTES == 40_320


# ---- purge and embargo ----


@pytest.mark.parametrize("scheme", ["walk_forward", "purged_kfold"])
def test_no_training_label_window_overlaps_a_validation_one(scheme: Scheme) -> None:
    rng = np.random.default_rng(3)
    # Irregular row times (gaps), horizon 60 minutes.
    t = np.cumsum(rng.integers(1, 30, 400)).astype(np.int64)
    ts = pl.Series([T0 + timedelta(minutes=int(m)) for m in t])
    h = 60
    folds = purged_folds(ts, h, 4, scheme=scheme, embargo_minutes=90)
    assert len(folds) == 4
    start = t[:, None]
    for fold in folds:
        assert fold.train.size > 0 and fold.valid.size > 0
        assert np.intersect1d(fold.train, fold.valid).size == 0
        tr, va = t[fold.train][:, None], t[fold.valid][None, :]
        # Windows [tr, tr + h] and [va, va + h] are disjoint for every pair.
        assert np.all((tr + h < va) | (va + h < tr))
        # The purge removed exactly the rows whose window reaches into the block.
        purged = (start[:, 0] + h >= t[fold.valid[0]]) & (start[:, 0] < t[fold.valid[0]])
        assert not np.isin(np.nonzero(purged)[0], fold.train).any()
    if scheme == "walk_forward":
        assert all(fold.train.max() < fold.valid.min() for fold in folds)
    else:
        # Rows after an inner block train too, but only past its last row + embargo.
        first = folds[0]
        later = first.train[first.train > first.valid.max()]
        assert later.size > 0 and t[later].min() > t[first.valid.max()] + 90


def test_an_embargo_shorter_than_the_horizon_is_refused() -> None:
    ts = pl.Series([T0 + timedelta(minutes=i) for i in range(50)])
    with pytest.raises(ValueError, match="embargo"):
        purged_folds(ts, 10, 2, scheme="purged_kfold", embargo_minutes=5)
    with pytest.raises(ValueError, match="embargo"):
        _ = ForecasterConfig(horizon_minutes=10, embargo_minutes=5).embargo


# ---- skill on a planted signal ----


def test_cv_beats_the_zero_forecast_on_a_planted_signal(
    market: tuple[pl.DataFrame, pl.DataFrame],
) -> None:
    bars, sentiment = market
    rows = compute_forecast_rows(bars, SPEC, CFG, sentiment)
    fit = train_forecaster(rows, SPEC, CFG)
    overall = fit.cv.overall
    assert len(fit.cv.folds) == CFG.n_folds
    assert overall["rank_ic"] > 0.3 > overall["naive_rank_ic"]
    assert overall["rmse"] < overall["naive_rmse"]
    assert overall["directional_accuracy"] > 0.6 > overall["naive_directional_accuracy"]
    assert all(f["rank_ic"] > 0 for f in fit.cv.folds)
    metrics = fit.cv.to_dict()
    assert metrics["objective"] == overall["rank_ic"] and len(metrics["folds"]) == CFG.n_folds


def test_metrics_of_a_perfect_and_a_zero_forecast() -> None:
    y = np.array([0.02, -0.01, 0.03, -0.04])
    perfect = forecast_metrics(y, y)
    assert perfect["rmse"] == 0.0 and perfect["rank_ic"] == pytest.approx(1.0)
    assert perfect["directional_accuracy"] == 1.0
    zero = forecast_metrics(y, np.zeros(4))
    assert zero["rmse"] == zero["naive_rmse"] == pytest.approx(math.sqrt(np.mean(y**2)))
    assert zero["directional_accuracy"] == 0.5 and zero["rank_ic"] == 0.0


# ---- point in time ----


def test_appending_later_bars_changes_no_past_forecast(
    market: tuple[pl.DataFrame, pl.DataFrame],
) -> None:
    bars, sentiment = market
    cut = T0 + timedelta(days=14, hours=5, minutes=17)
    early = compute_forecast_rows(
        bars.filter(pl.col("ts") < cut), SPEC, CFG, sentiment.filter(pl.col("ts") < cut)
    )
    full = compute_forecast_rows(bars, SPEC, CFG, sentiment)
    before = walk_forward_forecasts(early, SPEC, CFG)
    after = walk_forward_forecasts(full, SPEC, CFG)
    joined = before.join(after, on="ts", suffix="_later")
    assert joined.height == before.height and after.height > before.height
    # Includes forecasts whose outcome was still unknown at the cut.
    assert early.filter(pl.col("label").is_null()).height > 0
    assert joined["forecast"].is_not_null().sum() > 200
    assert joined["forecast"].eq_missing(joined["forecast_later"]).all()
    assert joined["trained_through"].eq_missing(joined["trained_through_later"]).all()
    # Each forecast's model saw only labels known at its time: trained_through <= ts.
    assert (after["trained_through"] <= after["ts"]).all()
    # An incremental run reproduces the full run's rows.
    since = T0 + timedelta(days=20)
    tail = walk_forward_forecasts(full, SPEC, CFG, since=since)
    assert tail.equals(after.filter(pl.col("ts") >= since))


# ---- artifacts ----


def test_save_load_round_trip_and_a_tampered_file_is_refused(
    tmp_path: Path, market: tuple[pl.DataFrame, pl.DataFrame]
) -> None:
    bars, sentiment = market
    rows = compute_forecast_rows(bars.head(10 * 1440), SPEC, CFG, sentiment)
    fit = train_forecaster(rows, SPEC, CFG)
    directory = tmp_path / "fc"
    sha = save_forecaster(directory, fit.booster, SPEC, fit.meta)
    assert sorted(p.name for p in directory.iterdir()) == ["meta.json", "model.json"]
    loaded = load_forecaster(directory, sha, running_spec=SPEC)
    expected = fit.booster.inplace_predict(rows.select(SPEC.names()).to_numpy())
    assert np.array_equal(loaded.predict(rows), np.asarray(expected, dtype=np.float64))
    assert loaded.horizon_minutes == CFG.horizon_minutes
    assert loaded.meta["feature_schema_hash"] == SPEC.schema_hash()
    assert loaded.meta["feature_names"] == SPEC.names()

    with pytest.raises(ModelLoadError, match="features"):
        load_forecaster(directory, sha, running_spec=forecaster_spec(COIN))
    model = directory / "model.json"
    original = model.read_bytes()
    model.write_bytes(original.replace(b'"', b"'", 1))
    with pytest.raises(ModelLoadError, match="sha256"):
        load_forecaster(directory, sha)
    model.write_bytes(original)
    assert forecaster_sha256(directory) == sha
    (directory / "meta.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="sha256"):
        load_forecaster(directory, sha)


# ---- warehouse ----


def test_forecasts_and_registry_rows_round_trip(warehouse_path: Path) -> None:
    made = datetime(2024, 3, 1, tzinfo=UTC)
    frame = pl.DataFrame(
        {
            "ts": [T0 + timedelta(hours=i) for i in range(4)],
            "symbol": COIN,
            "forecast": [None, 0.01, -0.02, 0.03],
        }
    )
    with connect(warehouse_path) as con:
        first = write_forecasts(con, frame, model_id="fc-1", horizon_minutes=720, created_at=made)
        again = write_forecasts(
            con, frame, model_id="fc-1", horizon_minutes=720, created_at=made + timedelta(days=1)
        )
        got = load_forecasts(
            con,
            COIN,
            T0 + timedelta(hours=2),
            T0 + timedelta(days=1),
            horizon_minutes=720,
            model_id="fc-1",
        )
        none_promoted = load_forecasts(con, COIN, T0, T0 + timedelta(days=1), horizon_minutes=720)
        register_forecaster(
            con,
            model_id="fc-1",
            symbol=COIN,
            feature_schema_hash=SPEC.schema_hash(),
            metrics={"rank_ic": 0.4, "naive_rank_ic": 0.0, "objective": 0.4},
            params=CFG.to_dict(),
            artifact_path="/nowhere",
            artifact_sha256="0" * 64,
            created_at=made,
        )
        row = load_model_row(con, "fc-1")
    assert (first.inserted, again.inserted, again.updated, again.unchanged) == (3, 0, 0, 3)
    assert got["forecast"].to_list() == [-0.02, 0.03] and got["symbol"].to_list() == [COIN] * 2
    assert none_promoted.height == 0 and none_promoted.columns == ["ts", "symbol", "forecast"]
    assert row is not None and row["kind"] == "xgb_forecaster" and row["symbol"] == COIN
    assert row["feature_schema_hash"] == SPEC.schema_hash() and row["stage"] == "candidate"
    assert row["metrics"]["naive_rank_ic"] == 0.0


# ---- the forecast as an agent feature ----


def test_existing_feature_hashes_are_unchanged() -> None:
    # Pinned before `forecast` existed: registered models store these hashes.
    assert FeatureSpec().schema_hash() == "5ef56205996571e0"
    assert FeatureSpec(symbols=("BTC/USD",), sentiment=True).schema_hash() == "e6df3dee3395cbec"
    assert "forecast" not in FeatureSpec().to_dict()


def test_forecast_feature_joins_as_of_each_bar() -> None:
    spec = FeatureSpec(symbols=(COIN,), sentiment=True, forecast=True)
    assert spec.names()[-2:] == ["sentiment", "forecast"]
    assert spec.schema_hash() != FeatureSpec(symbols=(COIN,), sentiment=True).schema_hash()
    assert FeatureSpec.from_dict(spec.to_dict()) == spec
    bars = bar_frame(minutes(10), np.linspace(100, 101, 10))
    forecasts = pl.DataFrame(
        {
            "ts": [T0 + timedelta(minutes=3), T0 + timedelta(minutes=7)],
            "symbol": [COIN, COIN],
            "forecast": [0.5, -0.25],
        }
    ).vstack(pl.DataFrame({"ts": [T0], "symbol": ["ETH/USD"], "forecast": [9.0]}))
    got = compute_features(bars, spec, forecasts=forecasts)["forecast"].to_list()
    assert got == [0.0] * 3 + [0.5] * 4 + [-0.25] * 3
    absent = compute_features(bars, spec)["forecast"].to_list()
    assert absent == [0.0] * 10
