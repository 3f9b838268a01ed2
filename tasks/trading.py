"""The trading flows' stages as Prefect tasks, so a session shows its steps in the UI:
the models loaded, the session opened (recovery, reconciliation, warm-up), the minutes
traded. The work itself is trading.session's and trading.session_start's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from models.registry import AgentPolicy
from trading.session import SessionResult, TradingSession
from trading.session_start import LiveTradingRefused, load_compatible_model
from warehouse.db import connect


@task(name="load-models", cache_policy=NO_CACHE)
def load_models(
    warehouse: Path, symbols: list[str], model_id: str | None = None, *, skip_refused: bool = False
) -> tuple[dict[str, tuple[dict[str, Any], AgentPolicy]], dict[str, str]]:
    """Each symbol's production model (or the one named), checked against today's feature
    code; with skip_refused a symbol without one is left out (and said why), else refused."""
    models: dict[str, tuple[dict[str, Any], AgentPolicy]] = {}
    skipped: dict[str, str] = {}
    with connect(warehouse) as con:
        for symbol in symbols:
            try:
                models[symbol] = load_compatible_model(con, symbol, model_id)
            except LiveTradingRefused as err:
                if not skip_refused:
                    raise
                skipped[symbol] = str(err)
    for symbol, why in skipped.items():
        get_run_logger().info("%s: not traded (%s)", symbol, why)
    return models, skipped


@task(name="open-session", cache_policy=NO_CACHE)
def open_session(trading: TradingSession) -> int:
    """Recover this run's orders, reconcile with the broker, warm the policies up."""
    return trading.open()


@task(name="trade-session", cache_policy=NO_CACHE)
def trade_session(trading: TradingSession) -> SessionResult:
    """The minute loop to the session's end (or max_minutes)."""
    return trading.run()
