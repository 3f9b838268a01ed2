"""Short-lived DuckDB connections that wait out file locks, transactions on them; a locked-down one for the SQL console."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import duckdb
import polars as pl
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_delay,
    wait_random_exponential,
)

from warehouse.migrate import apply_migrations, current_version

log = logging.getLogger(__name__)
_PID = re.compile(r"PID (\d+)")


class WarehouseLockedError(RuntimeError):
    """Another process kept the warehouse file locked for longer than the timeout."""

    def __init__(self, path: Path, waited_s: float, holder: str) -> None:
        self.path = path
        self.waited_s = waited_s
        self.holder = holder
        super().__init__(
            f"warehouse {path} is locked by another process ({holder}); gave up after "
            f"{waited_s:.1f} s. Stop that process, or wait and retry (TRADINGML_LOCK_TIMEOUT_S "
            "sets how long to wait)."
        )


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """BEGIN on entry, COMMIT on a clean exit; on an exception ROLLBACK and re-raise.

    A failed COMMIT is rolled back too. `con` must not be inside a transaction already.
    """
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
        con.execute("COMMIT")
    except Exception:
        try:
            con.execute("ROLLBACK")
        except duckdb.Error as rollback_error:
            # A COMMIT that failed has ended the transaction already: ROLLBACK then says "no
            # transaction is active" -- the COMMIT's own error is the one to report.
            log.debug("rollback after a failed statement: %s", rollback_error)
        raise


def is_commit_conflict(exc: BaseException) -> bool:
    """Another connection to the same database committed the same keys first.

    DuckDB's transactions are optimistic: two connections of one process (two flows in
    threads) may both insert a key, and the second COMMIT fails with a constraint violation
    or a write-write conflict. The transaction is over then; an idempotent write can simply
    run again and find the key stored. Two processes never meet it: one holds the file.
    """
    text = str(exc)
    return isinstance(exc, duckdb.TransactionException) and (
        "constraint violation" in text or "onflict" in text
    )


def _is_lock_conflict(exc: BaseException) -> bool:
    text = str(exc)
    return isinstance(exc, duckdb.IOException) and (
        "Could not set lock" in text or "Conflicting lock" in text
    )


def describe_holder(message: str) -> str:
    """'PID 1234: python -m flows.demo' from DuckDB's lock message, as far as it can be known."""
    match = _PID.search(message)
    if not match:
        return "holder unknown"
    pid = match.group(1)
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        cmdline = ""
    return f"PID {pid}: {cmdline}" if cmdline else f"PID {pid}"


def open_connection(
    path: Path | str,
    *,
    read_only: bool = False,
    timeout_s: float = 30.0,
    base_delay_s: float = 0.05,
    max_delay_s: float = 2.0,
) -> duckdb.DuckDBPyConnection:
    """Open the file, retrying lock conflicts with jittered exponential backoff up to timeout_s."""
    path = Path(path)
    if read_only and not path.exists():
        raise FileNotFoundError(
            f"warehouse {path} does not exist yet; run `make demo` or a flow first"
        )
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    # Full jitter keeps several waiting processes from retrying in lock-step; the last wait
    # ends at the timeout, so the last attempt is made then.
    jitter = wait_random_exponential(multiplier=base_delay_s, max=max_delay_s)

    def wait(state: RetryCallState) -> float:
        return min(jitter(state), max(0.0, timeout_s - (state.seconds_since_start or 0.0)))

    def give_up(state: RetryCallState) -> NoReturn:
        conflict = state.outcome.exception() if state.outcome else None
        holder = describe_holder(str(conflict))
        raise WarehouseLockedError(path, state.seconds_since_start or 0.0, holder) from None

    con = Retrying(
        retry=retry_if_exception(_is_lock_conflict),
        wait=wait,
        stop=stop_after_delay(timeout_s),
        retry_error_callback=give_up,
    )(duckdb.connect, str(path), read_only=read_only)
    con.execute("SET TimeZone = 'UTC'")
    return con


@contextmanager
def connect(
    path: Path | str | None = None,
    *,
    read_only: bool = False,
    timeout_s: float | None = None,
    migrate: bool = True,
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection for one unit of work; migrations applied on first read-write open.

    Never hold one across a wait: DuckDB allows one read-write process per file.
    """
    if path is None or timeout_s is None:
        from core.settings import get_settings

        settings = get_settings()
        path = settings.warehouse_path if path is None else path
        timeout_s = settings.lock_timeout_s if timeout_s is None else timeout_s
    resolved = Path(path).resolve()
    con = open_connection(resolved, read_only=read_only, timeout_s=timeout_s)
    try:
        # Checked on every open (a few ms): a cache could miss a file deleted and recreated.
        if migrate and not read_only:
            apply_migrations(con)
        elif read_only and current_version(con) == 0:
            raise RuntimeError(
                f"warehouse {resolved} has no schema yet; run `make demo` or a flow first"
            )
        yield con
    finally:
        con.close()


# Applied in order after the read-only open; lock_configuration comes last so that the
# typed query cannot SET or RESET any of them back.
_CONSOLE_SETTINGS = (
    # No file outside the warehouse (COPY, EXPORT, read_csv, ATTACH), no URL, no INSTALL.
    "enable_external_access = false",
    "autoinstall_known_extensions = false",
    "autoload_known_extensions = false",
    "allow_community_extensions = false",
    # A table name must not resolve to a Python object of this process.
    "python_enable_replacements = false",
    "lock_configuration = true",
)
_CONSOLE_LIMITS = (
    "the SQL console is read-only and cannot read or write files outside the warehouse, "
    "install or load extensions, or reach the network"
)


class SqlConsoleError(ValueError):
    """A query typed into the SQL console that DuckDB refused or could not run (one line)."""


def describe_console_error(exc: duckdb.Error) -> str:
    """One line for the console: a refusal named as such, otherwise DuckDB's first line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    first = lines[0] if lines else type(exc).__name__
    detail = first.split(": ", 1)[1] if ": " in first else first
    if isinstance(exc, duckdb.PermissionException) or "requires the extension" in first:
        return f"refused: {_CONSOLE_LIMITS} ({detail})"
    if "configuration has been locked" in first:
        # DuckDB 2.0 doubles the quotes around the option's name.
        detail = detail.replace('""', '"')
        return f"refused: the SQL console's settings are locked ({detail})"
    if "read-only mode" in first:
        return f"refused: the SQL console is read-only ({detail})"
    return first


@contextmanager
def connect_console(
    path: Path | str | None = None, *, timeout_s: float | None = None
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection for SQL a user types: no writes, no files, extensions or network.

    DuckDB errors raised while it is open come out as SqlConsoleError with one line.
    """
    with connect(path, read_only=True, timeout_s=timeout_s) as con:
        for setting in _CONSOLE_SETTINGS:
            con.execute(f"SET {setting}")
        try:
            yield con
        except duckdb.Error as exc:
            raise SqlConsoleError(describe_console_error(exc)) from exc


def load_console_frame(con: duckdb.DuckDBPyConnection, query: str) -> pl.DataFrame:
    """Run a console query; a query with no statement (blank, only comments) is an error."""
    relation = con.sql(query)
    if relation is None:
        raise SqlConsoleError(
            'no SQL statement in the query; e.g. tradingml sql "select * from v_bar_coverage"'
        )
    return relation.pl()
