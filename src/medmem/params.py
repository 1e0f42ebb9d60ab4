"""The workflow schema as the one source of every option: command-line options and their defaults
are made from `workflow/schemas/config.schema.yaml`, and the rules turn a config block back into the
same options.

A schema key with `x-command: C` (or a list of commands) is the option `--key-name` of `medmem C`
(`x-option` renames it); its default, choices, type and help come from the key. `x-default-from: seed`
marks a seed whose default is the top-level `seed`. `x-command: workflow` keys are read by the rules.
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

import yaml

from medmem.errors import InputError

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"
_TYPES = {"integer": int, "number": float, "string": str}


@functools.lru_cache(maxsize=None)
def schema() -> dict:
    """The workflow's config schema (parsed YAML); raises InputError when this checkout lacks it."""
    if not SCHEMA_PATH.is_file():
        raise InputError(f"{SCHEMA_PATH}: the workflow schema is missing (medmem runs from its checkout: "
                         "pip install -e .)")
    return yaml.safe_load(SCHEMA_PATH.read_text())


def node(path: str) -> dict:
    """The schema of a config block: 'memorization.planted', 'quality', or a generator type '$defs.diffusion'.

    Dots descend through `properties`; '*' takes `additionalProperties` (a dataset's block: 'datasets.*').
    """
    current = schema()
    for part in path.split("."):
        if part == "$defs":
            current = schema()["$defs"]
        elif part == "*":
            current = current["additionalProperties"]
        else:
            current = current["properties"][part] if "properties" in current else current[part]
        current = _resolve(current)
    return current


def _resolve(sub: dict) -> dict:
    ref = sub.get("$ref")
    if ref:
        return _resolve(schema()["$defs"][ref.rsplit("/", 1)[1]])
    return sub


def _commands(sub: dict) -> list[str]:
    value = sub.get("x-command", [])
    return [value] if isinstance(value, str) else list(value)


def default(block: dict, key: str):
    """A key's default in a block's schema (the top-level seed's for `x-default-from: seed`; None if none)."""
    sub = _resolve(block["properties"][key])
    if sub.get("x-default-from"):
        return schema()["properties"][sub["x-default-from"]]["default"]
    return sub.get("default")


def keys(block: dict, command: str) -> list[str]:
    """The block's keys that are options of `command`, in schema order."""
    return [k for k, sub in block["properties"].items() if command in _commands(_resolve(sub))]


def option(block: dict, key: str) -> str:
    """The command-line flag of a key: `--key-name`, or `--<x-option>`."""
    sub = _resolve(block["properties"][key])
    return "--" + str(sub.get("x-option", key)).replace("_", "-")


def _converter(sub: dict):
    types = sub["type"] if isinstance(sub.get("type"), list) else [sub.get("type")]
    nullable = "null" in types
    base = _TYPES.get(next((t for t in types if t in _TYPES), None))
    if "oneOf" in sub:  # e.g. a number or 'auto'
        words = [w for alt in sub["oneOf"] for w in alt.get("enum", [])]
        number = next((_TYPES[a["type"]] for a in sub["oneOf"] if a.get("type") in ("number", "integer")), str)

        def convert(text: str):  # anything else is left to the command, whose message names the option
            try:
                return text if text in words else number(text)
            except ValueError:
                return text

        convert.__name__ = "value"
        return convert
    if not nullable:
        return base or str

    def convert_nullable(text: str):
        return None if text.lower() in ("none", "null") else (base or str)(text)

    convert_nullable.__name__ = (base or str).__name__
    return convert_nullable


def add_options(parser: argparse.ArgumentParser, block: dict, command: str, with_defaults: bool = True) -> None:
    """Add the block's options of `command` to `parser`, typed, with choices, help and the schema's defaults.

    Booleans become `--flag/--no-flag`; arrays take several values (`--attention` alone: an empty
    list); nullable keys also take `none`. `with_defaults=False` leaves defaults None (a command that
    serves several generator types fills them from the type's block, see `fill_defaults`).
    """
    for key in keys(block, command):
        sub = _resolve(block["properties"][key])
        flag = option(block, key)
        if flag in parser._option_string_actions:  # shared by two generator types (medmem sample)
            continue
        value = default(block, key) if with_defaults else None
        help_text = " ".join(str(sub.get("description", "")).split())
        if with_defaults:
            shown = "none" if value is None else (" ".join(map(str, value)) if isinstance(value, list) else value)
            help_text = f"{help_text} (default: {shown})".strip()
        else:
            help_text = f"{help_text} (default: the schema's for the network's type)".strip()
        kwargs = dict(dest=key if "x-option" not in sub else str(sub["x-option"]), default=value, help=help_text)
        if sub.get("type") == "boolean":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
        elif sub.get("type") == "array":
            items = sub.get("items", {})
            parser.add_argument(flag, nargs="+" if sub.get("minItems", 0) > 0 else "*",
                                type=_TYPES.get(items.get("type"), str), **kwargs)
        else:
            choices = sub.get("enum")
            parser.add_argument(flag, type=_converter(sub), choices=choices, **kwargs)


def fill_defaults(args: argparse.Namespace, block: dict, command: str) -> None:
    """Options left None by `add_options(..., with_defaults=False)` take the block's defaults."""
    for key in keys(block, command):
        sub = _resolve(block["properties"][key])
        dest = key if "x-option" not in sub else str(sub["x-option"])
        if getattr(args, dest, None) is None:
            setattr(args, dest, default(block, key))


def command_args(block: dict, config: dict, command: str) -> list[str]:
    """A config block (validated, defaults filled) as the options of `command`, every key given explicitly."""
    out: list[str] = []
    for key in keys(block, command):
        sub = _resolve(block["properties"][key])
        value = config.get(key, default(block, key))
        flag = option(block, key)
        if sub.get("type") == "boolean":
            out.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, list):
            out += [flag, *map(str, value)]
        elif value is None:
            if default(block, key) is not None:
                out += [flag, "none"]
        else:
            out += [flag, str(value)]
    return out


def dataset_default(kind: str, *path: str):
    """A dataset key's default for a dataset kind ('cxr', 'split', 'holdout_fraction'), kind-specific
    defaults (the schema's `allOf` if/then) first."""
    dataset = node("datasets.*")
    for rule in dataset.get("allOf", []):
        if rule["if"].get("properties", {}).get("kind", {}).get("const") == kind:  # a kind's rule
            sub = rule["then"]
            for part in path:
                sub = sub.get("properties", {}).get(part, {})
            if "default" in sub:
                return sub["default"]
    sub = dataset
    for part in path[:-1]:
        sub = _resolve(sub["properties"][part])
    return default(sub, path[-1])
