"""Secrets: canary keys never reach logs, flow parameters, artifacts, exceptions or the warehouse;
the repository holds nothing secret-shaped, and a planted key fails the scan.

The canaries are made at run time (nothing key-shaped is stored in the repository): an
Alpaca key pair of the real shapes (PK + 18, 40 mixed-case) and Reddit credentials. Two
flow runs use them -- a paper session against fake Alpaca servers that accept them, and
one whose keys the fake refuses -- and then everything those runs wrote is searched.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import shutil
import string
import subprocess
import sys
import traceback
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import polars as pl
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.logging.handlers import APILogWorker
from prefect.settings import get_current_settings

from adapters.alpaca import AlpacaAuthError
from core.configs import LiveTradingConfig
from core.settings import get_settings
from flows import wiring
from flows.cli import main
from flows.live_trading import live_trading
from tests.fakes.alpaca import FakeAlpacaRest
from tests.fakes.alpaca_stream import FakeAlpacaStreamServer
from tests.hardening.alpaca_keys import AlpacaKeyIdDetector, AlpacaSecretKeyDetector
from tests.hardening.secret_scan import REPO, TEST_FAKES, scan
from tests.hardening.trading_world import SYMBOLS, World, build_world
from tests.integration.test_live_paper import START, STREAM_FROM, MarketClock
from warehouse.bars import load_bars
from warehouse.db import connect

MINUTE = timedelta(minutes=1)


def random_text(alphabet: str, n: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


def alpaca_key_pair() -> tuple[str, str]:
    """A key id and secret of Alpaca's shapes, made now."""
    key = "PK" + random_text(string.ascii_uppercase + string.digits, 18)
    secret = (
        random_text(string.ascii_lowercase, 1)
        + random_text(string.ascii_uppercase, 1)
        + random_text(string.digits, 1)
        + random_text(string.ascii_letters + string.digits, 37)
    )
    return key, secret


# ---- the repository scan -----------------------------------------------------------


@pytest.mark.slow
def test_nothing_in_the_repository_matches_a_secret_pattern() -> None:
    findings = scan()
    assert [str(f) for f in findings] == []


def test_the_alpaca_rules_match_key_shapes_and_not_hashes_or_names() -> None:
    key, secret = alpaca_key_pair()
    key_rule = AlpacaKeyIdDetector.denylist[0]
    secret_rule = AlpacaSecretKeyDetector.denylist[0]
    assert key_rule.findall(f'APCA_API_KEY_ID="{key}"') == [key]
    assert key_rule.findall(f"id: AK{key[2:]}.") == [f"AK{key[2:]}"]
    assert secret_rule.findall(f"APCA_API_SECRET_KEY={secret}\n") == [secret]
    not_keys = [
        "PKG_CONFIG_PATH_FOR_TARGET_BUILDS",  # a name, not a key
        f"xPK{key[2:]}",  # inside a longer token
        "PK" + key[2:].lower(),
        hashlib.sha1(key.encode()).hexdigest(),  # a sha1: lower-case hex
        hashlib.sha1(key.encode()).hexdigest().upper(),  # upper-case only
        secret[:39],
    ]
    for text in not_keys:
        assert key_rule.findall(text) == [] and secret_rule.findall(text) == [], text
    # The test fakes the scan excuses have no key shape.
    for value in TEST_FAKES:
        assert key_rule.findall(value) == [] and secret_rule.findall(value) == []


def test_a_planted_key_fails_the_scan_naming_file_and_line_not_the_key(tmp_path: Path) -> None:
    key, secret = alpaca_key_pair()
    planted = tmp_path / "flows" / "wiring.py"
    planted.parent.mkdir()
    lines = (REPO / "flows" / "wiring.py").read_text().splitlines()
    lines.insert(40, f'DEBUG_KEY = "{key}"  # pragma: allowlist secret')
    planted.write_text("\n".join(lines) + "\n")
    (tmp_path / "deploy.env").write_text(f"TRADINGML_MODE=paper\nAPCA_API_SECRET_KEY={secret}\n")
    (tmp_path / "clean.py").write_text((REPO / "core" / "settings.py").read_text())

    run = subprocess.run(
        [sys.executable, "-m", "tests.hardening.secret_scan", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 1, output
    assert "flows/wiring.py:41: Alpaca API Key ID" in output
    assert "deploy.env:2: Alpaca API Secret Key" in output
    assert "clean.py" not in output
    assert key not in output and key[2:] not in output and secret not in output
    assert "2 finding(s)" in output


# ---- canaries through real runs ------------------------------------------------------


def canaries() -> dict[str, str]:
    key, secret = alpaca_key_pair()
    return {
        "APCA_API_KEY_ID": key,
        "APCA_API_SECRET_KEY": secret,
        "REDDIT_CLIENT_ID": random_text(string.ascii_letters + string.digits, 22),
        "REDDIT_CLIENT_SECRET": random_text(string.ascii_letters + string.digits, 30),
    }


def leaks(text: str, canary: dict[str, str]) -> list[str]:
    """The names of the canaries found in text (a fragment of 12 characters counts)."""
    return [
        name
        for name, value in canary.items()
        if any(value[i : i + 12] in text for i in range(0, len(value) - 11, 4))
    ]


class Everything(logging.Handler):
    """Every record any logger emits, message and traceback included."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("websockets.server"):
            return  # the fake Alpaca's side: it is sent the keys to check them
        self.lines.append(self.format(record) + repr(record.args))


@pytest.fixture
def all_logs() -> Iterator[Everything]:
    handler = Everything()
    root = logging.getLogger()
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("secrets"))


def prefect_database() -> list[Path]:
    """The harness's SQLite files (the database and its write-ahead log)."""
    url = str(get_current_settings().server.database.connection_url.get_secret_value())
    assert url.startswith("sqlite"), url
    db = Path(url.split(":///", 1)[1])
    assert db.is_file()
    return [p for p in (db, Path(f"{db}-wal")) if p.is_file()]


def prefect_records(run_id: UUID) -> list[str]:
    """What the Prefect API holds about a flow run: parameters, state, logs, artifacts."""
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
    assert logs, "the run's logs did not reach the API"
    return [
        run.model_dump_json(),
        *(log.model_dump_json() for log in logs),
        *(artifact.model_dump_json() for artifact in artifacts),
    ]


def warehouse_text(warehouse: Path) -> list[str]:
    """Every value of every VARCHAR or JSON column of every table."""
    out: list[str] = []
    with connect(warehouse) as con:
        columns = con.execute(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = 'main' AND data_type IN ('VARCHAR', 'JSON')"
            " AND table_name IN (SELECT table_name FROM information_schema.tables"
            "  WHERE table_type = 'BASE TABLE')"
        ).fetchall()
        assert len(columns) > 20
        for table, column in columns:
            rows = con.execute(
                f'SELECT DISTINCT CAST("{column}" AS VARCHAR) FROM "{table}"'
                f' WHERE "{column}" IS NOT NULL'
            ).fetchall()
            out.extend(str(r[0]) for r in rows)
    return out


@pytest.mark.slow
@pytest.mark.prefect
@pytest.mark.usefixtures("prefect_harness")
def test_canary_keys_never_leave_the_environment(
    world: World,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    all_logs: Everything,
    capfd: pytest.CaptureFixture[str],
) -> None:
    canary = canaries()
    key, secret = canary["APCA_API_KEY_ID"], canary["APCA_API_SECRET_KEY"]
    warehouse = tmp_path / "paper.duckdb"
    shutil.copy(world.warehouse, warehouse)
    with connect(warehouse) as con:
        bars = load_bars(con, SYMBOLS, "1Min", STREAM_FROM - MINUTE, STREAM_FROM + 10 * MINUTE)
        con.execute("DELETE FROM bars WHERE ts >= ?", [STREAM_FROM])
    assert bars.filter(pl.col("ts") == STREAM_FROM).height == len(SYMBOLS)
    for name, value in canary.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TRADINGML_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("TRADINGML_MODE", raising=False)
    config = LiveTradingConfig(mode="paper", warehouse=str(warehouse), max_minutes=4)
    errors: list[BaseException] = []

    # 1. A paper session on fakes that accept the canary keys: streams, decides, orders.
    with (
        FakeAlpacaRest(api_key=key, secret_key=secret) as rest,
        FakeAlpacaStreamServer(key, secret) as ws,
    ):
        monkeypatch.setenv("TRADINGML_ALPACA_BASE_URL", rest.base_url)
        monkeypatch.setenv("TRADINGML_ALPACA_STREAM_URL", f"ws://127.0.0.1:{ws.port}")
        get_settings.cache_clear()
        clock = MarketClock(START, bars, ws, rest)
        monkeypatch.setattr(wiring.INJECTED, "clock", lambda: clock)
        state: Any = live_trading(config, return_state=True)
        result = state.result()
        assert result["status"] == "traded" and result["decisions"] == 4
        assert all(r.authorized for r in rest.requests) and ws.auth_attempts[0].accepted
        assert rest.requests_to("/v2/orders", "POST"), "no order: the run touched too little"
        paper_run = state.state_details.flow_run_id

    # 2. The same canaries sent to a fake that expects other keys: a clear refusal.
    with FakeAlpacaRest() as other:
        monkeypatch.setenv("TRADINGML_ALPACA_BASE_URL", other.base_url)
        get_settings.cache_clear()
        monkeypatch.setattr(wiring.INJECTED, "clock", lambda: MarketClock(START, bars, ws, other))
        refused: Any = live_trading(config, return_state=True)
        assert refused.is_failed()
        with pytest.raises(AlpacaAuthError, match="set APCA_API_KEY_ID and APCA_API_SECRET_KEY"):
            refused.result()
        assert other.requests and not any(r.authorized for r in other.requests)
        try:
            refused.result()
        except AlpacaAuthError as err:
            errors.append(err)
        refused_run = refused.state_details.flow_run_id

    # 3. The CLI's settings view, and its refusal of a live start with the (paper) key.
    assert main(["settings"]) == 0
    monkeypatch.setenv("TRADINGML_MODE", "live")
    monkeypatch.setenv("TRADINGML_LIVE_TRADING_OPT_IN", "true")
    get_settings.cache_clear()
    assert main(["settings"]) != 0
    monkeypatch.delenv("TRADINGML_MODE")
    get_settings.cache_clear()
    cli = capfd.readouterr()
    assert "set (hidden)" in cli.out and "PK..." in cli.err

    APILogWorker.drain_all(timeout=10)
    texts: dict[str, list[str]] = {
        "logs": all_logs.lines,
        "stdout/stderr": [cli.out, cli.err],
        "exceptions": [
            "".join(traceback.format_exception(err)) + repr(err) + repr(err.args) for err in errors
        ],
        "prefect api": prefect_records(paper_run) + prefect_records(refused_run),
        "warehouse": warehouse_text(warehouse),
    }
    for where, found in texts.items():
        assert found, f"nothing read from {where}: the check would be empty"
        leaking = [text.split(" ", 2)[:2] for text in found if leaks(text, canary)]
        assert leaks("\n".join(found), canary) == [], (where, leaking)
    # Bytes on disk: the warehouse file, reports, outbox, locks; Prefect's database.
    files = [p for p in tmp_path.rglob("*") if p.is_file()] + prefect_database()
    assert any(p.suffix == ".html" for p in files), "the session wrote no report to search"
    for path in files:
        data = path.read_bytes().decode("utf-8", errors="replace")
        assert leaks(data, canary) == [], str(path)
    # The searches do find a canary where one is: the check is not blind.
    assert leaks(f"x{key}y", canary) == ["APCA_API_KEY_ID"]
