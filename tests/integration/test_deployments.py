"""prefect.yaml against a real local Prefect server: deploy everything, run a deployment on a worker."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from warehouse.db import connect

ROOT = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).with_name("prefect"))

pytestmark = [pytest.mark.slow, pytest.mark.prefect]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    home = tmp_path_factory.mktemp("prefect-server-home")
    port = _free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    }
    log = (home / "server.log").open("w")
    server = subprocess.Popen(
        [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((home / "server.log").read_text()[-2000:]) from None
                time.sleep(1)
        yield env
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def _prefect(env: dict[str, str], *args: str, timeout: float = 300) -> str:
    done = subprocess.run(
        [PREFECT, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"prefect {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_deploy_all_and_run_ingest_on_a_process_worker(
    prefect_server: dict[str, str], tmp_path: Path
) -> None:
    env = prefect_server
    _prefect(env, "work-pool", "create", "local", "--type", "process")
    out = _prefect(env, "--no-prompt", "deploy", "--all")
    for name in (
        "ingest-bars/ingest-bars",
        "ingest-bars/hourly",
        "ingest-bars/nightly-backfill",
        "scrape-reddit/every-15-minutes",
        "demo/demo",
    ):
        assert name in out, name

    warehouse = tmp_path / "deployed.duckdb"
    params = {"config": {"source": "arch", "start": "2018-01-01", "warehouse": str(warehouse)}}
    _prefect(env, "deployment", "run", "ingest-bars/ingest-bars", "--params", json.dumps(params))
    _prefect(env, "worker", "start", "--pool", "local", "--run-once", timeout=400)

    request = urllib.request.Request(
        env["PREFECT_API_URL"] + "/flow_runs/filter",
        data=b"{}",
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        runs = json.loads(reply.read())
    assert [(r["deployment_id"] is not None, r["state_type"]) for r in runs] == [
        (True, "COMPLETED")
    ]
    with connect(warehouse) as con:
        rows = con.execute(
            "SELECT symbol, count(*) FROM bars GROUP BY symbol ORDER BY symbol"
        ).fetchall()
    assert rows == [("^GSPC", 251), ("^IXIC", 251)]  # NYSE sessions in 2018


@pytest.mark.parametrize(
    ("deployment", "cron", "zone"),
    [
        ("ingest-bars/ingest-bars", "15 17 * * 1-5", "America/New_York"),
        ("ingest-bars/hourly", "5 * * * *", "UTC"),
        ("ingest-bars/nightly-backfill", "30 1 * * *", "America/New_York"),
        ("scrape-reddit/every-15-minutes", "*/15 * * * *", "UTC"),
    ],
)
def test_the_schedules_are_defined_but_off(
    prefect_server: dict[str, str], deployment: str, cron: str, zone: str
) -> None:
    out = _prefect(prefect_server, "deployment", "inspect", deployment)
    assert cron in out
    assert zone in out
    assert "'active': False" in out or '"active": false' in out
