"""Settings: typed, read from env and .env, and secrets never printed."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pydantic import ValidationError

from core.settings import Settings

SECRET = "sk-very-secret-value-123"


def test_defaults_are_offline_and_paper(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRADINGML_WAREHOUSE", raising=False)
    s = Settings(_env_file=None)
    assert s.mode == "replay"
    assert s.is_paper
    assert s.warehouse_path == Path("data/warehouse.duckdb")
    assert s.alpaca_api_key_id is None


def test_reads_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADINGML_WAREHOUSE", "/tmp/x.duckdb")
    monkeypatch.setenv("TRADINGML_MODE", "paper")
    monkeypatch.setenv("APCA_API_KEY_ID", "key-id")
    s = Settings(_env_file=None)
    assert s.warehouse_path == Path("/tmp/x.duckdb")
    assert s.mode == "paper"
    assert s.alpaca_api_key_id is not None
    assert s.alpaca_api_key_id.get_secret_value() == "key-id"


def test_reads_dotenv_file(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text(f"REDDIT_CLIENT_SECRET={SECRET}\nTRADINGML_SYNTHETIC_SEED=99\n")
    s = Settings(_env_file=env)
    assert s.synthetic_seed == 99
    assert s.reddit_client_secret is not None
    assert s.reddit_client_secret.get_secret_value() == SECRET


def test_secrets_never_printed(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for name in (
        "APCA_API_KEY_ID",
        "APCA_API_SECRET_KEY",
        "REDDIT_CLIENT_ID",
        "REDDIT_CLIENT_SECRET",
    ):
        monkeypatch.setenv(name, SECRET)
    s = Settings(_env_file=None)
    logging.getLogger("test").warning("settings: %s %r", s, s)
    renderings = [str(s), repr(s), s.model_dump_json(), str(s.model_dump()), str(s.describe())]
    renderings.append(caplog.text)
    for text in renderings:
        assert SECRET not in text
    assert s.describe()["alpaca_api_secret_key"] == "set (hidden)"


def test_validation_errors_do_not_echo_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET)
    monkeypatch.setenv("TRADINGML_LOCK_TIMEOUT_S", "not-a-number")
    with pytest.raises(ValidationError) as err:
        Settings(_env_file=None)
    assert SECRET not in str(err.value)


def test_live_mode_needs_explicit_opt_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET)
    monkeypatch.setenv("TRADINGML_MODE", "live")
    with pytest.raises(ValidationError, match="TRADINGML_LIVE_TRADING_OPT_IN") as err:
        Settings(_env_file=None)
    assert SECRET not in str(err.value)
    monkeypatch.setenv("TRADINGML_LIVE_TRADING_OPT_IN", "true")
    s = Settings(_env_file=None)
    assert s.mode == "live"
    assert not s.is_paper


def test_empty_placeholders_mean_unset() -> None:
    example = Path(__file__).resolve().parents[2] / ".env.example"
    s = Settings(_env_file=example)
    assert s.alpaca_api_key_id is None and s.reddit_client_secret is None
    assert s.describe()["alpaca_api_key_id"] == "not set"
    assert s.mode == "replay"
