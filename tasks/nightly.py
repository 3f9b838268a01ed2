"""The steps of the nightly-retrain flow (flows/nightly_retrain.py orchestrates them).

a. data per symbol, b. forecasters, c. agents (submitted through the flow's task runner),
d. the allocator over the coins' agents, e. the gate; a symbol that fails is recorded and
the others go on. The flow's docstring describes the whole run.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
from prefect.futures import PrefectFuture
from prefect.logging import get_run_logger
from prefect.runtime import flow_run

from core.assets import infer_asset_class
from core.configs import NightlyRetrainConfig
from core.costs import configured_costs
from core.provenance import data_sources, fingerprint
from core.sessions import SessionRule, session_rule
from core.settings import get_settings
from models.dqn import DQNParams
from models.env import Costs
from models.features import FeatureSpec
from models.forecaster import ForecasterConfig, forecaster_spec, load_forecaster
from models.gate import ALLOCATOR_SYMBOL, GateDecision
from models.genome import Genome
from models.qnet import Architecture
from models.registry import load_registered_genome, unpack_folder
from models.sentiment import MODEL_NAME, compute_sentiment_inputs, sentiment_lookback
from models.threads import runner_threads
from tasks.agents import store_trained_agent, train_agent_on_bars
from tasks.allocator import (
    AllocatorJob,
    CoinData,
    coin_panel,
    panel_agent,
    train_and_judge_allocator,
)
from tasks.forecasters import fit_forecaster
from tasks.gate import (
    RetrainWindow,
    agent_decisions,
    apply_gate,
    forecaster_gate_decision,
)
from trading.inputs import load_training_inputs
from warehouse.bars import load_bars, newest_bars
from warehouse.db import connect
from warehouse.forecasts import FORECASTER_KIND, register_forecaster, write_forecasts
from warehouse.posts import load_scored_posts
from warehouse.registry import load_model_row, production_model_id, resolve_genome
from warehouse.symbols import load_symbols, stored_session_rule

TIMEFRAME = "1Min"


def _slug(symbol: str) -> str:
    return symbol.replace("/", "-")


def _failure(symbol: str, stage: str, exc: BaseException | str) -> dict[str, str]:
    if isinstance(exc, BaseException):
        text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    else:
        text = exc
    return {"symbol": symbol, "stage": stage, "error": text}


# ---------------------------------------------------------------------------- state


@dataclass
class NightlySymbol:
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
class NightlyRun:
    config: NightlyRetrainConfig
    warehouse: str
    models_dir: Path
    window: RetrainWindow
    decided_at: datetime
    failures: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    decisions: list[tuple[GateDecision, bool]] = field(default_factory=list)


def start_run(
    config: NightlyRetrainConfig, decided_at: datetime, log: Callable[..., None]
) -> tuple[NightlyRun, list[str], list[str]]:
    """The run's warehouse, model store and window; its coins and SPY symbols."""
    settings = get_settings()
    warehouse = config.warehouse or str(settings.warehouse_path)
    models_dir = Path(config.models_dir) if config.models_dir else settings.data_dir / "models"
    coins = list(settings.coin_symbols if config.coins is None else config.coins)
    spy = list(config.spy_symbols) if config.include_spy else []
    window = _resolve_window(config, warehouse, [*coins, *spy])
    log(
        "nightly-retrain over %s to %s (held out from %s), %d coin(s)%s, runner %s x%d",
        window.start.date(),
        window.last_day,
        window.test_start.date(),
        len(coins),
        " + SPY" if spy else "",
        config.runner,
        config.workers,
    )
    return NightlyRun(config, warehouse, models_dir, window, decided_at), coins, spy


def train_symbols(
    run: NightlyRun, symbols: dict[str, NightlySymbol], spy: list[str], logger: Any
) -> None:
    """Forecasters (one task per coin), then agents (one task per symbol and seed): SPY's agents
    start at once, a coin's when its forecaster is recorded; a failure stops its symbol only."""
    forecaster_futures = {
        coin: _submit_forecaster(run, s) for coin, s in symbols.items() if s.spec.forecast
    }
    agent_futures: dict[str, list[tuple[str, PrefectFuture[dict[str, Any]] | None]]] = {}
    for name in spy:
        if name in symbols:
            agent_futures[name] = _submit_agents(run, symbols[name])
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


def gate_symbols(run: NightlyRun, symbols: dict[str, NightlySymbol], logger: Any) -> None:
    """Each symbol's forecaster and agent candidates before the gate (tasks.gate)."""
    for s in symbols.values():
        if s.forecaster is not None:
            if s.forecaster.get("stage") == "production":
                logger.info("%s is already the production forecaster", s.forecaster["model_id"])
            else:
                decision = forecaster_gate_decision(s.symbol, s.forecaster, run.config.gate)
                _gate(run, [decision], logger.info)
        if not s.agent_ids:
            continue
        try:
            decisions = agent_decisions(
                run.warehouse,
                s.symbol,
                s.agent_ids,
                s.bars,
                run.window.span,
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


class NightlyRetrainFailedError(RuntimeError):
    """Every symbol of a nightly-retrain run failed: the run must end Failed, not Completed."""


def fail_if_nothing_trained(
    run: NightlyRun, units: list[str], symbols: dict[str, NightlySymbol]
) -> None:
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


def _resolve_window(
    config: NightlyRetrainConfig, warehouse: str, wanted: list[str]
) -> RetrainWindow:
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
    return RetrainWindow(start, end, test_start)


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


def _load_spy(
    con: Any, run: NightlyRun, spy: list[str], log: Callable[..., None]
) -> NightlySymbol | None:
    """SPY's bars, feature spec (its genome's, if the config names one) and costs; None: failed."""
    w = run.window
    bars = load_bars(con, spy, TIMEFRAME, w.start, w.end)
    if bars.filter(pl.col("symbol") == spy[0]).height == 0:
        run.failures.append(_failure(spy[0], "data", f"no {TIMEFRAME} bars in the window"))
        return None
    spec = FeatureSpec(
        symbols=tuple(spy),
        sentiment_inputs=tuple(run.config.sentiment_inputs),
        stale_bars=run.config.stale_bars if len(spy) > 1 else 0,
    )
    try:
        genome, genome_id = _agent_genome(con, run.config.genome_id, spec.traded)
    except Exception as exc:  # noqa: BLE001 -- a broken genome fails SPY, not the coins
        run.failures.append(_failure(spy[0], "genome", exc))
        log("%s: genome %s unusable: %s", spy[0], run.config.genome_id, exc)
        return None
    if genome is not None:
        spec = _genome_spec(genome, spec)
        log("%s: agents train with genome %s", spy[0], genome_id)
    return NightlySymbol(
        spy[0],
        bars,
        spec,
        _symbol_costs(con, spy[0], run.config, log),
        rule=stored_session_rule(con, spy[0], TIMEFRAME),
        genome=genome,
        genome_id=genome_id,
    )


def _load_coin(
    con: Any, run: NightlyRun, coin: str, log: Callable[..., None]
) -> NightlySymbol | None:
    """A coin's bars, its spec (sentiment and forecast inputs) and costs; None: no bars."""
    w = run.window
    bars = load_bars(con, [coin], TIMEFRAME, w.start, w.end)
    if bars.height == 0:
        why = f"no {TIMEFRAME} bars from {w.start.date()} to {w.last_day}"
        run.failures.append(_failure(coin, "data", why))
        log("%s: no %s bars in the window; skipped", coin, TIMEFRAME)
        return None
    spec = FeatureSpec(
        symbols=(coin,),
        sentiment=True,
        forecast=True,
        sentiment_inputs=tuple(run.config.sentiment_inputs),
    )
    costs = _symbol_costs(con, coin, run.config, log)
    return NightlySymbol(coin, bars, spec, costs, rule=stored_session_rule(con, coin, TIMEFRAME))


def load_symbols_of_run(
    run: NightlyRun, coins: list[str], spy: list[str], log: Callable[..., None]
) -> dict[str, NightlySymbol]:
    """Every symbol's bars, spec, costs and inputs; a symbol that cannot be loaded is recorded
    in the run's failures and left out."""
    w = run.window
    lag = timedelta(minutes=get_settings().sentiment_lag_minutes)
    span = timedelta(minutes=run.config.sentiment_window_minutes)
    out: dict[str, NightlySymbol] = {}
    notes: list[str] = []
    with connect(run.warehouse) as con:
        loaded = [_load_spy(con, run, spy, log)] if spy else []
        loaded += [_load_coin(con, run, coin, log) for coin in coins]
        out = {s.symbol: s for s in loaded if s is not None}
        lookback = sentiment_lookback(run.config.sentiment_inputs, span, lag)
        posts = load_scored_posts(con, w.start - lookback, w.end, MODEL_NAME)
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


def _forecaster_sentiment(s: NightlySymbol) -> pl.DataFrame | None:
    """The coin's sentiment frame as its forecaster reads it: ts, symbol, sentiment only, so
    the agents' extra aggregates never change a forecaster's inputs or its fingerprint."""
    if s.sentiment is None:
        return None
    return s.sentiment.select("ts", "symbol", "sentiment")


# ---------------------------------------------------------------------------- b. forecasters


def _forecaster_recipe(run: NightlyRun, coin: str) -> tuple[FeatureSpec, dict[str, Any]]:
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
            "n_jobs": c.forecaster_threads or task_threads_of(c),
        }
    ).to_dict()
    return spec, cfg


def _recipe_only(cfg: dict[str, Any]) -> dict[str, Any]:
    """A forecaster config without its thread count: threads change speed, not the recipe
    (nor the model's id, which must not depend on the machine's cores)."""
    return {k: v for k, v in cfg.items() if k != "n_jobs"}


def _same_recipe(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return _recipe_only(a) == _recipe_only(b)


def _submit_forecaster(run: NightlyRun, s: NightlySymbol) -> PrefectFuture[dict[str, Any]]:
    spec, cfg = _forecaster_recipe(run, s.symbol)
    model_id = (
        f"xgb-{_slug(s.symbol)}-{run.window.last_day:%Y%m%d}-"
        f"{fingerprint(spec.to_dict(), _recipe_only(cfg), s.bars, _forecaster_sentiment(s))}"
    )
    champion, champion_recipe = _forecaster_champion(run, s.symbol, spec, cfg)
    s.forecaster = {"model_id": model_id, "champion": champion}
    extra = {
        "nightly": True,
        "window": [str(run.window.start.date()), str(run.window.last_day)],
        "data_sources": data_sources(s.bars),
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
    run: NightlyRun, coin: str, spec: FeatureSpec, cfg: dict[str, Any]
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


def _record_forecaster(run: NightlyRun, s: NightlySymbol, result: dict[str, Any]) -> dict[str, Any]:
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
                params={**cfg, "nightly": True, "data_sources": data_sources(s.bars)},
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


@dataclass(frozen=True)
class _AgentRecipe:
    """How a symbol's agents train tonight, the same for every seed."""

    arch: dict[str, Any]
    params: dict[str, Any]
    data_key: str
    """Names the data and recipe in the run ids: a re-run on the same data reuses the models."""
    description: dict[str, Any]
    rule: SessionRule


def _agent_recipe(run: NightlyRun, s: NightlySymbol) -> _AgentRecipe:
    """The symbol's architecture and params (its genome's, then the config's overrides), the
    fingerprint of its data and recipe, and what each agent records of how it was trained."""
    c = run.config
    base = DQNParams.from_dict({**c.params, "cycles": c.cycles})
    params = base.to_dict()
    arch = Architecture.from_dict(c.architecture).to_dict()
    if s.genome is not None:
        # As train-agent: the genome's choices, then the config's explicit overrides on top.
        genome_arch, genome_params = s.genome.with_overrides(c.architecture, base, c.params)
        arch, params = genome_arch.to_dict(), genome_params.to_dict()
    forecaster_id = (s.forecaster or {}).get("model_id") or s.input_params.get("forecaster")
    data_key = fingerprint(
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
        "data_sources": data_sources(s.bars),
    }
    rule = s.rule if s.rule is not None else session_rule(s.symbol, TIMEFRAME)
    # How the ranges were cut, as `train` records it: `backtest` of the model cuts the same.
    description |= {"calendar": rule.calendar, "episode_bars": rule.episode_bars}
    # SPY: how its inputs were read (a forecaster's horizon), as input_loader reads them back.
    description |= s.input_params
    return _AgentRecipe(arch, params, data_key, description, rule)


def _submit_agents(
    run: NightlyRun, s: NightlySymbol
) -> list[tuple[str, PrefectFuture[dict[str, Any]] | None]]:
    """One training task per seed; a model already registered (a re-run) is reused, not retrained."""
    c = run.config
    r = _agent_recipe(run, s)
    out: list[tuple[str, PrefectFuture[dict[str, Any]] | None]] = []
    for seed in c.seeds:
        run_id = f"nightly-{run.window.last_day:%Y%m%d}-{r.data_key}-s{seed}"
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
            r.arch,
            r.params,
            asdict(s.costs),
            _checkpoint_dir(run, run_id),
            r.description,
            c.budget_s,
            asdict(r.rule),
            task_threads_of(c),
        )
        out.append((model_id, future))
    return out


def _checkpoint_dir(run: NightlyRun, run_id: str) -> str | None:
    """Where a training task checkpoints: the model store's folder on a thread or process runner
    (same machine: an interrupted run resumes); none on Dask, whose workers share no disk."""
    if run.config.runner == "dask":
        return None
    return str(run.models_dir / "checkpoints" / run_id)


def task_threads_of(config: NightlyRetrainConfig) -> int:
    """Torch threads per training task (models.threads.runner_threads): one count for every
    task of the run, so weights do not depend on where a task ran."""
    on_cluster = config.runner == "dask" and bool(
        config.dask_address or get_settings().dask_address
    )
    return runner_threads(config.workers, on_cluster, config.threads)


def _agent_summary(run: NightlyRun, model_id: str, result: dict[str, Any] | None) -> dict[str, Any]:
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


def _gate(run: NightlyRun, decisions: list[GateDecision], log: Callable[..., None]) -> None:
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


def allocator_step(run: NightlyRun, coins: list[NightlySymbol], logger: Any) -> dict[str, Any]:
    """Build the out-of-sample daily panel from the coin agents, train the allocator, register
    and gate it (tasks.allocator); a coin whose panel fails is left out and recorded."""
    job = AllocatorJob(
        run.warehouse,
        run.models_dir,
        run.window,
        run.config.allocator,
        run.config.drawdown_days,
        run.config.gate,
    )
    panels: list[pl.DataFrame] = []
    agents: dict[str, str] = {}
    sources: set[str] = set()
    for s in coins:
        if s.forecaster is None or not s.agent_ids:
            continue
        try:
            row = panel_agent(run.warehouse, s.symbol, s.agent_ids)
            if row is None:
                continue
            coin = CoinData(s.symbol, s.bars, s.costs, s.sentiment, s.forecasts)
            panels.append(coin_panel(job, coin, row))
            agents[s.symbol] = str(row["model_id"])
            sources.update(data_sources(s.bars))
        except Exception as exc:  # noqa: BLE001
            run.failures.append(_failure(s.symbol, "allocator panel", exc))
            logger.warning("%s: no allocator panel: %s", s.symbol, exc)
    if not panels:
        return {"status": "skipped", "reason": "no coin agent to build the panel from"}
    try:
        costs = next(s.costs for s in coins if s.symbol in agents)
        outcome = train_and_judge_allocator(
            job, pl.concat(panels), agents, sorted(sources), costs, logger.info
        )
        if outcome.decision is not None:
            _gate(run, [outcome.decision], logger.info)
        return outcome.result
    except Exception as exc:  # noqa: BLE001
        run.failures.append(_failure(ALLOCATOR_SYMBOL, "allocator", exc))
        logger.warning("allocator failed: %s", exc)
        return {"status": "failed", "reason": str(exc), "agents": agents}
