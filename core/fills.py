"""The simulated broker's fill rule (price moved against us by the slippage, a fee on the notional), shared by every book."""

from __future__ import annotations


def fill_price(reference: float, side: str, slippage_rate: float) -> float:
    """A market order's fill price: ``reference`` (the fill bar's open, or a close) moved against us.

    A buy pays ``reference * (1 + slippage_rate)``, a sell gets ``reference * (1 - slippage_rate)``.
    """
    return reference * (1.0 + slippage_rate) if side == "buy" else reference * (1.0 - slippage_rate)


def fill_fee(qty: float, price: float, fee_rate: float) -> float:
    """The fee of a fill: ``fee_rate`` of its notional ``qty * price``."""
    return qty * price * fee_rate
