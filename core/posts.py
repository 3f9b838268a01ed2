"""One Reddit submission as fetched: a domain type shared by the post sources, validation and the warehouse."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Post:
    """One Reddit submission as fetched; created_utc is the event time, fetched_at the ingest time."""

    id: str
    subreddit: str
    title: str
    body: str
    author: str | None
    score: int
    num_comments: int
    created_utc: datetime
    fetched_at: datetime
    url: str | None = None
    source: str = "reddit"
