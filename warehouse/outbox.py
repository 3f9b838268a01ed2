"""The one outbox: rows a locked warehouse cannot take now, kept as Parquet files beside it.

While another process holds the DuckDB file, the trading session's bars (and their
quarantine) and its ledger rows (decisions, orders, fills, equity, reconciliation events)
are put here, one append-only file per kind and write; the next writer that gets the file
merges its own kinds, oldest first, and removes the files it merged. A file appears whole or
not at all (written under a hidden temporary name, then renamed); names sort by time within
a kind, so a merge keeps the newest version of a repeated key.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

import polars as pl


@dataclass(frozen=True)
class Outbox:
    """A folder of `<kind>--<time_ns>-<uuid>.parquet` files."""

    folder: Path

    def put(self, kind: str, frame: pl.DataFrame) -> Path:
        """Keep `frame` as one file of `kind`; returns its path."""
        self.folder.mkdir(parents=True, exist_ok=True)
        stamp = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        tmp = self.folder / f".{kind}--{stamp}.tmp"
        frame.write_parquet(tmp)
        return tmp.rename(self.folder / f"{kind}--{stamp}.parquet")

    def waiting(self, kinds: Collection[str]) -> list[tuple[str, Path]]:
        """(kind, path) of the files of `kinds`, in name order: by kind, oldest first."""
        if not self.folder.exists():
            return []
        files = [(path.name.split("--", 1)[0], path) for path in self.folder.glob("*.parquet")]
        return sorted(((k, p) for k, p in files if k in kinds), key=lambda kp: kp[1].name)

    @staticmethod
    def done(paths: Iterable[Path]) -> None:
        """Remove merged files (after the transaction that stored them committed)."""
        for path in paths:
            path.unlink(missing_ok=True)
