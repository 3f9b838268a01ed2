"""The leakage proof through the whole pipeline (benchmarks/proof_pipeline.py): 20 random walks and a leaky control."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from benchmarks.harness import Figure, benchmark
from benchmarks.proof_pipeline import LEAK, PASS, ProofBudget, prove

RANDOM_WALK_SEEDS = tuple(range(20))
LEAK_SEEDS = tuple(range(100, 110))
"""The control's walks are other seeds: it must be caught on paths the proof never saw."""


@benchmark("proof_pipeline")
def bench_proof_pipeline(scratch: Path) -> list[Figure]:
    # Seven years of daily bars per seed, yearly test folds 2017-2020, 400 training cycles per
    # fold: the same budget for the walks and the control.
    # One thread per agent: these nets are small, and on 2 shared cores torch's thread pool
    # spends more time waiting than computing (about 5 s a seed single-threaded).
    torch.set_num_threads(1)
    budget = ProofBudget()
    start = time.perf_counter()
    walk = prove(RANDOM_WALK_SEEDS, budget, workdir=scratch, progress=True)
    print(walk.line(), flush=True)
    control = prove(LEAK_SEEDS, budget, leak=True, workdir=scratch, progress=True)
    print(control.line(), flush=True)
    seconds = time.perf_counter() - start
    return [
        Figure("pipeline_random_walk_abs_t", round(abs(walk.t_stat), 2), "abs t", "< 2"),
        Figure(
            "pipeline_random_walk_exposure", round(walk.mean_exposure, 3), "share of bars", ">= 0.1"
        ),
        Figure("pipeline_random_walk_passed", 1.0 if walk.verdict == PASS else 0.0, "bool", ">= 1"),
        Figure("leak_control_detected", 1.0 if control.verdict == LEAK else 0.0, "bool", ">= 1"),
        Figure("leak_control_t", round(control.t_stat, 2), "t", "-"),
        # The promotion gate on the same agents: no random-walk agent should pass it (the
        # whole-pipeline counterpart of bench_gate's Monte Carlo), and the leaky ones show
        # that it can say yes.
        Figure("gate_false_promotion_pipeline", round(walk.promoted_share, 3), "share", "<= 0.05"),
        Figure("leak_control_promoted", round(control.promoted_share, 3), "share", "-"),
        Figure("proof_pipeline_s", round(seconds, 1), "s", "<= 600"),
    ]
