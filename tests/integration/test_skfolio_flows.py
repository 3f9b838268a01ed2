"""`ingest-bars --source skfolio`, then `train` and `backtest` of the close-only SPX series, through the flows."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from core.configs import BacktestConfig, IngestBarsConfig, RiskConfig, TrainAgentConfig
from flows.backtest import backtest
from flows.ingest_bars import ingest_bars
from flows.train_agent import train_agent
from warehouse.db import connect
from warehouse.symbols import load_symbols

pytestmark = [pytest.mark.prefect, pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

START, SPLIT, END = date(2013, 1, 1), date(2016, 1, 1), date(2017, 1, 1)
UNAVAILABLE = (
    "features unavailable, kept as constant 0: a0_volz (SPX bars have no volume); "
    "a0_vwap_dev (SPX bars have no vwap); a0_range (SPX bars have no high/low)"
)


def test_skfolio_closes_ingest_close_only_and_train_and_backtest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    result = ingest_bars(
        IngestBarsConfig(source="skfolio", start=START, end=END, warehouse=str(warehouse))
    )
    assert result["source"] == "skfolio"
    assert [r["symbol"] for r in result["series"]] == [
        "SPX",
        "MTUM",
        "QUAL",
        "SIZE",
        "USMV",
        "VLUE",
    ]
    assert result["quarantined"] == {}
    with connect(warehouse) as con:
        stored = con.execute(
            "SELECT symbol, source, count(*), count(open), count(high), count(low), "
            "count(volume), count(close), min(ts), max(ts) FROM bars GROUP BY ALL ORDER BY symbol"
        ).fetchall()
        symbols = load_symbols(con)
    by_symbol = {row[0]: row[1:] for row in stored}
    spx = by_symbol["SPX"]
    # 2013-2016: 1,008 real trading days, every one close-only.
    assert spx[:7] == ("skfolio:sp500_index", 1_008, 0, 0, 0, 0, 1_008)
    assert spx[7:] == (datetime(2013, 1, 2, 5, tzinfo=UTC), datetime(2016, 12, 30, 5, tzinfo=UTC))
    for etf in ("MTUM", "QUAL", "SIZE", "USMV", "VLUE"):
        # The factor file starts 2014-01-02.
        assert by_symbol[etf][:7] == ("skfolio:factors", 756, 0, 0, 0, 0, 756), etf
    assert {s: (i.asset_class, i.calendar, i.source) for s, i in symbols.items()} == {
        "SPX": ("stock", "XNYS", "skfolio"),
        **{e: ("etf", "XNYS", "skfolio") for e in ("MTUM", "QUAL", "SIZE", "USMV", "VLUE")},
    }

    trained = train_agent(
        TrainAgentConfig(
            symbols=["SPX"],
            timeframe="1Day",
            train_start=START,
            train_end=SPLIT,
            test_start=SPLIT,
            test_end=END,
            cycles=4,
            seeds=[1],
            architecture={"fast_hidden": 8, "slow_hidden": 4, "head_hidden": 8},
            params={"batch_sessions": 2, "train_every": 2},
            checkpoint_every=4,
            warehouse=str(warehouse),
            models_dir=str(tmp_path / "models"),
        )
    )
    (model_id,) = trained["models"]
    assert capsys.readouterr().err.count(UNAVAILABLE) == 1
    bt = backtest(
        BacktestConfig(
            symbol="SPX",
            model_id=model_id,
            start=SPLIT,
            end=END,
            warehouse=str(warehouse),
            reports_dir=str(tmp_path / "reports"),
            risk=RiskConfig(daily_loss_limit=0.5, max_position_notional=1e12),
        )
    )
    assert capsys.readouterr().err.count(UNAVAILABLE) == 1
    assert bt["decisions"] == 252
    # Buy-and-hold of real SPX closes in 2016, filled at the close of 2016-01-05 (the bar
    # after the first decision): 2238.83 / 2016.71 - 1, less 1 bp slippage and fees.
    assert bt["metrics"]["buy_and_hold"]["total_return"] == pytest.approx(0.1101, abs=2e-3)
