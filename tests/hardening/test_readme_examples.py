"""The README's examples as written: every command is one the install provides, and the quick start runs."""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import importlib.util
import io
import json
import re
import shlex
import tomllib
import typing
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from core.configs import BacktestConfig, IngestBarsConfig, TrainAgentConfig
from flows import cli
from warehouse.db import connect

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
SPAN = re.compile(r"`([^`]+)`")
# First words that make an inline code span a shell command (besides `.venv/bin/...`).
COMMAND_WORDS = frozenset({"make", "tradingml", "prefect", "duckdb", "python", "python3", "cp"})
SHELL_BUILTINS = frozenset({"cp", "export", "cd"})
# The README's train example trains 3 seeds x 1000 cycles (~9 minutes on 2 cores): the
# chain runs it with its own --cycles option set to this instead.
CHAIN_CYCLES = 4


def _readme() -> str:
    return README.read_text(encoding="utf-8")


def _blocks(*langs: str) -> list[str]:
    return [body for lang, body in FENCE.findall(_readme()) if lang in langs]


def readme_commands() -> list[list[str]]:
    """Every shell command the README shows: lines of its shell blocks and command-like inline spans."""
    commands = []
    for body in _blocks("bash", "sh", "shell", "console"):
        for line in body.splitlines():
            words = shlex.split(line, comments=True)
            if words:
                commands.append(words)
    prose = FENCE.sub("", _readme())
    for span in SPAN.findall(prose):
        text = " ".join(span.split()).replace("[", "").replace("]", "")
        first = text.split(" ", 1)[0]
        if first in COMMAND_WORDS or first.startswith(".venv/bin/"):
            commands.append(shlex.split(text))
    return commands


def _program(words: list[str]) -> str:
    return words[0].removeprefix(".venv/bin/")


def tradingml_examples() -> list[list[str]]:
    """The argv (after `tradingml`) of each `tradingml` command in the README."""
    return [words[1:] for words in readme_commands() if _program(words) == "tradingml"]


def readme_sql() -> list[str]:
    """Each statement of the README's SQL blocks, comments dropped."""
    statements = []
    for body in _blocks("sql"):
        code = "\n".join(line for line in body.splitlines() if not line.lstrip().startswith("--"))
        statements += [s.strip() for s in code.split(";") if s.strip()]
    return statements


def _console_scripts() -> set[str]:
    return {ep.name for ep in importlib.metadata.entry_points(group="console_scripts")}


def _make_targets_and_variables() -> tuple[set[str], set[str]]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([A-Za-z][\w-]*):", text, re.M))
    variables = set(re.findall(r"\$\(([A-Z_]+)\)", text))
    return targets, variables


def _benchmark_names() -> set[str]:
    return {
        m
        for path in (ROOT / "benchmarks").glob("bench_*.py")
        for m in re.findall(r'@benchmark\("([^"]+)"\)', path.read_text(encoding="utf-8"))
    }


def _deployments() -> dict[str, type[BaseModel] | None]:
    """'flow/deployment' -> the config model its flow takes, for every deployment in prefect.yaml."""
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text(encoding="utf-8"))
    out: dict[str, type[BaseModel] | None] = {}
    for dep in spec["deployments"]:
        file, fn = dep["entrypoint"].split(":")
        flow = getattr(importlib.import_module(file.removesuffix(".py").replace("/", ".")), fn)
        hint = typing.get_type_hints(flow.fn).get("config")
        models = [a for a in typing.get_args(hint) or (hint,) if isinstance(a, type)]
        config = next((a for a in models if issubclass(a, BaseModel)), None)
        out[f"{flow.name}/{dep['name']}"] = config
    return out


def _check_tradingml(words: list[str]) -> str | None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "scripts"
    ]
    if "tradingml" not in scripts:
        return "pyproject.toml installs no `tradingml` command"
    # Prose names a command (`tradingml sql`) without its required arguments: then the
    # subcommand must exist; anything longer is an invocation and must parse.
    argv = words[1:] if len(words) > 2 else [*words[1:], "--help"]
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            cli.build_parser().parse_args(argv)
    except SystemExit as exc:
        if exc.code != 0 or len(words) > 2:
            return "tradingml does not accept these arguments"
    return None


def _check_make(words: list[str]) -> str | None:
    targets, variables = _make_targets_and_variables()
    for word in words[1:]:
        if "=" in word:
            name, value = word.split("=", 1)
            if name not in variables:
                return f"the Makefile reads no variable {name}"
            if name == "ONLY":
                names = _benchmark_names()
                unknown = [w for w in value.split(",") if not any(n.startswith(w) for n in names)]
                if unknown:
                    return f"no benchmark named {unknown} (have {sorted(names)})"
        elif word not in targets:
            return f"the Makefile has no target {word!r}"
    return None


def _check_prefect(words: list[str], deployments: dict[str, type[BaseModel] | None]) -> str | None:
    if "prefect" not in _console_scripts():
        return "the install provides no `prefect` command"
    args = words[1:]
    if args[:2] == ["deployment", "run"] or args[:3] in (
        ["deployment", "schedule", "ls"],
        ["deployment", "schedule", "resume"],
    ):
        name = args[3] if args[1] == "schedule" else args[2]
        if name not in deployments:
            return f"prefect.yaml has no deployment {name!r}"
        if "--params" in args:
            params = json.loads(args[args.index("--params") + 1])
            config = deployments[name]
            if config is None:
                return f"{name} takes no config"
            config.model_validate(params.get("config", {}))
    return None


def _check_python(words: list[str]) -> str | None:
    if "-m" in words:
        module = words[words.index("-m") + 1]
        if importlib.util.find_spec(module) is None:
            return f"no module {module}"
    return None


def test_every_readme_command_is_one_the_install_provides() -> None:
    commands = readme_commands()
    assert len([c for c in commands if _program(c) == "tradingml"]) >= 10
    deployments = _deployments()
    problems = []
    for words in commands:
        program = _program(words)
        if program == "tradingml":
            problem = _check_tradingml(words)
        elif program == "make":
            problem = _check_make(words)
        elif program == "prefect":
            problem = _check_prefect(words, deployments)
        elif program in ("python", "python3"):
            problem = _check_python(words)
        elif program == "dask":  # the Dask CLI the distributed dependency installs
            problem = None if "dask" in _console_scripts() else "the install provides no `dask`"
        elif program == "cp":
            problem = None if (ROOT / words[1]).exists() else f"no file {words[1]}"
        elif program in SHELL_BUILTINS:
            problem = None
        else:
            problem = f"`{program}` is not a command this project installs"
        if problem:
            problems.append(f"{shlex.join(words)}: {problem}")
    assert problems == []


def _range_of(argv: list[str]) -> tuple[date, date]:
    args = cli.build_parser().parse_args(argv)
    return IngestBarsConfig(source=args.source, start=args.start, end=args.end).date_range()


def test_the_example_ingest_range_fits_the_train_and_backtest_defaults() -> None:
    ingests = [a for a in tradingml_examples() if a[:3] == ["ingest", "--source", "synthetic"]]
    assert ingests, "the README shows no synthetic ingest"
    start, end = _range_of(ingests[0])
    train, backtest = TrainAgentConfig(), BacktestConfig()
    assert start <= train.train_start and train.test_end <= end, (start, end)
    assert start <= backtest.start and backtest.end <= end, (start, end)
    for argv in tradingml_examples():
        if argv[:1] == ["backtest"]:
            args = cli.build_parser().parse_args(argv)
            assert start <= (args.start or backtest.start) < (args.end or backtest.end) <= end


@pytest.fixture
def isolated_warehouse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The default warehouse and data folder point into tmp_path, as a fresh checkout's would."""
    from core.settings import get_settings

    monkeypatch.setenv("TRADINGML_WAREHOUSE", str(tmp_path / "warehouse.duckdb"))
    monkeypatch.setenv("TRADINGML_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield tmp_path / "warehouse.duckdb"
    get_settings.cache_clear()


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    assert code == 0, f"tradingml {shlex.join(argv)} exited {code}: {err[-2000:]}"
    return out


def test_the_readme_sql_and_python_run_on_a_fresh_warehouse(
    isolated_warehouse: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with connect(isolated_warehouse):
        pass  # created and migrated, as any first flow run does
    statements = readme_sql()
    assert len(statements) >= 8
    for statement in statements:
        _run(["sql", statement], capsys)
    for block in _blocks("python"):
        exec(compile(block, str(README), "exec"), {"__name__": "readme_example"})


def _runnable(argv: list[str]) -> bool:
    """Not a placeholder such as `tradingml sql "..."`."""
    return not any("..." in word for word in argv)


def _example(prefix: list[str]) -> list[str]:
    found = [a for a in tradingml_examples() if a[: len(prefix)] == prefix and _runnable(a)]
    assert found, f"the README shows no `tradingml {shlex.join(prefix)}` example"
    return found[0]


def _with_cycles(argv: list[str], cycles: int) -> list[str]:
    i = argv.index("--cycles")
    return [*argv[: i + 1], str(cycles), *argv[i + 2 :]]


@pytest.mark.slow
@pytest.mark.prefect
@pytest.mark.usefixtures("prefect_harness")
def test_the_quick_start_commands_run_as_written(
    isolated_warehouse: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """ingest -> train -> promote -> backtest -> trade -> sql, each the README's own command.

    Only two changes: the train example runs with fewer cycles (its own --cycles option),
    and promote's `<model_id>` placeholder is the model that train registered.
    """
    _run(_example(["ingest", "--source", "synthetic"]), capsys)
    train = _example(["train", "--cycles"])
    assert "--symbols" not in train and "--train-start" not in train, "not the defaults' example"
    _run(_with_cycles(train, CHAIN_CYCLES), capsys)
    with connect(isolated_warehouse, read_only=True) as con:
        rows = con.execute(
            "SELECT model_id FROM models WHERE kind = 'dqn' AND symbol = 'SPY' ORDER BY model_id"
        ).fetchall()
    assert rows, "train registered no SPY model"
    promote = _example(["promote"])
    assert promote[1].startswith("<"), promote
    out = _run(["promote", str(rows[0][0]), *promote[2:]], capsys)
    assert "is now production" in out
    out = _run(_example(["backtest"]), capsys)
    assert "Momentum (30 bars)" in out and "report:" in out
    out = _run(_example(["trade"]), capsys)
    assert re.search(r"^status\s+traded$", out, re.M), out
    for argv in tradingml_examples():
        if argv in (["settings"],) or (argv[:1] == ["sql"] and len(argv) > 1 and _runnable(argv)):
            _run(argv, capsys)
    assert "SPY" in _run(_example(["sql"]), capsys)
    for statement in readme_sql():
        _run(["sql", statement], capsys)
