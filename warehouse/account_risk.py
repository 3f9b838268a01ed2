"""Reads and writes of the account-wide risk view (migration 0014): limits and each day's start."""

from __future__ import annotations

import contextlib
from datetime import date, datetime

import duckdb


def load_account_limits(con: duckdb.DuckDBPyConnection, account: str) -> tuple[float, float] | None:
    """(daily_loss_limit, max_gross_exposure) stored for the account, or None."""
    row = con.execute(
        "SELECT daily_loss_limit, max_gross_exposure FROM account_limits WHERE account = ?",
        [account],
    ).fetchone()
    return None if row is None else (float(row[0]), float(row[1]))


def save_account_limits(
    con: duckdb.DuckDBPyConnection,
    account: str,
    daily_loss_limit: float,
    max_gross_exposure: float,
    now: datetime,
) -> None:
    """Set the account's limits (replacing earlier ones): every flow reads them at its next check."""
    con.execute(
        "INSERT INTO account_limits VALUES (?, ?, ?, ?) ON CONFLICT (account) DO UPDATE SET"
        " daily_loss_limit = excluded.daily_loss_limit,"
        " max_gross_exposure = excluded.max_gross_exposure, updated_at = excluded.updated_at",
        [account, daily_loss_limit, max_gross_exposure, now],
    )


def account_day_start(
    con: duckdb.DuckDBPyConnection,
    account: str,
    day: date,
    equity: float,
    now: datetime,
    run_id: str,
) -> tuple[float, str]:
    """The account's start equity of `day` and the run that recorded it: `equity` by `run_id`
    when no flow has looked yet this day, else what the first one recorded (never replaced)."""
    # Another connection of this process may record it in the same instant (DuckDB answers
    # the loser with a transaction conflict or a duplicate-key error): theirs stands.
    with contextlib.suppress(duckdb.TransactionException, duckdb.ConstraintException):
        con.execute(
            "INSERT INTO account_days VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [account, day, equity, now, run_id],
        )
    row = con.execute(
        "SELECT start_equity, recorded_by FROM account_days WHERE account = ? AND day = ?",
        [account, day],
    ).fetchone()
    assert row is not None
    return float(row[0]), str(row[1])
