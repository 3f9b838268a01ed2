"""SYNTHETIC minute bars: GARCH(1,1)-t calibrated on real S&P 500 daily data, NYSE calendar, 24/7 coins.

Determinism: the bars of a minute depend only on the seed, never on the requested range.
Daily-level paths (GARCH variance, daily returns, price level) are simulated once per
series over a fixed horizon from `anchor`; each day's intraday detail comes from an RNG
seeded by (seed, series, day). Minute returns of a day are bridged to sum to that day's
return, so price levels agree whatever range is asked for.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Literal

import numpy as np
import polars as pl
from scipy.signal import lfilter

from core.bar_schema import SYNTHETIC, conform_bars
from core.universe import COIN_SYMBOLS, EQUITY_SYMBOLS, is_coin

Signal = Literal["none", "autocorr", "sentiment"]

# The fixed simulation horizon: daily paths always cover [anchor, HORIZON_END).
HORIZON_END = date(2036, 1, 1)
# Prices are pinned to realistic levels on this day, whatever the seed.
REFERENCE_DAY = date(2024, 1, 2)
_US = 1_000_000


@dataclass(frozen=True)
class AssetProfile:
    """How one synthetic asset behaves relative to its class's common factor."""

    price: float  # price level on REFERENCE_DAY
    vol_mult: float  # daily volatility as a multiple of the factor's
    rho: float  # correlation of its shocks with the common factor
    drift: float  # mean daily log return
    daily_volume: float  # typical daily volume in units (shares or coins at `price`)
    trade_size: float  # typical units per trade


EQUITY_PROFILES: dict[str, AssetProfile] = {
    "SPY": AssetProfile(470.0, 1.00, 0.99, 0.0003, 80e6, 150.0),
    "VTI": AssetProfile(235.0, 1.03, 0.97, 0.0003, 3.5e6, 80.0),
    "VXUS": AssetProfile(58.0, 0.95, 0.75, 0.0002, 4.0e6, 120.0),
    "BND": AssetProfile(72.0, 0.22, 0.10, 0.0001, 6.0e6, 150.0),
}
# Coins: several times the equity volatility; BTC the most market-like.
_COINS: dict[str, tuple[float, float, float]] = {
    # symbol: (price, vol_mult, rho)
    "BTC/USD": (42000.0, 2.8, 0.95),
    "ETH/USD": (2300.0, 3.4, 0.85),
    "LTC/USD": (70.0, 4.0, 0.75),
    "BCH/USD": (250.0, 4.3, 0.72),
    "LINK/USD": (15.0, 4.8, 0.70),
    "UNI/USD": (6.0, 5.0, 0.65),
    "AAVE/USD": (100.0, 5.2, 0.65),
    "AVAX/USD": (35.0, 5.3, 0.68),
    "DOGE/USD": (0.09, 5.5, 0.60),
    "SHIB/USD": (0.00001, 6.0, 0.55),
    "DOT/USD": (8.0, 4.6, 0.70),
    "XTZ/USD": (1.0, 4.5, 0.62),
    "BAT/USD": (0.25, 4.9, 0.58),
    "CRV/USD": (0.6, 5.6, 0.60),
}
COIN_PROFILES: dict[str, AssetProfile] = {
    sym: AssetProfile(price, 0.75 * mult, rho, 0.0004, 2.0e8 / price, 3000.0 / price)
    for sym, (price, mult, rho) in _COINS.items()
}
_GAP_SHARE = 0.2  # share of an equity's daily variance that arrives overnight


@dataclass(frozen=True)
class SyntheticConfig:
    """Settings of the synthetic generator."""

    seed: int = 7
    """Seed: the same seed gives identical bars."""
    signal: Signal = "none"
    """Plant a known exploitable signal: lag-1 autocorrelation, or returns led by sentiment."""
    signal_strength: float = 0.1
    """autocorr: lag-1 autocorrelation of minute shocks; sentiment: share of shock variance it explains."""
    sentiment_lag_minutes: int = 5
    """sentiment: how many minutes the sentiment series leads returns."""
    anchor: date = date(2015, 1, 1)
    """First day of the simulated daily paths; requests before it are refused."""
    equity_symbols: tuple[str, ...] = field(default=EQUITY_SYMBOLS)
    """Equity symbols the generator knows (NYSE sessions only)."""
    coin_symbols: tuple[str, ...] = field(default=COIN_SYMBOLS)
    """Coin pairs the generator knows (every minute, 24/7)."""


def _series_id(name: str) -> int:
    # A stable id (Python's hash() is salted per process).
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")


def named_rng(seed: int, name: str, day: int = -1) -> np.random.Generator:
    """A generator fixed by (seed, name, day): each series and day draws its own stream."""
    return np.random.Generator(
        np.random.PCG64(np.random.SeedSequence([seed, _series_id(name), day + 1]))
    )


# The S&P 500 fit is near-integrated (alpha + beta ~ 0.9996). Simulated over two decades,
# such a variance wanders off to crash-level or vanishing volatility for long stretches, so
# the simulation caps persistence at a typical equity level and targets the real variance.
MAX_PERSISTENCE = 0.99


@dataclass(frozen=True)
class GarchParams:
    """GARCH(1,1)-t as fitted on real S&P 500 daily log returns (log-return units, not %)."""

    mu: float  # daily mean log return
    omega: float  # in squared log-return units
    alpha: float
    beta: float
    nu: float
    sample_var: float  # variance of the real daily log returns
    max_var: float  # highest conditional variance the fit saw in the real series (late 2008)

    def simulated(self) -> tuple[float, float, float]:
        """(omega, alpha, beta) the simulation uses: persistence capped, long-run var = sample."""
        beta = min(self.beta, MAX_PERSISTENCE - self.alpha)
        return (1.0 - self.alpha - beta) * self.sample_var, self.alpha, beta


@lru_cache(maxsize=1)
def calibrated_garch() -> GarchParams:
    """GARCH(1,1) with Student-t innovations fitted on the REAL S&P 500 daily log returns."""
    from arch import arch_model

    from adapters.arch_daily import daily_log_returns

    returns = daily_log_returns("^GSPC")
    res = arch_model(100 * returns, vol="GARCH", p=1, q=1, dist="t").fit(disp="off")
    p = res.params
    return GarchParams(
        mu=float(p["mu"]) / 100,
        omega=float(p["omega"]) / 100**2,
        alpha=float(p["alpha[1]"]),
        beta=float(p["beta[1]"]),
        nu=float(p["nu"]),
        sample_var=float(np.var(returns)),
        max_var=float(np.max(res.conditional_volatility)) ** 2 / 100**2,
    )


def _std_t(rng: np.random.Generator, nu: float, size: int) -> np.ndarray:
    return rng.standard_t(nu, size) * np.sqrt((nu - 2) / nu)


@dataclass(frozen=True)
class _FactorPath:
    sd: np.ndarray  # conditional daily sd per step (NYSE session or calendar day)
    z_intraday: np.ndarray  # standardised innovations, open->close part
    z_gap: np.ndarray  # standardised innovations, overnight part


@lru_cache(maxsize=8)
def _factor_path(seed: int, name: str, n: int) -> _FactorPath:
    """A common factor's daily GARCH path over n steps, simulated in numpy from a seeded RNG."""
    g = calibrated_garch()
    omega, alpha, beta = g.simulated()
    z = _std_t(named_rng(seed, f"{name}:z"), g.nu, n)
    z_gap = _std_t(named_rng(seed, f"{name}:gap"), g.nu, n)
    h = np.empty(n)
    h[0] = g.sample_var
    # Heavy-tailed shocks can compound into variance far beyond anything observed; the
    # ceiling keeps every simulated crisis within the worst the real series went through.
    for d in range(1, n):
        h[d] = min(omega + (alpha * z[d - 1] ** 2 + beta) * h[d - 1], g.max_var)
    return _FactorPath(sd=np.sqrt(h), z_intraday=z, z_gap=z_gap)


@lru_cache(maxsize=1)
def _nyse_schedule(anchor: date) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(day index since anchor, open us, close us) of every NYSE session in the horizon."""
    import exchange_calendars as xcals

    with warnings.catch_warnings():
        # exchange_calendars 4.13 uses a Series.values pattern pandas 3.1 deprecates.
        warnings.filterwarnings("ignore", message=".*Series.values.*", category=DeprecationWarning)
        cal = xcals.get_calendar(
            "XNYS", start=anchor.isoformat(), end=(HORIZON_END - timedelta(days=1)).isoformat()
        )
        sched = cal.schedule
    days = np.array([(d.date() - anchor).days for d in sched.index], dtype=np.int64)
    opens, closes = (
        sched[c].dt.tz_localize(None).to_numpy().astype("datetime64[us]").astype(np.int64)
        for c in ("open", "close")
    )
    return days, opens, closes


@dataclass(frozen=True)
class _DailyPath:
    days: np.ndarray  # day index since anchor of each trading day
    open_us: np.ndarray  # first minute (UTC microseconds)
    minutes: np.ndarray  # minutes in the day's session
    sd: np.ndarray  # the asset's daily sd on that day
    log_open: np.ndarray  # log price at the day's first open
    intraday: np.ndarray  # log return from the day's open to its close
    log_close: np.ndarray  # log price at the day's last close


@lru_cache(maxsize=64)
def _daily_path(seed: int, symbol: str, anchor: date) -> _DailyPath:
    coin = is_coin(symbol)
    prof = COIN_PROFILES[symbol] if coin else EQUITY_PROFILES[symbol]
    if coin:
        n_all = (HORIZON_END - anchor).days
        days = np.arange(n_all, dtype=np.int64)
        epoch_day = (anchor - date(1970, 1, 1)).days
        open_us = (epoch_day + days) * 86_400 * _US
        minutes = np.full(n_all, 1440, dtype=np.int64)
        gap_share = 0.0
    else:
        days, open_us, close_us = _nyse_schedule(anchor)
        n_all = len(days)
        minutes = (close_us - open_us) // (60 * _US)
        gap_share = _GAP_SHARE
    # The GARCH clock ticks once per trading day: sessions for equities (as in the real
    # series it was fitted on), calendar days for coins.
    factor = _factor_path(seed, "factor:crypto" if coin else "factor:equity", n_all)
    g = calibrated_garch()
    e_intra = _std_t(named_rng(seed, f"daily:{symbol}:z"), g.nu, n_all)
    e_gap = _std_t(named_rng(seed, f"daily:{symbol}:gap"), g.nu, n_all)
    sd = prof.vol_mult * factor.sd
    mix = np.sqrt(1 - prof.rho**2)
    shock_i = prof.rho * factor.z_intraday + mix * e_intra
    shock_g = prof.rho * factor.z_gap + mix * e_gap
    # A session's share of the day's drift scales with its length (half days get less).
    frac = minutes / minutes.max()
    intraday = prof.drift * frac + np.sqrt(1 - gap_share) * sd * shock_i
    gap = np.sqrt(gap_share) * sd * shock_g
    gap[0] = 0.0
    log_open = np.cumsum(gap + np.concatenate([[0.0], intraday[:-1]]))
    ref = int(np.searchsorted(days, (REFERENCE_DAY - anchor).days))
    ref = min(ref, len(days) - 1)
    log_open += np.log(prof.price) - log_open[ref]
    log_close = log_open + intraday
    if coin:
        # No gap between UTC days: a day's last close is bit-for-bit the next day's open.
        log_close[:-1] = log_open[1:]
    return _DailyPath(days, open_us, minutes, sd, log_open, intraday, log_close)


def _vol_profile(n: int, coin: bool, open_us: np.ndarray) -> np.ndarray:
    """Relative minute volatility: U-shaped over a session; mild time-of-day cycle for coins."""
    if coin:
        hour = (np.arange(n) / 60.0)[None, :] + (open_us[:, None] // (3600 * _US)) % 24
        return 1.0 + 0.25 * np.cos(2 * np.pi * (hour - 15.0) / 24.0)
    x = (np.arange(n) + 0.5) / n
    return np.broadcast_to(0.7 + 1.3 * (2 * x - 1) ** 2, (len(open_us), n))


def _volume_profile(n: int, coin: bool, open_us: np.ndarray) -> np.ndarray:
    if coin:
        return _vol_profile(n, coin, open_us)
    x = (np.arange(n) + 0.5) / n
    prof = 0.55 + 2.0 * (2 * x - 1) ** 2
    prof[-max(1, n // 39) :] *= 1.8  # the closing auction's volume
    return np.broadcast_to(prof, (len(open_us), n))


class SyntheticBarSource:
    """BarSource of SYNTHETIC one-minute bars; every row has source='synthetic'."""

    name = "synthetic"

    def __init__(self, config: SyntheticConfig | None = None) -> None:
        self.config = config or SyntheticConfig()
        known = set(self.config.equity_symbols) | set(self.config.coin_symbols)
        unsupported = known - set(EQUITY_PROFILES) - set(COIN_PROFILES)
        if unsupported:
            raise ValueError(f"no synthetic profile for {sorted(unsupported)}")
        self._known = known

    def fetch_bars(
        self, symbols: Sequence[str], timeframe: str, start: datetime, end: datetime
    ) -> Iterator[pl.DataFrame]:
        if timeframe not in ("1Min", ""):
            raise ValueError(f"the synthetic source makes 1Min bars only, not {timeframe!r}")
        for symbol in symbols or sorted(self._known):
            bars, _ = self._generate(symbol, start, end)
            yield bars

    def fetch_sentiment(
        self, symbols: Sequence[str], start: datetime, end: datetime
    ) -> pl.DataFrame:
        """The per-minute sentiment series in [-1, 1] that leads returns (signal='sentiment' only)."""
        if self.config.signal != "sentiment":
            raise ValueError("the synthetic source emits sentiment only with signal='sentiment'")
        frames = [self._generate(s, start, end)[1] for s in symbols or sorted(self._known)]
        return pl.concat([f for f in frames if f is not None])

    def _check(self, symbol: str, start: datetime, end: datetime) -> None:
        if symbol not in self._known:
            raise ValueError(
                f"the synthetic source has no symbol {symbol!r}; it knows {sorted(self._known)}"
            )
        if start.tzinfo is None or end.tzinfo is None:
            raise ValueError("start and end must be timezone-aware")
        lo = datetime.combine(self.config.anchor, datetime.min.time(), tzinfo=UTC)
        hi = datetime.combine(HORIZON_END, datetime.min.time(), tzinfo=UTC)
        if start < lo or end > hi:
            raise ValueError(
                f"synthetic bars exist from {self.config.anchor} to {HORIZON_END} only"
            )

    def _generate(
        self, symbol: str, start: datetime, end: datetime
    ) -> tuple[pl.DataFrame, pl.DataFrame | None]:
        self._check(symbol, start, end)
        cfg = self.config
        coin = is_coin(symbol)
        path = _daily_path(cfg.seed, symbol, cfg.anchor)
        start_us = int(start.timestamp() * _US)
        end_us = int(end.timestamp() * _US)
        day_end_us = path.open_us + path.minutes * 60 * _US
        sel = np.nonzero((day_end_us > start_us) & (path.open_us < end_us))[0]
        bar_parts: list[pl.DataFrame] = []
        sent_parts: list[pl.DataFrame] = []
        # Days of equal length are generated together as one 2-D block.
        for n in np.unique(path.minutes[sel]):
            idx = sel[path.minutes[sel] == n]
            cols, sentiment = self._block(symbol, coin, path, idx, int(n))
            bar_parts.append(pl.DataFrame(cols))
            if sentiment is not None:
                sent_parts.append(pl.DataFrame({"ts": cols["ts"], "sentiment": sentiment.ravel()}))
        schema_ts = pl.Datetime("us", "UTC")
        if bar_parts:
            bars = pl.concat(bar_parts).with_columns(pl.col("ts").cast(schema_ts))
        else:
            bars = pl.DataFrame({"ts": pl.Series([], dtype=pl.Int64)}).with_columns(
                pl.col("ts").cast(schema_ts)
            )
            for c in ("open", "high", "low", "close", "volume", "vwap"):
                bars = bars.with_columns(pl.lit(None, dtype=pl.Float64).alias(c))
            bars = bars.with_columns(pl.lit(None, dtype=pl.Int64).alias("trade_count"))
        bars = (
            bars.filter((pl.col("ts") >= start) & (pl.col("ts") < end))
            .sort("ts")
            .with_columns(
                pl.lit(symbol).alias("symbol"),
                pl.lit("1Min").alias("timeframe"),
                pl.lit(SYNTHETIC).alias("source"),
            )
        )
        sentiment_frame = None
        if cfg.signal == "sentiment":
            if sent_parts:
                s = pl.concat(sent_parts).with_columns(pl.col("ts").cast(schema_ts))
            else:
                s = pl.DataFrame(schema={"ts": schema_ts, "sentiment": pl.Float64})
            sentiment_frame = (
                s.filter((pl.col("ts") >= start) & (pl.col("ts") < end))
                .sort("ts")
                .select(
                    pl.lit(symbol).alias("symbol"),
                    "ts",
                    "sentiment",
                    pl.lit(SYNTHETIC).alias("source"),
                )
            )
        return conform_bars(bars), sentiment_frame

    def _block(
        self, symbol: str, coin: bool, path: _DailyPath, idx: np.ndarray, n: int
    ) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        cfg = self.config
        prof = COIN_PROFILES[symbol] if coin else EQUITY_PROFILES[symbol]
        k = len(idx)
        lag = cfg.sentiment_lag_minutes
        factor_name = "factor:crypto" if coin else "factor:equity"
        f = np.empty((k, n))
        e = np.empty((k, n))
        wick = np.empty((k, n, 2))
        vol_noise = np.empty((k, n))
        s_raw = np.empty((k, n + lag)) if cfg.signal == "sentiment" else None
        for row, i in enumerate(idx):
            day = int(path.days[i])
            f[row] = named_rng(cfg.seed, factor_name, day).standard_normal(n)
            r = named_rng(cfg.seed, symbol, day)
            e[row] = r.standard_normal(n)
            wick[row] = np.abs(r.standard_normal((n, 2)))
            vol_noise[row] = r.standard_normal(n)
            if s_raw is not None:
                s_raw[row] = named_rng(cfg.seed, f"sentiment:{symbol}", day).standard_normal(
                    n + lag
                )
        shocks = prof.rho * f + np.sqrt(1 - prof.rho**2) * e
        sentiment = None
        if cfg.signal == "autocorr" and cfg.signal_strength > 0:
            phi = cfg.signal_strength
            shocks = lfilter([1.0], [1.0, -phi], shocks, axis=1) * np.sqrt(1 - phi**2)
        elif s_raw is not None:
            # A smooth AR(1) sentiment per day, started from its stationary law.
            a = 0.98
            s_raw[:, 0] /= np.sqrt(1 - a**2)
            s = lfilter([1.0], [1.0, -a], s_raw, axis=1) * np.sqrt(1 - a**2)  # unit variance
            share = cfg.signal_strength
            shocks = np.sqrt(1 - share) * shocks + np.sqrt(share) * s[:, :n]
            sentiment = np.tanh(0.6 * s[:, lag:])
        prof_v = _vol_profile(n, coin, path.open_us[idx])
        w = prof_v / np.sqrt((prof_v**2).sum(axis=1, keepdims=True))
        sd_intra = path.sd[idx] * np.sqrt(1 - (0.0 if coin else _GAP_SHARE))
        minute_sd = w * sd_intra[:, None]
        x = minute_sd * shocks
        # Bridge: spread the gap to the day's return over minutes in proportion to variance.
        w2 = w**2
        x += w2 * (path.intraday[idx] - x.sum(axis=1))[:, None]
        log_close = path.log_open[idx][:, None] + np.cumsum(x, axis=1)
        log_close[:, -1] = path.log_close[idx]
        close = np.exp(log_close)
        open_ = np.exp(np.concatenate([path.log_open[idx][:, None], log_close[:, :-1]], axis=1))
        high = np.maximum(open_, close) * np.exp(0.5 * minute_sd * wick[:, :, 0])
        low = np.minimum(open_, close) * np.exp(-0.5 * minute_sd * wick[:, :, 1])
        if not coin:
            open_, high, low, close = (np.round(a, 2) for a in (open_, high, low, close))
            low = np.maximum(low, 0.01)
        vprof = _volume_profile(n, coin, path.open_us[idx])
        level = prof.daily_volume * (path.sd[idx] / np.median(path.sd))[:, None]
        activity = 0.7 + 0.3 * np.abs(shocks)
        volume = (
            level
            * vprof
            / vprof.sum(axis=1, keepdims=True)
            * activity
            * np.exp(0.3 * vol_noise - 0.045)
        )
        volume = np.maximum(volume, 1e-09) if coin else np.maximum(np.round(volume), 1.0)
        trade_count = np.maximum(1, np.round(volume / prof.trade_size)).astype(np.int64)
        ts = path.open_us[idx][:, None] + np.arange(n, dtype=np.int64)[None, :] * 60 * _US
        cols = {
            "ts": ts.ravel(),
            "open": open_.ravel(),
            "high": high.ravel(),
            "low": low.ravel(),
            "close": close.ravel(),
            "volume": volume.ravel(),
            "trade_count": trade_count.ravel(),
            # The clip guards flat bars, where (3 * p) / 3 can round to just above p.
            "vwap": np.clip((high + low + close) / 3, low, high).ravel(),
        }
        return cols, sentiment
