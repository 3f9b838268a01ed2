"""Import a user's own OHLCV bars from CSV or Parquet: columns detected or mapped, bad cells kept for quarantine."""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import polars as pl

from core.bar_schema import TIMEFRAMES, conform_bars


class BarFileError(ValueError):
    """The file cannot be read as bars; the message says what to change."""


class AmbiguousDecimalError(BarFileError):
    """The numbers do not tell whether ',' or '.' is the decimal separator."""


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


# Canonical column -> accepted header spellings (after lower-casing and dropping punctuation).
ALIASES: dict[str, tuple[str, ...]] = {
    "ts": ("datetime", "timestamp", "datetimeutc", "localtime", "gmttime", "opentime", "t", "ts"),
    "date": ("date", "day", "tradedate", "dateutc"),
    "time": ("time", "timeutc", "hour"),
    "open": ("open", "o", "openprice", "opening"),
    "high": ("high", "h", "highprice"),
    "low": ("low", "l", "lowprice"),
    "close": ("close", "c", "closelast", "last", "closeprice", "lastprice", "price", "closing"),
    "adj_close": ("adjclose", "adjustedclose"),
    "volume": ("volume", "vol", "v", "totalvolume"),
    "trade_count": ("tradecount", "trades", "numberoftrades", "numtrades", "n"),
    "vwap": ("vwap", "vw"),
    "symbol": ("symbol", "ticker", "sym", "instrument", "pair"),
}

_NAIVE_FORMATS = (
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d",
    "%Y/%m/%d %H:%M:%S",
    "%Y/%m/%d %H:%M",
    "%Y/%m/%d",
    "%m/%d/%Y %H:%M:%S",
    "%m/%d/%Y %H:%M",
    "%m/%d/%Y",
    "%d.%m.%Y %H:%M:%S%.f",
    "%d.%m.%Y %H:%M:%S",
    "%d.%m.%Y %H:%M",
    "%d.%m.%Y",
    "%Y%m%d",
)
_AWARE_FORMATS = (
    "%Y-%m-%dT%H:%M:%S%.f%z",
    "%Y-%m-%d %H:%M:%S%.f%z",
    "%Y-%m-%dT%H:%M:%S%z",
    "%Y-%m-%d %H:%M:%S%z",
)
_SPACINGS = {"1Min": 60, "5Min": 300, "15Min": 900, "30Min": 1800, "1Hour": 3600}

DECIMALS: tuple[str, ...] = (".", ",")
_NUMERIC = ("open", "high", "low", "close", "volume", "vwap", "trade_count")
# A separator followed by exactly three digits after 1-3 leading digits is either a decimal
# point or a thousands group ("1,234": 1234 or 1.234); a leading 0 cannot start a group.
_AMBIGUOUS = {".": r"^[+-]?[1-9]\d{0,2}\.\d{3}$", ",": r"^[+-]?[1-9]\d{0,2},\d{3}$"}
# Numbers that can only be written with this decimal separator.
_DECIDES = {
    ".": (
        r"^[+-]?\d{1,3}(,\d{3})+\.\d*$",  # 1,234.56
        r"^[+-]?\d{1,3}(,\d{3}){2,}$",  # 1,234,567
        r"^[+-]?(\d+\.\d*|\.\d+)([eE][+-]?\d+)?$",  # 100.5, 0.125, 1.5e-05 (not ambiguous)
    ),
    ",": (
        r"^[+-]?\d{1,3}(\.\d{3})+,\d*$",  # 1.234,56
        r"^[+-]?\d{1,3}(\.\d{3}){2,}$",  # 1.234.567
        r"^[+-]?(\d+,\d*|,\d+)$",  # 100,5, 0,125 (not ambiguous)
    ),
}
# One convention wins over cells written the other way only by this many to one.
_MAJORITY = 9
# With a decimal separator chosen, the other character may only group thousands.
_GROUPED = {".": r"^[+-]?\d{1,3}(,\d{3})+(\.\d*)?$", ",": r"^[+-]?\d{1,3}(\.\d{3})+(,\d*)?$"}


_WORKBOOKS = (".xlsx", ".xlsm", ".xls", ".xlsb", ".ods", ".numbers")
# First bytes of files that are not text: zip containers (xlsx, ods) and old Excel (OLE2).
_BINARY_MAGIC = {
    b"PK\x03\x04": "a zip archive or Excel workbook",
    b"\xd0\xcf\x11\xe0": "an Excel workbook",
}
# A header cell that is a number or a date: the file's first line is data, not names.
_DATA_CELL = re.compile(r"^[\s\"']*[+-]?[\d][\d.,:/ T-]*[\s\"']*$")


def _head_lines(path: Path, n: int = 5) -> list[str]:
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    with opener(path, "rt", encoding="utf-8-sig", errors="replace") as fh:
        return [fh.readline() for _ in range(n)]


def _sniff_delimiter(path: Path) -> str:
    header = _head_lines(path)[0]
    counts = {d: header.count(d) for d in (",", ";", "\t", "|")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] > 0 else ","


def _check_text_layout(path: Path, sep: str) -> None:
    """Refuse, with what to do, the files that are not one header line and rows of cells."""
    with path.open("rb") as fh:
        magic = fh.read(4)
    for prefix, what in _BINARY_MAGIC.items():
        if magic.startswith(prefix):
            raise BarFileError(
                f"{path} is {what}, not a CSV text file: save the sheet as CSV (in Excel: "
                "File > Save As > CSV UTF-8) and import that file"
            )
    lines = [ln for ln in _head_lines(path) if ln.strip()]
    if not lines:
        raise BarFileError(f"{path} is empty")
    cells = [c for c in lines[0].rstrip("\r\n").split(sep) if c.strip()]
    if cells and sum(bool(_DATA_CELL.match(c)) for c in cells) * 2 >= len(cells):
        raise BarFileError(
            f"{path} has no header row (its first line is {lines[0].strip()[:60]!r}); add one, "
            "e.g. Date,Open,High,Low,Close,Volume"
        )


def _read(path: Path) -> tuple[pl.DataFrame, bool]:
    """The file as text columns, and whether its numbers were typed (Parquet) rather than text."""
    if not path.exists():
        raise BarFileError(f"bar file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        try:
            df = pl.read_parquet(path)
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise BarFileError(f"{path}: cannot read as Parquet ({exc})") from None
        # Everything as text first: one parsing path for CSV and Parquet alike.
        return df.with_columns(
            pl.col(c).dt.convert_time_zone("UTC").dt.strftime("%Y-%m-%dT%H:%M:%S%.f+00:00")
            if getattr(df.schema[c], "time_zone", None) is not None
            else pl.col(c).cast(pl.String)
            for c in df.columns
        ), True
    if suffix in _WORKBOOKS:
        raise BarFileError(
            f"{path}: spreadsheet workbooks ({suffix}) are not read; save the sheet as CSV "
            "(in Excel: File > Save As > CSV UTF-8) and import that file"
        )
    inner = Path(path.stem).suffix.lower() if suffix == ".gz" else suffix
    if inner not in (".csv", ".txt", ".tsv", ""):
        raise BarFileError(
            f"{path}: unsupported file type {suffix!r}; use CSV (also .csv.gz) or Parquet"
        )
    sep = _sniff_delimiter(path)
    if suffix != ".gz":
        _check_text_layout(path, sep)
    try:
        df = pl.read_csv(
            path,
            separator=sep,
            infer_schema=False,
            encoding="utf8-lossy",
            truncate_ragged_lines=True,
        )
    except pl.exceptions.NoDataError:
        raise BarFileError(f"{path} is empty") from None
    except pl.exceptions.PolarsError as exc:
        raise BarFileError(f"{path}: cannot read as CSV ({exc})") from None
    df = df.rename({c: c.strip().lstrip("\ufeff") for c in df.columns})
    if df.height == 0:
        raise BarFileError(f"{path} has a header ({', '.join(df.columns)}) but no rows")
    return df, False


def _detect(columns: Sequence[str], column_map: Mapping[str, str] | None) -> dict[str, str]:
    found: dict[str, str] = {}
    by_norm: dict[str, str] = {}
    for c in columns:
        by_norm.setdefault(_norm(c), c)
    for canon, names in ALIASES.items():
        for n in names:
            if n in by_norm and by_norm[n] not in found.values():
                found[canon] = by_norm[n]
                break
    if "volume" not in found:  # e.g. "Volume BTC", "Volume USD": take the first
        for c in columns:
            if _norm(c).startswith("volume"):
                found["volume"] = c
                break
    for canon, col in (column_map or {}).items():
        if col not in columns:
            raise BarFileError(
                f"column_map names {col!r} for {canon}, but the file has {list(columns)}"
            )
        found = {k: v for k, v in found.items() if v != col}
        found[canon] = col
    return found


def _cell(col: str, suffixes: bool) -> pl.Expr:
    """A numeric cell's text without currency signs, spaces and (volume) a K/M/B suffix."""
    s = pl.col(col).str.strip_chars().str.replace_all(r"[\$€£\s]", "")
    return s.str.replace(r"(?i)[kmb]$", "") if suffixes else s


def _number(col: str, decimal: str, suffixes: bool = False) -> pl.Expr:
    s = _cell(col, suffixes=False)
    body = _cell(col, suffixes)
    group = "," if decimal == "." else "."
    # The grouping character anywhere but in whole thousands groups ("100,5" read with
    # decimal '.') makes the cell unparsable -- quarantined with its text, never 1005.
    well_formed = ~body.str.contains(group, literal=True) | body.str.contains(_GROUPED[decimal])
    digits = body.str.replace_all(group, "", literal=True)
    if decimal == ",":
        digits = digits.str.replace(",", ".", literal=True)
    value: pl.Expr = pl.when(well_formed).then(digits.cast(pl.Float64, strict=False))
    if suffixes:
        mult = (
            pl.when(s.str.contains(r"(?i)k$"))
            .then(1e3)
            .when(s.str.contains(r"(?i)m$"))
            .then(1e6)
            .when(s.str.contains(r"(?i)b$"))
            .then(1e9)
            .otherwise(1.0)
        )
        value = value * mult
    return value


def detect_decimal(raw: pl.DataFrame, numeric: Mapping[str, str], where: str) -> str:
    """The decimal separator ('.' or ',') the file's numbers are written with.

    `numeric`: canonical name -> file column of the numeric columns. Decided by the numbers
    alone (1,234.5 / 100.25 / 0.5 vs 1.234,5 / 100,25 / 0,5); integers decide nothing and
    a file of integers reads the same either way. Cells written the other way are a stray
    minority (under 1 in 10: they do not parse and are quarantined) or make the file
    contradict itself; that, or evidence that is only ambiguous ("1,234"), raises
    AmbiguousDecimalError naming the option.
    """
    cells = [
        raw.select(_cell(col, canon == "volume").alias("v")).get_column("v")
        for canon, col in numeric.items()
    ]
    if not cells:
        return "."
    frame = pl.concat(cells).drop_nulls().value_counts(name="n")
    ambiguous = {d: pl.col("v").str.contains(p) for d, p in _AMBIGUOUS.items()}
    count: dict[str, int] = {}
    example: dict[str, str] = {}
    for d in DECIMALS:
        decides = pl.any_horizontal(pl.col("v").str.contains(p) for p in _DECIDES[d])
        hits = frame.filter(decides & ~ambiguous[d]).sort("v")
        count[d] = int(hits.get_column("n").sum())
        example[d] = str(hits.get_column("v").first()) if hits.height else ""
    dot, comma = count["."], count[","]
    if dot and comma and max(dot, comma) < _MAJORITY * min(dot, comma):
        raise AmbiguousDecimalError(
            f"{where}: numbers use both '.' ({dot} like {example['.']}) and ',' ({comma} like "
            f"{example[',']}) as the decimal separator; pass --decimal . or --decimal , "
            "(the others are quarantined)"
        )
    if dot or comma:
        return "." if dot > comma else ","
    unsure = frame.filter(pl.any_horizontal(*ambiguous.values())).get_column("v")
    if unsure.len():
        ex = str(unsure.sort().first())
        as_dot = ex.replace(",", "") if "," in ex else ex
        as_comma = ex.replace(",", ".") if "," in ex else ex.replace(".", "")
        raise AmbiguousDecimalError(
            f"{where}: cannot tell the decimal separator: {ex} may be {as_dot} or {as_comma} "
            f"and no other number decides; pass --decimal . (for {as_dot}) or "
            f"--decimal , (for {as_comma})"
        )
    return "."


def _parse_ts(text: pl.Expr, tz: str, epoch: bool) -> pl.Expr:
    """Text -> naive UTC datetime (null when unparsable)."""
    if epoch:
        v = text.cast(pl.Float64, strict=False)
        us = pl.when(v > 1e14).then(v).when(v > 1e11).then(v * 1e3).otherwise(v * 1e6)
        return us.cast(pl.Int64).cast(pl.Datetime("us"))
    naive = [
        _clean_ts(text)
        .str.strptime(pl.Datetime("us"), f, strict=False)
        .dt.replace_time_zone(tz, ambiguous="earliest", non_existent="null")
        .dt.convert_time_zone("UTC")
        .dt.replace_time_zone(None)
        for f in _NAIVE_FORMATS
    ]
    return pl.coalesce(_aware_ts(text), *naive)


def _clean_ts(text: pl.Expr) -> pl.Expr:
    return text.str.strip_chars().str.replace(r"Z$", "+00:00")


def _aware_ts(text: pl.Expr) -> pl.Expr:
    """Text with a UTC offset -> naive UTC datetime; null for anything else."""
    t = _clean_ts(text)
    return pl.coalesce(
        t.str.strptime(pl.Datetime("us", "UTC"), f, strict=False).dt.replace_time_zone(None)
        for f in _AWARE_FORMATS
    )


_TIMEFRAME_HINT = "pass --timeframe (1Min, 5Min, 15Min, 30Min, 1Hour or 1Day)"


def _infer_timeframe(df: pl.DataFrame, path: Path) -> str:
    spacing = (
        df.drop_nulls("ts")
        .sort("symbol", "ts")
        .select((pl.col("ts").diff().over("symbol").dt.total_seconds()).alias("d"))
        .filter(pl.col("d") > 0)
        .get_column("d")
        # The lower quartile, not the median: sparse files (gaps, holidays) skew the median.
        .quantile(0.25, "lower")
    )
    if spacing is None:
        raise BarFileError(
            f"{path}: cannot infer the timeframe from fewer than two bars; {_TIMEFRAME_HINT}"
        )
    gap = float(str(spacing))
    for name, secs in _SPACINGS.items():
        if abs(gap - secs) <= 0.1 * secs:
            return name
    if 0.9 * 86400 <= gap <= 4 * 86400:
        return "1Day"
    raise BarFileError(
        f"{path}: bars are {gap:.0f} s apart, not a known timeframe; {_TIMEFRAME_HINT} "
        "(weekly or monthly bars are not supported)"
    )


def _numeric_share(raw: pl.DataFrame, col: str) -> float:
    cells = raw.get_column(col).drop_nulls().head(200)
    if cells.len() == 0:
        return 0.0
    numbers = cells.str.replace_all(r"[\s\$€£,]", "").cast(pl.Float64, strict=False)
    return int(numbers.is_not_null().sum()) / numbers.len()


def _no_prices_message(path: Path, raw: pl.DataFrame, cols: Mapping[str, str]) -> str:
    """Why a file without price columns cannot be read, and what to pass instead."""
    known = set(cols.values())
    numeric = [c for c in raw.columns if c not in known and _numeric_share(raw, c) >= 0.9]
    head = f"{path} has no price columns (found: {', '.join(raw.columns)})"
    if len(numeric) == 1:
        return (
            f"{head}; if {numeric[0]!r} holds the prices, pass "
            f'--column-map \'{{"close": "{numeric[0]}"}}\''
        )
    if len(numeric) > 1:
        shown = ", ".join(numeric[:5]) + (", ..." if len(numeric) > 5 else "")
        return (
            f"{head}; if it is a wide file, one price column per symbol ({shown}): reshape it "
            "to one row per bar (Date,Symbol,Close), or import one column at a time with "
            f'--column-map \'{{"close": "{numeric[0]}"}}\' --symbol {numeric[0]}'
        )
    return f'{head}; name them Open/High/Low/Close or pass --column-map \'{{"close": "<column>"}}\''


DEFAULT_TZ = "America/New_York"
"""The zone naive timestamps are read in unless --tz names another (US market data's)."""


def check_zone(tz: str) -> str:
    """`tz` if it is an IANA time zone name, else a BarFileError saying what to pass."""
    try:
        ZoneInfo(tz)
        pl.Series([datetime(2024, 1, 1)]).dt.replace_time_zone(tz)
    except (ZoneInfoNotFoundError, ValueError, pl.exceptions.PolarsError):
        raise BarFileError(
            f"unknown time zone {tz!r}: pass an IANA name such as America/New_York, "
            "Europe/London or Etc/GMT (UTC); Etc/GMT-2 is UTC+2"
        ) from None
    return tz


class FileBarSource:
    """BarSource over a CSV/Parquet file of OHLCV bars (any symbol, daily or intraday).

    - Columns are found by common names (Date/Time/Open/High/Low/Close/Adj Close/Volume/
      Ticker, Close/Last, ...) or mapped with column_map={'close': 'Last Price', ...}.
    - `symbol`: the name of a file without a symbol/ticker column (one series); for a file
      with one, it selects that symbol (one it does not hold is an error).
    - Naive timestamps are read in `tz` (default America/New_York); stamps with an offset
      (or epoch numbers) are converted to UTC, and naming `tz` for such a file is an error.
      Daily bars are stamped at 00:00 America/New_York on the date as written (the
      warehouse convention; for stamps with an offset, the UTC date).
    - A file without open/high/low columns is close-only: its bars have null open, high
      and low (the warehouse's close-only series; nothing is invented) and `close_only`
      says so once the file is loaded. A file without volume gets null volume.
    - The decimal separator is read from the numbers (1,234.5 / 0.5 vs 1.234,5 / 0,5), whatever
      the delimiter; `decimal='.'` or `','` overrides it, and a file whose numbers do not
      decide ("1,234" only) is an AmbiguousDecimalError that names the option.
    - A cell that does not parse becomes null (an open/high/low cell NaN, so that a row
      whose open/high/low all failed is not taken for a close-only bar) and the row carries its
      original cells as JSON in `raw`, so validation quarantines it with its content; no
      row is dropped.
    - Layouts it cannot read (workbooks, no header, no timestamp or price column, one
      column per symbol, no parsable timestamp at all) are a BarFileError saying what to do.
    - Rows are stably sorted by (symbol, ts): a file's row order is not a delivery order.
    """

    name = "file"

    def __init__(
        self,
        path: str | Path,
        *,
        symbol: str | None = None,
        timeframe: str | None = None,
        column_map: Mapping[str, str] | None = None,
        tz: str | None = None,
        source_label: str | None = None,
        decimal: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.symbol = symbol.strip() if symbol else None
        self.timeframe = timeframe
        self.column_map = dict(column_map or {})
        self.tz_given = tz is not None
        self.tz = check_zone(tz) if tz is not None else DEFAULT_TZ
        self.source_label = source_label or f"file:{self.path.name}"
        if timeframe and timeframe not in TIMEFRAMES:
            raise BarFileError(f"timeframe {timeframe!r} is not one of {', '.join(TIMEFRAMES)}")
        if decimal is not None and decimal not in DECIMALS:
            raise BarFileError(f"decimal separator {decimal!r} is not '.' or ','")
        self.decimal = decimal
        self._loaded: dict[str | None, pl.DataFrame] = {}
        self._symbol_column: str | None = None
        self._naive = False
        self._close_only = False

    @property
    def close_only(self) -> bool:
        """The file has no open/high/low columns: its bars are close-only (null open/high/low).

        Known once the file is loaded (symbols(), load() or fetch_bars()).
        """
        return self._close_only

    @property
    def naive_zone(self) -> str | None:
        """The zone the file's naive timestamps were read in; None when none was naive.

        Known once the file is loaded (symbols(), load() or fetch_bars()).
        """
        return self.tz if self._naive else None

    def load(self, timeframe: str | None = None) -> pl.DataFrame:
        """The whole file as canonical bars (+ `raw`), sorted by (symbol, ts); read once."""
        key = timeframe or self.timeframe
        if key not in self._loaded:
            self._loaded[key] = self._load(key)
        return self._loaded[key]

    def _load(self, timeframe: str | None) -> pl.DataFrame:
        raw, typed = _read(self.path)
        cols = _detect(raw.columns, self.column_map)
        if "close" not in cols and "adj_close" in cols:
            cols["close"] = cols.pop("adj_close")
        prices = [c for c in ("open", "high", "low", "close") if c in cols]
        if not prices:
            raise BarFileError(_no_prices_message(self.path, raw, cols))
        if "close" not in cols:
            raise BarFileError(
                f"{self.path} has no close/last/price column (found: {', '.join(raw.columns)}); "
                'pass --column-map \'{"close": "<column>"}\''
            )
        if "symbol" not in cols and not self.symbol:
            raise BarFileError(
                f"{self.path} has no symbol/ticker column: name its series with --symbol NAME "
                "(in Python: pass symbol='NAME')"
            )
        # From the numbers themselves, never the delimiter: ';' files use either separator.
        numeric = {c: cols[c] for c in _NUMERIC if c in cols}
        decimal = self.decimal or ("." if typed else detect_decimal(raw, numeric, str(self.path)))
        exprs = [
            _number(col, decimal, suffixes=(c == "volume")).alias(c) for c, col in numeric.items()
        ]
        if "ts" in cols:
            ts_text = pl.col(cols["ts"])
            source_cols = [cols["ts"]]
        elif "date" in cols and "time" in cols:
            ts_text = pl.concat_str([pl.col(cols["date"]), pl.col(cols["time"])], separator=" ")
            source_cols = [cols["date"], cols["time"]]
        elif "date" in cols or "time" in cols:
            only = cols.get("date") or cols["time"]
            ts_text = pl.col(only)
            source_cols = [only]
        else:
            raise BarFileError(
                f"{self.path} has no timestamp column (found: {', '.join(raw.columns)}); name "
                'it Date/Datetime/Timestamp or pass --column-map \'{"ts": "<column>"}\''
            )
        sample = raw.select(ts_text.alias("t")).drop_nulls().head(200).get_column("t")
        epoch = sample.len() > 0 and bool(sample.str.contains(r"^\s*\d{9,16}(\.\d+)?\s*$").all())
        exprs.append(_parse_ts(ts_text, self.tz, epoch).alias("ts"))
        # Epoch numbers count as UTC: they carry their zone as much as "+00:00" does.
        aware = ts_text.is_not_null() if epoch else _aware_ts(ts_text).is_not_null()
        exprs.append(aware.alias("_aware"))
        if "symbol" in cols:
            self._symbol_column = cols["symbol"]
            exprs.append(pl.col(cols["symbol"]).str.strip_chars().alias("symbol"))
        else:
            exprs.append(pl.lit(self.symbol).alias("symbol"))
        # Parsed values go to their own frame: a source column may share a canonical name.
        parsed = raw.select(exprs)
        self._check_timestamps(parsed, raw, source_cols)
        # No open/high/low column: a close-only series, its open/high/low null rather than
        # copies of the close, which would be invented prices.
        self._close_only = not any(c in cols for c in ("open", "high", "low"))
        parsed = parsed.with_columns(
            pl.lit(None, dtype=pl.Float64).alias(c)
            for c in ("open", "high", "low")
            if c not in parsed.columns
        )

        # Rows where a present cell failed to parse keep their original text for quarantine.
        checks = [
            (cols[c], c)
            for c in ("open", "high", "low", "close", "volume", "vwap", "trade_count")
            if c in cols
        ]
        text = pl.DataFrame(
            [raw.get_column(c) for c in dict.fromkeys([s for s, _ in checks] + source_cols)]
        )
        flags = [
            text.get_column(src).is_not_null()
            & (text.get_column(src).str.strip_chars() != "")
            & parsed.get_column(dst).is_null()
            for src, dst in checks
        ]
        ts_present = (
            pl.DataFrame([text.get_column(c) for c in source_cols])
            .select(pl.any_horizontal(pl.all().is_not_null()))
            .to_series()
        )
        # An unparsable open/high/low cell becomes NaN, not null: null is a price the file
        # lacks (an empty cell, or a close-only file), NaN one it sent unreadably, which
        # validation quarantines as nan_price even when all three failed (all null would
        # read as a close-only bar). A null close is quarantined either way.
        parsed = parsed.with_columns(
            pl.when(flag).then(float("nan")).otherwise(pl.col(dst)).alias(dst)
            for (_, dst), flag in zip(checks, flags, strict=True)
            if dst in ("open", "high", "low")
        )
        flags.append(ts_present & parsed.get_column("ts").is_null())
        failed = pl.DataFrame(flags).select(pl.any_horizontal(pl.all())).to_series()
        raw_json: list[str | None] = [None] * raw.height
        bad_idx = failed.arg_true().to_list()
        for i, row in zip(bad_idx, raw[bad_idx].iter_rows(named=True), strict=True):
            raw_json[i] = json.dumps(row)
        df = parsed.with_columns(pl.Series("raw", raw_json, dtype=pl.String))
        df = df.with_columns(pl.col("ts").dt.replace_time_zone("UTC"))

        tf = timeframe or self.timeframe or _infer_timeframe(df, self.path)
        if tf not in TIMEFRAMES:
            raise BarFileError(f"timeframe {tf!r} is not one of {', '.join(TIMEFRAMES)}")
        if tf == "1Day":
            # The date as written in the file, stamped at 00:00 New York.
            local_day = (
                pl.when(pl.col("_aware"))
                .then(pl.col("ts").dt.date())
                .otherwise(pl.col("ts").dt.convert_time_zone(self.tz).dt.date())
            )
            df = df.with_columns(
                local_day.cast(pl.Datetime("us"))
                .dt.replace_time_zone("America/New_York", ambiguous="earliest")
                .dt.convert_time_zone("UTC")
                .alias("ts")
            )
        df = df.with_columns(
            pl.lit(tf).alias("timeframe"), pl.lit(self.source_label).alias("source")
        )
        df = df.sort(["symbol", "ts"], nulls_last=True, maintain_order=True)
        return conform_bars(df)

    def _check_timestamps(self, parsed: pl.DataFrame, raw: pl.DataFrame, source: list[str]) -> None:
        """No timestamp readable at all, or --tz for stamps that carry their own zone: refuse."""
        stamps = parsed.get_column("ts")
        aware = parsed.get_column("_aware")
        if stamps.is_not_null().sum() == 0:
            first = raw.select(source).drop_nulls().head(1).rows()
            example = " ".join(str(v) for v in first[0]) if first else ""
            raise BarFileError(
                f"{self.path}: none of its {raw.height:,} timestamps can be read (the first is "
                f"{example!r} in {', '.join(source)}); write them as YYYY-MM-DD[ HH:MM[:SS]], "
                "DD.MM.YYYY, MM/DD/YYYY, YYYYMMDD, epoch seconds/ms or with an offset "
                "(2024-01-02T14:30:00Z)"
            )
        n_aware = int(aware.sum())
        self._naive = int((stamps.is_not_null() & ~aware).sum()) > 0
        if self.tz_given and n_aware:
            example = raw.get_column(source[0]).filter(aware).head(1).item()
            raise BarFileError(
                f"{self.path}: {n_aware:,} timestamps carry their own zone (e.g. {example!r}); "
                f"--tz {self.tz} applies only to naive ones: drop --tz"
            )

    def symbols(self, timeframe: str | None = None, wanted: Sequence[str] = ()) -> list[str]:
        """The symbols this source delivers: `wanted` (each checked to be in the file), else
        `symbol` when set, else every one in the file. Reads the file (once)."""
        df = self.load(timeframe or None)
        present = df.get_column("symbol").drop_nulls().unique(maintain_order=True).to_list()
        absent = [s for s in wanted if s not in present]
        if absent:
            raise BarFileError(f"{self.path} has no bars for {absent}; it has {present}")
        if wanted:
            return list(wanted)
        if self.symbol and self._symbol_column is not None:
            if self.symbol not in present:
                shown = ", ".join(present[:10]) + (", ..." if len(present) > 10 else "")
                raise BarFileError(
                    f"{self.path} has its own symbol column {self._symbol_column!r} ({shown}); "
                    f"--symbol {self.symbol} is none of them: drop --symbol or name one of those"
                )
            return [self.symbol]
        return present

    def fetch_bars(
        self, symbols: Sequence[str], timeframe: str, start: datetime, end: datetime
    ) -> Iterator[pl.DataFrame]:
        df = self.load(timeframe or None)
        chosen = self.symbols(timeframe or None, wanted=symbols)
        in_range = pl.col("ts").is_null() | ((pl.col("ts") >= start) & (pl.col("ts") < end))
        for sym in chosen:
            yield df.filter((pl.col("symbol") == sym) & in_range)
        # Rows without a symbol are quarantined with the file's own, unless one was chosen.
        if not symbols and not self.symbol and df.get_column("symbol").null_count():
            yield df.filter(pl.col("symbol").is_null())
