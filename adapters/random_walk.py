"""BarSource of SYNTHETIC daily random-walk bars: i.i.d. zero-mean returns (a martingale price), nothing to predict (the leakage proof's market)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl

from adapters.synthetic import named_rng
from core.bar_schema import SYNTHETIC, conform_bars

RANDOM_WALK = f"{SYNTHETIC}:random-walk"
"""The finer label of these bars; every row's `source` is still plain 'synthetic' (core.bar_schema),
so no filter that keeps synthetic data apart can miss them."""

_NEW_YORK = ZoneInfo("America/New_York")


@dataclass(frozen=True)
class RandomWalkConfig:
    """The walk's law; one seed is one path, the same on every call."""

    seed: int = 0
    daily_vol: float = 0.01
    """Standard deviation of a day's close-to-close log return."""
    nu: float = 5.0
    """Student-t degrees of freedom of the shocks (scaled to unit variance): fat tails, no memory."""
    gap_share: float = 0.2
    """Share of a day's variance in the overnight gap (close to next open)."""
    start_price: float = 100.0
    start_volume: float = 1e6


class RandomWalkBarSource:
    """SYNTHETIC 1Day bars on weekdays whose returns are i.i.d. Student-t with zero mean (simple returns).

    Full OHLCV (high/low bracket the open and close with i.i.d. excursions, volume and vwap
    i.i.d. too) so every feature is computed; none of them can know the next return. Bars are
    stamped at midnight New York, as Alpaca stamps daily bars. The path is a function of
    (seed, symbol, start, end) alone: the same request yields the same bars.
    """

    name = RANDOM_WALK

    def __init__(self, config: RandomWalkConfig | None = None) -> None:
        self.config = config or RandomWalkConfig()

    def fetch_bars(
        self, symbols: Sequence[str], timeframe: str, start: datetime, end: datetime
    ) -> Iterator[pl.DataFrame]:
        if timeframe != "1Day":
            raise ValueError(f"the random-walk source makes 1Day bars only, not {timeframe!r}")
        if start.tzinfo is None or end.tzinfo is None:
            raise ValueError("start and end must be timezone-aware")
        for symbol in symbols:
            yield self._generate(symbol, start, end)

    def _generate(self, symbol: str, start: datetime, end: datetime) -> pl.DataFrame:
        cfg = self.config
        first = start.astimezone(_NEW_YORK).date()
        last = end.astimezone(_NEW_YORK).date()
        days = [
            first + timedelta(days=i)
            for i in range((last - first).days + 1)
            if (first + timedelta(days=i)).weekday() < 5
        ]
        stamps = [datetime.combine(d, datetime.min.time(), tzinfo=_NEW_YORK) for d in days]
        keep = [s.astimezone(UTC) for s in stamps if start <= s < end]
        n = len(keep)
        rng = named_rng(cfg.seed, f"random-walk:{symbol}")

        def shocks(size: int) -> np.ndarray:
            # Unit-variance Student-t: i.i.d., so yesterday says nothing about today.
            return rng.standard_t(cfg.nu, size) * np.sqrt((cfg.nu - 2.0) / cfg.nu)

        sd_gap = cfg.daily_vol * np.sqrt(cfg.gap_share)
        sd_day = cfg.daily_vol * np.sqrt(1.0 - cfg.gap_share)
        gap = sd_gap * shocks(n)
        intraday = sd_day * shocks(n)
        gap[:1] = 0.0
        # Simple returns, not log returns, have zero mean: the price is a martingale, so a
        # position held any number of days earns nothing on average. Zero-mean log returns
        # would drift up by vol^2/2 a day (0.5 bp at 1 %) and reward merely being long.
        log_gap, log_intraday = np.log1p(gap), np.log1p(intraday)
        log_close = np.log(cfg.start_price) + np.cumsum(log_gap + log_intraday)
        log_open = log_close - log_intraday
        # High and low reach beyond the body by half-normal excursions, independent of tomorrow.
        up = np.abs(rng.normal(0.0, 0.5 * sd_day, n))
        down = np.abs(rng.normal(0.0, 0.5 * sd_day, n))
        body_hi = np.maximum(log_open, log_close)
        body_lo = np.minimum(log_open, log_close)
        open_, close = np.exp(log_open), np.exp(log_close)
        high, low = np.exp(body_hi + up), np.exp(body_lo - down)
        volume = np.round(cfg.start_volume * np.exp(rng.normal(0.0, 0.3, n)))
        vwap = np.clip((open_ + close + high + low) / 4.0, low, high)
        frame = pl.DataFrame(
            {
                "symbol": [symbol] * n,
                "timeframe": ["1Day"] * n,
                "ts": pl.Series(keep, dtype=pl.Datetime("us", "UTC")),
                "open": open_,
                "high": high,
                "low": low,
                "close": close,
                "volume": volume,
                "trade_count": np.round(volume / 100.0).astype(np.int64),
                "vwap": vwap,
                "source": [SYNTHETIC] * n,
            }
        )
        return conform_bars(frame)


def random_walk_bars(
    config: RandomWalkConfig, symbol: str, first: date, last: date
) -> pl.DataFrame:
    """All of one symbol's random-walk bars from `first` to `last` (inclusive, New York dates)."""
    start = datetime.combine(first, datetime.min.time(), tzinfo=_NEW_YORK).astimezone(UTC)
    end = datetime.combine(last + timedelta(days=1), datetime.min.time(), tzinfo=_NEW_YORK)
    return next(
        RandomWalkBarSource(config).fetch_bars([symbol], "1Day", start, end.astimezone(UTC))
    )
