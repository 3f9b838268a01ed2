"""warehouse.trials against a migrated DuckDB: idempotent trial records, Sharpes read back for the DSR."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import duckdb
import numpy as np
import pytest

from models.evaluation import deflated_sharpe_ratio, trial_sharpe_variance
from warehouse.db import connect
from warehouse.migrate import MigrationError, available_migrations
from warehouse.trials import load_trial_sharpes, record_trial, trial_id

START = datetime(2015, 1, 1, tzinfo=UTC)
END = datetime(2019, 12, 31, tzinfo=UTC)
NOW = datetime(2026, 12, 7, 1, 0, tzinfo=UTC)


@pytest.fixture
def con(warehouse_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """The fully migrated warehouse; only the trials migration where the numbering has a gap."""
    try:
        available_migrations()
    except MigrationError:
        # Another migration may be renumbered while work is in flight: test the table alone.
        sql = next(
            e.read_text()
            for e in resources.files("warehouse.migrations").iterdir()
            if e.name.endswith("_trials.sql")
        )
        bare = duckdb.connect(":memory:")
        bare.execute(sql)
        yield bare
        bare.close()
        return
    with connect(warehouse_path, timeout_s=5) as migrated:
        yield migrated


def _record(con: duckdb.DuckDBPyConnection, sharpe: float, seed: int, **kw: object) -> str:
    args: dict[str, object] = {
        "kind": "agent",
        "dataset": "SPY",
        "data_start": START,
        "data_end": END,
        "config": {"lr": 0.001, "gamma": 0.99},
        "sharpe": sharpe,
        "n_obs": 1258,
        "periods_per_year": 252.0,
        "created_at": NOW,
        "seed": seed,
    }
    args.update(kw)
    key, _ = record_trial(con, **args)  # type: ignore[arg-type]
    return key


def test_the_trials_table_is_created_by_its_migration(con: duckdb.DuckDBPyConnection) -> None:
    cols = {
        r[0]
        for r in con.execute(
            "SELECT column_name FROM duckdb_columns() WHERE table_name = 'trials'"
        ).fetchall()
    }
    assert cols == {
        "trial_id", "kind", "dataset", "data_start", "data_end", "config", "genome", "seed",
        "sharpe", "periods_per_year", "n_obs", "created_at",
    }  # fmt: skip
    with pytest.raises(duckdb.ConstraintException):
        con.execute(
            "INSERT INTO trials VALUES ('x', 'robot', 'SPY', now(), now(), '{}', NULL, 1, 1.0,"
            " 252, 10, now())"
        )


def test_record_trial_is_idempotent_and_keyed_on_what_defines_the_trial(
    con: duckdb.DuckDBPyConnection,
) -> None:
    first, result = record_trial(
        con, kind="agent", dataset="SPY", data_start=START, data_end=END,
        config={"gamma": 0.99, "lr": 0.001}, sharpe=0.8, n_obs=1258, periods_per_year=252.0,
        created_at=NOW, seed=1,
    )  # fmt: skip
    assert (result.inserted, result.updated, result.unchanged) == (1, 0, 0)
    # Same trial, keys in another order, recorded later: no change at all.
    again, result = record_trial(
        con, kind="agent", dataset="SPY", data_start=START, data_end=END,
        config={"lr": 0.001, "gamma": 0.99}, sharpe=0.8, n_obs=1258, periods_per_year=252.0,
        created_at=datetime(2026, 12, 8, tzinfo=UTC), seed=1,
    )  # fmt: skip
    assert again == first and (result.inserted, result.updated, result.unchanged) == (0, 0, 1)
    stored = con.execute("SELECT created_at, sharpe, config FROM trials").fetchall()
    assert len(stored) == 1 and stored[0][0] == NOW and stored[0][1] == 0.8
    assert stored[0][2] == '{"gamma": 0.99, "lr": 0.001}'
    # Another seed is another trial; a non-finite Sharpe is stored as null.
    other = _record(con, math.nan, seed=2)
    assert other != first
    assert con.execute("SELECT sharpe FROM trials WHERE trial_id = ?", [other]).fetchall() == [
        (None,)
    ]
    assert first == trial_id(
        kind="agent", dataset="SPY", data_start=START, data_end=END,
        config={"lr": 0.001, "gamma": 0.99}, seed=1,
    )  # fmt: skip


def test_record_trial_refuses_an_unknown_kind_and_naive_times(
    con: duckdb.DuckDBPyConnection,
) -> None:
    with pytest.raises(ValueError, match="kind must be one of"):
        _record(con, 1.0, 1, kind="robot")
    with pytest.raises(ValueError, match="no time zone"):
        _record(con, 1.0, 1, data_start=datetime(2015, 1, 1))
    assert con.execute("SELECT count(*) FROM trials").fetchall() == [(0,)]


def test_trial_sharpes_feed_the_deflated_sharpe_ratio(con: duckdb.DuckDBPyConnection) -> None:
    sharpes = [0.2, -0.4, 1.1, 0.5, math.nan]
    for seed, s in enumerate(sharpes):
        _record(con, s, seed)
    _record(con, 3.0, 0, dataset="QQQ")
    _record(con, 0.9, 0, kind="forecaster")
    spy = load_trial_sharpes(con, "SPY")
    assert spy.height == 6
    agents = load_trial_sharpes(con, "SPY", kind="agent")
    assert agents.height == 5  # N counts the trial without a Sharpe too
    got = agents.get_column("sharpe").to_list()
    assert sorted(x for x in got if x is not None) == [-0.4, 0.2, 0.5, 1.1]
    variance = trial_sharpe_variance(agents.get_column("sharpe").fill_null(math.nan), 252.0)
    assert variance == pytest.approx(np.var([0.2, -0.4, 1.1, 0.5], ddof=1) / 252.0)
    r = 1.0 * 0.01 / math.sqrt(252) + 0.01 * np.random.default_rng(0).standard_normal(1258)
    assert deflated_sharpe_ratio(r, agents.height, variance) < deflated_sharpe_ratio(r, 1)
