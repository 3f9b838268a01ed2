"""Markets for proving the agent: a planted signal it should find, and pure noise where it must find nothing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import polars as pl
import torch

from adapters.synthetic import SyntheticBarSource, SyntheticConfig
from core.sessions import SessionRule, session_rule
from models.env import Costs, Sessions, build_sessions
from models.features import FeatureSpec, compute_features
from models.train import (
    PreparedData,
    TrainedDQN,
    episode_frame,
    greedy_positions,
    prepare_data,
    session_log_returns,
)


def dp_positions(
    expected: np.ndarray, mask: np.ndarray, costs: Costs, forced: np.ndarray | None = None
) -> np.ndarray:
    """Positions [N, T] in {0, 1} that maximise each session's log return on `expected` after costs.

    `expected[n, t]` is the log return the position held after bar t's decision earns to the
    next bar (as Sessions.returns); the path is played as models.env.play_positions plays it:
    from flat, a change of position pays costs.rate on the value traded (plus the sell fee on
    a sale), `forced` bars (Sessions.forced_flat) are flat, and a session whose last bar is
    forced flat pays the exit at its close. With a 0/1 position the log return of a bar is
    position * return and a trade multiplies money by (1 - cost), so the session's log return
    is additive and a forward pass over the two positions with back-pointers finds its best
    path exactly (Viterbi). Pure numpy; sessions are independent.
    """
    n, t = expected.shape
    mu = expected.astype(np.float64)
    valid = mask.astype(bool)
    flat = np.zeros((n, t), dtype=bool) if forced is None else forced.astype(bool)
    buy = np.log1p(-costs.rate)
    sell = np.log1p(-(costs.rate + costs.sell_fee_rate))
    # gain[p, q]: log money factor of moving from position p to q.
    gain = np.array([[0.0, buy], [sell, 0.0]])
    value = np.tile(np.array([0.0, -np.inf]), (n, 1))  # before the first decision: flat
    back = np.zeros((t, n, 2), dtype=np.int64)
    back[:] = np.array([0, 1])  # inactive steps keep the position
    for step in range(t - 1):
        active = valid[:, step + 1]
        # cand[n, p, q]: best value in p before, then q held over this bar.
        cand = (
            value[:, :, None]
            + gain[None]
            + np.array([0.0, 1.0])[None, None] * mu[:, step, None, None]
        )
        cand[flat[:, step], :, 1] = -np.inf
        best = cand.argmax(axis=1)
        stepped = np.take_along_axis(cand, best[:, None, :], axis=1)[:, 0]
        value = np.where(active[:, None], stepped, value)
        back[step] = np.where(active[:, None], best, back[step])
    lengths = valid.sum(axis=1)
    ends = flat[np.arange(n), np.maximum(lengths - 1, 0)] & (lengths >= 2)
    value[ends, 1] += sell
    pos = value.argmax(axis=1)
    out = np.zeros((n, t), dtype=np.float32)
    for step in range(t - 1, -1, -1):
        out[:, step] = pos
        pos = back[step, np.arange(n), pos]
    return out


# adapters.synthetic's sentiment signal: minute shocks are sqrt(1 - strength) * noise +
# sqrt(strength) * s[t], s a unit-variance AR(1); the sentiment published at minute t is
# tanh(SENTIMENT_GAIN * s[t + lag]); the day's minutes are then bridged to its daily return,
# each minute taking back its variance share of the day's summed moves.
SENTIMENT_GAIN = 0.6


def planted_components(
    visible: np.ndarray, mask: np.ndarray, step_sd: np.ndarray, strength: float
) -> np.ndarray:
    """[2, N, T]: the planted part of each next-bar log return and the bridge's share of it.

    `visible[n, t]` is the published sentiment that reveals bar t's next planted component
    (its (lag - 1) bars old value, see planted_sentiment_market); `step_sd[t]` is the bar's
    return volatility. The signal is sqrt(strength) * sd * s; the bridge spreads minus the
    session's summed signal over its bars in proportion to their variance. The rest of a
    return is noise the sentiment says nothing about.
    """
    s = np.arctanh(np.clip(visible, -1 + 1e-12, 1 - 1e-12)) / SENTIMENT_GAIN
    sd = np.where(mask, step_sd[None, : visible.shape[1]], 0.0)
    signal = np.sqrt(strength) * sd * s
    share = sd**2 / np.maximum((sd**2).sum(axis=1, keepdims=True), 1e-30)
    bridge = -share * signal.sum(axis=1, keepdims=True)
    return np.stack([signal, bridge])


@dataclass(frozen=True)
class PlantedMarket:
    data: PreparedData
    expected: np.ndarray
    """[N, T] expected next-bar log returns of the held-out sessions, given the session's published
    sentiment and the planted structure (planted_components)."""
    costs: Costs

    @property
    def reference(self) -> np.ndarray:
        """The DP reference's positions on the held-out sessions (dp_positions on `expected`)."""
        test = self.data.test
        forced = None if test.forced_flat is None else test.forced_flat.numpy()
        return dp_positions(self.expected, test.mask.numpy(), self.costs, forced)

    def dp_share(self, module: TrainedDQN) -> float:
        """The agent's held-out excess return over flat as a share of the DP reference's.

        The reference is the best position path on the expected returns, which it knows for the
        whole session: in expectation no policy that sees the sentiment as it is published
        beats it; on a finite sample either may be lucky.
        """
        test = self.data.test
        agent = session_log_returns(
            test, greedy_positions(module, test, self.costs), self.costs
        ).mean()
        reference = session_log_returns(test, self.reference, self.costs).mean()
        return float(agent / reference)


def planted_sentiment_market(
    seed: int,
    start: datetime = datetime(2024, 1, 1, tzinfo=UTC),
    split: datetime = datetime(2024, 4, 1, tzinfo=UTC),
    end: datetime = datetime(2024, 5, 1, tzinfo=UTC),
    strength: float = 0.3,
) -> PlantedMarket:
    """SYNTHETIC SPY minutes whose returns follow a sentiment series the agent can see.

    Episodes are cut by SPY's session rule, as the flows cut them: one NYSE day each, flat
    before the close (the env charges that exit).
    """
    lag = 5
    source = SyntheticBarSource(
        SyntheticConfig(
            signal="sentiment", signal_strength=strength, sentiment_lag_minutes=lag, seed=seed
        )
    )
    bars = next(source.fetch_bars(["SPY"], "1Min", start, end))
    sentiment = source.fetch_sentiment(["SPY"], start, end)
    spec = FeatureSpec(symbols=("SPY",), sentiment=True)
    rule = session_rule("SPY", "1Min")
    data = prepare_data(bars, spec, (start, split), (split, end), sentiment=sentiment, rule=rule)
    frame = compute_features(bars, spec, sentiment, calendar=rule.calendar)
    train, test = data.train, data.test
    # Each bar's volatility by its step in the session, from the training sessions only.
    sq = (train.returns.double() ** 2 * train.mask).sum(dim=0)
    step_sd = np.sqrt((sq / train.mask.sum(dim=0).clamp(min=1)).numpy())
    width = max(train.mask.shape[1], test.mask.shape[1])
    step_sd = np.pad(step_sd, (0, width - len(step_sd)), mode="edge")
    parts = {
        name: planted_components(
            _visible_sentiment(frame, bars, spec, span, rule, lag, sessions),
            sessions.mask.numpy(),
            step_sd,
            strength,
        )
        for name, span, sessions in (("train", (start, split), train), ("test", (split, end), test))
    }
    # The planted form is known; the scales of its two parts are fitted on the training
    # sessions (least squares; the step volatility is an average over days).
    on = train.mask.numpy()
    x = parts["train"][:, on].T
    y = train.returns.double().numpy()[on]
    coef = np.linalg.lstsq(x, y, rcond=None)[0]
    expected = np.tensordot(coef, parts["test"], axes=1)
    return PlantedMarket(data, expected, Costs(0.5, 0.5))


def _visible_sentiment(
    frame: pl.DataFrame,
    bars: pl.DataFrame,
    spec: FeatureSpec,
    span: tuple[datetime, datetime],
    rule: SessionRule,
    lag: int,
    sessions: Sessions,
) -> np.ndarray:
    """[N, T] the published sentiment that reveals each bar's next planted component, on `sessions`.

    The next bar's return follows the sentiment of (lag - 1) bars ago, public at decision time.
    """
    rows = episode_frame(frame, bars, spec, span, rule)
    rows = rows.with_columns(pl.col("sentiment").shift(lag - 1).over("session").fill_null(0.0))
    built = build_sessions(rows, rows.select("sentiment").to_numpy())
    if built.keys != sessions.keys:
        raise RuntimeError("the sentiment rows do not line up with the sessions")
    return built.features[:, :, 0].double().numpy()


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
