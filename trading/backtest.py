"""Backtests: a registered agent over warehouse bars through the live path (engine + simulated broker).

Features are computed once for the whole range (the feature functions are causal, so
row t is what live computes at t) and Q-values once per session; the per-bar loop is the
same `TradingEngine.decide` that live trading calls. Buy-and-hold and a simple momentum
rule (trading.baselines) run on the same bars and costs beside it, each with its own fills.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import polars as pl

from adapters.clock import ManualClock
from adapters.sim_broker import SimulatedBroker
from core.account_rules import AccountRules
from core.fills import fill_references
from core.sessions import SessionRule, session_rule, timeframe_span
from core.universe import is_coin
from models.env import assign_episodes
from models.features import FeatureSpec, compute_features
from models.registry import AgentPolicy
from trading.baselines import benchmark_books, benchmark_metrics
from trading.engine import Book, EngineConfig, PrecomputedQ, TradingEngine
from trading.ledger import SCHEMAS, Ledger
from trading.metrics import summarize
from trading.orders import OrderManager
from trading.risk import RiskEngine, RiskLimits, enforce_account_rules, see_simulated_account


@dataclass
class BacktestResult:
    run_id: str
    symbol: str
    fills: pl.DataFrame
    equity: pl.DataFrame  # ts, strategy, buy_and_hold, baseline (momentum rule), position_value
    actions: pl.DataFrame  # ts, symbol, action, position
    prices: pl.DataFrame  # ts, symbol, close
    metrics: dict[str, dict[str, float]]
    decisions: int
    orders: int


def session_q_paths(policy: AgentPolicy, frame: pl.DataFrame) -> dict[str, np.ndarray]:
    """Q-values [T, P, A] of every session in a feature frame (P: the positions of the policy's
    action set, policy.net.actions.grid), each session in one batched pass
    (AgentPolicy.predict_sessions: live's step rule, NaN included)."""
    raw = frame.select(policy.spec.names()).to_numpy().astype(np.float64)
    return policy.predict_sessions(
        raw, frame.get_column("session").to_numpy(), frame.get_column("step").to_numpy()
    )


def warmup_days(spec: FeatureSpec, rule: SessionRule) -> int:
    """Calendar days of bars to load before a backtest's start so the first decision sees every
    feature window full: the longest window in bars of the timeframe, spread over the
    calendar's trading hours, weekends and holidays (never less than a week)."""
    need = max((*spec.return_windows, *spec.vol_windows, spec.volume_window)) + 1
    span = timeframe_span(rule.timeframe)
    if span >= timedelta(days=1):
        per_day = 1.0 / (span / timedelta(days=1))
    elif rule.has_close:
        per_day = max(1.0, timedelta(minutes=390) / span)  # a regular NYSE-like session
    else:
        per_day = timedelta(days=1) / span
    trading_days = need / per_day
    week = 7.0 / (7.0 if rule.calendar == "24/7" else 5.0)
    return max(7, math.ceil(trading_days * week * 1.1) + 5)


def run_backtest(
    policy: AgentPolicy,
    bars: pl.DataFrame,
    *,
    model_id: str,
    run_id: str,
    start: datetime,
    end: datetime,
    ledger: Ledger,
    cash: float = 100_000.0,
    fee_bps: float = 1.0,
    slippage_bps: float = 1.0,
    limits: RiskLimits | None = None,
    flatten_before_close_min: float = 1.0,
    progress: Callable[[int, int], None] | None = None,
    sentiment: pl.DataFrame | None = None,
    forecasts: pl.DataFrame | None = None,
    rule: SessionRule | None = None,
    sell_fee_bps: float = 0.0,
    account_rules: AccountRules | None = None,
    impact_bps: float = 0.0,
    max_volume_share: float | None = None,
) -> BacktestResult:
    """Run the agent over bars in [start, end) (bars before `start` only warm the features up).

    `rule` (core.sessions) cuts the range into the policy's episodes and trading days, as
    training's held-out evaluation cuts it, and says whether positions go flat before a
    session's close; None infers it from the symbol and flatten_before_close_min (0: never
    flat). A given rule's flatten_min wins over flatten_before_close_min. Costs: `fee_bps` and
    `slippage_bps` on every fill, `sell_fee_bps` more on sells (core.costs.CostModel).
    `account_rules` (core.account_rules; default ideal: none) are the simulated broker's, and
    the risk engine sees the broker's buying power and day trades before each decision so it
    refuses (or cuts) what the broker would refuse. `impact_bps` (square-root size impact on
    the bar's volume) and `max_volume_share` (partial fills) are the simulated broker's; 0 and
    None, the defaults, fill whole orders at the half-spread as training's evaluation does.
    """
    spec = policy.spec
    symbol = spec.traded
    if rule is None:
        rule = session_rule(
            symbol,
            spec.timeframe,
            flatten_at_close=flatten_before_close_min > 0,
            flatten_min=flatten_before_close_min,
        )
    features = compute_features(bars, spec, sentiment, forecasts, calendar=rule.calendar)
    traded = bars.filter(pl.col("symbol") == symbol).select(
        "ts",
        "open",
        "close",
        pl.col("volume") if "volume" in bars.columns else pl.lit(None, pl.Float64).alias("volume"),
    )
    in_range = features.filter((pl.col("ts") >= start) & (pl.col("ts") < end)).sort("ts")
    if in_range.height == 0:
        raise ValueError(f"no {symbol} bars between {start} and {end}")
    # Episodes restart the policy's recurrent state; trading days reset the daily-loss limit.
    frame = assign_episodes(in_range, traded, rule).join(traded, on="ts", how="left").sort("ts")
    q_paths = session_q_paths(policy, frame)
    names = spec.names()
    x = frame.select(names).to_numpy()
    ts_list = frame.get_column("ts").to_list()
    closes = frame.get_column("close").to_numpy()
    # Plain lists: indexing them per bar is several times cheaper than numpy scalars.
    # The price each bar fills waiting orders at: its open, or a close-only bar's close
    # (core.fills.fill_references, the rule training's evaluation and the baselines use).
    open_list = fill_references(
        frame.get_column("open").cast(pl.Float64).to_numpy(), closes
    ).tolist()
    close_list = closes.astype(np.float64).tolist()
    # The bar's volume: what partial fills and the size impact read (None: unknown).
    volume_list = frame.get_column("volume").cast(pl.Float64).to_list()
    steps = frame.get_column("step").to_list()
    span = timeframe_span(rule.timeframe)
    # Where an episode or a trading day begins: {bar index: (episode key or None, day or
    # None, the day's session close where positions go flat before it, else None)}. A dict
    # lookup per bar costs what the old per-bar comparison did (the minute path).
    new_episode = (pl.col("session") != pl.col("session").shift()).fill_null(True)
    new_day = (pl.col("day") != pl.col("day").shift()).fill_null(True)
    marks = (
        frame.with_row_index("i")
        .filter(new_episode | new_day)
        .select(
            "i",
            pl.when(new_episode).then(pl.col("session")),
            pl.when(new_day).then(pl.col("day")),
            pl.col("session_close") if rule.flattens else pl.lit(None).alias("session_close"),
            new_day.alias("new_day"),
        )
    )
    events: dict[int, tuple[Any, Any, datetime | None, bool]] = {
        int(i): (episode, day, close, bool(is_new_day))
        for i, episode, day, close, is_new_day in marks.iter_rows()
    }
    clock = ManualClock(ts_list[0])
    sim = SimulatedBroker(
        clock,
        cash=cash,
        fee_bps=fee_bps,
        slippage_bps=slippage_bps,
        id_prefix=f"sim:{run_id}",
        sell_fee_bps=sell_fee_bps,
        rules=account_rules,
        impact_bps=impact_bps,
        max_volume_share=max_volume_share,
    )
    risk = RiskEngine(limits or RiskLimits())
    enforce_account_rules(
        risk, sim.rules, coin=is_coin(symbol), fee_bps=fee_bps, slippage_bps=slippage_bps
    )
    engine = TradingEngine(
        EngineConfig(
            run_id=run_id,
            mode="backtest",
            account=f"backtest:{run_id}",
            symbol=symbol,
            model_id=model_id,
            feature_names=tuple(names),
            fractional=is_coin(symbol),
            flatten_before_close_min=rule.flatten_min if rule.flattens else 0.0,
            store_inputs=False,
        ),
        PrecomputedQ(q_paths, policy.net.actions),
        sim,
        risk,
        OrderManager(sim),
        ledger,
        Book(cash=cash),
        sim.new_fills,
    )
    n = frame.height
    actions: list[str] = []
    # The accounting fast path: the loop only notes cash and quantity after each decision
    # (they move only with fills); equity and its ledger rows are computed after the loop,
    # exactly as engine.record_equity would have each minute (marked at the bar's close).
    qty_after: list[float] = []
    cash_after: list[float] = []
    # The grid level the book holds after each decision (engine.grid_index): the level-action
    # agent's position as training's evaluation states it (legacy: 0/1 from the sign below).
    level_after: list[float] = []
    levels = not engine.actions.legacy
    book = engine.book
    session_close: datetime | None = None
    for i in range(n):
        ts = ts_list[i]
        event = events.get(i)
        if event is not None:
            episode, day, close_of_day, is_new_day = event
            if episode is not None:
                engine.begin_session(str(episode))
            if is_new_day:
                engine.start_day(day)
                session_close = close_of_day
        close = close_list[i]
        after = ts + span
        clock.set(after)
        # Fills come only from bars here: nothing to sync without one or an open order.
        if sim.on_bar(symbol, ts, open_list[i], close, volume_list[i]) or engine.open_orders:
            engine.sync_fills()
        book.marks[symbol] = close
        see_simulated_account(risk, sim, symbol, after)  # what its broker would refuse
        actions.append(
            engine.decide(
                now=after,
                bar_ts=ts,
                price=close,
                row=x[i],
                step=steps[i],
                session_close=session_close,
                bar_close=after,
            )
        )
        qty_after.append(book.qty.get(symbol, 0.0))
        cash_after.append(book.cash)
        if levels:
            level_after.append(
                engine.actions.grid[engine.grid_index(qty_after[-1], book.equity(), close)]
            )
        if progress is not None and i % 5000 == 0:
            progress(i, n)
    if progress is not None:
        progress(n, n)
    positions = np.asarray(qty_after, dtype=np.float64)
    cash_path = np.asarray(cash_after, dtype=np.float64)
    position_value = positions * closes.astype(np.float64)
    equity = cash_path + position_value
    account = engine.config.account
    ledger.rows["equity"].extend(
        {
            "account": account,
            "ts": ts + span,
            "cash": c,
            "positions_value": pv,
            "equity": c + pv,
        }
        for ts, c, pv in zip(ts_list, cash_after, position_value.tolist(), strict=True)
    )

    ts_col = frame.get_column("ts").cast(pl.Datetime("us", "UTC"))
    # frame carries each bar's open: the benchmarks fill at the next bar's open, as the agent.
    books = benchmark_books(
        frame.with_columns(ts_col),
        symbol=symbol,
        cash=cash,
        fee_bps=fee_bps,
        slippage_bps=slippage_bps,
        sell_fee_bps=sell_fee_bps,
    )
    eq = pl.DataFrame(
        {
            "ts": ts_col,
            "strategy": equity,
            **{key: book.equity for key, book in books.items()},
            "position_value": position_value,
        }
    )
    fills = pl.DataFrame(ledger.rows["fills"], schema=SCHEMAS["fills"], orient="row").select(
        "ts", "symbol", "side", "qty", "price", "fee"
    )
    ppy = 365.0 if is_coin(symbol) else 252.0
    metrics = {
        "strategy": summarize(
            eq.select("ts", pl.col("strategy").alias("equity"), "position_value"),
            fills,
            periods_per_year=ppy,
        ),
        **benchmark_metrics(books, periods_per_year=ppy),
    }
    return BacktestResult(
        run_id=run_id,
        symbol=symbol,
        fills=fills,
        equity=eq,
        actions=pl.DataFrame(
            {
                "ts": ts_col,
                "symbol": [symbol] * n,
                "action": actions,
                "position": np.asarray(level_after, dtype=np.float64)
                if levels
                else (positions > 0).astype(np.int8),
            }
        ),
        prices=pl.DataFrame({"ts": ts_col, "symbol": [symbol] * n, "close": closes}),
        metrics=metrics,
        decisions=engine.decisions,
        orders=engine.orders_sent,
    )


def describe(result: BacktestResult) -> dict[str, Any]:
    return {
        "run_id": result.run_id,
        "symbol": result.symbol,
        "decisions": result.decisions,
        "orders": result.orders,
        "fills": result.fills.height,
        "metrics": result.metrics,
    }
