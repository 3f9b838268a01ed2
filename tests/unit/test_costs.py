"""Costs per asset class (core.costs): defaults, overrides and the sell-side fee in every book."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
import torch

from adapters.clock import ManualClock
from adapters.protocols import OrderRequest
from adapters.sim_broker import SimulatedBroker
from core.baselines import trade_positions
from core.costs import (
    ALPACA_CRYPTO_TAKER_BPS,
    FLAT_1_1,
    SEC_SECTION_31_BPS,
    CostModel,
    configured_costs,
    costs_for,
)
from models.env import Costs, play_positions, step_money


def test_defaults_per_asset_class() -> None:
    etf, coin, fx = costs_for("etf"), costs_for("crypto"), costs_for("fx")
    # Alpaca: commission-free equities, the SEC fee on sells ($27.80 per million = 0.278 bp).
    assert etf.fee_bps == 0.0 and etf.sell_fee_bps == pytest.approx(0.278)
    assert round(SEC_SECTION_31_BPS, 12) == 0.278  # 27.80 / 1e6 of notional, in bp
    # Alpaca crypto tier 1: 0.25% taker.
    assert coin.fee_bps == ALPACA_CRYPTO_TAKER_BPS == 25.0 and coin.sell_fee_bps == 0.0
    assert coin.slippage_bps > etf.slippage_bps
    assert fx.fee_bps == 0.0 and fx.sell_fee_bps == 0.0 and fx.slippage_bps > 0
    assert costs_for("stock").slippage_bps > etf.slippage_bps
    with pytest.raises(ValueError, match="asset class"):
        costs_for("bond")


def test_overrides_and_the_flat_model() -> None:
    assert costs_for("crypto", fee_bps=15.0) == CostModel(15.0, costs_for("crypto").slippage_bps)
    assert configured_costs("crypto") == costs_for("crypto")
    # Either option given: the old flat model, no sell-side fee (tests pin 1 + 1 bp so).
    assert configured_costs("etf", 1.0, 1.0) == FLAT_1_1 == Costs() == Costs(1.0, 1.0)
    assert configured_costs("etf", slippage_bps=3.0) == CostModel(0.0, 3.0, 0.0)
    with pytest.raises(ValueError, match="sell_fee_bps"):
        CostModel(1.0, 1.0, -0.1)


def test_describe_names_the_class_and_every_part() -> None:
    assert costs_for("crypto").describe("crypto") == (
        "costs: crypto, 25 bp fee + 5 bp half-spread per fill"
    )
    assert costs_for("etf").describe("etf") == (
        "costs: etf, 0 bp fee + 1 bp half-spread per fill + 0.278 bp regulatory fee on sells"
    )


def test_env_charges_the_sell_fee_only_on_sells() -> None:
    c = CostModel(2.0, 3.0, 7.0)
    money = torch.ones(3, dtype=torch.float64)
    zero = torch.zeros(3, dtype=torch.float64)
    before = torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64)
    after = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    out = step_money(money, before, after, zero, c).tolist()
    assert out == pytest.approx([1 - 5e-4, 1 - 12e-4, 1.0], abs=1e-15)
    # A round trip at unchanged prices: buy then sell, the env's multiplicative costs.
    returns = torch.zeros(1, 3)
    mask = torch.ones(1, 3, dtype=torch.bool)
    final = play_positions(returns, mask, torch.tensor([[1.0, 0.0, 0.0]]), c)
    assert float(final[0]) == pytest.approx((1 - 5e-4) * (1 - 12e-4), abs=1e-15)


def test_book_and_simulated_broker_charge_the_same_sell_fee() -> None:
    c = costs_for("etf")
    start = datetime(2024, 6, 3, 13, 30, tzinfo=UTC)
    ts = pl.Series("ts", [start + timedelta(minutes=i) for i in range(4)])
    close = np.array([100.0, 101.0, 102.0, 103.0])
    opens = np.array([100.0, 100.5, 101.5, 102.5])
    book = trade_positions(
        ts,
        close,
        [1.0, 1.0, 0.0, 0.0],
        symbol="SPY",
        cash=100_000.0,
        fee_bps=c.fee_bps,
        slippage_bps=c.slippage_bps,
        sell_fee_bps=c.sell_fee_bps,
        opens=opens,
    )
    fills = book.fills.to_dicts()
    assert [f["side"] for f in fills] == ["buy", "sell"]
    buy, sell = fills
    assert buy["fee"] == 0.0 and buy["price"] == pytest.approx(100.5 * (1 + 1e-4), rel=1e-15)
    assert sell["price"] == pytest.approx(102.5 * (1 - 1e-4), rel=1e-15)
    assert sell["fee"] == pytest.approx(sell["qty"] * sell["price"] * 0.278e-4, rel=1e-12)

    # The simulated broker, given the same orders on the same bars, fills them the same.
    clock = ManualClock(start)
    sim = SimulatedBroker(
        clock,
        cash=100_000.0,
        fee_bps=c.fee_bps,
        slippage_bps=c.slippage_bps,
        sell_fee_bps=c.sell_fee_bps,
    )
    for f, i in ((buy, 1), (sell, 3)):
        clock.set(ts[i])
        sim.submit_order(OrderRequest(f"{f['side']}-1", "SPY", f["side"], f["qty"]))
        sim.on_bar("SPY", ts[i], float(opens[i]), float(close[i]))
    got = [(f.side, f.qty, f.price, f.fee) for f in sim.new_fills()]
    want = [(f["side"], f["qty"], f["price"], f["fee"]) for f in fills]
    assert [g[0] for g in got] == [w[0] for w in want]
    assert np.allclose([g[1:] for g in got], [w[1:] for w in want], rtol=1e-12, atol=0.0)
    assert got[1][3] > 0.0  # the sell paid the regulatory fee
