"""models.train.held_out_returns: the per-bar streams the gate judges are the books evaluate_network measures (SYNTHETIC bars)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
import torch

from adapters.synthetic import SyntheticBarSource
from core.metrics import max_drawdown, total_return
from core.sessions import session_rule
from models.env import Costs
from models.features import FeatureSpec
from models.qnet import Architecture, NestedLSTMQNet
from models.train import evaluate_network, held_out_returns, prepare_data


def test_held_out_returns_compound_to_evaluate_networks_numbers() -> None:
    start, test_start, end = (
        datetime(2024, 6, 1, tzinfo=UTC),
        datetime(2024, 6, 3, tzinfo=UTC),
        datetime(2024, 6, 5, tzinfo=UTC),
    )
    [bars] = list(SyntheticBarSource().fetch_bars(["BTC/USD"], "1Min", start, end))
    spec = FeatureSpec(symbols=("BTC/USD",), return_windows=(1, 5), vol_windows=(5,))
    data = prepare_data(
        bars, spec, (start, test_start), (test_start, end), rule=session_rule("BTC/USD", "1Min")
    )
    assert data.test_bars is not None
    torch.manual_seed(7)
    net = NestedLSTMQNet(len(spec.names()), Architecture(fast_hidden=8, slow_hidden=4))
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(4.0)  # sharper Q-values: the random policy trades, so the streams differ
    net.eval()
    costs = Costs(fee_bps=5.0, slippage_bps=5.0)
    table = evaluate_network(net, data.test, costs, data.test_bars, "BTC/USD")
    streams = held_out_returns(net, data.test, costs, data.test_bars, "BTC/USD")
    assert set(streams) == {"agent", "buy_and_hold", "flat", "momentum_rule"}
    assert {s.size for s in streams.values()} == {data.test_bars.height}  # one per bar
    assert not np.any(streams["flat"])
    assert np.any(streams["agent"] != streams["buy_and_hold"])
    for name, r in streams.items():
        assert total_return(r) == pytest.approx(table[name]["total_return"], abs=1e-9), name
        assert max_drawdown(r) == pytest.approx(table[name]["max_drawdown"], abs=1e-9), name
