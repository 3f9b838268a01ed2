"""The one wiring function: offline adapters in replay mode, a clear refusal where adapters are missing."""

from __future__ import annotations

import pytest

from adapters.arch_daily import ArchDailyBarSource
from adapters.files import FileBarSource
from adapters.protocols import BarSource, Clock
from adapters.synthetic import SyntheticBarSource
from core.settings import Settings
from flows.config import IngestBarsConfig
from flows.wiring import AdapterUnavailableError, build_adapters, build_bar_source


def test_replay_mode_is_fully_offline() -> None:
    adapters = build_adapters(Settings(_env_file=None, mode="replay"))
    assert isinstance(adapters.clock, Clock)
    assert isinstance(adapters.bars, BarSource)
    assert isinstance(adapters.bars, SyntheticBarSource)


@pytest.mark.parametrize("mode", ["paper", "live"])
def test_modes_without_their_adapters_refuse_clearly(mode: str) -> None:
    settings = Settings(_env_file=None, mode=mode, live_trading_opt_in=True)
    with pytest.raises(AdapterUnavailableError, match="TRADINGML_MODE=replay"):
        build_adapters(settings)


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
