"""`make bench`'s dispatcher: each selected group runs once, and a dispatched group never dispatches.

`make bench ONLY=search` once matched both `search` and `search_fitness` by prefix, ran each
in a child `python -m benchmarks.run --only <name>`, and the child matched both again: a chain
of idle 436 MB processes, each waiting for the next, until the out-of-memory killer (56 of
them on 2026-12-07). Here every child runs in this process, one level deep at most.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from benchmarks import run
from benchmarks.harness import Figure

# Names where one is a prefix of another, as search / search_fitness and agent / agent_wf are.
NAMES = ("agent", "agent_wf", "ingest", "search", "search_fitness")


class Dispatch:
    """Stands in for subprocess.run: a child `benchmarks.run` runs in this process, its depth checked."""

    def __init__(self) -> None:
        self.depth = 0
        self.children: list[list[str]] = []

    def __call__(
        self, cmd: list[str], *args: Any, **kwargs: Any
    ) -> subprocess.CompletedProcess[str]:
        assert cmd[:3] == [sys.executable, "-m", "benchmarks.run"], cmd
        if self.depth >= 1:
            raise AssertionError(f"a dispatched group dispatched again: {cmd[3:]}")
        self.children.append(cmd[3:])
        self.depth += 1
        try:
            return subprocess.CompletedProcess(cmd, run.main(cmd[3:]))
        finally:
            self.depth -= 1


@pytest.fixture
def ran(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Fake groups (they record their name), no results.json or README written."""
    ran: list[str] = []

    def group(name: str) -> Callable[[Path], list[Figure]]:
        def bench(scratch: Path) -> list[Figure]:
            ran.append(name)
            return [Figure(f"{name}_s", 1.0, "s", "<= 2")]

        return bench

    monkeypatch.setattr(run, "REGISTRY", {n: group(n) for n in NAMES})
    monkeypatch.setattr(run, "write_results", lambda figures: {"figures": []})
    monkeypatch.setattr(run, "update_readme", lambda doc: False)
    return ran


@pytest.fixture
def dispatch(monkeypatch: pytest.MonkeyPatch) -> Dispatch:
    d = Dispatch()
    monkeypatch.setattr(subprocess, "run", d)  # the module benchmarks.run calls it from
    return d


@pytest.mark.parametrize("name", NAMES)
def test_a_full_name_runs_that_group_alone_in_this_process(
    name: str, ran: list[str], dispatch: Dispatch
) -> None:
    assert run.main(["--only", name]) == 0
    assert ran == [name]
    assert dispatch.children == []


@pytest.mark.parametrize(
    ("only", "groups"),
    [
        ("sea", ["search", "search_fitness"]),
        ("agent,search", ["agent", "search"]),
        ("ag,ingest", ["agent", "agent_wf", "ingest"]),
        (None, list(NAMES)),
    ],
)
def test_each_selected_group_runs_once_in_a_child_that_never_dispatches(
    only: str | None, groups: list[str], ran: list[str], dispatch: Dispatch
) -> None:
    assert run.main([] if only is None else ["--only", only]) == 0
    assert ran == groups  # once each: no child selected a second group or started another child
    assert len(dispatch.children) == len(groups)


def test_an_unknown_name_is_refused(ran: list[str], dispatch: Dispatch) -> None:
    assert run.main(["--only", "nope"]) == 2
    assert ran == [] and dispatch.children == []
