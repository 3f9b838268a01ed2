"""Per-coin XGBoost forecaster of the log return `horizon` minutes ahead: rows, labels, purged CV, point-in-time forecasts, artifacts.

Time conventions (those of models/features.py): a row stamped t is a point of a coarse
grid (every `every_minutes`, aligned to the Unix epoch); its features are those of the
newest bar starting at or before t, so they are known once that bar has closed. Its label
is log(close_asof(t + h) / close_asof(t)), where close_asof(x) is the close of the newest
bar starting at or before x: the label of row t is KNOWN at time t + h and not before.
Rows whose t + h lies after the last bar are unlabeled (null), never dropped: they are
exactly the rows a forecast is wanted for.

Cross-validation is walk-forward (expanding, past-only) by default: each validation block
[a, b) is scored by a model trained on rows whose label window [t, t + h] ends before a
(the purge), so no training label overlaps a validation label. `scheme="purged_kfold"`
also trains on rows after the block, starting more than `embargo >= h` after its last row.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
import xgboost as xgb
from scipy.stats import rankdata, spearmanr
from scipy.stats import t as student_t

from models.errors import ModelLoadError
from models.evaluation import overlapping_mean_test
from models.features import FeatureSpec, compute_features

DEFAULT_HORIZON_MINUTES = 40_320
"""Four weeks: the forecast horizon of the coin forecasters."""
MODEL_FILE = "model.json"
META_FILE = "meta.json"
_MIN_US = 60_000_000
_DAY_US = 1440 * _MIN_US

Scheme = Literal["walk_forward", "purged_kfold"]


def forecaster_spec(coin: str, *, sentiment: bool = True) -> FeatureSpec:
    """The forecaster's features of one coin: returns over 1 hour to 4 weeks, volatility over an hour and a day, sentiment."""
    return FeatureSpec(
        symbols=(coin,),
        return_windows=(60, 240, 1440, 10_080, 40_320),
        vol_windows=(60, 1440),
        volume_window=1440,
        sentiment=sentiment,
    )


@dataclass(frozen=True)
class ForecasterConfig:
    """How a forecaster is built, cross-validated and refitted; every field has a safe default."""

    horizon_minutes: int = DEFAULT_HORIZON_MINUTES
    """Forecast horizon: the label is the log return from t to t + horizon."""
    every_minutes: int = 60
    """Row grid: one row every this many minutes (aligned to the epoch), not one per bar."""
    n_folds: int = 4
    """Validation blocks of the cross-validation."""
    scheme: Scheme = "walk_forward"
    """walk_forward: train on the purged past only; purged_kfold: also on embargoed later rows."""
    embargo_minutes: int | None = None
    """purged_kfold: rows after a validation block are used only this long after its last row (None = horizon; never less)."""
    refit_every_days: float = 7.0
    """Point-in-time forecasts: a new model every this many days (boundaries aligned to the epoch)."""
    min_train_rows: int = 200
    """Fewer labeled training rows than this: no model (no forecast, fold skipped)."""
    n_estimators: int = 200
    """Boosting rounds."""
    max_depth: int = 3
    """Depth of each tree."""
    learning_rate: float = 0.05
    """Shrinkage per round."""
    subsample: float = 0.8
    """Share of rows each tree sees (drawn from `seed`)."""
    colsample_bytree: float = 0.8
    """Share of features each tree sees (drawn from `seed`)."""
    min_child_weight: float = 20.0
    """Minimum rows (hessian) per leaf: overlapping labels make neighbouring rows near copies."""
    reg_lambda: float = 1.0
    """L2 penalty on leaf weights."""
    seed: int = 0
    """XGBoost seed: the same rows, config and seed give the same model."""
    n_jobs: int = 2
    """XGBoost threads."""

    @property
    def embargo(self) -> int:
        """The embargo in minutes: at least the horizon."""
        e = self.horizon_minutes if self.embargo_minutes is None else self.embargo_minutes
        if e < self.horizon_minutes:
            raise ValueError(
                f"embargo_minutes={e} is shorter than the horizon ({self.horizon_minutes}): "
                "later training labels would overlap the validation block"
            )
        return e

    def xgb_params(self) -> dict[str, Any]:
        """XGBoost's native parameters (hist trees, fixed seed and threads)."""
        return {
            "objective": "reg:squarederror",
            "tree_method": "hist",
            "max_depth": self.max_depth,
            "eta": self.learning_rate,
            "subsample": self.subsample,
            "colsample_bytree": self.colsample_bytree,
            "min_child_weight": self.min_child_weight,
            "lambda": self.reg_lambda,
            "seed": self.seed,
            "nthread": self.n_jobs,
            "verbosity": 0,
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---- rows and labels (pure) ----


def _as_utc_us(col: str = "ts") -> pl.Expr:
    return pl.col(col).cast(pl.Datetime("us", "UTC"))


def compute_labels(rows: pl.DataFrame, bars: pl.DataFrame, horizon_minutes: int) -> pl.DataFrame:
    """rows (ts, close) plus `label` = log(close_asof(ts + h) / close) and `label_end` = ts + h.

    `bars` (ts, close) are the traded symbol's bars; close_asof(x) is the close of the
    newest bar starting at or before x. A row whose ts + h is after the last bar gets a
    null label (unlabeled, kept). Pure; row order and count are those of `rows`.
    """
    prices = bars.select(_as_utc_us("ts").alias("_end_bar"), pl.col("close").alias("_end_close"))
    prices = prices.sort("_end_bar")
    if prices.height == 0:
        raise ValueError("no bars to label rows with")
    last = prices.get_column("_end_bar")[-1]
    h = pl.duration(minutes=horizon_minutes)
    out = (
        rows.with_columns(_as_utc_us("ts"), pl.int_range(pl.len()).alias("_order"))
        .with_columns((pl.col("ts") + h).alias("label_end"))
        .sort("label_end")
        .join_asof(prices, left_on="label_end", right_on="_end_bar", strategy="backward")
        .sort("_order")
    )
    label = (pl.col("_end_close") / pl.col("close")).log()
    return out.with_columns(
        pl.when(pl.col("label_end") <= last).then(label).otherwise(None).alias("label")
    ).drop("_order", "_end_bar", "_end_close")


def compute_forecast_rows(
    bars: pl.DataFrame,
    spec: FeatureSpec,
    config: ForecasterConfig,
    sentiment: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """The forecaster's rows of one coin: features on the grid, labels, warm-up flag.

    Columns: ts (grid point), symbol, bar_ts (the bar whose features the row carries: the
    newest one starting in (ts - every, ts]; grid points with no such bar have no row),
    close, spec.names() as Float32, label (Float64, null where not yet known), label_end,
    warm (True once the longest feature window is filled; training uses warm rows only).

    Point in time: a row depends on bars starting at or before its ts (features) and at or
    before label_end (label) only, so appending later bars changes no existing feature and
    no existing non-null label, and only adds rows.
    """
    features = compute_features(bars, spec, sentiment).with_columns(
        _as_utc_us("ts"), pl.int_range(pl.len()).alias("_bar_index")
    )
    step = config.every_minutes * _MIN_US
    ts_us = features.get_column("ts").dt.epoch("us")
    first, last = int(ts_us.min()), int(ts_us.max())  # type: ignore[arg-type]
    g0 = -(-first // step) * step
    grid = pl.DataFrame(
        {"ts": pl.Series(np.arange(g0, last + 1, step, dtype=np.int64)).cast(pl.Datetime("us"))}
    ).with_columns(pl.col("ts").dt.replace_time_zone("UTC"))
    names = spec.names()
    window = max((*spec.return_windows, *spec.vol_windows, spec.volume_window))
    closes = (
        bars.filter(pl.col("symbol") == spec.traded).select(_as_utc_us("ts"), "close").sort("ts")
    )
    sampled = (
        grid.join_asof(
            features.select(pl.col("ts").alias("bar_ts"), "_bar_index", *names).join(
                closes.rename({"ts": "bar_ts"}), on="bar_ts"
            ),
            left_on="ts",
            right_on="bar_ts",
            strategy="backward",
            tolerance=timedelta(microseconds=step - 1),
        )
        .filter(pl.col("bar_ts").is_not_null())
        .with_columns(
            pl.lit(spec.traded).alias("symbol"),
            (pl.col("_bar_index") >= window).alias("warm"),
        )
    )
    labelled = compute_labels(sampled, closes, config.horizon_minutes)
    return labelled.select(
        "ts",
        "symbol",
        "bar_ts",
        "close",
        *(pl.col(n).cast(pl.Float32) for n in names),
        "label",
        "label_end",
        "warm",
    )


def training_rows(rows: pl.DataFrame) -> pl.DataFrame:
    """The rows a model may learn from: warm and labeled, in time order."""
    return rows.filter(pl.col("warm") & pl.col("label").is_not_null()).sort("ts")


# ---- cross-validation ----


@dataclass(frozen=True)
class Fold:
    """One validation block and the rows allowed to train for it (indices into the rows given)."""

    index: int
    train: np.ndarray
    valid: np.ndarray


def purged_folds(
    ts: Sequence[Any] | pl.Series | np.ndarray,
    horizon_minutes: int,
    n_folds: int,
    *,
    scheme: Scheme = "walk_forward",
    embargo_minutes: int | None = None,
    min_train_rows: int = 1,
) -> list[Fold]:
    """Folds over time-sorted row times whose training label windows never overlap validation ones.

    The rows are cut into contiguous blocks of (nearly) equal count: n_folds + 1 for
    walk_forward (the first block only ever trains), n_folds for purged_kfold. For a
    validation block whose first row is at a and last at z, a training row t satisfies
    t + h < a (purge: its window [t, t + h] ends before the block starts) or, for
    purged_kfold only, t > z + embargo with embargo >= h (its window starts after every
    validation window [t', t' + h] ends). Folds with fewer than min_train_rows training
    rows are left out.
    """
    t = _to_us(ts)
    if t.size and np.any(np.diff(t) < 0):
        raise ValueError("row times must be sorted ascending")
    h = horizon_minutes * _MIN_US
    embargo = horizon_minutes if embargo_minutes is None else embargo_minutes
    if embargo < horizon_minutes:
        raise ValueError(
            f"embargo ({embargo} min) must be at least the horizon ({horizon_minutes})"
        )
    n_blocks = n_folds + 1 if scheme == "walk_forward" else n_folds
    if n_folds < 1 or t.size < n_blocks:
        return []
    blocks = np.array_split(np.arange(t.size), n_blocks)
    valid_blocks = blocks[1:] if scheme == "walk_forward" else blocks
    folds: list[Fold] = []
    for k, valid in enumerate(valid_blocks):
        a, z = t[valid[0]], t[valid[-1]]
        before = t + h < a
        after = t > z + embargo * _MIN_US if scheme == "purged_kfold" else np.zeros_like(before)
        train = np.nonzero(before | after)[0]
        if train.size >= min_train_rows:
            folds.append(Fold(k, train, valid))
    return folds


def _to_us(ts: Sequence[Any] | pl.Series | np.ndarray) -> np.ndarray:
    s = ts if isinstance(ts, pl.Series) else pl.Series(ts)
    if s.dtype == pl.Int64:
        return s.to_numpy()
    return s.cast(pl.Datetime("us", "UTC")).dt.epoch("us").to_numpy()


# ---- metrics ----


def directional_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    """Share of rows whose forecast has the sign of the outcome; a zero forecast or outcome scores one half."""
    agree = np.sign(pred) * np.sign(y)
    return float(np.mean(np.where(agree == 0, 0.5, agree > 0)))


def rank_ic(y: np.ndarray, pred: np.ndarray) -> float:
    """Spearman rank correlation of forecast and outcome; 0.0 for a constant forecast (it ranks nothing)."""
    if y.size < 2 or np.ptp(pred) == 0 or np.ptp(y) == 0:
        return 0.0
    return float(spearmanr(pred, y).statistic)


def forecast_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """RMSE, directional accuracy and rank IC of `pred`, each beside the naive zero-return forecast's."""
    y = np.asarray(y, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    zero = np.zeros_like(y)
    return {
        "n": float(y.size),
        "rmse": float(np.sqrt(np.mean((pred - y) ** 2))),
        "naive_rmse": float(np.sqrt(np.mean(y**2))),
        "directional_accuracy": directional_accuracy(y, pred),
        "naive_directional_accuracy": directional_accuracy(y, zero),
        "rank_ic": rank_ic(y, pred),
        "naive_rank_ic": 0.0,
    }


def rank_ic_terms(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Per-row products of the standardised ranks of outcome and forecast: their mean is the rank IC.

    Spearman's rho is the Pearson correlation of the ranks, i.e. the mean of these products
    (ranks standardised with the population std); a constant side ranks nothing: all zeros.
    """
    y = np.asarray(y, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    if y.size < 2 or np.ptp(pred) == 0 or np.ptp(y) == 0:
        return np.zeros(y.size, dtype=np.float64)
    ry, rp = rankdata(y), rankdata(pred)
    return ((ry - ry.mean()) / ry.std()) * ((rp - rp.mean()) / rp.std())


def rank_ic_test(y: np.ndarray, pred: np.ndarray, label_horizon: int) -> dict[str, float]:
    """Is the out-of-fold rank IC > 0, given labels that overlap ``label_horizon`` rows?

    The Hansen-Hodrick t-test (models.evaluation.overlapping_mean_test) of the mean of
    :func:`rank_ic_terms`; its t is read against Student's t with (independent labels - 1)
    degrees of freedom rather than rows - 1, because with a 4-week label on hourly rows a
    year holds only about 13 independent labels and the HAC variance is itself that noisy.
    Returns rank_ic_t, rank_ic_p (one-sided, H1: IC > 0), rank_ic_n (rows),
    rank_ic_label_horizon (rows) and rank_ic_independent_labels (rows / horizon).
    """
    terms = rank_ic_terms(y, pred)
    test = overlapping_mean_test(terms, label_horizon)
    independent = terms.size / label_horizon
    p = float("nan")
    if np.isfinite(test.t_stat) and independent >= 2.0:
        p = float(student_t.sf(test.t_stat, df=independent - 1.0))
    return {
        "rank_ic_t": float(test.t_stat),
        "rank_ic_p": p,
        "rank_ic_n": float(terms.size),
        "rank_ic_label_horizon": float(label_horizon),
        "rank_ic_independent_labels": float(independent),
    }


# ---- training and cross-validation ----


def _matrix(rows: pl.DataFrame, names: Sequence[str]) -> np.ndarray:
    return rows.select(pl.col(n).cast(pl.Float32) for n in names).to_numpy()


def train_booster(
    x: np.ndarray, y: np.ndarray, names: Sequence[str], config: ForecasterConfig
) -> xgb.Booster:
    """A booster fitted on (x, y); deterministic for the same data, config and seed."""
    dtrain = xgb.DMatrix(
        np.ascontiguousarray(x, dtype=np.float32), label=y, feature_names=list(names)
    )
    return xgb.train(config.xgb_params(), dtrain, num_boost_round=config.n_estimators)


def predict_booster(booster: xgb.Booster, x: np.ndarray) -> np.ndarray:
    """Forecasts (float64) for the rows of x, in the booster's feature order."""
    if x.shape[0] == 0:
        return np.zeros(0, dtype=np.float64)
    out = booster.inplace_predict(np.ascontiguousarray(x, dtype=np.float32))
    return np.asarray(out, dtype=np.float64)


@dataclass
class CVReport:
    """Out-of-fold metrics: per fold and over all validation rows, each beside the zero forecast."""

    folds: list[dict[str, Any]] = field(default_factory=list)
    overall: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The registry's metrics: overall figures at the top level (`objective` = rank IC), folds beside."""
        mean_ic = float(np.mean([f["rank_ic"] for f in self.folds])) if self.folds else 0.0
        return {
            **self.overall,
            "mean_fold_rank_ic": mean_ic,
            "objective": self.overall.get("rank_ic", 0.0),
            "folds": self.folds,
        }


def cross_validate(rows: pl.DataFrame, names: Sequence[str], config: ForecasterConfig) -> CVReport:
    """Purged walk-forward (or purged k-fold) CV on the warm, labeled rows; see purged_folds()."""
    data = training_rows(rows)
    folds = purged_folds(
        data.get_column("ts"),
        config.horizon_minutes,
        config.n_folds,
        scheme=config.scheme,
        embargo_minutes=config.embargo,
        min_train_rows=config.min_train_rows,
    )
    x, y = _matrix(data, names), data.get_column("label").to_numpy()
    ts = data.get_column("ts")
    report = CVReport()
    ys: list[np.ndarray] = []
    preds: list[np.ndarray] = []
    for fold in folds:
        booster = train_booster(x[fold.train], y[fold.train], names, config)
        pred = predict_booster(booster, x[fold.valid])
        ys.append(y[fold.valid])
        preds.append(pred)
        report.folds.append(
            {
                "fold": fold.index,
                "train_rows": int(fold.train.size),
                "valid_start": str(ts[int(fold.valid[0])]),
                "valid_end": str(ts[int(fold.valid[-1])]),
                **forecast_metrics(y[fold.valid], pred),
            }
        )
    if ys:
        y_all, pred_all = np.concatenate(ys), np.concatenate(preds)
        # Labels span horizon_minutes on a grid of every_minutes: that many rows overlap.
        horizon_rows = max(1, -(-config.horizon_minutes // config.every_minutes))
        report.overall = {
            **forecast_metrics(y_all, pred_all),
            **rank_ic_test(y_all, pred_all, horizon_rows),
        }
    return report


@dataclass
class ForecasterFit:
    """A forecaster trained on every warm labeled row, with its CV report and artifact metadata."""

    booster: xgb.Booster
    spec: FeatureSpec
    config: ForecasterConfig
    cv: CVReport
    meta: dict[str, Any]


def train_forecaster(
    rows: pl.DataFrame, spec: FeatureSpec, config: ForecasterConfig
) -> ForecasterFit:
    """CV on `rows` (from compute_forecast_rows), then one model on all its warm labeled rows.

    Raises ValueError when fewer than config.min_train_rows rows are labeled.
    """
    names = spec.names()
    data = training_rows(rows)
    if data.height < config.min_train_rows:
        raise ValueError(
            f"{spec.traded}: {data.height} labeled rows, fewer than min_train_rows="
            f"{config.min_train_rows}; the {config.horizon_minutes}-minute outcome of the "
            "rest is not known yet"
        )
    cv = cross_validate(rows, names, config)
    booster = train_booster(
        _matrix(data, names), data.get_column("label").to_numpy(), names, config
    )
    meta = {
        "symbol": spec.traded,
        "horizon_minutes": config.horizon_minutes,
        "config": config.to_dict(),
        "train_start": str(data.get_column("ts")[0]),
        "train_end": str(data.get_column("ts")[-1]),
        "labels_known_through": str(data.get_column("label_end")[-1]),
        "train_rows": data.height,
        "metrics": cv.to_dict(),
        "xgboost_version": xgb.__version__,
    }
    return ForecasterFit(booster, spec, config, cv, meta)


# ---- point-in-time forecasts ----


def walk_forward_forecasts(
    rows: pl.DataFrame,
    spec: FeatureSpec,
    config: ForecasterConfig,
    *,
    since: datetime | None = None,
) -> pl.DataFrame:
    """Point-in-time forecasts for every row (labeled or not): ts, symbol, forecast, trained_through.

    Refit boundaries T lie every config.refit_every_days from the Unix epoch. A row at t
    in [T, T + period) is forecast by a model trained on the warm rows t' with
    t' + h <= T <= t: labels that were known at T, from bars that existed at T.
    `trained_through` is T; `forecast` is null while fewer than min_train_rows such rows
    exist. Each block's model depends only on rows before T, so appending later bars
    changes no forecast already made. `since` (a UTC datetime) limits the output, and the
    refits, to rows at or after it; those rows come out exactly as in a full run.
    """
    names = spec.names()
    period = round(config.refit_every_days * _DAY_US)
    if period <= 0:
        raise ValueError("refit_every_days must be positive")
    h = config.horizon_minutes * _MIN_US
    frame = rows.sort("ts").with_columns(
        ((pl.col("ts").dt.epoch("us") // period) * period).alias("_block")
    )
    if since is not None:
        frame = frame.filter(pl.col("ts") >= pl.lit(since).cast(pl.Datetime("us", "UTC")))
    train = training_rows(rows).with_columns((pl.col("ts").dt.epoch("us") + h).alias("_known_us"))
    train_known = train.get_column("_known_us").to_numpy()
    train_x, train_y = _matrix(train, names), train.get_column("label").to_numpy()
    out: list[pl.DataFrame] = []
    for (block,), part in frame.group_by(["_block"], maintain_order=True):
        t_refit = int(block)
        usable = train_known <= t_refit
        forecast: list[float | None]
        if int(usable.sum()) >= config.min_train_rows:
            booster = train_booster(train_x[usable], train_y[usable], names, config)
            forecast = predict_booster(booster, _matrix(part, names)).tolist()
        else:
            forecast = [None] * part.height
        out.append(
            part.select("ts", "symbol").with_columns(
                pl.Series("forecast", forecast, dtype=pl.Float64),
                pl.lit(t_refit)
                .cast(pl.Datetime("us"))
                .dt.replace_time_zone("UTC")
                .alias("trained_through"),
            )
        )
    if not out:
        return pl.DataFrame(
            schema={
                "ts": pl.Datetime("us", "UTC"),
                "symbol": pl.String(),
                "forecast": pl.Float64(),
                "trained_through": pl.Datetime("us", "UTC"),
            }
        )
    return pl.concat(out)


# ---- artifacts: XGBoost's own JSON format + JSON metadata, sha256 checked on load ----


def forecaster_sha256(directory: Path) -> str:
    """sha256 over the booster file and the metadata, in a fixed order (names included)."""
    digest = hashlib.sha256()
    for name in (MODEL_FILE, META_FILE):
        path = directory / name
        if not path.exists():
            raise ModelLoadError(f"forecaster artifact {directory} lacks {name}")
        digest.update(name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def save_forecaster(
    directory: Path, booster: xgb.Booster, spec: FeatureSpec, meta: dict[str, Any]
) -> str:
    """Write the booster (XGBoost JSON) and meta.json (spec, its hash, feature names + `meta`); returns the sha256."""
    directory.mkdir(parents=True, exist_ok=True)
    booster.save_model(str(directory / MODEL_FILE))
    full = {
        **meta,
        "kind": "xgb_forecaster",
        "feature_spec": spec.to_dict(),
        "feature_schema_hash": spec.schema_hash(),
        "feature_names": spec.names(),
    }
    (directory / META_FILE).write_text(json.dumps(full, indent=2, sort_keys=True, default=str))
    return forecaster_sha256(directory)


@dataclass
class Forecaster:
    """A loaded forecaster: predict() takes rows from compute_forecast_rows."""

    booster: xgb.Booster
    spec: FeatureSpec
    meta: dict[str, Any]

    @property
    def horizon_minutes(self) -> int:
        return int(self.meta["horizon_minutes"])

    def predict(self, rows: pl.DataFrame) -> np.ndarray:
        """Forecast log returns over the horizon, one per row, from the spec's feature columns."""
        return predict_booster(self.booster, _matrix(rows, self.spec.names()))


def load_forecaster(
    directory: Path, expected_sha256: str, running_spec: FeatureSpec | None = None
) -> Forecaster:
    """Load after checking the files' sha256 and, when given, the running pipeline's feature hash.

    Raises ModelLoadError for a missing or altered artifact, or one trained on other features;
    nothing is parsed before the sha256 matches.
    """
    if not directory.exists():
        raise ModelLoadError(f"forecaster artifact {directory} does not exist")
    actual = forecaster_sha256(directory)
    if actual != expected_sha256:
        raise ModelLoadError(
            f"forecaster artifact {directory} does not match its registered sha256 "
            f"(expected {expected_sha256[:12]}..., found {actual[:12]}...); refusing to load it"
        )
    try:
        meta = json.loads((directory / META_FILE).read_text())
        spec = FeatureSpec.from_dict(meta["feature_spec"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ModelLoadError(
            f"forecaster artifact {directory} has unreadable metadata: {exc}"
        ) from None
    if running_spec is not None and spec.schema_hash() != running_spec.schema_hash():
        raise ModelLoadError(
            f"forecaster in {directory} was trained on features {spec.schema_hash()} but this "
            f"pipeline computes {running_spec.schema_hash()}; retrain it"
        )
    booster = xgb.Booster(params={"nthread": 1})
    try:
        booster.load_model(str(directory / MODEL_FILE))  # XGBoost JSON only: never a pickle
    except xgb.core.XGBoostError as exc:
        first = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise ModelLoadError(f"forecaster artifact {directory} is unreadable: {first}") from None
    if list(booster.feature_names or []) != spec.names():
        raise ModelLoadError(f"forecaster in {directory}: booster features differ from its spec")
    return Forecaster(booster, spec, meta)
