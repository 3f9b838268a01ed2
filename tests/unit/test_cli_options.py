"""flows.cli_options: one command-line option per config field, parsed back into the config."""

from __future__ import annotations

import argparse
from datetime import UTC, date, datetime
from typing import Literal

import pytest
from pydantic import BaseModel, Field

from core import configs as config
from core.configs import EvaluateConfig
from flows.cli_options import add_config_options, config_from_args


class _Config(BaseModel):
    name: str = Field(default="SPY", description="Symbol.")
    window: Literal["expanding", "rolling"] = Field(default="expanding", description="Window.")
    seeds: list[int] = Field(default_factory=lambda: [0, 1], description="Seeds.")
    budget: float | None = Field(default=None, description="Seconds.")
    quiet: bool = Field(default=False, description="Less output.")
    nested: dict[str, int] = Field(default_factory=dict, description="Not on the command line.")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_config_options(parser, _Config)
    return parser


def test_options_parse_back_into_the_config_and_keep_defaults() -> None:
    args = _parser().parse_args(
        ["--window", "rolling", "--seeds", "3", "4", "--budget", "2.5", "--quiet"]
    )
    config = config_from_args(_Config, args)
    assert config == _Config(window="rolling", seeds=[3, 4], budget=2.5, quiet=True)
    assert config_from_args(_Config, _parser().parse_args([])) == _Config()


def test_choices_are_enforced_and_unsupported_fields_left_out() -> None:
    parser = _parser()
    with pytest.raises(argparse.ArgumentError):
        parser.parse_args(["--window", "sideways"])
    flags = {a.dest for a in parser._actions}
    assert "nested" not in flags and {"name", "window", "seeds", "budget", "quiet"} <= flags
    text = parser.format_help()
    assert "Seeds. (default: 0 1)" in text and "Symbol. (default: SPY)" in text


def test_every_evaluate_field_is_an_option_and_config_errors_still_refuse() -> None:
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_config_options(parser, EvaluateConfig)
    assert {a.dest for a in parser._actions} - {"help"} == set(EvaluateConfig.model_fields)
    with pytest.raises(ValueError, match="window=rolling needs train_bars"):
        config_from_args(EvaluateConfig, parser.parse_args(["--window", "rolling"]))


def test_aliases_keep_older_flags_working() -> None:
    class Config(BaseModel):
        file_tz: str | None = Field(default=None, description="Zone.")
        include_spy: bool = Field(default=True, description="SPY too.")

    parser = argparse.ArgumentParser(exit_on_error=False)
    add_config_options(
        parser, Config, aliases={"--tz": "file_tz", "--no-spy": ("include_spy", False)}
    )
    old = config_from_args(Config, parser.parse_args(["--tz", "Etc/GMT", "--no-spy"]))
    new = config_from_args(Config, parser.parse_args(["--file-tz", "Etc/GMT", "--no-include-spy"]))
    assert old == new == Config(file_tz="Etc/GMT", include_spy=False)
    assert config_from_args(Config, parser.parse_args([])).model_fields_set == set()
    assert "same as --no-include-spy" in parser.format_help()
    with pytest.raises(ValueError, match="names no option"):
        add_config_options(argparse.ArgumentParser(), Config, aliases={"--x": "nope"})


def test_dates_times_json_maps_and_hidden_defaults() -> None:
    class Config(BaseModel):
        day: date = Field(default=date(2024, 1, 1), description="Day; unset: from the data.")
        since: datetime | None = Field(default=None, description="Since.")
        column_map: dict[str, str] | None = Field(default=None, description="Map.")
        inputs: list[str] = Field(default_factory=list, description="Inputs.")

    parser = argparse.ArgumentParser(exit_on_error=False)
    add_config_options(parser, Config, hide_default=("day",))
    args = parser.parse_args(
        ["--day", "2024-02-01", "--since", "2024-01-01T00:00Z", "--column-map", '{"close": "Last"}']
    )
    parsed = config_from_args(Config, args)
    assert parsed.day == date(2024, 2, 1) and parsed.since == datetime(2024, 1, 1, tzinfo=UTC)
    assert parsed.column_map == {"close": "Last"}
    text = " ".join(parser.format_help().split())
    assert "--day YYYY-MM-DD Day; unset: from the data. --since" in text  # no fixed default shown
    assert "--column-map JSON" in text and "(default: )" not in text
    with pytest.raises(argparse.ArgumentError):
        parser.parse_args(["--column-map", "close=Last"])


def _subparser(command: str) -> argparse.ArgumentParser:
    from flows.cli import build_parser

    [commands] = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    parser: argparse.ArgumentParser = commands.choices[command]
    return parser


@pytest.mark.parametrize(
    ("command", "model"),
    [
        ("demo", config.DemoConfig),
        ("ingest", config.IngestBarsConfig),
        ("scrape", config.ScrapeRedditConfig),
        ("train", config.TrainAgentConfig),
        ("evolve", config.EvolveConfig),
        ("backtest", config.BacktestConfig),
        ("evaluate", config.EvaluateConfig),
        ("select-agent", config.SelectAgentConfig),
        ("trade", config.LiveTradingConfig),
        ("nightly", config.NightlyRetrainConfig),
        ("crypto", config.CryptoTradingConfig),
    ],
)
def test_each_flow_command_offers_its_configs_fields_and_no_other_option(
    command: str, model: type[BaseModel]
) -> None:
    """Typed once: a flow command's options are its config's fields (nested configs aside)."""
    dests = {a.dest for a in _subparser(command)._actions} - {"help"}
    nested = {
        name
        for name, field in model.model_fields.items()
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
    }
    extra = {"ingest": {"json"}}.get(command, set())
    assert dests == set(model.model_fields) - nested | extra
    assert config_from_args(model, _subparser(command).parse_args([])) == model()


def test_renamed_flags_still_parse_as_before() -> None:
    ingest = _subparser("ingest").parse_args(["--source", "file", "--path", "a.csv", "--tz", "UTC"])
    assert ingest.file_tz == "UTC"
    assert _subparser("ingest").parse_args(["--extended-hours"]).regular_hours_only is False
    assert _subparser("trade").parse_args(["--speed", "60"]).replay_speed == 60.0
    assert _subparser("nightly").parse_args(["--no-spy"]).include_spy is False
    train = _subparser("train").parse_args(["--no-resume", "--no-flatten-at-close"])
    assert config_from_args(config.TrainAgentConfig, train).model_fields_set == {
        "resume",
        "flatten_at_close",
    }
