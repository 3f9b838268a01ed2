"""The one wiring function: offline adapters in replay mode, Alpaca in paper/live, clear refusals."""

from __future__ import annotations

import pytest

from adapters.arch_daily import ArchDailyBarSource
from adapters.files import FileBarSource
from adapters.protocols import BarSource, Clock
from adapters.synthetic import SyntheticBarSource
from core.configs import IngestBarsConfig
from core.settings import Settings
from flows.wiring import MissingCredentialsError, build_adapters, build_bar_source


def test_replay_mode_is_fully_offline() -> None:
    adapters = build_adapters(Settings(_env_file=None, mode="replay"))
    assert isinstance(adapters.clock, Clock)
    assert isinstance(adapters.bars, BarSource)
    assert isinstance(adapters.bars, SyntheticBarSource)


@pytest.mark.parametrize("mode", ["paper", "live"])
def test_alpaca_modes_without_keys_name_the_env_vars(mode: str) -> None:
    settings = Settings(_env_file=None, mode=mode, live_trading_opt_in=True)
    with pytest.raises(MissingCredentialsError, match="APCA_API_KEY_ID and APCA_API_SECRET_KEY"):
        build_adapters(settings)


def test_paper_mode_builds_alpaca_adapters_on_the_paper_account() -> None:
    from adapters.alpaca import AlpacaBarSource, AlpacaBroker
    from adapters.alpaca_stream import AlpacaBarStream

    settings = Settings(
        _env_file=None,
        mode="paper",
        alpaca_api_key_id="k",
        alpaca_api_secret_key="s",
        alpaca_stream_url="ws://127.0.0.1:1",
    )
    adapters = build_adapters(settings)
    assert isinstance(adapters.bars, AlpacaBarSource)
    assert isinstance(adapters.stream, AlpacaBarStream)
    assert isinstance(adapters.broker, AlpacaBroker) and adapters.broker.paper
    # No Reddit keys: the posts stay the labelled offline ones.
    assert adapters.posts.name == "synthetic"  # type: ignore[attr-defined]


def test_live_mode_trades_real_money_only_with_the_opt_in() -> None:
    with pytest.raises(ValueError, match="TRADINGML_LIVE_TRADING_OPT_IN"):
        Settings(_env_file=None, mode="live", alpaca_api_key_id="k", alpaca_api_secret_key="s")
    live = Settings(
        _env_file=None,
        mode="live",
        live_trading_opt_in=True,
        alpaca_api_key_id="k",
        alpaca_api_secret_key="s",
    )
    broker = build_adapters(live).broker
    assert broker is not None and not broker.paper  # type: ignore[attr-defined]


def test_bar_sources_by_name() -> None:
    settings = Settings(_env_file=None, synthetic_seed=3)
    synthetic = build_bar_source(IngestBarsConfig(source="synthetic"), settings)
    assert isinstance(synthetic, SyntheticBarSource) and synthetic.config.seed == 3
    assert isinstance(
        build_bar_source(IngestBarsConfig(source="arch"), settings), ArchDailyBarSource
    )
    source = build_bar_source(
        IngestBarsConfig(source="file", path="x.csv", source_label="mine"), settings
    )
    assert isinstance(source, FileBarSource) and source.source_label == "mine"


def test_file_source_needs_a_path() -> None:
    with pytest.raises(ValueError, match="needs path="):
        IngestBarsConfig(source="file")


def test_tests_inject_through_the_wiring_seam_not_by_string_paths() -> None:
    """Issue 15: a run's clock and adapter set reach tests through flows.wiring.INJECTED; no
    test patches a name inside flows.wiring by its string path (a rename would go unnoticed)."""
    import re
    from pathlib import Path

    tests = Path(__file__).resolve().parents[1]
    pattern = re.compile(
        r"setattr\(\s*['\"]flows\.wiring\.(clock_factory|build_adapters|real_adapters)"
    )
    found = [
        str(p.relative_to(tests))
        for p in tests.rglob("*.py")
        if pattern.search(p.read_text(encoding="utf-8"))
    ]
    assert found == []


def test_an_injected_adapter_set_replaces_the_real_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import UTC, datetime

    from adapters.clock import ManualClock
    from flows import wiring

    settings = Settings(_env_file=None)
    clock = ManualClock(datetime(2024, 7, 1, 14, tzinfo=UTC))
    monkeypatch.setattr(wiring.INJECTED, "clock", lambda: clock)
    assert build_adapters(settings).clock is clock  # the real set, on the injected clock
    made = wiring.real_adapters(settings)
    monkeypatch.setattr(wiring.INJECTED, "adapters", lambda s: made)
    assert build_adapters(settings) is made
