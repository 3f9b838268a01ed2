"""Forward-only numbered .sql migrations, recorded in schema_version and applied idempotently."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources

import duckdb

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    """The warehouse's recorded schema disagrees with the migration files."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def available_migrations() -> list[Migration]:
    """The migration files shipped in warehouse/migrations, in version order."""
    found: list[Migration] = []
    for entry in resources.files("warehouse.migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise MigrationError(f"migration versions must be 1..N without gaps, found {versions}")
    return found


def current_version(con: duckdb.DuckDBPyConnection) -> int:
    exists = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'schema_version'"
    ).fetchall()[0][0]
    if exists == 0:
        return 0
    return int(con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchall()[0][0])


def apply_migrations(con: duckdb.DuckDBPyConnection) -> list[int]:
    """Apply every migration newer than the recorded version; returns the versions applied.

    Each migration runs in its own transaction together with its schema_version row,
    so a crash leaves the file at the previous version, never half-migrated.
    """
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_version ("
        " version INTEGER PRIMARY KEY, name VARCHAR NOT NULL,"
        " checksum VARCHAR NOT NULL, applied_at TIMESTAMPTZ NOT NULL)"
    )
    migrations = available_migrations()
    recorded = {
        int(v): str(c)
        for v, c in con.execute("SELECT version, checksum FROM schema_version").fetchall()
    }
    for m in migrations:
        if m.version in recorded and recorded[m.version] != m.checksum:
            # Forward-only: an applied file must never change; add a new numbered file instead.
            raise MigrationError(
                f"migration {m.version:04d}_{m.name}.sql changed after it was applied to this "
                "warehouse; migrations are forward-only -- add a new numbered file instead"
            )
    newest_known = migrations[-1].version if migrations else 0
    if recorded and max(recorded) > newest_known:
        raise MigrationError(
            f"this warehouse is at schema version {max(recorded)}, newer than this code "
            f"knows ({newest_known}); upgrade the code"
        )
    applied: list[int] = []
    for m in migrations:
        if m.version in recorded:
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(m.sql)
            con.execute(
                "INSERT INTO schema_version VALUES (?, ?, ?, ?)",
                [m.version, m.name, m.checksum, datetime.now(UTC)],
            )
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
        applied.append(m.version)
    return applied
