"""A brokerage account's rules (buying power, settlement, pattern day trading), pure and shared.

The simulated broker refuses an order by these rules and the risk engine refuses the same
order before it is sent (trading.risk), so a backtest or a replay meets what the broker
would refuse. The rules follow Alpaca's documentation (docs.alpaca.markets, "User
Protection"; alpaca.markets/learn/pattern-day-trader):

- Buying power. A cash account spends settled cash only; a margin account has
  ``margin_multiplier * equity - long market value`` (Reg T: 50% initial margin, so 2x)
  once its equity is at least $2,000, else 1x. Coins are not marginable: a coin buy is
  paid from settled cash in either account.
- Settlement. A stock sale's proceeds settle ``settlement_days`` NYSE business days after
  the trade (T+1 in the US since 2024-05-28, SEC Rule 15c6-1); a cash account cannot spend
  them before (no good-faith violations). Coins settle at once.
- Pattern day trading (FINRA Rule 4210(f)(8)(B)). A day trade opens and closes the same
  stock position on one trading day (buy then sell; buy, sell, buy, sell is two). Alpaca
  rejects an order that could make a 4th day trade within 5 business days while equity is
  below $25,000; coins are exempt. FINRA's amended Rule 4210 replaced the rule with
  intraday margin standards on 2026-06-04 (Alpaca removed its PDT fields on 2026-07-06):
  the "margin" preset applies it to trading days before ``PDT_ENDED`` only, so backtests of
  earlier years meet it and later ones do not (the new intraday margin is not modelled).

Business days are NYSE sessions (exchange_calendars' XNYS, 1990-2035; outside that range,
weekdays). A timestamp's trading day is its New York date.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo

AccountType = Literal["ideal", "cash", "margin"]

NEW_YORK = ZoneInfo("America/New_York")
PDT_ENDED = date(2026, 6, 4)
"""FINRA's amended Rule 4210 (SR-FINRA-2025-017, approved 2026-04-14) takes effect: no more
pattern-day-trader count or $25,000 minimum."""


@dataclass(frozen=True)
class AccountRules:
    """What the broker refuses. The default ("ideal") refuses nothing: cash may go below zero,
    proceeds settle at once, no day-trade limit -- the frictionless book training's evaluation
    assumes, so backtests and replays keep their numbers unless a rule set is chosen."""

    account_type: AccountType = "ideal"
    """ideal: no buying-power check; cash: settled cash only; margin: margin_multiplier x."""
    settlement_days: int = 0
    """NYSE business days before a stock sale's proceeds may be spent (T+1: 1); coins: 0."""
    pdt: bool = False
    """The pattern-day-trader rule applies (a margin account's)."""
    margin_multiplier: float = 1.0
    """Buying power as a multiple of equity (Reg T overnight: 2), less the long positions."""
    min_pdt_equity: float = 25_000.0
    """At or above this equity the day-trade count is not limited."""
    max_day_trades: int = 3
    """Day trades allowed within `pdt_window_days` business days; the order that could make
    the next one is refused."""
    pdt_window_days: int = 5
    pdt_until: date | None = None
    """The rule applies to trading days before this one (None: always)."""
    min_margin_equity: float = 2_000.0
    """Below this equity a margin account has 1x buying power (FINRA's minimum margin equity)."""

    def __post_init__(self) -> None:
        if self.settlement_days < 0:
            raise ValueError("settlement_days must be 0 or more")
        if self.margin_multiplier < 1:
            raise ValueError("margin_multiplier must be at least 1")
        if self.max_day_trades < 0 or self.pdt_window_days < 1:
            raise ValueError("max_day_trades must be >= 0 and pdt_window_days >= 1")

    @property
    def enforced(self) -> bool:
        """Buying power is checked (every account but the ideal one)."""
        return self.account_type != "ideal"

    def pdt_applies(self, symbol_is_coin: bool, day: date) -> bool:
        """The day-trade limit covers a trade of this kind on `day`."""
        return self.pdt and not symbol_is_coin and (self.pdt_until is None or day < self.pdt_until)


ACCOUNT_RULES: dict[AccountType, AccountRules] = {
    "ideal": AccountRules(),
    "cash": AccountRules("cash", settlement_days=1),
    "margin": AccountRules("margin", pdt=True, margin_multiplier=2.0, pdt_until=PDT_ENDED),
}
"""The named rule sets: ideal (the default: nothing refused), a US cash account (T+1, no
margin) and a US margin account (2x overnight buying power, the PDT rule until it ended)."""


def account_rules(name: AccountType) -> AccountRules:
    """The rule set of that name (ACCOUNT_RULES)."""
    try:
        return ACCOUNT_RULES[name]
    except KeyError:
        known = ", ".join(ACCOUNT_RULES)
        raise ValueError(f"unknown account rules {name!r}: use one of {known}") from None


def trading_date(ts: datetime) -> date:
    """The trading day of an instant: its New York date."""
    return ts.astimezone(NEW_YORK).date()


@lru_cache(maxsize=1)
def _sessions() -> tuple[date, ...]:
    from core.sessions import session_closes  # polars and the calendar only when needed

    return tuple(session_closes("XNYS").get_column("day").to_list())


def _in_range(day: date) -> bool:
    days = _sessions()
    return days[0] <= day <= days[-1]


def settlement_date(trade_day: date, days: int) -> date:
    """The day a trade of `trade_day` settles: the `days`-th NYSE business day after it."""
    if days <= 0:
        return trade_day
    if _in_range(trade_day):
        days_ = _sessions()
        i = bisect.bisect_right(days_, trade_day) + days - 1
        if i < len(days_):
            return days_[i]
    out = trade_day
    while days:
        out += timedelta(days=1)
        days -= out.weekday() < 5
    return out


def window_start(day: date, days: int) -> date:
    """The first of the `days` business days that end with `day` (the day trades' window)."""
    if _in_range(day):
        days_ = _sessions()
        i = bisect.bisect_right(days_, day) - days  # `day` counts when it is a session
        if i >= 0:
            return days_[i]
    out = day if day.weekday() < 5 else day - timedelta(days=day.weekday() - 4)
    left = days - 1
    while left:
        out -= timedelta(days=1)
        left -= out.weekday() < 5
    return out


def buying_power(
    rules: AccountRules,
    *,
    cash: float,
    unsettled: float,
    equity: float,
    stock_value: float,
    coin_value: float,
    coin: bool = False,
) -> float:
    """What the account may spend on a buy now (of a coin when `coin`).

    Ideal and cash accounts: the settled cash (ideal: all of it, nothing being unsettled).
    Margin, at or above min_margin_equity: ``m * equity - stock_value - m * coin_value``, the
    excess over Reg T's initial margin (1/m of the stocks, all of the coins) times m. A coin
    buy is not marginable: settled cash at most, in any account.
    """
    settled = max(0.0, cash - unsettled)
    if rules.account_type != "margin" or equity < rules.min_margin_equity:
        return settled
    m = rules.margin_multiplier
    power = max(0.0, m * equity - stock_value - m * coin_value)
    return min(power, settled) if coin else power


def buy_refusal(rules: AccountRules, *, cost: float, power: float, unsettled: float) -> str | None:
    """Why a buy costing `cost` (price, slippage and fee) is refused with `power` to spend."""
    if not rules.enforced or cost <= power + 1e-6:
        return None
    why = f"insufficient buying power: {power:,.2f} available, the order needs {cost:,.2f}"
    if unsettled > 0 and rules.account_type == "cash":
        why += (
            f" ({unsettled:,.2f} of sale proceeds settle T+{rules.settlement_days}; a cash "
            "account spends settled cash only)"
        )
    return why


def pdt_refusal(
    rules: AccountRules, *, day: date, coin: bool, day_trades: int, equity: float
) -> str | None:
    """Why an order that could make a day trade on `day` is refused, with `day_trades` made in
    the window already and `equity` now (None: allowed)."""
    if not rules.pdt_applies(coin, day):
        return None
    if day_trades < rules.max_day_trades or equity >= rules.min_pdt_equity:
        return None
    return (
        f"pattern day trader rule: {day_trades} day trades in the last "
        f"{rules.pdt_window_days} business days and equity {equity:,.2f} < "
        f"{rules.min_pdt_equity:,.0f}; this order could make another"
    )
