"""Live-trading sessions under faults: a silent data socket, two runs at once, the manual kill switch, a wrong clock.

Each test builds a small warehouse of its own (no training): synthetic SPY minute bars
and an untrained SPY agent whose `long` Q-value is lifted far above the others, so it
buys at its first decision and holds -- what it is allowed to do is then the risk
engine's alone. Paper sessions run alpaca-py's real clients against the fake Alpaca REST
and websocket servers, on a `Market` clock whose sleep() is the fake market moving on
(as in tests/integration/test_live_paper.py).
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl
import pytest
import torch

from adapters.alpaca_stream import GAP_FILL_SOURCE, AlpacaBarStream
from adapters.clock import ManualClock
from adapters.synthetic import SyntheticBarSource
from core.configs import LiveTradingConfig, RiskConfig
from core.settings import get_settings
from flows import wiring
from flows.live_trading import LiveTradingRefused, live_trading
from models.env import LONG
from models.features import FeatureScaler, FeatureSpec
from models.qnet import Architecture, NestedLSTMQNet
from models.registry import save_agent
from tests.fakes.alpaca import FakeAlpacaRest, fake_alpaca_rest  # noqa: F401
from tests.fakes.alpaca_stream import FakeAlpacaStreamServer, bar_messages
from trading.alerts import collected
from trading.live import LiveRunLockedError
from trading.risk import KILL_SWITCH_FILE, RiskEngine
from warehouse.bars import ingest_bar_frames, load_bars
from warehouse.db import connect
from warehouse.registry import promote, write_model

pytestmark = [pytest.mark.prefect, pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

NY = ZoneInfo("America/New_York")
MINUTE = timedelta(minutes=1)
KEY, SECRET = "fake-key-id", "fake-secret-key"  # what both fakes accept
MODEL_ID = "dqn-SPY-always-long"
DAY = date(2024, 7, 1)
OPEN = datetime(2024, 7, 1, 9, 30, tzinfo=NY).astimezone(UTC)


def build_warehouse(warehouse: Path, models: Path, start: date, end: date) -> str:
    """Synthetic SPY bars of the NYSE sessions in [start, end) and a promoted always-long SPY agent."""
    frames = SyntheticBarSource().fetch_bars(
        ["SPY"],
        "1Min",
        datetime(start.year, start.month, start.day, tzinfo=UTC),
        datetime(end.year, end.month, end.day, tzinfo=UTC),
    )
    assert ingest_bar_frames(frames, warehouse, datetime(2030, 1, 1, tzinfo=UTC)).inserted > 0
    torch.manual_seed(0)
    spec = FeatureSpec(symbols=("SPY",))
    n = len(spec.names())
    net = NestedLSTMQNet(n, Architecture(fast_hidden=8, slow_hidden=4, head_hidden=8))
    with torch.no_grad():
        net.advantage.bias[LONG] += 1_000.0  # whatever the features: `long` wins
    scaler = FeatureScaler(spec.names(), [0.0] * n, [1.0] * n)
    sha = save_agent(models / MODEL_ID, net, spec, scaler, {})
    with connect(warehouse) as con:
        write_model(
            con,
            {
                "model_id": MODEL_ID,
                "kind": "dqn",
                "symbol": "SPY",
                "feature_schema_hash": spec.schema_hash(),
                "architecture": net.arch.to_dict(),
                "params": {},
                "metrics": {"objective": 0.0},
                "artifact_path": str(models / MODEL_ID),
                "artifact_sha256": sha,
                "stage": "candidate",
                "created_at": datetime(2024, 6, 30, tzinfo=UTC),
                "promoted_at": None,
            },
        )
        assert promote(con, MODEL_ID, datetime(2024, 6, 30, tzinfo=UTC)) is None
    return MODEL_ID


@pytest.fixture(scope="module")
def small_warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two sessions (28 June, 1 July 2024) of synthetic SPY bars and the always-long agent."""
    tmp = tmp_path_factory.mktemp("session-faults")
    warehouse = tmp / "warehouse.duckdb"
    build_warehouse(warehouse, tmp / "models", date(2024, 6, 28), date(2024, 7, 2))
    return warehouse


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data folder of this test's own (run locks and the KILL_SWITCH file live there)."""
    folder = tmp_path / "data"
    monkeypatch.setenv("TRADINGML_DATA_DIR", str(folder))
    monkeypatch.delenv("TRADINGML_MODE", raising=False)
    get_settings.cache_clear()
    return folder


def query(warehouse: Path, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with connect(warehouse) as con:
        return con.execute(sql, params or []).fetchall()


def decisions_of(warehouse: Path, run_id: str) -> list[tuple[Any, ...]]:
    """(ts, action, risk verdict, risk reason) of every decision of a run."""
    return query(
        warehouse,
        "SELECT ts, action, risk_verdict, risk_reason FROM decisions WHERE run_id = ? ORDER BY ts",
        [run_id],
    )


def orders_of(warehouse: Path, run_id: str) -> list[tuple[Any, ...]]:
    """(decision ts, side, qty) of every order of a run."""
    return query(
        warehouse,
        "SELECT d.ts, o.side, o.qty FROM orders o JOIN decisions d USING (decision_id)"
        " WHERE d.run_id = ? ORDER BY d.ts",
        [run_id],
    )


# ---- paper sessions against the fakes -------------------------------------------------


class Market(ManualClock):
    """True time, and the fake market moving with it.

    For every minute boundary a sleep crosses, the bars of the minute that closed there go
    out on the fake stream (the fake REST's fill prices follow) -- unless that minute is in
    `silent`: then the open connections are muted instead (socket open, nothing sent).
    """

    def __init__(
        self,
        start: datetime,
        bars: pl.DataFrame,
        ws: FakeAlpacaStreamServer,
        rest: FakeAlpacaRest,
        silent: frozenset[datetime] = frozenset(),
    ) -> None:
        super().__init__(start)
        self.by_minute = {m: f for (m,), f in bars.group_by(["ts"], maintain_order=True)}
        self.ws, self.rest, self.silent = ws, rest, silent
        self.published: list[datetime] = []
        rest.set_now(self.now())
        for bar in bars.filter(pl.col("ts") + MINUTE <= self.now()).iter_rows(named=True):
            rest.set_price(bar["symbol"], bar["close"])

    def sleep(self, seconds: float) -> None:
        before = self.now()
        super().sleep(seconds)
        self.rest.set_now(self.now())
        boundary = before.replace(second=0, microsecond=0) + MINUTE
        while boundary <= self.now():
            self._publish(boundary - MINUTE)
            boundary += MINUTE

    def _publish(self, minute: datetime) -> None:
        frame = self.by_minute.get(minute)
        if frame is None:
            return
        self.ws.wait_subscribed("SPY", "/v2/iex", timeout=10.0)
        if minute in self.silent:
            assert self.ws.go_silent("/v2/iex") == 1  # the bars (not the trade updates)
            return
        for bar in frame.iter_rows(named=True):
            self.rest.set_price(bar["symbol"], bar["close"])
        assert self.ws.push_raw(bar_messages(frame), path="/v2/iex") == 1
        self.published.append(minute)


class SkewedClock:
    """This machine's clock: the true (market) time plus a constant error."""

    def __init__(self, true: Market, skew: timedelta) -> None:
        self.true, self.skew = true, skew

    def now(self) -> datetime:
        return self.true.now() + self.skew

    def sleep(self, seconds: float) -> None:
        self.true.sleep(seconds)


@dataclass
class Paper:
    """The fakes, a paper warehouse whose bars end before `stream_from`, and the bars to stream."""

    rest: FakeAlpacaRest
    ws: FakeAlpacaStreamServer
    warehouse: Path
    bars: pl.DataFrame
    stream_from: datetime
    streams: list[AlpacaBarStream] = field(default_factory=list)

    def config(self, **kw: Any) -> LiveTradingConfig:
        return LiveTradingConfig(mode="paper", warehouse=str(self.warehouse), **kw)


STREAM_FROM = OPEN + timedelta(minutes=40)


@pytest.fixture
def paper(
    small_warehouse: Path,
    fake_alpaca_rest: FakeAlpacaRest,  # noqa: F811
    data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Paper]:
    warehouse = tmp_path / "paper.duckdb"
    shutil.copy(small_warehouse, warehouse)
    with connect(warehouse) as con:
        bars = load_bars(con, ["SPY"], "1Min", STREAM_FROM - MINUTE, STREAM_FROM + 30 * MINUTE)
        con.execute("DELETE FROM bars WHERE ts >= ?", [STREAM_FROM])
    # The REST side has them too: what the stream's gap-fill fetches after a reconnect.
    fake_alpaca_rest.load_bars(bars)
    with FakeAlpacaStreamServer(KEY, SECRET) as ws:
        monkeypatch.setenv("APCA_API_KEY_ID", KEY)
        monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET)
        monkeypatch.setenv("TRADINGML_ALPACA_BASE_URL", fake_alpaca_rest.base_url)
        monkeypatch.setenv("TRADINGML_ALPACA_STREAM_URL", f"ws://127.0.0.1:{ws.port}")
        get_settings.cache_clear()
        yield Paper(fake_alpaca_rest, ws, warehouse, bars, STREAM_FROM)


def use_clock(
    monkeypatch: pytest.MonkeyPatch, clock: Any, paper: Paper, silence_timeout_s: float = 90.0
) -> None:
    """Hand the flow `clock`, and a stream whose watchdog waits `silence_timeout_s` (real seconds)."""
    real = wiring.real_adapters

    def build(settings: Any) -> Any:
        made = real(settings)
        stream = AlpacaBarStream(
            KEY,
            SECRET,
            stock_url=paper.ws.stock_url,
            crypto_url=paper.ws.crypto_url,
            gap_fill=made.bars,
            clock=made.clock,
            silence_timeout_s=silence_timeout_s,
        )
        paper.streams.append(stream)
        return replace(made, stream=stream)

    monkeypatch.setattr(wiring.INJECTED, "clock", lambda: clock)
    monkeypatch.setattr(wiring.INJECTED, "adapters", build)


# ---- 4: the data socket goes silent ---------------------------------------------------


def test_a_silent_stream_makes_trading_reduce_only_until_live_bars_flow_again(
    paper: Paper, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The run starts with no bar stored for the minute that just closed, so its first
    # decision waits for the stream -- which stays open but sends nothing from the start.
    with connect(paper.warehouse) as con:
        con.execute("DELETE FROM bars WHERE ts >= ?", [STREAM_FROM - MINUTE])
    silent = frozenset({STREAM_FROM})
    market = Market(STREAM_FROM + timedelta(seconds=20), paper.bars, paper.ws, paper.rest, silent)
    use_clock(monkeypatch, market, paper, silence_timeout_s=3.0)

    result = live_trading(paper.config(max_minutes=3))

    assert result["status"] == "traded"
    [stream] = paper.streams
    counters = stream.counters
    # The watchdog closed the silent socket, the stream reconnected and gap-filled.
    assert counters.silence_timeouts >= 1 and counters.reconnects >= 1
    assert counters.gap_filled >= 1
    assert paper.ws.connection_paths.count("/v2/iex") >= 2  # the bar stream reconnected
    # The minute sent while silent came back over REST and is marked as back-filled.
    sources = query(
        paper.warehouse,
        "SELECT ts, source FROM bars WHERE symbol = 'SPY' AND ts >= ? ORDER BY ts",
        [STREAM_FROM - MINUTE],
    )
    assert sources[0] == (STREAM_FROM, GAP_FILL_SOURCE)
    assert {s for _, s in sources[1:]} == {"alpaca"}
    assert market.published == [STREAM_FROM + MINUTE, STREAM_FROM + 2 * MINUTE]

    decisions = decisions_of(paper.warehouse, result["run_id"])
    assert [d[0] for d in decisions] == [STREAM_FROM + (i + 1) * MINUTE for i in range(3)]
    # On the back-filled bar: reduce-only, and the agent's buy is rejected with the reason.
    _, action, verdict, reason = decisions[0]
    assert (action, verdict) == ("long", "rejected")
    assert "reduce-only" in reason and "silent" in reason and "watchdog" in reason
    # Live bars again: trading resumes, the buy goes through.
    assert [d[1:] for d in decisions[1:]] == [("long", "accepted", None)] * 2
    orders = orders_of(paper.warehouse, result["run_id"])
    assert [(ts, side) for ts, side, _ in orders] == [(STREAM_FROM + 2 * MINUTE, "buy")]
    assert paper.rest.positions.get("SPY", 0.0) == orders[0][2]


# ---- 12: the local clock is 90 s off the broker's ----------------------------------------

START = STREAM_FROM + timedelta(seconds=20)
BEHIND = -timedelta(seconds=90)  # this machine's clock, against the broker's (true) time


def test_a_clock_90_s_off_the_brokers_is_refused_before_anything_is_traded(
    paper: Paper, monkeypatch: pytest.MonkeyPatch
) -> None:
    market = Market(START, paper.bars, paper.ws, paper.rest)
    use_clock(monkeypatch, SkewedClock(market, BEHIND), paper)

    with pytest.raises(LiveTradingRefused, match="max_clock_offset_s=30") as refused:
        live_trading(paper.config(max_minutes=3))  # the default threshold: 30 s

    message = str(refused.value)
    assert "90.0 s behind the broker's" in message and "NTP" in message
    assert paper.rest.requests_to("/v2/clock", "GET")  # the broker's clock was asked
    assert paper.rest.requests_to("/v2/orders", "POST") == []
    assert paper.ws.connection_count == 0
    assert query(paper.warehouse, "SELECT count(*) FROM decisions") == [(0,)]


def test_within_the_threshold_decisions_use_the_brokers_clock(
    paper: Paper, monkeypatch: pytest.MonkeyPatch
) -> None:
    market = Market(START, paper.bars, paper.ws, paper.rest)
    use_clock(monkeypatch, SkewedClock(market, BEHIND), paper)

    result = live_trading(paper.config(max_minutes=3, max_clock_offset_s=120.0))

    assert result["status"] == "traded"
    rows = query(
        paper.warehouse,
        "SELECT ts, created_at, action, risk_verdict FROM decisions WHERE run_id = ? ORDER BY ts",
        [result["run_id"]],
    )
    # Broker time: the bar that closed at the start, then one streamed bar a minute; on the
    # local clock (90 s behind) the run would have decided other minutes, at other times.
    assert [r[0] for r in rows] == [STREAM_FROM + i * MINUTE for i in range(3)]
    assert rows[0][1] == START
    assert all(timedelta(0) <= r[1] - r[0] <= timedelta(seconds=20) for r in rows)
    assert [r[2:] for r in rows] == [("long", "accepted")] * 3
    [order] = paper.rest.orders
    assert order["side"] == "buy" and order["client_order_id"]


# ---- 6: two live runs started together ---------------------------------------------------


def replay(warehouse: Path, **kw: Any) -> LiveTradingConfig:
    return LiveTradingConfig(mode="replay", replay_date=DAY, warehouse=str(warehouse), **kw)


def test_two_runs_started_together_only_one_trades(
    small_warehouse: Path, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flows.live_trading

    warehouse = tmp_path / "two-runs.duckdb"
    shutil.copy(small_warehouse, warehouse)

    # Two configs (other cash, so other run ids), started at one barrier. The run that gets
    # the lock waits in its session until the other has finished, so the two overlap
    # whatever the scheduling; with a broken lock both would wait, then both trade.
    real_session = flows.live_trading._run_session
    finished = threading.Event()
    entered: list[str] = []

    def held_session(config: LiveTradingConfig, mode: str, run_id: str, *a: Any) -> Any:
        entered.append(run_id)
        finished.wait(timeout=30)
        return real_session(config, mode, run_id, *a)

    monkeypatch.setattr("flows.live_trading._run_session", held_session)
    configs = [replay(warehouse, max_minutes=5, cash=c) for c in (50_000.0, 60_000.0)]
    start = threading.Barrier(2)
    outcomes: dict[int, Any] = {}

    def run(i: int) -> None:
        start.wait()
        try:
            outcomes[i] = live_trading(configs[i])
        except Exception as err:  # noqa: BLE001 -- the outcome under test
            outcomes[i] = err
            finished.set()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)

    traded = [o for o in outcomes.values() if isinstance(o, dict)]
    failed = [o for o in outcomes.values() if isinstance(o, BaseException)]
    assert len(traded) == 1 and len(failed) == 1, outcomes
    [winner], [loser] = traded, failed
    assert isinstance(loser, LiveRunLockedError)
    lock = data_dir / "live-trading-SPY.lock"
    assert str(lock) in str(loser) and "one run at a time" in str(loser)
    assert entered == [winner["run_id"]]
    assert winner["decisions"] == 5 and winner["orders"] == 1
    decided = query(warehouse, "SELECT DISTINCT run_id FROM decisions")
    assert decided == [(winner["run_id"],)]
    ordered = query(
        warehouse, "SELECT DISTINCT d.run_id FROM orders o JOIN decisions d USING (decision_id)"
    )
    assert ordered == [(winner["run_id"],)]


# ---- 9: the manual kill switch ----------------------------------------------------------


def test_the_manual_kill_switch_file_stops_new_risk_until_it_is_deleted(
    small_warehouse: Path, data_dir: Path, tmp_path: Path
) -> None:
    warehouse = tmp_path / "kill.duckdb"
    shutil.copy(small_warehouse, warehouse)
    switch = data_dir / KILL_SWITCH_FILE
    data_dir.mkdir(parents=True, exist_ok=True)
    switch.touch()

    with collected() as alerts:
        killed = live_trading(replay(warehouse, max_minutes=4))
    # The session told someone, once: the alert (a Prefect event in the flow) names the file.
    assert [(a.event, a.subject, a.details["switch"]) for a in alerts] == [
        ("kill-switch.engaged", "SPY", "manual")
    ]
    assert str(switch) in alerts[0].message

    decisions = decisions_of(warehouse, killed["run_id"])
    assert len(decisions) == 4 and killed["orders"] == 0
    for _, action, verdict, reason in decisions:
        assert (action, verdict) == ("long", "rejected")
        assert f"manual kill switch: {switch} exists" in reason
        assert "delete the file to clear it" in reason and "reduce-only" in reason
    assert orders_of(warehouse, killed["run_id"]) == []

    switch.unlink()
    cleared = live_trading(replay(warehouse, max_minutes=4, cash=90_000.0))
    assert [o[1] for o in orders_of(warehouse, cleared["run_id"])] == ["buy"]
    assert {d[2] for d in decisions_of(warehouse, cleared["run_id"])} == {"accepted"}


def test_the_kill_switch_engaged_mid_session_flattens_the_position(
    small_warehouse: Path, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    warehouse = tmp_path / "flatten.duckdb"
    shutil.copy(small_warehouse, warehouse)
    switch = data_dir / KILL_SWITCH_FILE
    real_check = RiskEngine.check
    calls: list[int] = []

    def check(self: RiskEngine, **kw: Any) -> Any:
        calls.append(1)
        if len(calls) == 3:  # an operator engages the switch before the third decision
            switch.parent.mkdir(parents=True, exist_ok=True)
            switch.touch()
        return real_check(self, **kw)

    monkeypatch.setattr(RiskEngine, "check", check)
    # Half the position limit in cash: no order but the kill switch's can change the position.
    config = replay(warehouse, max_minutes=5, cash=50_000.0, risk=RiskConfig(kill_action="flatten"))

    result = live_trading(config)

    decisions = decisions_of(warehouse, result["run_id"])
    # From the third decision on, the agent's `long` is cut to flat.
    assert [d[1:3] for d in decisions] == [("long", "accepted")] * 2 + [("long", "reduced")] * 3
    assert all("manual kill switch" in d[3] and "flatten" in d[3] for d in decisions[2:])
    orders = orders_of(warehouse, result["run_id"])
    assert [(ts, side) for ts, side, _ in orders] == [
        (decisions[0][0], "buy"),
        (decisions[2][0], "sell"),
    ]
    assert orders[0][2] == orders[1][2] > 0
    fills = query(
        warehouse,
        "SELECT f.side, f.qty FROM fills f JOIN orders o USING (client_order_id)"
        " JOIN decisions d ON d.decision_id = o.decision_id WHERE d.run_id = ?",
        [result["run_id"]],
    )
    assert sum(q if s == "buy" else -q for s, q in fills) == 0  # flat again


def test_a_restart_mid_day_keeps_the_days_loss_limit(
    small_warehouse: Path, data_dir: Path, tmp_path: Path
) -> None:
    """A restarted run measures the daily loss from the day's first recorded equity, not from
    its own start: a restart neither lifts a tripped switch nor grants a fresh loss budget."""
    warehouse = tmp_path / "restart.duckdb"
    shutil.copy(small_warehouse, warehouse)
    config = replay(warehouse, max_minutes=4, cash=90_000.0)
    first = live_trading(config)
    assert [o[1] for o in orders_of(warehouse, first["run_id"])] == ["buy"]
    account = first["account"]
    # As if the account had started the day at twice its equity: down 50% by now.
    with connect(warehouse) as con:
        con.execute(
            "UPDATE equity SET equity = 2 * equity WHERE account = ?"
            " AND ts = (SELECT min(ts) FROM equity WHERE account = ?)",
            [account, account],
        )

    again = live_trading(config)

    assert again["run_id"] == first["run_id"]
    decisions = decisions_of(warehouse, again["run_id"])
    assert len(decisions) == 4
    for _, action, verdict, reason in decisions:
        assert (action, verdict) == ("long", "rejected")
        assert "kill switch: day loss" in reason and "reduce-only" in reason

    # The control: without the day's record the same restart buys.
    with connect(warehouse) as con:
        con.execute("DELETE FROM equity WHERE account = ?", [account])
    live_trading(config)
    assert {d[2] for d in decisions_of(warehouse, again["run_id"])} == {"accepted"}
