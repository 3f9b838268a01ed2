"""`tradingml evaluate` on the real S&P 500 index closes 1990-2022 (skfolio): its wall time, and what it found beside the baselines."""

from __future__ import annotations

import time
from pathlib import Path

from benchmarks.harness import Figure, benchmark
from core.configs import EvaluateConfig, IngestBarsConfig
from flows.evaluate import evaluate
from flows.ingest_bars import ingest_bars
from warehouse.db import connect
from warehouse.evaluations import load_evaluation_metrics


@benchmark("evaluate")
def bench_evaluate(scratch: Path) -> list[Figure]:
    warehouse = scratch / "evaluate.duckdb"
    ingest_bars(IngestBarsConfig(source="skfolio", symbols=["SPX"], warehouse=str(warehouse)))
    # The default: yearly folds from 2000, 5 seeds, the default agent, 2 worker threads.
    config = EvaluateConfig(warehouse=str(warehouse), reports_dir=str(scratch / "reports"))
    start = time.perf_counter()
    result = evaluate(config)
    seconds = time.perf_counter() - start
    with connect(warehouse, read_only=True) as con:
        overall = load_evaluation_metrics(con, result["eval_id"], scope="overall")
    sharpe = {(row["policy"], row["seed"]): row["sharpe"] for row in overall.iter_rows(named=True)}
    seeds = [v for (p, _), v in sharpe.items() if p == "agent"]
    print("\n".join(result["table"]), flush=True)
    print("\n".join(result["verdict"]), flush=True)
    return [
        Figure("evaluate_sp500_walk_forward_s", round(seconds, 1), "s", "<= 900"),
        Figure(
            "evaluate_sp500_agent_sharpe_seed_mean",
            round(sharpe[("agent_mean", -1)], 3),
            "annualised",
            "-",
        ),
        Figure("evaluate_sp500_agent_sharpe_worst_seed", round(min(seeds), 3), "annualised", "-"),
        Figure(
            "evaluate_sp500_buy_and_hold_sharpe",
            round(sharpe[("buy_and_hold", -1)], 3),
            "annualised",
            "-",
        ),
        Figure("evaluate_sp500_spa_p", round(float(result["spa_p"]), 4), "p", "-"),
        Figure("evaluate_sp500_dsr", round(float(result["dsr"]), 4), "probability", "-"),
    ]
