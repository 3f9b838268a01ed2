"""The DuckDB warehouse: migrations, lock-aware connections, polars io and idempotent upserts."""

from warehouse.db import WarehouseLockedError, connect
from warehouse.io import UpsertResult, load_frame, upsert

__all__ = ["UpsertResult", "WarehouseLockedError", "connect", "load_frame", "upsert"]
