"""Settings and flow configs refuse nonsense numbers (negative timeouts, zero windows, negative seeds) by name.

Through the command line each is one `error:` line naming the environment variable or the
option's field; a guard checks that every numeric field has a lower bound, so a new one
cannot be added without deciding what is nonsense.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

import core.configs as flow_configs
from core.configs import (
    DemoConfig,
    EvolveConfig,
    IngestBarsConfig,
    NightlyRetrainConfig,
    ScrapeRedditConfig,
    TrainAgentConfig,
)
from core.settings import Settings
from flows.cli import main

# Fields that may be negative on purpose (none today; e.g. a margin read as a tolerance).
SIGNED_ON_PURPOSE: set[tuple[str, str]] = set()


def stderr_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("TRADINGML_LOCK_TIMEOUT_S", "-1", "greater than 0"),
        ("TRADINGML_LOCK_TIMEOUT_S", "0", "greater than 0"),
        ("TRADINGML_SYNTHETIC_SEED", "-1", "greater than or equal to 0"),
    ],
)
def test_a_nonsense_setting_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variable: str,
    value: str,
    says: str,
) -> None:
    monkeypatch.setenv(variable, value)
    assert main(["settings"]) == 2
    assert stderr_lines(capsys.readouterr().err) == [
        f"error: invalid Settings: {variable}: Input should be {says}"
    ]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["ingest", "--seed", "-1"], "invalid IngestBarsConfig: seed: Input should be"),
        (["train", "--seeds", "1", "-2"], "invalid TrainAgentConfig: seeds.1: Input should be"),
        (["evolve", "--seeds", "-1", "2"], "invalid EvolveConfig: seeds.0: Input should be"),
    ],
)
def test_a_nonsense_option_is_refused_naming_the_field(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    expected: str,
) -> None:
    # A configured server: no "temporary Prefect server" notice, whatever ran before this test
    # (the refusal comes before any connection; port 9 is never dialled).
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    assert main(argv) == 2
    lines = stderr_lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith(f"error: {expected}"), lines


@pytest.mark.parametrize(
    ("model", "fields", "where"),
    [
        (Settings, {"lock_timeout_s": -5.0}, "lock_timeout_s"),
        (IngestBarsConfig, {"seed": -1}, "seed"),
        (DemoConfig, {"seed": -1}, "seed"),
        (ScrapeRedditConfig, {"seed": -1}, "seed"),
        (TrainAgentConfig, {"seeds": [-1]}, "seeds.0"),
        (EvolveConfig, {"search_seed": -1}, "search_seed"),
        (NightlyRetrainConfig, {"seeds": [-3]}, "seeds.0"),
        (
            NightlyRetrainConfig,
            {"forecaster_return_windows": [60, 0]},
            "forecaster_return_windows.1",
        ),
        (NightlyRetrainConfig, {"forecaster_vol_windows": [1]}, "forecaster_vol_windows.0"),
    ],
)
def test_nonsense_values_are_refused_by_field(
    model: type[BaseModel], fields: dict[str, Any], where: str
) -> None:
    extra = {"_env_file": None} if model is Settings else {}
    with pytest.raises(ValidationError) as err:
        model(**extra, **fields)
    assert [".".join(str(p) for p in e["loc"]) for e in err.value.errors()] == [where]


def numeric_fields() -> list[tuple[type[BaseModel], str, str]]:
    """(model, field, annotation) of every int/float field of Settings and the flow configs."""
    models = [Settings] + [
        m
        for m in vars(flow_configs).values()
        if isinstance(m, type)
        and issubclass(m, BaseModel)
        and m.__module__ == flow_configs.__name__
    ]
    return [
        (model, name, str(info.annotation))
        for model in models
        for name, info in model.model_fields.items()
        if ("int" in str(info.annotation) or "float" in str(info.annotation))
        and "Literal" not in str(info.annotation)
    ]


def test_every_numeric_setting_and_config_field_refuses_a_negative_value() -> None:
    """A guard for fields to come: each has a lower bound (or is signed on purpose)."""
    fields = numeric_fields()
    assert len(fields) > 50  # the walk found the configs
    accepted = []
    for model, name, annotation in fields:
        if (model.__name__, name) in SIGNED_ON_PURPOSE:
            continue
        value: Any = [-1] if annotation.startswith("list") else -1
        extra = {"_env_file": None} if model is Settings else {}
        try:
            model(**extra, **{name: value})
        except ValidationError as err:
            bounds = {"greater_than", "greater_than_equal"}
            if any(e["loc"][0] == name and e["type"] in bounds for e in err.errors()):
                continue
        accepted.append(f"{model.__name__}.{name}")
    assert accepted == []
