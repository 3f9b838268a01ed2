"""The project's Prefect automations (automations.yaml), applied to a server by name."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

import yaml
from prefect.client.orchestration import get_client
from prefect.events.schemas.automations import AutomationCore
from prefect.settings import get_current_settings
from pydantic import ValidationError

AUTOMATIONS_FILE = Path(__file__).resolve().parents[1] / "automations.yaml"


class AutomationsFileError(ValueError):
    """automations.yaml cannot be read or does not define valid automations."""


class NoPrefectServerError(RuntimeError):
    """PREFECT_API_URL is unset: there is no server to apply automations to."""


def load_automations(path: Path = AUTOMATIONS_FILE) -> list[AutomationCore]:
    """The automations of a YAML file (`automations:` list), validated by Prefect's schema."""
    try:
        data: Any = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise AutomationsFileError(f"cannot read automations from {path}: {exc}") from exc
    items = data.get("automations") if isinstance(data, dict) else None
    if not isinstance(items, list) or not items:
        raise AutomationsFileError(f"{path} has no `automations:` list")
    automations = []
    for i, item in enumerate(items):
        try:
            automations.append(AutomationCore.model_validate(item))
        except ValidationError as exc:
            name = item.get("name", f"#{i + 1}") if isinstance(item, dict) else f"#{i + 1}"
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise AutomationsFileError(
                f"automation {name} in {path}: {where}: {first['msg']}"
            ) from exc
    names = [a.name for a in automations]
    if len(set(names)) != len(names):
        raise AutomationsFileError(f"{path} names an automation twice: {names}")
    return automations


async def apply_automations(automations: list[AutomationCore]) -> list[tuple[str, str]]:
    """Create each automation, or update every existing one of the same name; (name, verb)."""
    if not get_current_settings().api.url:
        # Without a URL the client would start a throwaway ephemeral server.
        raise NoPrefectServerError(
            "PREFECT_API_URL is not set; point it at the server (http://127.0.0.1:4200/api)"
        )
    done = []
    async with get_client() as client:
        for automation in automations:
            existing = await client.read_automations_by_name(automation.name)
            for old in existing:
                await client.update_automation(old.id, automation)
            if not existing:
                await client.create_automation(automation)
            done.append((automation.name, "updated" if existing else "created"))
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flows.automations",
        description="Create or update (by name) the automations of a file on PREFECT_API_URL.",
    )
    parser.add_argument("file", nargs="?", type=Path, default=AUTOMATIONS_FILE)
    args = parser.parse_args(argv)
    try:
        for name, verb in asyncio.run(apply_automations(load_automations(args.file))):
            print(f"automation {name}: {verb}")
    except (AutomationsFileError, NoPrefectServerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
