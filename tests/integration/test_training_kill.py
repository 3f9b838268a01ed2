"""kill -9 during training: the rerun resumes from the last complete checkpoint and ends bit-identical."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from models.dqn import DQNParams, latest_checkpoint
from models.env import Costs
from models.train import train_dqn
from tests.unit.test_agent import SMALL, random_sessions

ROOT = Path(__file__).resolve().parents[2]
PARAMS = dict(
    cycles=800, train_every=4, batch_sessions=4, checkpoint_every=40, target_update_every=3
)
SCRIPT = f"""
import sys
from pathlib import Path
from models.dqn import DQNParams
from models.env import Costs
from models.train import train_dqn
from tests.unit.test_agent import SMALL, random_sessions
train_dqn(random_sessions(n=8, t=40, seed=3), SMALL, DQNParams(**{PARAMS!r}), Costs(), seed=5,
          checkpoint_dir=Path(sys.argv[1]), resume=True)
print("finished", flush=True)
"""


def _train_in_subprocess(ckpt: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(ckpt)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.slow
def test_kill_9_mid_training_then_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    victim = _train_in_subprocess(ckpt)
    deadline = time.monotonic() + 120
    while latest_checkpoint(ckpt) is None:
        assert victim.poll() is None, f"training ended before its first checkpoint: {victim.stdout}"
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.01)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    killed_at = latest_checkpoint(ckpt)
    assert killed_at is not None
    cycle = int(killed_at.name.split("-")[1])
    assert 0 < cycle < PARAMS["cycles"], "the kill came too late to interrupt anything"

    survivor = _train_in_subprocess(ckpt)
    out, _ = survivor.communicate(timeout=300)
    assert survivor.returncode == 0 and "finished" in out, out

    straight, _ = train_dqn(
        random_sessions(n=8, t=40, seed=3), SMALL, DQNParams(**PARAMS), Costs(), seed=5
    )  # type: ignore[arg-type]
    final = latest_checkpoint(ckpt)
    assert final is not None and final.name == f"cycle-{PARAMS['cycles']:07d}"
    resumed = load_file(final / "online.safetensors")
    for name, tensor in straight.online.state_dict().items():
        assert torch.equal(tensor, resumed[name]), name
