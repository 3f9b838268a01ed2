"""Rewards (models.rewards): drawdown penalty, differential Sharpe by hand, batch play == step-wise env, validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.dqn import DQNLightning, DQNParams, act_sessions
from models.env import Costs, Sessions, VecMarketEnv
from models.qnet import Architecture
from models.rewards import RewardShaper, RewardSpec, shape_rewards

TINY = Architecture(fast_hidden=8, slow_hidden=4, head_hidden=8, slow_stride=5)


def _one(growth: list[float], spec: RewardSpec) -> np.ndarray:
    g = np.array([growth])
    return shape_rewards(spec, g, np.ones_like(g, dtype=bool)).astype(np.float64)[0]


def test_drawdown_reward_is_log_growth_while_rising_and_pays_each_deepening() -> None:
    rising = [0.01, 0.0, 0.02, 0.005]
    plain = _one(rising, RewardSpec("log_growth", 100.0))
    assert np.array_equal(_one(rising, RewardSpec("drawdown", 100.0, reward_dd_weight=3.0)), plain)

    # Log money: 0.01, -0.01, -0.005, -0.015, 0.015; drawdown from the 0.01 peak:
    # 0, 0.02, 0.015, 0.025, 0 -> it deepens by 0.02 on bar 2 and by 0.01 on bar 4.
    path = [0.01, -0.02, 0.005, -0.01, 0.03]
    plain = _one(path, RewardSpec("log_growth", 100.0))
    shaped = _one(path, RewardSpec("drawdown", 100.0, reward_dd_weight=3.0))
    deepening = np.array([0.0, 0.02, 0.0, 0.01, 0.0])
    assert shaped == pytest.approx(plain - 100.0 * 3.0 * deepening, abs=1e-5)
    assert (shaped[[1, 3]] < plain[[1, 3]]).all()
    # A drawdown below the session's start counts too (the start is the first peak).
    assert _one([-0.01], RewardSpec("drawdown", 1.0, 1.0))[0] == pytest.approx(-0.02)


def test_differential_sharpe_matches_a_hand_computation() -> None:
    eta, scale = 0.5, 10.0
    r = [0.02, -0.01, 0.03, 0.0]
    # By hand: A, B start at 0; D_t = (B dA - A dB / 2) / (B - A^2)^1.5 with the previous A, B.
    # t1: var 0 -> D = 0 (guard); A = 0.01, B = 0.0002.
    # t2: dA = -0.02, dB = 0.0001 - 0.0002 = -0.0001, var = 0.0002 - 0.0001 = 0.0001,
    #     D = (0.0002 * -0.02 - 0.5 * 0.01 * -0.0001) / 0.0001^1.5 = -0.0000035 / 1e-6 = -3.5;
    #     A = 0.0, B = 0.00015.
    # t3: dA = 0.03, dB = 0.0009 - 0.00015 = 0.00075, var = 0.00015,
    #     D = (0.00015 * 0.03) / 0.00015^1.5 = 0.03 / sqrt(0.00015); A = 0.015, B = 0.000525.
    # t4: dA = -0.015, dB = -0.000525, var = 0.000525 - 0.000225 = 0.0003,
    #     D = (0.000525 * -0.015 + 0.5 * 0.015 * 0.000525) / 0.0003^1.5.
    d = [
        0.0,
        -3.5,
        0.03 / np.sqrt(0.00015),
        (0.000525 * -0.015 + 0.5 * 0.015 * 0.000525) / 0.0003**1.5,
    ]
    expected = eta * scale * np.array(d)
    got = _one(r, RewardSpec("diff_sharpe", scale, dsr_eta=eta))
    assert got == pytest.approx(expected, rel=1e-5)
    # A flat start (no return yet) keeps the guard on: no reward until the variance exists.
    flat_start = _one([0.0, 0.0, 0.02, -0.01], RewardSpec("diff_sharpe", scale, dsr_eta=eta))
    assert flat_start[:3].tolist() == [0.0, 0.0, 0.0] and flat_start[3] != 0.0


def test_a_session_that_is_not_active_keeps_its_state() -> None:
    spec = RewardSpec("diff_sharpe", 1.0, dsr_eta=0.5)
    shaper = RewardShaper(spec, 2)
    shaper.step(np.array([0.02, 0.02]), np.array([True, True]))
    assert shaper.step(np.array([0.5, 0.5]), np.array([True, False]))[1] == 0.0
    both = shaper.step(np.array([0.03, 0.03]), np.array([True, True]))
    alone = RewardShaper(spec, 1)
    alone.step(np.array([0.02]), np.array([True]))
    assert both[1] == alone.step(np.array([0.03]), np.array([True]))[0]


def _sessions() -> Sessions:
    """Synthetic: 5 sessions of 25 bars, one shorter, forced flat on the last bars."""
    g = torch.Generator().manual_seed(4)
    n, t = 5, 25
    mask = torch.ones(n, t, dtype=torch.bool)
    mask[0, 18:] = False
    returns = torch.randn(n, t, generator=g) * 2e-3
    returns[~mask] = 0
    returns[0, 17] = 0
    returns[:, -1] = 0
    forced = torch.zeros(n, t, dtype=torch.bool)
    forced[:, t - 1] = True
    forced[0, 17] = True
    return Sessions(torch.randn(n, t, 3, generator=g), returns, mask, list("abcde"), forced)


@pytest.mark.parametrize(
    "spec",
    [
        RewardSpec("log_growth", 100.0),
        RewardSpec("drawdown", 100.0, reward_dd_weight=2.0),
        RewardSpec("diff_sharpe", 100.0, dsr_eta=0.05),
    ],
    ids=lambda s: s.reward,
)
def test_batch_play_and_the_step_wise_env_give_the_same_rewards(spec: RewardSpec) -> None:
    sessions = _sessions()
    costs = Costs(3.0, 2.0)
    torch.manual_seed(0)
    params = DQNParams(
        reward=spec.reward, reward_dd_weight=spec.reward_dd_weight, dsr_eta=spec.dsr_eta
    )
    module = DQNLightning(3, TINY, params)
    played = act_sessions(module.online, sessions, costs, 0.7, np.random.default_rng(2), params)
    assert (played["rewards"] != 0).sum() > 40

    env = VecMarketEnv(sessions, costs, 1.0, spec)
    for _ in range(2):  # reset() restarts the reward state: the replay earns the same again
        env.reset()
        rewards, growth, step = [], [], 0
        while not bool(env.done.all()):
            before = env.money.clone()
            active = (~env.done).numpy()
            _, reward, _, _ = env.step(torch.as_tensor(played["actions"][:, step]))
            rewards.append(reward.numpy())
            growth.append(np.where(active, torch.log(env.money / before).numpy(), 0.0))
            step += 1
        got = np.stack(rewards, axis=1)
        # The same path earns the same rewards, to the bit.
        assert np.array_equal(got, played["rewards"][:, : got.shape[1]])
        # Exactly the batch shaping of the env's own log growth: one implementation.
        g = np.stack(growth, axis=1)
        valid = np.arange(g.shape[1])[None, :] < sessions.lengths.numpy()[:, None] - 1
        assert np.array_equal(got, shape_rewards(spec, g, valid))
    assert played["rewards"][0, 17:].tolist() == [0.0] * 8  # past the short session's end


def test_act_sessions_defaults_to_log_growth_times_100() -> None:
    sessions = _sessions()
    torch.manual_seed(0)
    module = DQNLightning(3, TINY, DQNParams())
    rng = np.random.default_rng(2)
    a = act_sessions(module.online, sessions, Costs(3.0, 2.0), 0.7, rng)
    b = act_sessions(
        module.online, sessions, Costs(3.0, 2.0), 0.7, np.random.default_rng(2), DQNParams()
    )
    assert np.array_equal(a["rewards"], b["rewards"])
    steps = a["steps"]
    assert a["rewards"].sum(axis=1) / 100 == pytest.approx(np.log(a["final_money"]), abs=1e-5)
    assert steps.tolist() == [17, 24, 24, 24, 24]


def test_an_unknown_reward_or_bad_settings_fail_at_construction() -> None:
    with pytest.raises(ValueError, match="reward 'sharpe'"):
        DQNParams(reward="sharpe")
    with pytest.raises(ValueError, match="dsr_eta"):
        DQNParams(reward="diff_sharpe", dsr_eta=0.0)
    with pytest.raises(ValueError, match="reward_dd_weight"):
        DQNParams(reward="drawdown", reward_dd_weight=-1.0)
    with pytest.raises(ValueError, match="reward 'x'"):
        RewardSpec("x")
    # Recorded only when not the default (older runs' keys unchanged).
    assert "reward" not in DQNParams().to_dict()
    d = DQNParams(reward="diff_sharpe", dsr_eta=0.05).to_dict()
    assert d["reward"] == "diff_sharpe" and d["dsr_eta"] == 0.05
    assert DQNParams.from_dict(d).reward == "diff_sharpe"
