"""A live (or replayed, or paper) trading session: stored bars in, one decision per closed minute out.

The bar handler only stores bars. Decisions run on minute boundaries: read the bars the
features need back from the warehouse, compute the closed bar's feature row with the
same functions training used, and call the shared TradingEngine. A run that starts
after the open first walks the session so far through the policy (no orders), instead
of the old 10-minute wait for history.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
from filelock import FileLock, Timeout

from adapters.protocols import Broker
from core.assets import CALENDAR_24_5, CALENDAR_24_7
from core.bar_hours import quarantine_outside_hours
from core.bar_quality import DEFAULT_JUMP_RULES, BarRow, ValidatedBars, row_reason, validate_bars
from core.bar_schema import BAR_SCHEMA
from core.stamp_shift import regular_sessions
from models.features import FeatureSpec
from trading.calendar import Session
from trading.engine import MINUTE, TradingEngine
from trading.inputs import InputLoader, values_at
from trading.ledger import Ledger
from trading.live_features import LiveFeatures
from warehouse.bars import (
    bars_by_minute,
    ingest_bar_frames,
    insert_new_bars,
    last_bars_before,
    recent_closes,
    write_bars,
    write_quarantine,
    write_stream_bars,
)
from warehouse.db import WarehouseLockedError, connect, transaction
from warehouse.outbox import Outbox
from warehouse.trade_history import first_equity_in

log = logging.getLogger(__name__)

# Bars of history per asset the features need before the bar decided on (longest window 60,
# plus one for the first difference); more is harmless.
HISTORY_BARS = 130


class LiveRunLockedError(RuntimeError):
    """Another live-trading run holds the lock."""


def _write_holder(fd: int) -> None:
    # Called by filelock with the lock held: the lock file itself names the holder for a loser.
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)


@contextmanager
def run_lock(path: Path) -> Iterator[None]:
    """One live run at a time on this machine (beside the deployment's concurrency limit)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path, blocking=False, preserve_lock_file=True, on_acquired=_write_holder)
    try:
        held = lock.acquire()
    except Timeout:
        holder = path.read_text().strip() or "unknown"
        raise LiveRunLockedError(
            f"another live-trading run holds {path} ({holder}); one run at a time"
        ) from None
    with held:
        yield


def load_tail(
    con: Any, symbols: tuple[str, ...], timeframe: str, until: datetime, n: int = HISTORY_BARS
) -> pl.DataFrame:
    """The last `n` bars of each symbol that start before `until` (searching 10 days back)."""
    return last_bars_before(con, symbols, timeframe, until, n, lookback=timedelta(days=10))


@dataclass
class LiveRunner:
    """Drives a TradingEngine through one session from warehouse bars."""

    engine: TradingEngine
    spec: FeatureSpec
    session: Session
    warehouse: Path
    broker: Broker
    ledger: Ledger
    latencies_ms: list[float] = field(default_factory=list)
    decided: set[datetime] = field(default_factory=set)
    warmed: bool = False
    con: Any = None
    """A connection held for a whole fast replay; None opens one per minute (live: never hold one)."""
    inputs: InputLoader | None = None
    """The model's sentiment/forecast inputs (trading.inputs.input_loader); None: it has none."""
    lock_timeout_s: float | None = None
    """How long a decision waits for a warehouse another process holds (None: the setting)."""
    last_inputs: dict[str, float | None] = field(default_factory=dict)
    """The model's last sentiment and forecast inputs read, by column (trading.inputs.values_at;
    used while the warehouse is locked)."""
    calendar: str | None = None
    """The traded symbol's calendar (symbols table) for the time-of-session features, as
    training's compute_features took it; None infers it from the symbol the same way."""
    features: LiveFeatures = field(init=False)
    """The traded and other assets' recent bars and feature rows (trading.live_features)."""

    def _connect(self) -> Any:
        return nullcontext(self.con) if self.con is not None else connect(self.warehouse)

    def __post_init__(self) -> None:
        self.features = LiveFeatures(self.spec, self.calendar)

    def _bars(self, con: Any, start: datetime, end: datetime) -> pl.DataFrame:
        return bars_by_minute(con, self.spec.symbols, self.spec.timeframe, start, end)

    def start(self, now: datetime) -> int:
        """Load the history the features need, then feed the session's closed bars so far to the policy."""
        self.engine.begin_session(str(self.session.day), self.session.day)
        last_closed = _floor_minute(now) - MINUTE
        with self._connect() as con:
            history = load_tail(con, self.spec.symbols, self.spec.timeframe, self.session.open)
            so_far = self._bars(con, self.session.open, last_closed)
            extra = (
                self.inputs(con, self.session.open, last_closed) if self.inputs else (None, None)
            )
        self.features.push_frame(history)
        warmed = 0
        for (minute,), frame in so_far.group_by(["ts"], maintain_order=True):
            assert isinstance(minute, datetime)
            self.features.push_frame(frame)
            row = self.features.row(minute, inputs=values_at(self.spec, extra, minute))
            if row is not None:
                self.engine.warm_up(row, warmed)
                warmed += 1
        self.warmed = True
        return warmed

    def on_bar_stored(
        self,
        now: datetime,
        arrived: float | None = None,
        *,
        fresh: pl.DataFrame | None = None,
        flush: bool = True,
    ) -> str | None:
        """Decide on the bar that closed at the last minute boundary; None when it is missing or done.

        `fresh`: that minute's bars as stored -- from the run's BarStore (`minute()`), or read
        back once by a caller that decides several symbols at once; None reads them back from
        the warehouse. `flush=False` leaves the ledger write to the caller, after every
        symbol has decided. With the warehouse held by another process the decision is made
        from `fresh` (if given) and the ledger rows go to its outbox.
        """
        bar_ts = _floor_minute(now) - MINUTE
        if bar_ts in self.decided or not self.session.contains(bar_ts):
            return None
        started = arrived if arrived is not None else time.perf_counter()
        self.engine.sync_fills()
        with ExitStack() as stack:
            con = self.con
            if con is None and (fresh is None or self.inputs is not None):
                try:
                    con = stack.enter_context(
                        connect(self.warehouse, timeout_s=self.lock_timeout_s)
                    )
                except WarehouseLockedError as err:
                    if fresh is None:
                        log.warning(
                            "warehouse locked (%s) and no %s bars for %s in memory: no decision",
                            err.holder,
                            self.spec.traded,
                            bar_ts,
                        )
                        return None
                    log.warning(
                        "warehouse locked (%s): deciding %s from the bars in memory",
                        err.holder,
                        bar_ts,
                    )
            action = self._decide(now, bar_ts, started, fresh, con, flush)
        if action is None:
            return None
        self.decided.add(bar_ts)
        return action

    def _decide(
        self,
        now: datetime,
        bar_ts: datetime,
        started: float,
        fresh: pl.DataFrame | None,
        con: Any,
        flush: bool,
    ) -> str | None:
        if fresh is None:
            # The fresh bars come back from the warehouse (what the stream handler stored).
            fresh = self._bars(con, bar_ts, bar_ts + MINUTE)
        if con is not None:
            self._catch_up(con, bar_ts)
        self.features.push_frame(fresh)
        if self.inputs is not None and con is not None:
            extra = self.inputs(con, bar_ts, bar_ts + MINUTE)
            self.last_inputs = values_at(self.spec, extra, bar_ts)
        # With the warehouse locked: the last values read (they change by the minute at most).
        row = self.features.row(bar_ts, inputs=self.last_inputs)
        if row is None:
            log.warning("no %s bar for %s yet; no decision", self.spec.traded, bar_ts)
            return None
        price = float(self.features.assets[self.spec.traded].close)  # the bar just pushed
        step = int((bar_ts - self.session.open).total_seconds() // 60)
        self.engine.mark(self.spec.traded, price)
        action = self.engine.decide(
            now=now,
            bar_ts=bar_ts,
            price=price,
            row=row,
            step=step,
            session_close=self.session.close,
        )
        self.latencies_ms.append((time.perf_counter() - started) * 1000)
        self.engine.record_equity(bar_ts + MINUTE)
        if flush:
            # No connection (the warehouse locked): the ledger's outbox takes the rows.
            self.ledger.flush(con) if con is not None else self.ledger.flush()
        return action

    def _catch_up(self, con: Any, bar_ts: datetime) -> int:
        """Feed the policy the bars it has not seen before `bar_ts` (no decisions); returns how many.

        Minutes with no decision -- bars that came late after a silent stream, a minute the
        warehouse was locked -- would leave a hole in the features' windows and the policy's
        recurrent state; they are walked through here as the warm-up walks a late start,
        so the next row equals the batch features' row.
        """
        traded = self.features.assets[self.spec.traded]
        if not traded.ts or traded.ts[-1] >= bar_ts - MINUTE:
            return 0
        missed = self._bars(con, traded.ts[-1] + MINUTE, bar_ts)
        walked = 0
        for (minute,), frame in missed.group_by(["ts"], maintain_order=True):
            assert isinstance(minute, datetime)
            self.features.push_frame(frame)
            row = self.features.row(minute, inputs=self.last_inputs)
            if row is not None and self.session.contains(minute):
                self.engine.warm_up(row, int((minute - self.session.open).total_seconds() // 60))
                walked += 1
        if walked:
            log.info("walked %d bar(s) the policy had not seen before %s", walked, bar_ts)
        return walked


def day_start_equity(con: Any, account: str, session: Session) -> float | None:
    """The account's first recorded equity of `session` (its start, for the daily loss limit)."""
    return first_equity_in(con, account, session.open, session.close + MINUTE)


def _floor_minute(when: datetime) -> datetime:
    return when.replace(second=0, microsecond=0)


def store_bars(warehouse: Path, frame: pl.DataFrame, now: datetime, con: Any = None) -> int:
    """The stream handler's whole job: validate and upsert the bars (bad ones quarantined)."""
    if con is None:
        return ingest_bar_frames([frame], warehouse, now).received
    checked = validate_bars(frame, now)  # write_stream_bars checks jumps vs the stored bars
    write_quarantine(con, checked.quarantine, now)
    write_stream_bars(con, checked.good, now)
    return frame.height


_SCHEMA = pl.Schema(BAR_SCHEMA)


@dataclass
class BarStore:
    """The stream handler's store for one run: the shared rules, one short write, no read-back.

    Each minute's frame is checked with core.bar_quality's rules. A frame that is plainly
    clean -- the usual minute: canonical columns, finite positive prices inside [low, high],
    volume >= 0, not in the future, keys unique and in order, no jump against the previous
    accepted close (remembered here, read from the warehouse once per series) -- is stored
    with one INSERT; anything else takes validate_bars itself (quarantine with reasons) and
    the upsert. So both paths store exactly what validate_bars would accept.

    The stored good bars of the last minutes stay in memory: the decision reads its fresh
    bars here instead of reading them back (`minute()`).

    When another process holds the warehouse past `lock_timeout_s`, the frame's good and
    quarantined rows go to the outbox (warehouse.outbox) and trading goes on from memory; the next
    write that gets the file merges them (upserts: a re-merge changes nothing).
    """

    warehouse: Path
    outbox: Path | None = None
    lock_timeout_s: float = 0.5
    keep_minutes: int = 5
    previous: dict[tuple[str, str], float] = field(default_factory=dict)
    recent: dict[datetime, pl.DataFrame] = field(default_factory=dict)
    outboxed: int = 0
    fast: int = 0
    """Frames stored on the plainly-clean path."""
    checked: int = 0
    """Frames that went through validate_bars."""
    _seeded: set[tuple[str, str]] = field(default_factory=set)
    regular_hours: Mapping[str, str] | None = None
    """symbol -> exchange calendar (the symbols table's): intraday bars of those symbols
    outside every regular session go to the quarantine as `outside_regular_hours`, as the
    ingest's rule (core.bar_hours) sends them -- a paper run started at 09:25 receives
    pre-market bars. None: no such check (coins; a replay of stored bars)."""
    _windows: dict[tuple[str, date], list[tuple[datetime, datetime]]] = field(default_factory=dict)

    def store(self, frame: pl.DataFrame, now: datetime, con: Any = None) -> pl.DataFrame:
        """Validate and store one delivery; returns the rows accepted (stored or outboxed)."""
        if con is not None:
            return self._store(con, frame, now)
        try:
            with connect(self.warehouse, timeout_s=self.lock_timeout_s) as own:
                return self._store(own, frame, now)
        except WarehouseLockedError as err:
            if self.outbox is None:
                raise
            good = self._validate(None, frame, now)
            self._to_outbox(good, now)
            log.warning(
                "warehouse locked (%s): %d bar(s) kept in %s, merged when it is free",
                err.holder,
                good.good.height,
                self.outbox,
            )
            return good.good

    def minute(self, ts: datetime, symbols: tuple[str, ...]) -> pl.DataFrame | None:
        """The stored bars of minute `ts`, if every one of `symbols` has one; else None."""
        frame = self.recent.get(ts)
        if frame is None or frame.height < len(symbols):
            return None
        return frame if set(symbols) <= set(frame.get_column("symbol").to_list()) else None

    # ---- internals --------------------------------------------------------------------

    def _validate(self, con: Any, frame: pl.DataFrame, now: datetime) -> ValidatedBars:
        rows = frame.rows() if frame.schema == _SCHEMA and 0 < frame.height <= 64 else None
        if con is not None:
            self._seed(con, frame, rows)
        closes = self._clean(rows, now) if rows is not None else None
        if closes is not None:
            self.fast += 1
            checked = ValidatedBars(good=frame, quarantine=_NO_QUARANTINE)
        else:
            self.checked += 1
            previous = pl.DataFrame(
                [(s, tf, c) for (s, tf), c in self.previous.items()],
                schema={"symbol": pl.String, "timeframe": pl.String, "close": pl.Float64},
                orient="row",
            ).with_columns(pl.lit(None, dtype=pl.Datetime("us", "UTC")).alias("ts"))
            checked = validate_bars(frame, now, previous=previous)
            closes = {
                (sym, tf): close
                for sym, tf, close in (
                    checked.good.sort("ts").select("symbol", "timeframe", "close").iter_rows()
                )
            }
        if self.regular_hours and self._off_hours(checked.good):
            checked = quarantine_outside_hours(checked, self.regular_hours)
            closes = {
                key: close for key, close in closes.items() if key[0] not in self.regular_hours
            } | {
                (sym, tf): close
                for sym, tf, close in (
                    checked.good.sort("ts").select("symbol", "timeframe", "close").iter_rows()
                )
            }
        self.previous.update(closes)
        self._remember(checked.good)
        return checked

    def _off_hours(self, good: pl.DataFrame) -> bool:
        """Whether a bar of a symbol on an exchange calendar misses the regular sessions of
        its day (a cheap look at cached session windows; the shared rule then decides)."""
        assert self.regular_hours is not None
        for symbol, ts in good.select("symbol", "ts").iter_rows():
            calendar = self.regular_hours.get(symbol)
            if calendar in (None, CALENDAR_24_7, CALENDAR_24_5):
                continue
            day = ts.date()
            windows = self._windows.get((calendar, day))
            if windows is None:
                found = regular_sessions(calendar, day - timedelta(days=1), day + timedelta(days=1))
                windows = list(found.select("open", "close").iter_rows())
                self._windows[(calendar, day)] = windows
            if not any(o <= ts < c for o, c in windows):
                return True
        return False

    def _store(self, con: Any, frame: pl.DataFrame, now: datetime) -> pl.DataFrame:
        self._merge_outbox(con, now)
        checked = self._validate(con, frame, now)
        if checked.quarantine.height:
            write_quarantine(con, checked.quarantine, now)
        good = checked.good
        if good.height:
            try:
                # Autocommit: `con` must not be inside a transaction (a failed statement
                # would abort it).
                insert_new_bars(con, good, now)
            except duckdb.ConstraintException:
                # A bar stored before (a revision, a repeat): the upsert keeps one row.
                write_stream_bars(con, good, now)
        return good

    def _clean(
        self, rows: list[tuple[Any, ...]], now: datetime
    ) -> dict[tuple[str, str], float] | None:
        """The closes to remember when validate_bars would accept every row unchanged, else None."""
        last: dict[tuple[str, str], datetime] = {}
        ref: dict[tuple[str, str], float] = {}
        for sym, tf, ts, o, h, lo, c, v, _n, _vw, _src in rows:
            # The static rules are validate_bars' own, in their one-row form.
            if row_reason(BarRow(sym, tf, ts, o, h, lo, c, v), now) is not None:
                return None
            key = (sym, tf)
            if key in last and ts <= last[key]:
                return None  # a duplicate or out of order: validate_bars says which
            last[key] = ts
            before = ref.get(key, self.previous.get(key))
            if before is None and key not in self._seeded:
                return None  # no reference yet: let validate_bars judge
            if before and DEFAULT_JUMP_RULES.for_symbol(sym).classify(c / before) is not None:
                return None
            ref[key] = c
        return ref

    def _seed(self, con: Any, frame: pl.DataFrame, rows: list[tuple[Any, ...]] | None) -> None:
        """The newest stored close of each series of `frame` not seen yet (once per series)."""
        if rows is not None:
            series = {(r[0], r[1]) for r in rows}
        else:
            series = set(frame.select("symbol", "timeframe").iter_rows())
        missing = {k for k in series if k not in self._seeded and k[0] and k[1]}
        if not missing:
            return
        fresh = frame.filter(
            pl.struct("symbol", "timeframe").is_in(
                [{"symbol": s, "timeframe": tf} for s, tf in missing]
            )
        )
        for sym, tf, _ts, close in recent_closes(con, fresh).iter_rows():
            self.previous.setdefault((sym, tf), close)
        self._seeded |= missing

    def _remember(self, good: pl.DataFrame) -> None:
        if good.height == 0:
            return
        stamps = good.get_column("ts")
        parts = (
            [(stamps[0], good)]
            if stamps.n_unique() == 1
            else [(m, part) for (m,), part in good.group_by(["ts"])]
        )
        for minute, part in parts:
            assert isinstance(minute, datetime)
            old = self.recent.get(minute)
            self.recent[minute] = (
                part
                if old is None
                else pl.concat([old, part]).unique(["symbol", "timeframe"], keep="last")
            )
        if len(self.recent) > self.keep_minutes:
            for minute in sorted(self.recent)[: -self.keep_minutes]:
                del self.recent[minute]

    def _to_outbox(self, checked: ValidatedBars, now: datetime) -> None:
        assert self.outbox is not None
        for kind, part in (("bars", checked.good), ("quarantine", checked.quarantine)):
            if part.height:
                at = pl.lit(now).cast(pl.Datetime("us", "UTC")).alias("_at")
                Outbox(self.outbox).put(kind, part.with_columns(at))
        self.outboxed += checked.good.height

    def _merge_outbox(self, con: Any, now: datetime) -> int:
        """Store what a locked warehouse sent to the outbox (oldest first); returns bars merged.
        Files an earlier version left in outbox/bars are merged too."""
        if self.outbox is None:
            return 0
        kinds = ("bars", "quarantine")
        files = Outbox(self.outbox).waiting(kinds) + Outbox(self.outbox / "bars").waiting(kinds)
        if not files:
            return 0
        merged = 0
        with transaction(con):
            for kind, path in files:
                part = pl.read_parquet(path)
                at = part.get_column("_at")[0] if part.height else now
                part = part.drop("_at")
                if kind == "bars":
                    write_bars(con, part, at)
                    merged += part.height
                else:
                    write_quarantine(con, part, at)
        Outbox.done(path for _, path in files)
        log.info("merged %d outboxed bar(s) into the warehouse", merged)
        return merged


_NO_QUARANTINE = validate_bars(pl.DataFrame(schema=BAR_SCHEMA), datetime.now(UTC)).quarantine
