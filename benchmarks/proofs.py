"""Markets for proving the agent: a planted signal it should find, and pure noise where it must find nothing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import polars as pl
import torch

from adapters.synthetic import SyntheticBarSource, SyntheticConfig
from models.dqn import DQNLightning
from models.env import Costs, Sessions, build_sessions
from models.features import FeatureSpec, compute_features
from models.train import PreparedData, greedy_positions, prepare_data, session_log_returns


@dataclass(frozen=True)
class PlantedMarket:
    data: PreparedData
    oracle: np.ndarray  # positions of the policy that knows how the signal was planted
    costs: Costs

    def oracle_share(self, module: DQNLightning) -> float:
        """The agent's excess return over flat as a share of the oracle's, on the held-out sessions."""
        test = self.data.test
        agent = session_log_returns(
            test, greedy_positions(module, test, self.costs), self.costs
        ).mean()
        oracle = session_log_returns(test, self.oracle, self.costs).mean()
        return float(agent / oracle)


def planted_sentiment_market(
    seed: int,
    start: datetime = datetime(2024, 1, 1, tzinfo=UTC),
    split: datetime = datetime(2024, 4, 1, tzinfo=UTC),
    end: datetime = datetime(2024, 5, 1, tzinfo=UTC),
    strength: float = 0.3,
) -> PlantedMarket:
    """SYNTHETIC SPY minutes whose returns follow a sentiment series the agent can see."""
    lag = 5
    source = SyntheticBarSource(
        SyntheticConfig(
            signal="sentiment", signal_strength=strength, sentiment_lag_minutes=lag, seed=seed
        )
    )
    bars = next(source.fetch_bars(["SPY"], "1Min", start, end))
    sentiment = source.fetch_sentiment(["SPY"], start, end)
    spec = FeatureSpec(symbols=("SPY",), sentiment=True)
    data = prepare_data(bars, spec, (start, split), (split, end), sentiment=sentiment)
    # The next bar's return follows the sentiment of (lag - 1) bars ago, public at decision time.
    rows = compute_features(bars, spec, sentiment).filter(pl.col("ts") >= split)
    rows = rows.with_columns(pl.col("sentiment").shift(lag - 1).over("session").fill_null(0.0))
    raw = build_sessions(rows, rows.select("sentiment").to_numpy())
    oracle = (raw.features[:, :, 0] > 0).to(torch.float32).numpy()
    return PlantedMarket(data, oracle, Costs(0.5, 0.5))


def random_walk_sessions(
    seed: int, n_train: int = 60, n_test: int = 40, length: int = 390, n_features: int = 8
) -> tuple[Sessions, Sessions]:
    """Zero-drift iid returns and features unrelated to them: any edge found here is leakage."""
    g = np.random.default_rng(seed)
    n = n_train + n_test
    returns = g.normal(0, 1e-3, size=(n, length)).astype(np.float32)
    returns[:, -1] = 0
    features = g.normal(0, 1, size=(n, length, n_features)).astype(np.float32)
    everything = Sessions(
        torch.from_numpy(features),
        torch.from_numpy(returns),
        torch.ones(n, length, dtype=torch.bool),
        [str(i) for i in range(n)],
    )
    return everything.subset(np.arange(n_train)), everything.subset(np.arange(n_train, n))


def t_stat(per_session: np.ndarray) -> float:
    std = float(per_session.std(ddof=1))
    return 0.0 if std == 0 else float(per_session.mean() / (std / np.sqrt(len(per_session))))
