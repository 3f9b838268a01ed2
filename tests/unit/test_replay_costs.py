"""Replays charge the traded symbols' asset-class costs (core.costs), like train, backtest and evaluate."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from core.assets import SymbolInfo
from core.configs import CryptoTradingConfig, LiveTradingConfig, NightlyRetrainConfig
from core.costs import CostModel, costs_for
from flows.live_trading import LiveTradingRefused, symbol_costs
from warehouse.symbols import store_symbol_infos


def test_unset_fees_mean_the_asset_class_schedule(tmp_path: Path) -> None:
    warehouse = tmp_path / "w.duckdb"
    now = datetime(2024, 6, 1, tzinfo=UTC)
    # A stored class wins over the name's: this 'ETF' is stored as a stock.
    store_symbol_infos(warehouse, [SymbolInfo("ABCD", "stock", "XNYS")], now)
    for config in (LiveTradingConfig(), CryptoTradingConfig(), NightlyRetrainConfig()):
        assert config.fee_bps is None and config.slippage_bps is None
    assert symbol_costs(warehouse, ["BTC/USD", "ETH/USD"], None, None) == (
        costs_for("crypto"),
        "crypto",
    )
    assert symbol_costs(warehouse, ["SPY"], None, None) == (costs_for("etf"), "etf")
    assert symbol_costs(warehouse, ["ABCD"], None, None) == (costs_for("stock"), "stock")
    # Given numbers pin a flat model, as the other flows' options do.
    assert symbol_costs(warehouse, ["BTC/USD"], 1.0, 1.0)[0] == CostModel(1.0, 1.0, 0.0)
    with pytest.raises(LiveTradingRefused, match="one run trades one class"):
        symbol_costs(warehouse, ["BTC/USD", "SPY"], None, None)
