"""Alpaca backfill benchmark: our side of a minute-bar backfill through alpaca-py against the fake server."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from adapters.alpaca import AlpacaBarSource
from benchmarks.harness import Figure, benchmark

START = datetime(2024, 1, 1, tzinfo=UTC)
BARS_PER_SYMBOL = 100_000
SYMBOLS = ("SPY", "VTI", "BTC/USD", "ETH/USD")


@benchmark("alpaca")
def bench_alpaca(scratch: Path) -> list[Figure]:
    # The fake lives in tests/; the benchmark borrows it so both measure the same wire format.
    from tests.fakes.alpaca import FakeAlpacaRest

    with FakeAlpacaRest() as fake:
        for i, symbol in enumerate(SYMBOLS):
            fake.add_random_walk(symbol, START, BARS_PER_SYMBOL, price=100.0 + i, seed=i)
        # The request budget is Alpaca's to enforce; lifted here so the figure is our side
        # (alpaca-py's HTTP and JSON, our frames), the fake server's own time included.
        source = AlpacaBarSource(
            fake.api_key,
            fake.secret_key,
            base_url=fake.base_url,
            max_requests_per_min=1e9,
            burst=10**6,
        )
        end = START + timedelta(minutes=BARS_PER_SYMBOL)
        t = time.perf_counter()
        rows = sum(f.height for f in source.fetch_bars(list(SYMBOLS), "1Min", START, end))
        elapsed = time.perf_counter() - t
        requests = source.requests_made
    if rows != BARS_PER_SYMBOL * len(SYMBOLS):
        raise RuntimeError(f"expected {BARS_PER_SYMBOL * len(SYMBOLS):,} bars, got {rows:,}")
    pages_per_min = 190
    print(
        f"  {rows:,} bars in {requests} requests (pages of 10,000): {elapsed:.1f} s, fake server "
        f"included; at Alpaca's ~{pages_per_min} requests/min the same backfill needs "
        f"{requests / pages_per_min * 60:.0f} s of request budget"
    )
    return [
        Figure("alpaca_backfill_bars_per_s", round(rows / elapsed), "bars/s", ">= 100000"),
    ]
