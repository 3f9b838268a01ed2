"""The env pays the forced end-of-session exit, as the backtest's and live's engine do."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.costs import CostModel
from models.dqn import DQNLightning, DQNParams, ReplayBatch, act_sessions
from models.env import FLAT, HOLD, LONG, Costs, Sessions, VecMarketEnv, play_positions
from models.qnet import Architecture
from models.train import session_log_returns

RETURNS = [0.01, -0.02, 0.03, 0.0]


def one_session(forced: list[bool] | None) -> Sessions:
    return Sessions(
        torch.zeros(1, 4, 3),
        torch.tensor([RETURNS]),
        torch.ones(1, 4, dtype=torch.bool),
        ["s0"],
        None if forced is None else torch.tensor([forced]),
    )


def test_a_forced_bar_goes_flat_whatever_the_action() -> None:
    env = VecMarketEnv(one_session([False, False, True, True]), Costs(5.0, 5.0), 1.0)
    env.reset()
    env.step(torch.tensor([LONG]))
    env.step(torch.tensor([HOLD]))
    (_, position), _, _, truncated = env.step(torch.tensor([LONG]))  # the rule sells
    assert position.item() == 0.0 and bool(truncated.item())
    assert env.money.item() == pytest.approx((1 - 0.001) ** 2 * np.exp(0.01 - 0.02), rel=1e-6)


def test_the_position_held_into_a_forced_last_bar_pays_the_exit() -> None:
    costs = CostModel(2.0, 3.0, 0.5)  # 5 bp each way, 0.5 bp more on the sale
    env = VecMarketEnv(one_session([False, False, False, True]), costs, 1.0)
    env.reset()
    rewards = [env.step(torch.tensor([a]))[1].item() for a in (LONG, HOLD, HOLD)]
    # Bought at 5 bp, held through the session, sold at the close at 5.5 bp.
    expected = (1 - 0.0005) * np.exp(sum(RETURNS)) * (1 - 0.00055)
    assert env.money.item() == pytest.approx(expected, rel=1e-6)
    assert sum(rewards) / 100 == pytest.approx(np.log(expected), abs=1e-6)
    # The session-based evaluation plays the same money; without a rule no exit is paid.
    long = torch.ones(1, 4)
    forced = torch.tensor([[False, False, False, True]])
    s = one_session([False, False, False, True])
    assert play_positions(s.returns, s.mask, long, costs, forced).item() == pytest.approx(expected)
    assert session_log_returns(s, long.numpy(), costs)[0] == pytest.approx(np.log(expected))
    free = one_session(None)
    assert play_positions(free.returns, free.mask, long, costs).item() == pytest.approx(
        (1 - 0.0005) * np.exp(sum(RETURNS))
    )


def test_training_rollouts_take_flat_on_forced_bars_and_pay_the_exit() -> None:
    g = torch.Generator().manual_seed(0)
    n, t = 8, 30
    mask = torch.ones(n, t, dtype=torch.bool)
    mask[0, 20:] = False  # a short session: its own last bars are the forced ones
    returns = torch.randn(n, t, generator=g) * 1e-3
    returns[~mask] = 0
    returns[0, 19] = 0
    returns[:, -1] = 0
    forced = torch.zeros(n, t, dtype=torch.bool)
    forced[:, t - 1] = True  # only the last bar: the exit is paid at its close
    forced[0, 18:20] = True
    forced[1, 10] = True  # a forced bar inside a session (a day's close in a longer episode)
    sessions = Sessions(torch.randn(n, t, 3, generator=g), returns, mask, list("abcdefgh"), forced)
    torch.manual_seed(0)
    module = DQNLightning(3, Architecture(fast_hidden=8, slow_hidden=4, head_hidden=8), DQNParams())
    costs = Costs(3.0, 2.0)
    played = act_sessions(module.online, sessions, costs, 1.0, np.random.default_rng(1))
    assert (played["actions"][0, 18:19] == FLAT).all() and played["actions"][1, 10] == FLAT
    a, pos = played["actions"], played["positions"]
    held = np.where(a == FLAT, 0.0, np.where(a == LONG, 1.0, pos)).astype(np.float32)
    money = play_positions(returns, mask, torch.from_numpy(held), costs, forced).numpy()
    assert np.allclose(played["final_money"], money, rtol=1e-9)
    assert np.allclose(played["rewards"].sum(axis=1) / 100, np.log(money), atol=1e-6)
    # Some sessions end long and pay the exit; the same path without the rule would not.
    ends_long = held[np.arange(n), mask.sum(1).numpy() - 2] == 1.0
    assert ends_long.any()
    free = play_positions(returns, mask, torch.from_numpy(held), costs).numpy()
    assert (money[ends_long & (np.arange(n) > 1)] < free[ends_long & (np.arange(n) > 1)]).all()


def test_td_targets_take_flat_where_the_rule_forces_it() -> None:
    torch.manual_seed(0)
    module = DQNLightning(3, Architecture(fast_hidden=8, slow_hidden=4, head_hidden=8), DQNParams())
    b, t = 4, 12
    batch = ReplayBatch(
        features=torch.randn(b, t, 3),
        mask=torch.ones(b, t, dtype=torch.bool),
        actions=torch.randint(0, 3, (b, t)),
        positions=torch.randint(0, 2, (b, t)).float(),
        rewards=torch.randn(b, t),
    )
    free = module.td_loss(batch).item()
    forced = torch.zeros(b, t, dtype=torch.bool)
    forced[:, 6:] = True
    assert module.td_loss(batch._replace(forced=forced)).item() != pytest.approx(free)
