"""Import a user's own OHLCV bars from CSV or Parquet: columns detected or mapped, bad cells kept for quarantine."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path

import polars as pl

from adapters.schema import TIMEFRAMES, conform_bars


class BarFileError(ValueError):
    """The file cannot be read as bars; the message says what to change."""


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


def _sniff_delimiter(path: Path) -> str:
    with path.open("r", encoding="utf-8-sig", errors="replace") as fh:
        head = [fh.readline() for _ in range(5)]
    header = head[0]
    counts = {d: header.count(d) for d in (",", ";", "\t", "|")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] > 0 else ","


def _read(path: Path) -> tuple[pl.DataFrame, str]:
    if not path.exists():
        raise BarFileError(f"bar file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        df = pl.read_parquet(path)
        # Everything as text first: one parsing path for CSV and Parquet alike.
        return df.with_columns(
            pl.col(c).dt.convert_time_zone("UTC").dt.strftime("%Y-%m-%dT%H:%M:%S%.f+00:00")
            if getattr(df.schema[c], "time_zone", None) is not None
            else pl.col(c).cast(pl.String)
            for c in df.columns
        ), ","
    if suffix not in (".csv", ".txt", ".tsv", ""):
        raise BarFileError(f"{path}: unsupported file type {suffix!r}; use CSV or Parquet")
    sep = _sniff_delimiter(path)
    try:
        df = pl.read_csv(
            path,
            separator=sep,
            infer_schema=False,
            encoding="utf8-lossy",
            truncate_ragged_lines=True,
        )
    except pl.exceptions.PolarsError as exc:
        raise BarFileError(f"{path}: cannot read as CSV ({exc})") from None
    return df.rename({c: c.strip().lstrip("\ufeff") for c in df.columns}), sep


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


def _number(col: str, decimal_comma: bool, suffixes: bool = False) -> pl.Expr:
    s = pl.col(col).str.strip_chars().str.replace_all(r"[\$€£\s]", "")
    if decimal_comma:
        s = s.str.replace_all(r"\.", "").str.replace(",", ".", literal=True)
    else:
        s = s.str.replace_all(",", "", literal=True)
    value = s.str.replace(r"(?i)[kmb]$", "").cast(pl.Float64, strict=False)
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


def _parse_ts(text: pl.Expr, tz: str, epoch: bool) -> pl.Expr:
    """Text -> naive UTC datetime (null when unparsable)."""
    if epoch:
        v = text.cast(pl.Float64, strict=False)
        us = pl.when(v > 1e14).then(v).when(v > 1e11).then(v * 1e3).otherwise(v * 1e6)
        return us.cast(pl.Int64).cast(pl.Datetime("us"))
    t = text.str.strip_chars().str.replace(r"Z$", "+00:00")
    aware = [
        t.str.strptime(pl.Datetime("us", "UTC"), f, strict=False).dt.replace_time_zone(None)
        for f in _AWARE_FORMATS
    ]
    naive = [
        t.str.strptime(pl.Datetime("us"), f, strict=False)
        .dt.replace_time_zone(tz, ambiguous="earliest", non_existent="null")
        .dt.convert_time_zone("UTC")
        .dt.replace_time_zone(None)
        for f in _NAIVE_FORMATS
    ]
    return pl.coalesce(*aware, *naive)


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
            f"{path}: cannot infer the timeframe from fewer than two bars; pass timeframe="
        )
    gap = float(str(spacing))
    for name, secs in _SPACINGS.items():
        if abs(gap - secs) <= 0.1 * secs:
            return name
    if 0.9 * 86400 <= gap <= 4 * 86400:
        return "1Day"
    raise BarFileError(
        f"{path}: bars are {gap:.0f} s apart, not a known timeframe; pass timeframe="
    )


class FileBarSource:
    """BarSource over a CSV/Parquet file of OHLCV bars (any symbol, daily or intraday).

    - Columns are found by common names (Date/Time/Open/High/Low/Close/Adj Close/Volume/
      Ticker, Close/Last, ...) or mapped with column_map={'close': 'Last Price', ...}.
    - Naive timestamps are read in `tz`; aware ones are converted to UTC. Daily bars are
      stamped at 00:00 America/New_York (the warehouse convention).
    - A file with only a close/price column gets open = high = low = close; a file
      without volume gets null volume.
    - A cell that does not parse becomes null and the row carries its original cells as
      JSON in `raw`, so validation quarantines it with its content; no row is dropped.
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
        tz: str = "America/New_York",
        source_label: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.symbol = symbol
        self.timeframe = timeframe
        self.column_map = dict(column_map or {})
        self.tz = tz
        self.source_label = source_label or f"file:{self.path.name}"
        if timeframe and timeframe not in TIMEFRAMES:
            raise BarFileError(f"timeframe {timeframe!r} is not one of {', '.join(TIMEFRAMES)}")

    def load(self, timeframe: str | None = None) -> pl.DataFrame:
        """The whole file as canonical bars (+ `raw`), sorted by (symbol, ts)."""
        raw, sep = _read(self.path)
        cols = _detect(raw.columns, self.column_map)
        if "close" not in cols and "adj_close" in cols:
            cols["close"] = cols.pop("adj_close")
        prices = [c for c in ("open", "high", "low", "close") if c in cols]
        if not prices:
            raise BarFileError(
                f"{self.path} has no price columns (found: {', '.join(raw.columns)}); "
                "name them Open/High/Low/Close or pass column_map, e.g. {'close': 'Last Price'}"
            )
        if "close" not in cols:
            raise BarFileError(
                f"{self.path} has no close/last/price column (found: {', '.join(raw.columns)}); "
                "pass column_map={'close': '<column>'}"
            )
        decimal_comma = sep == ";"
        exprs: list[pl.Expr] = []
        for c in ("open", "high", "low", "close", "volume", "vwap", "trade_count"):
            if c in cols:
                exprs.append(_number(cols[c], decimal_comma, suffixes=(c == "volume")).alias(c))
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
                f"{self.path} has no timestamp column (found: {', '.join(raw.columns)}); "
                "name it Date/Datetime/Timestamp or pass column_map={'ts': '<column>'}"
            )
        sample = raw.select(ts_text.alias("t")).drop_nulls().head(200).get_column("t")
        epoch = sample.len() > 0 and bool(sample.str.contains(r"^\s*\d{9,16}(\.\d+)?\s*$").all())
        exprs.append(_parse_ts(ts_text, self.tz, epoch).alias("ts"))
        if "symbol" in cols:
            exprs.append(pl.col(cols["symbol"]).str.strip_chars().alias("symbol"))
        elif self.symbol:
            exprs.append(pl.lit(self.symbol).alias("symbol"))
        else:
            raise BarFileError(f"{self.path} has no symbol/ticker column; pass symbol=")
        # Parsed values go to their own frame: a source column may share a canonical name.
        parsed = raw.select(exprs)
        for c in ("open", "high", "low"):
            if c not in parsed.columns:
                parsed = parsed.with_columns(pl.col("close").alias(c))

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
            local_day = pl.col("ts").dt.convert_time_zone(self.tz).dt.date()
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

    def fetch_bars(
        self, symbols: Sequence[str], timeframe: str, start: datetime, end: datetime
    ) -> Iterator[pl.DataFrame]:
        df = self.load(timeframe or None)
        present = df.get_column("symbol").drop_nulls().unique(maintain_order=True).to_list()
        wanted = list(symbols) if symbols else present
        absent = [s for s in wanted if s not in present]
        if absent:
            raise BarFileError(f"{self.path} has no bars for {absent}; it has {present}")
        in_range = pl.col("ts").is_null() | ((pl.col("ts") >= start) & (pl.col("ts") < end))
        for sym in wanted:
            yield df.filter((pl.col("symbol") == sym) & in_range)
        if not symbols and df.get_column("symbol").null_count():
            yield df.filter(pl.col("symbol").is_null())
