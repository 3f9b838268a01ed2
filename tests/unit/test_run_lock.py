"""trading.live.run_lock: one live run at a time, and a loser told who holds the lock."""

from __future__ import annotations

import multiprocessing
import os
from multiprocessing.connection import Connection
from pathlib import Path

import pytest

from trading.live import LiveRunLockedError, run_lock


def hold(lock: Path, conn: Connection) -> None:
    with run_lock(lock):
        conn.send("held")
        conn.recv()
    conn.send("released")
    # Straight out: a fork of a long test session inherits its multiprocessing finalizers
    # (pools, trackers of earlier tests), whose clean-up at a normal exit is not ours to test.
    os._exit(0)


def test_a_second_run_in_this_process_is_refused_naming_the_holder(tmp_path: Path) -> None:
    lock = tmp_path / "locks" / "live-trading-SPY.lock"
    with run_lock(lock):
        assert lock.read_text() == f"pid {os.getpid()}"
        with pytest.raises(LiveRunLockedError) as refused, run_lock(lock):
            pytest.fail("two runs held the lock")
    message = str(refused.value)
    assert str(lock) in message and f"(pid {os.getpid()})" in message
    assert "one run at a time" in message
    # Released on exit: the next run gets it.
    with run_lock(lock):
        pass


def test_a_run_in_another_process_is_named_and_released_when_it_ends(tmp_path: Path) -> None:
    lock = tmp_path / "live-trading-BTC-USD.lock"
    # Fork: the child has trading.live imported already (a fresh interpreter takes seconds).
    fork = multiprocessing.get_context("fork")
    ours, theirs = fork.Pipe()
    holder = fork.Process(target=hold, args=(lock, theirs))
    holder.start()
    try:
        assert ours.poll(30) and ours.recv() == "held"
        named = rf"\(pid {holder.pid}\); one run at a time"
        with pytest.raises(LiveRunLockedError, match=named), run_lock(lock):
            pytest.fail("two runs held the lock")
    finally:
        ours.send("done")
        released = ours.poll(30) and ours.recv() == "released"
        holder.join(timeout=30)
    assert released and holder.exitcode == 0
    with run_lock(lock):
        assert lock.read_text() == f"pid {os.getpid()}"
