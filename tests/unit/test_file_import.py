"""Importing users' own bars from CSV/Parquet files of many layouts."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from adapters.files import AmbiguousDecimalError, BarFileError, FileBarSource, detect_decimal
from core.bar_quality import validate_bars

ALL = (datetime(1990, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
NOW = datetime(2030, 1, 1, tzinfo=UTC)
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "faulty_bars.csv"


def load(path: Path, symbols: list[str] | None = None, **kw: object) -> pl.DataFrame:
    frames = list(FileBarSource(path, **kw).fetch_bars(symbols or [], "", *ALL))  # type: ignore[arg-type]
    return pl.concat(frames)


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def utc(*a: int) -> datetime:
    return datetime(*a, tzinfo=UTC)  # type: ignore[misc]


def test_yahoo_daily_csv(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "SPY.csv",
        "Date,Open,High,Low,Close,Adj Close,Volume\n"
        "2024-01-02,472.16,473.67,470.49,472.65,466.1,123623700\n"
        "2024-01-03,470.43,471.19,468.17,468.79,462.3,103585900\n"
        "2024-07-01,545.63,545.88,542.52,545.34,540.1,40297800\n",
    )
    df = load(p, symbol="SPY")
    assert df["timeframe"].unique().to_list() == ["1Day"]
    assert df["ts"].to_list() == [utc(2024, 1, 2, 5), utc(2024, 1, 3, 5), utc(2024, 7, 1, 4)]
    assert df["close"].to_list() == [472.65, 468.79, 545.34]  # Close, not Adj Close
    assert df["volume"][0] == 123623700.0
    assert df["source"].unique().to_list() == ["file:SPY.csv"]


def test_nasdaq_style_newest_first_with_dollars(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "nasdaq.csv",
        "Date,Close/Last,Volume,Open,High,Low\n"
        '01/04/2024,"$1,467.28",4021300,"$1,474.00","$1,480.10","$1,460.00"\n'
        '01/03/2024,"$1,476.55",3511500,"$1,470.00","$1,481.00","$1,465.20"\n',
    )
    df = load(p, symbol="XYZ")
    assert df["ts"].to_list() == [utc(2024, 1, 3, 5), utc(2024, 1, 4, 5)]  # sorted oldest first
    assert df["close"].to_list() == [1476.55, 1467.28]
    assert df["open"].to_list() == [1470.0, 1474.0]


def test_semicolon_decimal_comma_and_day_first_dates(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "eu.csv",
        "Datum;Eröffnung;Hoch;Tief;Schluss;Volumen\n"
        "02.01.2024 09:30:00;1.234,5;1.240,0;1.230,25;1.238,75;1.000\n"
        "02.01.2024 09:31:00;1.238,75;1.239,0;1.236,0;1.237,0;800\n",
    )
    df = load(
        p,
        symbol="EUX",
        column_map={
            "ts": "Datum",
            "open": "Eröffnung",
            "high": "Hoch",
            "low": "Tief",
            "close": "Schluss",
            "volume": "Volumen",
        },
    )
    assert df["open"].to_list() == [1234.5, 1238.75]
    assert df["low"][0] == 1230.25
    assert df["volume"].to_list() == [1000.0, 800.0]
    assert df["timeframe"][0] == "1Min"
    assert df["ts"][0] == utc(2024, 1, 2, 14, 30)


def test_separate_date_and_time_columns_in_new_york_time_across_dst(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "intraday.csv",
        "date,time,open,high,low,close,volume\n"
        "2024-01-10,09:30,10,11,9,10.5,100\n"
        "2024-01-10,09:31,10.5,11,10,10.7,100\n"
        "2024-07-10,09:30,12,13,11,12.5,100\n"
        "2024-07-10,09:31,12.5,13,12,12.7,100\n",
    )
    df = load(p, symbol="ABC")
    assert df["timeframe"].unique().to_list() == ["1Min"]
    assert df["ts"].to_list() == [
        utc(2024, 1, 10, 14, 30),
        utc(2024, 1, 10, 14, 31),
        utc(2024, 7, 10, 13, 30),
        utc(2024, 7, 10, 13, 31),
    ]


def test_epoch_milliseconds(tmp_path: Path) -> None:
    ms = int(utc(2024, 3, 1, 12, 0).timestamp() * 1000)
    rows = "\n".join(f"{ms + i * 300_000},1,2,0.5,1.5,10" for i in range(3))
    p = write(tmp_path, "epoch.csv", "t,o,h,l,c,v\n" + rows + "\n")
    df = load(p, symbol="BTC/USD")
    assert df["ts"].to_list() == [
        utc(2024, 3, 1, 12, 0),
        utc(2024, 3, 1, 12, 5),
        utc(2024, 3, 1, 12, 10),
    ]
    assert df["timeframe"][0] == "5Min"


def test_multi_symbol_file_with_a_ticker_column(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "multi.csv",
        "Ticker,Date,Open,High,Low,Close,Volume\n"
        "AAA,2024-01-02,1,2,0.5,1.5,10\nBBB,2024-01-02,3,4,2.5,3.5,20\n"
        "AAA,2024-01-03,1.5,2,1,1.8,10\nBBB,2024-01-03,3.5,4,3,3.9,20\n",
    )
    source = FileBarSource(p)
    frames = {f["symbol"][0]: f for f in source.fetch_bars([], "", *ALL)}
    assert set(frames) == {"AAA", "BBB"}
    assert frames["BBB"]["close"].to_list() == [3.5, 3.9]
    only = list(source.fetch_bars(["AAA"], "", *ALL))
    assert len(only) == 1 and only[0].height == 2
    with pytest.raises(BarFileError, match="no bars for \\['ZZZ'\\]"):
        list(source.fetch_bars(["ZZZ"], "", *ALL))


def test_parquet_file(tmp_path: Path) -> None:
    p = tmp_path / "bars.parquet"
    pl.DataFrame(
        {
            "timestamp": [utc(2024, 5, 1, 13, 30), utc(2024, 5, 1, 13, 31)],
            "open": [1.0, 1.1],
            "high": [1.2, 1.2],
            "low": [0.9, 1.0],
            "close": [1.1, 1.15],
            "volume": [5.0, 6.0],
            "symbol": ["PQT", "PQT"],
        }
    ).write_parquet(p)
    df = load(p)
    assert df["ts"].to_list() == [utc(2024, 5, 1, 13, 30), utc(2024, 5, 1, 13, 31)]
    assert df["close"].to_list() == [1.1, 1.15]


def test_bad_cells_become_null_and_keep_their_original_text(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "bad.csv",
        "Date,Open,High,Low,Close,Volume\n"
        "2024-01-02,1,2,0.5,1.5,10\n"
        "2024-01-03,abc,2,0.5,1.5,10\n"
        "not-a-date,1,2,0.5,1.5,10\n"
        "2024-01-05,1,2,0.5,1.7,10\n",
    )
    df = load(p, symbol="BAD", timeframe="1Day")
    assert df.height == 4  # nothing dropped
    good = df.filter(pl.col("raw").is_null())
    assert good["close"].to_list() == [1.5, 1.7]
    bad = df.filter(pl.col("raw").is_not_null())
    raws = [json.loads(r) for r in bad["raw"]]
    assert {r["Open"] for r in raws} == {"abc", "1"}
    assert bad.filter(pl.col("ts").is_null())["close"].to_list() == [1.5]  # unparsable date, last
    assert df["ts"][-1] is None


def test_the_shipped_faulty_sample(tmp_path: Path) -> None:
    df = load(EXAMPLE, timeframe="1Min", source_label="synthetic:faulty-sample")
    assert df.height == 10 and df["symbol"].unique().to_list() == ["DEMO"]
    assert df["source"].unique().to_list() == ["synthetic:faulty-sample"]
    dup = df.filter(pl.col("ts") == utc(2024, 1, 2, 14, 35))
    assert dup["close"].to_list() == [100.30, 100.35]  # file order kept for the duplicate
    assert df.filter(pl.col("raw").is_not_null()).height == 1


def test_close_only_file_imports_as_close_only(tmp_path: Path) -> None:
    """It used to get open = high = low = close: invented prices (a zero range, an open that
    was never traded). The bars table takes close-only rows (migration 0010): nulls."""
    p = write(tmp_path, "close.csv", "date,price\n2024-01-02,10\n2024-01-03,11\n")
    source = FileBarSource(p, symbol="C")
    df = pl.concat(list(source.fetch_bars([], "", *ALL)))
    assert df.select("open", "high", "low", "close").row(0) == (None, None, None, 10.0)
    assert df["volume"].null_count() == 2
    assert source.close_only
    checked = validate_bars(df, NOW)
    assert checked.good.height == 2 and checked.quarantine.height == 0


def test_a_file_with_open_high_low_is_not_close_only(tmp_path: Path) -> None:
    p = write(tmp_path, "ohlc.csv", "date,open,high,low,close\n2024-01-02,9,11,8,10\n")
    source = FileBarSource(p, symbol="C", timeframe="1Day")
    df = pl.concat(list(source.fetch_bars([], "", *ALL)))
    assert df.select("open", "high", "low", "close").row(0) == (9.0, 11.0, 8.0, 10.0)
    assert not source.close_only


def test_unparsable_open_high_low_is_quarantined_not_close_only(tmp_path: Path) -> None:
    """Cells present but unparsable are a bad price (nan_price, with their text); empty
    cells are a price the file lacks, and a row lacking all three is close-only."""
    p = write(
        tmp_path,
        "bad_ohl.csv",
        "Date,Open,High,Low,Close\n"
        "2024-01-02,1,2,0.5,1.5\n"
        "2024-01-03,abc,n/a,--,1.6\n"
        "2024-01-04,,,,1.7\n",
    )
    df = load(p, symbol="BAD", timeframe="1Day")
    checked = validate_bars(df, NOW)
    assert checked.good["close"].to_list() == [1.5, 1.7]
    bad = checked.quarantine
    assert bad["reason"].to_list() == ["nan_price"]
    assert json.loads(bad["raw"].item())["Open"] == "abc"


def test_no_price_columns_is_a_clear_error(tmp_path: Path) -> None:
    p = write(tmp_path, "noprice.csv", "Date,Foo,Bar\n2024-01-02,1,2\n")
    with pytest.raises(BarFileError, match="no price columns \\(found: Date, Foo, Bar\\)"):
        load(p, symbol="X")


def test_no_timestamp_column_is_a_clear_error(tmp_path: Path) -> None:
    p = write(tmp_path, "nots.csv", "Open,High,Low,Close\n1,2,0.5,1.5\n")
    with pytest.raises(BarFileError, match="no timestamp column"):
        load(p, symbol="X")


def test_missing_file_and_missing_symbol_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(BarFileError, match="does not exist"):
        load(tmp_path / "nope.csv", symbol="X")
    p = write(tmp_path, "nosym.csv", "Date,Close\n2024-01-02,1\n")
    with pytest.raises(BarFileError, match="pass symbol="):
        load(p)


@pytest.mark.parametrize(
    ("closes", "decimal", "expected"),
    [
        (["1,234.56", "1,250.5"], ".", [1234.56, 1250.5]),  # thousands ',' + decimal '.'
        (["1.234,56", "1.250,5"], ",", [1234.56, 1250.5]),  # thousands '.' + decimal ','
        (["1,234,567", "1,234"], ".", [1234567.0, 1234.0]),  # two groups: ',' groups
        (["1.234.567", "1.234"], ",", [1234567.0, 1234.0]),
        (["0.125", "1.250"], ".", [0.125, 1.25]),  # a leading 0 never starts a group
        (["0,125", "1,250"], ",", [0.125, 1.25]),
        (["100.5", "1,234"], ".", [100.5, 1234.0]),  # one decisive cell settles the rest
        (["100", "250"], ".", [100.0, 250.0]),  # integers read the same either way
        (["1.5e-05", "2.5e-05"], ".", [1.5e-05, 2.5e-05]),
    ],
)
def test_decimal_separator_is_detected_from_the_numbers(
    tmp_path: Path, closes: list[str], decimal: str, expected: list[float]
) -> None:
    body = "".join(f'2024-01-0{i + 2},"{c}"\n' for i, c in enumerate(closes))
    p = write(tmp_path, "d.csv", "Date,Close\n" + body)
    raw = pl.read_csv(p, infer_schema=False)
    assert detect_decimal(raw, {"close": "Close"}, "d.csv") == decimal
    assert load(p, symbol="X")["close"].to_list() == expected


def test_decimal_detection_uses_every_numeric_column(tmp_path: Path) -> None:
    # The prices alone are ambiguous ("1.234"); the volume's "1,234,567" says ',' groups.
    p = write(
        tmp_path,
        "v.csv",
        "Date;Close;Volume\n2024-01-02;1.234;1,234,567\n2024-01-03;1.250;2,000,000\n",
    )
    df = load(p, symbol="X")
    assert df["close"].to_list() == [1.234, 1.25]
    assert df["volume"].to_list() == [1234567.0, 2e6]


def test_ambiguous_decimals_raise_naming_both_readings(tmp_path: Path) -> None:
    p = write(tmp_path, "a.csv", "Date,Close\n2024-01-02,1.234\n2024-01-03,1.250\n")
    with pytest.raises(
        AmbiguousDecimalError,
        match=r"1\.234 may be 1\.234 or 1234 .*pass --decimal \. \(for 1\.234\) or "
        r"--decimal , \(for 1234\)",
    ):
        load(p, symbol="X")
    with pytest.raises(BarFileError, match=r"not '\.' or ','"):
        FileBarSource(p, decimal=";")


def test_parquet_numbers_are_typed_never_ambiguous(tmp_path: Path) -> None:
    p = tmp_path / "typed.parquet"
    pl.DataFrame(
        {"date": ["2024-01-02", "2024-01-03"], "close": [1.234, 1.25], "symbol": ["P", "P"]}
    ).write_parquet(p)
    assert load(p)["close"].to_list() == [1.234, 1.25]
