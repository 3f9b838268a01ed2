"""Threads per parallel task: the worker's share of the cores, never every core per task.

Two trainings side by side, each letting torch use every core, slow each other far more than
twice (the threads of both contend for the same cores): on a 2-core machine the 1000-cycle
training took ~14 s alone and 275-394 s beside the test suite and another training. A
parallel task therefore runs with cores // tasks-at-once threads. The flow chooses the count
and hands it to every task, so the thread, process and Dask runners train with the same
count and a seed's weights do not depend on the runner.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity; cgroup-restricted containers included)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no sched_getaffinity (macOS): every core the OS reports
        return max(1, os.cpu_count() or 1)


def task_threads(tasks_at_once: int, cores: int | None = None) -> int:
    """Threads for each of `tasks_at_once` tasks sharing `cores` (default: this machine's)."""
    if tasks_at_once < 1:
        raise ValueError(f"tasks_at_once must be >= 1, got {tasks_at_once}")
    return max(1, (available_cores() if cores is None else cores) // tasks_at_once)


def runner_threads(workers: int, on_cluster: bool, explicit: int | None = None) -> int:
    """The one thread count a flow hands every parallel task: `explicit` when set; 1 on an
    existing Dask cluster (Dask's own rule: its nanny starts workers with OMP_NUM_THREADS=1);
    else this machine's cores shared by the `workers` tasks that run at once."""
    if explicit is not None:
        return explicit
    return 1 if on_cluster else task_threads(workers)


def use_threads(threads: int) -> int:
    """Run torch's intra-op work on `threads` threads; returns the count set."""
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    return threads


@contextmanager
def threads_for_tasks(tasks_at_once: int) -> Iterator[int]:
    """Within the block torch uses task_threads(tasks_at_once) threads (per calling thread, so
    a thread pool of that many tasks fills the cores once); the previous count after it."""
    before = torch.get_num_threads()
    try:
        yield use_threads(task_threads(tasks_at_once))
    finally:
        torch.set_num_threads(before)
