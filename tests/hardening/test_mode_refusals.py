"""Refused at start: live with a paper key id, paper pointed at the live endpoint, live without the opt-in.

The rules live in core.settings.mode_refusal; Settings, the live-trading flow (check_mode)
and build_adapters each apply them. At flow level a fake Alpaca that accepts the keys
records every request: a refused run sends none, so no order can have been placed.
Keys are made at run time (nothing key-shaped is stored in the repository) and no
message may contain one.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from adapters.clock import ManualClock
from core.configs import LiveTradingConfig
from core.settings import (
    LIVE_TRADING_URL,
    PAPER_TRADING_URL,
    Settings,
    get_settings,
    is_live_endpoint,
    mode_refusal,
)
from flows import wiring
from flows.live_trading import LiveTradingRefused, live_trading
from flows.wiring import ModeRefusedError, build_adapters
from tests.fakes.alpaca import FakeAlpacaRest
from tests.hardening.trading_world import World, build_world
from tests.integration.test_live_paper import START
from tests.integration.test_trading_flows import ledger_counts


def alpaca_key_id(prefix: str) -> str:
    """A made-up key id of Alpaca's shape: PK (paper) / AK (live) + 18 upper-case alphanumerics."""
    return prefix + "".join(
        secrets.choice(string.ascii_uppercase + string.digits) for _ in range(18)
    )


def alpaca_secret() -> str:
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(40))


def settings(**kw: object) -> Settings:
    return Settings(_env_file=None, **kw)  # type: ignore[arg-type]


# ---- the rules ---------------------------------------------------------------------


def test_live_with_a_paper_key_id_is_refused_without_naming_the_key() -> None:
    paper_key, secret = alpaca_key_id("PK"), alpaca_secret()
    with pytest.raises(ValidationError, match=r"paper key id \(PK\.\.\.\)") as err:
        settings(
            mode="live",
            live_trading_opt_in=True,
            alpaca_api_key_id=paper_key,
            alpaca_api_secret_key=secret,
        )
    assert paper_key not in str(err.value) and secret not in str(err.value)
    assert paper_key[2:] not in str(err.value)
    # A lower-case or space-padded paper key is the same key.
    for variant in (paper_key.lower(), f"  {paper_key}"):
        replay = settings(alpaca_api_key_id=variant, live_trading_opt_in=True)
        problem = mode_refusal("live", replay)
        assert problem is not None and "PK..." in problem and variant.strip() not in problem
    # A live key id passes; so does a paper key in paper mode.
    live_key = alpaca_key_id("AK")
    assert (
        mode_refusal(
            "live", settings(alpaca_api_key_id=live_key, live_trading_opt_in=True, mode="live")
        )
        is None
    )
    assert mode_refusal("paper", settings(alpaca_api_key_id=paper_key, mode="paper")) is None


@pytest.mark.parametrize(
    "url",
    [
        LIVE_TRADING_URL,
        "https://api.alpaca.markets/",
        "https://API.Alpaca.Markets/v2",
        "https://api.alpaca.markets:443",
        " https://api.alpaca.markets.",
    ],
)
def test_paper_mode_pointed_at_the_live_endpoint_is_refused(url: str) -> None:
    assert is_live_endpoint(url)
    with pytest.raises(ValidationError, match="live, real-money endpoint") as err:
        settings(mode="paper", alpaca_base_url=url)
    assert PAPER_TRADING_URL in str(err.value)
    problem = mode_refusal("paper", settings(alpaca_base_url=url))  # replay: allowed
    assert problem is not None and "TRADINGML_ALPACA_BASE_URL" in problem


@pytest.mark.parametrize(
    "url",
    [PAPER_TRADING_URL, "http://127.0.0.1:8080", "https://data.alpaca.markets", "not a url"],
)
def test_paper_mode_on_other_endpoints_starts(url: str) -> None:
    assert not is_live_endpoint(url)
    assert settings(mode="paper", alpaca_base_url=url).mode == "paper"


def test_live_needs_the_opt_in_and_the_message_says_how() -> None:
    key = alpaca_key_id("AK")
    with pytest.raises(ValidationError, match="TRADINGML_LIVE_TRADING_OPT_IN=true") as err:
        settings(mode="live", alpaca_api_key_id=key, alpaca_api_secret_key=alpaca_secret())
    assert key not in str(err.value)
    assert mode_refusal("live", settings(alpaca_api_key_id=key)) is not None
    assert mode_refusal("replay", settings(alpaca_api_key_id=alpaca_key_id("PK"))) is None


def test_build_adapters_refuses_settings_that_skipped_validation() -> None:
    """model_copy(update=...) does not run Settings' validators: build_adapters checks again."""
    base = settings(alpaca_api_key_id=alpaca_key_id("PK"), alpaca_api_secret_key=alpaca_secret())
    cases = {
        "paper key id": base.model_copy(update={"mode": "live", "live_trading_opt_in": True}),
        "TRADINGML_LIVE_TRADING_OPT_IN": base.model_copy(update={"mode": "live"}),
        "real-money endpoint": base.model_copy(
            update={"mode": "paper", "alpaca_base_url": LIVE_TRADING_URL}
        ),
    }
    for reason, unchecked in cases.items():
        with pytest.raises(ModeRefusedError, match=reason):
            build_adapters(unchecked)


# ---- the live-trading flow ---------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("mode-refusals"))


@pytest.fixture
def fake_for(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeAlpacaRest]:
    """A fake Alpaca REST that accepts a PK key pair, with the env pointing at it, mid-session."""
    key, secret = alpaca_key_id("PK"), alpaca_secret()
    with FakeAlpacaRest(api_key=key, secret_key=secret) as rest:
        rest.set_now(START)
        monkeypatch.setenv("APCA_API_KEY_ID", key)
        monkeypatch.setenv("APCA_API_SECRET_KEY", secret)
        monkeypatch.setenv("TRADINGML_ALPACA_BASE_URL", rest.base_url)
        monkeypatch.setenv("TRADINGML_ALPACA_STREAM_URL", "ws://127.0.0.1:9")
        monkeypatch.setenv("TRADINGML_DATA_DIR", str(tmp_path / "data"))
        monkeypatch.delenv("TRADINGML_MODE", raising=False)
        monkeypatch.delenv("TRADINGML_LIVE_TRADING_OPT_IN", raising=False)
        # Mid-session on a trading day: a run that got past the checks would trade at once.
        monkeypatch.setattr(wiring.INJECTED, "clock", lambda: ManualClock(START))
        get_settings.cache_clear()
        yield rest


def refused_run(world: World, mode: str, match: str) -> str:
    before = ledger_counts(world.warehouse)
    with pytest.raises(LiveTradingRefused, match=match) as refused:
        live_trading(LiveTradingConfig(mode=mode, warehouse=str(world.warehouse)))
    assert ledger_counts(world.warehouse) == before
    return str(refused.value)


@pytest.mark.slow
@pytest.mark.prefect
@pytest.mark.usefixtures("prefect_harness")
def test_the_flow_refuses_each_unsafe_start_before_any_request(
    world: World, fake_for: FakeAlpacaRest, monkeypatch: pytest.MonkeyPatch
) -> None:
    rest = fake_for
    key = get_settings().alpaca_api_key_id
    assert key is not None
    key_text = key.get_secret_value()

    # 1. live, opted in, with the paper key id the fake accepts.
    monkeypatch.setenv("TRADINGML_LIVE_TRADING_OPT_IN", "true")
    get_settings.cache_clear()
    message = refused_run(world, "live", r"paper key id \(PK\.\.\.\)")
    assert key_text not in message and rest.requests == []

    # 2. live without the opt-in.
    monkeypatch.setenv("TRADINGML_LIVE_TRADING_OPT_IN", "false")
    get_settings.cache_clear()
    message = refused_run(world, "live", "TRADINGML_LIVE_TRADING_OPT_IN=true")
    assert key_text not in message and rest.requests == []

    # 3. paper, with the trading URL set to the live endpoint (which the netguard would
    # refuse to reach: a run past the check fails differently).
    monkeypatch.setenv("TRADINGML_ALPACA_BASE_URL", LIVE_TRADING_URL)
    get_settings.cache_clear()
    message = refused_run(world, "paper", "live, real-money endpoint")
    assert key_text not in message and rest.requests == []

    # The same keys and fake, in a mode that may start, do reach the broker: the
    # refusals above were the checks, not a fake that would have refused anyway.
    monkeypatch.setenv("TRADINGML_ALPACA_BASE_URL", rest.base_url)
    get_settings.cache_clear()
    broker = build_adapters(get_settings().model_copy(update={"mode": "paper"})).broker
    assert broker is not None and broker.get_account().cash > 0
    assert [r.authorized for r in rest.requests_to("/v2/account", "GET")] == [True]
