"""Alerts: kill switch, stale stream, reconciliation difference, refused start and gate verdicts
are sent (trading.alerts), become Prefect events, and the automation notifies a webhook."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from adapters.protocols import Account, Position
from tests.prefect_server import ROOT, api, running_prefect_server
from trading.alerts import EVENTS, Alert, collected, send, subscribed
from trading.engine import Book
from trading.reconcile import reconcile
from trading.risk import RiskEngine, RiskLimits

NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


def _check(risk: RiskEngine, equity: float, minute: int = 0) -> None:
    now = NOW + timedelta(minutes=minute)
    risk.check(
        now=now,
        bar_close=now,
        q_values=[0.0, 1.0],
        current_qty=0.0,
        target_qty=10.0,
        price=100.0,
        equity=equity,
    )


def test_a_kill_switch_alerts_once_each_time_it_engages(tmp_path: Path) -> None:
    risk = RiskEngine(RiskLimits(daily_loss_limit=0.03), kill_file=tmp_path / "KILL_SWITCH")
    risk.alert_as = "SPY"
    with collected() as alerts:
        risk.start_day(NOW.date(), 100_000.0)
        _check(risk, 99_000.0)
        assert alerts == []
        _check(risk, 96_500.0, 1)  # 3.5% down: the daily-loss switch engages
        _check(risk, 96_000.0, 2)  # still engaged: no second alert
        (tmp_path / "KILL_SWITCH").touch()
        _check(risk, 96_000.0, 3)
        _check(risk, 96_000.0, 4)
        (tmp_path / "KILL_SWITCH").unlink()
        _check(risk, 96_000.0, 5)
        (tmp_path / "KILL_SWITCH").touch()
        _check(risk, 96_000.0, 6)  # engaged again: alerts again
    assert [(a.event, a.subject, a.details["switch"]) for a in alerts] == [
        ("kill-switch.engaged", "SPY", "daily-loss"),
        ("kill-switch.engaged", "SPY", "manual"),
        ("kill-switch.engaged", "SPY", "manual"),
    ]
    assert "day loss 3.50% >= 3.00%" in alerts[0].message
    assert "reduce-only until the next trading day" in alerts[0].message
    assert "delete the file" in alerts[1].message

    # A backtest's risk engine (no alert_as) trips the same switch and tells nobody.
    quiet = RiskEngine(RiskLimits(daily_loss_limit=0.03))
    with collected() as none:
        quiet.start_day(NOW.date(), 100_000.0)
        _check(quiet, 90_000.0)
    assert quiet.killed and none == []


class _Broker:
    """What reconcile reads of a broker: positions and the account."""

    def __init__(self, qty: dict[str, float], cash: float) -> None:
        self.qty, self.cash = qty, cash

    def get_positions(self) -> list[Position]:
        return [Position(s, q, 100.0, 100.0 * q) for s, q in self.qty.items()]

    def get_account(self) -> Account:
        return Account(cash=self.cash, equity=self.cash, buying_power=self.cash)


class _Ledger:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def event(self, row: dict[str, Any]) -> None:
        self.events.append(row)


def test_a_reconciliation_difference_alerts_with_what_differed() -> None:
    book = Book(cash=10_000.0, qty={"SPY": 5.0})
    ledger = _Ledger()
    with collected() as alerts:
        found = reconcile(
            book,
            _Broker({"SPY": 3.0}, 10_200.0),  # type: ignore[arg-type]
            ledger,  # type: ignore[arg-type]
            account="paper",
            run_id="r1",
            now=NOW,
        )
        # Agreeing now: the next reconciliation finds nothing and says nothing.
        again = reconcile(
            book,
            _Broker({"SPY": 3.0}, 10_200.0),  # type: ignore[arg-type]
            ledger,  # type: ignore[arg-type]
            account="paper",
            run_id="r1",
            now=NOW,
        )
    assert (found, again) == (2, 0)
    [alert] = alerts
    assert (alert.event, alert.subject) == ("reconcile.difference", "paper")
    assert alert.details["differences"] == [
        "SPY: ours 5, the broker's 3",
        "cash: ours 10,000.00, the broker's 10,200.00",
    ]
    assert len(ledger.events) == 2


def test_another_flows_positions_on_the_account_are_no_difference_and_a_hand_trade_still_is() -> (
    None
):
    """live-trading (SPY) and crypto-trading (BTC) on one paper account: each reconciles its
    own symbols; the other's position, explained by the account's stored fills, and the cash
    it moved are adopted without a difference; a position no stored fill explains alerts."""
    spy_book = Book(cash=10_000.0, qty={"SPY": 5.0})
    ledger = _Ledger()
    stored = {"SPY": 5.0, "BTC/USD": 0.1}  # every run's fills on the account, net
    asked: list[int] = []

    def others() -> dict[str, float]:
        asked.append(1)
        return stored

    def spy_reconcile(broker: _Broker) -> int:
        return reconcile(
            spy_book,
            broker,  # type: ignore[arg-type]
            ledger,  # type: ignore[arg-type]
            account="paper",
            run_id="spy",
            now=NOW,
            own={"SPY"},
            others=others,
        )

    with collected() as alerts:
        # The coins' flow bought 0.1 BTC for 5,000: cash moved with it.
        assert spy_reconcile(_Broker({"SPY": 5.0, "BTC/USD": 0.1}, 5_000.0)) == 0
        assert spy_book.qty["BTC/USD"] == 0.1 and spy_book.cash == 5_000.0
        # Nothing moved: the stored fills are not even read.
        assert spy_reconcile(_Broker({"SPY": 5.0, "BTC/USD": 0.1}, 5_000.0)) == 0
        assert len(asked) == 1
        # 7 QQQ bought by hand: no stored fill explains them -- a difference, as before.
        assert spy_reconcile(_Broker({"SPY": 5.0, "BTC/USD": 0.1, "QQQ": 7.0}, 4_300.0)) == 2
        # The warehouse locked: BTC's new quantity waits for the next reconciliation.
        assert (
            reconcile(
                spy_book,
                _Broker({"SPY": 5.0, "BTC/USD": 0.3}, 3_000.0),  # type: ignore[arg-type]
                ledger,  # type: ignore[arg-type]
                account="paper",
                run_id="spy",
                now=NOW,
                own={"SPY"},
                others=lambda: None,
            )
            == 0
        )
        assert spy_book.qty["BTC/USD"] == 0.1 and spy_book.cash == 3_000.0
    [alert] = alerts
    assert alert.details["differences"] == [
        "QQQ: ours 0, the broker's 7",
        "cash: ours 5,000.00, the broker's 4,300.00",
    ]
    assert [e["symbol"] for e in ledger.events] == ["QQQ", None]
    # Without `own` (one flow on the account) every difference counts, as before.
    lone = Book(cash=10_000.0, qty={"SPY": 5.0})
    found = reconcile(
        lone,
        _Broker({"SPY": 5.0, "BTC/USD": 0.1}, 5_000.0),  # type: ignore[arg-type]
        ledger,  # type: ignore[arg-type]
        account="paper",
        run_id="lone",
        now=NOW,
    )
    assert found == 2


def test_a_failing_sink_never_stops_the_sender_and_unknown_events_are_refused() -> None:
    def broken(alert: Alert) -> None:
        raise RuntimeError("notification service down")

    with subscribed(broken), collected() as alerts:
        send(Alert("stream.stale", "SPY", "no bar for 150 s"))
    assert [a.event for a in alerts] == ["stream.stale"]
    with pytest.raises(ValueError, match="unknown alert"):
        Alert("stream.gone", "SPY", "?")


@pytest.mark.prefect
def test_stale_and_live_stream_alert_once_per_change(prefect_harness: None) -> None:
    from prefect import flow

    from trading.session import follow_stream_health

    class Stream:
        stale_reason: str | None = None

    stream = Stream()
    risks = [RiskEngine(alert_as="BTC/USD"), RiskEngine(alert_as="ETH/USD")]

    @flow
    def watch() -> None:
        follow_stream_health(stream, risks)  # live: nothing changes
        stream.stale_reason = "no bar for 150 s"
        follow_stream_health(stream, risks)
        follow_stream_health(stream, risks)  # still stale: once
        stream.stale_reason = None
        follow_stream_health(stream, risks)

    with collected() as alerts:
        watch()
    assert [(a.event, a.subject) for a in alerts] == [
        ("stream.stale", "BTC/USD,ETH/USD"),
        ("stream.live", "BTC/USD,ETH/USD"),
    ]
    assert alerts[0].details["reason"] == "no bar for 150 s"


# ------------------------------------------------------------ the server, the automation, a webhook


class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        _Hook.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[str]:
    _Hook.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/alerts"
    finally:
        server.shutdown()


def _python(env: dict[str, str], code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )


def _apply(env: dict[str, str]) -> str:
    done = _python(env, "import sys; from flows.automations import main; sys.exit(main())")
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.slow
@pytest.mark.prefect
def test_a_refused_start_reaches_the_webhook_through_the_automation(
    tmp_path: Path, webhook: str
) -> None:
    home = tmp_path / "prefect-home"
    home.mkdir()
    with running_prefect_server(home) as env:
        env = {**env, "TRADINGML_DATA_DIR": str(tmp_path / "data"), "TRADINGML_MODE": "replay"}
        # Without the notification block the automation is skipped, and says how to fix it.
        out = _apply(env)
        assert "automation crash-zombie-flow-runs: created" in out
        assert "automation notify-on-trading-alerts: skipped" in out
        assert "README, 'Alerts'" in out

        made = _python(
            env,
            "from prefect.blocks.notifications import CustomWebhookNotificationBlock as B; "
            f"B(name='tradingml', url={webhook!r}, "
            "json_data={'subject': '{{subject}}', 'text': '{{body}}'}).save('tradingml-alerts')",
        )
        assert made.returncode == 0, made.stderr
        assert "automation notify-on-trading-alerts: created" in _apply(env)

        # A real live-trading run on a warehouse with no model: refused, as a user would see.
        run = _python(
            env,
            "from core.configs import LiveTradingConfig\n"
            "from flows.live_trading import live_trading\n"
            f"live_trading(LiveTradingConfig(warehouse={str(tmp_path / 'empty.duckdb')!r}))",
        )
        assert run.returncode != 0
        assert "LiveTradingRefused" in run.stderr

        deadline = time.monotonic() + 90
        while not _Hook.received:
            assert time.monotonic() < deadline, "no notification reached the webhook in 90 s"
            time.sleep(1)
        [note] = _Hook.received
        assert note["subject"] == "tradingml.start.refused: SPY"
        assert "no production" in note["text"], note

        # Stored too (the server writes events in batches): the UI's event feed shows it.
        query = {"filter": {"event": {"name": ["tradingml.start.refused"]}}, "limit": 5}
        while not (events := api(env, "/events/filter", query)["events"]):
            assert time.monotonic() < deadline + 30, "the event was never stored"
            time.sleep(1)
        [event] = events
        assert event["resource"]["prefect.resource.id"] == "tradingml.subject.SPY"
        assert event["payload"]["error"] == "LiveTradingRefused"
        # Related to the flow run it happened in: the UI shows it on that run's page.
        roles = {r["prefect.resource.role"] for r in event["related"]}
        assert "flow-run" in roles, event["related"]


def test_every_alert_is_matched_by_the_notification_automation() -> None:
    from prefect.events.schemas.automations import EventTrigger

    from flows.automations import load_automations

    [notify] = [a for a in load_automations() if a.name == "notify-on-trading-alerts"]
    assert isinstance(notify.trigger, EventTrigger)
    assert set(notify.trigger.expect) == {f"tradingml.{e}" for e in EVENTS}
