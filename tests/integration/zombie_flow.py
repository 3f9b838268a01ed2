"""Deployment target of test_zombie_runs: a flow that records its process id and sleeps."""

from __future__ import annotations

import os
import time
from pathlib import Path

from prefect import flow


@flow(name="sleep-until-killed")
def sleep_until_killed(pid_file: str, seconds: float = 900) -> None:
    # The test kills this process (and its worker) by the id written here.
    Path(pid_file).write_text(str(os.getpid()))
    time.sleep(seconds)
