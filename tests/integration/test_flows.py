"""The ingest-bars and demo flows under a real Prefect API (the test harness)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from core.configs import IngestBarsConfig
from flows.demo import NOT_PROMOTED, PROMOTED, SAMPLE_FILE, demo
from flows.ingest_bars import ingest_bars
from warehouse.db import connect
from warehouse.registry import production_model_id

pytestmark = [pytest.mark.prefect, pytest.mark.usefixtures("prefect_harness")]


def test_synthetic_ingest_flow_stores_bars_and_a_rerun_changes_nothing(
    warehouse_path: Path,
) -> None:
    config = IngestBarsConfig(
        source="synthetic",
        symbols=["SPY", "BTC/USD"],
        start=date(2024, 7, 1),
        end=date(2024, 7, 8),
        warehouse=str(warehouse_path),
    )
    first = ingest_bars(config)
    # July 1-5 2024: four NYSE sessions (3 July is a half day, 4 July a holiday); 7 days of crypto.
    assert first["inserted"] == 390 * 3 + 210 + 7 * 1440
    assert first["quarantined"] == {}
    second = ingest_bars(config)
    assert (second["inserted"], second["updated"], second["unchanged"]) == (0, 0, first["inserted"])
    with connect(warehouse_path) as con:
        rows = con.execute(
            "SELECT symbol, count(*), min(source), max(source) FROM bars GROUP BY symbol ORDER BY symbol"
        ).fetchall()
    assert rows == [
        ("BTC/USD", 7 * 1440, "synthetic", "synthetic"),
        ("SPY", 390 * 3 + 210, "synthetic", "synthetic"),
    ]


def test_arch_ingest_flow_stores_real_daily_bars(warehouse_path: Path) -> None:
    result = ingest_bars(
        IngestBarsConfig(
            source="arch",
            start=date(2010, 1, 1),
            end=date(2011, 1, 1),
            warehouse=str(warehouse_path),
        )
    )
    assert result["inserted"] == 2 * 252  # NYSE sessions in 2010, for both indices
    with connect(warehouse_path) as con:
        sources = con.execute("SELECT DISTINCT source FROM bars ORDER BY 1").fetchall()
    assert sources == [("arch:nasdaq",), ("arch:sp500",)]


def test_file_ingest_flow_quarantines_the_faulty_rows(warehouse_path: Path) -> None:
    result = ingest_bars(
        IngestBarsConfig(
            source="file",
            path=str(SAMPLE_FILE),
            timeframe="1Min",
            source_label="synthetic:faulty-sample",
            warehouse=str(warehouse_path),
        )
    )
    assert result["inserted"] == 4
    assert result["quarantined"] == {
        "nan_price": 1,
        "high_below_low": 1,
        "non_positive_price": 1,
        "duplicate_key": 1,
        "bad_volume": 1,
        "future_timestamp": 1,
    }
    with connect(warehouse_path) as con:
        raw = con.execute("SELECT raw FROM bars_quarantine WHERE reason = 'nan_price'").fetchall()
    assert raw[0][0] is not None and "n/a" in raw[0][0]


@pytest.mark.slow
def test_demo_flow_runs_end_to_end_and_summarises(warehouse_path: Path) -> None:
    result = demo_small(warehouse_path)
    symbols = {row["symbol"] for row in result["coverage"]}
    assert {"^GSPC", "^IXIC", "SPY", "VTI", "VXUS", "BND", "BTC/USD", "DEMO"} <= symbols
    assert len(symbols) == 2 + 18 + 1
    assert {row["reason"] for row in result["quarantine"]} >= {"nan_price", "future_timestamp"}
    assert result["example_rows"], "the example query returned nothing"
    assert result["crypto"]["status"] == "not run" and result["gate"] == []
    posts = result["posts"]
    assert posts["source"] == "synthetic" and posts["inserted"] == posts["scored"] > 500
    by_symbol = {row["symbol"]: row for row in result["sentiment"]}
    assert {"SPY", "BTC/USD"} <= set(by_symbol)
    assert all(row["posts"] > 0 for row in by_symbol.values())
    agents = result["agents"]
    assert set(agents) == {"SPY minute (synthetic)", "^GSPC daily (real)"}
    for agent in agents.values():
        assert [row["policy"] for row in agent["evaluation"]] == [
            "agent",
            "buy_and_hold",
            "flat",
            "momentum_rule",
        ]
        assert len(agent["models"]) == 2
    with connect(warehouse_path) as con:
        models = con.execute(
            "SELECT count(*), count(DISTINCT artifact_sha256) FROM models"
        ).fetchall()[0]
        cycles = con.execute("SELECT count(*) FROM training_runs").fetchall()[0][0]
    assert models == (4, 4)
    with connect(warehouse_path) as con:
        sources = dict(
            con.execute(
                "SELECT symbol, any_value(json_extract_string(params, '$.data_sources')) FROM models GROUP BY 1"
            ).fetchall()
        )
    assert sources == {"SPY": '["synthetic"]', "^GSPC": '["arch:nasdaq","arch:sp500"]'}
    assert cycles == 4 * 8
    # The SPY agent went through the gate on the selection day; the backtest covers only the
    # report day (at most one session of decisions) and names the model shown.
    spy = result["spy_agent"]
    assert isinstance(spy, dict) and spy["model_id"] in agents["SPY minute (synthetic)"]["models"]
    assert [v["candidate"] for v in spy["gate"]] == agents["SPY minute (synthetic)"]["models"]
    with connect(warehouse_path) as con:
        production = production_model_id(con, "dqn", "SPY")
        judged = con.execute(
            "SELECT DISTINCT eval_start, eval_end FROM promotion_decisions WHERE symbol = 'SPY'"
        ).fetchall()
    assert judged == [(datetime(2024, 3, 6, tzinfo=UTC), datetime(2024, 3, 7, tzinfo=UTC))]
    if spy["status"] == NOT_PROMOTED:
        assert production is None and result["promoted"] is None
    else:
        assert spy["status"] == PROMOTED and production == result["promoted"] == spy["model_id"]
    assert result["backtest"]["model_id"] == result["session"]["model_id"] == spy["model_id"]
    assert 0 < result["backtest"]["decisions"] <= 390
    again = demo_small(warehouse_path)
    for name, report in again["ingest"].items():
        assert report["inserted"] == 0 and report["updated"] == 0, name
    assert again["posts"]["inserted"] == again["posts"]["updated"] == 0
    # Training resumed from its finished checkpoints: same models, same evaluation.
    assert again["agents"] == result["agents"]


def demo_small(warehouse_path: Path) -> dict[str, object]:
    from core.configs import DemoConfig

    return demo(
        DemoConfig(
            # Four NYSE sessions (4-7 March): train on two, select on one, report on one.
            start=date(2024, 3, 4),
            end=date(2024, 3, 8),
            train_end=date(2024, 3, 6),
            report_start=date(2024, 3, 7),
            agent_cycles=8,
            nightly=False,  # four days are too few for 4-week forecasters; tested on its own
            warehouse=str(warehouse_path),
        )
    )


def test_incremental_ingest_fetches_only_after_the_newest_stored_bar(
    warehouse_path: Path,
) -> None:
    base = {"source": "synthetic", "symbols": ["BTC/USD"], "warehouse": str(warehouse_path)}
    first = ingest_bars(IngestBarsConfig(**base, start=date(2024, 7, 1), end=date(2024, 7, 3)))
    assert first["inserted"] == 2 * 1440
    later = ingest_bars(
        IngestBarsConfig(**base, start=date(2024, 7, 1), end=date(2024, 7, 4), incremental=True)
    )
    # Only the third day was fetched at all: nothing re-read, nothing re-compared.
    assert (later["received"], later["inserted"], later["unchanged"]) == (1440, 1440, 0)
    again = ingest_bars(
        IngestBarsConfig(**base, start=date(2024, 7, 1), end=date(2024, 7, 4), incremental=True)
    )
    assert again["received"] == 0


def test_auto_source_without_keys_is_the_labelled_synthetic_one(warehouse_path: Path) -> None:
    result = ingest_bars(
        IngestBarsConfig(
            source="auto",
            symbols=["ETH/USD"],
            start=date(2024, 7, 1),
            end=date(2024, 7, 2),
            warehouse=str(warehouse_path),
        )
    )
    assert result["source"] == "synthetic" and result["inserted"] == 1440
