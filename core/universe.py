"""The default symbol universe: the four ETFs the SPY agent watches and the 14 coins of the portfolio."""

from __future__ import annotations

EQUITY_SYMBOLS: tuple[str, ...] = ("SPY", "VTI", "VXUS", "BND")
COIN_SYMBOLS: tuple[str, ...] = (
    "BTC/USD",
    "ETH/USD",
    "LTC/USD",
    "BCH/USD",
    "LINK/USD",
    "UNI/USD",
    "AAVE/USD",
    "AVAX/USD",
    "DOGE/USD",
    "SHIB/USD",
    "DOT/USD",
    "XTZ/USD",
    "BAT/USD",
    "CRV/USD",
)
# Real daily index series shipped inside the `arch` package (1999-2018).
ARCH_DAILY_SYMBOLS: tuple[str, ...] = ("^GSPC", "^IXIC")
# Real daily closes vendored from skfolio (adapters.skfolio_daily reads them): the S&P 500
# index and five factor ETFs.
SKFOLIO_DAILY_SYMBOLS: tuple[str, ...] = ("SPX", "MTUM", "QUAL", "SIZE", "USMV", "VLUE")


def is_coin(symbol: str) -> bool:
    """Crypto pairs are written BASE/QUOTE, as Alpaca writes them; they trade 24/7."""
    return "/" in symbol
