"""Scenario 13: bad market data is quarantined or adjusted, never traded on; a split never reads as -90%.

Every case goes through the real writers into a real DuckDB file: the batch path
(warehouse.bars.ingest_bar_frames) and the live stream's path (trading.live.store_bars
with a held connection, i.e. validate_bars + write_stream_bars).
"""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from adapters.clock import ManualClock
from adapters.sim_broker import SimulatedBroker
from models.env import LONG
from models.features import FeatureSpec, compute_features
from tests.unit.test_bar_quality import CASES, NOW, T0, bar, frame
from tests.unit.test_engine import _q, _rig
from trading.calendar import NYSECalendar
from trading.engine import Book, EngineConfig, PrecomputedQ, TradingEngine
from trading.ledger import Ledger
from trading.live import LiveRunner, store_bars
from trading.live_features import LiveFeatures
from trading.orders import OrderManager
from trading.risk import RiskEngine
from warehouse.bars import apply_split, ingest_bar_frames, load_bars
from warehouse.db import connect

MIN = timedelta(minutes=1)
PATHS = ["batch", "stream"]


def _store(path: Path, df: pl.DataFrame, how: str, now: datetime = NOW) -> None:
    if how == "batch":
        ingest_bar_frames([df], path, now)
    else:
        with connect(path) as con:
            store_bars(path, df, now, con)


def _stored(path: Path, symbol: str = "SPY") -> pl.DataFrame:
    with connect(path) as con:
        return load_bars(con, [symbol], "1Min", T0 - timedelta(days=30), NOW)


def _quarantine(path: Path) -> list[dict[str, Any]]:
    with connect(path) as con:
        return con.sql("SELECT * FROM bars_quarantine ORDER BY ts, reason").pl().to_dicts()


def _level(minute: int, price: float, **over: object) -> dict[str, object]:
    """A plausible bar around `price` (high/low 0.2% away)."""
    row = bar(
        minute,
        open=price,
        high=price * 1.002,
        low=price * 0.998,
        close=price * 1.001,
        volume=1000.0,
        vwap=price,
    )
    row.update(over)
    return row


def _frame(rows: list[dict[str, object]]) -> pl.DataFrame:
    vwap = [r.get("vwap") for r in rows]
    return frame([{k: v for k, v in r.items() if k != "vwap"} for r in rows]).with_columns(
        pl.Series("vwap", vwap, dtype=pl.Float64)
    )


@pytest.mark.parametrize("how", PATHS)
def test_every_bad_case_is_quarantined_with_a_reason_and_every_good_row_stored(
    warehouse_path: Path, how: str
) -> None:
    good = [bar(i, close=100.0 + i / 100) for i in range(0, 20)]
    bad = [bar(100 + i, **override) for i, (_, override) in enumerate(CASES)]
    dup_first = bar(20, close=100.1)
    dup_last = bar(20, close=100.9)
    rows = [*good, dup_first, dup_last, *bad]

    _store(warehouse_path, frame(rows), how)

    stored = _stored(warehouse_path)
    expected = {r["ts"]: r["close"] for r in [*good, dup_last]}
    assert dict(zip(stored["ts"], stored["close"], strict=True)) == expected
    held = _quarantine(warehouse_path)
    assert sorted(q["reason"] for q in held) == sorted(
        [reason for reason, _ in CASES] + ["duplicate_key"]
    )
    assert all(q["detail"] and q["row_hash"] for q in held)
    # The duplicate kept in quarantine is the earlier delivery.
    assert [q["close"] for q in held if q["reason"] == "duplicate_key"] == [100.1]


@pytest.mark.parametrize("how", PATHS)
def test_a_revised_bar_updates_in_place(warehouse_path: Path, how: str) -> None:
    _store(warehouse_path, frame([bar(0), bar(1)]), how)
    _store(warehouse_path, frame([bar(1, close=100.75, high=101.0)]), how)
    stored = _stored(warehouse_path)
    assert stored.select("ts", "close").rows() == [(T0, 100.5), (T0 + MIN, 100.75)]
    assert _quarantine(warehouse_path) == []


@pytest.mark.parametrize("how", PATHS)
def test_a_gap_stays_a_gap(warehouse_path: Path, how: str) -> None:
    minutes = [*range(0, 5), *range(10, 15)]
    _store(warehouse_path, frame([bar(i) for i in minutes]), how)
    stored = _stored(warehouse_path)
    assert stored["ts"].to_list() == [T0 + i * MIN for i in minutes]
    feats = compute_features(stored, FeatureSpec(symbols=("SPY",)))
    assert feats["ts"].to_list() == [T0 + i * MIN for i in minutes]  # no invented bar


def _split_rows(pre: int = 30, post: int = 10) -> tuple[list[dict[str, object]], datetime]:
    """`pre` minutes around 500, then a 10:1 split: `post` minutes around 50."""
    rows = [_level(i, 500.0 + (i % 3)) for i in range(pre)]
    rows += [_level(pre + i, 50.0 + (i % 3) / 10) for i in range(post)]
    return rows, T0 + pre * MIN


def test_a_split_inside_a_batch_is_quarantined_naming_the_ratio(warehouse_path: Path) -> None:
    rows, split_ts = _split_rows()
    report = ingest_bar_frames([_frame(rows)], warehouse_path, NOW)

    stored = _stored(warehouse_path)
    assert stored["ts"].max() == split_ts - MIN
    assert stored.height == 30
    held = _quarantine(warehouse_path)
    assert [q["ts"] for q in held] == [split_ts + i * MIN for i in range(10)]
    assert {q["reason"] for q in held} == {"suspected_split"}
    assert "x0.0996 the previous accepted close 502.502" in held[0]["detail"]
    assert "suspected 10:1 split" in held[0]["detail"]
    assert report.quarantined == {"suspected_split": 10}


@pytest.mark.parametrize("how", PATHS)
def test_a_split_against_the_newest_stored_bar_is_quarantined(
    warehouse_path: Path, how: str
) -> None:
    rows, split_ts = _split_rows()
    ingest_bar_frames([_frame(rows[:30])], warehouse_path, NOW)
    for row in rows[30:]:  # the stream delivers a minute at a time
        _store(warehouse_path, _frame([row]), how)
    assert _stored(warehouse_path)["ts"].max() == split_ts - MIN
    held = _quarantine(warehouse_path)
    assert len(held) == 10 and {q["reason"] for q in held} == {"suspected_split"}


def test_a_bad_tick_is_quarantined_and_the_series_carries_on(warehouse_path: Path) -> None:
    rows = [_level(i, 100.0) for i in range(5)] + [_level(5, 10.0)]
    rows += [_level(i, 100.2) for i in range(6, 10)]
    ingest_bar_frames([_frame(rows)], warehouse_path, NOW)
    assert _stored(warehouse_path).height == 9
    assert [(q["ts"], q["reason"]) for q in _quarantine(warehouse_path)] == [
        (T0 + 5 * MIN, "suspected_split")
    ]


def test_limits_are_per_asset_class(warehouse_path: Path) -> None:
    # A coin halving in a bar is within its limits (x4); an ETF doing it looks like a 2:1 split.
    coin = [_level(i, 100.0, symbol="DOGE/USD") for i in range(3)]
    coin += [_level(3, 50.0, symbol="DOGE/USD"), _level(4, 500.0, symbol="DOGE/USD")]
    etf = [_level(i, 100.0) for i in range(3)] + [_level(3, 50.0)]
    ingest_bar_frames([_frame(coin + etf)], warehouse_path, NOW)
    held = {(q["symbol"], q["reason"]) for q in _quarantine(warehouse_path)}
    assert held == {("DOGE/USD", "price_jump"), ("SPY", "suspected_split")}
    assert _stored(warehouse_path, "DOGE/USD").height == 4


def test_apply_split_back_adjusts_releases_and_is_idempotent(warehouse_path: Path) -> None:
    rows, split_ts = _split_rows()
    ingest_bar_frames([_frame(rows)], warehouse_path, NOW)
    before = _stored(warehouse_path)

    with connect(warehouse_path) as con:
        first = apply_split(con, "SPY", split_ts, 0.1, now=NOW)
    assert (first.adjusted, first.released) == (30, 10)
    assert first.actions == {"1Min": "adjusted"}
    after = _stored(warehouse_path)
    assert after.height == 40
    pre = after.filter(pl.col("ts") < split_ts)
    assert pre["close"].to_list() == pytest.approx((before["close"] * 0.1).to_list())
    assert pre["volume"].to_list() == pytest.approx((before["volume"] * 10).to_list())
    assert pre["vwap"].to_list() == pytest.approx((before["vwap"] * 0.1).to_list())
    post = after.filter(pl.col("ts") >= split_ts)
    assert post["close"].to_list() == [r["close"] for r in rows[30:]]
    assert _quarantine(warehouse_path) == []

    with connect(warehouse_path) as con:
        snapshot = con.sql("SELECT * FROM bars ORDER BY ts").pl()
        again = apply_split(con, "SPY", split_ts, 0.1, now=NOW + MIN)
        assert con.sql("SELECT * FROM bars ORDER BY ts").pl().equals(snapshot)
    assert (again.adjusted, again.released) == (0, 0)
    assert again.actions == {"1Min": "already adjusted"}

    # The next bar at the new level goes straight in on the stream path.
    _store(warehouse_path, _frame([_level(40, 50.1)]), "stream")
    assert _stored(warehouse_path).height == 41


def test_a_split_never_reaches_the_features_as_a_minus_90_percent_return(
    warehouse_path: Path,
) -> None:
    rows, split_ts = _split_rows(pre=70, post=30)
    spec = FeatureSpec(symbols=("SPY",))
    # What a naive store would hold: the control shows the check below can fail.
    naive = compute_features(_frame(rows).with_columns(pl.lit(None).alias("trade_count")), spec)
    assert naive["a0_ret_1"].min() == pytest.approx(math.log(0.1), abs=0.01)

    ingest_bar_frames([_frame(rows)], warehouse_path, NOW)
    for when in ("held", "adjusted"):
        if when == "adjusted":
            with connect(warehouse_path) as con:
                apply_split(con, "SPY", split_ts, 0.1, now=NOW)
        stored = _stored(warehouse_path)
        feats = compute_features(stored, spec)
        for w in spec.return_windows:
            assert feats[f"a0_ret_{w}"].abs().max() < 0.05, (when, w)
        live = LiveFeatures(spec)
        worst = 0.0
        for (minute,), one in stored.group_by(["ts"], maintain_order=True):
            live.push_frame(one)
            row = live.row(minute)
            assert row is not None
            worst = max(worst, float(np.abs(row[: len(spec.return_windows)]).max()))
        assert worst < 0.05, when


# --- decisions: no order on a bad or stale price -----------------------------------------


@pytest.mark.parametrize(
    "price",
    [
        -1.0,
        float("inf"),
        float("nan"),
        0.0,
    ],
)
def test_the_engine_sends_no_order_on_an_invalid_price(tmp_path: Path, price: float) -> None:
    rig = _rig(tmp_path, _q(LONG, LONG))
    rig.engine.mark("SPY", price)
    rig.engine.decide(
        now=T0 + MIN, bar_ts=T0, price=price, row=np.zeros(1), step=0, session_close=None
    )
    assert rig.orders() == []
    [decision] = rig.decisions()
    assert decision["risk_verdict"] == "rejected"
    assert "no valid price" in decision["risk_reason"]


def test_the_engine_sends_no_order_on_a_stale_bar(tmp_path: Path) -> None:
    rig = _rig(tmp_path, _q(LONG, LONG))
    rig.engine.mark("SPY", 100.0)
    late = T0 + MIN + timedelta(minutes=5)
    rig.engine.decide(now=late, bar_ts=T0, price=100.0, row=np.zeros(1), step=0, session_close=None)
    assert rig.orders() == []
    assert "stale data" in rig.decisions()[0]["risk_reason"]
    # Control: the same decision on time does send the order.
    rig.engine.decide(
        now=T0 + 2 * MIN, bar_ts=T0 + MIN, price=100.0, row=np.zeros(1), step=1, session_close=None
    )
    assert [side for side, _ in rig.orders()] == ["buy"]


@pytest.mark.parametrize(
    "override",
    [{"close": float("nan")}, {"close": 0.0, "low": 0.0}, {"close": -5.0, "low": -5.0}],
    ids=["nan", "zero", "negative"],
)
def test_a_bad_bar_on_the_live_path_never_becomes_an_order(
    warehouse_path: Path, override: dict[str, object]
) -> None:
    """store_bars quarantines the bar, so the runner has no bar to decide on; the next good bar trades."""
    session = NYSECalendar().session_on(date(2024, 1, 2))
    assert session is not None and session.open == T0
    ingest_bar_frames([frame([bar(i - 70) for i in range(70)])], warehouse_path, NOW)
    clock = ManualClock(T0 + MIN)
    sim = SimulatedBroker(clock, id_prefix="sim:hardening")
    ledger = Ledger(warehouse_path, mode="replay")
    spec = FeatureSpec(symbols=("SPY",))
    engine = TradingEngine(
        EngineConfig("r", "replay", "replay:r", "SPY", "m", tuple(spec.names())),
        PrecomputedQ({str(session.day): _q(*[LONG] * session.minutes)}),
        sim,
        RiskEngine(),
        OrderManager(sim),
        ledger,
        Book(cash=100_000.0),
        sim.new_fills,
    )
    runner = LiveRunner(engine, spec, session, warehouse_path, sim, ledger)
    runner.start(T0)

    with connect(warehouse_path) as con:
        store_bars(warehouse_path, frame([bar(0, **override)]), T0 + MIN, con)
    assert runner.on_bar_stored(T0 + MIN) is None
    assert sim.orders() == [] and engine.decisions == 0
    assert [q["reason"] for q in _quarantine(warehouse_path)] in (
        ["nan_price"],
        ["non_positive_price"],
    )

    with connect(warehouse_path) as con:
        store_bars(warehouse_path, frame([bar(1)]), T0 + 2 * MIN, con)
    clock.set(T0 + 2 * MIN)
    assert runner.on_bar_stored(T0 + 2 * MIN) == "long"
    assert [o.side for o in sim.orders()] == ["buy"]
