"""Command-line options generated from a flow's typed config: each field once, its description as the help."""

from __future__ import annotations

import argparse
import json
import types
import typing
from collections.abc import Collection, Mapping
from datetime import date, datetime
from typing import Any

from pydantic import BaseModel

_SCALARS: dict[Any, Any] = {
    int: int,
    float: float,
    str: str,
    date: date.fromisoformat,
    datetime: datetime.fromisoformat,
}

Alias = str | tuple[str, Any]
"""Another flag of a field's option: a field name (the flag takes the option's value), or
(field name, value) for a switch that sets the field to that value, e.g. ``--no-spy``."""


def _json_object(text: str) -> dict[str, Any]:
    """A dict option's value: a JSON object, e.g. '{"reward": "drawdown"}'."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON ({exc}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"not a JSON object: {text!r}")
    return value


# How an option's value is written, where its type says more than the field's name.
_METAVARS: dict[Any, str] = {
    date.fromisoformat: "YYYY-MM-DD",
    datetime.fromisoformat: "TIME",
    _json_object: "JSON",
}


def _option_kind(annotation: Any) -> tuple[Any, Any, bool] | None:
    """(argparse type, choices, many) of a field's annotation; None when it has no CLI form."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _option_kind(args[0]) if len(args) == 1 else None
    if origin is typing.Annotated:
        return _option_kind(typing.get_args(annotation)[0])
    if origin is typing.Literal:
        choices = typing.get_args(annotation)
        return type(choices[0]), list(choices), False
    if origin is list:
        inner = _option_kind(typing.get_args(annotation)[0])
        return None if inner is None or inner[2] else (inner[0], inner[1], True)
    if origin is dict and typing.get_args(annotation) in ((str, Any), (str, str)):
        # Free-form overrides (params: dict[str, Any]) and maps (column_map) as one JSON object.
        return _json_object, None, False
    if annotation is bool:
        return bool, None, False
    if annotation in _SCALARS:
        return _SCALARS[annotation], None, False
    return None


def _aliases(
    model: type[BaseModel], exclude: Collection[str], aliases: Mapping[str, Alias]
) -> tuple[dict[str, list[str]], dict[str, list[tuple[str, Any]]]]:
    """Per field: the older flags that name it, and the switches that set it to a value."""
    names: dict[str, list[str]] = {}
    switches: dict[str, list[tuple[str, Any]]] = {}
    for alias, target in aliases.items():
        of = target if isinstance(target, str) else target[0]
        if of not in model.model_fields or of in exclude:
            raise ValueError(f"alias {alias} names no option of {model.__name__}: {of!r}")
        if isinstance(target, str):
            names.setdefault(of, []).append(alias)
        else:
            switches.setdefault(of, []).append((alias, target[1]))
    return names, switches


def add_config_options(
    parser: argparse.ArgumentParser,
    model: type[BaseModel],
    exclude: Collection[str] = (),
    *,
    aliases: Mapping[str, Alias] | None = None,
    hide_default: Collection[str] = (),
) -> None:
    """One ``--field-name`` option per field of `model` (booleans as ``--x/--no-x``), default: the config's.

    Free-form overrides (``dict[str, Any]``) and string maps take a JSON object; fields whose
    type has no command-line form (nested configs, other dicts) are left out. `aliases` maps
    older flags to the option they stand for (see `Alias`). `hide_default` names fields whose
    unset value the flow works out (their description says how): their help shows no fixed
    default.
    """
    names, switches = _aliases(model, exclude, aliases or {})
    for name, field in model.model_fields.items():
        if name in exclude:
            continue
        kind = _option_kind(field.annotation)
        if kind is None:
            if name in names or name in switches:
                raise ValueError(f"{model.__name__}.{name} has no command-line form to alias")
            continue
        convert, choices, many = kind
        flag = "--" + name.replace("_", "-")
        default = field.get_default(call_default_factory=True)
        help_text = (field.description or "").replace("%", "%%")
        if default not in (None, [], {}) and name not in hide_default:
            shown = " ".join(str(v) for v in default) if many else default
            help_text += f" (default: {shown})"
        flags = [flag, *names.get(name, [])]
        if convert is bool:
            parser.add_argument(
                *flags,
                dest=name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text,
            )
        else:
            parser.add_argument(
                *flags,
                dest=name,
                type=convert,
                choices=choices,
                nargs="+" if many else None,
                default=None,
                metavar=None if choices else _METAVARS.get(convert),
                help=help_text,
            )
        for switch, value in switches.get(name, []):
            same = (flag if value else f"--no-{flag[2:]}") if convert is bool else f"{flag} {value}"
            parser.add_argument(
                switch, dest=name, action="store_const", const=value, help=f"same as {same}"
            )


def config_from_args(model: type[BaseModel], args: argparse.Namespace) -> Any:
    """The config of the options given on the command line; the rest keep the config's defaults."""
    given = {
        name: getattr(args, name)
        for name in model.model_fields
        if getattr(args, name, None) is not None
    }
    return model(**given)
