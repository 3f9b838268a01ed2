"""Target-exposure actions (models.actions.ActionSet): the move, the grid, and the engine sizing each level."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import torch

from adapters.clock import ManualClock
from adapters.sim_broker import SimulatedBroker
from models.actions import LEGACY, ActionSet
from models.env import FLAT, HOLD, LONG, next_position
from trading.engine import Book, EngineConfig, PrecomputedQ, TradingEngine
from trading.ledger import Ledger
from trading.orders import OrderManager
from trading.risk import RiskEngine, RiskLimits

LEVELS = ActionSet((0.0, 0.25, 0.5, 0.75, 1.0))
T0 = datetime(2024, 3, 4, 14, 30, tzinfo=UTC)
MIN = timedelta(minutes=1)
CASH = 100_000.0


def test_the_legacy_set_moves_exactly_as_flat_hold_long() -> None:
    pos = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 1.0])
    act = torch.tensor([FLAT, FLAT, HOLD, HOLD, LONG, LONG])
    assert LEGACY.next_position(pos, act).tolist() == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    assert next_position(pos, act).tolist() == LEGACY.next_position(pos, act).tolist()
    assert LEGACY.names == ("flat", "hold", "long") and LEGACY.n_positions == 2
    assert LEGACY.to_meta() == {}  # a legacy artifact's metadata is what it was


def test_each_level_action_goes_to_its_level_from_anywhere() -> None:
    pos = torch.tensor([0.0, 0.25, 1.0, 0.5, 0.75])
    act = torch.tensor([2, 4, 0, 2, 1])
    assert LEVELS.next_position(pos, act).tolist() == [0.5, 1.0, 0.0, 0.5, 0.25]
    np.testing.assert_array_equal(
        LEVELS.next_position_np(pos.numpy(), act.numpy()), [0.5, 1.0, 0.0, 0.5, 0.25]
    )
    # Holding is choosing the level already held; the forced exit is the level 0.
    assert LEVELS.hold_actions(np.array([0.0, 0.75])).tolist() == [0, 3]
    assert LEVELS.flat == 0 and LEVELS.names[2] == "0.5"
    assert LEVELS.index(torch.tensor([0.5, 0.74, 0.0])).tolist() == [2, 3, 0]
    assert ActionSet.from_meta(LEVELS.to_meta()) == LEVELS


@pytest.mark.parametrize("levels", [(0.5, 1.0), (0.0, 0.5, 0.5), (0.0,)])
def test_a_set_without_flat_or_with_repeats_is_refused(levels: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="0 among them"):
        ActionSet(levels)


def _engine(
    tmp_path: Path, q: np.ndarray, actions: ActionSet, allow_short: bool = False
) -> tuple[TradingEngine, SimulatedBroker, ManualClock]:
    clock = ManualClock(T0)
    sim = SimulatedBroker(clock, cash=CASH, fee_bps=0.0, slippage_bps=0.0)
    engine = TradingEngine(
        EngineConfig(
            run_id="r",
            mode="backtest",
            account="backtest:r",
            symbol="SPY",
            model_id="m",
            feature_names=("x",),
            allow_short=allow_short,
        ),
        PrecomputedQ({"s": q}, actions),
        sim,
        RiskEngine(RiskLimits(max_position_notional=1e9)),
        OrderManager(sim),
        Ledger(tmp_path / "unused.duckdb", mode="backtest"),
        Book(cash=CASH),
        sim.new_fills,
    )
    engine.begin_session("s", date(2024, 3, 4))
    return engine, sim, clock


def test_the_engine_trades_each_level_as_a_target_of_equity(tmp_path: Path) -> None:
    # Chosen levels per bar, whatever the position: 0.5, 0.5, 1, 0.25, 0.
    chosen = [2, 2, 4, 1, 0]
    q = np.zeros((len(chosen), LEVELS.n_positions, LEVELS.n_actions))
    for step, a in enumerate(chosen):
        q[step, :, a] = 1.0
    engine, sim, clock = _engine(tmp_path, q, LEVELS)
    price = 100.0
    names = []
    for i in range(len(chosen)):
        ts = T0 + i * MIN
        clock.set(ts + MIN)
        sim.on_bar("SPY", ts, price, price)
        engine.sync_fills()
        engine.mark("SPY", price)
        names.append(
            engine.decide(
                now=ts + MIN, bar_ts=ts, price=price, row=np.zeros(1), step=i, session_close=None
            )
        )
    assert names == ["0.5", "0.5", "1", "0.25", "0"]
    # Whole shares of the equity at each level: 500 to hold half, then 500 more, then down to
    # a quarter (250), then out; holding the same level sends nothing. Each order fills at the
    # next bar's open: after the last bar the exit is sent and the quarter still held.
    assert [(o.side, o.qty) for o in sim.orders()] == [
        ("buy", 500.0),
        ("buy", 500.0),
        ("sell", 750.0),
        ("sell", 250.0),
    ]
    assert engine.book.qty["SPY"] == 250.0
    assert engine.grid_index(250.0, CASH, price) == 1  # the book reads back as the 0.25 level
    assert engine.actions.grid[engine.grid_index(0.0, CASH, price)] == 0.0
    assert math.isclose(engine.book.equity(), CASH)


def test_short_levels_are_refused_unless_allowed_and_never_on_the_simulated_broker(
    tmp_path: Path,
) -> None:
    short = ActionSet((-1.0, 0.0, 1.0))
    q = np.zeros((2, 3, 3))
    with pytest.raises(ValueError, match=r"risk\.allow_short is false"):
        _engine(tmp_path, q, short)
    with pytest.raises(ValueError, match="simulated broker cannot hold a negative position"):
        _engine(tmp_path, q, short, allow_short=True)
    # A long-only set never asks.
    _engine(tmp_path, np.zeros((2, 5, 5)), LEVELS)
