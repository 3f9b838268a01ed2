"""What a trading session checks before it trades: the model, the costs, the day's bars,
the clock and the mode. Each refusal is a LiveTradingRefused with what to do about it."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from adapters.clock import OffsetClock, measure_offset
from adapters.protocols import Broker, Clock
from core.assets import infer_asset_class
from core.costs import CostModel, configured_costs
from core.settings import Settings, mode_refusal
from models.registry import AgentPolicy, ModelLoadError, load_registered_agent
from trading.calendar import CryptoCalendar, NYSECalendar, Session, calendar_for
from trading.engine import MINUTE
from trading.session import Logger, log
from warehouse.bars import load_bars
from warehouse.db import connect
from warehouse.registry import choose_model
from warehouse.symbols import load_symbol_infos


class LiveTradingRefused(RuntimeError):
    """The run will not trade: wrong mode settings, no compatible model, or another run active."""


def load_compatible_model(
    con: Any, symbol: str, model_id: str | None
) -> tuple[dict[str, Any], AgentPolicy]:
    """The production model (or the one named), checked to be computed by today's feature code."""
    try:
        row = choose_model(con, symbol, model_id, production_only=True)
    except ValueError as err:
        raise LiveTradingRefused(str(err)) from None
    try:
        policy = load_registered_agent(row)
    except ModelLoadError as err:
        raise LiveTradingRefused(
            f"model {row['model_id']} of {symbol} refused, nothing traded: {err}"
        ) from err
    running = policy.spec.schema_hash()
    if row["feature_schema_hash"] != running:
        raise LiveTradingRefused(
            f"model {row['model_id']} was trained on features {row['feature_schema_hash']}, but "
            f"this pipeline computes {running} for that spec; refusing to trade it -- retrain "
            "(tradingml train) and promote the new model"
        )
    return row, policy


def symbol_costs(
    warehouse: Path, symbols: Iterable[str], fee_bps: float | None, slippage_bps: float | None
) -> tuple[CostModel, str]:
    """The costs a run over `symbols` charges, and their asset class: configured_costs of the
    class stored with the symbols (else inferred from their names), as train, backtest and
    evaluate charge it. One simulated broker holds one cost model: one class per run."""
    names = list(symbols)
    infos = load_symbol_infos(warehouse, names)
    classes = {infos[s].asset_class if s in infos else infer_asset_class(s) for s in names}
    if len(classes) != 1:
        raise LiveTradingRefused(
            f"{', '.join(names)} span asset classes {sorted(classes)}: one run trades one class"
        )
    asset_class = classes.pop()
    return configured_costs(asset_class, fee_bps, slippage_bps), asset_class


def session_of_day(symbol: str, day: date) -> Session | None:
    cal = calendar_for(symbol)
    if isinstance(cal, NYSECalendar):
        return cal.session_on(day)
    return CryptoCalendar().session_at(datetime(day.year, day.month, day.day, tzinfo=UTC))


def require_replay_bars(
    warehouse: Path, symbols: list[str], timeframe: str, session: Session, start: datetime
) -> None:
    """Refuse a replay with no stored bar to decide on, instead of reporting an empty session
    as traded (a day outside the stored data, or one whose bars were never ingested)."""
    with connect(warehouse) as con:
        stored = load_bars(
            con, symbols, timeframe, max(start, session.open) - MINUTE, session.close
        )
    if stored.height == 0:
        since = f" from {start:%H:%M} UTC on" if start > session.open else ""
        raise LiveTradingRefused(
            f"no bars for {session.day}: no {timeframe} bars of {', '.join(symbols)}{since} in "
            f"{warehouse}, nothing to replay; ingest that day first (tradingml ingest --start "
            f"{session.day} --end {session.day + timedelta(days=1)} ...) or replay a stored day"
        )


def on_broker_time(
    clock: Clock, broker: Broker, max_offset_s: float, stream: Any = None, logger: Logger = log
) -> Clock:
    """The clock a paper/live run decides on: the local one moved onto the broker's time.

    Compares the local clock with the broker's (Alpaca GET /v2/clock) once at start; past
    `max_offset_s` apart the run refuses to trade, within it every decision (and the
    stream's gap-fill) uses local time + the measured offset.
    """
    offset = measure_offset(clock, lambda: broker.get_clock().timestamp)
    off_s = offset.total_seconds()
    if abs(off_s) > max_offset_s:
        raise LiveTradingRefused(
            f"the local clock is {abs(off_s):.1f} s {'behind' if off_s > 0 else 'ahead of'} the "
            f"broker's (Alpaca /v2/clock), more than max_clock_offset_s={max_offset_s:g}: "
            "refusing to trade on a wrong clock. Sync this machine's clock (NTP: "
            "`timedatectl set-ntp true` or `chronyc makestep`) or raise max_clock_offset_s"
        )
    logger.info(
        "local clock %.3f s %s the broker's: deciding on broker time",
        abs(off_s),
        "behind" if off_s > 0 else "ahead of",
    )
    broker_clock = OffsetClock(clock, offset)
    if hasattr(stream, "set_clock"):
        stream.set_clock(broker_clock)
    return broker_clock


def check_mode(mode: str, settings: Settings) -> None:
    """Refuse at start: live without the opt-in or with a paper key, paper at the live URL."""
    problem = mode_refusal(mode, settings)
    if problem:
        raise LiveTradingRefused(problem)
