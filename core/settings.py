"""One typed settings object, read from the environment and an optional .env file."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from core.universe import COIN_SYMBOLS, EQUITY_SYMBOLS, is_coin

Mode = Literal["replay", "paper", "live"]

PAPER_TRADING_URL = "https://paper-api.alpaca.markets"
LIVE_TRADING_URL = "https://api.alpaca.markets"
"""Alpaca's trading endpoints: the paper account, and the one that trades real money."""

DEFAULT_SUBREDDITS: tuple[str, ...] = (
    "wallstreetbets",
    "stocks",
    "investing",
    "StockMarket",
    "CryptoCurrency",
    "Bitcoin",
    "ethereum",
)


class Settings(BaseSettings):
    """Everything configurable about the platform. Secrets are SecretStr and never printed."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
        frozen=True,
        # Validation errors would otherwise echo the raw input, secrets included.
        hide_input_in_errors=True,
        # An empty KEY= line (as in .env.example) means "not set", not "set to an empty secret".
        env_ignore_empty=True,
    )

    warehouse_path: Path = Field(
        default=Path("data/warehouse.duckdb"),
        validation_alias=AliasChoices("TRADINGML_WAREHOUSE", "warehouse_path"),
        description="DuckDB warehouse file.",
    )
    data_dir: Path = Field(
        default=Path("data"),
        validation_alias=AliasChoices("TRADINGML_DATA_DIR", "data_dir"),
        description="Folder for model artifacts, reports and the outbox.",
    )
    mode: Mode = Field(
        default="replay",
        validation_alias=AliasChoices("TRADINGML_MODE", "mode"),
        description="replay = embedded data + simulated broker; paper = Alpaca paper; live = real money.",
    )
    live_trading_opt_in: bool = Field(
        default=False,
        validation_alias=AliasChoices("TRADINGML_LIVE_TRADING_OPT_IN", "live_trading_opt_in"),
        description="Must be true, together with mode=live, before real money is traded.",
    )
    synthetic_seed: int = Field(
        default=7,
        ge=0,  # numpy's seed sequences refuse negative seeds
        validation_alias=AliasChoices("TRADINGML_SYNTHETIC_SEED", "synthetic_seed"),
        description="Seed of the synthetic minute-bar generator.",
    )
    lock_timeout_s: float = Field(
        default=30.0,
        gt=0,
        validation_alias=AliasChoices("TRADINGML_LOCK_TIMEOUT_S", "lock_timeout_s"),
        description="How long to retry when another process holds the warehouse file.",
    )
    alpaca_api_key_id: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("APCA_API_KEY_ID", "alpaca_api_key_id")
    )
    alpaca_api_secret_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("APCA_API_SECRET_KEY", "alpaca_api_secret_key")
    )
    alpaca_stock_feed: Literal["iex", "sip"] = Field(
        default="iex", validation_alias=AliasChoices("TRADINGML_ALPACA_FEED", "alpaca_stock_feed")
    )
    reddit_client_id: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("REDDIT_CLIENT_ID", "reddit_client_id")
    )
    reddit_client_secret: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("REDDIT_CLIENT_SECRET", "reddit_client_secret")
    )
    reddit_user_agent: str = Field(
        default="tradingml/0.1 (offline)",
        validation_alias=AliasChoices("REDDIT_USER_AGENT", "reddit_user_agent"),
    )
    reddit_base_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("TRADINGML_REDDIT_BASE_URL", "reddit_base_url"),
        description="Send every Reddit call here instead of reddit.com (a proxy or test server).",
    )
    alpaca_base_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("TRADINGML_ALPACA_BASE_URL", "alpaca_base_url"),
        description="Send every Alpaca REST call (data and trading) here (a proxy or test server).",
    )
    alpaca_stream_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("TRADINGML_ALPACA_STREAM_URL", "alpaca_stream_url"),
        description="Base websocket URL for Alpaca streams, without the path (ws://host:port).",
    )
    subreddits: Annotated[tuple[str, ...], NoDecode] = Field(
        default=DEFAULT_SUBREDDITS,
        validation_alias=AliasChoices("TRADINGML_SUBREDDITS", "subreddits"),
        description="Subreddits scrape-reddit reads (comma-separated in the environment).",
    )
    equity_symbols: Annotated[tuple[str, ...], NoDecode] = Field(
        default=EQUITY_SYMBOLS,
        validation_alias=AliasChoices("TRADINGML_EQUITIES", "equity_symbols"),
        description="Stocks/ETFs ingest-bars fetches from Alpaca (comma-separated).",
    )
    coin_symbols: Annotated[tuple[str, ...], NoDecode] = Field(
        default=COIN_SYMBOLS,
        validation_alias=AliasChoices("TRADINGML_COINS", "coin_symbols"),
        description="Crypto pairs ingest-bars fetches from Alpaca, written BASE/USD (comma-separated).",
    )
    sentiment_lag_minutes: int = Field(
        default=5,
        ge=0,
        validation_alias=AliasChoices("TRADINGML_SENTIMENT_LAG_MINUTES", "sentiment_lag_minutes"),
        description="A post counts in sentiment features only this long after it was made.",
    )
    dask_address: str | None = Field(
        default=None,
        validation_alias=AliasChoices("TRADINGML_DASK_ADDRESS", "dask_address"),
        description="Scheduler of a Dask cluster (tcp://host:8786) for flows run with runner=dask; "
        "unset: a LocalCluster on this machine.",
    )
    prefect_home: Path = Field(
        default=Path(".prefect"),
        validation_alias=AliasChoices("PREFECT_HOME", "prefect_home"),
        description="Prefect's state folder; kept inside the project by the Makefile.",
    )

    @field_validator("subreddits", "equity_symbols", "coin_symbols", mode="before")
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("coin_symbols")
    @classmethod
    def _coins_are_pairs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [c for c in value if not is_coin(c)]
        if bad:
            raise ValueError(f"coins are written as pairs like BTC/USD, not {bad}")
        return value

    @model_validator(mode="after")
    def _refuse_unsafe_modes(self) -> Settings:
        problem = mode_refusal(self.mode, self)
        if problem:
            raise ValueError(problem)
        return self

    @property
    def is_paper(self) -> bool:
        return self.mode != "live"

    def describe(self) -> dict[str, Any]:
        """A printable view: secrets reported only as set/unset."""
        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                out[name] = "set (hidden)"
            elif value is None and name.startswith(("alpaca_api", "reddit_client")):
                out[name] = "not set"
            else:
                out[name] = str(value)
        return out


def is_live_endpoint(url: str) -> bool:
    """Whether a configured Alpaca base URL is the real-money trading endpoint."""
    try:
        host = urlsplit(url.strip()).hostname or ""
    except ValueError:
        return False
    return host.rstrip(".").lower() == urlsplit(LIVE_TRADING_URL).hostname


def mode_refusal(mode: str, settings: Settings) -> str | None:
    """Why a run in `mode` must not start with these settings; None when it may.

    The one place these rules live: Settings checks its own mode with it, the live-trading
    flow the mode its config asks for, build_adapters the mode it builds. The messages name
    variables and Alpaca's public endpoints, never a key or a configured URL.
    """
    if mode == "live" and not settings.live_trading_opt_in:
        return (
            "mode=live trades real money and needs TRADINGML_LIVE_TRADING_OPT_IN=true as well; "
            "use mode=paper (Alpaca paper account) or mode=replay (offline) otherwise"
        )
    key_id = settings.alpaca_api_key_id
    if mode == "live" and key_id and key_id.get_secret_value().strip().upper().startswith("PK"):
        return (
            "mode=live refused: APCA_API_KEY_ID is a paper key id (PK...), not a live one "
            "(AK...); set the live account's key pair to trade real money, or use mode=paper"
        )
    if mode == "paper" and settings.alpaca_base_url and is_live_endpoint(settings.alpaca_base_url):
        return (
            f"mode=paper refused: TRADINGML_ALPACA_BASE_URL points at Alpaca's live, real-money "
            f"endpoint ({LIVE_TRADING_URL}); unset it (paper trades on {PAPER_TRADING_URL}) "
            "or point it at a paper proxy"
        )
    return None


class NotWritableError(RuntimeError):
    """A folder a run writes to cannot be written; raised before the run does any work."""


def unwritable_reason(folder: Path) -> str | None:
    """Why files cannot be made in `folder` (created if missing); None when they can.

    Creates nothing: the nearest existing folder on the way up must be one this process
    may write to (os.access: a root process passes permission bits, not a file in the way).
    """
    probe = folder.absolute()
    try:
        while not probe.exists() and probe.parent != probe:
            probe = probe.parent
        if not probe.is_dir():
            return f"{probe} is a file, not a folder"
    except OSError as err:
        return f"{probe} cannot be read ({err.strerror})"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} is read-only for this user (chmod u+w)"
    return None


def require_writable(folder: Path, what: str, setting: str) -> None:
    """Unless files can be made in `folder`, raise NotWritableError naming `what` (with its
    path) and the `setting` that moves it."""
    reason = unwritable_reason(folder)
    if reason is not None:
        raise NotWritableError(
            f"{what} cannot be written: {reason}; fix that or point {setting} at a folder you "
            "can write to (nothing was done)"
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once)."""
    return Settings()
