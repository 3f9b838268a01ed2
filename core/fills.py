"""The simulated broker's fill rule (price moved against us by the slippage, a fee on the notional, more on sells), shared by every book."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt


def fill_price(reference: float, side: str, slippage_rate: float) -> float:
    """A market order's fill price: ``reference`` (the fill bar's open, or a close) moved against us.

    A buy pays ``reference * (1 + slippage_rate)``, a sell gets ``reference * (1 - slippage_rate)``.
    """
    return reference * (1.0 + slippage_rate) if side == "buy" else reference * (1.0 - slippage_rate)


def sized_slippage_rate(
    slippage_rate: float, impact_rate: float, qty: float, volume: float | None
) -> float:
    """The slippage of an order of ``qty`` units in a bar that traded ``volume``: the half-spread
    ``slippage_rate`` plus the square-root market impact ``impact_rate * sqrt(qty / volume)``.

    The square-root law: the price moves by about ``Y * sigma * sqrt(Q / V)`` for an order of Q
    in a period with volume V and volatility sigma (Almgren, Thum, Hauptmann & Li, "Direct
    estimation of equity market impact", Risk 2005; Toth et al., "Anomalous price impact and
    the critical nature of liquidity", Phys. Rev. X 2011); ``impact_rate`` stands for
    ``Y * sigma`` (the cost of trading a whole bar's volume). Without a volume, or with
    ``impact_rate`` 0, it is the half-spread alone.
    """
    if impact_rate <= 0 or volume is None or not volume > 0 or qty <= 0:
        return slippage_rate
    return slippage_rate + impact_rate * math.sqrt(qty / volume)


def fill_fee(
    qty: float, price: float, fee_rate: float, *, side: str = "buy", sell_fee_rate: float = 0.0
) -> float:
    """The fee of a fill: ``fee_rate`` of its notional ``qty * price``, plus ``sell_fee_rate``
    of it on a sell (the US equities' regulatory fee, core.costs.CostModel.sell_fee_bps)."""
    return qty * price * (fee_rate + (sell_fee_rate if side == "sell" else 0.0))


def fill_references(opens: npt.ArrayLike, closes: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Per bar, the price an order waiting for that bar fills at: its open, else its close.

    A close-only bar (open null/NaN: skfolio's adjusted closes) has no open; its close is the
    first price the series holds after the decision, so the fill waits for it. The one rule
    for training's evaluation, the baselines (core.baselines) and the backtest.
    """
    o = np.asarray(opens, dtype=np.float64).reshape(-1)
    c = np.asarray(closes, dtype=np.float64).reshape(-1)
    if o.size != c.size:
        raise ValueError(f"{o.size} opens and {c.size} closes differ")
    return np.where(np.isfinite(o), o, c)
