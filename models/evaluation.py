"""Out-of-sample evaluation statistics: walk-forward folds, per-fold metrics, PSR/DSR, bootstrap and SPA tests, HAC means, and the statistical promotion gate. Pure."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal

import numpy as np
import numpy.typing as npt
import polars as pl
from arch.bootstrap import SPA, StationaryBootstrap, optimal_block_length
from scipy import stats

from core import metrics

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

EULER_GAMMA = 0.5772156649015329
"""The Euler-Mascheroni constant of the expected-maximum formula in the deflated Sharpe ratio."""

DEFAULT_BOOTSTRAP_REPS = 1000
"""Bootstrap replications of the Sharpe-difference interval and of each SPA test."""


def _as_float_array(values: npt.ArrayLike) -> FloatArray:
    return np.asarray(values, dtype=np.float64).reshape(-1)


# ---- walk-forward folds ----


@dataclass(frozen=True)
class Fold:
    """One walk-forward split as half-open positions ``[start, end)`` into the sorted series."""

    index: int
    """0, 1, ... in test-time order."""
    label: str
    """The test period in words: its calendar year ('2005') or its bar range ('bars 500-750')."""
    train_start: int
    train_end: int
    """Exclusive; ``test_start - train_end`` is the embargo (bars used by neither side)."""
    test_start: int
    test_end: int
    """Exclusive."""

    @property
    def train_index(self) -> IntArray:
        """Positions of the training bars."""
        return np.arange(self.train_start, self.train_end, dtype=np.int64)

    @property
    def test_index(self) -> IntArray:
        """Positions of the test bars."""
        return np.arange(self.test_start, self.test_end, dtype=np.int64)


def walk_forward_folds(
    ts: pl.Series | Sequence[date] | Sequence[datetime],
    *,
    test_size: int | None = None,
    first_test_year: int | None = None,
    window: Literal["expanding", "rolling"] = "expanding",
    train_size: int | None = None,
    min_train: int = 1,
    embargo: int = 0,
) -> list[Fold]:
    """Walk-forward folds over a strictly increasing series of dates or timestamps.

    Test windows are calendar years (``test_size=None``: every year from ``first_test_year``,
    default the series' second year) or consecutive blocks of ``test_size`` bars (the last
    one may be shorter) starting where the first training window fits. Training ends
    ``embargo`` bars before its test window starts: labels that look ``h`` bars ahead
    (the forecaster's 4-week label) need an embargo of ``h`` bars (at least ``h - 1``, by
    where the label's window starts) so that no training label reaches into the test period. ``window='expanding'`` trains on everything before the
    embargo (folds with fewer than ``min_train`` bars are skipped); ``'rolling'`` on the
    last ``train_size`` bars only (folds without a full window are skipped).
    """
    series = ts if isinstance(ts, pl.Series) else pl.Series("ts", list(ts))
    n = series.len()
    if window not in ("expanding", "rolling"):
        raise ValueError(f"window must be 'expanding' or 'rolling', not {window!r}")
    if window == "rolling" and (train_size is None or train_size < 1):
        raise ValueError("a rolling window needs train_size >= 1")
    if embargo < 0 or min_train < 1:
        raise ValueError("embargo must be >= 0 and min_train >= 1")
    if test_size is not None and test_size < 1:
        raise ValueError("test_size must be >= 1 (or None for calendar-year test folds)")
    if series.null_count() or (
        n > 1 and not bool((series.to_physical().diff().drop_nulls() > 0).all())
    ):
        # Positions stand for time: unsorted or repeated stamps would leak the future.
        raise ValueError("ts must be strictly increasing and without nulls")
    if n == 0:
        return []
    need = train_size if window == "rolling" and train_size is not None else min_train

    tests: list[tuple[str, int, int]] = []
    if test_size is None:
        years = series.dt.year().to_numpy()
        first = int(years[0]) + 1 if first_test_year is None else first_test_year
        for year in sorted({int(y) for y in years if y >= first}):
            where = np.flatnonzero(years == year)
            tests.append((str(year), int(where[0]), int(where[-1]) + 1))
    else:
        start = need + embargo
        while start < n:
            end = min(start + test_size, n)
            tests.append((f"bars {start}-{end}", start, end))
            start = end

    folds: list[Fold] = []
    for label, test_start, test_end in tests:
        train_end = test_start - embargo
        train_start = 0 if window == "expanding" else max(0, train_end - (train_size or 0))
        if train_end - train_start < need:
            continue
        folds.append(Fold(len(folds), label, train_start, train_end, test_start, test_end))
    return folds


# ---- per-fold metrics (all from core.metrics) ----


def _weights_as_fills(weights: FloatArray) -> pl.DataFrame:
    """Weight changes as unit-price fills, so core.metrics.turnover counts them (equity 1)."""
    traded = np.abs(np.diff(weights, prepend=0.0))
    return pl.DataFrame({"qty": traded[traded > 0.0], "price": 1.0})


def compute_return_metrics(
    returns: npt.ArrayLike,
    periods_per_year: float,
    positions: npt.ArrayLike | None = None,
) -> dict[str, float]:
    """Return, Sharpe, Sortino, max drawdown and Calmar of per-bar returns, via core.metrics.

    ``positions`` (per bar, as a fraction of equity: 1 fully long, 0 flat) add exposure and
    annual turnover (sum of |weight change| per year, entering from flat counted).
    """
    r = _as_float_array(returns)
    out = {
        "n_obs": float(r.size),
        "total_return": metrics.total_return(r),
        "cagr": metrics.cagr(r, periods_per_year),
        "sharpe": metrics.sharpe(r, periods_per_year),
        "sortino": metrics.sortino(r, periods_per_year),
        "max_drawdown": metrics.max_drawdown(r),
        "calmar": metrics.calmar(r, periods_per_year),
    }
    if positions is not None:
        w = _as_float_array(positions)
        if w.size != r.size:
            raise ValueError(f"positions has {w.size} bars, returns {r.size}")
        out["exposure"] = metrics.exposure(w, w)
        years = r.size / periods_per_year
        out["turnover"] = metrics.turnover(_weights_as_fills(w), 1.0, years)
    return out


def compute_fold_metrics(
    returns: npt.ArrayLike,
    folds: Sequence[Fold],
    periods_per_year: float,
    positions: npt.ArrayLike | None = None,
) -> pl.DataFrame:
    """One row of :func:`compute_return_metrics` per fold, over its test bars of ``returns``."""
    r = _as_float_array(returns)
    w = None if positions is None else _as_float_array(positions)
    rows = []
    for fold in folds:
        part = slice(fold.test_start, fold.test_end)
        m = compute_return_metrics(r[part], periods_per_year, None if w is None else w[part])
        rows.append({"fold": fold.index, "label": fold.label, **m})
    return pl.DataFrame(rows)


# ---- probabilistic and deflated Sharpe ratio ----


def probabilistic_sharpe_ratio(returns: npt.ArrayLike, sr_benchmark: float = 0.0) -> float:
    """Probability that the true per-period Sharpe ratio exceeds ``sr_benchmark`` (per period).

    Bailey & Lopez de Prado (2012), "The Sharpe ratio efficient frontier", J. of Risk 15(2):

        PSR(SR*) = Phi( (SR^ - SR*) * sqrt(T - 1) / sqrt(1 - g3 * SR^ + (g4 - 1) / 4 * SR^2) )

    with SR^ the per-period (not annualised) Sharpe ratio of the T returns, g3 their
    skewness and g4 their kurtosis (3 for normal returns; both the biased sample moments,
    as in the paper). Skewed or fat-tailed returns widen the denominator. NaN with fewer
    than three returns or an undefined Sharpe ratio.
    """
    r = _as_float_array(returns)
    sr = metrics.sharpe(r, 1.0)
    if r.size < 3 or not math.isfinite(sr):
        return math.nan
    skew = float(stats.skew(r))
    kurt = float(stats.kurtosis(r, fisher=False))
    return psr_from_moments(sr, sr_benchmark, r.size, skew, kurt)


def psr_from_moments(
    sharpe: float, sr_benchmark: float, n_obs: int, skewness: float, kurtosis: float
) -> float:
    """The PSR formula of :func:`probabilistic_sharpe_ratio` from per-period moments (kurtosis, not excess)."""
    denom = 1.0 - skewness * sharpe + (kurtosis - 1.0) / 4.0 * sharpe * sharpe
    if n_obs < 2 or not denom > 0.0:
        return math.nan
    z = (sharpe - sr_benchmark) * math.sqrt(n_obs - 1) / math.sqrt(denom)
    return float(stats.norm.cdf(z))


def expected_max_sharpe(n_trials: int, sharpe_variance: float) -> float:
    """SR*, the Sharpe ratio the best of N skill-less trials reaches by luck (DSR's benchmark).

    Bailey & Lopez de Prado (2014), "The deflated Sharpe ratio", J. of Portfolio Mgmt 40(5):

        SR* = sqrt(V[SR_n]) * ((1 - gamma) * Z^-1(1 - 1/N) + gamma * Z^-1(1 - 1/(N e)))

    gamma the Euler-Mascheroni constant, Z^-1 the standard normal quantile, V[SR_n] the
    variance of the N trials' Sharpe ratios (in the units of the result). One trial: 0.
    """
    if n_trials < 1:
        raise ValueError("n_trials must be >= 1")
    if n_trials == 1:
        return 0.0
    n = float(n_trials)
    z1 = stats.norm.ppf(1.0 - 1.0 / n)
    z2 = stats.norm.ppf(1.0 - 1.0 / (n * math.e))
    return float(math.sqrt(sharpe_variance) * ((1.0 - EULER_GAMMA) * z1 + EULER_GAMMA * z2))


def trial_sharpe_variance(annual_sharpes: npt.ArrayLike, periods_per_year: float) -> float:
    """V[SR_n] per period from the trials' annualised Sharpe ratios (NaNs dropped; NaN below two)."""
    s = _as_float_array(annual_sharpes)
    s = s[np.isfinite(s)]
    if s.size < 2:
        return math.nan
    return float(np.var(s, ddof=1) / periods_per_year)


def deflated_sharpe_ratio(
    returns: npt.ArrayLike, n_trials: int, sharpe_variance: float | None = None
) -> float:
    """PSR against the expected maximum Sharpe ratio of ``n_trials`` trials (Bailey & LdP 2014).

    ``sharpe_variance`` is V[SR_n] per period (:func:`trial_sharpe_variance`). Without it the
    variance a skill-less Sharpe estimate has on this sample, 1 / (T - 1), stands in: the
    least the trials can have dispersed, so record trials and pass their variance instead.
    """
    r = _as_float_array(returns)
    if r.size < 3:
        return math.nan
    variance = 1.0 / (r.size - 1) if sharpe_variance is None else sharpe_variance
    if not (variance >= 0.0 and math.isfinite(variance)):
        return math.nan
    return probabilistic_sharpe_ratio(r, expected_max_sharpe(n_trials, variance))


# ---- bootstrap tests against references ----


MIN_BLOCK_ESTIMATE_OBS = 8
"""Shortest series arch.bootstrap.optimal_block_length estimates a length for (checked: 4-7 raise)."""


def default_block_size(series: npt.ArrayLike) -> int:
    """Mean block length of the stationary bootstrap: Politis-White's optimal length, rounded up.

    (arch.bootstrap.optimal_block_length; 1 for serially independent data, capped at
    sqrt(T) so that a short, trending series still yields many blocks.) Under 8 observations
    arch's estimator fails (its lag regression has no rows) and sqrt(T) < 3: blocks of 1.
    """
    x = _as_float_array(series)
    if x.size < MIN_BLOCK_ESTIMATE_OBS or np.ptp(x) == 0.0:
        return 1
    length = float(optimal_block_length(x)["stationary"].iloc[0])
    cap = max(1, int(math.sqrt(x.size)))
    return int(min(cap, max(1, math.ceil(length)))) if math.isfinite(length) else cap


def _sharpe_or_cash(r: FloatArray, periods_per_year: float) -> float:
    """core.metrics.sharpe, except that an all-zero stream (cash) scores 0 instead of NaN."""
    if r.size >= 2 and not np.any(r):
        return 0.0
    return metrics.sharpe(r, periods_per_year)


@dataclass(frozen=True)
class SharpeDifference:
    """Annualised Sharpe of the candidate minus the reference's, with a bootstrap interval."""

    estimate: float
    low: float
    high: float
    confidence: float
    block_size: int


def sharpe_difference_ci(
    candidate: npt.ArrayLike,
    reference: npt.ArrayLike,
    periods_per_year: float,
    *,
    confidence: float = 0.95,
    reps: int = DEFAULT_BOOTSTRAP_REPS,
    block_size: int | None = None,
    seed: int = 0,
) -> SharpeDifference:
    """Percentile interval of Sharpe(candidate) - Sharpe(reference) by a stationary bootstrap.

    Both streams are resampled with the same blocks (arch.bootstrap.StationaryBootstrap,
    seeded), keeping their correlation and their serial dependence up to the block length;
    the default block length is :func:`default_block_size` of the return difference.
    """
    c, ref = _as_float_array(candidate), _as_float_array(reference)
    if c.size != ref.size:
        raise ValueError(f"candidate has {c.size} returns, reference {ref.size}")
    block = default_block_size(c - ref) if block_size is None else block_size

    def diff(x: npt.ArrayLike, y: npt.ArrayLike) -> float:
        xs, ys = _as_float_array(x), _as_float_array(y)
        return _sharpe_or_cash(xs, periods_per_year) - _sharpe_or_cash(ys, periods_per_year)

    estimate = diff(c, ref)
    bs = StationaryBootstrap(block, c, ref, seed=seed)
    draws = np.array([diff(x, y) for (x, y), _ in bs.bootstrap(reps)])
    draws = draws[np.isfinite(draws)]
    if draws.size == 0:
        return SharpeDifference(estimate, math.nan, math.nan, confidence, block)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(draws, [tail, 100.0 - tail])
    return SharpeDifference(estimate, float(low), float(high), confidence, block)


def spa_pvalues(
    candidate: npt.ArrayLike,
    references: Mapping[str, npt.ArrayLike],
    *,
    reps: int = DEFAULT_BOOTSTRAP_REPS,
    block_size: int | None = None,
    seed: int = 0,
) -> tuple[float, dict[str, float]]:
    """P-value of "the candidate's mean return beats every reference's", and one per reference.

    Which side is which: arch's ``SPA(benchmark, models)`` takes *losses* and tests
    H0: "the benchmark is not inferior to any model", i.e. max_k E[L_bench - L_k] <= 0;
    a small p says some model has a lower loss than the benchmark. Putting the candidate
    as the benchmark would answer the wrong question (rejecting would mean a *baseline*
    beats the candidate, and not rejecting proves nothing). So each reference b is the
    benchmark and the candidate the single model, with loss = -return:

        d_b = L_b - L_cand = r_cand - r_b,   H0_b: E[d_b] <= 0   (the candidate is no better than b)

    and a small p_b says the candidate beats b. "Beats every reference" is the intersection
    of the alternatives, so its null is the union of the H0_b; the intersection-union test
    (Berger 1982) rejects it at level alpha when every H0_b is rejected at alpha: its
    p-value is max_b p_b, with no multiplicity correction needed (and none allowed to help).

    With one model Hansen's SPA reduces to a bootstrap test of one mean; we read arch's
    'upper' p-value (always re-centred, the least favourable null E[d_b] = 0). Its
    'consistent' and 'lower' values do not re-centre a candidate far *worse* than b and,
    as arch omits Hansen's max(0, T) floor, give such a candidate p ~ 0.5 instead of ~ 1.
    Block length: :func:`default_block_size` of d_b unless given; the seed is shared.
    """
    c = _as_float_array(candidate)
    if not references:
        raise ValueError("spa_pvalues needs at least one reference")
    by_ref: dict[str, float] = {}
    for name, values in references.items():
        ref = _as_float_array(values)
        if ref.size != c.size:
            raise ValueError(f"candidate has {c.size} returns, reference {name!r} {ref.size}")
        d = c - ref
        if np.ptp(d) == 0.0:
            # A constant difference has no sampling error (arch would return p = 0 for 0).
            by_ref[name] = 0.0 if d[0] > 0.0 else 1.0
            continue
        block = default_block_size(d) if block_size is None else block_size
        spa = SPA(-ref, -c[:, None], block_size=block, reps=reps, seed=seed)
        spa.compute()
        by_ref[name] = float(spa.pvalues["upper"])
    return max(by_ref.values()), by_ref


# ---- means of overlapping series ----


@dataclass(frozen=True)
class MeanTest:
    """A two-sided test of H0: mean = 0, with the standard error it used."""

    mean: float
    std_error: float
    t_stat: float
    p_value: float
    n_obs: int
    lags: int


def newey_west_mean_test(
    values: npt.ArrayLike, lags: int, kernel: Literal["bartlett", "truncated"] = "bartlett"
) -> MeanTest:
    """t-test of a mean with a HAC (heteroskedasticity and autocorrelation consistent) standard error.

    Var(mean) = (g0 + 2 * sum_{l=1..L} w_l * g_l) / n, g_l the lag-l autocovariance
    (1/n normalisation). ``kernel='bartlett'`` is Newey-West (1987), w_l = 1 - l / (L + 1),
    never negative; ``'truncated'`` is Hansen-Hodrick (1980), w_l = 1, exact for an MA(L)
    series such as overlapping labels but not guaranteed positive (a non-positive estimate
    falls back to Bartlett). ``lags=0`` is the naive t-test. The p-value is two-sided,
    Student's t with n - 1 degrees of freedom. NaNs are dropped.
    """
    x = _as_float_array(values)
    x = x[np.isfinite(x)]
    n = x.size
    if lags < 0:
        raise ValueError("lags must be >= 0")
    if kernel not in ("bartlett", "truncated"):
        raise ValueError(f"kernel must be 'bartlett' or 'truncated', not {kernel!r}")
    if n < 2:
        return MeanTest(math.nan, math.nan, math.nan, math.nan, n, lags)
    mean = float(np.mean(x))
    e = x - mean
    gammas = [float(e @ e) / n] + [
        float(e[lag:] @ e[:-lag]) / n for lag in range(1, min(lags, n - 1) + 1)
    ]

    def long_run_variance(weights: Literal["bartlett", "truncated"]) -> float:
        total = gammas[0]
        for lag, g in enumerate(gammas[1:], start=1):
            total += 2.0 * (1.0 if weights == "truncated" else 1.0 - lag / (lags + 1.0)) * g
        return total

    var = long_run_variance(kernel)
    if not var > 0.0 and kernel == "truncated":
        var = long_run_variance("bartlett")
    se = math.sqrt(var / n) if var > 0.0 else 0.0
    if se == 0.0:
        return MeanTest(mean, 0.0, math.nan, math.nan, n, lags)
    t = mean / se
    p = float(2.0 * stats.t.sf(abs(t), df=n - 1))
    return MeanTest(mean, se, t, p, n, lags)


def overlap_lags(label_horizon: int) -> int:
    """HAC lags for labels spanning ``label_horizon`` sampling periods: horizon - 1."""
    if label_horizon < 1:
        raise ValueError("label_horizon must be >= 1")
    return label_horizon - 1


def overlapping_mean_test(values: npt.ArrayLike, label_horizon: int) -> MeanTest:
    """t-test of the mean of a series whose labels overlap (e.g. weekly mean rank IC of 4-week labels).

    Values that each span ``label_horizon`` sampling periods share ``h - 1`` of them with
    their neighbours: an MA(h - 1) dependence, so the HAC lag is ``h - 1``. With that lag the
    Hansen-Hodrick (truncated) kernel is exact; Newey-West's Bartlett weights at the same lag
    understate the variance (about 2.75 instead of 4 variances for h = 4) and, measured on
    simulated MA(3) series of 200-520 values, reject a true null about 11% of the time at
    5% (the naive t-test about 35%), against about 5-6% here.
    """
    return newey_west_mean_test(values, overlap_lags(label_horizon), kernel="truncated")


# ---- the statistical promotion gate ----


@dataclass(frozen=True)
class GateVerdict:
    """The statistical gate's answer for one candidate's out-of-sample returns, with its numbers."""

    promoted: bool
    reasons: tuple[str, ...]
    """One line per test, passed or failed, in words."""
    spa_p: float
    """Intersection-union p-value of "beats the champion and every baseline" (:func:`spa_pvalues`)."""
    spa_p_by_reference: tuple[tuple[str, float], ...]
    dsr: float
    """Deflated Sharpe ratio: probability the true Sharpe beats the best of n_trials lucky ones."""
    sharpe: float
    """The candidate's annualised Sharpe ratio."""
    reference: str
    """Of the Sharpe difference: 'champion' if one was given, else the best-Sharpe baseline."""
    sharpe_diff: SharpeDifference
    """Candidate minus reference, annualised, with its bootstrap interval (reported, not a test)."""
    max_drawdown: float
    drawdown_reference: str
    """'champion', else the named or the deepest-drawdown baseline ('baseline:<name>')."""
    reference_max_drawdown: float
    drawdown_ok: bool
    spa_ok: bool
    dsr_ok: bool
    n_obs: int
    n_trials: int


def judge_candidate(
    candidate_returns: npt.ArrayLike,
    champion_returns: npt.ArrayLike | None,
    baseline_returns: Mapping[str, npt.ArrayLike],
    n_trials: int,
    periods_per_year: float,
    *,
    trial_sharpes: npt.ArrayLike | None = None,
    alpha: float = 0.05,
    dsr_min: float = 0.95,
    drawdown_margin: float = 0.02,
    drawdown_baseline: str | None = None,
    reps: int = DEFAULT_BOOTSTRAP_REPS,
    block_size: int | None = None,
    seed: int = 0,
) -> GateVerdict:
    """Promote only a candidate that, on the same out-of-sample bars, passes all three tests:

    1. SPA: it beats the champion (if any) and every baseline, p <= ``alpha``;
    2. DSR >= ``dsr_min``, deflating for ``n_trials`` tried configurations (V[SR_n] from
       ``trial_sharpes``, annualised, when given; see :func:`deflated_sharpe_ratio`);
    3. its max drawdown exceeds the drawdown reference's by at most ``drawdown_margin``
       (absolute): the champion, else the baseline named ``drawdown_baseline``, else the
       baseline with the deepest drawdown -- the riskiest naive alternative, as a candidate
       need not be safer than cash.

    The Sharpe-difference interval is reported against the champion, else the baseline with
    the highest Sharpe ratio (the hardest to beat); it informs, the SPA test decides.

    All streams are per-bar simple returns over the same bars; NaNs are refused.
    """
    c = _as_float_array(candidate_returns)
    refs: dict[str, FloatArray] = {
        f"baseline:{k}": _as_float_array(v) for k, v in baseline_returns.items()
    }
    if champion_returns is not None:
        refs = {"champion": _as_float_array(champion_returns), **refs}
    if not refs:
        raise ValueError("judge_candidate needs a champion or at least one baseline")
    for name, r in {"candidate": c, **refs}.items():
        if r.size != c.size:
            raise ValueError(f"{name} has {r.size} returns, the candidate {c.size}")
        if not np.all(np.isfinite(r)):
            raise ValueError(f"{name} returns contain NaN or inf")
    if c.size < 3:
        raise ValueError("judge_candidate needs at least three returns")

    spa_p, by_ref = spa_pvalues(c, refs, reps=reps, block_size=block_size, seed=seed)
    variance = None
    if trial_sharpes is not None:
        v = trial_sharpe_variance(trial_sharpes, periods_per_year)
        variance = v if math.isfinite(v) else None
    dsr = deflated_sharpe_ratio(c, n_trials, variance)

    drawdowns = {k: metrics.max_drawdown(r) for k, r in refs.items()}
    if champion_returns is not None:
        ref_name = dd_name = "champion"
    else:
        scored = {k: _sharpe_or_cash(r, periods_per_year) for k, r in refs.items()}
        ref_name = max(scored, key=lambda k: scored[k] if math.isfinite(scored[k]) else -math.inf)
        if drawdown_baseline is not None:
            dd_name = f"baseline:{drawdown_baseline}"
            if dd_name not in refs:
                raise ValueError(f"drawdown_baseline {drawdown_baseline!r} is not a baseline")
        else:
            dd_name = max(drawdowns, key=lambda k: drawdowns[k])
    diff = sharpe_difference_ci(
        c, refs[ref_name], periods_per_year, reps=reps, block_size=block_size, seed=seed
    )
    mdd, ref_mdd = metrics.max_drawdown(c), drawdowns[dd_name]

    spa_ok = spa_p <= alpha
    dsr_ok = math.isfinite(dsr) and dsr >= dsr_min
    dd_ok = mdd <= ref_mdd + drawdown_margin
    worst = max(by_ref, key=lambda k: by_ref[k])
    reasons = (
        f"SPA p = {spa_p:.4f} {'<=' if spa_ok else '>'} {alpha} "
        f"({'beats every reference' if spa_ok else 'not clearly better than ' + worst})",
        f"DSR = {dsr:.4f} {'>=' if dsr_ok else '<'} {dsr_min} over {n_trials} trial(s)",
        f"max drawdown {mdd:.4f} {'<=' if dd_ok else '>'} {dd_name} {ref_mdd:.4f} + {drawdown_margin}",
        f"Sharpe - {ref_name}: {diff.estimate:+.3f} "
        f"[{diff.low:+.3f}, {diff.high:+.3f}] ({diff.confidence:.0%} bootstrap)",
    )
    return GateVerdict(
        promoted=spa_ok and dsr_ok and dd_ok,
        reasons=reasons,
        spa_p=spa_p,
        spa_p_by_reference=tuple(by_ref.items()),
        dsr=dsr,
        sharpe=metrics.sharpe(c, periods_per_year),
        reference=ref_name,
        sharpe_diff=diff,
        max_drawdown=mdd,
        drawdown_reference=dd_name,
        reference_max_drawdown=ref_mdd,
        drawdown_ok=dd_ok,
        spa_ok=spa_ok,
        dsr_ok=dsr_ok,
        n_obs=int(c.size),
        n_trials=n_trials,
    )
