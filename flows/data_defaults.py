"""Defaults from the data: the timeframe and date ranges that `train` and `backtest` leave unset, read from what is stored."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Any

import polars as pl

from core.configs import BacktestConfig, TrainAgentConfig

TEST_SHARE = 0.2
"""Share of the stored span held out for testing when no dates are given (the most recent part)."""

_TRAIN_DATES = ("train_start", "train_end", "test_start", "test_end")


def say(logger: Any, text: str) -> None:
    """A line a person should see before long work: on the console (beside the progress bars)
    and in the run's log."""
    sys.stderr.write(text + "\n")
    logger.info(text)


def _day(value: Any) -> date:
    return value.date() if isinstance(value, datetime) else value


def stored_span(
    coverage: pl.DataFrame, symbols: Sequence[str], timeframe: str
) -> tuple[date, date] | None:
    """First and last day on which every one of `symbols` that has `timeframe` bars has them (UTC)."""
    rows = coverage.filter(
        pl.col("symbol").is_in(list(symbols)) & (pl.col("timeframe") == timeframe)
    )
    if rows.height == 0:
        return None
    first = max(_day(v) for v in rows.get_column("first_bar").to_list())
    last = min(_day(v) for v in rows.get_column("last_bar").to_list())
    return (first, last) if first <= last else None


def stored_timeframe(coverage: pl.DataFrame, symbol: str) -> str | None:
    """The timeframe with the most stored bars of `symbol` (None: nothing stored)."""
    rows = coverage.filter(pl.col("symbol") == symbol).sort(
        ["bars", "timeframe"], descending=[True, False]
    )
    return str(rows.get_column("timeframe")[0]) if rows.height else None


def split_day(first: date, end: date, test_share: float = TEST_SHARE) -> date:
    """The first held-out day: the last `test_share` of [first, end) by calendar days.

    Over a year or more it is rounded to the nearest first of a month, a date people read.
    """
    days = (end - first).days
    cut = first + timedelta(days=max(1, min(days - 1, round(days * (1 - test_share)))))
    if days >= 365:
        month = date(cut.year, cut.month, 1)
        following = date(cut.year + cut.month // 12, cut.month % 12 + 1, 1)
        cut = month if (cut - month) <= (following - cut) else following
    return cut


def resolve_train_config(
    config: TrainAgentConfig, coverage: pl.DataFrame
) -> tuple[TrainAgentConfig, str | None]:
    """`config` with its unset timeframe and dates taken from the stored bars, and a line saying so.

    Only fields the caller did not set are filled (pydantic's ``model_fields_set``); with
    nothing stored for the traded symbol the config is returned as it is (the flow then
    says which bars are missing).
    """
    given = config.model_fields_set
    traded = config.symbols[0]
    timeframe = config.timeframe
    if "timeframe" not in given:
        timeframe = stored_timeframe(coverage, traded) or timeframe
    if "timeframe" in given and set(_TRAIN_DATES) <= given:
        return config, None
    span = stored_span(coverage, config.symbols, timeframe)
    if span is None:
        return config, None
    first, last = span
    start = config.train_start if "train_start" in given else first
    end = config.test_end if "test_end" in given else last + timedelta(days=1)
    updates: dict[str, Any] = {"timeframe": timeframe, "train_start": start, "test_end": end}
    if "train_end" in given or "test_start" in given:
        cut = config.train_end if "train_end" in given else config.test_start
        updates["train_end"] = config.train_end if "train_end" in given else cut
        updates["test_start"] = config.test_start if "test_start" in given else cut
    else:
        updates["train_end"] = updates["test_start"] = split_day(start, end)
    resolved = TrainAgentConfig.model_validate({**config.model_dump(), **updates})
    one_day = timedelta(days=1)
    message = (
        f"using {timeframe} bars of {traded} {first} .. {last}: train "
        f"{resolved.train_start} .. {resolved.train_end - one_day}, test "
        f"{resolved.test_start} .. {resolved.test_end - one_day}"
    )
    return resolved, message


def resolve_backtest_config(
    config: BacktestConfig,
    coverage: pl.DataFrame,
    timeframe: str,
    model_params: Mapping[str, Any] | None = None,
) -> tuple[BacktestConfig, str | None]:
    """`config` with unset start/end from the model's held-out range, else the stored bars' last part.

    `model_params` is the registry row's params (train stores its ``test_range`` there).
    """
    given = config.model_fields_set
    if {"start", "end"} <= given:
        return config, None
    held_out = (model_params or {}).get("test_range")
    span = stored_span(coverage, [config.symbol], timeframe)
    if held_out and len(held_out) == 2:
        start, end = date.fromisoformat(str(held_out[0])), date.fromisoformat(str(held_out[1]))
        why = "the model's held-out range"
    elif span is not None:
        end = span[1] + timedelta(days=1)
        start = split_day(span[0], end)
        why = f"the last {TEST_SHARE:.0%} of the stored bars"
    else:
        return config, None
    updates = {
        "start": config.start if "start" in given else start,
        "end": config.end if "end" in given else end,
    }
    resolved = BacktestConfig.model_validate({**config.model_dump(), **updates})
    stored = f" {span[0]} .. {span[1]}" if span is not None else ""
    message = (
        f"using {timeframe} bars of {config.symbol}{stored}: backtest {resolved.start} .. "
        f"{resolved.end - timedelta(days=1)} ({why})"
    )
    return resolved, message
