"""Names for data: a short fingerprint of frames and values (in model ids), the sources of bars."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import polars as pl


def fingerprint(*parts: Any) -> str:
    """A short hash of frames (their numeric and time columns) and JSON-able values: names data in ids."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, pl.DataFrame):
            for name in part.columns:
                col = part.get_column(name)
                if col.dtype.is_numeric() or col.dtype.is_temporal():
                    digest.update(name.encode())
                    digest.update(col.to_physical().fill_null(0).to_numpy().tobytes())
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:10]


def data_sources(bars: pl.DataFrame) -> list[str]:
    """Provenance of the bars; 'synthetic...' marks a model trained on generated data."""
    if "source" not in bars.columns:
        return []
    return sorted(str(x) for x in bars.get_column("source").unique().to_list())
