"""What a trade costs per asset class: commission, half-spread and the US sell-side fee, one model for every book."""

from __future__ import annotations

from dataclasses import dataclass, replace

from core.assets import ASSET_CLASSES, AssetClass


@dataclass(frozen=True)
class CostModel:
    """The cost of a fill, in basis points of its notional (qty * fill price).

    Every fill pays ``fee_bps`` (the broker's commission) and fills ``slippage_bps`` away from
    the reference price against us (the half-spread: a buy pays the ask, a sell gets the bid);
    a sell also pays ``sell_fee_bps`` (the US equities' regulatory fee on sell notional, SEC
    Section 31). Training's env (models.env.step_money), the books of the evaluation and the
    baselines (core.baselines.trade_positions) and the simulated broker (adapters.sim_broker)
    all charge this one model. The field defaults are the project's historical flat
    1 bp fee + 1 bp slippage (FLAT_1_1): tests pin costs with it; runs take costs_for().
    """

    fee_bps: float = 1.0
    slippage_bps: float = 1.0
    sell_fee_bps: float = 0.0

    def __post_init__(self) -> None:
        for name in ("fee_bps", "slippage_bps", "sell_fee_bps"):
            value = getattr(self, name)
            if not value >= 0.0:
                raise ValueError(f"{name} must be >= 0, got {value!r}")

    @property
    def fee_rate(self) -> float:
        """Commission as a fraction of notional (both sides)."""
        return self.fee_bps / 1e4

    @property
    def slippage_rate(self) -> float:
        """Half-spread as a fraction of the reference price."""
        return self.slippage_bps / 1e4

    @property
    def sell_fee_rate(self) -> float:
        """The sell-only regulatory fee as a fraction of sell notional."""
        return self.sell_fee_bps / 1e4

    @property
    def rate(self) -> float:
        """Commission + half-spread per unit of value traded (either side; sells add sell_fee_rate)."""
        return (self.fee_bps + self.slippage_bps) / 1e4

    def side_fee_rate(self, side: str) -> float:
        """The fee of a fill per unit of its notional: commission, plus the regulatory fee on a sell."""
        return self.fee_rate + (self.sell_fee_rate if side == "sell" else 0.0)

    def describe(self, asset_class: str | None = None) -> str:
        """One line for the run's log: 'costs: crypto, 25 bp fee + 5 bp half-spread per fill'."""
        head = f"costs: {asset_class}, " if asset_class else "costs: "
        text = f"{head}{self.fee_bps:g} bp fee + {self.slippage_bps:g} bp half-spread per fill"
        if self.sell_fee_bps:
            text += f" + {self.sell_fee_bps:g} bp regulatory fee on sells"
        return text


FLAT_1_1 = CostModel(fee_bps=1.0, slippage_bps=1.0, sell_fee_bps=0.0)
"""The flat 1 bp fee + 1 bp slippage every asset paid before costs per asset class."""

# SEC Section 31 fee on the sell notional of US exchange-listed securities: $27.80 per million
# dollars, the rate in force from 2024-05-22 to 2025-05-13 (SEC fee rate advisory for fiscal
# 2024; FINRA information notices). The SEC set it to $0.00 per million from 2025-05-14 after
# collecting its fiscal 2025 appropriation and resets it every fiscal year: this default is the
# last non-zero rate, kept on purpose (conservative) -- check the current one on sec.gov.
SEC_SECTION_31_PER_MILLION = 27.80
SEC_SECTION_31_BPS = SEC_SECTION_31_PER_MILLION / 1e6 * 1e4  # 0.278 bp of sell notional
# FINRA's Trading Activity Fee ($0.000166 per share sold, at most $8.30 a trade, 2024 schedule)
# is per share, not per dollar: about 0.003 bp on a $500 ETF share, so it is not modelled.

# Alpaca crypto fee schedule, volume tier 1 (30-day volume $0-100k): 0.15% maker, 0.25% taker
# (alpaca.markets/support and docs "Crypto Fees", as published 2024-2025). The agents send
# market orders, so they pay the taker fee.
ALPACA_CRYPTO_TAKER_BPS = 25.0
ALPACA_CRYPTO_MAKER_BPS = 15.0

# Half-spreads are defaults, not a published schedule: an estimate of half the quoted spread
# plus a little impact for a small order, to check against the quotes of what is traded.
ETF_HALF_SPREAD_BPS = 1.0
"""Liquid US ETFs (SPY, QQQ, ...): a 1-cent spread on a $100-500 share is 0.1-0.5 bp half; 1 bp
leaves room for less liquid ETFs and minute-bar impact."""
STOCK_HALF_SPREAD_BPS = 2.0
"""Large-cap US stocks: wider quoted spreads than the index ETFs."""
CRYPTO_HALF_SPREAD_BPS = 5.0
"""Alpaca's BTC/USD and ETH/USD books: several bp quoted spread, more on smaller coins."""
FX_HALF_SPREAD_BPS = 1.0
"""Major FX pairs: about a 1-pip retail spread on EURUSD (~0.9 bp), half of it plus impact."""

DEFAULT_COSTS: dict[AssetClass, CostModel] = {
    # Alpaca: commission-free US equities and ETFs; the SEC fee is passed on to sells.
    "stock": CostModel(0.0, STOCK_HALF_SPREAD_BPS, SEC_SECTION_31_BPS),
    "etf": CostModel(0.0, ETF_HALF_SPREAD_BPS, SEC_SECTION_31_BPS),
    "crypto": CostModel(ALPACA_CRYPTO_TAKER_BPS, CRYPTO_HALF_SPREAD_BPS, 0.0),
    # FX pays its cost in the spread; no commission, no sell fee.
    "fx": CostModel(0.0, FX_HALF_SPREAD_BPS, 0.0),
}


def costs_for(
    asset_class: str,
    fee_bps: float | None = None,
    slippage_bps: float | None = None,
    sell_fee_bps: float | None = None,
) -> CostModel:
    """The asset class's default cost model with each given override in place (None keeps the default)."""
    if asset_class not in ASSET_CLASSES:
        raise ValueError(f"unknown asset class {asset_class!r}: use one of {ASSET_CLASSES}")
    base = DEFAULT_COSTS[asset_class]  # type: ignore[index,unused-ignore]
    overrides = {
        k: v
        for k, v in (
            ("fee_bps", fee_bps),
            ("slippage_bps", slippage_bps),
            ("sell_fee_bps", sell_fee_bps),
        )
        if v is not None
    }
    return replace(base, **overrides) if overrides else base


def configured_costs(
    asset_class: str, fee_bps: float | None = None, slippage_bps: float | None = None
) -> CostModel:
    """What a flow's fee_bps/slippage_bps options mean: both None, the asset class's default
    (costs_for); either given, a flat model as before costs per asset class -- the given
    numbers, the class default for the other, and no sell-side fee (how tests and configs pin
    costs explicitly, e.g. 1 + 1 bp)."""
    if fee_bps is None and slippage_bps is None:
        return costs_for(asset_class)
    return costs_for(asset_class, fee_bps, slippage_bps, sell_fee_bps=0.0)
