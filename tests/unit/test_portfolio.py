"""The allocator's panel from a coin agent, agents trained in threads, and sha256 checks of every artifact folder."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from models.allocator import AllocatorParams, ExportedAllocator, allocator_sha256, save_allocator
from models.dqn import DQNParams
from models.env import Costs, Sessions
from models.features import FeatureScaler, FeatureSpec, compute_features
from models.forecaster import ForecasterConfig, save_forecaster, train_booster
from models.portfolio import compute_allocator_panel, compute_q_advantage
from models.qnet import Architecture, NestedLSTMQNet
from models.registry import (
    AgentPolicy,
    ModelLoadError,
    artifact_sha256,
    save_agent,
    verify_artifact,
)
from models.train import train_dqn

T0 = datetime(2024, 3, 1, tzinfo=UTC)
COIN = "BTC/USD"


def coin_bars(closes_per_day: list[list[float]]) -> pl.DataFrame:
    """SYNTHETIC bars of one coin, one bar per 10 minutes from 00:00 UTC of each day."""
    ts, close = [], []
    for d, day in enumerate(closes_per_day):
        for i, c in enumerate(day):
            ts.append(T0 + timedelta(days=d, minutes=10 * i))
            close.append(c)
    arr = np.array(close)
    return pl.DataFrame(
        {
            "symbol": COIN,
            "timeframe": "1Min",
            "ts": ts,
            "open": arr,
            "high": arr * 1.001,
            "low": arr * 0.999,
            "close": arr,
            "volume": 1.0,
            "vwap": arr,
        },
        schema_overrides={"ts": pl.Datetime("us", "UTC")},
    )


def test_panel_rows_are_known_at_the_end_of_their_day() -> None:
    bars = coin_bars([[100, 101, 102], [102, 99, 96], [96, 98, 99.84]])
    q = bars.select("ts").with_columns(q_adv=pl.Series([1.0, 2.0, 3.0, -1.0, -1.0, -4.0, 0, 0, 0]))
    forecasts = pl.DataFrame(
        {
            "ts": [
                T0 + timedelta(minutes=5),
                T0 + timedelta(days=1, minutes=20),
                T0 + timedelta(days=1, minutes=25),
            ],
            "symbol": COIN,
            "forecast": [0.1, -0.2, 0.9],  # the last one comes after day 2's last bar (00:20)
        },
        schema_overrides={"ts": pl.Datetime("us", "UTC")},
    )
    panel = compute_allocator_panel(COIN, bars, q, None, forecasts, drawdown_days=2)
    assert panel.get_column("period").to_list() == [T0 + timedelta(days=d) for d in (1, 2, 3)]
    assert panel.get_column("q_adv").to_list() == pytest.approx([2.0, -2.0, 0.0])
    assert panel.get_column("forecast").to_list() == [0.1, -0.2, 0.9]
    assert panel.get_column("sentiment").to_list() == [0.0, 0.0, 0.0]  # no sentiment: 0
    # The next day's close over this day's; unknown for the newest day.
    assert panel.get_column("next_return").to_list()[:2] == pytest.approx([96 / 102 - 1, 0.04])
    assert panel.get_column("next_return").to_list()[2] is None
    # Fall from the highest daily close of the last 2 days (day 3 no longer sees day 1's 102).
    assert panel.get_column("drawdown").to_list() == pytest.approx([0.0, 96 / 102 - 1, 0.0])
    # Volatility of the day's own bar returns: day 2 does not include the overnight 102 -> 102.
    day2 = np.diff(np.log([102, 99, 96]))
    assert panel.get_column("vol").to_list()[1] == pytest.approx(float(np.std(day2, ddof=1)))


def test_q_advantage_is_what_the_agent_sees_bar_by_bar() -> None:
    spec = FeatureSpec(symbols=(COIN,), return_windows=(1, 2), vol_windows=(3,), volume_window=3)
    bars = coin_bars([[100 + np.sin(i) for i in range(12)] for _ in range(2)])
    torch.manual_seed(3)
    n = len(spec.names())
    net = NestedLSTMQNet(
        n, Architecture(fast_hidden=6, slow_hidden=3, head_hidden=6, slow_stride=4)
    )
    frame = compute_features(bars, spec)
    policy = AgentPolicy(net.eval(), spec, FeatureScaler.fit(frame, spec.names()), {})
    q = compute_q_advantage(policy, bars)
    assert q.height == bars.height
    expected = []
    state = None
    for row, step in zip(
        frame.select(spec.names()).to_numpy(), frame.get_column("step"), strict=True
    ):
        _, values, state = policy.predict((row, 0.0), state, episode_start=step == 0)
        expected.append(values[2] - values[0])
    assert q.get_column("q_adv").to_list() == pytest.approx(expected, abs=1e-5)


def test_agents_trained_in_threads_get_the_same_weights_as_alone() -> None:
    g = torch.Generator().manual_seed(4)
    returns = torch.randn(6, 40, generator=g) * 1e-3
    returns[:, -1] = 0.0
    sessions = Sessions(
        torch.randn(6, 40, 3, generator=g),
        returns,
        torch.ones(6, 40, dtype=torch.bool),
        [f"s{i}" for i in range(6)],
    )
    arch = Architecture(fast_hidden=16, slow_hidden=8, head_hidden=16, slow_stride=5)
    params = DQNParams(cycles=8, train_every=2, batch_sessions=2, checkpoint_every=8)
    torch.set_num_threads(1)

    def weights(seed: int, out: dict[int, dict[str, torch.Tensor]]) -> None:
        module, _ = train_dqn(sessions, arch, params, Costs(), seed)
        out[seed] = {k: v.clone() for k, v in module.online.state_dict().items()}

    alone: dict[int, dict[str, torch.Tensor]] = {}
    for seed in (1, 2, 3):
        weights(seed, alone)
    together: dict[int, dict[str, torch.Tensor]] = {}
    threads = [threading.Thread(target=weights, args=(s, together)) for s in (1, 2, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for seed in (1, 2, 3):
        assert all(torch.equal(alone[seed][k], together[seed][k]) for k in alone[seed]), seed


def test_verify_artifact_knows_agent_forecaster_and_allocator_folders(tmp_path: Path) -> None:
    spec = FeatureSpec(symbols=(COIN,))
    n = len(spec.names())
    torch.manual_seed(0)
    agent_sha = save_agent(
        tmp_path / "agent",
        NestedLSTMQNet(n, Architecture(fast_hidden=4, slow_hidden=2, head_hidden=4)),
        spec,
        FeatureScaler(spec.names(), [0.0] * n, [1.0] * n),
        {},
    )
    rng = np.random.default_rng(0)
    booster = train_booster(
        rng.normal(size=(50, n)),
        rng.normal(size=50),
        spec.names(),
        ForecasterConfig(n_estimators=3, n_jobs=1),
    )
    forecaster_sha = save_forecaster(
        tmp_path / "forecaster", booster, spec, {"horizon_minutes": 60}
    )
    allocator = ExportedAllocator(
        scaler_mean=np.zeros(5),
        scaler_scale=np.ones(5),
        support_vectors=np.zeros((1, 5)),
        dual_coef=np.ones(1),
        intercept=0.0,
        gamma=0.2,
        sigmoid_a=-1.0,
        sigmoid_b=0.0,
        params=AllocatorParams(c=1.0, gamma=0.2, threshold=0.5, cap=0.3, cost_bps=20.0),
    )
    allocator_sha = save_allocator(tmp_path / "allocator", allocator)
    assert agent_sha == artifact_sha256(tmp_path / "agent")
    assert allocator_sha == allocator_sha256(tmp_path / "allocator")
    for name, sha in (
        ("agent", agent_sha),
        ("forecaster", forecaster_sha),
        ("allocator", allocator_sha),
    ):
        row = {"model_id": name, "artifact_path": str(tmp_path / name), "artifact_sha256": sha}
        verify_artifact(row)
        with pytest.raises(ModelLoadError, match="does not match"):
            verify_artifact({**row, "artifact_sha256": "0" * 64})
    meta = tmp_path / "forecaster" / "meta.json"
    meta.write_text(meta.read_text().replace('"horizon_minutes": 60', '"horizon_minutes": 61'))
    with pytest.raises(ModelLoadError, match="does not match"):
        verify_artifact(
            {
                "model_id": "f",
                "artifact_path": str(tmp_path / "forecaster"),
                "artifact_sha256": forecaster_sha,
            }
        )
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="holds none of"):
        verify_artifact(
            {"model_id": "e", "artifact_path": str(tmp_path / "empty"), "artifact_sha256": ""}
        )
