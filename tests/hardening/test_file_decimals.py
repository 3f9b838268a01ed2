"""Bad input: a file's decimal separator read from its numbers, never its delimiter; an import an
order of magnitude off the stored history is quarantined, not stored."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from adapters.files import AmbiguousDecimalError, FileBarSource
from flows.cli import main
from warehouse.bars import ingest_bar_frames
from warehouse.db import connect

ALL = (datetime(1990, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
NOW = datetime(2025, 1, 1, tzinfo=UTC)
HEADER = ["Ticker", "Date", "Open", "High", "Low", "Close", "Volume"]


def _bars(n: int, start: datetime, base: float = 100.0) -> list[tuple[datetime, float]]:
    """n minute bars from `start` (New York time), closes wandering near `base`."""
    return [(start + timedelta(minutes=i), base + (i % 7) * 0.25) for i in range(n)]


def write_file(
    path: Path,
    bars: list[tuple[datetime, float]],
    *,
    sep: str = ";",
    decimal: str = ".",
    scale: float = 1.0,
    places: int = 4,
) -> Path:
    """An OHLCV file as a user's tool would write it: `places` decimals with `decimal`."""

    def num(v: float) -> str:
        text = f"{v * scale:.{places}f}".replace(".", decimal)
        return f'"{text}"' if decimal == sep else text

    lines = [sep.join(HEADER)]
    for ts, close in bars:
        cells = [close, close + 0.5, close - 0.5, close]
        lines.append(sep.join(["ABC", f"{ts:%Y-%m-%d %H:%M}", *map(num, cells), "1000"]))
    path.write_text("\n".join(lines) + "\n")
    return path


def load(path: Path, **kw: object) -> pl.DataFrame:
    return pl.concat(FileBarSource(path, **kw).fetch_bars([], "", *ALL))  # type: ignore[arg-type]


def ingest(path: Path, warehouse: Path, **kw: object) -> dict[str, int]:
    frames = FileBarSource(path, **kw).fetch_bars([], "", *ALL)  # type: ignore[arg-type]
    report = ingest_bar_frames(frames, warehouse, NOW, scale_check=True)
    return {"inserted": report.inserted, "updated": report.updated, **report.quarantined}


def stored(warehouse: Path) -> list[tuple[object, ...]]:
    with connect(warehouse) as con:
        return con.execute(
            "SELECT ts, open, high, low, close, ingested_at FROM bars ORDER BY ts"
        ).fetchall()


def quarantined(warehouse: Path) -> dict[str, tuple[int, str]]:
    with connect(warehouse) as con:
        rows = con.execute(
            "SELECT reason, count(*), any_value(detail) FROM bars_quarantine GROUP BY ALL"
        ).fetchall()
    return {r: (n, d) for r, n, d in rows}


DAY1 = datetime(2024, 1, 2, 9, 30)


@pytest.mark.parametrize("sep", [";", ",", "\t"])
def test_dot_decimals_are_read_as_dots_whatever_the_delimiter(
    tmp_path: Path, warehouse_path: Path, sep: str
) -> None:
    # The reported case: ';' with 4 dot decimals was stored 10,000x too high (100 -> 1,000,000).
    bars = _bars(780, DAY1)
    path = write_file(tmp_path / "dots.csv", bars, sep=sep)
    assert ingest(path, warehouse_path) == {"inserted": 780, "updated": 0}
    closes = [float(str(row[4])) for row in stored(warehouse_path)]
    assert closes == [c for _, c in bars]
    assert min(closes) == 100.0 and max(closes) == 101.5


@pytest.mark.parametrize("sep", [";", "\t", ","])
def test_comma_decimals_are_read_as_commas_whatever_the_delimiter(tmp_path: Path, sep: str) -> None:
    # ',' inside a ',' file is quoted; a tab-separated European export is plain.
    bars = _bars(30, DAY1)
    df = load(write_file(tmp_path / "commas.csv", bars, sep=sep, decimal=","))
    assert df["close"].to_list() == [c for _, c in bars]
    assert df["raw"].null_count() == df.height


def test_varying_numbers_of_decimals_are_fine(tmp_path: Path, warehouse_path: Path) -> None:
    # Was: every row quarantined as high_below_low ("100.5" read as 1005, "99.75" as 9975).
    path = tmp_path / "vary.csv"
    path.write_text(
        "Ticker;Date;Open;High;Low;Close;Volume\n"
        "ABC;2024-01-02 09:30;100.5;101;99.75;100.25;1000\n"
        "ABC;2024-01-02 09:31;100.25;101.5;99.75;100.125;1000\n"
        "ABC;2024-01-02 09:32;100.125;101;99.5;100.5;1000\n"
    )
    assert ingest(path, warehouse_path) == {"inserted": 3, "updated": 0}
    assert [row[4] for row in stored(warehouse_path)] == [100.25, 100.125, 100.5]
    assert [row[3] for row in stored(warehouse_path)] == [99.75, 99.75, 99.5]


def test_an_ambiguous_file_is_an_error_naming_the_option(tmp_path: Path) -> None:
    # "1,234" is 1234 (',' groups thousands) or 1.234 (',' is the decimal): nothing decides.
    path = tmp_path / "ambiguous.csv"
    path.write_text(
        "Ticker;Date;Open;High;Low;Close\n"
        "ABC;2024-01-02;1,234;1,250;1,200;1,240\n"
        "ABC;2024-01-03;1,240;1,260;1,230;1,255\n"
    )
    with pytest.raises(AmbiguousDecimalError) as err:
        load(path)
    message = str(err.value)
    assert "\n" not in message
    assert "--decimal ." in message and "--decimal ," in message
    assert "1,200 may be 1200 or 1.200" in message
    # The override decides it either way.
    assert load(path, decimal=".")["close"].to_list() == [1240.0, 1255.0]
    assert load(path, decimal=",")["close"].to_list() == [1.24, 1.255]


def test_decimal_override_beats_the_detection(tmp_path: Path) -> None:
    path = write_file(tmp_path / "f.csv", _bars(3, DAY1), sep=";", decimal=",", places=2)
    assert load(path)["close"].to_list() == [100.0, 100.25, 100.5]
    # Forced '.', "100,25" is no thousands grouping: unparsable and kept for quarantine, never 10025.
    forced = load(path, decimal=".")
    assert forced["close"].null_count() == 3 and forced["raw"].null_count() == 0


def test_a_file_mixing_both_separators_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "mixed.csv"
    path.write_text(
        "Ticker;Date;Close\nABC;2024-01-02;100.5\nABC;2024-01-03;100,75\nABC;2024-01-04;101\n"
    )
    with pytest.raises(
        AmbiguousDecimalError, match=r"both '\.' \(1 like 100\.5\) and ',' \(1 like 100,75\)"
    ):
        load(path)


def test_a_stray_cell_written_the_other_way_is_quarantined_not_the_file(
    tmp_path: Path, warehouse_path: Path
) -> None:
    path = write_file(tmp_path / "stray.csv", _bars(30, DAY1))
    lines = path.read_text().splitlines()
    lines[5] = lines[5].replace("101.0000", "101,0000")  # one hand-edited cell
    path.write_text("\n".join(lines) + "\n")
    assert ingest(path, warehouse_path) == {"inserted": 29, "updated": 0, "nan_price": 1}
    with connect(warehouse_path) as con:
        [(raw,)] = con.execute("SELECT raw FROM bars_quarantine").fetchall()
    assert "101,0000" in raw
    assert max(float(str(row[4])) for row in stored(warehouse_path)) == 101.5


@pytest.mark.parametrize("scale", [100.0, 10_000.0, 0.01])
def test_a_reimport_an_order_of_magnitude_off_is_quarantined(
    tmp_path: Path, warehouse_path: Path, scale: float
) -> None:
    history = _bars(390, DAY1)
    first = write_file(tmp_path / "good.csv", history)
    assert ingest(first, warehouse_path) == {"inserted": 390, "updated": 0}
    before = stored(warehouse_path)

    # The same bars again, scaled (a misread separator, cents for dollars): was 390 updates.
    again = write_file(tmp_path / "scaled.csv", history, scale=scale, places=6)
    assert ingest(again, warehouse_path) == {"inserted": 0, "updated": 0, "scale_mismatch": 390}
    assert stored(warehouse_path) == before  # history untouched, ingested_at included
    n, detail = quarantined(warehouse_path)["scale_mismatch"]
    factor = {100.0: "x100 ", 10_000.0: "x10,000 ", 0.01: "x1/100 "}[scale]
    assert n == 390 and factor in detail and "ABC 1Min" in detail and "--decimal" in detail


def test_a_later_file_off_by_ten_thousand_is_quarantined_as_a_scale_mismatch(
    tmp_path: Path, warehouse_path: Path
) -> None:
    ingest(write_file(tmp_path / "day1.csv", _bars(390, DAY1)), warehouse_path)
    before = stored(warehouse_path)
    day2 = write_file(tmp_path / "day2.csv", _bars(390, DAY1 + timedelta(days=1)), scale=1e4)
    # Was price_jump (a per-bar limit); the reason now says what is wrong with the file.
    assert ingest(day2, warehouse_path) == {"inserted": 0, "updated": 0, "scale_mismatch": 390}
    assert stored(warehouse_path) == before
    assert "x10,000" in quarantined(warehouse_path)["scale_mismatch"][1]


def test_consistent_files_and_first_imports_are_stored(
    tmp_path: Path, warehouse_path: Path
) -> None:
    # No history: nothing to compare with, stored as it is (a penny stock or BRK.A alike).
    big = write_file(tmp_path / "first.csv", _bars(390, DAY1), scale=1e4)
    assert ingest(big, warehouse_path) == {"inserted": 390, "updated": 0}
    # The next day at the same scale, with a few decimals fewer: consistent, stored.
    nxt = write_file(tmp_path / "next.csv", _bars(390, DAY1 + timedelta(days=1)), scale=1.02e4)
    assert ingest(nxt, warehouse_path, decimal=".") == {"inserted": 390, "updated": 0}
    assert len(stored(warehouse_path)) == 780 and quarantined(warehouse_path) == {}


@pytest.mark.prefect
@pytest.mark.usefixtures("prefect_harness")
def test_cli_ingest_ambiguous_file_and_scale_mismatch(
    tmp_path: Path, warehouse_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    w = ["--warehouse", str(warehouse_path)]
    ambiguous = tmp_path / "ambiguous.csv"
    ambiguous.write_text("Ticker;Date;Close\nABC;2024-01-02;100,250\nABC;2024-01-03;100,500\n")
    assert main(["ingest", "--source", "file", "--path", str(ambiguous), *w]) == 2
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1
    assert "pass --decimal . (for 100250) or --decimal , (for 100.250)" in errors[0]

    good = write_file(tmp_path / "good.csv", _bars(390, DAY1), places=3)
    assert main(["ingest", "--source", "file", "--path", str(good), "--decimal", ".", *w]) == 0
    capsys.readouterr()
    before = stored(warehouse_path)
    assert [row[4] for row in before][:3] == [100.0, 100.25, 100.5]

    scaled = write_file(tmp_path / "scaled.csv", _bars(390, DAY1), scale=1e4)
    assert main(["ingest", "--source", "file", "--path", str(scaled), "--json", *w]) == 0
    out = capsys.readouterr().out
    result = json.loads(out[out.index("{") :])
    assert result["quarantined"] == {"scale_mismatch": 390}
    assert result["updated"] == 0 and result["inserted"] == 0
    assert stored(warehouse_path) == before
