"""`nightly-retrain` flow: coin forecasters -> SPY and coin agents in parallel -> SVM allocator -> promotion gate.

Steps, over one window of minute bars (default: the year up to the newest stored bar):

a. data: bars per symbol from the warehouse; each coin's point-in-time sentiment (the mean
   VADER compound of the posts mentioning it, counted from created_utc + lag); no posts:
   sentiment reads 0, and a log line says so;
b. forecasters: per coin, purged walk-forward CV, a final model and point-in-time
   walk-forward forecasts (one task per coin) -> `xgb_forecaster` candidates + artifacts,
   forecasts into `forecasts`;
c. agents: the SPY agent (as train-agent trains it) and one agent per coin whose inputs
   stack the coin's forecast and sentiment, trained in parallel through the Prefect task
   runner (thread pool by default, a process pool, or Dask) with the same weights for a
   seed on each; newest `agent_test_days` days held out;
d. the SVM allocator on a daily per-coin panel of the coin agents' outputs on the held-out
   days only (models/portfolio.py), its objective their trading P&L scaled by its weights:
   fitted on the earlier held-out days, judged on the later ones (nested walk-forward);
e. the gate (models/gate.py): each candidate against the champion on the same
   out-of-sample data and the naive baselines -- agents by SPA + deflated Sharpe on per-bar
   held-out returns (each recorded in `trials` first), forecasters by a HAC test of the
   out-of-fold rank IC for overlapping labels, the allocator by SPA + deflated Sharpe on its
   daily traded returns over its judged days (recorded in `trials` first);
   every decision and its statistics into `promotion_decisions` and a Prefect artifact;
   the best passing candidate per kind and symbol is promoted;
f. a summary per coin (forecaster, agents, verdicts) and the failures.

A symbol that fails (no bars, too few labeled rows, an exception in its task) is recorded
in the summary and the others go on. Re-running the flow on the same data trains nothing
twice: forecasters and the allocator are refitted identically and not re-registered,
agents already registered are reused, and a model already in production is not re-judged.
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.futures import PrefectFuture
from prefect.logging import get_run_logger
from prefect.runtime import flow_run
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from core import metrics as core_metrics
from core.assets import infer_asset_class
from core.baselines import periods_per_year
from core.costs import configured_costs
from core.sessions import SessionRule, session_rule
from core.settings import get_settings
from flows.alerts import alerting
from flows.config import GateConfig, NightlyRetrainConfig
from flows.wiring import build_task_runner, share_api_with_workers
from models.allocator import (
    ALLOCATOR as ALLOCATOR_NAME,
)
from models.allocator import (
    BASELINES as ALLOCATOR_BASELINES,
)
from models.allocator import (
    FEATURES as ALLOCATOR_FEATURES,
)
from models.allocator import (
    INPUT_SPAN as ALLOCATOR_INPUT_SPAN,
)
from models.allocator import (
    AllocatorConfig,
    allocator_returns,
    load_allocator,
    save_allocator,
    split_out_of_sample,
    train_allocator,
)
from models.dqn import DQNParams
from models.env import Costs, Sessions
from models.evaluation import judge_candidate
from models.features import FeatureSpec
from models.forecaster import ForecasterConfig, forecaster_spec, load_forecaster
from models.gate import (
    ALLOCATOR_SYMBOL,
    GateDecision,
    HeldOutStreams,
    VerdictFunction,
    agent_decision,
    agent_decisions_on_streams,
    choose_promotions,
    forecaster_decision,
    streams_bars_per_year,
)
from models.genome import Genome
from models.portfolio import (
    compute_allocator_panel,
    compute_q_advantage,
    daily_trading_returns,
    with_agent_trading,
)
from models.qnet import Architecture, NestedLSTMQNet
from models.registry import (
    load_registered_agent,
    load_registered_genome,
    unpack_folder,
    verify_artifact,
)
from models.sentiment import MODEL_NAME, compute_sentiment_inputs, sentiment_lookback
from models.threads import runner_threads
from models.train import evaluate_network, evaluate_network_with_returns, held_out_data
from tasks.agents import store_trained_agent, train_agent_on_bars
from tasks.forecasters import fit_forecaster
from trading.alerts import send_gate_verdicts
from trading.inputs import input_loader, load_training_inputs
from warehouse.bars import load_bars, newest_bars
from warehouse.db import connect
from warehouse.forecasts import FORECASTER_KIND, register_forecaster, write_forecasts
from warehouse.gate import write_promotion_decisions
from warehouse.posts import load_scored_posts
from warehouse.registry import (
    load_model_row,
    production_model_id,
    promote,
    resolve_genome,
    write_model,
)
from warehouse.symbols import load_symbols
from warehouse.trials import load_trial_sharpes, record_trial

TIMEFRAME = "1Min"
AGENT_KIND = "dqn"
ALLOCATOR_KIND = "svm_allocator"
ALLOCATOR_TRIAL_KIND = "allocator"  # the trials table's kind for svm_allocator candidates


def _slug(symbol: str) -> str:
    return symbol.replace("/", "-")


def _fingerprint(*parts: Any) -> str:
    """A short hash of frames (their numeric and time columns) and JSON-able values: names data in ids."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, pl.DataFrame):
            for name in part.columns:
                col = part.get_column(name)
                if col.dtype.is_numeric() or col.dtype.is_temporal():
                    digest.update(name.encode())
                    digest.update(col.to_physical().fill_null(0).to_numpy().tobytes())
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:10]


def _failure(symbol: str, stage: str, exc: BaseException | str) -> dict[str, str]:
    if isinstance(exc, BaseException):
        text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    else:
        text = exc
    return {"symbol": symbol, "stage": stage, "error": text}


def _task_runner(config: NightlyRetrainConfig, dask_address: str | None) -> TaskRunner[Any]:
    if config.runner == "thread":
        # wiring.build_task_runner knows 'serial' (one thread), 'process' and 'dask'.
        return ThreadPoolTaskRunner(max_workers=config.workers)
    share_api_with_workers()
    scratch = Path(tempfile.mkdtemp(prefix="tradingml-dask-"))
    return build_task_runner(config.runner, config.workers, dask_address, scratch)


@flow(name="nightly-retrain", log_prints=True)
def nightly_retrain(config: NightlyRetrainConfig | None = None) -> dict[str, Any]:
    """Retrain forecasters, agents and the allocator on the newest data; promote what beats production."""
    config = config or NightlyRetrainConfig()
    settings = get_settings()
    dask_address = config.dask_address or settings.dask_address
    runner = _task_runner(config, dask_address)
    with alerting("nightly"):  # the gate's verdicts become Prefect events
        return retrain_and_gate.with_options(task_runner=runner)(config, datetime.now(UTC))


# ---------------------------------------------------------------------------- state


@dataclass
class _Window:
    start: datetime
    end: datetime
    test_start: datetime

    @property
    def train_range(self) -> tuple[datetime, datetime]:
        return (self.start, self.test_start)

    @property
    def test_range(self) -> tuple[datetime, datetime]:
        return (self.test_start, self.end)

    @property
    def last_day(self) -> date:
        return (self.end - timedelta(days=1)).date()


@dataclass
class _Symbol:
    """What the flow knows about one traded symbol as it goes."""

    symbol: str
    bars: pl.DataFrame
    spec: FeatureSpec
    costs: Costs
    """What its trades cost: its asset class's schedule unless the config pins fee/slippage."""
    sentiment: pl.DataFrame | None = None
    forecasts: pl.DataFrame | None = None
    forecaster: dict[str, Any] | None = None
    agent_ids: list[str] = field(default_factory=list)
    agents: list[dict[str, Any]] = field(default_factory=list)
    rule: SessionRule | None = None
    """How its agents' episodes are cut (as `train` cuts them); None: inferred from the symbol."""
    genome: Genome | None = None
    """The registered genome its agents train with (spec already applied); None: the built-ins."""
    genome_id: str = "builtin"
    """That genome's registry id, recorded with each agent ('builtin' without one)."""
    input_params: dict[str, Any] = field(default_factory=dict)
    """How its sentiment/forecast inputs were read, for its agents' params (SPY; coins: empty)."""


@dataclass
class _Run:
    config: NightlyRetrainConfig
    warehouse: str
    models_dir: Path
    window: _Window
    decided_at: datetime
    failures: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    decisions: list[tuple[GateDecision, bool]] = field(default_factory=list)


# ---------------------------------------------------------------------------- the flow body


@flow(name="nightly-retrain-models")
def retrain_and_gate(config: NightlyRetrainConfig, decided_at: datetime) -> dict[str, Any]:
    """The steps of nightly-retrain, in the task runner the parent flow chose."""
    logger = get_run_logger()
    settings = get_settings()
    warehouse = config.warehouse or str(settings.warehouse_path)
    models_dir = Path(config.models_dir) if config.models_dir else settings.data_dir / "models"
    coins = list(settings.coin_symbols if config.coins is None else config.coins)
    spy = list(config.spy_symbols) if config.include_spy else []
    run = _Run(
        config,
        warehouse,
        models_dir,
        _resolve_window(config, warehouse, [*coins, *spy]),
        decided_at,
    )
    w = run.window
    logger.info(
        "nightly-retrain over %s to %s (held out from %s), %d coin(s)%s, runner %s x%d",
        w.start.date(),
        w.last_day,
        w.test_start.date(),
        len(coins),
        " + SPY" if spy else "",
        config.runner,
        config.workers,
    )

    # a. data
    symbols = _load_symbols(run, coins, spy, logger.info)

    # b. forecasters (one task per coin), then c. agents (one task per symbol and seed)
    forecaster_futures = {
        coin: _submit_forecaster(run, s) for coin, s in symbols.items() if s.spec.forecast
    }
    agent_futures: dict[str, list[tuple[str, PrefectFuture[dict[str, Any]] | None]]] = {}
    if spy and spy[0] in symbols:
        agent_futures[spy[0]] = _submit_agents(run, symbols[spy[0]])
    for coin, future in forecaster_futures.items():
        s = symbols[coin]
        try:
            s.forecaster = _record_forecaster(run, s, future.result())
        except Exception as exc:  # noqa: BLE001 -- a failed coin must not stop the others
            s.forecaster = None
            run.failures.append(_failure(coin, "forecaster", exc))
            logger.warning("%s: forecaster failed: %s", coin, exc)
            continue
        agent_futures[coin] = _submit_agents(run, s)
    for symbol, futures in agent_futures.items():
        s = symbols[symbol]
        for model_id, agent_future in futures:
            try:
                result = agent_future.result() if agent_future is not None else None
                if result is not None:
                    # Only this process writes the model store and the warehouse.
                    store_trained_agent(result, run.models_dir, run.warehouse)
                s.agents.append(_agent_summary(run, model_id, result))
            except Exception as exc:  # noqa: BLE001
                run.failures.append(_failure(symbol, "agent", exc))
                logger.warning("%s: agent %s failed: %s", symbol, model_id, exc)
                continue
            s.agent_ids.append(model_id)

    # e. the gate for forecasters and agents
    for s in symbols.values():
        if s.forecaster is not None:
            if s.forecaster.get("stage") == "production":
                logger.info("%s is already the production forecaster", s.forecaster["model_id"])
            else:
                _gate(run, [_forecaster_decision(run, s)], logger.info)
        if s.agent_ids:
            try:
                decisions = agent_decisions(
                    run.warehouse,
                    s.symbol,
                    s.agent_ids,
                    s.bars,
                    (run.window.start, run.window.end),
                    run.window.test_start,
                    s.costs,
                    run.config.gate,
                    s.sentiment,
                    s.forecasts,
                )
            except Exception as exc:  # noqa: BLE001
                run.failures.append(_failure(s.symbol, "gate", exc))
                logger.warning("%s: agent gate failed: %s", s.symbol, exc)
                continue
            _gate(run, decisions, logger.info)

    # d. the allocator over the coins' agents, and its gate
    allocator = _allocator_step(run, [s for s in symbols.values() if s.spec.forecast], logger)

    summary = _summary(run, coins, spy, symbols, allocator)
    _publish(run, summary)
    _fail_if_nothing_trained(run, [*spy[:1], *coins], symbols)
    return summary


class NightlyRetrainFailedError(RuntimeError):
    """Every symbol of a nightly-retrain run failed: the run must end Failed, not Completed."""


def _fail_if_nothing_trained(run: _Run, units: list[str], symbols: dict[str, _Symbol]) -> None:
    """A failing symbol leaves the others trained; a run where every symbol failed fails."""
    if not units or any(name in symbols and symbols[name].agent_ids for name in units):
        return
    why = "; ".join(
        f"{f['symbol']} ({f['stage']}): {' '.join(f['error'].split())[:160]}" for f in run.failures
    )
    raise NightlyRetrainFailedError(
        f"nightly-retrain trained no agent: all {len(units)} symbol(s) failed -- {why or 'no reason recorded'}"
    )


# ---------------------------------------------------------------------------- a. data


def _resolve_window(config: NightlyRetrainConfig, warehouse: str, wanted: list[str]) -> _Window:
    newest = newest_bars(warehouse, wanted, TIMEFRAME)
    if config.end is None and not newest:
        raise ValueError(
            f"no {TIMEFRAME} bars for {wanted} in {warehouse}; run ingest-bars (or make demo) first"
        )
    newest_day = max(newest.values()).astimezone(UTC).date() if newest else date.min
    start, end = config.window(newest_day)
    test_start = config.test_start(end)
    if test_start <= start:
        raise ValueError(
            f"agent_test_days={config.agent_test_days} leaves no training days in {start.date()} "
            f"to {end.date()}"
        )
    return _Window(start, end, test_start)


def _session_rule(
    con: Any, symbol: str, timeframe: str, episode_bars: int | None = None
) -> SessionRule:
    """The rule `train` cuts `symbol`'s episodes with: the timeframe and the calendar stored
    with the symbol (inferred from it when none is stored); episode_bars None: the timeframe's default."""
    info = load_symbols(con, [symbol]).get(symbol)
    calendar = info.calendar if info is not None else None
    return session_rule(symbol, timeframe, calendar, episode_bars=episode_bars)


def _agent_genome(con: Any, genome_id: str, symbol: str) -> tuple[Genome | None, str]:
    """The genome `genome_id` names for `symbol` and its registry id, resolved as train-agent
    resolves it (warehouse.registry.resolve_genome; sha256 checked): (None, 'builtin') without one."""
    row = resolve_genome(con, genome_id, symbol)
    if row is None:
        return None, "builtin"
    return load_registered_genome(row), str(row["model_id"])


def _genome_spec(genome: Genome, base: FeatureSpec) -> FeatureSpec:
    """The genome's spec on `base`; sentiment inputs the config set explicitly (already in `base`)
    override the genome's, as its architecture and params options do."""
    spec = genome.feature_spec(base)
    return replace(spec, sentiment_inputs=base.sentiment_inputs) if base.sentiment_inputs else spec


def _symbol_costs(
    con: Any, symbol: str, config: NightlyRetrainConfig, log: Callable[..., None]
) -> Costs:
    """configured_costs of the asset class stored with `symbol` (else inferred from its name),
    as train and backtest charge it; logged once per symbol."""
    info = load_symbols(con, [symbol]).get(symbol)
    asset_class = info.asset_class if info is not None else infer_asset_class(symbol)
    costs = configured_costs(asset_class, config.fee_bps, config.slippage_bps)
    log("%s: %s", symbol, costs.describe(asset_class))
    return costs


def _load_symbols(
    run: _Run, coins: list[str], spy: list[str], log: Callable[..., None]
) -> dict[str, _Symbol]:
    w = run.window
    lag = timedelta(minutes=get_settings().sentiment_lag_minutes)
    span = timedelta(minutes=run.config.sentiment_window_minutes)
    out: dict[str, _Symbol] = {}
    with connect(run.warehouse) as con:
        if spy:
            bars = load_bars(con, spy, TIMEFRAME, w.start, w.end)
            if bars.filter(pl.col("symbol") == spy[0]).height == 0:
                run.failures.append(_failure(spy[0], "data", f"no {TIMEFRAME} bars in the window"))
            else:
                spy_spec = FeatureSpec(
                    symbols=tuple(spy), sentiment_inputs=tuple(run.config.sentiment_inputs)
                )
                try:
                    genome, genome_id = _agent_genome(con, run.config.genome_id, spy_spec.traded)
                except Exception as exc:  # noqa: BLE001 -- a broken genome fails SPY, not the coins
                    run.failures.append(_failure(spy[0], "genome", exc))
                    log("%s: genome %s unusable: %s", spy[0], run.config.genome_id, exc)
                else:
                    if genome is not None:
                        spy_spec = _genome_spec(genome, spy_spec)
                        log("%s: agents train with genome %s", spy[0], genome_id)
                    out[spy[0]] = _Symbol(
                        spy[0],
                        bars,
                        spy_spec,
                        _symbol_costs(con, spy[0], run.config, log),
                        rule=_session_rule(con, spy[0], TIMEFRAME),
                        genome=genome,
                        genome_id=genome_id,
                    )
        for coin in coins:
            bars = load_bars(con, [coin], TIMEFRAME, w.start, w.end)
            if bars.height == 0:
                run.failures.append(
                    _failure(
                        coin, "data", f"no {TIMEFRAME} bars from {w.start.date()} to {w.last_day}"
                    )
                )
                log("%s: no %s bars in the window; skipped", coin, TIMEFRAME)
                continue
            spec = FeatureSpec(
                symbols=(coin,),
                sentiment=True,
                forecast=True,
                sentiment_inputs=tuple(run.config.sentiment_inputs),
            )
            out[coin] = _Symbol(
                coin,
                bars,
                spec,
                _symbol_costs(con, coin, run.config, log),
                rule=_session_rule(con, coin, TIMEFRAME),
            )
        lookback = sentiment_lookback(run.config.sentiment_inputs, span, lag)
        posts = load_scored_posts(con, w.start - lookback, w.end, MODEL_NAME)
        notes: list[str] = []
        if spy and spy[0] in out:
            # The SPY agent's inputs as train-agent reads them (its forecast, if it takes
            # one, from the symbol's production forecaster: none refuses it, never reads 0).
            try:
                inputs = load_training_inputs(con, out[spy[0]].spec, w.start, w.end, span)
            except ValueError as exc:
                run.failures.append(_failure(spy[0], "data", exc))
                log("%s: %s", spy[0], exc)
                del out[spy[0]]
            else:
                out[spy[0]].sentiment = inputs.sentiment
                out[spy[0]].forecasts = inputs.forecasts
                out[spy[0]].input_params = inputs.params
                notes += inputs.notes
    coins_in = [c for c in coins if c in out]
    if posts.height == 0 and coins_in:
        notes.append(
            f"no scored posts ({MODEL_NAME}) from {w.start.date()} to {w.end.date()}: every "
            "coin's sentiment input reads 0"
        )
    elif posts.height:
        for coin in coins_in:
            # The legacy `sentiment` column (sentiment_window_minutes) beside the spec's
            # aggregates: the coin's forecaster reads the former only (_forecaster_sentiment).
            frame, note = compute_sentiment_inputs(
                posts, coin, w.start, w.end, lag, out[coin].spec.sentiment_inputs, span
            )
            out[coin].sentiment = frame
            if note is not None:
                notes.append(note)
    for note in notes:
        run.notes.append(note)
        log(note)
    return out


def _forecaster_sentiment(s: _Symbol) -> pl.DataFrame | None:
    """The coin's sentiment frame as its forecaster reads it: ts, symbol, sentiment only, so
    the agents' extra aggregates never change a forecaster's inputs or its fingerprint."""
    if s.sentiment is None:
        return None
    return s.sentiment.select("ts", "symbol", "sentiment")


# ---------------------------------------------------------------------------- b. forecasters


def _forecaster_recipe(run: _Run, coin: str) -> tuple[FeatureSpec, dict[str, Any]]:
    c = run.config
    spec = replace(
        forecaster_spec(coin),
        return_windows=tuple(c.forecaster_return_windows),
        vol_windows=tuple(c.forecaster_vol_windows),
    )
    cfg = ForecasterConfig(
        **{
            **c.forecaster,
            "horizon_minutes": c.horizon_minutes,
            "every_minutes": c.forecast_every_minutes,
            "refit_every_days": c.refit_every_days,
            "n_jobs": c.forecaster_threads or _task_threads(c),
        }
    ).to_dict()
    return spec, cfg


def _recipe_only(cfg: dict[str, Any]) -> dict[str, Any]:
    """A forecaster config without its thread count: threads change speed, not the recipe
    (nor the model's id, which must not depend on the machine's cores)."""
    return {k: v for k, v in cfg.items() if k != "n_jobs"}


def _same_recipe(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return _recipe_only(a) == _recipe_only(b)


def _submit_forecaster(run: _Run, s: _Symbol) -> PrefectFuture[dict[str, Any]]:
    spec, cfg = _forecaster_recipe(run, s.symbol)
    model_id = (
        f"xgb-{_slug(s.symbol)}-{run.window.last_day:%Y%m%d}-"
        f"{_fingerprint(spec.to_dict(), _recipe_only(cfg), s.bars, _forecaster_sentiment(s))}"
    )
    champion, champion_recipe = _forecaster_champion(run, s.symbol, spec, cfg)
    s.forecaster = {"model_id": model_id, "champion": champion}
    extra = {
        "nightly": True,
        "window": [str(run.window.start.date()), str(run.window.last_day)],
        "data_sources": _sources(s.bars),
    }
    return fit_forecaster.submit(
        s.bars,
        spec.to_dict(),
        cfg,
        _forecaster_sentiment(s),
        model_id,
        extra,
        champion_recipe,
    )


def _forecaster_champion(
    run: _Run, coin: str, spec: FeatureSpec, cfg: dict[str, Any]
) -> tuple[dict[str, Any], tuple[dict[str, Any], dict[str, Any]] | None]:
    """The production forecaster and, when it is comparable and differs, its recipe to cross-validate."""
    with connect(run.warehouse) as con:
        champ_id = production_model_id(con, FORECASTER_KIND, coin)
        row = load_model_row(con, champ_id) if champ_id else None
    if row is None:
        return {"id": None, "note": "no production forecaster"}, None
    try:
        loaded = load_forecaster(Path(str(row["artifact_path"])), str(row["artifact_sha256"]))
    except Exception as exc:  # noqa: BLE001 -- an unloadable champion is judged by the baseline
        return {"id": champ_id, "note": f"champion unusable: {exc}"}, None
    champ_cfg = dict(loaded.meta.get("config") or {})
    if int(champ_cfg.get("horizon_minutes", -1)) != int(cfg["horizon_minutes"]):
        note = f"champion forecasts {champ_cfg.get('horizon_minutes')} minutes ahead, not {cfg['horizon_minutes']}"
        return {"id": champ_id, "note": note}, None
    if loaded.spec.schema_hash() == spec.schema_hash() and _same_recipe(champ_cfg, cfg):
        note = (
            "same recipe as the champion: a refit on newer data, judged against the zero forecast"
        )
        return {"id": champ_id, "note": note, "same_recipe": True}, None
    return {"id": champ_id, "note": "champion recipe cross-validated on the same folds"}, (
        loaded.spec.to_dict(),
        champ_cfg,
    )


def _record_forecaster(run: _Run, s: _Symbol, result: dict[str, Any]) -> dict[str, Any]:
    """Register the candidate (unless already registered) and write its point-in-time forecasts."""
    model_id = str(result["model_id"])
    forecasts: pl.DataFrame = result["forecasts"]
    spec, cfg = _forecaster_recipe(run, s.symbol)
    artifact = run.models_dir / model_id
    # The task returned the artifact as bytes (it may have run where this disk is not):
    # written here, its sha256 checked before it is in place.
    unpack_folder(result["artifact"]["files"], artifact, str(result["sha256"]))
    with connect(run.warehouse) as con:
        existing = load_model_row(con, model_id)
        if existing is None:
            register_forecaster(
                con,
                model_id=model_id,
                symbol=s.symbol,
                feature_schema_hash=spec.schema_hash(),
                metrics=result["metrics"],
                params={**cfg, "nightly": True, "data_sources": _sources(s.bars)},
                artifact_path=str(artifact),
                artifact_sha256=str(result["sha256"]),
                created_at=datetime.now(UTC),
            )
        written = write_forecasts(
            con,
            forecasts,
            model_id=model_id,
            horizon_minutes=run.config.horizon_minutes,
            created_at=datetime.now(UTC),
        )
    s.forecasts = forecasts
    get_run_logger().info(
        "%s: forecaster %s, %d forecasts stored (%d new)",
        s.symbol,
        model_id,
        written.total,
        written.inserted,
    )
    stage = existing["stage"] if existing is not None else "candidate"
    return {
        **(s.forecaster or {}),
        **{k: v for k, v in result.items() if k != "artifact"},
        "artifact_path": str(artifact),
        "forecasts": None,
        "stored": written.total,
        "stage": stage,
    }


# ---------------------------------------------------------------------------- c. agents


def _submit_agents(run: _Run, s: _Symbol) -> list[tuple[str, PrefectFuture[dict[str, Any]] | None]]:
    """One training task per seed; a model already registered (a re-run) is reused, not retrained."""
    c = run.config
    base = DQNParams.from_dict({**c.params, "cycles": c.cycles})
    params = base.to_dict()
    arch = Architecture.from_dict(c.architecture).to_dict()
    if s.genome is not None:
        # As train-agent: the genome's choices, then the config's explicit overrides on top.
        genome_arch, genome_params = s.genome.with_overrides(c.architecture, base, c.params)
        arch, params = genome_arch.to_dict(), genome_params.to_dict()
    forecaster_id = (s.forecaster or {}).get("model_id") or s.input_params.get("forecaster")
    data_key = _fingerprint(
        s.spec.to_dict(),
        arch,
        params,
        asdict(s.costs),
        forecaster_id,
        s.bars,
        s.sentiment,
        # Only with a genome: the ids of the built-in runs (and their reuse) stay as they were.
        *([s.genome_id] if s.genome is not None else []),
    )
    description = {
        "nightly": True,
        "symbols": list(s.spec.symbols),
        "genome": s.genome_id,
        "timeframe": TIMEFRAME,
        "train_range": [str(t) for t in run.window.train_range],
        "test_range": [str(t) for t in run.window.test_range],
        "forecaster": forecaster_id,
        "forecast_horizon_minutes": c.horizon_minutes,
        "sentiment": (
            f"compound_{c.sentiment_window_minutes}m" if s.sentiment is not None else "none"
        ),
        "data_sources": _sources(s.bars),
    }
    rule = s.rule if s.rule is not None else session_rule(s.symbol, TIMEFRAME)
    # How the ranges were cut, as `train` records it: `backtest` of the model cuts the same.
    description |= {"calendar": rule.calendar, "episode_bars": rule.episode_bars}
    # SPY: how its inputs were read (a forecaster's horizon), as input_loader reads them back.
    description |= s.input_params
    out: list[tuple[str, PrefectFuture[dict[str, Any]] | None]] = []
    for seed in c.seeds:
        run_id = f"nightly-{run.window.last_day:%Y%m%d}-{data_key}-s{seed}"
        model_id = f"dqn-{_slug(s.symbol)}-{run_id}"
        with connect(run.warehouse) as con:
            existing = load_model_row(con, model_id)
        if existing is not None:
            out.append((model_id, None))
            continue
        future = train_agent_on_bars.submit(
            s.bars,
            s.spec.to_dict(),
            run.window.train_range,
            run.window.test_range,
            s.sentiment,
            s.forecasts,
            run_id,
            seed,
            arch,
            params,
            asdict(s.costs),
            _checkpoint_dir(run, run_id),
            description,
            c.budget_s,
            asdict(rule),
            _task_threads(c),
        )
        out.append((model_id, future))
    return out


def _checkpoint_dir(run: _Run, run_id: str) -> str | None:
    """Where a training task checkpoints: the model store's folder on a thread or process runner
    (same machine: an interrupted run resumes); none on Dask, whose workers share no disk."""
    if run.config.runner == "dask":
        return None
    return str(run.models_dir / "checkpoints" / run_id)


def _task_threads(config: NightlyRetrainConfig) -> int:
    """Torch threads per training task (models.threads.runner_threads): one count for every
    task of the run, so weights do not depend on where a task ran."""
    on_cluster = config.runner == "dask" and bool(
        config.dask_address or get_settings().dask_address
    )
    return runner_threads(config.workers, on_cluster, config.threads)


def _agent_summary(run: _Run, model_id: str, result: dict[str, Any] | None) -> dict[str, Any]:
    with connect(run.warehouse) as con:
        row = load_model_row(con, model_id)
    if row is None:
        raise RuntimeError(f"agent {model_id} trained but is not in the registry")
    metrics = row["metrics"]
    return {
        "model_id": model_id,
        "seed": row["params"].get("seed"),
        "reused": result is None,
        "total_return": metrics.get("total_return"),
        "max_drawdown": metrics.get("max_drawdown"),
        "objective": metrics.get("objective"),
        "buy_and_hold_total_return": (metrics.get("baselines") or {})
        .get("buy_and_hold", {})
        .get("total_return"),
        "artifact_sha256": row["artifact_sha256"],
    }


# ---------------------------------------------------------------------------- e. the gate


def _forecaster_decision(run: _Run, s: _Symbol) -> GateDecision:
    f = s.forecaster or {}
    metrics = f.get("metrics") or {}
    champion = f.get("champion") or {}
    champ_cv = f.get("champion_cv")
    return forecaster_decision(
        candidate_id=str(f["model_id"]),
        kind=FORECASTER_KIND,
        symbol=s.symbol,
        metrics_=metrics,
        champion_id=champion.get("id") if champ_cv is not None else None,
        champion_metrics=champ_cv,
        alpha=run.config.gate.alpha,
        min_independent_labels=run.config.gate.forecaster_min_independent_labels,
        eval_start=_parse_ts(f.get("eval_start")),
        eval_end=_parse_ts(f.get("eval_end")),
        details={
            "champion": champion,
            "rows": metrics.get("n"),
            "rmse": metrics.get("rmse"),
            "naive_rmse": metrics.get("naive_rmse"),
            "directional_accuracy": metrics.get("directional_accuracy"),
            "champion_cv": {k: v for k, v in (champ_cv or {}).items() if k != "folds"},
        },
    )


@dataclass(frozen=True)
class HeldOutAgent:
    """A registered agent's network with its held-out sessions and bars, ready to be evaluated."""

    net: NestedLSTMQNet
    sessions: Sessions
    bars: pl.DataFrame
    symbol: str


def _held_out_agent(
    warehouse: str,
    row: dict[str, Any],
    bars: pl.DataFrame,
    window: tuple[datetime, datetime],
    test_start: datetime,
    sentiment: pl.DataFrame | None = None,
    forecasts: pl.DataFrame | None = None,
) -> HeldOutAgent:
    """Load a registered agent (sha256 checked) and cut its held-out sessions (see evaluate_registered_agent)."""
    policy = load_registered_agent(row)
    have = set(bars.get_column("symbol").unique().to_list())
    trained = row.get("params") or {}
    episode_bars = trained.get("episode_bars")
    with connect(warehouse) as con:
        if policy.spec.timeframe != TIMEFRAME or not set(policy.spec.symbols) <= have:
            bars = load_bars(con, list(policy.spec.symbols), policy.spec.timeframe, *window)
        # Its episodes as it was trained on them (the stored calendar, its episode length).
        rule = _session_rule(
            con,
            policy.spec.traded,
            policy.spec.timeframe,
            None if episode_bars is None else int(episode_bars),
        )
        wanted = (["sentiment"] if policy.spec.sentiment else []) + policy.spec.sentiment_columns()
        if wanted and (sentiment is None or not set(wanted) <= set(sentiment.columns)):
            # A model with other sentiment inputs than tonight's (a champion trained on
            # another config): its own inputs, read as backtest and live trading read them.
            loader = input_loader(policy.spec, trained)
            assert loader is not None  # it needs sentiment columns
            sentiment = loader(con, *window)[0]
    sessions, held_out = held_out_data(
        bars, policy.spec, policy.scaler, (test_start, window[1]), sentiment, forecasts, rule
    )
    return HeldOutAgent(policy.net, sessions, held_out, policy.spec.traded)


def evaluate_registered_agent(
    warehouse: str,
    row: dict[str, Any],
    bars: pl.DataFrame,
    window: tuple[datetime, datetime],
    test_start: datetime,
    costs: Costs,
    sentiment: pl.DataFrame | None = None,
    forecasts: pl.DataFrame | None = None,
) -> dict[str, dict[str, float]]:
    """A registered agent (sha256 checked on load) on the held-out sessions [test_start, window end).

    Its own features and scaler over the same bars, sentiment and forecasts as every other
    model judged on them; bars of assets its spec needs beyond `bars` are loaded.
    Returns evaluate_network's table: 'agent' beside 'buy_and_hold', 'flat', 'momentum_rule'.
    """
    h = _held_out_agent(warehouse, row, bars, window, test_start, sentiment, forecasts)
    return evaluate_network(h.net, h.sessions, costs, h.bars, h.symbol)


def agent_decisions(
    warehouse: str,
    symbol: str,
    candidate_ids: list[str],
    bars: pl.DataFrame,
    window: tuple[datetime, datetime],
    test_start: datetime,
    costs: Costs,
    gate: GateConfig,
    sentiment: pl.DataFrame | None = None,
    forecasts: pl.DataFrame | None = None,
    *,
    verdict_function: VerdictFunction = judge_candidate,
) -> list[GateDecision]:
    """The gate's decisions for a symbol's agent candidates (models.gate.agent_decisions_on_streams).

    Every candidate and the champion (the symbol's production dqn) are evaluated by the same
    code on the same held-out bars and costs, as per-bar return streams beside buy-and-hold,
    flat and the momentum rule (models.train.evaluate_network_with_returns: one pass). Each candidate is recorded
    as a trial (kind 'agent', dataset = the symbol, the held-out range) before any is
    judged, so the deflated Sharpe ratio counts tonight's seeds and every earlier trial on
    the symbol. Without a champion (or with one that cannot be evaluated) it must beat the
    baselines only. A candidate already in production is not judged again.
    ``verdict_function`` is models.evaluation.judge_candidate; tests may plant another.
    """
    span = (test_start, window[1])

    def streams(model_id: str, row: dict[str, Any]) -> HeldOutStreams:
        h = _held_out_agent(warehouse, row, bars, window, test_start, sentiment, forecasts)
        table, returns = evaluate_network_with_returns(h.net, h.sessions, costs, h.bars, h.symbol)
        return HeldOutStreams(model_id, returns, table)

    with connect(warehouse) as con:
        rows = {m: load_model_row(con, m) for m in candidate_ids}
        champ_id = production_model_id(con, AGENT_KIND, symbol)
        champ_row = load_model_row(con, champ_id) if champ_id else None
    champion: np.ndarray | None = None
    details: dict[str, Any] = {}
    if champ_id is not None and champ_row is not None and champ_id not in rows:
        try:
            champion = streams(champ_id, champ_row).returns["agent"]
            trained = (champ_row["params"] or {}).get("train_range")
            if trained and str(trained[-1]) > str(test_start):
                details["note"] = (
                    f"the champion trained until {trained[-1]}, into the held-out days: "
                    "its numbers there are in-sample (the comparison favours it)"
                )
        except Exception as exc:  # noqa: BLE001 -- an unusable champion: judged by the baselines
            details["note"] = f"champion {champ_id} could not be evaluated: {exc}"
    judged = {
        m: (row, streams(m, row))
        for m, row in rows.items()
        if row is not None and row["stage"] != "production"
    }
    if not judged:
        return []
    per_year = streams_bars_per_year(next(iter(judged.values()))[1], periods_per_year(symbol))
    with connect(warehouse) as con:
        for model_id, (row, st) in judged.items():
            record_trial(
                con,
                kind="agent",
                dataset=symbol,
                data_start=span[0],
                data_end=span[1],
                config={"model_id": model_id, "architecture": row.get("architecture")},
                seed=(row.get("params") or {}).get("seed"),
                sharpe=core_metrics.sharpe(st.returns["agent"], per_year),
                n_obs=int(st.returns["agent"].size),
                periods_per_year=per_year,
                created_at=datetime.now(UTC),
            )
        trials = load_trial_sharpes(con, symbol, "agent")
    trial_sharpes = trials.get_column("sharpe").drop_nulls().to_numpy()
    return agent_decisions_on_streams(
        [st for _, st in judged.values()],
        kind=AGENT_KIND,
        symbol=symbol,
        bars_per_year=per_year,
        n_trials=trials.height,
        trial_sharpes=trial_sharpes if trial_sharpes.size >= 2 else None,
        champion_id=champ_id,
        champion_returns=champion,
        alpha=gate.alpha,
        dsr_min=gate.dsr_min,
        drawdown_margin=gate.drawdown_margin,
        eval_start=span[0],
        eval_end=span[1],
        details=details,
        verdict_function=verdict_function,
    )


def apply_gate(
    warehouse: str,
    decisions: list[GateDecision],
    decided_at: datetime,
    *,
    promote_passing: bool = True,
    flow_run_id: str | None = None,
) -> dict[str, bool]:
    """Store the decisions in promotion_decisions and promote the best passing candidate of each
    kind and symbol (its artifact verified first); returns candidate_id -> promoted."""
    chosen = set(choose_promotions(decisions).values()) if promote_passing else set()
    promoted = {d.candidate_id: d.candidate_id in chosen for d in decisions}
    if not decisions:
        return promoted
    with connect(warehouse) as con:
        for d in decisions:
            if promoted[d.candidate_id]:
                row = load_model_row(con, d.candidate_id)
                if row is None:
                    raise KeyError(f"no model {d.candidate_id!r} in the registry")
                verify_artifact(row)  # never promote an artifact that is missing or altered
                promote(con, d.candidate_id, decided_at, actor="gate", reason=d.verdict.reason)
        write_promotion_decisions(
            con, [d.row(decided_at, flow_run_id, promoted[d.candidate_id]) for d in decisions]
        )
    send_gate_verdicts(decisions, promoted)
    return promoted


def _gate(run: _Run, decisions: list[GateDecision], log: Callable[..., None]) -> None:
    flow_run_id = str(flow_run.id) if flow_run.id else None
    promoted = apply_gate(
        run.warehouse,
        decisions,
        run.decided_at,
        promote_passing=run.config.gate.promote,
        flow_run_id=flow_run_id,
    )
    for d in decisions:
        run.decisions.append((d, promoted[d.candidate_id]))
        verdict = (
            "PROMOTED"
            if promoted[d.candidate_id]
            else ("passed" if d.verdict.passed else "rejected")
        )
        log("gate %s %s %s: %s (%s)", d.kind, d.symbol, d.candidate_id, verdict, d.verdict.reason)


# ---------------------------------------------------------------------------- d. allocator


def _allocator_config(run: _Run, costs: Costs | None = None) -> AllocatorConfig:
    """The config's overrides of AllocatorConfig; unless it sets cost_bps, a weight change pays
    the coins' own round trip (buy and sell at their asset class's costs)."""
    values: dict[str, Any] = {"periods_per_year": 365.0}
    if costs is not None:
        values["cost_bps"] = 2.0 * (costs.fee_bps + costs.slippage_bps) + costs.sell_fee_bps
    for key, value in run.config.allocator.items():
        values[key] = tuple(value) if isinstance(value, list) else value  # JSON lists -> grids
    return AllocatorConfig(**values)


def _panel_agent(run: _Run, s: _Symbol) -> dict[str, Any] | None:
    """The agent whose outputs feed the allocator: the coin's production agent after the gate,
    else tonight's first trained candidate."""
    with connect(run.warehouse) as con:
        prod = production_model_id(con, AGENT_KIND, s.symbol)
        chosen = prod or (s.agent_ids[0] if s.agent_ids else None)
        return load_model_row(con, chosen) if chosen else None


def _trained_until(row: dict[str, Any]) -> datetime:
    """The (exclusive) end of an agent's training data, from its registered train_range."""
    trained = (row.get("params") or {}).get("train_range")
    end = _parse_ts(trained[-1]) if trained else None
    if end is None:
        raise ValueError(
            f"agent {row['model_id']} has no train_range: its out-of-sample days are unknown"
        )
    return end if end.tzinfo is not None else end.replace(tzinfo=UTC)


def _coin_panel(run: _Run, s: _Symbol, row: dict[str, Any]) -> pl.DataFrame:
    """The coin's out-of-sample panel rows: the agent's inputs and its own trading on the held-out days.

    The agent's trading is its held-out book (greedy positions, the coin's costs) played by
    the code the agent gate uses (evaluate_network_with_returns), compounded to UTC days.
    Only rows whose input day starts at or after both the agent's training end and the
    held-out start are kept: the days the agent trained on, and the day straddling the split,
    are in-sample (models.allocator.check_out_of_sample refuses them).
    """
    trained_until = _trained_until(row)
    policy = load_registered_agent(row)
    q = compute_q_advantage(policy, s.bars, s.sentiment, s.forecasts)
    panel = compute_allocator_panel(
        s.symbol, s.bars, q, s.sentiment, s.forecasts, drawdown_days=run.config.drawdown_days
    )
    w = run.window
    h = _held_out_agent(
        run.warehouse, row, s.bars, (w.start, w.end), w.test_start, s.sentiment, s.forecasts
    )
    _, streams = evaluate_network_with_returns(h.net, h.sessions, s.costs, h.bars, h.symbol)
    daily = daily_trading_returns(h.bars.sort("ts").get_column("ts"), streams["agent"])
    first_input_day = max(trained_until, w.test_start)
    return with_agent_trading(panel, daily, str(row["model_id"]), trained_until).filter(
        pl.col("period") - ALLOCATOR_INPUT_SPAN >= first_input_day
    )


def _allocator_step(run: _Run, coins: list[_Symbol], logger: Any) -> dict[str, Any]:
    """Build the out-of-sample daily panel from the coin agents, train the allocator, register and gate it."""
    panels: list[pl.DataFrame] = []
    agents: dict[str, str] = {}
    sources: set[str] = set()
    for s in coins:
        if s.forecaster is None or not s.agent_ids:
            continue
        try:
            row = _panel_agent(run, s)
            if row is None:
                continue
            panels.append(_coin_panel(run, s, row))
            agents[s.symbol] = str(row["model_id"])
            sources.update(_sources(s.bars))
        except Exception as exc:  # noqa: BLE001
            run.failures.append(_failure(s.symbol, "allocator panel", exc))
            logger.warning("%s: no allocator panel: %s", s.symbol, exc)
    if not panels:
        return {"status": "skipped", "reason": "no coin agent to build the panel from"}
    try:
        costs = next(s.costs for s in coins if s.symbol in agents)
        return _train_and_gate_allocator(
            run, pl.concat(panels), agents, sorted(sources), costs, logger
        )
    except Exception as exc:  # noqa: BLE001
        run.failures.append(_failure(ALLOCATOR_SYMBOL, "allocator", exc))
        logger.warning("allocator failed: %s", exc)
        return {"status": "failed", "reason": str(exc), "agents": agents}


def _train_and_gate_allocator(
    run: _Run,
    panel: pl.DataFrame,
    agents: dict[str, str],
    sources: list[str],
    costs: Costs,
    logger: Any,
) -> dict[str, Any]:
    """Nested walk-forward: fit on the earlier out-of-sample days, judge on the later ones.

    The agents were trained on [start, test_start); ``panel`` holds their outputs and trading
    on the held-out days only. The allocator is tuned and fitted on the older part of those
    days and judged, by the statistical gate on its daily traded P&L, on the newer part
    (models.allocator.split_out_of_sample), beside the champion allocator on the same rows
    and the baselines (agents at equal weights, the coins' buy-and-hold, cash). The
    candidate is recorded as a trial (kind 'allocator') before it is judged, so the deflated
    Sharpe ratio counts every allocator tried on these coins.
    """
    cfg = _allocator_config(run, costs)
    fit_part, judged = split_out_of_sample(panel, cfg.judge_fraction)
    fit = train_allocator(fit_part, cfg)
    streams = allocator_returns(fit.allocator, judged)
    table = streams.table(cfg.periods_per_year)
    by = {str(r.pop("strategy")): r for r in table.iter_rows(named=True)}
    judge_start, judge_end = streams.periods[0], run.window.end
    candidate = streams.returns[ALLOCATOR_NAME]
    sharpe = core_metrics.sharpe(candidate, cfg.periods_per_year)
    coins = sorted(agents)
    model_id = (
        f"svm-allocator-{run.window.last_day:%Y%m%d}-"
        f"{_fingerprint(panel, run.config.allocator, agents)}"
    )
    artifact = run.models_dir / model_id
    split = {k: [str(v[0]), str(v[1])] for k, v in fit.split.items()}
    split["judged"] = [str(judge_start), str(streams.periods[-1])]
    extra = {
        "nightly": True,
        "coins": coins,
        "agents": agents,
        "split": split,
        "fitted_until": str(fit.fitted_until),
        "held_out": by,
        "validation": fit.validation.to_dicts(),
    }
    sha = save_allocator(artifact, fit.allocator, extra)
    with connect(run.warehouse) as con:
        existing = load_model_row(con, model_id)
        if existing is None:
            write_model(
                con,
                {
                    "model_id": model_id,
                    "kind": ALLOCATOR_KIND,
                    "symbol": ALLOCATOR_SYMBOL,
                    "feature_schema_hash": hashlib.sha256(
                        json.dumps({"features": ALLOCATOR_FEATURES, "coins": coins}).encode()
                    ).hexdigest()[:16],
                    "architecture": {"model": "rbf-svc+platt", "params": vars(fit.params)},
                    "params": {
                        "config": run.config.allocator,
                        "agents": agents,
                        "nightly": True,
                        "data_sources": sources,
                        "split": split,
                        "fitted_until": str(fit.fitted_until),
                    },
                    "metrics": _json_safe(
                        {
                            **by[ALLOCATOR_NAME],
                            "objective": sharpe,
                            "objective_name": "daily traded P&L annualised Sharpe (judged days)",
                            "baselines": {k: v for k, v in by.items() if k != ALLOCATOR_NAME},
                        }
                    ),
                    "artifact_path": str(artifact),
                    "artifact_sha256": sha,
                    "stage": "candidate",
                    "created_at": datetime.now(UTC),
                    "promoted_at": None,
                },
            )
        champ_id = production_model_id(con, ALLOCATOR_KIND, ALLOCATOR_SYMBOL)
        champ_row = load_model_row(con, champ_id) if champ_id else None
        stage = existing["stage"] if existing is not None else "candidate"
    result: dict[str, Any] = {
        "status": "trained",
        "model_id": model_id,
        "coins": coins,
        "agents": agents,
        "params": vars(fit.params),
        "held_out": by,
    }
    if stage == "production":
        logger.info("%s is already the production allocator; not judged again", model_id)
        return result
    champion: np.ndarray | None = None
    details: dict[str, Any] = {
        "judged_periods": len(streams.periods),
        "fit_periods": split["fit"],
        "validation_periods": split["validation"],
        "held_out": _json_safe(by),
    }
    if champ_row is not None and champ_id != model_id:
        try:
            champ = load_allocator(
                Path(str(champ_row["artifact_path"])), str(champ_row["artifact_sha256"])
            )
            champion = allocator_returns(champ, judged).returns[ALLOCATOR_NAME]
            fitted = _parse_ts((champ.meta.get("extra") or {}).get("fitted_until"))
            if fitted is None or fitted > judge_start:
                details["note"] = (
                    f"the champion was fitted until {fitted or 'an unknown day'}, into the "
                    "judged days: its numbers there are in-sample (the comparison favours it)"
                )
        except Exception as exc:  # noqa: BLE001 -- an unusable champion: judged by the baselines
            details["note"] = f"champion {champ_id} could not be evaluated: {exc}"
    with connect(run.warehouse) as con:
        record_trial(
            con,
            kind=ALLOCATOR_TRIAL_KIND,
            dataset=ALLOCATOR_SYMBOL,
            data_start=judge_start,
            data_end=judge_end,
            config={"model_id": model_id, "params": vars(fit.params), "agents": agents},
            sharpe=sharpe,
            n_obs=int(candidate.size),
            periods_per_year=cfg.periods_per_year,
            created_at=datetime.now(UTC),
        )
        trials = load_trial_sharpes(con, ALLOCATOR_SYMBOL, ALLOCATOR_TRIAL_KIND)
    trial_sharpes = trials.get_column("sharpe").drop_nulls().to_numpy()
    gate = run.config.gate
    decision = agent_decision(
        candidate_id=model_id,
        kind=ALLOCATOR_KIND,
        symbol=ALLOCATOR_SYMBOL,
        candidate_returns=candidate,
        baseline_returns={name: streams.returns[name] for name in ALLOCATOR_BASELINES},
        periods_per_year=cfg.periods_per_year,
        n_trials=trials.height,
        trial_sharpes=trial_sharpes if trial_sharpes.size >= 2 else None,
        champion_id=champ_id if champion is not None else None,
        champion_returns=champion,
        alpha=gate.alpha,
        dsr_min=gate.dsr_min,
        drawdown_margin=gate.drawdown_margin,
        eval_start=judge_start,
        eval_end=judge_end,
        details=details,
    )
    _gate(run, [decision], logger.info)
    return result


# ---------------------------------------------------------------------------- f. summary


def _sources(bars: pl.DataFrame) -> list[str]:
    """Provenance of the bars; 'synthetic...' marks a model trained on generated data."""
    if "source" not in bars.columns:
        return []
    return sorted(str(x) for x in bars.get_column("source").unique().to_list())


def _json_safe(value: Any) -> Any:
    """NaN and infinities (a Calmar over a curve that never fell) as null: JSON has no such numbers."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _parse_ts(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def _verdict(d: GateDecision, promoted: bool) -> dict[str, Any]:
    return {
        "candidate_id": d.candidate_id,
        "kind": d.kind,
        "reference": d.reference_name,
        "reference_id": d.reference_id,
        "candidate_objective": d.candidate.objective,
        "reference_objective": d.reference.objective,
        "candidate_max_drawdown": d.candidate.max_drawdown,
        "reference_max_drawdown": d.reference.max_drawdown,
        "passed": d.verdict.passed,
        "promoted": promoted,
        "reason": d.verdict.reason,
        "statistics": _json_safe(d.statistics),
    }


def _summary(
    run: _Run,
    coins: list[str],
    spy: list[str],
    symbols: dict[str, _Symbol],
    allocator: dict[str, Any],
) -> dict[str, Any]:
    per_symbol: dict[str, dict[str, Any]] = {}
    for name in [*spy[:1], *coins]:
        s = symbols.get(name)
        f = (s.forecaster if s else None) or {}
        metrics = f.get("metrics") or {}
        per_symbol[name] = {
            "forecaster": (
                {
                    "model_id": f.get("model_id"),
                    "forecasts_stored": f.get("stored"),
                    **{
                        k: metrics.get(k)
                        for k in (
                            "n",
                            "rank_ic",
                            "rmse",
                            "naive_rmse",
                            "directional_accuracy",
                            "mean_fold_rank_ic",
                        )
                    },
                }
                if "stored" in f
                else None
            ),
            "agents": list(s.agents) if s else [],
            "gate": [_verdict(d, p) for d, p in run.decisions if d.symbol == name],
            "failures": [x for x in run.failures if x["symbol"] == name],
        }
    return {
        "window": {
            "start": str(run.window.start.date()),
            "last_day": str(run.window.last_day),
            "test_start": str(run.window.test_start.date()),
        },
        "decided_at": run.decided_at.isoformat(),
        "runner": run.config.runner,
        "symbols": per_symbol,
        "allocator": {
            **allocator,
            "gate": [_verdict(d, p) for d, p in run.decisions if d.kind == ALLOCATOR_KIND],
        },
        "promoted": [d.candidate_id for d, p in run.decisions if p],
        "failures": run.failures,
        "notes": run.notes,
    }


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}" if math.isfinite(value) else str(value)
    return str(value)


def _publish(run: _Run, summary: dict[str, Any]) -> None:
    """The gate's decisions as a table artifact, and a markdown report of the run."""
    rows = [
        {
            "kind": d.kind,
            "symbol": d.symbol,
            "candidate": d.candidate_id,
            "objective": d.objective,
            "candidate_objective": _cell(d.candidate.objective),
            "reference": d.reference_name + (f" {d.reference_id}" if d.reference_id else ""),
            "reference_objective": _cell(d.reference.objective),
            "candidate_max_drawdown": _cell(d.candidate.max_drawdown),
            "reference_max_drawdown": _cell(d.reference.max_drawdown),
            "verdict": "promoted" if p else ("passed" if d.verdict.passed else "rejected"),
            "reason": d.verdict.reason,
        }
        for d, p in run.decisions
    ]
    create_table_artifact(
        key="nightly-retrain-gate",
        table=rows,
        description=f"promotion gate decisions of {run.decided_at:%Y-%m-%d %H:%M} UTC "
        "(also in the promotion_decisions table)",
    )
    cols = [
        "kind",
        "symbol",
        "candidate",
        "candidate_objective",
        "reference",
        "reference_objective",
        "verdict",
    ]
    lines = [
        f"# nightly-retrain {summary['window']['start']} to {summary['window']['last_day']} "
        f"(held out from {summary['window']['test_start']})",
        "",
        "## Gate",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
        *("| " + " | ".join(r[c] for c in cols) + " |" for r in rows),
        "",
        f"Promoted: {', '.join(summary['promoted']) or 'nothing'}",
    ]
    if run.failures:
        lines += ["", "## Failures", ""]
        lines += [f"- {f['symbol']} ({f['stage']}): {f['error']}" for f in run.failures]
    if run.notes:
        lines += ["", "## Notes", "", *(f"- {n}" for n in run.notes)]
    create_markdown_artifact(key="nightly-retrain-report", markdown="\n".join(lines))


if __name__ == "__main__":
    nightly_retrain()
