"""The one place implementations are chosen: bar sources by name, adapters by mode."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner

from adapters.arch_daily import ArchDailyBarSource
from adapters.clock import SystemClock
from adapters.files import FileBarSource
from adapters.protocols import BarSource, BarStream, Broker, Clock, PostSource, TradeUpdates
from adapters.synthetic import SyntheticBarSource, SyntheticConfig
from adapters.synthetic_posts import SyntheticPostConfig, SyntheticPostSource
from core.settings import Mode, Settings, mode_refusal
from flows.config import IngestBarsConfig, ScrapeRedditConfig


def alpaca_credentials_set(settings: Settings) -> bool:
    return settings.alpaca_api_key_id is not None and settings.alpaca_api_secret_key is not None


def resolve_bar_source(config: IngestBarsConfig, settings: Settings) -> IngestBarsConfig:
    """The config with source='auto' decided: alpaca when its keys are set, synthetic otherwise."""
    if config.source != "auto":
        return config
    return config.model_copy(
        update={"source": "alpaca" if alpaca_credentials_set(settings) else "synthetic"}
    )


def _alpaca_keys(settings: Settings) -> tuple[str, str]:
    if settings.alpaca_api_key_id is None or settings.alpaca_api_secret_key is None:
        raise MissingCredentialsError(
            "Alpaca needs APCA_API_KEY_ID and APCA_API_SECRET_KEY in the environment or .env "
            "(paper-account keys from https://app.alpaca.markets); or use source='synthetic' "
            "/ TRADINGML_MODE=replay to stay offline"
        )
    return (
        settings.alpaca_api_key_id.get_secret_value(),
        settings.alpaca_api_secret_key.get_secret_value(),
    )


def build_bar_source(config: IngestBarsConfig, settings: Settings) -> BarSource:
    """The historical BarSource an ingest config names (source 'auto' resolved first)."""
    config = resolve_bar_source(config, settings)
    if config.source == "alpaca":
        from adapters.alpaca import AlpacaBarSource

        key, secret = _alpaca_keys(settings)
        return AlpacaBarSource(
            api_key=key,
            secret_key=secret,
            base_url=settings.alpaca_base_url,
            feed=settings.alpaca_stock_feed,
        )
    if config.source == "synthetic":
        seed = settings.synthetic_seed if config.seed is None else config.seed
        return SyntheticBarSource(
            SyntheticConfig(seed=seed, signal=config.signal, signal_strength=config.signal_strength)
        )
    if config.source == "arch":
        return ArchDailyBarSource()
    if config.source == "skfolio":
        from adapters.skfolio_daily import SkfolioDailyBarSource

        return SkfolioDailyBarSource()
    assert config.path is not None  # enforced by IngestBarsConfig
    return FileBarSource(
        Path(config.path),
        symbol=config.symbol,
        timeframe=config.timeframe,
        column_map=config.column_map,
        tz=config.file_tz,
        source_label=config.source_label,
        decimal=config.decimal,
    )


class MissingCredentialsError(RuntimeError):
    """A real service was asked for but its credentials are not in the environment."""


class ModeRefusedError(RuntimeError):
    """The settings' mode must not start: live without the opt-in or with a paper key id,
    paper pointed at the live endpoint (core.settings.mode_refusal)."""


def reddit_credentials_set(settings: Settings) -> bool:
    return settings.reddit_client_id is not None and settings.reddit_client_secret is not None


def build_post_source(
    config: ScrapeRedditConfig, settings: Settings, clock: Clock | None = None
) -> PostSource:
    """Reddit (praw) when asked for or when credentials are set under 'auto'; else SYNTHETIC posts."""
    use_reddit = config.source == "reddit" or (
        config.source == "auto" and reddit_credentials_set(settings)
    )
    if use_reddit:
        if settings.reddit_client_id is None or settings.reddit_client_secret is None:
            raise MissingCredentialsError(
                "source='reddit' needs REDDIT_CLIENT_ID and REDDIT_CLIENT_SECRET (and a "
                "descriptive REDDIT_USER_AGENT) in the environment or .env; create a 'script' "
                "app at https://www.reddit.com/prefs/apps, or use source='synthetic'"
            )
        from adapters.reddit import RedditPostSource

        return RedditPostSource(
            client_id=settings.reddit_client_id.get_secret_value(),
            client_secret=settings.reddit_client_secret.get_secret_value(),
            user_agent=settings.reddit_user_agent,
            base_url=settings.reddit_base_url,
            clock=clock,
        )
    if config.until is not None:
        from adapters.clock import ManualClock

        clock = ManualClock(config.until)
    return SyntheticPostSource(
        SyntheticPostConfig(
            seed=settings.synthetic_seed if config.seed is None else config.seed,
            posts_per_hour=config.posts_per_hour,
            tone=config.tone,
            signal_strength=config.signal_strength,
        ),
        clock=clock or SystemClock(),
    )


clock_factory: Callable[[], Clock] = SystemClock
"""Where build_adapters gets its clock: the wall clock. The one seam for time in paper/live
runs -- a test puts a ManualClock here to run a session in simulated minutes."""


@dataclass(frozen=True)
class Adapters:
    """The set of external systems a run talks to."""

    mode: Mode
    clock: Clock
    bars: BarSource
    posts: PostSource
    stream: BarStream | None = None
    """Live bars (paper/live); replay gets its replay stream with the backtest engine."""
    broker: Broker | None = None
    """Alpaca trading (paper/live); replay gets the simulated broker with the backtest engine."""
    trade_updates: TradeUpdates | None = None
    """The account's fills as they happen (paper/live; not started: the session starts it)."""


def build_adapters(settings: Settings) -> Adapters:
    """All adapters for settings.mode; nothing else in the code branches on the mode.

    replay: offline (synthetic bars and posts). paper: Alpaca paper trading and market data.
    live: the same on the real-money endpoint -- Settings refuses mode=live without
    TRADINGML_LIVE_TRADING_OPT_IN=true, and AlpacaBroker refuses it again without the opt-in.
    Before anything is built, core.settings.mode_refusal is checked again: settings made by
    model_copy(update={"mode": ...}) skip Settings' own validation.
    """
    problem = mode_refusal(settings.mode, settings)
    if problem:
        raise ModeRefusedError(problem)
    clock = clock_factory()
    posts = build_post_source(ScrapeRedditConfig(), settings, clock)
    if settings.mode == "replay":
        return Adapters(
            mode="replay",
            clock=clock,
            bars=SyntheticBarSource(SyntheticConfig(seed=settings.synthetic_seed)),
            posts=posts,
        )
    from adapters.alpaca import AlpacaBarSource, AlpacaBroker
    from adapters.alpaca_stream import AlpacaBarStream

    key, secret = _alpaca_keys(settings)
    bars = AlpacaBarSource(
        api_key=key,
        secret_key=secret,
        base_url=settings.alpaca_base_url,
        feed=settings.alpaca_stock_feed,
    )
    ws = settings.alpaca_stream_url.rstrip("/") if settings.alpaca_stream_url else None
    quiet_websocket_frames()
    stream = AlpacaBarStream(
        key,
        secret,
        feed=settings.alpaca_stock_feed,
        stock_url=f"{ws}/v2/{settings.alpaca_stock_feed}" if ws else None,
        crypto_url=f"{ws}/v1beta3/crypto/us" if ws else None,
        gap_fill=bars,
        clock=clock,
    )
    broker = AlpacaBroker(
        api_key=key,
        secret_key=secret,
        paper=settings.mode != "live",
        live_opt_in=settings.mode == "live" and settings.live_trading_opt_in,
        base_url=settings.alpaca_base_url,
    )
    from adapters.alpaca_trade_updates import AlpacaTradeUpdates

    trade_updates = AlpacaTradeUpdates(
        key,
        secret,
        paper=settings.mode != "live",
        # The fake servers serve both streams; the real trading stream has its own host.
        url=f"{ws}/stream" if ws else None,
    )
    return Adapters(
        mode=settings.mode,
        clock=clock,
        bars=bars,
        posts=posts,
        stream=stream,
        broker=broker,
        trade_updates=trade_updates,
    )


def quiet_websocket_frames() -> None:
    """Keep the websockets client's DEBUG frame dumps out of every log.

    websockets logs each frame at DEBUG, payload included, and the stream's first frame is
    Alpaca's auth message with the key id and secret in clear: a root logger at DEBUG
    (PREFECT_LOGGING_ROOT_LEVEL=DEBUG, logging.basicConfig) would write them out.
    """
    frames = logging.getLogger("websockets.client")
    if frames.level < logging.INFO:
        frames.setLevel(logging.INFO)


def build_task_runner(
    kind: str, workers: int, dask_address: str | None, scratch: Path
) -> TaskRunner[Any]:
    """The Prefect task runner for parallel evaluations; the same task code runs on each."""
    if kind == "serial":
        return ThreadPoolTaskRunner(max_workers=1)
    if kind == "process":
        return ProcessPoolTaskRunner(max_workers=workers)
    from prefect_dask.task_runners import DaskTaskRunner

    if dask_address:
        return DaskTaskRunner(address=dask_address)
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": workers,
            "threads_per_worker": 1,
            "processes": True,
            "dashboard_address": None,
            "local_directory": str(scratch),
        }
    )


def share_api_with_workers() -> None:
    """Point worker processes at this flow's Prefect API.

    Without it, each worker of an ephemeral (no server) run starts a temporary API of its
    own: seconds of start-up per worker and SQLite lock contention.
    """
    import os

    from prefect.client.orchestration import get_client

    if os.environ.get("PREFECT_API_URL"):
        return
    with get_client(sync_client=True) as client:
        os.environ["PREFECT_API_URL"] = str(client.api_url).rstrip("/")
