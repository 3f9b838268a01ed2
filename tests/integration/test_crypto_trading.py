"""crypto-trading: the coin agents as one equal-weight portfolio on the live execution path (replay)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from adapters.alpaca import AlpacaBroker
from adapters.protocols import OrderRequest
from core.configs import CryptoTradingConfig, IngestBarsConfig, TrainAgentConfig
from core.settings import get_settings
from flows import wiring
from flows.crypto_trading import crypto_trading
from flows.ingest_bars import ingest_bars
from flows.live_trading import LiveTradingRefused, load_compatible_model
from flows.train_agent import train_agent
from models.allocator import AllocatorConfig, save_allocator, train_allocator
from tests.fakes.alpaca import FakeAlpacaRest, fake_alpaca_rest  # noqa: F401
from tests.fakes.alpaca_stream import CRYPTO_PATH, FakeAlpacaStreamServer
from tests.integration.test_live_paper import MarketClock
from tests.integration.test_trading_flows import make_it_trade
from trading.allocation import coin_weights
from trading.orders import client_order_id
from trading.reconcile import warehouse_positions
from warehouse.account_risk import save_account_limits
from warehouse.bars import load_bars
from warehouse.db import connect
from warehouse.registry import load_model_row, promote, write_model

pytestmark = [pytest.mark.prefect, pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

COINS = ["BTC/USD", "ETH/USD"]
BARS_START, BARS_END = date(2024, 6, 1), date(2024, 6, 9)
TRAIN_END = date(2024, 6, 6)
DAY = date(2024, 6, 8)


@dataclass(frozen=True)
class Shared:
    warehouse: Path
    models: dict[str, str]


@pytest.fixture(scope="module")
def shared(prefect_harness: None, tmp_path_factory: pytest.TempPathFactory) -> Shared:
    tmp = tmp_path_factory.mktemp("crypto-trading")
    warehouse = tmp / "warehouse.duckdb"
    ingest_bars(
        IngestBarsConfig(
            source="synthetic",
            symbols=[*COINS, "LTC/USD"],
            start=BARS_START,
            end=BARS_END,
            warehouse=str(warehouse),
        )
    )
    models = {}
    for coin in COINS:
        trained = train_agent(
            TrainAgentConfig(
                symbols=[coin],
                train_start=BARS_START,
                train_end=TRAIN_END,
                test_start=TRAIN_END,
                test_end=BARS_END,
                cycles=4,
                seeds=[1],
                architecture={"fast_hidden": 8, "slow_hidden": 4, "head_hidden": 8},
                params={"batch_sessions": 2, "train_every": 2},
                checkpoint_every=4,
                warehouse=str(warehouse),
                models_dir=str(tmp / "models"),
            )
        )
        (models[coin],) = trained["models"]
        with connect(warehouse) as con:
            promote(con, models[coin], datetime(2024, 6, 8, tzinfo=UTC))
    return Shared(warehouse, models)


def test_replay_decides_every_coin_each_minute_from_one_account(shared: Shared) -> None:
    result = crypto_trading(
        CryptoTradingConfig(
            coins=[*COINS, "LTC/USD"],
            mode="replay",
            replay_date=DAY,
            start_minute=600,
            max_minutes=30,
            warehouse=str(shared.warehouse),
        )
    )
    assert result["status"] == "traded"
    assert result["coins"] == COINS
    assert result["skipped"] == ["LTC/USD"]  # no production agent: not traded
    assert result["weight_each"] == 0.5
    assert result["decisions"] == {coin: 30 for coin in COINS}
    with connect(shared.warehouse) as con:
        models = dict(
            con.execute(
                "SELECT symbol, any_value(model_id) FROM decisions WHERE run_id = ? GROUP BY symbol",
                [result["run_id"]],
            ).fetchall()
        )
        equity = con.execute(
            "SELECT count(*), count(DISTINCT ts) FROM equity WHERE account = ?",
            [result["account"]],
        ).fetchall()[0]
        first = con.execute(
            "SELECT min(ts) FROM decisions WHERE run_id = ?", [result["run_id"]]
        ).fetchall()[0][0]
    assert models == shared.models
    # One account: one equity point per minute, not one per coin.
    assert equity == (30, 30)
    assert first == datetime(2024, 6, 8, 10, 0, tzinfo=UTC)  # decision on the 09:59 bar, at 10:00


def test_a_rerun_writes_nothing_new(shared: Shared) -> None:
    config = CryptoTradingConfig(
        coins=COINS,
        mode="replay",
        replay_date=DAY,
        start_minute=60,
        max_minutes=10,
        warehouse=str(shared.warehouse),
    )
    first = crypto_trading(config)

    def counts() -> tuple[int, int]:
        with connect(shared.warehouse) as con:
            row = con.execute(
                "SELECT (SELECT count(*) FROM decisions WHERE run_id = ?),"
                " (SELECT count(*) FROM equity WHERE account = ?)",
                [first["run_id"], first["account"]],
            ).fetchall()[0]
        return int(row[0]), int(row[1])

    before = counts()
    again = crypto_trading(config)
    assert again["run_id"] == first["run_id"]
    assert counts() == before == (20, 10)


def test_refusals(shared: Shared) -> None:
    with pytest.raises(LiveTradingRefused, match="no coin has a production dqn model"):
        crypto_trading(
            CryptoTradingConfig(coins=["LTC/USD"], mode="replay", warehouse=str(shared.warehouse))
        )
    with pytest.raises(LiveTradingRefused, match="TRADINGML_LIVE_TRADING_OPT_IN"):
        crypto_trading(
            CryptoTradingConfig(coins=COINS, mode="live", warehouse=str(shared.warehouse))
        )


def test_the_production_allocator_sets_the_day_weights(shared: Shared, tmp_path: Path) -> None:
    """With a promoted SVM allocator, each coin trades the allocator's weight for the day."""
    rng = np.random.default_rng(0)
    periods = pl.datetime_range(
        datetime(2023, 1, 1, tzinfo=UTC), datetime(2023, 12, 1, tzinfo=UTC), "1d", eager=True
    )
    rows = []
    for period in periods:
        for coin in COINS:
            q_adv, forecast = rng.normal(), rng.normal() / 50
            rows.append(
                {
                    "period": period,
                    "symbol": coin,
                    "q_adv": q_adv,
                    "forecast": forecast,
                    "sentiment": rng.normal() / 5,
                    "vol": abs(rng.normal()) / 100,
                    "drawdown": -abs(rng.normal()) / 10,
                    "next_return": 0.01 * q_adv + rng.normal() / 200,
                    # The allocator learns on its agents' out-of-sample trading (issue 16).
                    "next_trade_return": 0.01 * q_adv + rng.normal() / 200,
                    "agent_id": f"dqn-{coin}",
                    "agent_trained_until": datetime(2022, 12, 1, tzinfo=UTC),
                }
            )
    fit = train_allocator(pl.DataFrame(rows), AllocatorConfig())
    artifact = tmp_path / "allocator"
    sha = save_allocator(artifact, fit.allocator)
    warehouse = tmp_path / "w.duckdb"
    shutil.copy(shared.warehouse, warehouse)
    with connect(warehouse) as con:
        write_model(
            con,
            {
                "model_id": "svm-test",
                "kind": "svm_allocator",
                "symbol": "CRYPTO",
                "feature_schema_hash": "test",
                "architecture": {},
                "params": {},
                "metrics": {},
                "artifact_path": str(artifact),
                "artifact_sha256": sha,
                "stage": "candidate",
                "created_at": datetime(2024, 6, 8, tzinfo=UTC),
                "promoted_at": None,
            },
        )
        promote(con, "svm-test", datetime(2024, 6, 8, tzinfo=UTC))
        agents = {coin: load_compatible_model(con, coin, None) for coin in COINS}
        expected, source = coin_weights(con, agents, datetime(2024, 6, 8, tzinfo=UTC))
    assert source == "allocator svm-test"
    assert sum(expected.values()) <= 1.0 + 1e-9

    result = crypto_trading(
        CryptoTradingConfig(
            coins=COINS, mode="replay", replay_date=DAY, max_minutes=5, warehouse=str(warehouse)
        )
    )
    assert result["weights"] == expected
    assert result["weights_from"] == "allocator svm-test"
    with connect(warehouse) as con:
        used = dict(
            con.execute(
                "SELECT symbol, any_value(allocation) FROM decisions WHERE run_id = ? GROUP BY symbol",
                [result["run_id"]],
            ).fetchall()
        )
    assert used == pytest.approx(expected)


MINUTE = timedelta(minutes=1)
KEY, SECRET = "fake-key-id", "fake-secret-key"  # what both fakes accept


class CoinMarketClock(MarketClock):
    """test_live_paper's MarketClock on the crypto stream: for each minute boundary a sleep
    crosses, the coins' bars of the minute that closed go out in one frame and become the
    fake broker's prices."""

    symbols = tuple(COINS)
    path = CRYPTO_PATH


@pytest.fixture
def coin_market(
    shared: Shared,
    fake_alpaca_rest: FakeAlpacaRest,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[Path, FakeAlpacaRest, CoinMarketClock]]:
    """A copy of the warehouse without the coin bars from 10:00 UTC on 8 June, and the fakes
    that stream them from there."""
    stream_from = datetime(2024, 6, 8, 10, 0, tzinfo=UTC)
    warehouse = tmp_path / "paper.duckdb"
    shutil.copy(shared.warehouse, warehouse)
    with connect(warehouse) as con:
        day_bars = load_bars(con, COINS, "1Min", datetime(2024, 6, 7, tzinfo=UTC), stream_from)
        bars = load_bars(con, COINS, "1Min", stream_from - MINUTE, stream_from + 30 * MINUTE)
        con.execute("DELETE FROM bars WHERE ts >= ?", [stream_from])
    for coin, model_id in shared.models.items():
        with connect(warehouse) as con:
            row = load_model_row(con, model_id)
        assert row is not None
        # As for SPY: Q re-centred on 8 June so far, so that the agent flips with the features.
        make_it_trade(
            warehouse, row, day_bars, tmp_path / "models" / coin.replace("/", "-"), day=DAY
        )
    with FakeAlpacaStreamServer(KEY, SECRET) as ws:
        monkeypatch.setenv("APCA_API_KEY_ID", KEY)
        monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET)
        monkeypatch.setenv("TRADINGML_ALPACA_BASE_URL", fake_alpaca_rest.base_url)
        monkeypatch.setenv("TRADINGML_ALPACA_STREAM_URL", f"ws://127.0.0.1:{ws.port}")
        monkeypatch.setenv("TRADINGML_DATA_DIR", str(tmp_path / "data"))
        monkeypatch.delenv("TRADINGML_MODE", raising=False)
        get_settings.cache_clear()
        clock = CoinMarketClock(stream_from + timedelta(seconds=20), bars, ws, fake_alpaca_rest)
        monkeypatch.setattr(wiring.INJECTED, "clock", lambda: clock)
        yield warehouse, fake_alpaca_rest, clock


def test_paper_mode_trades_the_coins_on_streamed_bars_through_alpaca(
    coin_market: tuple[Path, FakeAlpacaRest, CoinMarketClock],
) -> None:
    warehouse, rest, clock = coin_market
    minutes = 8
    result = crypto_trading(
        CryptoTradingConfig(
            coins=COINS,
            mode="paper",
            max_minutes=minutes,
            reconcile_every_min=3,
            flatten_before_close_min=0,
            warehouse=str(warehouse),
        )
    )
    assert result["status"] == "traded" and result["mode"] == "paper"
    assert result["account"] == "paper" and result["day"] == "2024-06-08"
    # The bar that closed before the start was stored already; every later one was streamed.
    assert result["decisions"] == {coin: minutes for coin in COINS}
    assert clock.published == [clock.published[0] + i * MINUTE for i in range(minutes - 1)]
    with connect(warehouse) as con:
        streamed = con.execute(
            "SELECT count(DISTINCT ts), count(*) FROM bars WHERE source = 'alpaca'"
        ).fetchall()[0]
        ours = con.execute(
            "SELECT o.client_order_id, o.side, o.qty, o.decision_id, o.status FROM orders o"
            " JOIN decisions d USING (decision_id) WHERE d.run_id = ? ORDER BY 1",
            [result["run_id"]],
        ).fetchall()
        held = warehouse_positions(con, run_id=None, mode="paper")
        fills = con.execute("SELECT count(*), count(DISTINCT fill_id) FROM fills").fetchall()[0]
    assert streamed == (minutes - 1, len(COINS) * (minutes - 1))
    # Every order the fake broker has came from one of our decisions, once, and the ledger
    # holds each of them with the broker's side and quantity.
    at_broker = sorted(
        (o["client_order_id"], o["side"], float(o["qty"]), o["status"]) for o in rest.orders
    )
    assert len(at_broker) == result["orders"] > 0
    assert [(c, s, q) for c, s, q, _ in at_broker] == [(c, s, q) for c, s, q, _, _ in ours]
    assert all(client_order_id(did) == cid for cid, _, _, did, _ in ours)
    assert fills[0] == fills[1] == sum(1 for o in at_broker if o[3] == "filled")
    # No drift: what the warehouse's fills add up to is what the broker holds.
    broker_positions = {s: q for s, q in rest.positions.items() if abs(q) > 1e-12}
    assert held.keys() == broker_positions.keys()
    for symbol, qty in broker_positions.items():
        assert held[symbol] == pytest.approx(qty, abs=1e-9)

    # A restart later the same day continues the same run: it adopts nothing (the book
    # agrees with the broker), resends nothing, and decides only the new minutes.
    again = crypto_trading(
        CryptoTradingConfig(
            coins=COINS,
            mode="paper",
            max_minutes=3,
            reconcile_every_min=3,
            flatten_before_close_min=0,
            warehouse=str(warehouse),
        )
    )
    assert again["run_id"] == result["run_id"]
    # Its first decision is the minute the first run decided last (same decision id: the
    # same row); then two new minutes.
    assert again["decisions"] == {coin: minutes + 2 for coin in COINS}
    cids = [o["client_order_id"] for o in rest.orders]
    assert len(cids) == len(set(cids))
    with connect(warehouse) as con:
        mismatches = con.execute(
            "SELECT count(*) FROM reconciliation_events WHERE account = 'paper'"
        ).fetchall()[0][0]
        held = warehouse_positions(con, run_id=None, mode="paper")
    assert mismatches == 0
    broker_positions = {s: q for s, q in rest.positions.items() if abs(q) > 1e-12}
    assert held.keys() == broker_positions.keys()
    for symbol, qty in broker_positions.items():
        assert held[symbol] == pytest.approx(qty, abs=1e-9)


def test_the_accounts_limits_stop_the_coins_for_what_the_spy_flow_holds(
    coin_market: tuple[Path, FakeAlpacaRest, CoinMarketClock],
) -> None:
    # live-trading holds SPY worth ~60% of the shared paper account's equity; the account's
    # exposure limit in the warehouse, read by every flow on it, is 0.5x equity.
    warehouse, rest, _ = coin_market
    rest.set_price("SPY", 500.0)
    AlpacaBroker(KEY, SECRET, base_url=rest.base_url).submit_order(
        OrderRequest(client_order_id="spy-flow-buy", symbol="SPY", side="buy", qty=120)
    )
    with connect(warehouse) as con:
        save_account_limits(con, "paper", 0.05, 0.5, datetime.now(UTC))

    result = crypto_trading(
        CryptoTradingConfig(
            coins=COINS, mode="paper", max_minutes=4, flatten_before_close_min=0,
            warehouse=str(warehouse),
        )
    )  # fmt: skip

    assert result["status"] == "traded" and result["orders"] == 0
    assert [o for o in rest.orders if o["symbol"] != "SPY"] == []
    with connect(warehouse) as con:
        refused = con.execute(
            "SELECT risk_reason FROM decisions WHERE run_id = ? AND risk_verdict = 'rejected'",
            [result["run_id"]],
        ).fetchall()
    assert refused
    assert all("reduce-only: account exposure" in r and "all flows" in r for (r,) in refused)
