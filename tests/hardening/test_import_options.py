"""Bad input: files as users have them -- no symbol column, naive stamps in another zone, an FX
pair, a layout the importer cannot read -- each stored right or refused with one clear line."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from adapters.files import BarFileError, FileBarSource
from flows.cli import main
from warehouse.db import connect

ALL = (datetime(1990, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
# The FX week of 7-12 January 2024 in GMT: Sunday 22:00 (17:00 New York) to Friday 21:00.
FX_OPEN = datetime(2024, 1, 7, 22, 0)


def fx_file(path: Path, weeks: int = 2) -> Path:
    """Hourly EURUSD bars as a broker exports them: naive GMT stamps, no symbol column."""
    lines = ["Date,Open,High,Low,Close"]
    for w in range(weeks):
        for i in range(120):
            ts = FX_OPEN + timedelta(days=7 * w, hours=i)
            p = 1.09 + 0.0001 * ((i * 7) % 13)
            lines.append(f"{ts:%Y-%m-%d %H:%M},{p:.5f},{p + 0.0004:.5f},{p - 0.0004:.5f},{p:.5f}")
    path.write_text("\n".join(lines) + "\n")
    return path


def stock_file(path: Path, shift_hours: int = 0) -> Path:
    """Minute bars of an NYSE stock over 3 sessions, stamped in New York time + shift_hours."""
    lines = ["Datetime,Open,High,Low,Close,Volume"]
    for day in (2, 3, 4):
        open_ny = datetime(2024, 1, day, 9, 30) + timedelta(hours=shift_hours)
        for i in range(390):
            ts = open_ny + timedelta(minutes=i)
            p = 50 + 0.01 * (i % 9)
            lines.append(f"{ts:%Y-%m-%d %H:%M},{p:.2f},{p + 0.05:.2f},{p - 0.05:.2f},{p:.2f},100")
    path.write_text("\n".join(lines) + "\n")
    return path


def ingest(
    capsys: pytest.CaptureFixture[str], warehouse: Path, path: Path, *extra: str
) -> tuple[int, str, str]:
    argv = ["ingest", "--source", "file", "--path", str(path), "--warehouse", str(warehouse)]
    code = main([*argv, *extra])
    out, err = capsys.readouterr()
    return code, out, err


def stamps(warehouse: Path, symbol: str) -> list[datetime]:
    with connect(warehouse) as con:
        rows = con.execute("SELECT ts FROM bars WHERE symbol = ? ORDER BY ts", [symbol]).fetchall()
    return [r[0].astimezone(UTC) for r in rows]


def symbol_row(warehouse: Path, symbol: str) -> tuple[object, ...] | None:
    with connect(warehouse) as con:
        rows = con.execute(
            "SELECT symbol, asset_class, calendar, timezone, source, first_seen, updated_at"
            " FROM symbols WHERE symbol = ?",
            [symbol],
        ).fetchall()
    return rows[0] if rows else None


def error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.prefect
@pytest.mark.usefixtures("prefect_harness")
def test_a_gmt_fx_file_without_a_symbol_column_is_stored_at_the_right_utc_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Was: `--symbol` and `--tz` did not exist; the file could not be named from the CLI and
    # its GMT stamps were read as New York time (stored 5 hours late), as an NYSE stock.
    path = fx_file(tmp_path / "eurusd.csv")
    warehouse = tmp_path / "w.duckdb"
    code, out, err = ingest(
        capsys, warehouse, path, "--symbol", "EURUSD", "--asset-class", "fx", "--tz", "Etc/GMT"
    )
    assert code == 0, err
    got = stamps(warehouse, "EURUSD")
    assert len(got) == 240
    assert got[0] == FX_OPEN.replace(tzinfo=UTC)  # Sunday 22:00 UTC = 17:00 New York
    assert got[119] == datetime(2024, 1, 12, 21, 0, tzinfo=UTC)  # Friday 16:00 New York
    row = symbol_row(warehouse, "EURUSD")
    assert row is not None and row[:5] == ("EURUSD", "fx", "24/5", "Etc/GMT", "file:eurusd.csv")
    # The summary: one row per symbol with class/calendar, counts and the stored span.
    assert "Ingested from file" in out
    line = next(ln for ln in out.splitlines() if "EURUSD" in ln)
    cells = [c.strip() for c in re.split(r"[│|┃]", line) if c.strip()]
    assert cells == [
        "EURUSD", "fx 24/5", "1Hour", "240", "240", "0", "0", "0",
        "2024-01-07 22:00 .. 2024-01-19 21:00",
    ], out  # fmt: skip
    assert "warning" not in out
    assert "total: 240 rows received, 240 new" in out

    # The same file again: nothing changes, the symbols row included.
    code, out, err = ingest(capsys, warehouse, path, "--symbol", "EURUSD", "--tz", "Etc/GMT")
    assert code == 0, err
    assert "total: 240 rows received, 0 new, 0 updated, 240 unchanged" in out
    assert symbol_row(warehouse, "EURUSD") == row


@pytest.mark.prefect
@pytest.mark.usefixtures("prefect_harness")
def test_the_default_zone_shifts_a_gmt_file_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The default stays America/New_York (as before): the GMT file lands 5 hours late in
    # January, and the summary now says so and what to pass.
    warehouse = tmp_path / "w.duckdb"
    path = fx_file(tmp_path / "eurusd.csv")
    code, out, err = ingest(
        capsys, warehouse, path, "--symbol", "EURUSD", "--asset-class", "fx", "--json"
    )
    assert code == 0, err
    result = json.loads(out)
    assert stamps(warehouse, "EURUSD")[0] == (FX_OPEN + timedelta(hours=5)).replace(tzinfo=UTC)
    assert len(result["warnings"]) == 1
    warning = result["warnings"][0]
    assert warning.startswith("EURUSD: timestamps look 5 hours late against the 24/5 sessions")
    assert "read as America/New_York time: import again with --tz Etc/GMT" in warning
    assert result["series"][0]["asset_class"] == "fx"
    row = symbol_row(warehouse, "EURUSD")
    assert row is not None and row[3] == "America/New_York"


@pytest.mark.prefect
@pytest.mark.usefixtures("prefect_harness")
def test_a_stock_file_stamped_in_utc_warns_and_a_right_one_does_not(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    warehouse = tmp_path / "w.duckdb"
    utc_stamped = stock_file(tmp_path / "abc.csv", shift_hours=5)  # 14:30-21:00 naive
    code, out, err = ingest(capsys, warehouse, utc_stamped, "--symbol", "ABC")
    assert code == 0, err
    warnings = [ln for ln in out.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1, out
    assert "ABC: timestamps look 5 hours late against the XNYS sessions" in warnings[0]
    assert "--tz Etc/GMT" in warnings[0]
    assert symbol_row(warehouse, "ABC") is not None
    code, out, err = ingest(capsys, warehouse, utc_stamped, "--symbol", "ABC", "--tz", "UTC")
    assert code == 0, err
    assert "warning:" not in out
    # Re-read in UTC the bars sit in the session: 14:30 UTC = 09:30 New York.
    assert datetime(2024, 1, 2, 14, 30, tzinfo=UTC) in stamps(warehouse, "ABC")


@pytest.mark.prefect
@pytest.mark.usefixtures("prefect_harness")
def test_a_conflicting_reimport_is_refused_until_reclassify(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    warehouse = tmp_path / "w.duckdb"
    path = fx_file(tmp_path / "eurusd.csv", weeks=1)
    tz = ["--symbol", "EURUSD", "--tz", "Etc/GMT"]
    assert ingest(capsys, warehouse, path, *tz, "--asset-class", "fx")[0] == 0
    before = stamps(warehouse, "EURUSD")
    code, _, err = ingest(capsys, warehouse, path, *tz, "--asset-class", "stock")
    assert code == 2
    assert error_line(err) == (
        "error: EURUSD is stored as fx on calendar 24/5 (table symbols, since "
        f"{datetime.now(UTC):%Y-%m-%d}); to change it to --asset-class stock, import again "
        "with --reclassify as well"
    )
    assert symbol_row(warehouse, "EURUSD")[1:3] == ("fx", "24/5")  # type: ignore[index]
    assert stamps(warehouse, "EURUSD") == before
    # Without options the stored class stands; with --reclassify it changes.
    assert ingest(capsys, warehouse, path, *tz)[0] == 0
    assert symbol_row(warehouse, "EURUSD")[1:3] == ("fx", "24/5")  # type: ignore[index]
    code, _, err = ingest(
        capsys, warehouse, path, *tz, "--asset-class", "stock", "--calendar", "xlon", "--reclassify"
    )
    assert code == 0, err
    assert symbol_row(warehouse, "EURUSD")[1:3] == ("stock", "XLON")  # type: ignore[index]


@pytest.mark.prefect
@pytest.mark.usefixtures("prefect_harness")
def test_a_close_only_file_is_stored_close_only_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SYNTHETIC closes. Stored with null open/high/low (they used to be copies of the close)."""
    warehouse = tmp_path / "w.duckdb"
    path = tmp_path / "closes.csv"
    path.write_text("Date,Close\n2024-01-02,10.5\n2024-01-03,10.7\n2024-01-04,10.6\n")
    code, out, err = ingest(capsys, warehouse, path, "--symbol", "ACME")
    assert code == 0, err
    assert "warning: closes.csv: close-only: no open/high/low columns" in out
    with connect(warehouse) as con:
        rows = con.execute(
            "SELECT open, high, low, close FROM bars WHERE symbol = 'ACME' ORDER BY ts"
        ).fetchall()
    assert rows == [(None, None, None, 10.5), (None, None, None, 10.7), (None, None, None, 10.6)]


@pytest.mark.prefect
@pytest.mark.usefixtures("prefect_harness")
def test_cli_refusals_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    warehouse = tmp_path / "w.duckdb"
    nosym = fx_file(tmp_path / "eurusd.csv", weeks=1)
    code, _, err = ingest(capsys, warehouse, nosym)
    assert code == 2 and "has no symbol/ticker column: name its series with --symbol" in err
    multi = tmp_path / "multi.csv"
    multi.write_text("Ticker,Date,Close\nAAA,2024-01-02,1\nAAA,2024-01-03,2\nBBB,2024-01-02,3\n")
    code, _, err = ingest(capsys, warehouse, multi, "--symbol", "ZZZ")
    assert code == 2
    assert "has its own symbol column 'Ticker' (AAA, BBB); --symbol ZZZ is none of them" in (
        error_line(err)
    )
    aware = tmp_path / "aware.csv"
    aware.write_text("Date,Close\n2024-01-02T14:30:00Z,1\n2024-01-02T14:31:00Z,2\n")
    code, _, err = ingest(capsys, warehouse, aware, "--symbol", "X", "--tz", "Europe/London")
    assert code == 2
    assert "2 timestamps carry their own zone (e.g. '2024-01-02T14:30:00Z'); --tz" in err
    code, _, err = ingest(capsys, warehouse, nosym, "--symbol", "X", "--tz", "Mars/Olympus")
    assert code == 2 and "unknown time zone 'Mars/Olympus'" in error_line(err)
    code, _, err = ingest(capsys, warehouse, nosym, "--symbol", "X", "--calendar", "XMARS")
    assert code == 2 and "unknown calendar 'XMARS'" in error_line(err)
    with connect(warehouse) as con:
        assert con.execute("SELECT count(*) FROM bars").fetchall() == [(0,)]
        assert con.execute("SELECT count(*) FROM symbols").fetchall() == [(0,)]
    # A symbol column and --symbol naming one of its symbols: only that one is imported.
    code, out, err = ingest(capsys, warehouse, multi, "--symbol", "AAA", "--json")
    assert code == 0, err
    assert [r["symbol"] for r in json.loads(out)["series"]] == ["AAA"]


def load(path: Path, **kw: object) -> pl.DataFrame:
    return pl.concat(FileBarSource(path, **kw).fetch_bars([], "", *ALL))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "prices.xlsx",
            b"PK\x03\x04rest",
            "spreadsheet workbooks (.xlsx) are not read; save the sheet as CSV",
        ),
        ("renamed.csv", b"PK\x03\x04rest", "is a zip archive or Excel workbook, not a CSV text"),
        ("old.csv", b"\xd0\xcf\x11\xe0rest", "is an Excel workbook, not a CSV text file"),
        ("empty.csv", b"", "is empty"),
        (
            "header.csv",
            b"Date,Open,High,Low,Close\n",
            "has a header (Date, Open, High, Low, Close)",
        ),
        (
            "noheader.csv",
            b"2024-01-02,1.5,2,1,1.8\n2024-01-03,1.8,2,1,1.9\n",
            "has no header row (its first line is '2024-01-02,1.5,2,1,1.8'); add one",
        ),
        (
            "wide.csv",
            b"Date,AAPL,MSFT,GOOG\n2024-01-02,185.6,370.9,139.6\n2024-01-03,184.2,370.6,140.4\n",
            "if it is a wide file, one price column per symbol (AAPL, MSFT, GOOG): reshape it "
            "to one row per bar (Date,Symbol,Close), or import one column at a time with "
            '--column-map \'{"close": "AAPL"}\' --symbol AAPL',
        ),
        (
            "one.csv",
            b"Date,EURUSD\n2024-01-02,1.0941\n2024-01-03,1.0920\n",
            "if 'EURUSD' holds the prices, pass --column-map '{\"close\": \"EURUSD\"}'",
        ),
        (
            "dates.csv",
            b"Date,Close\nJan 2 2024,1.5\nJan 3 2024,1.6\n",
            "none of its 2 timestamps can be read (the first is 'Jan 2 2024' in Date)",
        ),
        (
            "nots.csv",
            b"Open,High,Low,Close\n1,2,0.5,1.5\n",
            "has no timestamp column (found: Open, High, Low, Close); name it "
            'Date/Datetime/Timestamp or pass --column-map \'{"ts": "<column>"}\'',
        ),
        (
            "weekly.csv",
            b"Date,Close\n2024-01-01,1\n2024-01-08,2\n2024-01-15,3\n",
            "not a known timeframe; pass --timeframe (1Min, 5Min, 15Min, 30Min, 1Hour or 1Day)",
        ),
    ],
)
def test_unsupported_layouts_get_one_clear_message(
    tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(BarFileError) as caught:
        load(path, symbol="X")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_daily_stamps_with_an_offset_keep_their_date(tmp_path: Path) -> None:
    # A pandas export of daily bars at midnight UTC: was read as New York time, so every
    # bar landed on the previous day (2024-01-01 19:00 New York).
    path = tmp_path / "daily.parquet"
    pl.DataFrame(
        {
            "Date": [datetime(2024, 1, d, tzinfo=UTC) for d in (2, 3, 4)],
            "Close": [1.0, 2.0, 3.0],
        }
    ).write_parquet(path)
    df = load(path, symbol="X")
    assert df["timeframe"].unique().to_list() == ["1Day"]
    assert df["ts"].to_list() == [datetime(2024, 1, d, 5, tzinfo=UTC) for d in (2, 3, 4)]
