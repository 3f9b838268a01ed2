"""Dask worker preload: the worker behaves as if it ran on another machine with no shared disk.

Loaded with `dask worker --preload <this file>`. Every path under the roots named in
TRADINGML_FORBIDDEN_ROOTS (os.pathsep-separated: the flow's warehouse and model store) is
out of reach: opening, listing, creating, renaming or removing one raises PermissionError
(a Python audit hook, which sees every file operation of Python code), and so does
duckdb.connect on such a path (DuckDB opens its files in C++, out of the hook's sight).
Each refusal is also appended to TRADINGML_REFUSALS_LOG (a file in the worker's own folder),
so a test sees an attempt even when the task swallowed the error.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

ROOTS_ENV = "TRADINGML_FORBIDDEN_ROOTS"
LOG_ENV = "TRADINGML_REFUSALS_LOG"
_EVENTS = {
    "open",
    "os.listdir",
    "os.scandir",
    "os.mkdir",
    "os.rename",
    "os.replace",
    "os.remove",
    "os.rmdir",
    "os.chmod",
    "shutil.rmtree",
    "shutil.copyfile",
}


def _roots() -> list[str]:
    raw = os.environ.get(ROOTS_ENV, "")
    return [os.path.realpath(r) for r in raw.split(os.pathsep) if r]


def forbidden(path: Any, roots: list[str]) -> bool:
    if isinstance(path, int) or path is None:  # a file descriptor: already open, not a path
        return False
    try:
        real = os.path.realpath(os.fsdecode(path))
    except (TypeError, ValueError):
        return False
    return any(real == r or real.startswith(r + os.sep) for r in roots)


def install(roots: list[str], log: str | None) -> None:
    """Refuse every file operation under `roots` in this process, from now on."""

    def refuse(what: str, path: Any) -> None:
        if log:
            with open(log, "a") as f:  # the log is outside the roots: no recursion
                f.write(f"{what} {os.fsdecode(path)}\n")
        raise PermissionError(f"no shared disk: this worker may not touch {os.fsdecode(path)}")

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event in _EVENTS and args and forbidden(args[0], roots):
            refuse(event, args[0])
        if event in {"os.rename", "os.replace"} and len(args) > 1 and forbidden(args[1], roots):
            refuse(event, args[1])

    sys.addaudithook(hook)
    import duckdb

    real_connect = duckdb.connect

    def connect(database: Any = ":memory:", *a: Any, **kw: Any) -> Any:
        if isinstance(database, (str, Path)) and forbidden(database, roots):
            refuse("duckdb.connect", database)
        return real_connect(database, *a, **kw)

    duckdb.connect = connect


def dask_setup(worker: Any) -> None:
    install(_roots(), os.environ.get(LOG_ENV))
