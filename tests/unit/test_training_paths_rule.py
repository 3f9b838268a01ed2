"""Every training path cuts episodes as `train` does: the nightly task, the nightly held-out rule and the architecture search take the SessionRule."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

import models.search as search
import tasks.agents as agents
from core.assets import SymbolInfo
from core.sessions import DEFAULT_EPISODE_BARS, session_rule
from models.dqn import DQNParams
from models.env import Costs
from models.features import FeatureSpec
from models.genome import random_genome
from models.train import PreparedData, prepare_data
from warehouse.db import connect
from warehouse.symbols import store_symbol_infos, stored_session_rule

TRAIN = (datetime(2022, 1, 3, tzinfo=UTC), datetime(2023, 1, 2, tzinfo=UTC))
TEST = (datetime(2023, 1, 2, tzinfo=UTC), datetime(2023, 7, 1, tzinfo=UTC))
SPEC = FeatureSpec(
    symbols=("ACME",), timeframe="1Day", return_windows=(1, 5), vol_windows=(5,), volume_window=5
)


def _daily_bars() -> pl.DataFrame:
    """Synthetic daily bars of one stock, weekdays of 2022 to mid-2023, stamped 05:00 UTC."""
    days = [d for d in pl.date_range(datetime(2022, 1, 3), datetime(2023, 6, 30), "1d", eager=True)]
    ts = [datetime(d.year, d.month, d.day, 5, tzinfo=UTC) for d in days if d.weekday() < 5]
    rng = np.random.default_rng(0)
    close = 10.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, len(ts))))
    return pl.DataFrame(
        {
            "symbol": ["ACME"] * len(ts),
            "ts": pl.Series(ts, dtype=pl.Datetime("us", "UTC")),
            "open": close,
            "high": close * 1.01,
            "low": close * 0.99,
            "close": close,
            "volume": np.full(len(ts), 1000.0),
            "vwap": close,
            "source": ["synthetic"] * len(ts),
        }
    )


def _bars_in(bars: pl.DataFrame, span: tuple[datetime, datetime]) -> int:
    return bars.filter((pl.col("ts") >= span[0]) & (pl.col("ts") < span[1])).height


def _assert_quarter_episodes(data: PreparedData, bars: pl.DataFrame) -> None:
    """One step per bar, 63-bar episodes (the daily default), not calendar months."""
    episode = DEFAULT_EPISODE_BARS["1Day"]
    for sessions, span in ((data.train, TRAIN), (data.test, TEST)):
        n = _bars_in(bars, span)
        lengths = sessions.lengths.numpy().tolist()
        assert sum(lengths) == n
        assert len(sessions) == math.ceil(n / episode)  # months would give 12 and 6
        assert lengths[:-1] == [episode] * (len(lengths) - 1)


def test_the_nightly_training_task_cuts_daily_bars_as_train_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[PreparedData] = []

    def no_training(data: PreparedData, *_: Any) -> dict[str, Any]:
        seen.append(data)
        return {}

    monkeypatch.setattr(agents, "train_seed", no_training)
    bars = _daily_bars()
    kwargs: dict[str, Any] = {
        "bars": bars,
        "spec": SPEC.to_dict(),
        "train_range": TRAIN,
        "test_range": TEST,
        "sentiment": None,
        "forecasts": None,
        "run_id": "r",
        "seed": 0,
        "arch": {},
        "params": {},
        "costs": {},
        "checkpoint_dir": None,
        "description": {},
    }
    # Without a rule: inferred from the symbol and timeframe.
    out = agents.train_agent_on_bars.fn(**kwargs)
    _assert_quarter_episodes(seen[-1], bars)
    assert out["train_sessions"] == len(seen[-1].train)
    # With the flow's rule (as a plain dict): its episode length wins.
    rule = session_rule("ACME", "1Day", "XNYS", episode_bars=10)
    agents.train_agent_on_bars.fn(**kwargs, rule=vars(rule))
    assert len(seen[-1].train) == math.ceil(_bars_in(bars, TRAIN) / 10)


def test_the_search_cuts_daily_bars_as_train_does(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[PreparedData] = []
    real = prepare_data

    def spy(*args: Any, **kwargs: Any) -> PreparedData:
        data = real(*args, **kwargs)
        seen.append(data)
        return data

    def stop(*_: Any, **__: Any) -> None:
        raise RuntimeError("not trained in this test")

    monkeypatch.setattr(search, "prepare_data", spy)
    monkeypatch.setattr(search, "train_dqn", stop)
    bars = _daily_bars()
    genome = random_genome(np.random.default_rng(0))
    result = search.evaluate_genome(
        genome,
        bars,
        SPEC,
        [search.SearchFold(0, TRAIN, TEST)],
        DQNParams(cycles=1),
        Costs(),
        [0],
        None,
    )
    assert result.status == "failed" and "not trained" in (result.error or "")
    _assert_quarter_episodes(seen[-1], bars)


def test_the_nightly_rule_reads_the_stored_calendar(tmp_path: Path) -> None:
    warehouse = tmp_path / "w.duckdb"
    now = datetime(2024, 6, 1, tzinfo=UTC)
    store_symbol_infos(warehouse, [SymbolInfo("EURUSD", "fx", "24/5")], now)
    with connect(warehouse) as con:
        fx = stored_session_rule(con, "EURUSD", "1Hour")
        stock = stored_session_rule(con, "ACME", "1Day", episode_bars=21)
    assert (fx.calendar, fx.episode_bars, fx.flattens) == ("24/5", 120, False)
    assert (stock.calendar, stock.episode_bars) == ("XNYS", 21)
