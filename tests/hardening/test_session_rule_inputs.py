"""Bad session settings are refused with a message naming what to change."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.configs import BacktestConfig, TrainAgentConfig
from core.sessions import SessionRule, session_rule, timeframe_span
from trading.calendar import calendar_for


def test_a_negative_episode_length_is_refused_by_name() -> None:
    with pytest.raises(ValidationError, match="episode_bars"):
        TrainAgentConfig(episode_bars=-1)
    with pytest.raises(ValidationError, match="episode_bars"):
        BacktestConfig(episode_bars=-5)
    with pytest.raises(ValueError, match="episode_bars"):
        session_rule("SPY", "1Day", episode_bars=-63)


def test_an_unknown_timeframe_names_the_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown timeframe '2Min'.*1Min"):
        timeframe_span("2Min")
    with pytest.raises(ValueError, match="unknown timeframe"):
        SessionRule(timeframe="daily")


def test_live_trading_refuses_a_calendar_it_cannot_follow() -> None:
    assert calendar_for("BTC/USD", "24/7").name == "24/7"
    assert calendar_for("ACME", "XNYS").name == "XNYS"
    with pytest.raises(ValueError, match="EURUSD trades on calendar 24/5"):
        calendar_for("EURUSD", "24/5")
