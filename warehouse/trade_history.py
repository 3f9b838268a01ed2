"""Read-side queries over the trading ledger tables (fills, orders, decisions, equity)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import duckdb
import polars as pl

from warehouse.io import load_frame


def net_positions(
    con: duckdb.DuckDBPyConnection, *, run_id: str | None, mode: str
) -> dict[str, float]:
    """Net quantity per symbol from stored fills: of one run (replay), or of the whole account (paper/live).

    Symbols whose fills net to zero (within 1e-12) are left out.
    """
    if run_id is not None:
        rows = con.execute(
            "SELECT f.symbol, sum(CASE f.side WHEN 'buy' THEN f.qty ELSE -f.qty END) FROM fills f"
            " JOIN orders o USING (client_order_id) JOIN decisions d ON d.decision_id = o.decision_id"
            " WHERE d.run_id = ? GROUP BY f.symbol",
            [run_id],
        ).fetchall()
    else:
        rows = con.execute(
            "SELECT symbol, sum(CASE side WHEN 'buy' THEN qty ELSE -qty END) FROM fills"
            " WHERE mode = ? GROUP BY symbol",
            [mode],
        ).fetchall()
    return {str(s): float(q) for s, q in rows if q is not None and abs(float(q)) > 1e-12}


def recorded_fill_ids(con: duckdb.DuckDBPyConnection, client_order_ids: Sequence[str]) -> set[str]:
    """The fill ids stored for any of these client order ids."""
    return {
        str(row[0])
        for row in con.execute(
            "SELECT fill_id FROM fills WHERE list_contains(?, client_order_id)",
            [list(client_order_ids)],
        ).fetchall()
    }


def ordered_symbols(con: duckdb.DuckDBPyConnection, *, mode: str) -> set[str]:
    """Every symbol an order of the mode's account was stored for (its runs' symbols)."""
    return {
        str(s)
        for (s,) in con.execute(
            "SELECT DISTINCT symbol FROM orders WHERE mode = ?", [mode]
        ).fetchall()
    }


def order_statuses(
    con: duckdb.DuckDBPyConnection, client_order_ids: Sequence[str]
) -> dict[str, str]:
    """client_order_id -> stored status, for those of these ids the orders table holds."""
    return {
        str(cid): str(status)
        for cid, status in con.execute(
            "SELECT client_order_id, status FROM orders WHERE list_contains(?, client_order_id)",
            [list(client_order_ids)],
        ).fetchall()
    }


def booked_fills(
    con: duckdb.DuckDBPyConnection, client_order_ids: Sequence[str]
) -> dict[str, tuple[float, float]]:
    """client_order_id -> (filled quantity, its cost: sum of qty * price) over the stored fills."""
    return {
        str(cid): (float(qty), float(cost))
        for cid, qty, cost in con.execute(
            "SELECT client_order_id, sum(qty), sum(qty * price) FROM fills"
            " WHERE list_contains(?, client_order_id) GROUP BY ALL",
            [list(client_order_ids)],
        ).fetchall()
    }


def first_equity_in(
    con: duckdb.DuckDBPyConnection, account: str, after: datetime, until: datetime
) -> float | None:
    """The account's first recorded equity with after < ts <= until; None when there is none."""
    row = con.execute(
        "SELECT equity FROM equity WHERE account = ? AND ts > ? AND ts <= ? ORDER BY ts LIMIT 1",
        [account, after, until],
    ).fetchone()
    return None if row is None or row[0] is None else float(row[0])


def filled_qty_by_broker_order(
    con: duckdb.DuckDBPyConnection, mode: str
) -> dict[str | None, float | None]:
    """broker_order_id -> total stored fill quantity, over the fills of `mode`."""
    return {
        (None if oid is None else str(oid)): (None if qty is None else float(qty))
        for oid, qty in con.execute(
            "SELECT broker_order_id, sum(qty) FROM fills WHERE mode = ? GROUP BY 1", [mode]
        ).fetchall()
    }


def placed_client_order_ids(con: duckdb.DuckDBPyConnection, mode: str) -> set[str]:
    """client_order_id of every stored order of `mode` the broker accepted (has a broker id)."""
    return {
        str(row[0])
        for row in con.execute(
            "SELECT client_order_id FROM orders WHERE mode = ? AND broker_order_id IS NOT NULL",
            [mode],
        ).fetchall()
    }


def late_order_count(con: duckdb.DuckDBPyConnection, mode: str) -> int:
    """How many accepted orders of `mode` were submitted more than 150 s after their decision."""
    row = con.execute(
        "SELECT count(*) FROM orders o JOIN decisions d USING (decision_id)"
        " WHERE o.mode = ? AND o.broker_order_id IS NOT NULL"
        " AND o.submitted_at - d.ts > INTERVAL 150 SECOND",
        [mode],
    ).fetchall()
    return int(row[0][0])


def recent_decisions(
    con: duckdb.DuckDBPyConnection, run_id: str, last: int = 10
) -> list[dict[str, object]]:
    """A run's newest `last` decisions, each with its order if it sent one (newest first)."""
    cursor = con.execute(
        "SELECT d.ts, d.symbol, d.action, d.risk_verdict, d.risk_reason,"
        " o.side AS order_side, o.qty AS order_qty, o.status AS order_status"
        " FROM decisions d LEFT JOIN orders o USING (decision_id)"
        " WHERE d.run_id = ? ORDER BY d.ts DESC, d.symbol LIMIT ?",
        [run_id, last],
    )
    names = [c[0] for c in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def fills_by_route(con: duckdb.DuckDBPyConnection, mode: str) -> dict[str, int]:
    """How many fills of `mode` each route booked (seen_via: stream, rest, sim...)."""
    return {
        str(route): int(n)
        for route, n in con.execute(
            "SELECT seen_via, count(*) FROM fills WHERE mode = ? GROUP BY seen_via", [mode]
        ).fetchall()
    }


def run_decision_counts(con: duckdb.DuckDBPyConnection, run_id: str) -> tuple[int, int]:
    """(decisions, of them not 'hold') of one run."""
    row = con.execute(
        "SELECT count(*), count(*) FILTER (WHERE action <> 'hold') FROM decisions WHERE run_id = ?",
        [run_id],
    ).fetchall()[0]
    return int(row[0]), int(row[1])


def run_decisions_by_symbol(
    con: duckdb.DuckDBPyConnection, run_id: str
) -> list[tuple[str, int, int]]:
    """(symbol, decisions, of them 'long') of one run, by symbol."""
    rows = con.execute(
        "SELECT symbol, count(*), count(*) FILTER (WHERE action = 'long') FROM decisions"
        " WHERE run_id = ? GROUP BY symbol ORDER BY symbol",
        [run_id],
    ).fetchall()
    return [(str(s), int(n), int(lg)) for s, n, lg in rows]


def run_order_count(con: duckdb.DuckDBPyConnection, run_id: str) -> int:
    """Orders sent for one run's decisions."""
    return int(
        con.execute(
            "SELECT count(*) FROM orders o JOIN decisions d USING (decision_id) WHERE d.run_id = ?",
            [run_id],
        ).fetchall()[0][0]
    )


def run_fills(con: duckdb.DuckDBPyConnection, run_id: str) -> pl.DataFrame:
    """A run's fills (ts, symbol, side, qty, price, fee), through its orders and decisions."""
    return load_frame(
        con,
        "SELECT f.ts, f.symbol, f.side, f.qty, f.price, f.fee FROM fills f"
        " JOIN orders o USING (client_order_id) JOIN decisions d ON d.decision_id = o.decision_id"
        " WHERE d.run_id = ? ORDER BY f.ts",
        [run_id],
    )


def run_actions(con: duckdb.DuckDBPyConnection, run_id: str) -> pl.DataFrame:
    """A run's decisions (ts = the decided bar's start, symbol, action)."""
    return load_frame(
        con,
        "SELECT ts - INTERVAL 1 MINUTE AS ts, symbol, action FROM decisions WHERE run_id = ?"
        " ORDER BY ts",
        [run_id],
    )


def account_equity(
    con: duckdb.DuckDBPyConnection, account: str, start: datetime, end: datetime
) -> pl.DataFrame:
    """An account's equity points (ts, equity, positions_value) in (start, end]."""
    return load_frame(
        con,
        "SELECT ts, equity, positions_value FROM equity WHERE account = ? AND ts > ? AND ts <= ?"
        " ORDER BY ts",
        [account, start, end],
    )
