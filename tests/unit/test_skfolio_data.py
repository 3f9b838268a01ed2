"""skfolio's real adjusted closes (SPX, five factor ETFs): vendored files, close-only bars, fills, train = backtest."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from adapters.skfolio_daily import (
    DATA_DIR,
    SkfolioDailyBarSource,
    load_daily,
    read_file,
)
from core.bar_quality import REASONS, validate_bars
from core.bar_schema import BAR_SCHEMA
from core.baselines import trade_positions
from core.fills import fill_references
from core.sessions import session_rule
from core.universe import SKFOLIO_DAILY_SYMBOLS
from models.env import Costs
from models.features import FeatureSpec, compute_features, unavailable_features
from models.qnet import Architecture, NestedLSTMQNet
from models.registry import AgentPolicy
from models.train import episode_frame, evaluate_network, greedy_net_positions, prepare_data
from trading.backtest import run_backtest
from trading.ledger import Ledger
from trading.risk import RiskLimits

ETFS = ("MTUM", "QUAL", "SIZE", "USMV", "VLUE")


def test_the_vendored_files_hold_the_real_series_with_their_license() -> None:
    spx, factors = read_file("sp500_index"), read_file("factors")
    assert spx.columns == ["Date", "SP500"] and spx.height == 8_313
    assert (spx["Date"][0], spx["Date"][-1]) == (date(1990, 1, 2), date(2022, 12, 28))
    assert factors.columns == ["Date", *ETFS] and factors.height == 2_264
    assert (factors["Date"][0], factors["Date"][-1]) == (date(2014, 1, 2), date(2022, 12, 28))
    assert spx.null_count().sum_horizontal().item() == 0
    assert factors.null_count().sum_horizontal().item() == 0
    # Known real closes of the S&P 500: 2012.66 on 2016-01-04, 3230.78 on 2019-12-31.
    on = dict(zip(spx["Date"].to_list(), spx["SP500"].to_list(), strict=True))
    assert (on[date(2016, 1, 4)], on[date(2019, 12, 31)]) == (2012.66, 3230.78)
    assert "BSD 3-Clause" in (DATA_DIR / "LICENSE-skfolio").read_text()
    assert "1.12.2" in (DATA_DIR / "README.md").read_text()
    # The single-stock file is deliberately not vendored.
    assert sorted(p.name for p in DATA_DIR.iterdir()) == [
        "LICENSE-skfolio",
        "README.md",
        "factors_dataset.csv.gz",
        "sp500_index.csv.gz",
    ]


def test_the_source_yields_close_only_daily_bars_labelled_skfolio() -> None:
    start, end = datetime(2019, 1, 1, tzinfo=UTC), datetime(2020, 1, 1, tzinfo=UTC)
    frames = {f["symbol"][0]: f for f in SkfolioDailyBarSource().fetch_bars([], "1Day", start, end)}
    assert tuple(frames) == SKFOLIO_DAILY_SYMBOLS == ("SPX", *ETFS)
    for symbol, f in frames.items():
        assert dict(f.schema) == BAR_SCHEMA
        assert f.height == 252, symbol
        label = "skfolio:sp500_index" if symbol == "SPX" else "skfolio:factors"
        assert f["source"].unique().to_list() == [label]
        assert f["timeframe"].unique().to_list() == ["1Day"]
        # Nothing invented: no open, high, low, volume, trade count or vwap.
        for col in ("open", "high", "low", "volume", "trade_count", "vwap"):
            assert f[col].is_null().all(), (symbol, col)
        assert (f["close"] > 0).all() and f["ts"].is_sorted()
    spx = frames["SPX"]
    # Daily bars start at 00:00 New York: 05:00 UTC in winter, 04:00 in summer.
    assert spx["ts"][0] == datetime(2019, 1, 2, 5, tzinfo=UTC)
    assert spx.filter(pl.col("ts").dt.month() == 7)["ts"][0] == datetime(2019, 7, 1, 4, tzinfo=UTC)
    assert spx["close"][-1] == 3230.78
    with pytest.raises(ValueError, match="only has daily closes"):
        next(SkfolioDailyBarSource().fetch_bars(["SPX"], "1Min", start, end))
    with pytest.raises(ValueError, match="no symbol 'AAPL'"):
        load_daily("AAPL")


def _row(**override: object) -> dict[str, object]:
    base: dict[str, object] = {
        "symbol": "SPX",
        "timeframe": "1Day",
        "ts": datetime(2020, 1, 2, 5, tzinfo=UTC),
        "open": None,
        "high": None,
        "low": None,
        "close": 100.0,
        "volume": None,
        "source": "test",
    }
    return base | override


@pytest.mark.parametrize(
    ("override", "reason"),
    [
        ({}, None),  # close-only
        ({"open": 99.0, "high": 101.0, "low": 98.0}, None),  # full OHLC
        ({"open": 99.0}, "partial_ohlc"),
        ({"high": 101.0, "low": 98.0}, "partial_ohlc"),
        ({"close": None}, "nan_price"),
        ({"close": float("nan")}, "nan_price"),
        ({"close": -1.0}, "non_positive_price"),
        ({"open": float("nan"), "high": 101.0, "low": 98.0}, "nan_price"),
    ],
)
def test_a_bar_is_full_ohlc_or_close_only_and_anything_between_is_quarantined(
    override: dict[str, object], reason: str | None
) -> None:
    rows = [_row(**override)]
    frame = pl.DataFrame(rows, schema={k: BAR_SCHEMA[k] for k in rows[0]})
    checked = validate_bars(frame, datetime(2024, 1, 1, tzinfo=UTC))
    got = checked.quarantine["reason"].to_list()
    assert got == ([reason] if reason else [])
    assert checked.good.height == (0 if reason else 1)
    if reason == "partial_ohlc":
        assert checked.quarantine["detail"].to_list() == [REASONS["partial_ohlc"]]


def test_an_order_waiting_for_a_close_only_bar_fills_at_its_close() -> None:
    opens = np.array([np.nan, 10.5, np.nan, np.nan])
    closes = np.array([10.0, 11.0, 12.0, 13.0])
    assert fill_references(opens, closes).tolist() == [10.0, 10.5, 12.0, 13.0]
    ts = pl.Series("ts", [datetime(2020, 1, d, tzinfo=UTC) for d in (2, 3, 6, 7)])
    book = trade_positions(
        ts,
        closes,
        [0.0, 0.0, 1.0, 0.0],
        symbol="SPX",
        cash=1_000.0,
        fee_bps=0.0,
        slippage_bps=100.0,
        opens=np.full(4, np.nan),
    )
    # Decided long on bar 2's close, filled at bar 3's close (no open) +1% slippage; the
    # sell decided on bar 3 has no later bar to fill on.
    assert book.fills["price"].to_list() == [pytest.approx(13.0 * 1.01)]
    assert book.fills["ts"].to_list() == [ts[3]]
    assert book.fills["qty"].to_list() == [pytest.approx(1_000.0 / 12.0)]


def test_close_only_features_are_reported_unavailable_and_carry_no_value() -> None:
    bars = load_daily("SPX").filter(pl.col("ts").dt.year() == 2019)
    spec = FeatureSpec(symbols=("SPX",), timeframe="1Day", return_windows=(1, 5), vol_windows=(5,))
    assert unavailable_features(bars, spec) == {
        "a0_volz": "SPX bars have no volume",
        "a0_vwap_dev": "SPX bars have no vwap",
        "a0_range": "SPX bars have no high/low",
    }
    features = compute_features(bars, spec)
    for name in ("a0_volz", "a0_vwap_dev", "a0_range"):
        assert features[name].unique().to_list() == [0.0]
    assert features["a0_ret_1"].to_numpy().std() > 0


def test_train_evaluation_and_backtest_agree_on_close_only_spx(tmp_path: Path) -> None:
    """A fixed network on real SPX closes (2014-2016): train's held-out evaluation and the
    backtest's engine and simulated broker fill at the next bar's close and earn the same."""
    bars = load_daily("SPX").filter(
        (pl.col("ts") >= datetime(2014, 1, 1, tzinfo=UTC))
        & (pl.col("ts") < datetime(2017, 1, 1, tzinfo=UTC))
    )
    start, split, end = (datetime(y, 1, 1, tzinfo=UTC) for y in (2014, 2016, 2017))
    spec = FeatureSpec(
        symbols=("SPX",), timeframe="1Day", return_windows=(1, 5), vol_windows=(5,), volume_window=5
    )
    rule = session_rule("SPX", "1Day", "XNYS")
    data = prepare_data(bars, spec, (start, split), (split, end), rule=rule)
    torch.manual_seed(7)
    net = NestedLSTMQNet(
        len(spec.names()), Architecture(fast_hidden=8, slow_hidden=4, slow_stride=5, head_hidden=8)
    )
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(4.0)  # sharper Q-values: the random network changes its mind
    net.eval()
    costs = Costs(fee_bps=1.0, slippage_bps=1.0)
    held = greedy_net_positions(net, data.test, costs)
    test_f = episode_frame(compute_features(bars, spec), bars, spec, (split, end), rule)
    row_of = {key: i for i, key in enumerate(data.test.keys)}
    rows = np.array([row_of[str(k)] for k in test_f.get_column("session").to_list()])
    eval_pos = held[rows, test_f.get_column("step").to_numpy()]
    assert 0 < eval_pos.mean() < 1, "the policy never changes its mind: nothing is tested"

    cash = 1e13  # whole-share rounding (SPX ~2000) leaves under 1e-9 of the equity idle
    result = run_backtest(
        AgentPolicy(net, spec, data.scaler, {}),
        bars,
        model_id="m",
        run_id="skfolio-spx",
        start=split,
        end=end,
        ledger=Ledger(tmp_path / "w.duckdb", mode="backtest"),
        cash=cash,
        fee_bps=costs.fee_bps,
        slippage_bps=costs.slippage_bps,
        limits=RiskLimits(max_position_notional=1e15, daily_loss_limit=0.5),
        rule=rule,
    )
    bt_pos = result.actions.get_column("position").to_numpy().astype(np.float64)
    assert np.array_equal(bt_pos[1:], eval_pos[:-1])
    evaluated = evaluate_network(net, data.test, costs, data.test_bars, "SPX")["agent"]
    backtested = result.metrics["strategy"]
    assert backtested["trades"] == evaluated["trades"] > 0
    assert backtested["total_return"] == pytest.approx(
        evaluated["total_return"], rel=1e-9, abs=1e-9
    )
    # Every fill is at the close of the bar it fills on (moved by the 1 bp slippage).
    fills = result.fills.join(bars.select("ts", "close"), on="ts")
    assert fills.height == backtested["trades"]
    expected = np.where(fills["side"] == "buy", 1.0001, 0.9999) * fills["close"].to_numpy()
    assert np.allclose(fills["price"].to_numpy(), expected, rtol=1e-12)
    assert (fills["ts"] >= split).all()
