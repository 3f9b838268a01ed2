"""Calendar edges: both 2026 DST Mondays, one second after the close, holidays, half days, weekends; crypto unaffected.

The unit part asks the calendars about exact instants; the flow part replays the two DST
Mondays of 2026 with the always-long agent of test_session_faults (it buys at its first
decision and is flattened before the close) and starts a paper run one second after a
close, so every order sent is checked against the session it belongs to.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from adapters.synthetic import SyntheticBarSource
from flows.live_trading import live_trading
from tests.fakes.alpaca import fake_alpaca_rest  # noqa: F401
from tests.hardening.test_session_faults import (
    Market,
    Paper,
    build_warehouse,
    data_dir,  # noqa: F401
    decisions_of,
    orders_of,
    paper,  # noqa: F401
    small_warehouse,  # noqa: F401
    use_clock,
)
from trading.calendar import CryptoCalendar, NYSECalendar, calendar_for
from warehouse.bars import ingest_bar_frames

NY = ZoneInfo("America/New_York")
NYSE = NYSECalendar()
CRYPTO = CryptoCalendar()
SPRING = date(2026, 3, 9)  # the Monday after clocks sprang forward (Sunday 8 March 2026)
FALL = date(2026, 11, 2)  # the Monday after clocks fell back (Sunday 1 November 2026)
MINUTE = timedelta(minutes=1)


def _ny(d: date, hh: int, mm: int, ss: int = 0) -> datetime:
    return datetime(d.year, d.month, d.day, hh, mm, ss, tzinfo=NY)


# ---- the calendars -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "open_utc", "friday_open_utc"),
    [
        (
            SPRING,
            datetime(2026, 3, 9, 13, 30, tzinfo=UTC),
            datetime(2026, 3, 6, 14, 30, tzinfo=UTC),
        ),
        (
            FALL,
            datetime(2026, 11, 2, 14, 30, tzinfo=UTC),
            datetime(2026, 10, 30, 13, 30, tzinfo=UTC),
        ),
    ],
    ids=["spring-forward", "fall-back"],
)
def test_the_2026_dst_mondays_open_at_0930_new_york(
    day: date, open_utc: datetime, friday_open_utc: datetime
) -> None:
    session = NYSE.session_on(day)
    assert session is not None
    assert session.open == open_utc == _ny(day, 9, 30)
    assert session.close == open_utc + timedelta(hours=6, minutes=30) == _ny(day, 16, 0)
    assert NYSE.session_at(open_utc) == session
    assert NYSE.session_at(open_utc - timedelta(seconds=1)) is None
    assert NYSE.session_at(_ny(day, 15, 59, 59)) == session
    assert NYSE.session_at(_ny(day, 16, 0, 0)) is None
    assert NYSE.session_at(_ny(day, 16, 0, 1)) is None
    # The Friday before opened at the other UTC hour: the shift is the clocks', not the market's.
    friday = NYSE.session_on(day - timedelta(days=3))
    assert friday is not None and friday.open == friday_open_utc
    # From the weekend before, the next session is the Monday's.
    assert NYSE.next_session(_ny(day - timedelta(days=1), 12, 0)) == session
    assert NYSE.next_session(_ny(day, 16, 0, 1)).day == day + timedelta(days=1)


@pytest.mark.parametrize(
    ("when", "why"),
    [
        (_ny(date(2026, 7, 3), 11, 0), "Independence Day observed (4 July is a Saturday)"),
        (_ny(date(2026, 11, 26), 11, 0), "Thanksgiving"),
        (_ny(date(2026, 11, 27), 13, 0, 1), "after the 13:00 close of the half day"),
        (_ny(date(2026, 12, 24), 13, 0, 0), "Christmas Eve closes at 13:00"),
        (_ny(date(2026, 3, 7), 12, 0), "Saturday"),
        (_ny(date(2026, 3, 8), 12, 0), "Sunday, the day the clocks change"),
        (_ny(SPRING, 16, 0, 1), "16:00:01 on the spring DST Monday"),
        (_ny(FALL, 16, 0, 1), "16:00:01 on the fall DST Monday"),
        (_ny(FALL, 9, 29, 59), "one second before the fall DST Monday's open"),
    ],
)
def test_equities_are_closed_and_crypto_is_open(when: datetime, why: str) -> None:
    assert NYSE.session_at(when) is None, why
    assert calendar_for("SPY").session_at(when) is None, why
    session = calendar_for("BTC/USD").session_at(when)
    assert session is not None and session.contains(when), why
    assert session.day == when.astimezone(UTC).date()
    assert CRYPTO.next_session(when) == session


def test_the_half_days_are_open_until_1300_and_crypto_all_day() -> None:
    for day in (date(2026, 11, 27), date(2026, 12, 24)):
        session = NYSE.session_at(_ny(day, 12, 59, 59))
        assert session is not None and session.close == _ny(day, 13, 0)
        assert session.minutes == 210
        assert CRYPTO.session_at(_ny(day, 13, 0, 1)) is not None


# ---- sessions replayed and started at the edges --------------------------------------------


@pytest.fixture(scope="module")
def dst_warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic SPY bars around both 2026 DST Mondays and the always-long agent."""
    tmp = tmp_path_factory.mktemp("calendar-edges")
    warehouse = tmp / "warehouse.duckdb"
    build_warehouse(warehouse, tmp / "models", date(2026, 3, 5), date(2026, 3, 10))
    frames = SyntheticBarSource().fetch_bars(
        ["SPY"],
        "1Min",
        datetime(2026, 10, 29, tzinfo=UTC),
        datetime(2026, 11, 3, tzinfo=UTC),
    )
    assert ingest_bar_frames(frames, warehouse, datetime(2030, 1, 1, tzinfo=UTC)).inserted > 0
    return warehouse


def _replay(warehouse: Path, day: date, **kw: object) -> str:
    from core.configs import LiveTradingConfig

    config = LiveTradingConfig(mode="replay", replay_date=day, warehouse=str(warehouse), **kw)
    result = live_trading(config)
    assert result["status"] == "traded" and result["session"] == str(day)
    return str(result["run_id"])


@pytest.mark.prefect
@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness", "data_dir")
@pytest.mark.parametrize("day", [SPRING, FALL], ids=["spring-forward", "fall-back"])
def test_a_replayed_dst_monday_decides_and_buys_from_its_0930_open(
    dst_warehouse: Path, day: date
) -> None:
    session = NYSE.session_on(day)
    assert session is not None
    run_id = _replay(dst_warehouse, day, max_minutes=3)
    # The first bar (09:30-09:31 New York) is decided when it closes, and bought.
    decisions = decisions_of(dst_warehouse, run_id)
    assert [d[0] for d in decisions] == [session.open + m * MINUTE for m in (1, 2, 3)]
    assert [(ts, side) for ts, side, _ in orders_of(dst_warehouse, run_id)] == [
        (session.open + MINUTE, "buy")
    ]


@pytest.mark.prefect
@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness", "data_dir")
def test_a_replayed_dst_monday_is_flat_by_its_1600_close(dst_warehouse: Path) -> None:
    # Fall-back Monday: the close is 21:00 UTC, an hour later than the week before.
    session = NYSE.session_on(FALL)
    assert session is not None and session.close == datetime(2026, 11, 2, 21, 0, tzinfo=UTC)
    run_id = _replay(dst_warehouse, FALL, start_minute=386)
    # The bar that closed at the start, then each minute through the last bar (closing 16:00).
    decisions = decisions_of(dst_warehouse, run_id)
    assert [d[0] for d in decisions] == [session.close - m * MINUTE for m in (4, 3, 2, 1, 0)]
    orders = orders_of(dst_warehouse, run_id)
    assert [side for _, side, _ in orders] == ["buy", "sell"]
    assert all(session.open < ts < session.close for ts, _, _ in orders)
    assert orders[-1][0] == session.close - MINUTE  # flattened a minute before the close


@pytest.mark.prefect
@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_a_paper_run_started_at_1600_01_on_a_dst_monday_is_closed_and_sends_nothing(
    paper: Paper,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    market = Market(_ny(SPRING, 16, 0, 1), paper.bars, paper.ws, paper.rest)
    use_clock(monkeypatch, market, paper)

    result = live_trading(paper.config(max_minutes=3))

    assert result["status"] == "closed"
    assert datetime.fromisoformat(result["next_open"]) == datetime(2026, 3, 10, 13, 30, tzinfo=UTC)
    assert paper.rest.requests_to("/v2/orders", "POST") == []
    assert paper.ws.connection_count == 0
