"""The architecture search under Prefect: failures scored worst, resumable, same results on every runner."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from adapters.synthetic import SyntheticBarSource
from core.configs import EvolveConfig
from core.universe import EQUITY_SYMBOLS
from flows.evolve import evolve_architecture
from models.search import WORST_FITNESS
from tasks.evolve import SearchFailedError, best_evaluated
from warehouse.bars import ingest_bar_frames
from warehouse.db import connect

pytestmark = [pytest.mark.prefect, pytest.mark.usefixtures("prefect_harness")]


@pytest.fixture
def small_warehouse(tmp_path: Path) -> Path:
    path = tmp_path / "w.duckdb"
    frames = SyntheticBarSource().fetch_bars(
        list(EQUITY_SYMBOLS),
        "1Min",
        datetime(2024, 3, 1, tzinfo=UTC),
        datetime(2024, 3, 29, tzinfo=UTC),
    )
    ingest_bar_frames(frames, path, datetime(2025, 1, 1, tzinfo=UTC))
    return path


def config(warehouse: Path, **over: Any) -> EvolveConfig:
    base: dict[str, Any] = dict(
        search_start=date(2024, 3, 1),
        search_end=date(2024, 3, 22),
        folds=3,
        test_start=date(2024, 3, 22),
        test_end=date(2024, 3, 29),
        population=3,
        generations=2,
        elite=1,
        cycles=4,
        seeds=[1, 2],
        runner="serial",
        # The expensive genes held at their cheapest: these tests are about the flow, not
        # the space (tests/unit/test_genome_choices.py covers every gene).
        fixed_genes={"ensemble_size": 1, "updates_per_block": 1},
        register_best=False,
        warehouse=str(warehouse),
    )
    return EvolveConfig(**{**base, **over})


def rows(warehouse: Path, search_id: str) -> list[tuple[Any, ...]]:
    with connect(warehouse) as con:
        return con.execute(
            "SELECT generation, individual, genome_hash, fitness, status, created_at FROM nas_individuals"
            " WHERE search_id = ? ORDER BY 1, 2",
            [search_id],
        ).fetchall()


def test_crashing_and_timed_out_individuals_get_the_worst_fitness_and_fail_the_search(
    small_warehouse: Path,
) -> None:
    crashing = config(small_warehouse, symbols=["SPY", "QQQ"], generations=1, register_best=True)
    state = evolve_architecture(crashing, return_state=True)
    assert state.is_failed()  # every individual failed: the flow run ends Failed, not Completed
    with pytest.raises(SearchFailedError, match="all 3 individuals failed, nothing registered"):
        state.result()
    stored = rows(small_warehouse, crashing.search_id())
    assert [(r[3], r[4]) for r in stored] == [(WORST_FITNESS, "failed")] * 3
    with connect(small_warehouse) as con:
        errors = {r[0] for r in con.execute("SELECT error FROM nas_individuals").fetchall()}
        assert con.execute("SELECT count(*) FROM models").fetchall()[0][0] == 0
    assert any("QQQ" in e for e in errors)
    slow = config(small_warehouse, generations=1, individual_timeout_s=1e-6)
    with pytest.raises(SearchFailedError, match="over the 1e-06 s budget"):
        evolve_architecture(slow)
    assert {r[4] for r in rows(small_warehouse, slow.search_id())} == {"timeout"}


def test_a_failed_individual_is_never_the_best() -> None:
    def individual(i: int, fitness: float, status: str) -> dict[str, Any]:
        error = None if status == "ok" else f"individual {i} {status}"
        return {
            "generation": 0,
            "individual": i,
            "fitness": fitness,
            "status": status,
            "error": error,
        }

    everyone = [
        individual(0, WORST_FITNESS, "failed"),
        individual(1, float("nan"), "ok"),  # a NaN must not win (or lose) by comparison quirks
        individual(2, -5.0, "ok"),
        individual(3, WORST_FITNESS, "timeout"),
    ]
    assert best_evaluated(everyone, "s")["individual"] == 2
    assert best_evaluated(list(reversed(everyone)), "s")["individual"] == 2
    with pytest.raises(SearchFailedError, match=r"all 2 individuals failed.*individual 0 failed"):
        best_evaluated(everyone[:2], "s")  # max() by fitness alone kept the failed first one


def test_search_resumes_after_a_kill_and_reproduces_itself(small_warehouse: Path) -> None:
    cfg = config(small_warehouse, register_best=True)
    first = evolve_architecture(cfg)
    full = rows(small_warehouse, first["search_id"])
    assert [(r[0], r[1]) for r in full] == [(g, i) for g in range(2) for i in range(3)]
    assert all(r[4] == "ok" for r in full)
    # A kill during generation 1: only generation 0 and one individual of 1 were stored.
    with connect(small_warehouse) as con:
        con.execute(
            "DELETE FROM nas_individuals WHERE search_id = ? AND generation = 1 AND individual > 0",
            [first["search_id"]],
        )
    again = evolve_architecture(cfg)
    resumed = rows(small_warehouse, first["search_id"])
    assert [r[:5] for r in resumed] == [r[:5] for r in full]  # same genomes and fitness
    assert [r[5] for r in resumed[:4]] == [r[5] for r in full[:4]]  # stored ones not redone
    # Same best; its per-fold values come back only where this run scored it.
    assert {**again["best"], "fitness_per_fold": None} == {
        **first["best"],
        "fitness_per_fold": None,
    }
    assert len(first["best"]["fitness_per_fold"]) == 3
    assert again["registered"] == first["registered"] and str(first["registered"]).startswith(
        "genome-"
    )
    assert Path(first["plot"]).exists()
    # The winner was judged by the statistical gate on the judging range only, counting every
    # genome the search tried (and the judging run) as a trial.
    verdict = first["verdict"]
    assert verdict["judged"] and verdict["test"] == "spa+dsr", verdict
    with connect(small_warehouse) as con:
        trials = con.execute(
            "SELECT count(*), count(DISTINCT genome) FROM trials WHERE kind = 'genome'"
            " AND data_end <= TIMESTAMPTZ '2024-03-22 00:00:00+00'"
        ).fetchall()[0]
        stored = con.execute(
            "SELECT kind, candidate_id, eval_start, n_trials, promoted FROM promotion_decisions"
        ).fetchall()
        stage = con.execute(
            "SELECT stage FROM models WHERE model_id = ?", [first["registered"]]
        ).fetchall()[0][0]
    distinct = {r[2] for r in full}
    assert trials == (len(distinct), len(distinct))  # an elite re-scored is the same trial
    assert verdict["n_trials"] == len(distinct) + 1  # + the winner's judging run
    assert {(r[0], r[1], r[2].date(), r[3]) for r in stored} == {
        ("genome", first["registered"], date(2024, 3, 22), len(distinct) + 1)
    }
    assert stage == ("production" if verdict["promoted"] else "candidate")
    assert verdict["promoted"] == verdict["passed"]


@pytest.mark.slow
def test_process_and_dask_runners_give_the_same_fitness(
    small_warehouse: Path, tmp_path: Path
) -> None:
    results = {}
    for runner in ("process", "dask"):
        # A separate warehouse per runner, so the second search does not just resume the first.
        path = tmp_path / f"{runner}.duckdb"
        path.write_bytes(small_warehouse.read_bytes())
        out = evolve_architecture(config(path, runner=runner, generations=1, population=2, elite=0))
        results[runner] = [(r[2], r[3]) for r in rows(path, out["search_id"])]
    assert results["process"] == results["dask"]
    assert all(f > WORST_FITNESS for _, f in results["process"])
