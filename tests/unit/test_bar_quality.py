"""Every bad-bar case is quarantined with its reason; every good row survives."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from core.bar_quality import REASONS, STATIC_RULES, BarRow, row_reason, validate_bars
from core.bar_schema import BAR_COLUMNS

NOW = datetime(2024, 6, 1, tzinfo=UTC)
T0 = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
COLS = ["symbol", "timeframe", "ts", "open", "high", "low", "close", "volume"]


def bar(minute: int, **over: object) -> dict[str, object]:
    row: dict[str, object] = {
        "symbol": "SPY", "timeframe": "1Min", "ts": T0 + timedelta(minutes=minute),
        "open": 100.0, "high": 101.0, "low": 99.0, "close": 100.5, "volume": 1000.0,
    }  # fmt: skip
    row.update(over)
    return row


def frame(rows: list[dict[str, object]]) -> pl.DataFrame:
    return pl.DataFrame(
        rows,
        schema={
            "symbol": pl.String,
            "timeframe": pl.String,
            "ts": pl.Datetime("us", "UTC"),
            "open": pl.Float64,
            "high": pl.Float64,
            "low": pl.Float64,
            "close": pl.Float64,
            "volume": pl.Float64,
        },
    ).with_columns(pl.lit("test").alias("source"))


CASES = [
    ("missing_key", {"ts": None}),
    ("missing_key", {"symbol": None}),
    ("bad_timeframe", {"timeframe": "7Min"}),
    ("nan_price", {"close": float("nan")}),
    ("nan_price", {"close": None}),
    # A missing open beside a high and low: neither full OHLC nor close-only.
    ("partial_ohlc", {"open": None}),
    ("partial_ohlc", {"high": None, "low": None}),
    ("nan_price", {"high": float("inf")}),
    ("non_positive_price", {"low": 0.0}),
    ("non_positive_price", {"open": -1.0, "low": -2.0}),
    ("high_below_low", {"high": 98.0, "low": 99.0, "open": 98.5, "close": 98.5}),
    ("ohlc_outside_range", {"close": 102.0}),
    ("ohlc_outside_range", {"open": 98.0}),
    ("bad_volume", {"volume": -5.0}),
    ("bad_volume", {"volume": float("nan")}),
    ("future_timestamp", {"ts": NOW + timedelta(minutes=1)}),
]


@pytest.mark.parametrize(("reason", "override"), CASES)
def test_each_bad_case_is_quarantined_and_good_rows_survive(
    reason: str, override: dict[str, object]
) -> None:
    rows = [bar(0), bar(1, **override), bar(2)]
    result = validate_bars(frame(rows), NOW)
    assert result.quarantine.get_column("reason").to_list() == [reason]
    assert result.quarantine.get_column("detail").to_list() == [REASONS[reason]]
    assert result.good.get_column("ts").to_list() == [T0, T0 + timedelta(minutes=2)]
    assert result.good.columns == list(BAR_COLUMNS)


@pytest.mark.parametrize(
    "override",
    [
        *(o for _, o in CASES),
        {},  # a clean bar
        {"open": None, "high": None, "low": None},  # close-only: valid
        {"open": None, "high": None, "low": None, "close": -1.0},
        {"volume": None},
        {"high": float("nan"), "low": None},
    ],
)
def test_the_one_row_form_of_each_rule_judges_a_row_as_the_batch_form_does(
    override: dict[str, object],
) -> None:
    """The live store's fast path (row_reason) and validate_bars are one set of rules."""
    row = bar(1, **override)
    batch = validate_bars(frame([row]), NOW, jumps=None).quarantine.get_column("reason")
    one = row_reason(BarRow(*(row[c] for c in COLS)), NOW)  # type: ignore[arg-type]
    assert one == (batch[0] if batch.len() else None)


def test_every_static_reason_has_a_rule_and_a_text() -> None:
    static = [r.reason for r in STATIC_RULES]
    assert len(static) == len(set(static)) and set(static) <= set(REASONS)
    assert static == [r for r in REASONS if r in static]  # the priority order of REASONS


def test_duplicate_keys_keep_the_last_delivery() -> None:
    rows = [bar(0), bar(1, close=100.1), bar(1, close=100.9), bar(2)]
    result = validate_bars(frame(rows), NOW)
    assert result.quarantine.get_column("reason").to_list() == ["duplicate_key"]
    assert result.quarantine.get_column("close").to_list() == [100.1]
    assert result.good.filter(pl.col("ts") == T0 + timedelta(minutes=1)).get_column(
        "close"
    ).to_list() == [100.9]
    assert result.good.height == 3


def test_out_of_order_within_a_series_is_quarantined_but_other_series_are_not() -> None:
    rows = [bar(0), bar(5), bar(3), bar(6), bar(1, symbol="VTI"), bar(0, symbol="VTI")]
    result = validate_bars(frame(rows), NOW)
    bad = result.quarantine.select("symbol", "reason", "ts").rows()
    assert bad == [
        ("SPY", "out_of_order", T0 + timedelta(minutes=3)),
        ("VTI", "out_of_order", T0),
    ]
    assert result.good.height == 4


def test_a_clean_batch_passes_untouched() -> None:
    rows = [bar(i) for i in range(50)]
    result = validate_bars(frame(rows), NOW)
    assert result.quarantine.height == 0
    assert result.good.height == 50


def test_row_hash_is_stable_across_runs() -> None:
    rows = [bar(0), bar(1, close=float("nan"))]
    first = validate_bars(frame(rows), NOW).quarantine.get_column("row_hash").to_list()
    second = validate_bars(frame(rows), NOW).quarantine.get_column("row_hash").to_list()
    assert first == second and len(first[0]) == 32


def test_missing_price_column_is_a_clear_error() -> None:
    df = frame([bar(0)]).drop("close")
    with pytest.raises(ValueError, match="close"):
        validate_bars(df, NOW)
