"""The one place implementations are chosen: bar sources by name, adapters by mode."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner

from adapters.arch_daily import ArchDailyBarSource
from adapters.clock import ManualClock, SystemClock
from adapters.files import FileBarSource
from adapters.protocols import BarSource, BarStream, Broker, Clock, PostSource, TradeUpdates
from adapters.sim_broker import SimulatedBroker
from adapters.synthetic import SyntheticBarSource, SyntheticConfig
from adapters.synthetic_posts import SyntheticPostConfig, SyntheticPostSource
from core.account_rules import AccountType, account_rules
from core.configs import IngestBarsConfig, ScrapeRedditConfig
from core.costs import CostModel
from core.settings import Mode, Settings, mode_refusal
from tasks.bars import learn_corporate_actions
from trading.calendar import Session, calendar_for
from trading.session import ReplayFeed, SessionAdapters, StreamFeed
from trading.session_start import (
    LiveTradingRefused,
    on_broker_time,
    require_replay_bars,
    session_of_day,
)


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
            adjustment=config.adjustment,
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


@dataclass
class Injected:
    """The one seam through which a test hands runs other systems than the real ones.

    `clock` makes every run's clock (the wall clock; a test gives a ManualClock to run a
    paper session in simulated minutes); `adapters`, when set, makes the whole adapter set
    in build_adapters' place (real_adapters builds the real one, for a test to wrap).
    Tests set them with monkeypatch.setattr(wiring.INJECTED, "clock", ...), undone after.
    """

    clock: Callable[[], Clock] = SystemClock
    adapters: Callable[[Settings], Adapters] | None = None


INJECTED = Injected()


def build_adapters(settings: Settings) -> Adapters:
    """The adapter set of a run: INJECTED.adapters' if a test set it, else real_adapters'."""
    if INJECTED.adapters is not None:
        return INJECTED.adapters(settings)
    return real_adapters(settings)


def real_adapters(settings: Settings) -> Adapters:
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
    clock = INJECTED.clock()
    posts = build_post_source(ScrapeRedditConfig(), settings, clock)
    if settings.mode == "replay":
        return Adapters(
            mode="replay",
            clock=clock,
            bars=SyntheticBarSource(SyntheticConfig(seed=settings.synthetic_seed)),
            posts=posts,
        )
    return _alpaca_adapters(settings, clock, posts)


def _alpaca_adapters(settings: Settings, clock: Clock, posts: PostSource) -> Adapters:
    """Alpaca's market data, bar stream, broker and trade updates (paper, or live with the opt-in)."""
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


# ---- a trading session's adapters ----------------------------------------------------------

LIVE_LOCK_TIMEOUT_S = 2.0
"""paper/live: how long a minute's write or decision waits for a warehouse another process
holds before its rows go to the outbox (the decision is made from the bars in memory)."""


@dataclass(frozen=True)
class SessionRequest:
    """What a trading flow asks of the wiring: which session, on which bars, for whom."""

    mode: Mode
    label: str
    """The run id's name for what is traded ('SPY', 'crypto')."""
    calendar_symbol: str
    """The symbol whose calendar says when the session is."""
    traded: list[str]
    symbols: list[str]
    """Every symbol whose bars the session stores (the traded ones and their inputs)."""
    timeframe: str
    warehouse: Path
    outbox: Path
    key: str
    """The stable end of a run id (the models): a restart on the same day is the same run."""
    config_digest: str
    """A replay's run id ends with its config's: two replays of one day keep their rows apart."""
    replay_day: date | None
    costs: CostModel
    """What the simulated broker charges (the symbols' class's; not used on paper/live)."""
    start_minute: int = 0
    cash: float = 100_000.0
    account_rules: AccountType = "ideal"
    """The simulated account's rules (core.account_rules; replay only: paper/live are Alpaca's)."""
    replay_speed: float = 0.0
    max_clock_offset_s: float = 2.0
    wait_for_open_min: float = 0.0
    bar_wait_s: float = 20.0
    stream_name: str = "bar-stream"


@dataclass(frozen=True)
class TradingRun:
    """A session to trade, its names and the adapters the mode chose for it."""

    mode: Mode
    session: Session
    run_id: str
    account: str
    adapters: SessionAdapters
    lock_timeout_s: float | None
    """None on a replay's own warehouse (wait as long as the setting); short on paper/live."""


@dataclass(frozen=True)
class MarketClosed:
    now: datetime
    next_open: datetime


def trading_run(
    request: SessionRequest, settings: Settings, logger: Any = None
) -> TradingRun | MarketClosed:
    """The session and adapter set for request.mode; the only place a trading run branches on it.

    replay: the stored day's session from `start_minute`, a manual clock, the simulated
    broker (costs of the symbols' class) filling from the replay feed, an account of its own.
    paper/live: Alpaca (build_adapters) on the broker's clock, the session open now (waiting
    up to wait_for_open_min for an open), the stream feed, the trade-updates stream.
    """
    logger = logger or logging.getLogger(__name__)
    if request.mode == "replay":
        return _replay_run(request)
    adapters = build_adapters(settings.model_copy(update={"mode": request.mode}))
    assert adapters.broker is not None and adapters.stream is not None
    broker, stream = adapters.broker, adapters.stream
    clock = on_broker_time(adapters.clock, broker, request.max_clock_offset_s, stream, logger)
    calendar = calendar_for(request.calendar_symbol)
    now = clock.now()
    # The stream's bars are raw: a split or dividend going ex today re-bases the stored
    # history first (as the nightly ingest does), so today's bars continue it.
    for line in learn_corporate_actions(
        adapters.bars, request.symbols, now.date(), now, request.warehouse
    ):
        logger.info("%s", line)
    session = calendar.session_at(now)
    if session is None:
        # The 09:25 schedule starts a few minutes early: wait for the open, not for tomorrow.
        upcoming = calendar.next_session(now)
        wait_s = (upcoming.open - now).total_seconds()
        if 0 < wait_s <= request.wait_for_open_min * 60:
            logger.info("market opens in %.0f s (%s); waiting", wait_s, upcoming.open.isoformat())
            clock.sleep(wait_s)
            now = clock.now()
            session = calendar.session_at(now)
    if session is None:
        return MarketClosed(now, calendar.next_session(now).open)
    run_id = f"{request.mode}-{request.label}-{session.day}-{request.key}"
    feed = StreamFeed(
        stream,
        clock,
        session,
        request.warehouse,
        request.symbols,
        outbox=request.outbox,
        lock_timeout_s=LIVE_LOCK_TIMEOUT_S,
        wait_s=request.bar_wait_s,
        name=request.stream_name,
    )
    return TradingRun(
        request.mode,
        session,
        run_id,
        request.mode,
        SessionAdapters(clock, broker, feed, trade_updates=adapters.trade_updates),
        LIVE_LOCK_TIMEOUT_S,
    )


def _replay_run(request: SessionRequest) -> TradingRun | MarketClosed:
    day = request.replay_day
    if day is None:
        raise LiveTradingRefused(
            f"no {request.label} bars in {request.warehouse} to replay; run ingest-bars or "
            "make demo"
        )
    calendar = calendar_for(request.calendar_symbol)
    of_day = session_of_day(request.calendar_symbol, day)
    start = (
        of_day.open + timedelta(minutes=request.start_minute)
        if of_day is not None
        else datetime(day.year, day.month, day.day, 15, tzinfo=UTC)
    )
    session = calendar.session_at(start)
    if session is None:
        return MarketClosed(start, calendar.next_session(start).open)
    require_replay_bars(request.warehouse, request.traded, request.timeframe, session, start)
    run_id = f"replay-{request.label}-{session.day}-{request.key}-{request.config_digest}"
    clock = ManualClock(start)
    costs = request.costs
    # Order and fill ids carry the run id: fills are keyed by fill_id, so ids shared by two
    # replays of one session would let the later run overwrite the earlier's fills.
    sim = SimulatedBroker(
        clock,
        cash=request.cash,
        fee_bps=costs.fee_bps,
        slippage_bps=costs.slippage_bps,
        sell_fee_bps=costs.sell_fee_bps,
        id_prefix=f"sim:{run_id}",
        rules=account_rules(request.account_rules),
    )
    feed = ReplayFeed(
        request.warehouse,
        request.symbols,
        request.timeframe,
        session,
        clock,
        sim,
        speed=request.replay_speed,
        outbox=request.outbox,
    )
    return TradingRun(
        "replay",
        session,
        run_id,
        f"replay:{run_id}",
        SessionAdapters(clock, sim, feed, simulated=sim),
        None,
    )
