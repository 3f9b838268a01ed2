"""A run killed with its worker becomes Crashed (heartbeats + the zombie automation), not RUNNING."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.events.schemas.automations import EventTrigger

from flows.automations import AUTOMATIONS_FILE, load_automations
from tests.prefect_server import PREFECT, ROOT, api, prefect_cli, running_prefect_server

# Prefect's minimum (flows.heartbeat_frequency has ge=30); prefect.yaml and serve.sh use it too.
HEARTBEAT_SECONDS = 30
ZOMBIE_AUTOMATION = "crash-zombie-flow-runs"


def _zombie_trigger_within() -> timedelta:
    [automation] = [a for a in load_automations() if a.name == ZOMBIE_AUTOMATION]
    assert isinstance(automation.trigger, EventTrigger)
    return automation.trigger.within


def test_every_deployment_beats_often_enough_for_the_zombie_automation() -> None:
    deployments = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
    beats = {
        d["name"]: d["work_pool"]
        .get("job_variables", {})
        .get("env", {})
        .get("PREFECT_FLOWS_HEARTBEAT_FREQUENCY")
        for d in deployments
    }
    assert beats == {name: str(HEARTBEAT_SECONDS) for name in beats}
    assert (
        f"PREFECT_FLOWS_HEARTBEAT_FREQUENCY={HEARTBEAT_SECONDS}"
        in (ROOT / "scripts" / "serve.sh").read_text()
    )
    # Three heartbeats may go missing (a busy event loop, a slow server) before a crash.
    assert _zombie_trigger_within() >= timedelta(seconds=3 * HEARTBEAT_SECONDS)


def _project_job_variables() -> dict[str, Any]:
    """The job variables that every deployment of prefect.yaml runs with."""
    project = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    job_variables: dict[str, Any] = project["definitions"]["work_pools"]["local"]["job_variables"]
    return job_variables


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A local server, a process pool `zombies` and a deployment of a sleeping flow on it.

    The deployment gets prefect.yaml's job variables (the heartbeat setting), so the runs
    beat as often as the project's own deployments do.
    """
    with running_prefect_server(tmp_path_factory.mktemp("zombie-server-home")) as env:
        prefect_cli(env, "work-pool", "create", "zombies", "--type", "process")
        project = tmp_path_factory.mktemp("zombie-project") / "prefect.yaml"
        workdir = {"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}
        sleeper = {
            "name": "sleeper",
            "entrypoint": "tests/integration/zombie_flow.py:sleep_until_killed",
            "work_pool": {"name": "zombies", "job_variables": _project_job_variables()},
        }
        project.write_text(
            yaml.safe_dump(
                {"build": None, "push": None, "pull": [workdir], "deployments": [sleeper]}
            )
        )
        prefect_cli(env, "--no-prompt", "deploy", "--all", "--prefect-file", str(project))
        yield env


def _apply_automations(env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "flows.automations", str(AUTOMATIONS_FILE)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _heartbeats_of(env: dict[str, str], run_id: str) -> list[datetime]:
    """When each heartbeat event of the run occurred, oldest first."""
    reply = api(
        env,
        "/events/filter",
        {
            "filter": {
                "event": {"name": ["prefect.flow-run.heartbeat"]},
                "resource": {"id": [f"prefect.flow-run.{run_id}"]},
                "order": "ASC",
            },
            "limit": 50,
        },
    )
    return [datetime.fromisoformat(e["occurred"]) for e in reply["events"]]


def _start_sleeper(env: dict[str, str], pid_file: Path) -> str:
    """A run of the sleeping deployment, scheduled now; its id."""
    out = prefect_cli(
        env,
        "deployment",
        "run",
        "sleep-until-killed/sleeper",
        "--params",
        json.dumps({"pid_file": str(pid_file)}),
    )
    found = re.search(r"UUID: ([0-9a-f-]{36})", out)
    assert found, out
    return found.group(1)


def _state(env: dict[str, str], run_id: str) -> str:
    return str(api(env, f"/flow_runs/{run_id}")["state_type"])


def _kill_group_of(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(os.getpgid(pid), signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.prefect
def test_a_run_killed_with_its_worker_becomes_crashed_and_a_live_one_does_not(
    server: dict[str, str], tmp_path: Path
) -> None:
    env = server
    assert f"automation {ZOMBIE_AUTOMATION}: created" in _apply_automations(env)
    # Applied again by the next `make serve`: updated in place, not duplicated.
    assert f"automation {ZOMBIE_AUTOMATION}: updated" in _apply_automations(env)
    assert [a["name"] for a in api(env, "/automations/filter", {})] == [ZOMBIE_AUTOMATION]
    within = _zombie_trigger_within()

    pids = {"live": tmp_path / "live.pid", "killed": tmp_path / "killed.pid"}
    runs = {name: _start_sleeper(env, pid_file) for name, pid_file in pids.items()}
    log = (tmp_path / "worker.log").open("w")
    worker = subprocess.Popen(
        [PREFECT, "worker", "start", "--pool", "zombies"],
        # Without serve.sh's heartbeat setting: the deployment's job variables must do.
        env={k: v for k, v in env.items() if k != "PREFECT_FLOWS_HEARTBEAT_FREQUENCY"},
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        # The automation starts watching a run at its first heartbeat, sent once it runs.
        while not all(
            pids[name].exists() and _state(env, run) == "RUNNING" and _heartbeats_of(env, run)
            for name, run in runs.items()
        ):
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()[-3000:]
            time.sleep(1)
        # Flow runs get process groups of their own. Kill the worker's and one run's, as a
        # lost machine or the OOM killer would: nothing is left to report that run's end.
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)
        _kill_group_of(int(pids["killed"].read_text()))
        killed = time.monotonic()
        assert _state(env, runs["killed"]) == "RUNNING"

        # Crashed one `within` after its last heartbeat, plus the trigger service's 5 s tick.
        deadline = killed + within.total_seconds() + 60
        while (run := api(env, f"/flow_runs/{runs['killed']}"))["state_type"] == "RUNNING":
            assert time.monotonic() < deadline, f"still RUNNING {time.monotonic() - killed:.0f} s"
            time.sleep(2)
        assert run["state_type"] == "CRASHED"
        assert "No heartbeat" in run["state"]["message"]

        # The live run, alone since its worker died, beats every 30 s and is left alone:
        # checked past the moment its first heartbeat alone would have let it be crashed.
        first_beat = _heartbeats_of(env, runs["live"])[0]
        time.sleep(
            max(
                0.0,
                (first_beat + within + timedelta(seconds=10) - datetime.now(UTC)).total_seconds(),
            )
        )
        assert _state(env, runs["live"]) == "RUNNING"
        assert len(_heartbeats_of(env, runs["live"])) >= within // timedelta(
            seconds=HEARTBEAT_SECONDS
        )
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)
        log.close()
        for pid_file in pids.values():
            if pid_file.exists():
                _kill_group_of(int(pid_file.read_text()))
