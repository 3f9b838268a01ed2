"""Short-lived, lock-aware DuckDB connections: retry while another process holds the file."""

from __future__ import annotations

import random
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from warehouse.migrate import apply_migrations, current_version

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


def _is_lock_conflict(exc: duckdb.Error) -> bool:
    text = str(exc)
    return "Could not set lock" in text or "Conflicting lock" in text


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
    start = time.monotonic()
    attempt = 0
    while True:
        try:
            con = duckdb.connect(str(path), read_only=read_only)
            break
        except duckdb.IOException as exc:
            if not _is_lock_conflict(exc):
                raise
            waited = time.monotonic() - start
            if waited >= timeout_s:
                raise WarehouseLockedError(path, waited, describe_holder(str(exc))) from None
            # Full jitter keeps several waiting processes from retrying in lock-step.
            delay = random.uniform(0, min(max_delay_s, base_delay_s * 2**attempt))
            time.sleep(min(delay, max(0.0, timeout_s - waited)))
            attempt += 1
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
