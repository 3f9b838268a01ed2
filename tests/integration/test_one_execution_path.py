"""One execution path: train's held-out evaluation and the backtest agree on positions and returns.

Per case (minute SPY on NYSE sessions, hourly FX on the 24/5 week, daily stock bars, minute
coin bars on 24/7) a fixed network is evaluated as `train` evaluates it (prepare_data ->
greedy_net_positions -> evaluate_network) and backtested as `tradingml backtest` runs it
(run_backtest: engine, risk engine, simulated broker), with the same session rule.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from core.sessions import SessionRule, session_rule
from models.actions import LEGACY, ActionSet
from models.env import Costs
from models.features import FeatureSpec, compute_features
from models.qnet import Architecture, NestedLSTMQNet
from models.registry import AgentPolicy
from models.train import episode_frame, evaluate_network, greedy_net_positions, prepare_data
from trading.backtest import run_backtest
from trading.ledger import Ledger
from trading.risk import RiskLimits

COSTS = Costs(fee_bps=1.0, slippage_bps=1.0)
CASH = 100_000.0
# Wide limits: this test is about the execution path, not the risk engine's limits.
LIMITS = RiskLimits(max_position_notional=1e12, daily_loss_limit=0.5)


def _bars(symbol: str, ts: list[datetime], vol: float, seed: int, gap: float = 0.0) -> pl.DataFrame:
    """A random walk; with ``gap`` > 0 each bar opens away from the previous close (an
    overnight gap of that log volatility), else at it."""
    rng = np.random.default_rng(seed)
    close = 10.0 * np.exp(np.cumsum(rng.normal(0.0, vol, len(ts))))
    open_ = np.concatenate(([10.0], close[:-1]))
    if gap > 0:
        open_ = open_ * np.exp(rng.normal(0.0, gap, len(ts)))
    return pl.DataFrame(
        {
            "symbol": [symbol] * len(ts),
            "ts": pl.Series(ts, dtype=pl.Datetime("us", "UTC")),
            "open": open_,
            "high": np.maximum(open_, close) * 1.0002,
            "low": np.minimum(open_, close) * 0.9998,
            "close": close,
            "volume": rng.integers(100, 1000, len(ts)).astype(np.float64),
            "vwap": (open_ + close) / 2,
            "source": ["test"] * len(ts),
        }
    )


def _nyse_minutes(days: list[datetime]) -> list[datetime]:
    # 13:30-20:00 UTC is 09:30-16:00 New York in summer (EDT).
    return [d + timedelta(hours=13, minutes=30 + m) for d in days for m in range(390)]


def _case_minute_spy(gap: float = 0.0) -> tuple[pl.DataFrame, str, datetime, datetime, datetime]:
    days = [datetime(2024, 6, d, tzinfo=UTC) for d in (3, 4, 5, 6, 7, 10, 11, 12)]
    bars = _bars("SPY", _nyse_minutes(days), 0.0008, 1)
    if gap > 0:
        # Only each day's first bar gaps: the overnight move, as on real minute bars.
        rng = np.random.default_rng(11)
        first = bars.get_column("ts").dt.date().is_first_distinct()
        jump = np.where(first.to_numpy(), np.exp(rng.normal(0.0, gap, bars.height)), 1.0)
        bars = bars.with_columns(pl.col("open") * jump)
    return (
        bars,
        "1Min",
        days[0],
        datetime(2024, 6, 7, tzinfo=UTC),
        datetime(2024, 6, 13, tzinfo=UTC),
    )


def _case_hourly_fx() -> tuple[pl.DataFrame, str, datetime, datetime, datetime]:
    # The FX week in UTC (summer): Sunday 21:00 to Friday 21:00.
    ts: list[datetime] = []
    for week in range(5):
        open_ = datetime(2024, 6, 2, 21, tzinfo=UTC) + timedelta(weeks=week)
        ts += [open_ + timedelta(hours=h) for h in range(120)]
    bars = _bars("EURUSD", ts, 0.002, 2)
    return bars, "1Hour", ts[0], datetime(2024, 6, 17, tzinfo=UTC), datetime(2024, 7, 6, tzinfo=UTC)


def _case_daily_stock(gap: float = 0.0) -> tuple[pl.DataFrame, str, datetime, datetime, datetime]:
    days = pl.date_range(datetime(2022, 1, 3), datetime(2023, 12, 29), "1d", eager=True)
    weekdays = [d for d in days.to_list() if d.weekday() < 5]
    # Daily bars are stamped 00:00 New York (05:00 UTC in winter, 04:00 in summer: 05:00 is fine
    # for the test, the New York date is the same).
    ts = [datetime(d.year, d.month, d.day, 5, tzinfo=UTC) for d in weekdays]
    bars = _bars("ACME", ts, 0.01, 3, gap)
    return bars, "1Day", ts[0], datetime(2023, 1, 2, tzinfo=UTC), datetime(2023, 12, 30, tzinfo=UTC)


def _case_minute_coin(gap: float = 0.0) -> tuple[pl.DataFrame, str, datetime, datetime, datetime]:
    start = datetime(2024, 6, 1, tzinfo=UTC)
    ts = [start + timedelta(minutes=m) for m in range(4 * 1440)]
    bars = _bars("BTC/USD", ts, 0.0008, 4, gap)
    return bars, "1Min", start, datetime(2024, 6, 3, tzinfo=UTC), datetime(2024, 6, 5, tzinfo=UTC)


CASES = {
    "minute SPY (NYSE, flat at the close)": (_case_minute_spy, None),
    "hourly FX (24/5)": (_case_hourly_fx, "24/5"),
    "daily stock (XNYS)": (_case_daily_stock, "XNYS"),
    "minute coin (24/7)": (_case_minute_coin, None),
}


def _policy(spec: FeatureSpec, actions: ActionSet = LEGACY) -> NestedLSTMQNet:
    torch.manual_seed(7)
    arch = Architecture(fast_hidden=8, slow_hidden=4, slow_stride=5, head_hidden=8)
    net = NestedLSTMQNet(len(spec.names()), arch, actions=actions)
    with torch.no_grad():
        # Sharper Q-values: a random network then changes its mind often enough to test.
        for p in net.parameters():
            p.mul_(4.0)
    net.eval()
    return net


def _play(
    case: str,
    bars: pl.DataFrame,
    timeframe: str,
    ranges: tuple[datetime, datetime, datetime],
    calendar: str | None,
    cash: float,
    tmp_path: Path,
    actions: ActionSet = LEGACY,
) -> tuple[dict[str, float], dict[str, float]]:
    """train's held-out evaluation and the backtest of one fixed network: same positions
    (asserted), then each one's metrics of the agent."""
    train_start, test_start, end = ranges
    symbol = str(bars.get_column("symbol")[0])
    spec = FeatureSpec(
        symbols=(symbol,),
        timeframe=timeframe,
        return_windows=(1, 5),
        vol_windows=(5,),
        volume_window=5,
    )
    rule: SessionRule = session_rule(symbol, timeframe, calendar)
    data = prepare_data(bars, spec, (train_start, test_start), (test_start, end), rule=rule)
    net = _policy(spec, actions)
    policy = AgentPolicy(net, spec, data.scaler, {})

    # train's held-out evaluation: positions after each bar's decision, in time order.
    held = greedy_net_positions(net, data.test, COSTS)
    test_f = episode_frame(compute_features(bars, spec), bars, spec, (test_start, end), rule)
    row_of = {key: i for i, key in enumerate(data.test.keys)}
    rows = np.array([row_of[str(k)] for k in test_f.get_column("session").to_list()])
    eval_pos = held[rows, test_f.get_column("step").to_numpy()]
    assert 0 < eval_pos.mean() < 1, "the policy never changes its mind: nothing is tested"
    if not actions.legacy:
        assert set(eval_pos.tolist()) - {0.0, 1.0}, "no fractional level is held: nothing is tested"

    result = run_backtest(
        policy,
        bars,
        model_id="m",
        run_id=f"one-path-{timeframe}",
        start=test_start,
        end=end,
        ledger=Ledger(tmp_path / "w.duckdb", mode="backtest"),
        cash=cash,
        fee_bps=COSTS.fee_bps,
        slippage_bps=COSTS.slippage_bps,
        limits=LIMITS,
        rule=rule,
    )
    # The backtest holds a decision's position from the next bar on (filled at its open).
    bt_pos = result.actions.get_column("position").to_numpy().astype(np.float64)
    assert bt_pos.shape == eval_pos.shape
    assert bt_pos[0] == 0.0
    mismatch = np.flatnonzero(bt_pos[1:] != eval_pos[:-1])
    assert mismatch.size == 0, f"{case}: positions differ at bars {mismatch[:10].tolist()}"

    evaluated = evaluate_network(net, data.test, COSTS, data.test_bars, symbol)["agent"]
    return evaluated, result.metrics["strategy"]


@pytest.mark.parametrize("case", list(CASES))
def test_train_evaluation_and_backtest_hold_the_same_positions_and_earn_the_same(
    case: str, tmp_path: Path
) -> None:
    make, calendar = CASES[case]
    bars, timeframe, *ranges = make()
    evaluated, backtested = _play(case, bars, timeframe, tuple(ranges), calendar, CASH, tmp_path)
    # Whole shares (stocks) and 6-decimal coin units in the backtest: a little cash stays idle.
    assert backtested["total_return"] == pytest.approx(evaluated["total_return"], abs=1e-3), case


GAPPED = {
    "daily stock, overnight gaps": (_case_daily_stock, "XNYS"),
    "minute SPY, overnight gaps": (_case_minute_spy, None),
    "minute coin, gaps on every bar": (_case_minute_coin, None),
}


@pytest.mark.parametrize("case", list(GAPPED))
def test_bars_that_open_away_from_the_last_close_earn_the_same_in_train_and_backtest(
    case: str, tmp_path: Path
) -> None:
    """Both fill a decision at the next bar's open with the simulated broker's slippage and
    fee, sized on the decision bar's close: the same return to rounding, the same fees."""
    make, calendar = GAPPED[case]
    bars, timeframe, *ranges = make(0.01)
    opens, closes = bars.get_column("open"), bars.get_column("close")
    assert (opens.tail(-1) - closes.head(-1)).abs().max() > 1e-3, "no gaps: nothing is tested"
    # A cash so large that the backtest's whole-share (or 1e-6 coin unit) rounding of an
    # order leaves under 1e-9 of the equity idle: what is left to compare is the fill rule.
    evaluated, backtested = _play(case, bars, timeframe, tuple(ranges), calendar, 1e11, tmp_path)
    assert backtested["total_return"] == pytest.approx(
        evaluated["total_return"], rel=1e-9, abs=1e-9
    ), case
    assert backtested["trades"] == evaluated["trades"], case
    assert backtested["fees"] / 1e11 == pytest.approx(evaluated["fees"], rel=1e-6), case


LEVELS = ActionSet((0.0, 0.25, 0.5, 0.75, 1.0))


@pytest.mark.parametrize("case", ["minute SPY (NYSE, flat at the close)", "daily stock (XNYS)"])
def test_target_exposure_actions_hold_the_same_levels_in_train_and_backtest(
    case: str, tmp_path: Path
) -> None:
    """Five target exposures: the backtest's engine sizes each level through the risk engine
    and the simulated broker and holds the level training's evaluation chose, bar for bar.

    Training's evaluation holds a level as a constant fraction of money; the engine holds the
    units it bought (no re-sizing churn while the level is unchanged), so their returns agree
    to the drift of a held fraction, not to rounding."""
    make, calendar = CASES[case]
    bars, timeframe, *ranges = make()
    evaluated, backtested = _play(
        case, bars, timeframe, tuple(ranges), calendar, 1e9, tmp_path, LEVELS
    )
    assert backtested["total_return"] == pytest.approx(evaluated["total_return"], abs=5e-3), case
