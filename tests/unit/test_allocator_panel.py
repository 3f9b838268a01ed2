"""The allocator panel's traded outcome: an agent's per-bar book returns compounded to UTC days and attached to the right row (SYNTHETIC numbers)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from models.allocator import check_out_of_sample
from models.portfolio import daily_trading_returns, with_agent_trading

DAY0 = datetime(2024, 3, 1, tzinfo=UTC)


def test_bars_compound_to_their_utc_day() -> None:
    ts = pl.Series(
        [DAY0 + timedelta(hours=h) for h in (22, 23, 24, 25, 47)],
        dtype=pl.Datetime("us", "UTC"),
    )
    daily = daily_trading_returns(ts, np.array([0.01, -0.02, 0.03, 0.0, -0.01]))
    assert daily.get_column("day").to_list() == [DAY0, DAY0 + timedelta(days=1)]
    np.testing.assert_allclose(
        daily.get_column("trade_return").to_numpy(),
        [1.01 * 0.98 - 1.0, 1.03 * 1.0 * 0.99 - 1.0],
        rtol=1e-12,
    )
    with pytest.raises(ValueError, match="timestamps"):
        daily_trading_returns(ts, np.zeros(4))


def test_a_row_gets_the_agents_trading_on_the_day_its_weight_applies() -> None:
    # Rows stamped at the end of their input day: the weight applies to the next day.
    panel = pl.DataFrame(
        {
            "period": [DAY0 + timedelta(days=d) for d in (1, 2, 3)],
            "symbol": "BTC/USD",
            "next_return": [0.05, 0.06, None],
        },
        schema_overrides={"period": pl.Datetime("us", "UTC")},
    )
    daily = pl.DataFrame(
        {"day": [DAY0 + timedelta(days=d) for d in (1, 2)], "trade_return": [-0.01, 0.02]},
        schema_overrides={"day": pl.Datetime("us", "UTC")},
    )
    out = with_agent_trading(panel, daily, "dqn-x", DAY0 + timedelta(days=1))
    assert out.get_column("next_trade_return").to_list() == [-0.01, 0.02, None]
    assert out.get_column("agent_id").to_list() == ["dqn-x"] * 3
    # The first row's inputs come from the agent's last training day: in-sample, refused.
    with pytest.raises(ValueError, match="in-sample"):
        check_out_of_sample(out)
    check_out_of_sample(out.slice(1))
