"""The learning proof's reference: the best position path on the planted expected returns, after the env's costs."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from benchmarks.proofs import dp_positions, planted_sentiment_market
from core.costs import CostModel
from models.env import Costs, play_positions
from models.train import session_log_returns

# Three decisions (the fourth bar only closes the last one).
EXPECTED = np.array([[3e-4, -1e-4, 3e-4, 0.0]])
MASK = np.ones((1, 4), dtype=bool)


def value(
    expected: np.ndarray,
    mask: np.ndarray,
    path: np.ndarray,
    costs: Costs,
    forced: np.ndarray | None = None,
) -> np.ndarray:
    """The session's log return of `path` on the expected returns, played by the env's own book."""
    money = play_positions(
        torch.from_numpy(expected),
        torch.from_numpy(mask),
        torch.from_numpy(path.astype(np.float32)),
        costs,
        None if forced is None else torch.from_numpy(forced),
    )
    return np.log(money.numpy())


def test_a_dip_smaller_than_two_trades_is_held_through() -> None:
    # 2 bp each way: leaving for the -1 bp bar costs 4 bp to save 1 bp.
    path = dp_positions(EXPECTED, MASK, Costs(1.0, 1.0))
    assert path[0, :3].tolist() == [1.0, 1.0, 1.0]
    assert value(EXPECTED, MASK, path, Costs(1.0, 1.0))[0] == pytest.approx(np.log1p(-2e-4) + 5e-4)


def test_a_dip_larger_than_two_trades_is_sidestepped() -> None:
    # 0.2 bp each way: out and back in costs 0.4 bp to save 1 bp.
    path = dp_positions(EXPECTED, MASK, Costs(0.1, 0.1))
    assert path[0, :3].tolist() == [1.0, 0.0, 1.0]


def test_a_forced_exit_at_the_close_is_paid_for() -> None:
    # 2 bp in + 2 bp out at the close: 5 bp of expected return still pays; 3 bp does not.
    forced = np.array([[False, False, False, True]])
    assert dp_positions(EXPECTED, MASK, Costs(1.0, 1.0), forced)[0, :3].tolist() == [1, 1, 1]
    small = np.array([[1.5e-4, 0.0, 1.5e-4, 0.0]])
    assert dp_positions(small, MASK, Costs(1.0, 1.0), forced)[0, :3].tolist() == [0, 0, 0]
    # A forced bar is flat even when it expects a gain.
    mid = np.array([[False, True, False, False]])
    assert dp_positions(EXPECTED, MASK, Costs(0.1, 0.1), mid)[0, 1] == 0.0


def test_no_position_path_beats_it_on_the_expected_returns() -> None:
    rng = np.random.default_rng(7)
    n, t = 40, 7
    expected = rng.normal(0, 3e-4, size=(n, t))
    mask = np.ones((n, t), dtype=bool)
    lengths = rng.integers(2, t + 1, size=n)
    mask[np.arange(t)[None, :] >= lengths[:, None]] = False
    expected[~mask] = 0.0
    forced = rng.random((n, t)) < 0.15
    forced[np.arange(n), lengths - 1] |= rng.random(n) < 0.5
    costs = CostModel(1.0, 1.5, 0.3)
    best = value(expected, mask, dp_positions(expected, mask, costs, forced), costs, forced)
    paths = np.array(list(itertools.product([0.0, 1.0], repeat=t)))
    every = np.stack(
        [value(expected, mask, np.tile(p, (n, 1)), costs, forced) for p in paths], axis=1
    )
    assert (best >= every.max(axis=1) - 1e-12).all()
    assert np.allclose(best, every.max(axis=1), atol=1e-12)
    # A cost-blind sign rule is among the paths it beats.
    sign = (expected > 0).astype(np.float32)
    assert (best >= value(expected, mask, sign, costs, forced) - 1e-12).all()


@pytest.mark.slow
def test_the_planted_markets_expected_returns_predict_the_held_out_returns() -> None:
    market = planted_sentiment_market(seed=11)
    test = market.data.test
    on = test.mask.numpy()
    x, y = market.expected[on], test.returns.double().numpy()[on]
    # Fitted on the training sessions, calibrated on the held-out ones (slope near 1).
    slope = float((x * y).sum() / (x * x).sum())
    assert 0.7 < slope < 1.3 and np.corrcoef(x, y)[0, 1] > 0.3
    forced = test.forced_flat
    assert forced is not None and bool(forced.any()), "SPY episodes end flat at the close"
    reference = market.reference
    assert (reference[forced.numpy()] == 0).all()
    # It beats the cost-blind sign rule on the expected returns, and pays in realised ones.
    sign = (market.expected > 0).astype(np.float32)
    dp = value(market.expected, on, reference, market.costs, forced.numpy())
    assert (dp >= value(market.expected, on, sign, market.costs, forced.numpy()) - 1e-12).all()
    assert session_log_returns(test, reference, market.costs).mean() > 0.005
