"""Typed configuration objects for the flows; each flow takes exactly one of these."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.account_rules import AccountType
from core.assets import AssetClass
from core.universe import (
    ARCH_DAILY_SYMBOLS,
    COIN_SYMBOLS,
    EQUITY_SYMBOLS,
    SKFOLIO_DAILY_SYMBOLS,
)

BarSourceName = Literal["auto", "alpaca", "synthetic", "arch", "skfolio", "file"]
# numpy's seed sequences refuse negative seeds: say so before a run starts, naming the field.
Seed = Annotated[int, Field(ge=0)]
Window = Annotated[int, Field(ge=1)]
StdWindow = Annotated[int, Field(ge=2)]  # a standard deviation needs two values
# models.features.SENTIMENT_INPUTS (tests hold the two equal): the sentiment aggregates an agent may take.
SentimentInput = Literal["symbol_60m", "symbol_24h", "market_60m", "market_24h"]


def config_json(config: LiveTradingConfig | CryptoTradingConfig) -> str:
    """A trading config as JSON for its replay's run id: `account_rules` (added later) only when
    set, so a replay configured as before keeps its run id."""
    unset = {"account_rules"} if config.account_rules == "ideal" else None
    return config.model_dump_json(exclude=unset)


def utc_midnight(day: date) -> datetime:
    """Config dates are UTC days: ranges start at 00:00 UTC of the given day."""
    return datetime.combine(day, time(0), tzinfo=UTC)


# The embedded demo window: six months of synthetic minute bars.
def fee_field() -> Any:
    """A flow's fee option: unset means the traded symbol's asset-class costs (core.costs)."""
    return Field(
        default=None,
        ge=0,
        description="Fee per trade, basis points of value (empty: the symbol's asset-class "
        "default, core.costs; given, a flat fee + slippage with no sell-side fee).",
    )


def slippage_field() -> Any:
    """A flow's slippage option: unset means the asset-class half-spread (core.costs)."""
    return Field(
        default=None,
        ge=0,
        description="Fill price moved against us (half-spread), bps (empty: asset-class default).",
    )


DEMO_START = date(2024, 1, 1)
DEMO_END = date(2024, 7, 1)


class IngestBarsConfig(BaseModel):
    """Parameters of the `ingest-bars` flow."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: BarSourceName = Field(
        default="synthetic",
        description="synthetic: generated minute bars (labelled synthetic); arch: real S&P 500 / "
        "NASDAQ daily bars 1999-2018; skfolio: real adjusted daily closes, close-only (S&P 500 "
        "index SPX 1990-2022, factor ETFs MTUM QUAL SIZE USMV VLUE 2014-2022); file: your own CSV/Parquet (set path); alpaca: Alpaca's "
        "market-data API (needs APCA_API_KEY_ID and APCA_API_SECRET_KEY); auto: alpaca when those "
        "are set, synthetic otherwise.",
    )
    symbols: list[str] | None = Field(
        default=None,
        description="Symbols to ingest; empty means the source's default universe "
        "(synthetic: 4 ETFs + 14 coins; arch: ^GSPC, ^IXIC; skfolio: SPX and the 5 ETFs; "
        "file: every symbol in it).",
    )
    start: date | None = Field(
        default=None,
        description="First day (inclusive, UTC); default: the source's own range "
        "(synthetic: the demo window; arch: 1999; skfolio: 1990; file: everything).",
    )
    end: date | None = Field(
        default=None, description="Last day (exclusive, UTC); default as start."
    )
    timeframe: str | None = Field(
        default=None,
        description="1Min, 5Min, 15Min, 30Min, 1Hour or 1Day; default: the source's own.",
    )
    seed: Seed | None = Field(
        default=None, description="Synthetic generator seed (default: settings)."
    )
    regular_hours_only: bool = Field(
        default=True,
        description="Stocks and ETFs (symbols on an exchange calendar): intraday bars outside "
        "the regular session -- pre- and post-market, which Alpaca's history includes -- are "
        "quarantined as outside_regular_hours, since the agents trade the regular session; "
        "false stores them too. Coins, FX and daily bars are not affected.",
    )
    adjustment: Literal["raw", "split", "dividend", "all"] = Field(
        default="all",
        description="Alpaca stocks only: the corporate actions their history is adjusted for "
        "(all: splits and dividends). Before the bars, the splits and dividends since the "
        "newest stored bar are fetched (GET /v1/corporate-actions), recorded in "
        "corporate_actions, and the stored bars fetched before each new one re-based onto it "
        "(bar_adjustments), so the next bars do not jump by a split ratio. raw: unadjusted; "
        "a split then shows as suspected_split in the quarantine.",
    )
    signal: Literal["none", "autocorr", "sentiment"] = Field(
        default="none", description="Synthetic only: plant a known exploitable signal."
    )
    signal_strength: float = Field(
        default=0.1, ge=0.0, le=0.9, description="Strength of the planted signal."
    )
    lookback_days: int | None = Field(
        default=None,
        ge=1,
        description="Fetch from midnight UTC this many days ago up to now instead of start/end "
        "(the scheduled deployments use it); alpaca defaults to 7 when no start is given.",
    )
    incremental: bool = Field(
        default=False,
        description="Start each symbol just after its newest stored bar (never before start).",
    )
    path: str | None = Field(default=None, description="file source: path of the CSV/Parquet file.")
    column_map: dict[str, str] | None = Field(
        default=None,
        description='file source: canonical column -> file column, e.g. {"close": "Last"}.',
    )
    symbol: str | None = Field(
        default=None,
        description="file source: the symbol of a file without a symbol/ticker column; for a "
        "file with one, import only this symbol (one the file does not hold is an error).",
    )
    file_tz: str | None = Field(
        default=None,
        description="file source: IANA zone of naive timestamps (Europe/London, Etc/GMT = UTC, "
        "Etc/GMT-2 = UTC+2); default America/New_York. A file whose timestamps carry an offset "
        "refuses it.",
    )
    asset_class: AssetClass | None = Field(
        default=None,
        description="stock, etf, crypto or fx, stored per symbol in `symbols`; default: as "
        "stored, else BASE/QUOTE names crypto, the rest stock.",
    )
    calendar: str | None = Field(
        default=None,
        description="Trading calendar stored per symbol: an exchange-calendars name (XNYS, XLON, "
        "...), 24/7 or 24/5 (FX: Sunday 17:00 to Friday 17:00 New York); default: as stored, "
        "else by asset class (stock/etf XNYS, crypto 24/7, fx 24/5).",
    )
    reclassify: bool = Field(
        default=False,
        description="Allow asset_class/calendar to change what is stored for a symbol.",
    )
    decimal: Literal[".", ","] | None = Field(
        default=None,
        description="file source: decimal separator of the numbers; default: detected from "
        "the numbers themselves (an ambiguous file is an error that asks for this).",
    )
    source_label: str | None = Field(
        default=None, description="file source: provenance label to store."
    )
    warehouse: str | None = Field(default=None, description="Warehouse file (default: settings).")

    @model_validator(mode="after")
    def _check(self) -> IngestBarsConfig:
        start, end = self.date_range()
        if end <= start:
            raise ValueError(f"end ({end}) must be after start ({start})")
        if self.source == "file" and not self.path:
            raise ValueError("source='file' needs path= pointing at a CSV or Parquet file")
        if self.source != "file" and (self.symbol or self.file_tz):
            raise ValueError("--symbol and --tz apply to --source file only (use --symbols)")
        if self.symbol and self.symbols and self.symbols != [self.symbol]:
            raise ValueError("pass --symbol (a file's one series) or --symbols, not both")
        if self.calendar:
            from core.assets import check_calendar

            check_calendar(self.calendar)
        return self

    def date_range(self) -> tuple[date, date]:
        """[start, end) with the source's defaults filled in."""
        today = datetime.now(UTC).date()
        recent = (today - timedelta(days=self.lookback_days or 7), today + timedelta(days=1))
        if self.lookback_days is not None:
            return recent
        defaults = {
            "auto": recent,
            "alpaca": recent,
            "synthetic": (DEMO_START, DEMO_END),
            "arch": (date(1999, 1, 1), date(2019, 1, 1)),
            "skfolio": (date(1990, 1, 1), date(2023, 1, 1)),
            "file": (date(1900, 1, 1), date(2200, 1, 1)),
        }[self.source]
        return (self.start or defaults[0], self.end or defaults[1])

    def default_symbols(self) -> list[str]:
        if self.symbols:
            return list(self.symbols)
        if self.source in ("synthetic", "alpaca", "auto"):
            return [*EQUITY_SYMBOLS, *COIN_SYMBOLS]
        if self.source == "arch":
            return list(ARCH_DAILY_SYMBOLS)
        if self.source == "skfolio":
            return list(SKFOLIO_DAILY_SYMBOLS)
        return []

    def default_timeframe(self) -> str | None:
        if self.timeframe:
            return self.timeframe
        return {
            "synthetic": "1Min",
            "alpaca": "1Min",
            "auto": "1Min",
            "arch": "1Day",
            "skfolio": "1Day",
        }.get(self.source)


class DemoConfig(BaseModel):
    """Parameters of the `demo` flow."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    start: date = Field(default=DEMO_START, description="First day of synthetic minute bars.")
    end: date = Field(
        default=DEMO_END, description="Last day (exclusive) of synthetic minute bars."
    )
    train_end: date = Field(
        default=date(2024, 5, 1),
        description="The demo's SPY agent trains before this day; from it on, the selection "
        "range: the gate judges the agent there (the agent's held-out evaluation).",
    )
    report_start: date = Field(
        default=date(2024, 6, 1),
        description="First day of the report range, up to `end`: the SPY agent's backtest and "
        "replay, on months used neither to train nor to select it.",
    )
    seed: Seed | None = Field(
        default=None, description="Synthetic generator seed (default: settings)."
    )
    warehouse: str | None = Field(default=None, description="Warehouse file (default: settings).")
    agent_cycles: int = Field(
        default=300,
        ge=1,
        description="Training cycles of each demo agent (1000 is the full default).",
    )
    sample_file: str | None = Field(
        default=None,
        description="A small CSV with deliberately faulty rows, to show quarantine (default: the "
        "one shipped in examples/).",
    )
    coin_agent_cycles: int = Field(
        default=250,
        ge=1,
        description="Training cycles of each coin agent in the demo's nightly retrain.",
    )
    nightly: bool = Field(
        default=True,
        description="Run steps 9-10: the small nightly retrain on three coins and the "
        "crypto-trading replay (needs weeks of data: the forecasters look 4 weeks ahead).",
    )

    @model_validator(mode="after")
    def _check(self) -> DemoConfig:
        if not self.start < self.train_end < self.report_start < self.end:
            raise ValueError(
                f"need start < train_end < report_start < end, got {self.start}, "
                f"{self.train_end}, {self.report_start}, {self.end}: the SPY agent trains, is "
                "selected by the gate and is reported on three non-empty, disjoint ranges"
            )
        return self


class TrainAgentConfig(BaseModel):
    """Parameters of the `train-agent` flow (SPY agent by default; any symbols/timeframe in the warehouse)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    symbols: list[str] = Field(
        default_factory=lambda: list(EQUITY_SYMBOLS),
        description="Assets whose bars feed the features; the first one is traded.",
    )
    timeframe: str = Field(
        default="1Min",
        description="Bar timeframe in the warehouse (1Min ... 1Day); unset: the traded symbol's "
        "most stored timeframe.",
    )
    train_start: date = Field(
        default=DEMO_START, description="First day of training data (UTC); unset: the first stored."
    )
    train_end: date = Field(
        default=date(2024, 5, 1),
        description="End (exclusive) of training data; unset: 80% into the stored span.",
    )
    test_start: date = Field(
        default=date(2024, 5, 1), description="First day of held-out data; unset: train_end."
    )
    test_end: date = Field(
        default=DEMO_END, description="End (exclusive) of held-out data; unset: the last stored."
    )
    cycles: int = Field(
        default=1000, ge=1, description="Training cycles (one session played per cycle)."
    )
    seeds: list[Seed] = Field(
        default_factory=lambda: [1, 2], min_length=1, description="One model per seed."
    )
    fee_bps: float | None = fee_field()
    slippage_bps: float | None = slippage_field()
    architecture: dict[str, Any] = Field(
        default_factory=dict,
        description='Overrides of models.qnet.Architecture, e.g. {"fast_hidden": 32}.',
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description='Overrides of models.dqn.DQNParams, e.g. {"lr": 0.0005}.'
    )
    checkpoint_every: int = Field(default=100, ge=1, description="Cycles between checkpoints.")
    episode_bars: int | None = Field(
        default=None,
        ge=0,
        description="Bars per training episode, counted from each range's first bar; 0 = one "
        "trading day; empty = the timeframe's default (minute: one session, 1Hour: 120, "
        "1Day: 63). The held-out evaluation and `backtest` of the model cut episodes the same.",
    )
    flatten_at_close: bool = Field(
        default=True,
        description="Intraday bars on an exchange calendar (NYSE) go flat at each session's "
        "close; daily bars and 24/7 or 24/5 markets never do.",
    )
    sentiment_inputs: list[SentimentInput] = Field(
        default_factory=list,
        description="Sentiment aggregates the agent sees (symbol_60m, symbol_24h, market_60m, "
        "market_24h): mean VADER compound of the posts mentioning the symbol / of all posts, "
        "each post counted from its time + the sentiment lag; 0 without posts.",
    )
    forecast: bool = Field(
        default=False,
        description="The agent sees the traded symbol's production forecaster's point-in-time "
        "forecast (refused when the symbol has none).",
    )
    stale_bars: int = Field(
        default=0,
        ge=0,
        description="A missing minute of a non-traded input (VXUS, BND on the IEX feed) keeps "
        "that asset's newest bar's features for up to this many bars, with a staleness input "
        "per asset (1.0: none within reach, features 0); 0 = a missing bar reads 0 (as "
        "models trained before it). 5 suits Alpaca's free IEX feed. Only specs with more "
        "than one symbol change.",
    )
    genome_id: str = Field(
        default="production",
        description="Architecture to train: 'production' = the promoted genome of the traded symbol if "
        "there is one (else the built-in defaults), 'builtin', or a registered genome id.",
    )
    budget_s: float | None = Field(
        default=None,
        gt=0,
        description="Stop each seed's training after this many seconds (checkpointed; resumable).",
    )
    resume: bool = Field(
        default=True, description="Continue from this run's last checkpoint if there is one."
    )
    warehouse: str | None = Field(default=None, description="Warehouse file (default: settings).")
    models_dir: str | None = Field(
        default=None, description="Artifacts folder (default: <data_dir>/models)."
    )

    @model_validator(mode="after")
    def _check(self) -> TrainAgentConfig:
        if len(set(self.sentiment_inputs)) != len(self.sentiment_inputs):
            raise ValueError(f"sentiment_inputs lists one twice: {self.sentiment_inputs}")
        given = self.model_fields_set
        # Unset dates come from the stored bars (flows.data_defaults): only given ones are checked.
        if ({"train_start", "train_end"} <= given and self.train_end <= self.train_start) or (
            {"test_start", "test_end"} <= given and self.test_end <= self.test_start
        ):
            raise ValueError("each range needs end after start")
        if {"train_end", "test_start"} <= given and self.test_start < self.train_end:
            raise ValueError(
                f"test_start ({self.test_start}) is before train_end ({self.train_end}): "
                "held-out data must come after the training data"
            )
        return self

    def run_key(self) -> str:
        """A short stable hash of everything that shapes training (not the seed)."""
        import hashlib
        import json

        payload = self.model_dump(
            mode="json", exclude={"seeds", "resume", "warehouse", "models_dir"}
        )
        # The inputs added with #17 appear only when set: older runs keep their keys.
        if not self.sentiment_inputs:
            del payload["sentiment_inputs"]
        if not self.forecast:
            del payload["forecast"]
        if not self.stale_bars or len(self.symbols) == 1:  # no other asset, nothing to carry
            del payload["stale_bars"]
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:10]


class EvolveConfig(BaseModel):
    """Parameters of the `evolve-architecture` flow."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    symbols: list[str] = Field(
        default_factory=lambda: list(EQUITY_SYMBOLS), description="Assets; first is traded."
    )
    timeframe: str = Field(default="1Min", description="Bar timeframe in the warehouse.")
    search_start: date = Field(
        default=DEMO_START,
        description="First day of the search range: every fold's training and validation days "
        "lie in [search_start, search_end).",
    )
    search_end: date = Field(
        default=date(2024, 3, 18),
        description="End (exclusive) of the search range. Its first half only trains; the "
        "second half is cut into `folds` validation windows, each fold training on all days "
        "before its window (expanding). Default: the demo data's first 11 weeks.",
    )
    folds: int = Field(
        default=3,
        ge=1,
        description="Walk-forward validation folds; fitness = mean over folds x seeds.",
    )
    test_start: date = Field(
        default=date(2024, 3, 18),
        description="First day of the judging range, after the search range: the winner "
        "(trained on the whole search range) is judged here by the statistical gate against "
        "the default genome and the baselines. It must not overlap the search range.",
    )
    test_end: date = Field(
        default=date(2024, 5, 1),
        description="End (exclusive) of the judging range. Default: before train-agent's "
        "held-out window (May-June 2024), which neither selects nor judges a genome.",
    )
    population: int = Field(default=16, ge=2, description="Individuals per generation.")
    generations: int = Field(default=4, ge=1, description="Generations.")
    elite: int = Field(default=2, ge=0, description="Best individuals kept unchanged.")
    tournament: int = Field(default=3, ge=1, description="Tournament size for parent selection.")
    mutation_rate: float = Field(
        default=0.25, ge=0.0, le=1.0, description="Per-gene redraw probability."
    )
    cycles: int = Field(
        default=200,
        ge=1,
        description="Training cycles per individual, fold and seed (the budget). 200 = 25 "
        "gradient updates of 8-64 replayed sessions (one per 8 cycles), so that fitness "
        "measures what a genome learns rather than its random start (40-60 cycles were 5-8 "
        "updates: noise); train-agent's 1000 would make 16 x 4 individuals x 3 folds x 2 "
        "seeds take many hours on 2 cores.",
    )
    seeds: list[Seed] = Field(
        default_factory=lambda: [1, 2],
        min_length=2,
        description="Fitness = mean over folds x these seeds; the winner and the default "
        "genome are judged as the mean of one agent per seed.",
    )
    search_seed: Seed = Field(default=0, description="Seed of populations and selection.")
    fixed_genes: dict[str, Any] = Field(
        default_factory=dict,
        description="Genes held at one value in every individual (models/genome.py GENES), e.g. "
        '{"ensemble_size": 1, "updates_per_block": 1} where ensembles or more updates cost too '
        "much; empty: the whole search space.",
    )
    fee_bps: float | None = fee_field()
    slippage_bps: float | None = slippage_field()
    individual_timeout_s: float | None = Field(
        default=600.0,
        gt=0,
        description="An individual over this many seconds scores the worst fitness.",
    )
    runner: Literal["process", "dask", "serial"] = Field(
        default="process",
        description="process: a local process pool; dask: a Dask cluster; serial: one at a time.",
    )
    workers: int = Field(
        default=2, ge=1, description="Parallel evaluations (process pool or local Dask cluster)."
    )
    dask_address: str | None = Field(
        default=None,
        description="Scheduler of an existing Dask cluster; empty: a LocalCluster here.",
    )
    register_best: bool = Field(
        default=True,
        description="Register the best genome as a candidate (tradingml promote makes it the default).",
    )
    warehouse: str | None = Field(default=None, description="Warehouse file (default: settings).")

    @model_validator(mode="after")
    def _check(self) -> EvolveConfig:
        if not (self.search_start < self.search_end and self.test_start < self.test_end):
            raise ValueError("search_start < search_end and test_start < test_end are required")
        if self.test_start < self.search_end:
            raise ValueError(
                f"the judging range ({self.test_start} to {self.test_end}) must start on or "
                f"after search_end ({self.search_end}): a genome must not be judged on the "
                "folds that selected it"
            )
        if self.elite >= self.population:
            raise ValueError("elite must be smaller than the population")
        return self

    def search_id(self) -> str:
        """Names the search by everything that shapes its results: re-running it resumes it."""
        import hashlib
        import json

        payload = self.model_dump(
            mode="json",
            # The judging range does not shape the search: a new one re-judges the same search.
            exclude={
                "runner", "workers", "dask_address", "warehouse", "register_best",
                "test_start", "test_end",
            },
        )  # fmt: skip
        if not self.fixed_genes:  # added with #17: a search without it keeps its id
            del payload["fixed_genes"]
        return (
            "nas-" + hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:10]
        )


PostSourceName = Literal["auto", "reddit", "synthetic"]


class ScrapeRedditConfig(BaseModel):
    """Parameters of the `scrape-reddit` flow."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: PostSourceName = Field(
        default="auto",
        description="auto: Reddit when REDDIT_CLIENT_ID and REDDIT_CLIENT_SECRET are set, else "
        "SYNTHETIC posts; reddit: insist on Reddit; synthetic: generated posts (labelled).",
    )
    subreddits: list[str] | None = Field(
        default=None, description="Subreddits to read; default: settings (TRADINGML_SUBREDDITS)."
    )
    limit: int = Field(
        default=1000,
        ge=1,
        description="At most this many new posts per subreddit per run (Reddit lists ~1000).",
    )
    since: datetime | None = Field(
        default=None,
        description="Fetch posts made after this time (with its zone, e.g. 2024-01-01T00:00Z); "
        "default: the newest stored post of the same source (an incremental scrape).",
    )
    until: datetime | None = Field(
        default=None,
        description="synthetic only: the generator's 'now' (default: the wall clock), e.g. the "
        "end of a replayed period.",
    )
    seed: Seed | None = Field(default=None, description="synthetic: seed (default: settings).")
    tone: Literal["follow", "lead", "lead-coins"] = Field(
        default="follow",
        description="synthetic: follow = tone reflects the past hour's return; lead = tone "
        "follows the bars' planted sentiment (ingest those bars with signal='sentiment'); "
        "lead-coins = coins lead, ETFs follow.",
    )
    signal_strength: float = Field(
        default=0.1, ge=0.0, le=0.9, description="synthetic lead: the bars' planted strength."
    )
    posts_per_hour: float = Field(
        default=4.0, gt=0, description="synthetic: mean posts per hour per subreddit."
    )
    batch_size: int = Field(
        default=5000, ge=1, description="Posts validated, stored and scored per transaction."
    )
    warehouse: str | None = Field(default=None, description="Warehouse file (default: settings).")

    @model_validator(mode="after")
    def _check(self) -> ScrapeRedditConfig:
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise ValueError(f"{name} must carry a timezone, e.g. 2024-01-01T00:00:00Z")
        if self.since and self.until and self.since >= self.until:
            raise ValueError(f"since ({self.since}) must be before until ({self.until})")
        return self


class RiskConfig(BaseModel):
    """Risk limits of a trading run (see trading.risk.RiskLimits)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_position_notional: float = Field(default=100_000.0, gt=0)
    max_orders_per_minute: int = Field(default=10, ge=1)
    daily_loss_limit: float = Field(default=0.03, gt=0, lt=1)
    kill_action: Literal["reduce-only", "flatten"] = "reduce-only"
    stale_after_s: float = Field(default=150.0, gt=0)
    allow_short: bool = Field(
        default=False,
        description="Let a model with negative (short) action levels trade; off, such a model "
        "is refused at start. The simulated broker refuses it either way (no negative holdings).",
    )

    def limits(self) -> dict[str, Any]:
        """The trading.risk.RiskLimits fields (allow_short goes to the engine instead)."""
        return self.model_dump(exclude={"allow_short"})


class BacktestConfig(BaseModel):
    """Parameters of the `backtest` flow."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    symbol: str = Field(default="SPY", description="Traded symbol (its production model is used).")
    model_id: str | None = Field(
        default=None,
        description="A registered dqn model; empty means the production model of `symbol`, "
        "else its best candidate by objective.",
    )
    start: date = Field(
        default=date(2024, 5, 1),
        description="First day (UTC) of the backtest; unset: the model's held-out range.",
    )
    end: date = Field(
        default=DEMO_END,
        description="Day (UTC, exclusive) the backtest ends; unset: the model's held-out range.",
    )
    cash: float = Field(
        default=100_000.0, gt=0, description="Starting cash of the simulated account."
    )
    fee_bps: float | None = fee_field()
    slippage_bps: float | None = slippage_field()
    account_rules: AccountType = Field(
        default="ideal",
        description="The simulated account's rules (core.account_rules), which the broker "
        "and the risk engine enforce: ideal (none: cash may go negative, instant settlement); "
        "cash (settled cash only, stock sales settle T+1); margin (2x buying power, and "
        "before 2026-06-04 the pattern-day-trader limit: no 4th day trade in 5 business "
        "days below $25k equity).",
    )
    impact_bps: float = Field(
        default=0.0,
        ge=0,
        description="Size impact on top of the half-spread: a fill pays impact_bps x "
        "sqrt(its quantity / the bar's volume) more (square-root law); 0 = none.",
    )
    max_volume_share: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Fill at most this share of each bar's volume; the rest of an order waits "
        "for the next bars (partial fills). Unset: whole orders fill.",
    )
    flatten_before_close_min: float = Field(
        default=1.0,
        ge=0,
        description="Intraday bars on an exchange calendar (NYSE) go flat this many minutes "
        "before each close (0: never); daily bars and 24/7 or 24/5 markets never do.",
    )
    episode_bars: int | None = Field(
        default=None,
        ge=0,
        description="Bars per policy episode; empty = what the model was trained with "
        "(else the timeframe's default).",
    )
    risk: RiskConfig = Field(default_factory=RiskConfig)
    warehouse: str | None = Field(default=None, description="Warehouse file (default: settings).")
    reports_dir: str | None = Field(
        default=None, description="Where HTML reports go (default: <data_dir>/reports)."
    )

    @model_validator(mode="after")
    def _check(self) -> BacktestConfig:
        # Unset dates come from the model or the stored bars (flows.data_defaults).
        if {"start", "end"} <= self.model_fields_set and self.start >= self.end:
            raise ValueError(f"start {self.start} must be before end {self.end}")
        return self


class LiveTradingConfig(BaseModel):
    """Parameters of the `live-trading` flow."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    symbol: str = Field(default="SPY", description="Traded symbol.")
    mode: Literal["replay", "paper", "live"] | None = Field(
        default=None,
        description="replay: a stored session replayed into the simulated broker; paper: Alpaca "
        "paper account; live: real money (also needs TRADINGML_LIVE_TRADING_OPT_IN=true). "
        "Empty: TRADINGML_MODE (default replay).",
    )
    model_id: str | None = Field(
        default=None, description="Model to trade; empty means the production dqn model of symbol."
    )
    replay_date: date | None = Field(
        default=None,
        description="replay: the New York session to replay; empty means the newest stored one.",
    )
    replay_speed: float = Field(
        default=0.0,
        ge=0,
        description="replay: times real time (60 = a minute per second); 0 = as fast as possible.",
    )
    start_minute: int = Field(
        default=0,
        ge=0,
        description="replay: start this many minutes after the open (the run warms up on the "
        "minutes before it, as a live run started late does).",
    )
    max_minutes: int | None = Field(
        default=None, ge=1, description="Stop after this many decisions (default: the close)."
    )
    cash: float = Field(default=100_000.0, gt=0, description="replay: simulated starting cash.")
    fee_bps: float | None = fee_field()
    slippage_bps: float | None = slippage_field()
    flatten_before_close_min: float = Field(
        default=1.0,
        ge=0,
        description="Go flat this many minutes before the session's close (0: never).",
    )
    account_rules: AccountType = Field(
        default="ideal",
        description="Replay: the simulated account's rules (ideal, cash: settled cash only and "
        "T+1 for stocks, margin: 2x buying power and the pre-2026-06-04 pattern-day-trader "
        "limit), enforced by its broker and this flow's risk engines. Paper/live: Alpaca's.",
    )
    reconcile_every_min: int = Field(
        default=5, ge=1, description="Reconcile with the broker this often."
    )
    view_every_s: float = Field(
        default=120.0,
        gt=0,
        description="Refresh the session's progress and table artifacts in the Prefect UI at "
        "most this often (seconds of wall time), and once at the end.",
    )
    wait_for_open_min: float = Field(
        default=15.0,
        ge=0,
        description="paper/live: started this close before the open, wait for it (the 09:25 "
        "schedule); further away, log the next open and exit.",
    )
    max_clock_offset_s: float = Field(
        default=30.0,
        gt=0,
        description="paper/live: at start the local clock is compared with the broker's "
        "(Alpaca GET /v2/clock). Further apart than this, the run refuses to trade (fix the "
        "machine's clock: NTP); within it, every decision uses broker time (local + offset).",
    )
    risk: RiskConfig = Field(default_factory=RiskConfig)
    warehouse: str | None = Field(default=None, description="Warehouse file (default: settings).")
    reports_dir: str | None = Field(default=None, description="Where the session report goes.")


class CryptoTradingConfig(BaseModel):
    """Parameters of the `crypto-trading` flow."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    coins: list[str] | None = Field(
        default=None,
        description="Coins to trade (those with a production agent); empty: TRADINGML_COINS.",
    )
    mode: Literal["replay", "paper", "live"] | None = Field(
        default=None,
        description="replay (a stored UTC day, offline), paper (Alpaca paper account, streamed "
        "bars) or live (real money; needs TRADINGML_LIVE_TRADING_OPT_IN); empty: TRADINGML_MODE.",
    )
    replay_date: date | None = Field(
        default=None, description="The UTC day to replay; empty means the newest stored one."
    )
    start_minute: int = Field(
        default=0, ge=0, le=1439, description="Start this many minutes into the day."
    )
    max_minutes: int | None = Field(default=None, ge=1, description="Stop after this many minutes.")
    cash: float = Field(default=100_000.0, gt=0, description="replay: simulated starting cash.")
    fee_bps: float | None = fee_field()
    slippage_bps: float | None = slippage_field()
    flatten_before_close_min: float = Field(
        default=1.0, ge=0, description="Go flat this close to 00:00 UTC (the agents' episode end)."
    )
    account_rules: AccountType = Field(
        default="ideal",
        description="Replay: the simulated account's rules (ideal, cash: settled cash only and "
        "T+1 for stocks, margin: 2x buying power and the pre-2026-06-04 pattern-day-trader "
        "limit), enforced by its broker and this flow's risk engines. Paper/live: Alpaca's.",
    )
    reconcile_every_min: int = Field(
        default=5, ge=1, description="Reconcile with the broker this often (minutes)."
    )
    view_every_s: float = Field(
        default=120.0,
        gt=0,
        description="Refresh the session's progress and table artifacts in the Prefect UI at "
        "most this often (seconds of wall time), and once at the end.",
    )
    max_clock_offset_s: float = Field(
        default=30.0,
        gt=0,
        description="paper/live: refuse to trade when the local clock is further than this "
        "from the broker's; within it, decide on broker time.",
    )
    risk: RiskConfig = Field(default_factory=RiskConfig)
    warehouse: str | None = Field(default=None, description="Warehouse file (default: settings).")


class GateConfig(BaseModel):
    """The nightly promotion gate (models/gate.py): significance levels and margins."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    drawdown_margin: float = Field(
        default=0.02,
        ge=0.0,
        description="A candidate's max drawdown may exceed the reference's by at most this "
        "(absolute: 0.02 = 2 percentage points); agents and the allocator.",
    )
    alpha: float = Field(
        default=0.05,
        gt=0.0,
        lt=1.0,
        description="Significance level of the statistical gate: an agent's SPA p-value against "
        "the champion and every baseline, a forecaster's HAC p-value of rank IC > 0.",
    )
    dsr_min: float = Field(
        default=0.95,
        ge=0.0,
        le=1.0,
        description="An agent's deflated Sharpe ratio (over every trial recorded on its symbol) "
        "must be at least this.",
    )
    forecaster_min_independent_labels: float = Field(
        default=10.0,
        gt=0.0,
        description="Fewer out-of-fold rows / label horizon than this: the forecaster is not "
        "promoted (too few independent labels to test).",
    )
    promote: bool = Field(
        default=True,
        description="Promote the candidates that pass; false records the verdicts only (a dry run).",
    )


class NightlyRetrainConfig(BaseModel):
    """Parameters of the `nightly-retrain` flow (coins' forecasters and agents, the SPY agent, the allocator, the gate)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    coins: list[str] | None = Field(
        default=None, description="Coins to retrain; empty: TRADINGML_COINS (the 14 pairs)."
    )
    include_spy: bool = Field(default=True, description="Retrain the SPY agent as well.")
    spy_symbols: list[str] = Field(
        default_factory=lambda: list(EQUITY_SYMBOLS),
        description="The SPY agent's assets (the first is traded), as train-agent uses them.",
    )
    genome_id: str = Field(
        default="production",
        description="The SPY agent's genome, as train-agent's: 'production' = the promoted genome "
        "of its traded symbol if there is one (else the built-in defaults), 'builtin', or a "
        "registered genome id. architecture and params override the genome's choices.",
    )
    end: date | None = Field(
        default=None,
        description="Last UTC day of data (inclusive); empty: the day of the newest stored bar.",
    )
    start: date | None = Field(
        default=None, description="First UTC day of data; empty: 365 days before end."
    )
    agent_test_days: int = Field(
        default=30,
        ge=1,
        description="The newest days of the window are held out: agents and the allocator are "
        "trained before them and judged on them.",
    )
    horizon_minutes: int = Field(
        default=40_320, ge=1, description="Forecast horizon (4 weeks = 40,320 minutes)."
    )
    forecast_every_minutes: int = Field(
        default=60, ge=1, description="Forecaster row grid: one row (and forecast) this often."
    )
    refit_every_days: float = Field(
        default=7.0,
        gt=0.0,
        description="Point-in-time forecasts: a new walk-forward model every this many days.",
    )
    forecaster_return_windows: list[Window] = Field(
        default_factory=lambda: [60, 240, 1440, 10_080, 40_320],
        min_length=1,
        description="The forecaster's log-return windows in bars (1 hour to 4 weeks).",
    )
    forecaster_vol_windows: list[StdWindow] = Field(
        default_factory=lambda: [60, 1440],
        min_length=1,
        description="The forecaster's volatility windows in bars.",
    )
    forecaster: dict[str, Any] = Field(
        default_factory=dict,
        description='Overrides of models.forecaster.ForecasterConfig, e.g. {"n_estimators": 100}.',
    )
    forecaster_threads: int | None = Field(
        default=None,
        ge=1,
        description="XGBoost threads per forecaster (coins run in parallel); empty: the "
        "training tasks' count (threads, else cores // workers; 1 on an existing Dask cluster).",
    )
    sentiment_window_minutes: int = Field(
        default=60,
        ge=1,
        description="The sentiment input: the mean VADER compound of the posts mentioning the "
        "coin over this many minutes (point in time; 0 without posts).",
    )
    sentiment_inputs: list[SentimentInput] = Field(
        default_factory=list,
        description="Sentiment aggregates the SPY agent and the coin agents see beside that "
        "(symbol_60m, symbol_24h, market_60m, market_24h; e.g. the coins' market-wide "
        "market_60m, market_24h), point in time with the sentiment lag; 0 without posts.",
    )
    stale_bars: int = Field(
        default=0,
        ge=0,
        description="The SPY agent: a missing minute of a non-traded input (VXUS, BND on the IEX feed) keeps "
        "that asset's newest bar's features for up to this many bars, with a staleness input "
        "per asset (1.0: none within reach, features 0); 0 = a missing bar reads 0 (as "
        "models trained before it). 5 suits Alpaca's free IEX feed. Only specs with more "
        "than one symbol change.",
    )
    cycles: int = Field(default=300, ge=1, description="Training cycles of each agent.")
    seeds: list[Seed] = Field(
        default_factory=lambda: [1], min_length=1, description="One agent per seed and symbol."
    )
    architecture: dict[str, Any] = Field(
        default_factory=dict,
        description='Overrides of models.qnet.Architecture, e.g. {"fast_hidden": 32}.',
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="Overrides of models.dqn.DQNParams."
    )
    fee_bps: float | None = fee_field()
    slippage_bps: float | None = slippage_field()
    budget_s: float | None = Field(
        default=None,
        gt=0,
        description="Stop each agent's training after this many seconds (results then depend "
        "on the machine's speed).",
    )
    allocator: dict[str, Any] = Field(
        default_factory=dict,
        description="Overrides of models.allocator.AllocatorConfig (periods are days: "
        "periods_per_year defaults to 365).",
    )
    drawdown_days: int = Field(
        default=30,
        ge=1,
        description="The allocator's drawdown input: fall from the high of this many days.",
    )
    gate: GateConfig = Field(default_factory=GateConfig)
    runner: Literal["thread", "process", "dask"] = Field(
        default="thread",
        description="How coins train in parallel: thread pool, process pool, or Dask (a "
        "LocalCluster, or dask_address / TRADINGML_DASK_ADDRESS). Same models either way.",
    )
    workers: int = Field(
        default=2, ge=1, description="Parallel tasks (threads, processes, Dask workers)."
    )
    dask_address: str | None = Field(
        default=None,
        description="Scheduler of an existing Dask cluster; empty: TRADINGML_DASK_ADDRESS, else a LocalCluster.",
    )
    threads: int | None = Field(
        default=None,
        ge=1,
        description="Torch threads per training task; empty: this machine's cores shared by "
        "the workers (cores // workers), 1 on an existing Dask cluster. One count for every "
        "task, so the runner does not change a seed's weights.",
    )
    warehouse: str | None = Field(default=None, description="Warehouse file (default: settings).")
    models_dir: str | None = Field(
        default=None, description="Artifacts folder (default: <data_dir>/models)."
    )

    @model_validator(mode="after")
    def _check(self) -> NightlyRetrainConfig:
        if self.start is not None and self.end is not None and self.start > self.end:
            raise ValueError(f"start ({self.start}) must not be after end ({self.end})")
        if "horizon_minutes" in self.forecaster or "refit_every_days" in self.forecaster:
            raise ValueError("set horizon_minutes / refit_every_days as fields, not in forecaster")
        if len(set(self.sentiment_inputs)) != len(self.sentiment_inputs):
            raise ValueError(f"sentiment_inputs lists one twice: {self.sentiment_inputs}")
        return self

    def window(self, newest: date) -> tuple[datetime, datetime]:
        """[first, end) in UTC of the data: end is 00:00 after the last day (default: `newest`)."""
        last = self.end or newest
        first = self.start or (last - timedelta(days=365))
        return utc_midnight(first), utc_midnight(last + timedelta(days=1))

    def test_start(self, window_end: datetime) -> datetime:
        """Where the held-out days begin."""
        return window_end - timedelta(days=self.agent_test_days)

    def recipe_key(self) -> str:
        """A short hash of everything that shapes the models (not the runner, paths or gate)."""
        import hashlib
        import json

        payload = self.model_dump(
            mode="json",
            exclude={
                "runner",
                "workers",
                "threads",
                "forecaster_threads",
                "dask_address",
                "warehouse",
                "models_dir",
                "gate",
                "coins",
            },
        )
        if not self.sentiment_inputs:  # added with #17: older runs keep their recipe key
            del payload["sentiment_inputs"]
        if self.genome_id == "production":  # added with #17 at its default: the same
            del payload["genome_id"]
        if not self.stale_bars:
            del payload["stale_bars"]
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:10]


class EvaluateConfig(BaseModel):
    """Parameters of the `evaluate` flow: a walk-forward evaluation of the default agent beside the baselines."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    symbol: str = Field(
        default="SPX",
        description="Traded symbol; its stored bars are used (SPX: `ingest-bars --source skfolio`).",
    )
    timeframe: str | None = Field(
        default=None, description="Bar timeframe; empty = the symbol's stored timeframe."
    )
    first_test_year: int = Field(
        default=2000, ge=1900, le=2200, description="First calendar year tested; one fold a year."
    )
    last_test_year: int | None = Field(
        default=None,
        ge=1900,
        le=2200,
        description="Last calendar year tested (inclusive); empty = the last stored year.",
    )
    window: Literal["expanding", "rolling"] = Field(
        default="expanding",
        description="Training window: everything before the test year, or the last train_bars.",
    )
    train_bars: int | None = Field(
        default=None, ge=2, description="Bars of a rolling training window (window=rolling only)."
    )
    min_train_bars: int = Field(
        default=500, ge=2, description="Folds with fewer training bars are skipped."
    )
    embargo_bars: int = Field(
        default=5, ge=0, description="Bars between training and test left out of both."
    )
    seeds: list[Seed] = Field(
        default_factory=lambda: [0, 1, 2, 3, 4],
        min_length=1,
        description="Agents trained per fold, one per seed.",
    )
    cycles: int = Field(default=1000, ge=1, description="Training cycles per seed and fold.")
    budget_s: float | None = Field(
        default=None, gt=0, description="Seconds of training per seed and fold (empty: all cycles)."
    )
    episode_bars: int | None = Field(
        default=None,
        ge=0,
        description="Bars per training episode; empty = the timeframe's default.",
    )
    architecture: dict[str, Any] = Field(
        default_factory=dict,
        description='Overrides of models.qnet.Architecture, e.g. {"fast_hidden": 32}.',
    )
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Overrides of models.dqn.DQNParams (not cycles: its own option), e.g. "
        "{'action_levels': [0, 0.25, 0.5, 0.75, 1], 'reward': 'drawdown'}.",
    )
    prior_trials: int = Field(
        default=0,
        ge=0,
        description="Trials spent choosing this configuration that the trials table does not "
        "hold (e.g. tradingml select-agent's candidates x seeds on development folds); added "
        "to the deflated Sharpe ratio's trial count.",
    )
    fee_bps: float | None = fee_field()
    slippage_bps: float | None = slippage_field()
    reps: int = Field(
        default=1000,
        ge=100,
        description="Bootstrap replications of the SPA test and Sharpe interval.",
    )
    workers: int = Field(default=2, ge=1, description="Folds trained at once (threads).")
    warehouse: str | None = Field(default=None, description="Warehouse file (default: settings).")
    reports_dir: str | None = Field(
        default=None, description="Where HTML reports go (default: <data_dir>/reports)."
    )

    @model_validator(mode="after")
    def _check(self) -> EvaluateConfig:
        if self.window == "rolling" and self.train_bars is None:
            raise ValueError("window=rolling needs train_bars")
        if self.last_test_year is not None and self.last_test_year < self.first_test_year:
            raise ValueError(
                f"last_test_year {self.last_test_year} is before first_test_year {self.first_test_year}"
            )
        if "cycles" in self.params:
            raise ValueError("set cycles with its own option, not in params")
        return self

    def recipe(self) -> dict[str, Any]:
        """What shapes the result (not where it is written or how many threads): the eval id's input.

        The options added with #17 (last_test_year, architecture, params, prior_trials) appear
        only when set, so an older evaluation's config keeps its eval id.
        """
        out = self.model_dump(mode="json", exclude={"warehouse", "reports_dir", "workers"})
        for name, unset in _EVALUATE_LATER_DEFAULTS.items():
            if out[name] == unset:
                del out[name]
        return out


_EVALUATE_LATER_DEFAULTS: dict[str, Any] = {
    "last_test_year": None,
    "architecture": {},
    "params": {},
    "prior_trials": 0,
}
"""EvaluateConfig's options added with #17 and their defaults, left out of its recipe when unset."""


class SelectAgentConfig(BaseModel):
    """Parameters of the `select-agent` flow: choose among fixed candidates on development folds, then judge only the winner."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    symbol: str = Field(
        default="SPX",
        description="Series the choice is made on (SPX: `ingest-bars --source skfolio`).",
    )
    dev_first_year: int = Field(
        default=1993, ge=1900, le=2200, description="First development test year."
    )
    dev_last_year: int = Field(
        default=1999, ge=1900, le=2200, description="Last development test year (inclusive)."
    )
    dev_seeds: list[Seed] = Field(
        default_factory=lambda: [0, 1], min_length=1, description="Seeds per development fold."
    )
    judge_first_year: int = Field(
        default=2000,
        ge=1900,
        le=2200,
        description="First judging test year; must come after every development year.",
    )
    judge_last_year: int | None = Field(
        default=None, ge=1900, le=2200, description="Last judging year; empty = the last stored."
    )
    judge_seeds: list[Seed] = Field(
        default_factory=lambda: [0, 1, 2, 3, 4],
        min_length=1,
        description="Seeds per judging fold.",
    )
    judge: bool = Field(
        default=True, description="Judge the winner with `evaluate` (off: only choose)."
    )
    cycles: int = Field(default=1000, ge=1, description="Training cycles per seed and fold.")
    budget_s: float | None = Field(
        default=None, gt=0, description="Seconds of training per seed and fold (empty: all cycles)."
    )
    min_train_bars: int = Field(
        default=500, ge=2, description="Folds with fewer training bars are skipped."
    )
    reps: int = Field(
        default=1000, ge=100, description="Bootstrap replications of the judging statistics."
    )
    workers: int = Field(default=2, ge=1, description="Folds trained at once (threads).")
    warehouse: str | None = Field(default=None, description="Warehouse file (default: settings).")
    reports_dir: str | None = Field(
        default=None, description="Where HTML reports go (default: <data_dir>/reports)."
    )

    @model_validator(mode="after")
    def _check(self) -> SelectAgentConfig:
        # The same rule as models.selection.check_disjoint, refused before any work.
        if self.dev_last_year < self.dev_first_year:
            raise ValueError("dev_last_year is before dev_first_year")
        if self.dev_last_year >= self.judge_first_year:
            raise ValueError(
                f"development years {self.dev_first_year}-{self.dev_last_year} overlap or follow "
                f"the judging years from {self.judge_first_year}"
            )
        return self
