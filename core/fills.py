"""The simulated broker's fill rule (price moved against us by the slippage, a fee on the notional, more on sells), shared by every book."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def fill_price(reference: float, side: str, slippage_rate: float) -> float:
    """A market order's fill price: ``reference`` (the fill bar's open, or a close) moved against us.

    A buy pays ``reference * (1 + slippage_rate)``, a sell gets ``reference * (1 - slippage_rate)``.
    """
    return reference * (1.0 + slippage_rate) if side == "buy" else reference * (1.0 - slippage_rate)


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
