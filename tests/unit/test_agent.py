"""The DQN agent: env contract, causal network, learning on a planted signal, no edge on noise, resume."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from adapters.synthetic import SyntheticBarSource
from benchmarks.proofs import planted_sentiment_market, random_walk_sessions, t_stat
from models.dqn import DQNParams, act_sessions
from models.env import (
    FLAT,
    HOLD,
    LONG,
    Costs,
    Sessions,
    VecMarketEnv,
    play_positions,
)
from models.features import FeatureScaler, FeatureSpec, compute_features
from models.qnet import Architecture, NestedLSTMQNet
from models.registry import ModelLoadError, artifact_sha256, load_agent, save_agent
from models.train import (
    evaluate,
    greedy_positions,
    prepare_data,
    session_log_returns,
    train_dqn,
)

SMALL = Architecture(fast_hidden=16, slow_hidden=8, head_hidden=16, slow_stride=5)


def random_sessions(
    n: int = 6, t: int = 40, f: int = 3, seed: int = 0, short: bool = True
) -> Sessions:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(n, t, dtype=torch.bool)
    returns = torch.randn(n, t, generator=g) * 1e-3
    if short:  # session 0 ends 10 bars early
        mask[0, t - 10 :] = False
        returns[~mask] = 0
        returns[0, t - 11] = 0
    returns[:, -1] = 0
    return Sessions(torch.randn(n, t, f, generator=g), returns, mask, [f"s{i}" for i in range(n)])


# ---- the environment's contract (in the spirit of SB3's check_env) ----


def test_env_contract() -> None:
    sessions = random_sessions()
    env = VecMarketEnv(sessions, Costs(1.0, 1.0))
    features, position = env.reset()
    assert features.shape == (6, 3) and features.dtype == torch.float32
    assert position.tolist() == [0.0] * 6
    rng = np.random.default_rng(0)
    total = torch.zeros(6)
    steps = 0
    truncated_at: dict[int, int] = {}
    while not bool(env.done.all()):
        action = torch.as_tensor(rng.integers(0, 3, size=6))
        (obs, pos), reward, terminated, truncated = env.step(action)
        steps += 1
        assert obs.shape == (6, 3) and reward.shape == (6,) and pos.shape == (6,)
        assert not bool(terminated.any()), "a session close is a truncation, never terminal"
        assert torch.isfinite(reward).all()
        total += reward
        for i in torch.nonzero(truncated).flatten().tolist():
            truncated_at[i] = steps
    assert truncated_at == {0: 29, 1: 39, 2: 39, 3: 39, 4: 39, 5: 39}
    # Rewards add up to the log growth of money.
    assert torch.allclose(total.double() / 100, torch.log(env.money / 10_000.0), atol=1e-5)
    assert bool((env.max_money >= env.money).all())
    with pytest.raises(RuntimeError, match="reset"):
        env.step(torch.zeros(6, dtype=torch.long))
    env.reset()
    with pytest.raises(ValueError, match="actions"):
        env.step(torch.full((6,), 7))


def test_actions_and_costs() -> None:
    sessions = random_sessions(n=1, t=4, short=False)
    sessions.returns[0, :3] = torch.tensor([0.01, -0.02, 0.03])
    env = VecMarketEnv(sessions, Costs(5.0, 5.0), initial_money=1.0)
    env.reset()
    env.step(torch.tensor([LONG]))  # buy: pay 10 bps, earn +1%
    assert env.money.item() == pytest.approx((1 - 0.001) * np.exp(0.01), rel=1e-6)
    env.step(torch.tensor([HOLD]))  # stay long through -2%
    env.step(torch.tensor([FLAT]))  # sell: pay 10 bps, miss +3%
    assert env.money.item() == pytest.approx((1 - 0.001) ** 2 * np.exp(0.01 - 0.02), rel=1e-6)
    # The fast evaluation path uses the same money model.
    positions = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    assert play_positions(
        sessions.returns, sessions.mask, positions, Costs(5.0, 5.0)
    ).item() == pytest.approx(env.money.item(), rel=1e-6)


# ---- the network is causal, and step-by-step inference equals the unrolled pass ----


def test_step_by_step_equals_unrolled() -> None:
    torch.manual_seed(0)
    net = NestedLSTMQNet(3, SMALL)
    x = torch.randn(1, 23, 3)
    unrolled = net.encode(x)[0]
    state = net.initial_state(1)
    for t in range(23):
        enc, state = net.encode_step(x[:, t], state)
        assert torch.allclose(enc[0], unrolled[t], atol=1e-5), t


def test_changing_the_future_leaves_past_encodings_unchanged() -> None:
    torch.manual_seed(0)
    net = NestedLSTMQNet(3, SMALL)
    x = torch.randn(2, 30, 3)
    y = x.clone()
    y[:, 12:] = torch.randn(2, 18, 3) * 5
    assert torch.equal(net.encode(x)[:, :12], net.encode(y)[:, :12])


def utc(*a: int) -> datetime:
    return datetime(*a, tzinfo=UTC)  # type: ignore[misc]


def test_features_at_or_before_t_ignore_bars_after_t() -> None:
    source = SyntheticBarSource()
    spec = FeatureSpec()
    bars = pl.concat(
        list(source.fetch_bars(list(spec.symbols), "1Min", utc(2024, 3, 4), utc(2024, 3, 7)))
    )
    cut = utc(2024, 3, 5, 16, 0)
    altered = bars.with_columns(
        pl.when(pl.col("ts") > cut).then(pl.col(c) * 1.5).otherwise(pl.col(c)).alias(c)
        for c in ("open", "high", "low", "close", "volume")
    )
    names = spec.names()
    before = compute_features(bars, spec).filter(pl.col("ts") <= cut).select("ts", *names)
    after = compute_features(altered, spec).filter(pl.col("ts") <= cut).select("ts", *names)
    assert before.height == 390 + 91  # a full session, then 14:30-16:00 UTC
    assert before.equals(after)
    # ret_next is the outcome, not a feature: it is the only column allowed to see t+1.
    assert "ret_next" not in names


def test_decisions_at_or_before_t_ignore_the_future() -> None:
    torch.manual_seed(0)
    net = NestedLSTMQNet(3, SMALL)
    sessions = random_sessions(n=3, t=40)
    future = Sessions(
        sessions.features.clone(), sessions.returns.clone(), sessions.mask, sessions.keys
    )
    future.features[:, 20:] += 3.0
    future.returns[:, 20:] *= -1
    a = act_sessions(net, sessions, Costs(), 0.0, np.random.default_rng(0))["actions"]
    b = act_sessions(net, future, Costs(), 0.0, np.random.default_rng(0))["actions"]
    assert np.array_equal(a[:, :20], b[:, :20])


# ---- learning works, and finds nothing where there is nothing ----


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_agent_earns_at_least_half_the_dp_reference_excess_on_unseen_sessions(seed: int) -> None:
    market = planted_sentiment_market(seed=10 + seed)
    module, history = train_dqn(
        market.data.train,
        Architecture(),
        DQNParams(cycles=400, exploration_fraction=0.3),
        market.costs,
        seed=seed,
    )
    assert len(history) == 400
    test = market.data.test
    reference = session_log_returns(test, market.reference, market.costs).mean()
    assert reference > 0.005, "the planted signal should be worth trading"
    share = market.dp_share(module)
    assert share >= 0.5, f"agent earned {share:.0%} of the DP reference's excess return"


@pytest.mark.slow
def test_no_edge_on_a_pure_random_walk() -> None:
    train, test = random_walk_sessions(seed=123)
    costs = Costs(0.5, 0.5)
    for seed in (1, 2):
        module, _ = train_dqn(train, SMALL, DQNParams(cycles=200), costs, seed=seed)
        t = t_stat(session_log_returns(test, greedy_positions(module, test, costs), costs))
        assert abs(t) < 2, f"seed {seed}: an edge on pure noise (t={t:.2f}) means leakage"


# ---- checkpoints: safe formats, and a resumed run equals an uninterrupted one ----


def test_resume_after_a_stop_gives_identical_results(tmp_path: Path) -> None:
    sessions = random_sessions(n=8, t=40, seed=3)
    params = DQNParams(
        cycles=48, train_every=4, batch_sessions=4, checkpoint_every=16, target_update_every=3
    )
    straight, hist_a = train_dqn(sessions, SMALL, params, Costs(), seed=5)
    ckpt = tmp_path / "ckpt"
    _, partial = train_dqn(
        sessions, SMALL, params, Costs(), seed=5, checkpoint_dir=ckpt, stop_after_cycles=16
    )
    assert len(partial) == 16
    assert (ckpt / "LATEST").read_text() == "cycle-0000016"
    files = sorted(p.name for p in (ckpt / "cycle-0000016").iterdir())
    assert files == [
        "manifest.json",
        "online.safetensors",
        "optimizer.safetensors",
        "replay.npz",
        "target.safetensors",
    ]
    with np.load(ckpt / "cycle-0000016" / "replay.npz", allow_pickle=False) as replay:
        assert int(replay["meta"][0]) == 16
    resumed, hist_b = train_dqn(
        sessions, SMALL, params, Costs(), seed=5, checkpoint_dir=ckpt, resume=True
    )
    assert len(hist_b) == 48
    assert [h.final_money for h in hist_a] == [h.final_money for h in hist_b]
    for (name, a), (_, b) in zip(
        straight.online.state_dict().items(), resumed.online.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


# ---- registry artifacts: checked before loading; predict() is the one inference path ----


def test_saved_agent_loads_checked_and_predicts_like_training(tmp_path: Path) -> None:
    start, mid, end = utc(2024, 3, 1), utc(2024, 3, 20), utc(2024, 4, 1)
    spec = FeatureSpec(symbols=("SPY", "BND"))
    bars = pl.concat(list(SyntheticBarSource().fetch_bars(list(spec.symbols), "1Min", start, end)))
    data = prepare_data(bars, spec, (start, mid), (mid, end))
    module, _ = train_dqn(
        data.train, SMALL, DQNParams(cycles=16, train_every=4, batch_sessions=4), Costs(), seed=1
    )
    sha = save_agent(tmp_path / "m", module.online, spec, data.scaler, {"seed": 1})
    assert sha == artifact_sha256(tmp_path / "m")
    policy = load_agent(tmp_path / "m", sha, running_spec=spec)

    # Replay one held-out session bar by bar through predict(): same actions as the batch path.
    frame = compute_features(bars, spec).filter(pl.col("ts") >= mid)
    first = frame.filter(pl.col("session") == frame["session"][0])
    expected = act_sessions(
        module.online, data.test.subset([0]), Costs(), 0.0, np.random.default_rng(0)
    )["actions"][0]
    state, position = None, 0.0
    for t, row in enumerate(first.select(spec.names()).iter_rows()):
        if t == first.height - 1:
            break
        action, q, state = policy.predict((np.array(row), position), state, episode_start=(t == 0))
        assert q.shape == (3,)
        assert action == expected[t], t
        position = 0.0 if action == FLAT else 1.0 if action == LONG else position

    with pytest.raises(ModelLoadError, match="features"):
        load_agent(tmp_path / "m", sha, running_spec=FeatureSpec(symbols=("SPY",)))
    weights = tmp_path / "m" / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    with pytest.raises(ModelLoadError, match="sha256"):
        load_agent(tmp_path / "m", sha)


def test_predict_sessions_is_q_step_bar_by_bar_nan_rule_included(tmp_path: Path) -> None:
    # The batched door backtests use and the step live uses give the same Q-values for every
    # bar of every session -- a row with a NaN feature too (NaN Q there; the state advanced on
    # zeros, so the bars after it agree as well), not NaN for the rest of the session.
    start, end = utc(2024, 3, 4), utc(2024, 3, 7)  # Monday to Wednesday: 3 sessions
    spec = FeatureSpec(symbols=("SPY",))
    bars = pl.concat(list(SyntheticBarSource().fetch_bars(["SPY"], "1Min", start, end)))
    frame = compute_features(bars, spec)
    raw = frame.select(spec.names()).to_numpy().astype(np.float64)
    sessions, steps = frame["session"].to_numpy(), frame["step"].to_numpy()
    first_key = sessions[0]
    poisoned = int(np.flatnonzero(sessions == first_key)[5])
    raw[poisoned, 0] = np.nan
    net = NestedLSTMQNet(raw.shape[1], SMALL)
    scaler = FeatureScaler.fit(frame, spec.names())
    sha = save_agent(tmp_path / "m", net, spec, scaler, {})
    policy = load_agent(tmp_path / "m", sha)

    batched = policy.predict_sessions(raw, sessions, steps)
    assert len(batched) == len(np.unique(sessions)) >= 2
    for key in list(batched)[:2]:
        rows = np.flatnonzero(sessions.astype(str) == key)
        state = None
        for t, i in enumerate(rows):
            q, state = policy.q_step(raw[i], state, episode_start=(t == 0))
            np.testing.assert_allclose(batched[key][t], q, rtol=1e-5, atol=1e-6, equal_nan=True)
    nan_rows = np.isnan(batched[str(first_key)]).all(axis=(1, 2))
    assert nan_rows.tolist() == [t == 5 for t in range(len(nan_rows))]


def test_evaluation_reports_the_agent_beside_baselines() -> None:
    sessions = random_sessions(n=6, t=40)
    module, _ = train_dqn(
        sessions, SMALL, DQNParams(cycles=8, train_every=4, batch_sessions=2), Costs(), seed=0
    )
    ev = evaluate(module, sessions, Costs())
    assert set(ev) == {"agent", "buy_and_hold", "flat", "momentum_rule"}
    assert ev["flat"]["total_return"] == 0.0
    # Without bars the sessions' returns are chained into one book: one entry, its costs once.
    # The chained closes start at 1 and each bar opens at the previous close: decided on the
    # first close, filled at the second bar's open (1.0), sized on the decision close.
    rets = sessions.returns.numpy().astype(np.float64)[sessions.mask.numpy()]
    growth = np.exp(rets[:-1].sum())
    expected_bh = growth - (1 + Costs().slippage_bps / 1e4) * (1 + Costs().fee_bps / 1e4)
    assert ev["buy_and_hold"]["total_return"] == pytest.approx(expected_bh)


def test_a_time_budget_stops_early_and_a_rerun_continues(tmp_path: Path) -> None:
    sessions = random_sessions(n=8, t=40, seed=3)
    params = DQNParams(cycles=400, train_every=4, batch_sessions=4, checkpoint_every=400)
    _, first = train_dqn(
        sessions, SMALL, params, Costs(), seed=5, checkpoint_dir=tmp_path, budget_s=0.0
    )
    assert len(first) < 400
    _, rest = train_dqn(
        sessions, SMALL, params, Costs(), seed=5, checkpoint_dir=tmp_path, resume=True
    )
    assert len(rest) == 400


def test_issue_17_settings_train_save_load_and_predict_like_training(tmp_path: Path) -> None:
    """Five exposure levels, the differential Sharpe reward, two updates per block and an
    ensemble of two: trained, saved as one artifact, loaded, and predicting as training plays."""
    from models.ensemble import EnsembleQNet

    start, mid, end = utc(2024, 3, 1), utc(2024, 3, 12), utc(2024, 3, 16)
    spec = FeatureSpec(symbols=("SPY",))
    bars = pl.concat(list(SyntheticBarSource().fetch_bars(list(spec.symbols), "1Min", start, end)))
    data = prepare_data(bars, spec, (start, mid), (mid, end))
    params = DQNParams(
        cycles=8,
        train_every=4,
        batch_sessions=2,
        action_levels=(0.0, 0.25, 0.5, 0.75, 1.0),
        reward="diff_sharpe",
        updates_per_block=2,
        ensemble_size=2,
    )
    module, history = train_dqn(data.train, SMALL, params, Costs(), seed=3)
    assert len(history) == 8
    assert isinstance(module.online, EnsembleQNet) and module.online.size == 2
    # Each member made updates_per_block updates after each of its two blocks.
    assert all(m.updates == 4 for m in module.members)  # type: ignore[union-attr]
    sha = save_agent(tmp_path / "m", module.online, spec, data.scaler, {"seed": 3})
    policy = load_agent(tmp_path / "m", sha, running_spec=spec)
    assert policy.meta["action_levels"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert policy.meta["ensemble_size"] == 2

    frame = compute_features(bars, spec).filter(pl.col("ts") >= mid)
    first = frame.filter(pl.col("session") == frame["session"][0])
    expected = act_sessions(
        module.online, data.test.subset([0]), Costs(), 0.0, np.random.default_rng(0)
    )["actions"][0]
    levels = policy.net.actions
    state, position = None, 0.0
    for t, row in enumerate(first.select(spec.names()).iter_rows()):
        if t == first.height - 1:
            break
        action, q, state = policy.predict((np.array(row), position), state, episode_start=(t == 0))
        assert q.shape == (5,)
        assert action == expected[t], t
        position = levels.levels[action]
