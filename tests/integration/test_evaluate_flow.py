"""`tradingml evaluate` on the real close-only SPX closes: folds, seeds, baselines, statistics, tables, report, trials."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from core.baselines import BUY_AND_HOLD, benchmark_books
from core.configs import EvaluateConfig, IngestBarsConfig
from core.costs import costs_for
from core.metrics import returns_from_equity
from flows.cli import main
from flows.evaluate import evaluate
from flows.ingest_bars import ingest_bars
from models.walk_forward import AGENT, AGENT_MEAN, BASELINES
from warehouse.bars import load_bars
from warehouse.db import connect
from warehouse.evaluations import load_evaluation, load_evaluation_metrics, load_evaluation_returns
from warehouse.trials import load_trial_sharpes

pytestmark = [pytest.mark.prefect, pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def _config(warehouse: Path, reports: Path, **kw: object) -> EvaluateConfig:
    base: dict[str, object] = {
        "symbol": "SPX",
        "first_test_year": 2012,
        "min_train_bars": 300,
        "seeds": [0, 1],
        "cycles": 4,
        "reps": 100,
        "workers": 1,
        "warehouse": str(warehouse),
        "reports_dir": str(reports),
    }
    return EvaluateConfig(**{**base, **kw})  # type: ignore[arg-type]


def test_evaluate_writes_folds_baselines_statistics_and_is_idempotent(tmp_path: Path) -> None:
    warehouse, reports = tmp_path / "warehouse.duckdb", tmp_path / "reports"
    ingest_bars(
        IngestBarsConfig(
            source="skfolio",
            symbols=["SPX"],
            start=date(2010, 1, 1),
            end=date(2014, 1, 1),
            warehouse=str(warehouse),
        )
    )
    result = evaluate(_config(warehouse, reports))
    assert (result["folds"], result["seeds"]) == (2, 2)  # test years 2012 and 2013
    assert Path(result["report"]).is_file()
    html = Path(result["report"]).read_text()
    assert "Walk-forward evaluation: SPX (1Day), test 2012 to 2013" in html
    assert "Real data: skfolio:sp500_index." in html
    assert "costs: 0 bp fee + 2 bp half-spread per fill + 0.278 bp regulatory fee on sells" in html
    with connect(warehouse) as con:
        run = load_evaluation(con, result["eval_id"])
        metrics = load_evaluation_metrics(con, result["eval_id"])
        returns = load_evaluation_returns(con, result["eval_id"])
        bars = load_bars(
            con, ["SPX"], "1Day", datetime(2012, 1, 1, tzinfo=UTC), datetime(2014, 1, 1, tzinfo=UTC)
        )
        trials = load_trial_sharpes(con, "SPX")
    assert run is not None and run["n_folds"] == 2 and run["n_seeds"] == 2
    assert run["n_trials"] == 2 and trials.height == 2
    assert run["promoted"] is False or run["spa_p"] <= 0.05  # the verdict follows its own test
    # Each fold and overall: 5 baselines, 2 seeds and the seed mean.
    per_scope = metrics.group_by("scope").len().sort("scope")
    assert per_scope.rows() == [("fold", 2 * (len(BASELINES) + 3)), ("overall", len(BASELINES) + 3)]
    assert set(metrics["policy"]) == {*BASELINES, AGENT, AGENT_MEAN}
    # 2012 + 2013 = 502 trading days; every policy and seed holds every test bar.
    assert returns.group_by("policy", "seed").len()["len"].unique().to_list() == [502]
    assert returns.filter(pl.col("policy") == AGENT)["position"].is_in([0.0, 1.0]).all()

    # One number, one implementation: the 2013 fold's buy-and-hold is core.baselines' book.
    fold_2013 = bars.filter(pl.col("ts").dt.year() == 2013).select("ts", "open", "close")
    # At the asset class's default costs: SPX is stored as a stock (skfolio import).
    costs = costs_for("stock")
    book = benchmark_books(
        fold_2013,
        symbol="SPX",
        cash=1.0,
        fee_bps=costs.fee_bps,
        slippage_bps=costs.slippage_bps,
        sell_fee_bps=costs.sell_fee_bps,
    )[BUY_AND_HOLD]
    expected = returns_from_equity(np.concatenate(([1.0], book.equity)))
    stored = returns.filter((pl.col("policy") == BUY_AND_HOLD) & (pl.col("ts").dt.year() == 2013))[
        "ret"
    ].to_numpy()
    np.testing.assert_allclose(stored, expected, rtol=0, atol=1e-12)
    row = metrics.filter(
        (pl.col("scope") == "fold")
        & (pl.col("label") == "2013")
        & (pl.col("policy") == BUY_AND_HOLD)
    )
    assert row["total_return"][0] == pytest.approx(book.equity[-1] - 1.0, abs=1e-12)

    # Run again: the same evaluation id, the same rows, no new trial.
    again = evaluate(_config(warehouse, reports))
    assert again["eval_id"] == result["eval_id"]
    with connect(warehouse) as con:
        assert load_evaluation_returns(con, result["eval_id"]).height == returns.height
        assert load_trial_sharpes(con, "SPX").height == 2
        assert con.execute("SELECT count(*) FROM evaluations").fetchone() == (1,)


def test_evaluate_cli_prints_the_table_and_the_verdict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    monkeypatch.setenv("TRADINGML_DATA_DIR", str(tmp_path))
    ingest_bars(
        IngestBarsConfig(
            source="skfolio",
            symbols=["SPX"],
            start=date(2011, 1, 1),
            end=date(2013, 1, 1),
            warehouse=str(warehouse),
        )
    )
    capsys.readouterr()
    code = main(
        [
            "evaluate",
            "--first-test-year", "2012",
            "--min-train-bars", "200",
            "--seeds", "3",
            "--cycles", "2",
            "--reps", "100",
            "--warehouse", str(warehouse),
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "evaluate SPX (1Day): 1 folds x 1 seeds" in out
    assert "| Buy & hold |" in out and "| Trend (200-bar average) |" in out
    assert "SPA p = " in out and "DSR = " in out
    assert "report: " in out


def test_evaluate_without_bars_names_the_ingest_command(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"run `tradingml ingest-bars --source skfolio` first"):
        evaluate(_config(tmp_path / "empty.duckdb", tmp_path / "reports"))
