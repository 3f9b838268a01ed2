"""flows.cli_options: one command-line option per config field, parsed back into the config."""

from __future__ import annotations

import argparse
from typing import Literal

import pytest
from pydantic import BaseModel, Field

from flows.cli_options import add_config_options, config_from_args
from flows.config import EvaluateConfig


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
