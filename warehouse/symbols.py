"""The `symbols` table: each symbol's asset class and calendar, read before an import and upserted by it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import duckdb

from core.assets import SymbolInfo, check_asset_class
from core.sessions import SessionRule, session_rule
from warehouse.db import connect

_COLUMNS = ("symbol", "asset_class", "calendar", "timezone", "source", "first_seen", "updated_at")


def load_symbols(
    con: duckdb.DuckDBPyConnection, symbols: Sequence[str] | None = None
) -> dict[str, SymbolInfo]:
    """Stored rows by symbol (all of them when `symbols` is None)."""
    query = f"SELECT {', '.join(_COLUMNS)} FROM symbols"
    params: list[object] = []
    if symbols is not None:
        query += " WHERE list_contains(?, symbol)"
        params.append(list(symbols))
    rows = con.execute(query + " ORDER BY symbol", params).fetchall()
    return {
        str(sym): SymbolInfo(
            symbol=str(sym),
            asset_class=check_asset_class(str(klass)),
            calendar=str(cal),
            timezone=None if tz is None else str(tz),
            source=str(src),
            first_seen=first,
            updated_at=updated,
        )
        for sym, klass, cal, tz, src, first, updated in rows
    }


def stored_session_rule(
    con: duckdb.DuckDBPyConnection, symbol: str, timeframe: str, episode_bars: int | None = None
) -> SessionRule:
    """The rule `train` cuts `symbol`'s episodes with: the timeframe and the calendar stored
    with the symbol (inferred from it when none is stored); episode_bars None: the timeframe's default."""
    info = load_symbols(con, [symbol]).get(symbol)
    calendar = info.calendar if info is not None else None
    return session_rule(symbol, timeframe, calendar, episode_bars=episode_bars)


def write_symbols(
    con: duckdb.DuckDBPyConnection, infos: Sequence[SymbolInfo], now: datetime
) -> dict[str, str]:
    """Upsert rows by symbol; returns symbol -> 'new', 'updated' or 'unchanged'.

    first_seen is set once; updated_at moves only when another column changes, so the same
    import twice changes nothing.
    """
    if not infos:
        return {}
    symbols = [i.symbol for i in infos]
    before = load_symbols(con, symbols)
    outcome: dict[str, str] = {}
    for info in infos:
        old = before.get(info.symbol)
        values = (info.asset_class, info.calendar, info.timezone, info.source)
        if old is None:
            con.execute(
                f"INSERT INTO symbols ({', '.join(_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [info.symbol, *values, now, now],
            )
            outcome[info.symbol] = "new"
        elif (old.asset_class, old.calendar, old.timezone, old.source) != values:
            con.execute(
                "UPDATE symbols SET asset_class = ?, calendar = ?, timezone = ?, source = ?,"
                " updated_at = ? WHERE symbol = ?",
                [*values, now, info.symbol],
            )
            outcome[info.symbol] = "updated"
        else:
            outcome[info.symbol] = "unchanged"
    return outcome


def load_symbol_infos(warehouse: Path | str, symbols: Sequence[str]) -> dict[str, SymbolInfo]:
    """load_symbols on a short-lived connection."""
    if not symbols:
        return {}
    with connect(warehouse) as con:
        return load_symbols(con, symbols)


def store_symbol_infos(
    warehouse: Path | str, infos: Sequence[SymbolInfo], now: datetime
) -> dict[str, str]:
    """write_symbols in one transaction on a short-lived connection."""
    if not infos:
        return {}
    with connect(warehouse) as con:
        con.execute("BEGIN TRANSACTION")
        try:
            outcome = write_symbols(con, infos, now)
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
    return outcome


def load_stored_span(
    warehouse: Path | str,
    symbol: str,
    timeframe: str,
    source: str,
    first: object,
    last: object,
) -> tuple[int, datetime | None, datetime | None]:
    """(count, first ts, last ts) of the stored bars of a series from `source` in [first, last].

    What an import left in `bars` over the span it delivered: its quarantined rows (a
    future timestamp, say) are not counted, its unchanged ones are.
    """
    if not isinstance(first, datetime) or not isinstance(last, datetime):
        return 0, None, None
    with connect(warehouse) as con:
        n, lo, hi = con.execute(
            "SELECT count(*), min(ts), max(ts) FROM bars WHERE symbol = ? AND timeframe = ?"
            " AND source = ? AND ts BETWEEN ? AND ?",
            [symbol, timeframe, source, first, last],
        ).fetchall()[0]
    return int(n), lo, hi
