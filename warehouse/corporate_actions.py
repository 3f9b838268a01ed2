"""Corporate actions learned from the bar source, and the stored bars re-based onto them
(migration 0015; the rule is core.corporate_actions)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import duckdb

from core.corporate_actions import CorporateAction
from warehouse.bars import scale_bars


@dataclass(frozen=True)
class Rebased:
    """One stored series re-based onto one newly learned action."""

    action: CorporateAction
    timeframe: str
    price_factor: float
    volume_factor: float
    bars: int


def learn_actions(
    con: duckdb.DuckDBPyConnection,
    actions: Iterable[CorporateAction],
    now: datetime,
    *,
    source: str,
) -> list[Rebased]:
    """Record the actions not known before and re-base the stored bars of `source` (and its
    feeds, 'alpaca:iex') before each one's ex-date: they were fetched before it was known.
    Idempotent: an action already recorded is skipped, its bars untouched; a series is
    re-based once per action (bar_adjustments). Returns what was re-based."""
    done: list[Rebased] = []
    for action in sorted(actions, key=lambda a: (a.ex_date, a.symbol, a.kind)):
        known = con.execute(
            "SELECT 1 FROM corporate_actions WHERE symbol = ? AND ex_date = ? AND kind = ?",
            [action.symbol, action.ex_date, action.kind],
        ).fetchone()
        if known is not None:
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(
                "INSERT INTO corporate_actions VALUES (?, ?, ?, ?, ?, ?)",
                [action.symbol, action.ex_date, action.kind, action.value, source, now],
            )
            done.extend(_rebase(con, action, now, source))
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    return done


def _rebase(
    con: duckdb.DuckDBPyConnection, action: CorporateAction, now: datetime, source: str
) -> list[Rebased]:
    boundary = action.starts()
    series = con.execute(
        "SELECT timeframe, arg_max(close, ts) FROM bars WHERE symbol = ? AND ts < ?"
        " AND (source = ? OR source LIKE ? || ':%') GROUP BY timeframe ORDER BY timeframe",
        [action.symbol, boundary, source, source],
    ).fetchall()
    out: list[Rebased] = []
    for timeframe, close_before in series:
        price_factor, volume_factor = action.factors(float(close_before))
        n = scale_bars(
            con, action.symbol, str(timeframe), boundary, price_factor, volume_factor, now, source
        )
        con.execute(
            "INSERT INTO bar_adjustments VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [action.symbol, timeframe, action.ex_date, action.kind, price_factor,
             volume_factor, int(n), now],
        )  # fmt: skip
        out.append(Rebased(action, str(timeframe), price_factor, volume_factor, int(n)))
    return out


def known_actions(con: duckdb.DuckDBPyConnection, symbol: str) -> list[CorporateAction]:
    rows = con.execute(
        "SELECT symbol, ex_date, kind, value FROM corporate_actions WHERE symbol = ?"
        " ORDER BY ex_date, kind",
        [symbol],
    ).fetchall()
    return [CorporateAction(str(s), d, k, float(v)) for s, d, k, v in rows]


def oldest_newest_bar(con: duckdb.DuckDBPyConnection, symbols: list[str]) -> datetime | None:
    """The earliest of the symbols' newest stored bars (any timeframe): the corporate actions
    since then may be unknown to the stored history. None when none of them is stored."""
    if not symbols:
        return None
    row = con.execute(
        "SELECT min(newest) FROM (SELECT max(ts) AS newest FROM bars"
        " WHERE list_contains(?, symbol) GROUP BY symbol)",
        [symbols],
    ).fetchone()
    return row[0] if row and isinstance(row[0], datetime) else None
