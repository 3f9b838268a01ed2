"""Test-wide set-up: loopback-only network, isolated Prefect home and warehouse, shared fixtures."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Before anything imports prefect: its settings are read at import time.
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="tradingml-tests-"))
os.environ["PREFECT_HOME"] = str(_SESSION_DIR / "prefect")
os.environ["DO_NOT_TRACK"] = "1"
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "180"
os.environ.pop("PREFECT_API_URL", None)
os.environ["TRADINGML_WAREHOUSE"] = str(_SESSION_DIR / "default-warehouse.duckdb")
os.environ["TRADINGML_DATA_DIR"] = str(
    _SESSION_DIR / "data"
)  # model artifacts stay out of the repo
# Credentials of the developer's shell must never reach a test.
for _name in ("APCA_API_KEY_ID", "APCA_API_SECRET_KEY", "REDDIT_CLIENT_ID", "REDDIT_CLIENT_SECRET"):
    os.environ.pop(_name, None)

from tests import netguard  # noqa: E402

netguard.install()


@pytest.fixture
def warehouse_path(tmp_path: Path) -> Path:
    """A fresh warehouse file path (created and migrated on first connect)."""
    return tmp_path / "warehouse.duckdb"


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """A real Prefect API (temporary SQLite database) for flows under test."""
    from prefect.logging.configuration import setup_logging
    from prefect.testing.utilities import prefect_test_harness

    from flows.cli import set_prefect_env

    with prefect_test_harness(server_startup_timeout=180):
        # Prefect binds its console handler to the stderr it finds when logging is first
        # set up; set up inside a test that captures with capsys, it would write to that
        # test's closed stream ever after ("I/O operation on closed file"). Set it up here,
        # before any test's capture, with the CLI's handler as `tradingml` runs it.
        set_prefect_env()
        setup_logging(incremental=False)
        yield


@pytest.fixture(autouse=True)
def _fresh_settings() -> Iterator[None]:
    """Each test reads settings from its own environment.

    Set up before (so torn down after) monkeypatch: settings cached while a test had
    patched variables (keys, a fake server's URL) must not reach the next test.
    """
    from core.settings import get_settings

    get_settings.cache_clear()
    yield
    get_settings.cache_clear()
