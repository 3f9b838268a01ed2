"""The project's Prefect automations (automations.yaml), applied to a server by name."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any, NamedTuple
from uuid import UUID

import yaml
from prefect.client.orchestration import get_client
from prefect.events.schemas.automations import AutomationCore
from prefect.exceptions import ObjectNotFound
from prefect.settings import get_current_settings
from pydantic import ValidationError

AUTOMATIONS_FILE = Path(__file__).resolve().parents[1] / "automations.yaml"


class AutomationsFileError(ValueError):
    """automations.yaml cannot be read or does not define valid automations."""


class NoPrefectServerError(RuntimeError):
    """PREFECT_API_URL is unset: there is no server to apply automations to."""


BLOCK_REFERENCE = "block/"
"""An action's `block_document_id: block/<block-type-slug>/<block-name>` names a block, which
apply_automations looks up on the server (a UUID differs from server to server)."""

_UNRESOLVED = UUID(int=0)


class Planned(NamedTuple):
    """An automation of the file, and the blocks its actions name: action index -> (slug, name)."""

    automation: AutomationCore
    blocks: dict[int, tuple[str, str]]


def _block_references(item: dict[str, Any], where: str) -> dict[int, tuple[str, str]]:
    """Replace each `block/<slug>/<name>` of the item's actions by a placeholder UUID."""
    blocks: dict[int, tuple[str, str]] = {}
    for i, action in enumerate(item.get("actions") or []):
        ref = action.get("block_document_id") if isinstance(action, dict) else None
        if isinstance(ref, str) and ref.startswith(BLOCK_REFERENCE):
            parts = ref.removeprefix(BLOCK_REFERENCE).split("/")
            if len(parts) != 2 or not all(parts):
                raise AutomationsFileError(
                    f"{where}: actions.{i}.block_document_id: {ref!r} is not "
                    f"{BLOCK_REFERENCE}<block-type-slug>/<block-name>"
                )
            blocks[i] = (parts[0], parts[1])
            action["block_document_id"] = str(_UNRESOLVED)
    return blocks


def plan_automations(path: Path = AUTOMATIONS_FILE) -> list[Planned]:
    """The automations of a YAML file (`automations:` list), validated by Prefect's schema,
    with the blocks their actions name (resolved on the server by apply_automations)."""
    try:
        data: Any = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise AutomationsFileError(f"cannot read automations from {path}: {exc}") from exc
    items = data.get("automations") if isinstance(data, dict) else None
    if not isinstance(items, list) or not items:
        raise AutomationsFileError(f"{path} has no `automations:` list")
    planned = []
    for i, item in enumerate(items):
        name = item.get("name", f"#{i + 1}") if isinstance(item, dict) else f"#{i + 1}"
        try:
            blocks = (
                _block_references(item, f"automation {name} in {path}")
                if isinstance(item, dict)
                else {}
            )
            planned.append(Planned(AutomationCore.model_validate(item), blocks))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise AutomationsFileError(
                f"automation {name} in {path}: {where}: {first['msg']}"
            ) from exc
    names = [p.automation.name for p in planned]
    if len(set(names)) != len(names):
        raise AutomationsFileError(f"{path} names an automation twice: {names}")
    return planned


def load_automations(path: Path = AUTOMATIONS_FILE) -> list[AutomationCore]:
    """The automations of a YAML file (blocks their actions name left unresolved)."""
    return [p.automation for p in plan_automations(path)]


async def _resolve_blocks(client: Any, plan: Planned) -> AutomationCore | str:
    """The automation with its actions' blocks looked up, or why it cannot be applied yet."""
    if not plan.blocks:
        return plan.automation
    actions = list(plan.automation.actions)
    for i, (slug, name) in plan.blocks.items():
        try:
            block = await client.read_block_document_by_name(name, slug, include_secrets=False)
        except ObjectNotFound:
            return (
                f"skipped: it notifies through the {slug} block {name!r}, which this server "
                f"does not have (README, 'Alerts', shows how to create it)"
            )
        actions[i] = actions[i].model_copy(update={"block_document_id": block.id})
    return plan.automation.model_copy(update={"actions": actions})


async def apply_automations(
    automations: list[Planned] | list[AutomationCore],
) -> list[tuple[str, str]]:
    """Create each automation, or update every existing one of the same name; (name, verb).

    One whose notification block is missing on the server is skipped (verb says why)."""
    if not get_current_settings().api.url:
        # Without a URL the client would start a throwaway ephemeral server.
        raise NoPrefectServerError(
            "PREFECT_API_URL is not set; point it at the server (http://127.0.0.1:4200/api)"
        )
    plans = [a if isinstance(a, Planned) else Planned(a, {}) for a in automations]
    done = []
    async with get_client() as client:
        for plan in plans:
            automation = await _resolve_blocks(client, plan)
            if isinstance(automation, str):
                done.append((plan.automation.name, automation))
                continue
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
        for name, verb in asyncio.run(apply_automations(plan_automations(args.file))):
            print(f"automation {name}: {verb}")
    except (AutomationsFileError, NoPrefectServerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
