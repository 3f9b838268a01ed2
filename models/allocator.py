"""SVM allocator across the coin agents, learnt out of sample on the P&L they trade: labels, calibrated SVC, capped long-only weights, tuning, pickle-free artifacts.

One row of the input frame is one coin at one daily period, with what was known at that period::

    period (datetime), symbol, q_adv, forecast, sentiment, vol, drawdown,
    next_return, next_trade_return, agent_id, agent_trained_until

- ``q_adv``: the coin agent's Q(long) - Q(flat) over the day ending at ``period``;
  ``forecast``: its predicted 4-week log return; ``sentiment``; ``vol``: recent
  volatility; ``drawdown``: the coin's current fall from its running peak over a window.
- ``next_trade_return``: what the coin's agent earned TRADING the day that starts at
  ``period`` (its greedy positions, its asset class's costs: the evaluation books of
  models.train, bars compounded to days -- models.portfolio.daily_trading_returns). This is
  the P&L the allocator's weight scales in crypto-trading, so it is the objective: labels,
  the tuning score, the evaluation table and the gate's stream all read it.
- ``next_return``: the coin's own simple return over that day (buy-and-hold), read only
  for the coins' buy-and-hold baseline.
- ``agent_id``, ``agent_trained_until``: the agent the row's inputs and trading come from
  and the (exclusive) end of its training data. The allocator is fitted and judged only on
  rows whose input day ``[period - 1 day, period)`` starts at or after that end
  (:func:`check_out_of_sample`, :class:`InSampleRowsError`): an agent's outputs on its own
  training days are overfit and would teach the allocator to trust them.

Outcomes (the two ``next_*`` columns) are never inputs; both are null for the newest period.

Label: ``next_trade_return > cost_bps / 1e4`` (the agent's day beats the cost of a weight
round trip). Model: ``Pipeline(StandardScaler, SVC(kernel="rbf"))`` fitted on the older part
of the training periods, then one Platt sigmoid fitted on the newer part
(``CalibratedClassifierCV`` over a ``FrozenEstimator``), so the whole model is a handful of
arrays and two numbers that :func:`save_allocator` writes as npz + JSON and
:class:`ExportedAllocator` evaluates with numpy alone.

Weights (per period, long-only): coins whose probability is >= ``threshold`` share the book
in proportion to their probabilities, each capped at ``cap``; what the caps cut off, and
everything when no coin passes, stays in cash (no redistribution: the cap is a risk limit,
not a target). A coin's weight is the fraction of equity its agent trades with.

The allocator's daily return is ``sum(weight * next_trade_return)`` minus half the
round-trip cost per unit of weight changed (entry included, final exit not; charged as if
the agent held its whole allocation at the change, an upper bound), ignoring intra-period
drift.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl
from scipy.special import expit
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from core import metrics
from models.errors import ModelLoadError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

FEATURES: tuple[str, ...] = ("q_adv", "forecast", "sentiment", "vol", "drawdown")
"""Model inputs, in the column order of the feature matrix (and of the exported arrays)."""

OUTCOMES: tuple[str, ...] = ("next_return", "next_trade_return")
"""The day's outcomes: the coin's buy-and-hold return and its agent's trading return (never inputs)."""

PROVENANCE: tuple[str, ...] = ("agent_id", "agent_trained_until")
"""Which agent a row comes from and the end of its training data (out-of-sample check)."""

INPUT_COLUMNS: tuple[str, ...] = ("period", "symbol", *FEATURES, *OUTCOMES, *PROVENANCE)

INPUT_SPAN = timedelta(days=1)
"""A row's inputs come from the day [period - INPUT_SPAN, period) (models.portfolio's daily panel)."""

FORMAT = "svm-allocator/1"
ARRAYS = "arrays.npz"
META = "meta.json"
_ARRAY_NAMES = ("scaler_mean", "scaler_scale", "support_vectors", "dual_coef")

ALLOCATOR = "allocator"
EQUAL_WEIGHT_AGENTS = "equal_weight_agents"
BUY_AND_HOLD = "buy_and_hold"
CASH = "cash"
BASELINES: tuple[str, ...] = (EQUAL_WEIGHT_AGENTS, BUY_AND_HOLD, CASH)
"""What the allocator must beat: the agents' trading at equal weights, equal money in the coins
left to drift (buy-and-hold), and cash."""

METRIC_KEYS: tuple[str, ...] = (
    "total_return",
    "cagr",
    "max_drawdown",
    "calmar",
    "sharpe",
    "exposure",
)
"""Columns of the evaluation tables besides ``strategy``; exposure = mean invested fraction."""


@dataclass(frozen=True)
class AllocatorConfig:
    """How the allocator is labelled, tuned and evaluated (parsed once by the caller)."""

    cost_bps: float = 20.0
    """Round-trip cost of a weight change in basis points: label = next_trade_return beats it;
    portfolios pay half of it per unit of weight changed (the coins' buy-and-hold on entry)."""
    c_grid: tuple[float, ...] = (0.3, 1.0, 3.0)
    """SVC regularisation C values tried."""
    gamma_grid: tuple[float, ...] = (0.05, 0.2, 0.8)
    """RBF gamma values tried, on standardised inputs (0.2 = sklearn's 'scale' for 5 unit-variance features)."""
    threshold_grid: tuple[float, ...] = (0.45, 0.5, 0.55, 0.6, 0.65)
    """Minimum calibrated probability of beating costs for a coin to get any weight."""
    cap_grid: tuple[float, ...] = (0.1, 0.2, 0.3, 0.5)
    """Per-coin weight caps tried."""
    validation_fraction: float = 0.3
    """Share of the (time-ordered) labelled periods, the newest, used to choose the parameters."""
    calibration_fraction: float = 0.25
    """Share of the periods a model is fitted on, the newest, kept apart for the Platt sigmoid."""
    min_drawdown: float = 0.02
    """Drawdown floor of the tuning score cagr / max(max_drawdown, min_drawdown): a nearly flat
    curve cannot win on a tiny denominator, and all-cash scores 0."""
    periods_per_year: float = 52.0
    """Periods per year for CAGR and Sharpe (52 for weekly periods, 365 for daily crypto)."""
    judge_fraction: float = 0.4
    """Share of the out-of-sample periods, the newest, on which a fitted allocator is judged
    (:func:`split_out_of_sample`); the older rest is what it is tuned and fitted on."""
    refit: bool = False
    """After tuning, refit the chosen C/gamma on all labelled periods (same train/calibration
    proportions). Off by default: the model returned is then exactly the one the validation
    metrics describe, and its threshold was chosen on its own calibrated probabilities."""

    def __post_init__(self) -> None:
        fractions = (self.validation_fraction, self.calibration_fraction, self.judge_fraction)
        if not all(0.0 < f < 1.0 for f in fractions):
            raise ValueError(
                "validation_fraction, calibration_fraction and judge_fraction must lie in (0, 1)"
            )
        if not all(0.0 < cap <= 1.0 for cap in self.cap_grid):
            raise ValueError(f"caps must lie in (0, 1], got {self.cap_grid}")
        if not all(0.0 <= t <= 1.0 for t in self.threshold_grid):
            raise ValueError(f"thresholds must lie in [0, 1], got {self.threshold_grid}")
        if not (self.c_grid and self.gamma_grid and self.threshold_grid and self.cap_grid):
            raise ValueError("every tuning grid needs at least one value")
        if self.cost_bps < 0.0 or self.min_drawdown <= 0.0 or self.periods_per_year <= 0.0:
            raise ValueError("cost_bps must be >= 0, min_drawdown and periods_per_year > 0")


@dataclass(frozen=True)
class AllocatorParams:
    """The chosen hyper-parameters; they travel with the model."""

    c: float
    gamma: float
    threshold: float
    cap: float
    cost_bps: float


# --------------------------------------------------------------------------- pure pieces


class InSampleRowsError(ValueError):
    """Allocator rows whose inputs an agent produced on (or before) the end of its own training data."""


def check_out_of_sample(frame: pl.DataFrame) -> None:
    """Refuse rows whose input day starts before their agent's training end (InSampleRowsError).

    An agent's q_adv and trading on the days it was trained on are in-sample: fitting the
    allocator on them teaches it to trust overfit outputs, judging it on them flatters it.
    The caller chooses the out-of-sample days; this refuses, it never drops rows silently.
    """
    missing = [name for name in ("period", "symbol", *PROVENANCE) if name not in frame.columns]
    if missing:
        raise ValueError(f"allocator frame lacks column(s) {missing}")
    bad = frame.filter(
        pl.col("agent_trained_until").is_null()
        | (pl.col("period") - INPUT_SPAN < pl.col("agent_trained_until"))
    )
    if bad.height:
        first = bad.sort("period").row(0, named=True)
        raise InSampleRowsError(
            f"{bad.height} allocator row(s) are in-sample for their agent (first: "
            f"{first['symbol']} inputs from {first['period'] - INPUT_SPAN}, agent "
            f"{first['agent_id']} trained until {first['agent_trained_until']}): "
            "the allocator learns and is judged only on out-of-sample agent outputs"
        )


def split_out_of_sample(
    frame: pl.DataFrame, judge_fraction: float
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(fit, judge): the nested walk-forward split of out-of-sample allocator rows, in time order.

    The agents were trained on earlier days; their outputs on the days after feed the
    allocator (every row is checked by :func:`check_out_of_sample`). Of those days, the
    older ``1 - judge_fraction`` are what the allocator is tuned and fitted on and the newer
    ``judge_fraction`` what it is judged on: its verdict then comes from days neither the
    agents nor the allocator saw, as it will trade. A fit row's outcome is its next day,
    which ends by the first judged period, so nothing the judged days reveal leaks into the
    fit. Rows of the newest period (outcome unknown) stay with the judged part, which
    ignores them. Needs at least three judged periods with a known outcome.
    """
    if not 0.0 < judge_fraction < 1.0:
        raise ValueError(f"judge_fraction must lie in (0, 1), got {judge_fraction}")
    check_out_of_sample(frame)
    known = (
        frame.filter(pl.col("next_trade_return").is_not_null()).get_column("period").unique().sort()
    )
    n_judge = max(3, round(known.len() * judge_fraction))
    if known.len() - n_judge < 1:
        raise ValueError(
            f"{known.len()} out-of-sample period(s) with a known outcome are too few "
            "to fit the allocator on some and judge it on three or more later ones"
        )
    start = known[known.len() - n_judge]
    return frame.filter(pl.col("period") < start), frame.filter(pl.col("period") >= start)


def compute_labels(frame: pl.DataFrame, cost_bps: float) -> pl.DataFrame:
    """``frame`` plus ``label``: 1 when next_trade_return > cost_bps / 1e4, 0 when not, null when unknown."""
    hurdle = cost_bps / 1e4
    return frame.with_columns(label=(pl.col("next_trade_return") > hurdle).cast(pl.Int8))


def _row_weights(proba: FloatArray, group: IntArray, threshold: float, cap: float) -> FloatArray:
    """Weights of rows grouped by period: p / sum(p of the period's selected rows), capped."""
    selected = np.isfinite(proba) & (proba >= threshold)
    share = np.where(selected, proba, 0.0)
    totals = np.bincount(group, weights=share)[group]
    weights = np.divide(share, totals, out=np.zeros_like(share), where=totals > 0.0)
    return np.minimum(weights, cap)


def compute_weights(frame: pl.DataFrame, threshold: float, cap: float) -> pl.DataFrame:
    """Long-only weights from probabilities: columns period, symbol, proba -> plus ``weight``.

    Within a period, coins with proba >= threshold get ``min(cap, p / sum of selected p)``;
    others get 0; the remainder (1 - sum of weights) is cash. Rows keep their order.
    """
    if not 0.0 < cap <= 1.0:
        raise ValueError(f"cap must lie in (0, 1], got {cap}")
    group = frame.get_column("period").rank("dense").cast(pl.Int64).to_numpy() - 1
    proba = frame.get_column("proba").cast(pl.Float64).fill_null(math.nan).to_numpy()
    return frame.with_columns(
        weight=pl.Series(_row_weights(proba, group.astype(np.int64), threshold, cap))
    )


def feature_matrix(frame: pl.DataFrame) -> FloatArray:
    """The inputs as an (n, 5) float64 matrix in :data:`FEATURES` order; refuses nulls and NaN."""
    missing = [name for name in FEATURES if name not in frame.columns]
    if missing:
        raise ValueError(f"allocator inputs lack column(s) {missing}")
    x = frame.select(pl.col(name).cast(pl.Float64) for name in FEATURES).to_numpy()
    x = np.asarray(x, dtype=np.float64)
    bad = ~np.isfinite(x)
    if bad.any():
        names = [FEATURES[j] for j in np.flatnonzero(bad.any(axis=0))]
        raise ValueError(f"allocator inputs hold null/NaN/inf values in {names}: fill them first")
    return x


@dataclass(frozen=True)
class _Panel:
    """Labelled rows as dense period x symbol matrices (missing coins: returns 0, not tradable).

    ``returns``: the coins' own next-day returns (buy-and-hold); ``trades``: their agents'
    next-day trading returns (what an allocator's weight scales).
    """

    periods: list[datetime]
    symbols: list[str]
    row_period: IntArray
    row_symbol: IntArray
    returns: FloatArray
    trades: FloatArray
    tradable: npt.NDArray[np.bool_]

    @classmethod
    def from_frame(cls, frame: pl.DataFrame) -> _Panel:
        if frame.select(pl.struct("period", "symbol").is_duplicated().any()).item():
            raise ValueError("the allocator frame holds duplicate (period, symbol) rows")
        if frame.select(pl.any_horizontal(pl.col(*OUTCOMES).is_null()).any()).item():
            raise ValueError(
                "evaluation needs next_return and next_trade_return on every row: "
                "drop the newest period"
            )
        periods = frame.get_column("period").unique().sort().to_list()
        symbols = sorted(frame.get_column("symbol").unique().to_list())
        row_period = frame.get_column("period").rank("dense").cast(pl.Int64).to_numpy() - 1
        symbol_index = {s: j for j, s in enumerate(symbols)}
        row_symbol = np.array(
            [symbol_index[s] for s in frame.get_column("symbol").to_list()], dtype=np.int64
        )
        shape = (len(periods), len(symbols))
        returns = np.zeros(shape)
        trades = np.zeros(shape)
        tradable = np.zeros(shape, dtype=bool)
        returns[row_period, row_symbol] = frame.get_column("next_return").to_numpy()
        trades[row_period, row_symbol] = frame.get_column("next_trade_return").to_numpy()
        tradable[row_period, row_symbol] = True
        return cls(
            periods, symbols, row_period.astype(np.int64), row_symbol, returns, trades, tradable
        )

    def matrix(self, values: FloatArray) -> FloatArray:
        out = np.zeros(self.returns.shape)
        out[self.row_period, self.row_symbol] = values
        return out


def _rebalanced_returns(weights: FloatArray, returns: FloatArray, cost_bps: float) -> FloatArray:
    """Per-period returns of ``weights`` (rows = periods) on ``returns`` (the agents' trading
    returns for the allocator), paying half the round trip per unit of weight changed."""
    previous = np.vstack([np.zeros((1, weights.shape[1])), weights[:-1]])
    turnover = np.abs(weights - previous).sum(axis=1)
    return np.asarray((weights * returns).sum(axis=1) - cost_bps / 2e4 * turnover)


def _buy_and_hold_returns(panel: _Panel, cost_bps: float) -> FloatArray:
    """Equal money in every coin at the start, never rebalanced (a coin absent a period earns 0)."""
    start = panel.tradable[0] if panel.tradable.size else np.zeros(0, dtype=bool)
    if not start.any():
        return np.zeros(len(panel.periods))
    wealth = np.cumprod(1.0 + panel.returns[:, start], axis=0).mean(axis=1)
    equity = np.concatenate(([1.0], wealth)) * (1.0 - cost_bps / 2e4)
    equity[0] = 1.0
    return metrics.returns_from_equity(equity)


def _summary(returns: FloatArray, exposure: float, periods_per_year: float) -> dict[str, float]:
    return {
        "total_return": metrics.total_return(returns),
        "cagr": metrics.cagr(returns, periods_per_year),
        "max_drawdown": metrics.max_drawdown(returns),
        "calmar": metrics.calmar(returns, periods_per_year),
        "sharpe": metrics.sharpe(returns, periods_per_year),
        "exposure": exposure,
    }


def _tuning_score(returns: FloatArray, periods_per_year: float, min_drawdown: float) -> float:
    growth = metrics.cagr(returns, periods_per_year)
    if not math.isfinite(growth):
        return -math.inf
    return growth / max(metrics.max_drawdown(returns), min_drawdown)


@dataclass(frozen=True)
class StrategyReturns:
    """Daily return streams of the allocator and its baselines over the same labelled periods."""

    periods: list[datetime]
    returns: dict[str, FloatArray]
    """:data:`ALLOCATOR`, each of :data:`BASELINES`, and ``agent:<symbol>`` (one agent's trading
    with the whole book, a coin absent a period earning 0)."""
    exposure: dict[str, float]
    """Mean invested fraction per strategy."""

    def table(self, periods_per_year: float) -> pl.DataFrame:
        """One row per strategy: ``strategy`` and :data:`METRIC_KEYS`."""
        rows = [
            {"strategy": name, **_summary(r, self.exposure[name], periods_per_year)}
            for name, r in self.returns.items()
        ]
        schema = {"strategy": pl.String, **dict.fromkeys(METRIC_KEYS, pl.Float64)}
        return pl.DataFrame(rows, schema=schema)


def _strategies(panel: _Panel, allocator_weights: FloatArray, cost_bps: float) -> StrategyReturns:
    """The allocator's traded P&L beside the agents at equal weights, the coins' buy-and-hold,
    cash, and each agent alone."""
    returns: dict[str, FloatArray] = {}
    exposure: dict[str, float] = {}

    def add(name: str, weights: FloatArray) -> None:
        exposure[name] = float(weights.sum(axis=1).mean()) if weights.size else math.nan
        returns[name] = _rebalanced_returns(weights, panel.trades, cost_bps)

    add(ALLOCATOR, allocator_weights)
    counts = panel.tradable.sum(axis=1, keepdims=True)
    add(
        EQUAL_WEIGHT_AGENTS,
        np.divide(panel.tradable, counts, out=np.zeros(panel.trades.shape), where=counts > 0),
    )
    returns[BUY_AND_HOLD] = _buy_and_hold_returns(panel, cost_bps)
    exposure[BUY_AND_HOLD] = 1.0
    returns[CASH] = np.zeros(len(panel.periods))
    exposure[CASH] = 0.0
    for j, symbol in enumerate(panel.symbols):
        alone = np.zeros(panel.trades.shape)
        alone[:, j] = panel.tradable[:, j].astype(np.float64)
        add(f"agent:{symbol}", alone)
    return StrategyReturns(panel.periods, returns, exposure)


# --------------------------------------------------------------------------- models


class Allocator(ABC):
    """Probabilities of beating costs per row, and the weights they make."""

    params: AllocatorParams

    @abstractmethod
    def predict_proba(self, frame: pl.DataFrame) -> FloatArray:
        """P(next_return beats the round-trip cost) for every row of ``frame``, in row order."""

    def weights(self, frame: pl.DataFrame) -> pl.DataFrame:
        """period, symbol, proba, weight for every row (row order kept); cash = 1 - sum per period."""
        proba = self.predict_proba(frame)
        scored = frame.select("period", "symbol").with_columns(proba=pl.Series(proba))
        return compute_weights(scored, self.params.threshold, self.params.cap)


@dataclass
class SklearnAllocator(Allocator):
    """The fitted scikit-learn model: ``calibrated`` wraps ``pipeline`` (scale -> svc) with one sigmoid."""

    pipeline: Any
    calibrated: Any
    params: AllocatorParams

    def predict_proba(self, frame: pl.DataFrame) -> FloatArray:
        proba = self.calibrated.predict_proba(feature_matrix(frame))
        positive = list(self.calibrated.classes_).index(1)
        return np.asarray(proba[:, positive], dtype=np.float64)


@dataclass
class ExportedAllocator(Allocator):
    """The same model as plain arrays: standardise, RBF kernel against the support vectors, sigmoid."""

    scaler_mean: FloatArray
    scaler_scale: FloatArray
    support_vectors: FloatArray
    dual_coef: FloatArray
    intercept: float
    gamma: float
    sigmoid_a: float
    sigmoid_b: float
    params: AllocatorParams
    meta: dict[str, Any] = field(default_factory=dict)

    def decision_function(self, frame: pl.DataFrame) -> FloatArray:
        """The SVC's signed distance (positive leans to 'beats costs'), as sklearn computes it."""
        z = (feature_matrix(frame) - self.scaler_mean) / self.scaler_scale
        sv = self.support_vectors
        sv_sq = np.einsum("ij,ij->i", sv, sv)
        out = np.empty(z.shape[0])
        for start in range(0, z.shape[0], 2048):  # bounds the (rows x support vectors) kernel block
            block = z[start : start + 2048]
            sq = np.einsum("ij,ij->i", block, block)[:, None] + sv_sq[None, :] - 2.0 * block @ sv.T
            out[start : start + 2048] = (
                np.exp(-self.gamma * np.maximum(sq, 0.0)) @ self.dual_coef + self.intercept
            )
        return out

    def predict_proba(self, frame: pl.DataFrame) -> FloatArray:
        f = self.decision_function(frame)
        return np.asarray(expit(-(self.sigmoid_a * f + self.sigmoid_b)), dtype=np.float64)


def export_allocator(model: SklearnAllocator) -> ExportedAllocator:
    """Read the arrays out of the fitted pipeline and its single Platt sigmoid."""
    scaler = model.pipeline.named_steps["scale"]
    svc = model.pipeline.named_steps["svc"]
    if svc.kernel != "rbf" or len(svc.classes_) != 2:
        raise ValueError("only a binary RBF SVC can be exported")
    fitted = model.calibrated.calibrated_classifiers_
    if len(fitted) != 1 or len(fitted[0].calibrators) != 1 or model.calibrated.method != "sigmoid":
        raise ValueError("export needs one sigmoid calibrator over a frozen (prefit) pipeline")
    sigmoid = fitted[0].calibrators[0]
    return ExportedAllocator(
        scaler_mean=np.asarray(scaler.mean_, dtype=np.float64),
        scaler_scale=np.asarray(scaler.scale_, dtype=np.float64),
        support_vectors=np.asarray(svc.support_vectors_, dtype=np.float64),
        # For a binary SVC sklearn's public dual_coef_/intercept_ already carry the sign of
        # decision_function (positive = classes_[1]), which is what the sigmoid was fitted on.
        dual_coef=np.asarray(svc.dual_coef_[0], dtype=np.float64),
        intercept=float(svc.intercept_[0]),
        gamma=float(svc._gamma),
        sigmoid_a=float(sigmoid.a_),
        sigmoid_b=float(sigmoid.b_),
        params=model.params,
    )


def _fit_model(
    frame: pl.DataFrame, c: float, gamma: float, calibration_fraction: float
) -> tuple[Pipeline, CalibratedClassifierCV]:
    """SVC on the older periods of ``frame``, Platt sigmoid on the newer ones (time order, no shuffle)."""
    periods = frame.get_column("period").unique().sort()
    n_cal = max(1, round(periods.len() * calibration_fraction))
    if periods.len() - n_cal < 1:
        raise ValueError("too few periods to keep a calibration slice apart from training")
    cal_start = periods[periods.len() - n_cal]
    parts = {
        "training": frame.filter(pl.col("period") < cal_start),
        "calibration": frame.filter(pl.col("period") >= cal_start),
    }
    for name, part in parts.items():
        if part.get_column("label").n_unique() < 2:
            raise ValueError(
                f"the {name} slice holds a single label: need coins that beat costs and coins that do not"
            )
    train, cal = parts["training"], parts["calibration"]
    pipeline = Pipeline([("scale", StandardScaler()), ("svc", SVC(kernel="rbf", C=c, gamma=gamma))])
    pipeline.fit(feature_matrix(train), train.get_column("label").to_numpy())
    if np.bincount(cal.get_column("label").to_numpy()).min() < 2:
        raise ValueError("the calibration slice needs two rows or more of each label")
    # The frozen pipeline predicts the same on every fold, so the split only decides how many
    # rows of each label the sigmoid needs: two (sklearn's default 5 would need five of each,
    # too many for a few weeks of out-of-sample days). The fitted sigmoid is the same.
    calibrated = CalibratedClassifierCV(FrozenEstimator(pipeline), method="sigmoid", cv=2)
    calibrated.fit(feature_matrix(cal), cal.get_column("label").to_numpy())
    return pipeline, calibrated


@dataclass(frozen=True)
class AllocatorFit:
    """What tuning produced: the model, its validation table and every grid point's score."""

    allocator: SklearnAllocator
    validation: pl.DataFrame
    """The scored model (before any refit) beside the baselines on the validation periods
    (:meth:`StrategyReturns.table`)."""
    grid: pl.DataFrame
    """c, gamma, threshold, cap, score and the allocator's validation metrics, best first."""
    split: dict[str, tuple[datetime, datetime]]
    """First and last period of the fit and validation parts."""

    @property
    def fitted_until(self) -> datetime:
        """The end of the newest outcome the allocator was tuned on (its last period + one day):
        a champion judged on days before this is judged in-sample."""
        return self.split["validation"][1] + INPUT_SPAN

    @property
    def params(self) -> AllocatorParams:
        return self.allocator.params


def _labelled(frame: pl.DataFrame, cost_bps: float) -> pl.DataFrame:
    """Out-of-sample rows (else InSampleRowsError) with a known outcome, labelled, in time order."""
    missing = [name for name in INPUT_COLUMNS if name not in frame.columns]
    if missing:
        raise ValueError(f"allocator frame lacks column(s) {missing}")
    check_out_of_sample(frame)
    return (
        compute_labels(frame, cost_bps)
        .filter(pl.col("label").is_not_null() & pl.col("next_return").is_not_null())
        .sort("period", "symbol")
    )


def train_allocator(frame: pl.DataFrame, config: AllocatorConfig) -> AllocatorFit:
    """Choose C, gamma, threshold and cap on the newest periods for guarded Calmar, then fit.

    Every row must be out of sample for its agent (InSampleRowsError otherwise; pass the fit
    part of :func:`split_out_of_sample`). Periods are split in time order: the oldest
    (1 - validation_fraction) fit each candidate (SVC, then its sigmoid on the newest
    calibration_fraction of them), the rest score it by the guarded Calmar of its traded
    P&L (weights x next_trade_return, minus the cost of changing weights). Rows of the newest
    period (outcome null) are ignored. Ties go to the higher return. The chosen point's
    validation numbers are optimistic (best of the grid on the same periods); judge the model
    on later periods with :func:`allocator_returns` / :func:`evaluate_allocator`.
    """
    labelled = _labelled(frame, config.cost_bps)
    periods = labelled.get_column("period").unique().sort()
    n_val = max(2, round(periods.len() * config.validation_fraction))
    if periods.len() - n_val < 4:
        raise ValueError(f"{periods.len()} labelled periods are too few to tune the allocator")
    val_start = periods[periods.len() - n_val]
    fit_part = labelled.filter(pl.col("period") < val_start)
    val_part = labelled.filter(pl.col("period") >= val_start)
    panel = _Panel.from_frame(val_part)
    group = panel.row_period

    rows: list[dict[str, Any]] = []
    scored: dict[tuple[float, float], tuple[Pipeline, CalibratedClassifierCV]] = {}
    for c, gamma in itertools.product(config.c_grid, config.gamma_grid):
        pipeline, calibrated = _fit_model(fit_part, c, gamma, config.calibration_fraction)
        scored[(c, gamma)] = (pipeline, calibrated)
        proba = calibrated.predict_proba(feature_matrix(val_part))[:, 1]
        for threshold, cap in itertools.product(config.threshold_grid, config.cap_grid):
            weights = panel.matrix(_row_weights(proba, group, threshold, cap))
            returns = _rebalanced_returns(weights, panel.trades, config.cost_bps)
            rows.append(
                {
                    "c": c,
                    "gamma": gamma,
                    "threshold": threshold,
                    "cap": cap,
                    "score": _tuning_score(returns, config.periods_per_year, config.min_drawdown),
                    **_summary(returns, float(weights.sum(axis=1).mean()), config.periods_per_year),
                }
            )
    # Stable sort keeps grid order among exact ties: smaller C, gamma, threshold, cap first.
    grid = pl.DataFrame(rows).sort(
        pl.col("score"),
        pl.col("total_return").fill_nan(-math.inf),
        descending=True,
        maintain_order=True,
    )
    best = grid.row(0, named=True)
    params = AllocatorParams(
        c=float(best["c"]),
        gamma=float(best["gamma"]),
        threshold=float(best["threshold"]),
        cap=float(best["cap"]),
        cost_bps=config.cost_bps,
    )
    pipeline, calibrated = scored[(params.c, params.gamma)]
    chosen = SklearnAllocator(pipeline, calibrated, params)
    validation = _strategies(
        panel,
        panel.matrix(chosen.weights(val_part).get_column("weight").to_numpy()),
        config.cost_bps,
    ).table(config.periods_per_year)
    if config.refit:
        pipeline, calibrated = _fit_model(
            labelled, params.c, params.gamma, config.calibration_fraction
        )
        chosen = SklearnAllocator(pipeline, calibrated, params)
    split = {
        "fit": (periods[0], periods[periods.len() - n_val - 1]),
        "validation": (val_start, periods[-1]),
    }
    return AllocatorFit(chosen, validation, grid, split)


def allocator_returns(allocator: Allocator, frame: pl.DataFrame) -> StrategyReturns:
    """The daily streams on ``frame``'s labelled rows (all out of sample, else InSampleRowsError).

    ``allocator``: sum of weight x the agent's trading return, minus half the round-trip cost
    per unit of weight changed -- the P&L crypto-trading books when each agent trades its
    weight of equity. Baselines: ``equal_weight_agents`` (1/n of the book to each agent
    present, same cost rule), ``buy_and_hold`` (equal money in each coin at the start, left
    to drift, entry paid) and ``cash``; and ``agent:<symbol>`` (one agent with the whole book).
    """
    cost_bps = allocator.params.cost_bps
    rows = _labelled(frame, cost_bps)
    panel = _Panel.from_frame(rows)
    weights = panel.matrix(allocator.weights(rows).get_column("weight").to_numpy())
    return _strategies(panel, weights, cost_bps)


def evaluate_allocator(
    allocator: Allocator, frame: pl.DataFrame, periods_per_year: float
) -> pl.DataFrame:
    """Held-out comparison on ``frame``'s labelled rows: one row per strategy of
    :func:`allocator_returns`, :data:`METRIC_KEYS`."""
    return allocator_returns(allocator, frame).table(periods_per_year)


# --------------------------------------------------------------------------- artifacts


def _write_npz(path: Path, arrays: Mapping[str, FloatArray]) -> None:
    """An .npz that np.load reads, byte-identical for identical arrays (fixed zip timestamps)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for name in sorted(arrays):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(info, "w") as handle:
                np.lib.format.write_array(
                    handle, np.ascontiguousarray(arrays[name]), allow_pickle=False
                )


def allocator_sha256(directory: Path) -> str:
    """sha256 over the arrays and the metadata (name, then bytes), in a fixed order."""
    digest = hashlib.sha256()
    for name in (ARRAYS, META):
        path = directory / name
        if not path.is_file():
            raise ModelLoadError(f"allocator artifact {directory} lacks {name}")
        digest.update(name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def save_allocator(
    directory: Path,
    allocator: SklearnAllocator | ExportedAllocator,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """Write arrays.npz + meta.json (no pickle anywhere); returns the artifact's sha256.

    ``extra`` (validation metrics, data ranges ...) is stored in the metadata as given.
    """
    exported = export_allocator(allocator) if isinstance(allocator, SklearnAllocator) else allocator
    directory.mkdir(parents=True, exist_ok=True)
    _write_npz(
        directory / ARRAYS,
        {
            "scaler_mean": exported.scaler_mean,
            "scaler_scale": exported.scaler_scale,
            "support_vectors": exported.support_vectors,
            "dual_coef": exported.dual_coef,
        },
    )
    meta = {
        "format": FORMAT,
        "features": list(FEATURES),
        "intercept": exported.intercept,
        "gamma": exported.gamma,
        "sigmoid_a": exported.sigmoid_a,
        "sigmoid_b": exported.sigmoid_b,
        "params": asdict(exported.params),
        "extra": dict(extra or {}),
    }
    (directory / META).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
    return allocator_sha256(directory)


def load_allocator(directory: Path, expected_sha256: str) -> ExportedAllocator:
    """The saved allocator, after checking its sha256 (ModelLoadError on any mismatch or damage)."""
    if not directory.is_dir():
        raise ModelLoadError(f"allocator artifact {directory} does not exist")
    actual = allocator_sha256(directory)
    if actual != expected_sha256:
        raise ModelLoadError(
            f"allocator artifact {directory} does not match its registered sha256 "
            f"(expected {expected_sha256[:12]}..., found {actual[:12]}...); refusing to load it"
        )
    try:
        meta = json.loads((directory / META).read_text())
        with np.load(directory / ARRAYS, allow_pickle=False) as npz:
            arrays = {name: np.asarray(npz[name], dtype=np.float64) for name in _ARRAY_NAMES}
        if meta["format"] != FORMAT or tuple(meta["features"]) != FEATURES:
            raise ModelLoadError(
                f"allocator {directory} is {meta['format']} over {meta['features']}; "
                f"this code reads {FORMAT} over {list(FEATURES)}"
            )
        n_sv = arrays["support_vectors"].shape[0]
        shapes_ok = (
            arrays["scaler_mean"].shape == (len(FEATURES),)
            and arrays["scaler_scale"].shape == (len(FEATURES),)
            and arrays["support_vectors"].shape == (n_sv, len(FEATURES))
            and arrays["dual_coef"].shape == (n_sv,)
        )
        if not shapes_ok:
            raise ModelLoadError(f"allocator {directory} holds arrays of inconsistent shapes")
        return ExportedAllocator(
            **arrays,
            intercept=float(meta["intercept"]),
            gamma=float(meta["gamma"]),
            sigmoid_a=float(meta["sigmoid_a"]),
            sigmoid_b=float(meta["sigmoid_b"]),
            params=AllocatorParams(**{k: float(v) for k, v in meta["params"].items()}),
            meta=meta,
        )
    except ModelLoadError:
        raise
    except (KeyError, TypeError, ValueError, OSError, zipfile.BadZipFile) as exc:
        raise ModelLoadError(f"allocator artifact {directory} is unreadable: {exc}") from exc
