"""Values as JSON stores them: non-finite floats as null, timestamps back from ISO text."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any


def json_safe(value: Any) -> Any:
    """NaN and infinities (a Calmar over a curve that never fell) as null: JSON has no such numbers."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def parse_ts(value: Any) -> datetime | None:
    """A timestamp stored as ISO text (or already a datetime); None stays None."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))
