"""The allocator's per-coin panel built from a coin agent: daily q_adv, forecast, sentiment, volatility, drawdown, next return, the agent's next-day trading. Pure.

One row per coin and UTC day d, stamped ``period`` = the end of d (00:00 UTC of d + 1): the
moment every input of the row is known and the allocator decides the weights for the next
day. Inputs use bars starting in d (and before) only:

- ``q_adv``: the mean over d's bars of the agent's Q(long) - Q(flat), from a flat position,
  each bar's Q computed on the session (UTC day) so far -- as the agent would see it live;
- ``forecast`` and ``sentiment``: the newest values at or before d's last bar (0 when none);
- ``vol``: the standard deviation of d's one-bar log returns;
- ``drawdown``: d's close over the highest daily close of the last ``drawdown_days`` days,
  minus 1 (<= 0).

``next_return`` = close(d + 1) / close(d) - 1 is the outcome (labels, evaluation), null
when d + 1 has no bars (the newest day). It is never an input.

:func:`with_agent_trading` adds what the allocator is fitted and judged on: the agent's own
trading return on d + 1 (``next_trade_return``, from :func:`daily_trading_returns` of its
held-out evaluation book), the agent's id and the end of its training data.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import polars as pl
import torch

from models.env import build_sessions
from models.features import compute_features
from models.registry import AgentPolicy

PANEL_COLUMNS = ("period", "symbol", "q_adv", "forecast", "sentiment", "vol", "drawdown")
UTC_TS = pl.Datetime("us", "UTC")


def compute_q_advantage(
    policy: AgentPolicy,
    bars: pl.DataFrame,
    sentiment: pl.DataFrame | None = None,
    forecasts: pl.DataFrame | None = None,
    *,
    chunk_sessions: int = 32,
) -> pl.DataFrame:
    """ts, q_adv for every bar of the policy's traded symbol: Q(long) - Q(flat) from a flat position.

    With target-exposure actions (models.actions.ActionSet levels) "long" is the largest level.

    The features are the policy's own (its spec, its scaler); sessions are encoded whole,
    which equals bar-by-bar encoding (the network is causal). Sessions of a single bar
    (nothing to decide) are left out.
    """
    spec = policy.spec
    frame = compute_features(bars, spec, sentiment, forecasts).sort("ts")
    x = policy.scaler.transform(frame.select(spec.names()).to_numpy())
    sessions = build_sessions(frame, x)
    aset = policy.net.actions
    long_action = 2 if aset.legacy else aset.levels.index(max(aset.levels))
    flat_index = float(aset.index_of(0.0))
    advantages: list[np.ndarray] = []
    with torch.no_grad():
        for i in range(0, len(sessions), chunk_sessions):
            feats = sessions.features[i : i + chunk_sessions]
            enc = policy.net.encode(feats)
            q = policy.net.q(enc, torch.full(enc.shape[:2], flat_index))
            advantages.append((q[..., long_action] - q[..., aset.flat]).numpy())
    if not advantages:
        return pl.DataFrame(schema={"ts": pl.Datetime("us", "UTC"), "q_adv": pl.Float64})
    adv = np.concatenate(advantages)
    mask = sessions.mask.numpy()
    rows, steps = np.nonzero(mask)
    keyed = pl.DataFrame(
        {
            "_key": [sessions.keys[r] for r in rows],
            "step": steps.astype(np.int64),
            "q_adv": adv[rows, steps].astype(np.float64),
        }
    )
    return (
        frame.select("ts", pl.col("session").cast(pl.String).alias("_key"), "step")
        .with_columns(pl.col("step").cast(pl.Int64))
        .join(keyed, on=["_key", "step"], how="inner")
        .select(pl.col("ts").cast(pl.Datetime("us", "UTC")), "q_adv")
        .sort("ts")
    )


def _asof_daily(
    days: pl.DataFrame, values: pl.DataFrame | None, symbol: str, column: str
) -> pl.DataFrame:
    """days (last_ts per day) plus `column`: the newest value at or before each day's last bar (0 if none)."""
    if values is None or values.height == 0:
        return days.with_columns(pl.lit(0.0).alias(column))
    v = (
        values.filter(pl.col("symbol") == symbol)
        .select(pl.col("ts").cast(pl.Datetime("us", "UTC")), pl.col(column).cast(pl.Float64))
        .sort("ts")
    )
    return (
        days.sort("last_ts")
        .join_asof(v, left_on="last_ts", right_on="ts", strategy="backward")
        .drop("ts")
        .with_columns(pl.col(column).fill_nan(None).fill_null(0.0))
    )


def compute_allocator_panel(
    symbol: str,
    bars: pl.DataFrame,
    q_adv: pl.DataFrame,
    sentiment: pl.DataFrame | None = None,
    forecasts: pl.DataFrame | None = None,
    *,
    drawdown_days: int = 30,
) -> pl.DataFrame:
    """The coin's daily panel rows (see the module docstring), sorted by period.

    `bars` are the coin's bars (ts, close; other symbols ignored), `q_adv` comes from
    compute_q_advantage, `sentiment` (ts, symbol, sentiment) and `forecasts` (ts, symbol,
    forecast) are the agent's inputs. Days without a bar have no row.
    """
    if drawdown_days < 1:
        raise ValueError("drawdown_days must be at least 1")
    coin = (
        bars.filter(pl.col("symbol") == symbol)
        .select(pl.col("ts").cast(pl.Datetime("us", "UTC")), pl.col("close").cast(pl.Float64))
        .sort("ts")
        .join(q_adv.select("ts", "q_adv"), on="ts", how="left")
        .with_columns(
            pl.col("ts").dt.truncate("1d").alias("day"),
            pl.col("close").log().diff().alias("_lr"),
        )
        # The first bar of a day must not carry the overnight (previous day's last bar) return.
        .with_columns(
            pl.when(pl.col("day") == pl.col("day").shift(1)).then(pl.col("_lr")).alias("_lr")
        )
    )
    days = (
        coin.group_by("day", maintain_order=True)
        .agg(
            pl.col("ts").last().alias("last_ts"),
            pl.col("close").last().alias("close"),
            pl.col("q_adv").mean().alias("q_adv"),
            pl.col("_lr").std().alias("vol"),
        )
        .sort("day")
    )
    days = _asof_daily(days, forecasts, symbol, "forecast")
    days = _asof_daily(days, sentiment, symbol, "sentiment")
    next_day = pl.col("day").shift(-1)
    return (
        days.sort("day")
        .with_columns(
            (pl.col("day") + pl.duration(days=1)).alias("period"),
            pl.lit(symbol).alias("symbol"),
            pl.col("q_adv").fill_nan(None).fill_null(0.0),
            pl.col("vol").fill_nan(None).fill_null(0.0),
            (
                pl.col("close") / pl.col("close").rolling_max(drawdown_days, min_samples=1) - 1.0
            ).alias("drawdown"),
            pl.when(next_day == pl.col("day") + pl.duration(days=1))
            .then(pl.col("close").shift(-1) / pl.col("close") - 1.0)
            .otherwise(None)
            .alias("next_return"),
        )
        .select(*PANEL_COLUMNS, "next_return")
    )


def daily_trading_returns(ts: pl.Series, returns: np.ndarray) -> pl.DataFrame:
    """day (00:00 UTC), trade_return: per-bar simple returns of a book compounded over each UTC day.

    ``returns`` are the book's per-bar returns in ``ts`` order (models.train's held-out
    streams: greedy positions, fills and costs as the backtest pays them), so a day's return
    is prod(1 + r) - 1 over its bars, position carried overnight included.
    """
    if ts.len() != len(returns):
        raise ValueError(f"{ts.len()} timestamps for {len(returns)} returns")
    return (
        pl.DataFrame({"ts": ts.cast(UTC_TS), "r": np.asarray(returns, dtype=np.float64)})
        .sort("ts")
        .group_by(pl.col("ts").dt.truncate("1d").alias("day"), maintain_order=True)
        .agg(((pl.col("r") + 1.0).product() - 1.0).alias("trade_return"))
    )


def with_agent_trading(
    panel: pl.DataFrame, daily: pl.DataFrame, agent_id: str, trained_until: datetime
) -> pl.DataFrame:
    """The coin's panel plus next_trade_return, agent_id, agent_trained_until.

    A row stamped ``period`` (the end of day d) decides the weight for the day that starts
    at ``period``: its ``next_trade_return`` is the agent's trading return that day (from
    :func:`daily_trading_returns`; null where the agent's stream does not cover it).
    """
    trades = daily.select(pl.col("day").cast(UTC_TS).alias("period"), "trade_return")
    return (
        panel.with_columns(pl.col("period").cast(UTC_TS))
        .join(trades, on="period", how="left", maintain_order="left")
        .rename({"trade_return": "next_trade_return"})
        .with_columns(
            pl.lit(agent_id).alias("agent_id"),
            pl.lit(trained_until).cast(UTC_TS).alias("agent_trained_until"),
        )
    )
