"""trading.metrics agrees with empyrical on return statistics and with hand sums on fills."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import empyrical
import numpy as np
import polars as pl
import pytest

from trading import metrics

RNG = np.random.default_rng(20240101)
SERIES: dict[str, np.ndarray] = {
    "random_daily": RNG.normal(0.0004, 0.011, 500),
    "random_volatile": RNG.normal(-0.001, 0.03, 260),
    "random_minute": RNG.normal(0.0, 0.0008, 2000),
    "with_drawdown": np.array([0.05, 0.02, -0.10, -0.15, 0.03, 0.08, -0.02, 0.12, 0.01, -0.04]),
    "first_period_loss": np.array([-0.20, 0.10, 0.05, 0.02]),
    "all_positive": np.array([0.01, 0.002, 0.03, 0.015, 0.0005, 0.02]),
    "short": np.array([0.01, -0.02, 0.015]),
}
PERIODS = (252.0, 365.0)
T0 = datetime(2024, 3, 4, 14, 30, tzinfo=UTC)  # 09:30 New York (EST)


@pytest.mark.parametrize("name", SERIES)
def test_total_return_matches_empyrical(name: str) -> None:
    r = SERIES[name]
    np.testing.assert_allclose(metrics.total_return(r), empyrical.cum_returns_final(r), rtol=1e-12)


@pytest.mark.parametrize("ppy", PERIODS)
@pytest.mark.parametrize("name", SERIES)
def test_cagr_matches_empyrical(name: str, ppy: float) -> None:
    r = SERIES[name]
    expected = empyrical.annual_return(r, annualization=ppy)
    np.testing.assert_allclose(metrics.cagr(r, ppy), expected, rtol=1e-10)


@pytest.mark.parametrize("ppy", PERIODS)
@pytest.mark.parametrize("name", SERIES)
def test_sharpe_matches_empyrical(name: str, ppy: float) -> None:
    r = SERIES[name]
    np.testing.assert_allclose(
        metrics.sharpe(r, ppy), empyrical.sharpe_ratio(r, annualization=ppy), rtol=1e-10
    )


@pytest.mark.parametrize("risk_free", [0.0001, -0.0002])
def test_sharpe_with_risk_free_matches_empyrical(risk_free: float) -> None:
    r = SERIES["random_daily"]
    expected = empyrical.sharpe_ratio(r, risk_free=risk_free, annualization=252)
    np.testing.assert_allclose(metrics.sharpe(r, 252, risk_free=risk_free), expected, rtol=1e-10)


@pytest.mark.parametrize("ppy", PERIODS)
@pytest.mark.parametrize("name", [n for n in SERIES if n != "all_positive"])
def test_sortino_matches_empyrical(name: str, ppy: float) -> None:
    r = SERIES[name]
    np.testing.assert_allclose(
        metrics.sortino(r, ppy), empyrical.sortino_ratio(r, annualization=ppy), rtol=1e-10
    )


@pytest.mark.parametrize("required", [0.001, -0.005])
def test_sortino_with_required_return_matches_empyrical(required: float) -> None:
    r = SERIES["random_volatile"]
    expected = empyrical.sortino_ratio(r, required_return=required, annualization=252)
    np.testing.assert_allclose(
        metrics.sortino(r, 252, required_return=required), expected, rtol=1e-10
    )
    expected_dd = empyrical.downside_risk(r, required_return=required, annualization=1)
    np.testing.assert_allclose(metrics.downside_deviation(r, required), expected_dd, rtol=1e-10)


def test_sortino_without_downside_is_nan_where_empyrical_says_inf() -> None:
    r = SERIES["all_positive"]
    assert empyrical.sortino_ratio(r, annualization=252) == math.inf
    assert math.isnan(metrics.sortino(r, 252))


@pytest.mark.parametrize("name", SERIES)
def test_max_drawdown_is_empyricals_with_the_sign_flipped(name: str) -> None:
    r = SERIES[name]
    mdd = metrics.max_drawdown(r)
    assert mdd >= 0.0
    np.testing.assert_allclose(mdd, -empyrical.max_drawdown(r), rtol=1e-12, atol=1e-15)


def test_max_drawdown_by_hand() -> None:
    # 100 -> 110 -> 88 -> 99: peak 110, trough 88.
    assert metrics.max_drawdown(np.array([0.10, -0.20, 0.125])) == pytest.approx(0.20)
    # The starting value is a peak: an immediate 20% loss is a 20% drawdown.
    assert metrics.max_drawdown(SERIES["first_period_loss"]) == pytest.approx(0.20)
    assert metrics.max_drawdown(SERIES["all_positive"]) == 0.0


@pytest.mark.parametrize("ppy", PERIODS)
@pytest.mark.parametrize("name", [n for n in SERIES if n != "all_positive"])
def test_calmar_matches_empyrical(name: str, ppy: float) -> None:
    r = SERIES[name]
    expected = empyrical.calmar_ratio(r, annualization=ppy)
    np.testing.assert_allclose(metrics.calmar(r, ppy), expected, rtol=1e-10)


def test_calmar_without_drawdown_is_nan_like_empyrical() -> None:
    r = SERIES["all_positive"]
    assert math.isnan(empyrical.calmar_ratio(r, annualization=252))
    assert math.isnan(metrics.calmar(r, 252))


def test_undefined_ratios_are_nan() -> None:
    one = np.array([0.01])
    assert math.isnan(metrics.sharpe(one, 252))
    assert math.isnan(metrics.sortino(one, 252))
    # A constant series has no dispersion (empyrical answers inf here).
    assert math.isnan(metrics.sharpe(np.full(10, 0.001), 252))
    empty = np.array([])
    for value in (
        metrics.total_return(empty),
        metrics.cagr(empty, 252),
        metrics.max_drawdown(empty),
        metrics.calmar(empty, 252),
        metrics.hit_rate(empty),
    ):
        assert math.isnan(value)


def test_returns_and_drawdown_series_from_equity() -> None:
    equity = np.array([100.0, 110.0, 99.0, 121.0, 108.9])
    np.testing.assert_allclose(
        metrics.returns_from_equity(equity), [0.10, -0.10, 121 / 99 - 1, -0.10]
    )
    np.testing.assert_allclose(metrics.drawdown_series(equity), [0.0, 0.0, -0.10, 0.0, -0.10])
    r = metrics.returns_from_equity(equity)
    assert metrics.total_return(r) == pytest.approx(108.9 / 100 - 1)
    assert metrics.max_drawdown(r) == pytest.approx(-metrics.drawdown_series(equity).min())
    assert metrics.returns_from_equity(np.array([5.0])).size == 0


def test_hit_rate_counts_strictly_positive_pnls() -> None:
    assert metrics.hit_rate(np.array([10.0, -2.0, 0.0, 3.5])) == pytest.approx(0.5)
    assert metrics.hit_rate(np.array([-1.0])) == 0.0


def _fills(rows: list[tuple[int, str, str, float, float, float]]) -> pl.DataFrame:
    """Fills from (minute after T0, symbol, side, qty, price, fee) tuples."""
    return pl.DataFrame(
        [
            {
                "ts": T0 + timedelta(minutes=m),
                "symbol": s,
                "side": side,
                "qty": q,
                "price": p,
                "fee": f,
            }
            for m, s, side, q, p, f in rows
        ],
        schema={
            "ts": pl.Datetime("us", "UTC"),
            "symbol": pl.String,
            "side": pl.String,
            "qty": pl.Float64,
            "price": pl.Float64,
            "fee": pl.Float64,
        },
    )


EMPTY_FILLS = _fills([])


def test_round_trip_buy_100_sell_110_with_fees() -> None:
    trips = metrics.round_trips(
        _fills([(0, "SPY", "buy", 10, 100.0, 1.0), (5, "SPY", "sell", 10, 110.0, 1.5)])
    )
    assert trips.columns == ["symbol", "opened_at", "closed_at", "pnl", "return"]
    assert trips.height == 1
    row = trips.row(0, named=True)
    assert row["symbol"] == "SPY"
    assert row["opened_at"] == T0
    assert row["closed_at"] == T0 + timedelta(minutes=5)
    assert row["pnl"] == pytest.approx(1100.0 - 1000.0 - 2.5)
    assert row["return"] == pytest.approx(97.5 / 1000.0)


def test_round_trips_scale_in_and_out_per_symbol_and_skip_open_trips() -> None:
    fills = _fills(
        [
            (0, "SPY", "buy", 5, 100.0, 0.5),
            (1, "BTC", "buy", 0.5, 40_000.0, 2.0),
            (2, "SPY", "buy", 5, 102.0, 0.5),
            (3, "SPY", "sell", 4, 101.0, 0.4),
            (4, "BTC", "sell", 0.5, 39_000.0, 2.0),  # BTC loses 500 + 4 fees
            (5, "SPY", "sell", 6, 104.0, 0.6),  # SPY trip 1 closes
            (6, "SPY", "buy", 3, 105.0, 0.3),
            (7, "SPY", "sell", 3, 106.0, 0.3),  # SPY trip 2 closes
            (8, "SPY", "buy", 1, 107.0, 0.1),  # still open at the end: no trip
        ]
    )
    trips = metrics.round_trips(fills)
    assert trips.get_column("symbol").to_list() == ["BTC", "SPY", "SPY"]
    spy1_cost = 5 * 100.0 + 5 * 102.0
    spy1_pnl = 4 * 101.0 + 6 * 104.0 - spy1_cost - (0.5 + 0.5 + 0.4 + 0.6)
    np.testing.assert_allclose(
        trips.get_column("pnl").to_numpy(), [-504.0, spy1_pnl, 318.0 - 315.0 - 0.6]
    )
    np.testing.assert_allclose(
        trips.get_column("return").to_numpy(),
        [-504.0 / 20_000.0, spy1_pnl / spy1_cost, 2.4 / 315.0],
    )
    assert trips.get_column("opened_at").to_list() == [T0 + timedelta(minutes=m) for m in (1, 0, 6)]
    assert metrics.hit_rate(trips.get_column("pnl").to_numpy()) == pytest.approx(2 / 3)


def test_round_trips_of_no_fills_is_an_empty_frame() -> None:
    trips = metrics.round_trips(EMPTY_FILLS)
    assert trips.height == 0
    assert trips.columns == ["symbol", "opened_at", "closed_at", "pnl", "return"]


def test_round_trips_reject_shorts_and_unknown_sides() -> None:
    with pytest.raises(ValueError, match="long-only"):
        metrics.round_trips(_fills([(0, "SPY", "sell", 1, 100.0, 0.0)]))
    with pytest.raises(ValueError, match="unknown side"):
        metrics.round_trips(_fills([(0, "SPY", "short", 1, 100.0, 0.0)]))


def test_turnover_is_traded_notional_over_mean_equity_per_year() -> None:
    fills = _fills([(0, "SPY", "buy", 10, 100.0, 1.0), (5, "SPY", "sell", 10, 110.0, 1.0)])
    # (1000 + 1100) / 2000 / 0.5 years
    assert metrics.turnover(fills, mean_equity=2000.0, years=0.5) == pytest.approx(2.1)
    assert metrics.turnover(EMPTY_FILLS, mean_equity=2000.0, years=0.5) == 0.0
    assert math.isnan(metrics.turnover(fills, mean_equity=2000.0, years=0.0))


def test_exposure_is_the_share_of_invested_bars() -> None:
    pv = np.array([0.0, 500.0, 510.0, 0.0, 1e-12, -20.0])
    assert metrics.exposure(pv, np.full(6, 1000.0)) == pytest.approx(3 / 6)
    assert math.isnan(metrics.exposure(np.array([]), np.array([])))
    with pytest.raises(ValueError):
        metrics.exposure(pv, np.ones(5))


def _equity(minutes: list[int], equity: list[float], position: list[float]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "ts": [T0 + timedelta(minutes=m) for m in minutes],
            "equity": equity,
            "position_value": position,
        },
        schema={"ts": pl.Datetime("us", "UTC"), "equity": pl.Float64, "position_value": pl.Float64},
    )


DAY = 24 * 60


def _three_sessions() -> tuple[pl.DataFrame, pl.DataFrame]:
    """Three New York sessions of 3 bars; one buy at 100 sold at 110 the next day."""
    minutes = [0, 1, 389, DAY, DAY + 1, DAY + 389, 2 * DAY, 2 * DAY + 1, 2 * DAY + 389]
    equity = [1000.0, 990.0, 1005.0, 1020.0, 950.0, 1050.0, 1048.0, 1060.0, 1040.0]
    position = [0.0, 990.0, 1005.0, 1020.0, 950.0, 0.0, 0.0, 0.0, 0.0]
    fills = _fills([(1, "SPY", "buy", 10, 100.0, 1.0), (DAY + 389, "SPY", "sell", 10, 110.0, 1.0)])
    return _equity(minutes, equity, position), fills


def test_summarize_by_hand_on_daily_closes() -> None:
    equity, fills = _three_sessions()
    out = metrics.summarize(equity, fills, periods_per_year=252.0)
    assert list(out) == list(metrics.SUMMARY_KEYS)
    # Daily curve: first value, then each New York date's last value.
    daily = np.array([1000.0, 1005.0, 1050.0, 1040.0])
    daily_r = daily[1:] / daily[:-1] - 1
    assert out["total_return"] == pytest.approx(0.04)
    assert out["cagr"] == pytest.approx(1.04 ** (252 / 3) - 1)
    assert out["sharpe"] == pytest.approx(daily_r.mean() / daily_r.std(ddof=1) * math.sqrt(252))
    assert out["sortino"] == pytest.approx(metrics.sortino(daily_r, 252))
    # Intraday: peak 1020 -> trough 950 on day two, invisible in the daily closes.
    assert out["max_drawdown"] == pytest.approx(70 / 1020)
    assert out["calmar"] == pytest.approx(out["cagr"] / (70 / 1020))
    assert out["hit_rate"] == 1.0
    assert out["round_trips"] == 1.0
    assert out["trades"] == 2.0
    assert out["fees"] == pytest.approx(2.0)
    assert out["exposure"] == pytest.approx(4 / 9)
    assert out["turnover"] == pytest.approx(
        2100.0 / float(equity.get_column("equity").mean()) / (3 / 252)
    )


def test_summarize_per_bar_uses_every_bar() -> None:
    equity, fills = _three_sessions()
    out = metrics.summarize(equity, fills, periods_per_year=98_280.0, daily=False)
    r = metrics.returns_from_equity(equity.get_column("equity").to_numpy())
    assert out["total_return"] == pytest.approx(0.04)
    assert out["sharpe"] == pytest.approx(metrics.sharpe(r, 98_280.0))
    assert out["cagr"] == pytest.approx(1.04 ** (98_280 / 8) - 1)


def test_summarize_daily_dates_follow_the_calendar_timezone() -> None:
    # 23:30 and 00:30 UTC fall on one New York date (18:30, 19:30) but two UTC dates.
    late = datetime(2024, 3, 4, 23, 30, tzinfo=UTC)
    equity = pl.DataFrame(
        {
            "ts": [late - timedelta(hours=2), late, late + timedelta(hours=1)],
            "equity": [100.0, 101.0, 103.0],
            "position_value": [0.0, 0.0, 0.0],
        }
    )
    np.testing.assert_allclose(metrics.daily_equity(equity, "America/New_York"), [100.0, 103.0])
    np.testing.assert_allclose(metrics.daily_equity(equity, "UTC"), [100.0, 101.0, 103.0])
    one_day = metrics.summarize(equity, EMPTY_FILLS)
    assert one_day["total_return"] == pytest.approx(0.03)
    assert math.isnan(one_day["sharpe"])  # one daily return
    two_days = metrics.summarize(equity, EMPTY_FILLS, periods_per_year=365, calendar_tz="UTC")
    assert two_days["sharpe"] == pytest.approx(metrics.sharpe(np.array([0.01, 103 / 101 - 1]), 365))


def test_summarize_with_no_fills() -> None:
    equity, _ = _three_sessions()
    out = metrics.summarize(equity, EMPTY_FILLS)
    assert math.isnan(out["hit_rate"])
    assert out["fees"] == 0.0
    assert out["turnover"] == 0.0
    assert out["trades"] == 0.0
    assert out["round_trips"] == 0.0
    assert out["total_return"] == pytest.approx(0.04)
