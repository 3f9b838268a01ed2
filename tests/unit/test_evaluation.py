"""models.evaluation: walk-forward folds, fold metrics, PSR/DSR, bootstrap CI, SPA direction, HAC means, the statistical gate.

Every return stream here is synthetic (seeded normal draws) unless a literal.
"""

from __future__ import annotations

import math
from datetime import date

import numpy as np
import polars as pl
import pytest

from core import metrics
from models.evaluation import (
    compute_fold_metrics,
    compute_return_metrics,
    default_block_size,
    deflated_sharpe_ratio,
    expected_max_sharpe,
    judge_candidate,
    newey_west_mean_test,
    overlap_lags,
    overlapping_mean_test,
    probabilistic_sharpe_ratio,
    psr_from_moments,
    sharpe_difference_ci,
    spa_pvalues,
    trial_sharpe_variance,
    walk_forward_folds,
)

PPY = 252
VOL = 0.01  # daily volatility of the synthetic streams (about 16% a year)


def _stream(rng: np.random.Generator, n: int, annual_sharpe: float, vol: float = VOL) -> np.ndarray:
    """Synthetic normal daily returns with a given true annualised Sharpe ratio."""
    return annual_sharpe * vol / math.sqrt(PPY) + vol * rng.standard_normal(n)


# ---- folds ----


def _days(start: date, end: date) -> pl.Series:
    return pl.date_range(start, end, "1d", eager=True)


def test_yearly_expanding_folds_cover_each_test_year_and_respect_the_embargo() -> None:
    ts = _days(date(2018, 1, 1), date(2021, 12, 31))
    folds = walk_forward_folds(ts, first_test_year=2019, embargo=5)
    assert [f.label for f in folds] == ["2019", "2020", "2021"]
    years = ts.dt.year().to_numpy()
    for f in folds:
        assert f.train_start == 0
        assert f.test_start - f.train_end == 5
        test_years = set(years[f.test_index].tolist())
        assert test_years == {int(f.label)}
        assert f.test_end - f.test_start == (366 if f.label == "2020" else 365)
        assert f.train_index.max() < f.test_index.min() - 5
    # The first test year starts at 2019-01-01, position 365.
    assert (folds[0].train_end, folds[0].test_start) == (360, 365)
    # Test windows tile the years without overlap.
    assert [f.test_end for f in folds[:-1]] == [f.test_start for f in folds[1:]]
    assert folds[-1].test_end == ts.len()


def test_bar_count_rolling_folds_have_exact_bounds() -> None:
    ts = pl.Series("ts", np.arange(100, dtype=np.int64) * 60).cast(pl.Datetime("us"))
    folds = walk_forward_folds(ts, test_size=20, window="rolling", train_size=30, embargo=2)
    bounds = [(f.train_start, f.train_end, f.test_start, f.test_end) for f in folds]
    assert bounds == [(0, 30, 32, 52), (20, 50, 52, 72), (40, 70, 72, 92), (60, 90, 92, 100)]
    assert all(f.train_end - f.train_start == 30 for f in folds)


def test_expanding_training_grows_while_rolling_keeps_its_length() -> None:
    ts = _days(date(2010, 1, 1), date(2014, 12, 31))
    expanding = walk_forward_folds(ts, first_test_year=2012)
    rolling = walk_forward_folds(ts, first_test_year=2012, window="rolling", train_size=400)
    assert [f.train_start for f in expanding] == [0, 0, 0]
    sizes = [f.train_end - f.train_start for f in expanding]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    assert [f.train_end - f.train_start for f in rolling] == [400, 400, 400]
    assert [f.test_start for f in rolling] == [f.test_start for f in expanding]
    # A rolling window longer than the history before 2011 drops that fold.
    assert [f.label for f in walk_forward_folds(ts, window="rolling", train_size=400)] == [
        "2012",
        "2013",
        "2014",
    ]


def test_folds_refuse_unsorted_timestamps_and_a_rolling_window_without_size() -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        walk_forward_folds([date(2020, 1, 2), date(2020, 1, 1)], test_size=1)
    with pytest.raises(ValueError, match="strictly increasing"):
        walk_forward_folds([date(2020, 1, 1), date(2020, 1, 1)], test_size=1)
    with pytest.raises(ValueError, match="train_size"):
        walk_forward_folds([date(2020, 1, 1)], test_size=1, window="rolling")


# ---- metrics ----


def test_return_metrics_come_from_core_metrics_and_positions_add_exposure_and_turnover() -> None:
    r = np.array([0.01, -0.02, 0.015, 0.0, 0.005])
    w = np.array([0.0, 1.0, 1.0, 0.0, 0.5])
    out = compute_return_metrics(r, PPY, w)
    assert out["sharpe"] == metrics.sharpe(r, PPY)
    assert out["sortino"] == metrics.sortino(r, PPY)
    assert out["max_drawdown"] == pytest.approx(0.02)
    assert out["total_return"] == pytest.approx(1.01 * 0.98 * 1.015 * 1.005 - 1.0)
    assert out["calmar"] == metrics.calmar(r, PPY)
    assert out["exposure"] == pytest.approx(0.6)
    # |dw| = 0 + 1 + 0 + 1 + 0.5 = 2.5 of equity over 5/252 years.
    assert out["turnover"] == pytest.approx(2.5 / (5 / 252))
    assert "exposure" not in compute_return_metrics(r, PPY)


def test_fold_metrics_are_the_metrics_of_each_test_slice() -> None:
    r = _stream(np.random.default_rng(3), 100, 1.0)
    ts = pl.Series("ts", np.arange(100, dtype=np.int64)).cast(pl.Datetime("us"))
    folds = walk_forward_folds(ts, test_size=25, min_train=25)
    table = compute_fold_metrics(r, folds, PPY)
    assert table.get_column("label").to_list() == ["bars 25-50", "bars 50-75", "bars 75-100"]
    assert table.get_column("sharpe").to_list() == [
        metrics.sharpe(r[25:50], PPY),
        metrics.sharpe(r[50:75], PPY),
        metrics.sharpe(r[75:100], PPY),
    ]
    assert table.get_column("n_obs").to_list() == [25.0, 25.0, 25.0]


# ---- PSR / DSR ----


def test_dsr_reproduces_bailey_and_lopez_de_prado_2014_worked_example() -> None:
    # The paper's example: annual SR 2.5 over 1250 days (250 a year), 100 trials whose
    # annualised Sharpe ratios have variance 0.5, skewness -3, kurtosis 10: DSR = 0.9004.
    sr0 = expected_max_sharpe(100, 0.5 / 250)
    assert sr0 * math.sqrt(250) == pytest.approx(1.7894, abs=1e-4)
    dsr = psr_from_moments(2.5 / math.sqrt(250), sr0, 1250, -3.0, 10.0)
    assert dsr == pytest.approx(0.9004, abs=1e-4)


def test_expected_max_sharpe_of_100_standard_normal_trials() -> None:
    # (1 - 0.5772) * Z^-1(0.99) + 0.5772 * Z^-1(1 - 1/(100 e)) = 0.4228 * 2.3263 + 0.5772 * 2.6804
    assert expected_max_sharpe(100, 1.0) == pytest.approx(2.5306, abs=1e-4)
    assert expected_max_sharpe(1, 1.0) == 0.0
    assert expected_max_sharpe(100, 4.0) == pytest.approx(2 * 2.5306, abs=2e-4)


def test_psr_by_hand_on_a_literal_series() -> None:
    r = np.array([0.01, -0.02, 0.015, 0.005, -0.005, 0.02, 0.0, 0.01])
    mean, sd = r.mean(), r.std(ddof=1)
    sr = mean / sd  # 0.004375 / 0.012660 = 0.3456 per period
    m2 = np.mean((r - mean) ** 2)
    g3 = np.mean((r - mean) ** 3) / m2**1.5
    g4 = np.mean((r - mean) ** 4) / m2**2
    z = sr * math.sqrt(7) / math.sqrt(1 - g3 * sr + (g4 - 1) / 4 * sr**2)
    assert probabilistic_sharpe_ratio(r) == pytest.approx(0.5 * math.erfc(-z / math.sqrt(2)))
    assert probabilistic_sharpe_ratio(r) == pytest.approx(0.7875, abs=1e-4)
    # A benchmark equal to the estimate gives exactly one half.
    assert probabilistic_sharpe_ratio(r, sr) == pytest.approx(0.5)


def test_dsr_with_one_trial_is_psr_against_zero_and_falls_with_more_trials() -> None:
    r = _stream(np.random.default_rng(5), 756, 1.5)
    assert deflated_sharpe_ratio(r, 1) == probabilistic_sharpe_ratio(r, 0.0)
    dsrs = [deflated_sharpe_ratio(r, n) for n in (1, 10, 100, 1000)]
    assert dsrs == sorted(dsrs, reverse=True) and dsrs[0] > 0.99 and dsrs[-1] < 0.5
    # Recorded trial Sharpes (annualised) set V[SR_n] per period.
    assert trial_sharpe_variance([0.0, 1.0, 2.0], 252) == pytest.approx(1.0 / 252)


# ---- bootstrap interval and SPA ----


def test_sharpe_difference_interval_is_seeded_and_brackets_a_clear_edge() -> None:
    rng = np.random.default_rng(11)
    cand, base = _stream(rng, 1260, 2.5), _stream(rng, 1260, 0.0)
    ci = sharpe_difference_ci(cand, base, PPY, seed=4)
    assert ci.estimate == pytest.approx(metrics.sharpe(cand, PPY) - metrics.sharpe(base, PPY))
    assert 0.0 < ci.low < ci.estimate < ci.high
    assert ci.block_size == default_block_size(cand - base) <= math.isqrt(1260)
    assert sharpe_difference_ci(cand, base, PPY, seed=4) == ci
    same = sharpe_difference_ci(cand, cand, PPY, seed=4)
    assert (same.estimate, same.low, same.high) == (0.0, 0.0, 0.0)


def test_spa_p_is_small_for_a_clear_edge_middling_for_a_tie_and_near_one_when_worse() -> None:
    rng = np.random.default_rng(21)
    n = 1260
    best = _stream(rng, n, 0.5)
    other = _stream(rng, n, -2.0)
    baselines = {"best": best, "other": other}
    edge = best + _stream(rng, n, 3.0)  # the best baseline plus an independent Sharpe-3 stream
    noise = VOL * rng.standard_normal(n)
    tie = best + noise - noise.mean()  # exactly the best baseline's mean
    worse = best - 0.002 + VOL * rng.standard_normal(n)

    p_edge, by_edge = spa_pvalues(edge, baselines, seed=1)
    p_tie, by_tie = spa_pvalues(tie, baselines, seed=1)
    p_worse, _ = spa_pvalues(worse, baselines, seed=1)
    assert p_edge <= 0.01 and set(by_edge) == {"best", "other"}
    assert 0.3 < p_tie < 0.7 and p_tie == by_tie["best"]
    assert p_worse > 0.99
    # The intersection-union p-value is the largest per-reference one.
    assert p_tie == max(by_tie.values())
    # Identical streams: no evidence at all.
    assert spa_pvalues(best, {"best": best})[0] == 1.0


def test_spa_direction_is_the_candidate_beating_the_reference_not_the_reverse() -> None:
    rng = np.random.default_rng(8)
    strong, weak = _stream(rng, 1000, 3.0), _stream(rng, 1000, 0.0)
    assert spa_pvalues(strong, {"weak": weak}, seed=2)[0] < 0.01
    assert spa_pvalues(weak, {"strong": strong}, seed=2)[0] > 0.99


# ---- HAC means of overlapping labels ----


def test_newey_west_and_truncated_standard_errors_by_hand() -> None:
    x = np.array([1.0, 2.0, 3.0, 4.0])
    # e = (-1.5, -0.5, 0.5, 1.5): g0 = 5 / 4 = 1.25, g1 = 1.25 / 4 = 0.3125.
    naive = newey_west_mean_test(x, 0)
    assert naive.std_error == pytest.approx(math.sqrt(1.25 / 4))
    nw = newey_west_mean_test(x, 1)  # 1.25 + 2 * 0.5 * 0.3125 = 1.5625
    assert nw.mean == 2.5 and nw.std_error == pytest.approx(0.625)
    assert nw.t_stat == pytest.approx(4.0)
    hh = newey_west_mean_test(x, 1, kernel="truncated")  # 1.25 + 2 * 0.3125 = 1.875
    assert hh.std_error == pytest.approx(math.sqrt(1.875 / 4))
    assert overlap_lags(4) == 3


def test_hac_test_controls_the_false_rejections_that_overlapping_labels_cause() -> None:
    # 4-period labels sampled every period: sums of 4 consecutive iid shocks, true mean 0.
    rng = np.random.default_rng(2024)
    horizon, n, reps = 4, 200, 1000
    rejected = {"naive": 0, "newey_west": 0, "overlapping": 0}
    for _ in range(reps):
        x = np.convolve(rng.standard_normal(n + horizon - 1), np.ones(horizon), "valid")
        rejected["naive"] += newey_west_mean_test(x, 0).p_value < 0.05
        rejected["newey_west"] += newey_west_mean_test(x, overlap_lags(horizon)).p_value < 0.05
        rejected["overlapping"] += overlapping_mean_test(x, horizon).p_value < 0.05
    rates = {k: v / reps for k, v in rejected.items()}
    assert rates["naive"] > 0.25  # about 0.35: the naive t-test over-rejects sevenfold
    assert 0.06 < rates["newey_west"] < 0.16  # Bartlett at lag h-1 helps but still over-rejects
    assert 0.03 < rates["overlapping"] < 0.08  # the truncated kernel keeps the 5% level


def test_overlapping_mean_test_finds_a_real_mean() -> None:
    rng = np.random.default_rng(9)
    x = 0.5 + np.convolve(rng.standard_normal(523), np.ones(4), "valid")
    assert overlapping_mean_test(x, 4).p_value < 0.01


# ---- the gate ----


def test_gate_refuses_a_lucky_candidate_that_beat_buy_and_hold_in_a_falling_window() -> None:
    rng = np.random.default_rng(7)
    n = 252
    buy_and_hold = _stream(rng, n, -2.0, vol=0.015)  # a falling market: about -30% in the year
    lucky = _stream(rng, n, 0.0)  # no edge: zero expected return
    assert metrics.total_return(buy_and_hold) < -0.25
    assert metrics.total_return(lucky) > metrics.total_return(buy_and_hold) + 0.25
    baselines = {"buy_and_hold": buy_and_hold, "cash": np.zeros(n)}
    verdict = judge_candidate(lucky, None, baselines, n_trials=1, periods_per_year=PPY, seed=0)
    by_ref = dict(verdict.spa_p_by_reference)
    assert by_ref["baseline:buy_and_hold"] < 0.05  # it did beat buy-and-hold ...
    assert by_ref["baseline:cash"] > 0.2  # ... but not cash
    assert not verdict.promoted and not verdict.spa_ok and not verdict.dsr_ok
    assert verdict.dsr < 0.9
    assert verdict.drawdown_reference == "baseline:buy_and_hold" and verdict.drawdown_ok
    assert verdict.reasons[0].startswith("SPA p = ") and "baseline:cash" in verdict.reasons[0]


def test_gate_promotes_a_strong_candidate() -> None:
    rng = np.random.default_rng(17)
    n = 756
    buy_and_hold = _stream(rng, n, 0.3)
    strong = _stream(rng, n, 3.0)
    baselines = {"buy_and_hold": buy_and_hold, "cash": np.zeros(n)}
    verdict = judge_candidate(strong, None, baselines, n_trials=1, periods_per_year=PPY, seed=0)
    assert verdict.promoted and verdict.spa_ok and verdict.dsr_ok and verdict.drawdown_ok
    assert verdict.spa_p < 0.01 and verdict.dsr > 0.99
    assert verdict.sharpe == metrics.sharpe(strong, PPY)
    # The Sharpe difference is reported against the best baseline: here buy-and-hold fell.
    assert metrics.sharpe(buy_and_hold, PPY) < 0.0 and verdict.reference == "baseline:cash"
    assert verdict.sharpe_diff.low > 0.0
    assert verdict.n_obs == n and verdict.n_trials == 1


def test_gate_deflates_for_many_trials_and_judges_against_the_champion() -> None:
    rng = np.random.default_rng(17)
    n = 756
    buy_and_hold = _stream(rng, n, 0.3)
    good = _stream(rng, n, 2.0)
    baselines = {"buy_and_hold": buy_and_hold}
    once = judge_candidate(good, None, baselines, 1, PPY, seed=0)
    assert once.promoted
    # The same stream as the best of 1000 trials whose Sharpe ratios spread with s.d. 1.
    trials = rng.standard_normal(1000)
    many = judge_candidate(good, None, baselines, 1000, PPY, trial_sharpes=trials, seed=0)
    assert not many.promoted and many.spa_ok and not many.dsr_ok and many.dsr < 0.5
    # A champion as good as the candidate blocks it, and is the drawdown reference.
    champion = good + VOL * rng.standard_normal(n) * 0.1
    vs_champion = judge_candidate(good, champion, baselines, 1, PPY, seed=0)
    assert not vs_champion.promoted and dict(vs_champion.spa_p_by_reference)["champion"] > 0.05
    assert vs_champion.reference == vs_champion.drawdown_reference == "champion"


def test_gate_refuses_a_candidate_riskier_than_the_named_drawdown_baseline() -> None:
    rng = np.random.default_rng(17)
    n = 756
    baselines = {"buy_and_hold": _stream(rng, n, 0.3), "cash": np.zeros(n)}
    strong = _stream(rng, n, 3.0)
    verdict = judge_candidate(
        strong, None, baselines, 1, PPY, drawdown_baseline="cash", drawdown_margin=0.01, seed=0
    )
    assert verdict.spa_ok and verdict.dsr_ok and not verdict.drawdown_ok and not verdict.promoted
    assert verdict.reference_max_drawdown == 0.0 and verdict.max_drawdown > 0.01
    assert "baseline:cash" in verdict.reasons[2]


def test_gate_refuses_mismatched_or_missing_numbers() -> None:
    with pytest.raises(ValueError, match="returns"):
        judge_candidate(np.zeros(10), None, {"b": np.zeros(9)}, 1, PPY)
    with pytest.raises(ValueError, match="NaN"):
        judge_candidate(np.array([0.1, math.nan, 0.0]), None, {"b": np.zeros(3)}, 1, PPY)
    with pytest.raises(ValueError, match="champion or at least one baseline"):
        judge_candidate(np.zeros(10), None, {}, 1, PPY)


@pytest.mark.parametrize("n", [4, 5, 6, 7])
def test_a_few_days_are_judged_with_blocks_of_one_instead_of_crashing(n: int) -> None:
    # arch's optimal_block_length raises on 4-7 observations (an allocator judged on a few
    # held-out days): the gate must still give a verdict.
    rng = np.random.default_rng(n)
    candidate, base = rng.normal(0.001, 0.01, n), rng.normal(0.0, 0.01, n)
    assert default_block_size(candidate - base) == 1
    verdict = judge_candidate(candidate, None, {"buy_and_hold": base}, 1, PPY, seed=1)
    assert verdict.n_obs == n
    assert 0.0 <= verdict.spa_p <= 1.0
