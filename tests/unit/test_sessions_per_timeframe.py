"""Sessions per timeframe: end-of-session rule, trading days, episodes, warm-up and daily-loss reset."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import trading.backtest as backtest_module
from core.sessions import SessionRule, session_rule, trading_day, with_forced_flat
from models.env import FLAT, LONG, assign_episodes
from models.features import FeatureScaler, FeatureSpec, compute_features
from models.qnet import Architecture, NestedLSTMQNet
from models.registry import AgentPolicy
from tests.unit.test_engine import MIN, T0, _q, _rig
from trading.backtest import run_backtest, warmup_days
from trading.ledger import Ledger
from trading.risk import RiskLimits


@pytest.mark.parametrize(
    ("symbol", "timeframe", "calendar", "flattens"),
    [
        ("SPY", "1Min", None, True),
        ("SPY", "1Hour", None, True),
        ("SPY", "1Day", None, False),
        ("BTC/USD", "1Min", None, False),
        ("EURUSD", "1Hour", "24/5", False),
        ("EURUSD", "1Min", "24/5", False),
    ],
)
def test_only_intraday_bars_on_an_exchange_calendar_go_flat_at_the_close(
    symbol: str, timeframe: str, calendar: str | None, flattens: bool
) -> None:
    assert session_rule(symbol, timeframe, calendar).flattens is flattens
    assert not session_rule(symbol, timeframe, calendar, flatten_at_close=False).flattens


def test_episode_length_defaults_follow_the_timeframe() -> None:
    assert session_rule("SPY", "1Min").episode_bars == 0  # one session
    assert session_rule("EURUSD", "1Hour", "24/5").episode_bars == 120  # one FX week
    assert session_rule("SPY", "1Day").episode_bars == 63  # a quarter
    assert session_rule("SPY", "1Day", episode_bars=252).episode_bars == 252
    with pytest.raises(ValueError, match="episode_bars"):
        SessionRule(episode_bars=-1)


def _days(rule: SessionRule, stamps: list[datetime]) -> list[date]:
    frame = pl.DataFrame({"ts": pl.Series(stamps, dtype=pl.Datetime("us", "UTC"))})
    return frame.select(trading_day(rule)).to_series().to_list()


def test_trading_days_follow_the_calendar() -> None:
    late = datetime(2024, 6, 4, 0, 30, tzinfo=UTC)  # 20:30 New York on June 3
    assert _days(SessionRule("XNYS", "1Min"), [late]) == [date(2024, 6, 3)]
    assert _days(SessionRule("24/7", "1Min"), [late]) == [date(2024, 6, 4)]
    # The FX day rolls at 17:00 New York (21:00 UTC in summer).
    fx = [datetime(2024, 6, 3, 20, 59, tzinfo=UTC), datetime(2024, 6, 3, 21, 0, tzinfo=UTC)]
    assert _days(SessionRule("24/5", "1Min"), fx) == [date(2024, 6, 3), date(2024, 6, 4)]
    # A daily bar stamped 00:00 New York is its own trading day.
    daily = [datetime(2024, 6, 3, 4, tzinfo=UTC)]
    assert _days(SessionRule("XNYS", "1Day"), daily) == [date(2024, 6, 3)]


def test_only_the_last_bars_before_a_real_close_are_forced_flat() -> None:
    # June 3 2024 closes at 20:00 UTC; minute bars from 19:57 to 20:02 (the last two after it).
    stamps = [datetime(2024, 6, 3, 19, 57, tzinfo=UTC) + m * MIN for m in range(6)]
    rule = SessionRule("XNYS", "1Min")
    frame = pl.DataFrame({"ts": pl.Series(stamps, dtype=pl.Datetime("us", "UTC"))})
    frame = with_forced_flat(frame.with_columns(trading_day(rule).alias("day")), rule)
    # Bars closing at 19:59 and 20:00 (within a minute of the close, not after it).
    assert frame.get_column("force_flat").to_list() == [False, True, True, False, False, False]
    assert not with_forced_flat(frame, SessionRule("24/7", "1Min")).get_column("force_flat").any()


def test_the_engine_does_not_flatten_bars_after_the_close(tmp_path: Path) -> None:
    close = T0 + 3 * MIN  # bar 2 ends at the close; bars 3 and 4 are after it (extended hours)
    rig = _rig(tmp_path, _q(*[LONG] * 5), allocation=0.5, flatten_before_close_min=1.0)
    rig.run([(100.0, 100.0)] * 5, session_close=close)
    reasons = [d["risk_reason"] for d in rig.decisions()]
    flat = "flatten before the close"
    assert reasons == [None, flat, flat, None, None]
    assert [side for side, _ in rig.orders()] == ["buy", "sell", "buy"]


def test_an_override_is_recorded_when_the_position_does_not_move(tmp_path: Path) -> None:
    close = T0 + MIN  # the first bar already ends at the close: the model's "long" is refused
    rig = _rig(tmp_path, _q(LONG, FLAT), flatten_before_close_min=1.0)
    rig.run([(100.0, 100.0)] * 2, session_close=close)
    assert rig.orders() == []
    assert [d["risk_reason"] for d in rig.decisions()] == ["flatten before the close", None]


def test_daily_episodes_span_many_trading_days_and_never_a_calendar_month() -> None:
    ts = [datetime(2024, 1, 2, 5, tzinfo=UTC) + timedelta(days=d) for d in range(100)]
    bars = pl.DataFrame(
        {
            "symbol": ["ACME"] * 100,
            "ts": pl.Series(ts, dtype=pl.Datetime("us", "UTC")),
            "open": np.linspace(10, 11, 100),
            "high": np.linspace(10, 11, 100) * 1.01,
            "low": np.linspace(10, 11, 100) * 0.99,
            "close": np.linspace(10, 11, 100),
            "volume": np.ones(100),
            "vwap": np.linspace(10, 11, 100),
        }
    )
    spec = FeatureSpec(symbols=("ACME",), timeframe="1Day")
    rule = session_rule("ACME", "1Day", episode_bars=63)
    frame = assign_episodes(compute_features(bars, spec), bars.select("ts", "close"), rule)
    assert frame.group_by("session").len().sort("session").get_column("len").to_list() == [63, 37]
    assert frame.get_column("day").n_unique() == 100
    # The return across a month's end is earned (the feature sessions cut it to 0).
    jan31 = frame.filter(pl.col("ts").dt.date() == date(2024, 1, 31))
    assert jan31.get_column("ret_next")[0] > 0
    assert not frame.get_column("force_flat").any()


def test_warm_up_covers_the_longest_feature_window_in_bars() -> None:
    spec = FeatureSpec(symbols=("SPY",), timeframe="1Day")
    days = warmup_days(spec, session_rule("SPY", "1Day"))
    # 61 daily bars are at least 61 weekdays: 85 calendar days.
    assert days >= 85
    assert warmup_days(FeatureSpec(symbols=("SPY",)), session_rule("SPY", "1Min")) == 7
    fx = warmup_days(
        FeatureSpec(symbols=("EURUSD",), timeframe="1Hour"),
        session_rule("EURUSD", "1Hour", "24/5"),
    )
    assert fx >= 7


def test_the_daily_loss_switch_resets_every_trading_day_of_daily_bars(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 20
    ts = [datetime(2024, 3, 4, 5, tzinfo=UTC) + timedelta(days=d) for d in range(n)]
    close = np.full(n, 100.0)
    close[5:] = 90.0  # day 5 loses 10%: the 3% switch trips (flatten)
    open_ = np.concatenate(([100.0], close[:-1]))
    bars = pl.DataFrame(
        {
            "symbol": ["ACME"] * n,
            "ts": pl.Series(ts, dtype=pl.Datetime("us", "UTC")),
            "open": open_,
            "high": np.maximum(open_, close),
            "low": np.minimum(open_, close),
            "close": close,
            "volume": np.ones(n),
            "vwap": close,
        }
    )
    spec = FeatureSpec(symbols=("ACME",), timeframe="1Day", return_windows=(1,), vol_windows=(2,))
    net = NestedLSTMQNet(len(spec.names()), Architecture(fast_hidden=4, slow_hidden=2))
    k = len(spec.names())
    policy = AgentPolicy(net, spec, FeatureScaler(spec.names(), [0.0] * k, [1.0] * k), {})
    ledger = Ledger(tmp_path / "w.duckdb", mode="backtest")

    def always_long(_: AgentPolicy, frame: pl.DataFrame) -> dict[str, np.ndarray]:
        sizes = frame.group_by("session").len().iter_rows()
        return {str(key): _q(*[LONG] * size) for key, size in sizes}

    monkeypatch.setattr(backtest_module, "session_q_paths", always_long)
    result = run_backtest(
        policy,
        bars,
        model_id="m",
        run_id="daily-loss",
        start=ts[0],
        end=ts[-1] + timedelta(days=1),
        ledger=ledger,
        limits=RiskLimits(kill_action="flatten"),
        rule=session_rule("ACME", "1Day", "XNYS"),
    )
    reasons = [d["risk_reason"] for d in ledger.rows["decisions"]]
    assert reasons[5] is not None and reasons[5].startswith("kill switch")
    # The next trading day starts a new loss budget: long again, not flat for the episode.
    assert all(r is None for r in reasons[6:])
    assert result.actions.get_column("position").to_list()[-1] == 1
