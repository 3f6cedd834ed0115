"""Flags from settings models: one flag per field (``--batch-size`` for ``batch_size``), a group per section, the
help text and choices from the field; and the helpers every subcommand's parser uses."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from types import UnionType
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from taskfit.errors import UserError
from taskfit.models.registry import all_options
from taskfit.strict import COMMAND_LINE, FLAG_NAMES, validate

M = TypeVar("M", bound=BaseModel)

VERBOSE_HELP = "debug logging (or set TASKFIT_LOG_LEVEL=DEBUG, WARNING ...)"


def command(sub, name: str, help: str, run=None, config: str | None = None) -> argparse.ArgumentParser:
    """A subcommand's parser: ``-v`` after the subcommand too, ``--config`` when it reads a YAML of its settings,
    and ``run(args)`` as what it does."""
    parser = sub.add_parser(name, help=help)
    parser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP)
    if config:
        parser.add_argument("--config", help=f"{config} YAML; any flag below can be a key there, flags override it")
    if run is not None:
        parser.set_defaults(run=run)
    return parser


DEST = "setting:"  # argparse dests of generated flags: "setting:<field>" or "setting:<field>.<subfield>"


def add_flags(parser: argparse.ArgumentParser, sections: Sequence[tuple[str, type[BaseModel]]] | type[BaseModel],
              required: bool = False) -> None:
    """One flag per settings field (``--batch-size`` for ``batch_size``), a group per section; a field shared by
    two sections is listed once; a field marked positional is a positional argument. Defaults stay ``None``, so an
    unset flag leaves the YAML's value alone. ``required``: the command reads no YAML, so a setting without a default
    is a required flag. A single model stands for one untitled section."""
    seen: set[str] = set()
    for title, section in _expanded([("", sections)] if isinstance(sections, type) else sections):
        group = parser.add_argument_group(f"{title} options") if title else parser
        for name, field in section.model_fields.items():
            if name in seen:
                continue
            seen.add(name)
            nested = _model_class(field.annotation)
            extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
            if extra.get("positional"):
                many = _plain_type(field.annotation)[0] is list
                group.add_argument(f"{DEST}{name}", metavar=name.upper(), nargs="+" if many else None,
                                   help=(field.description or "").replace("%", "%%"))
            elif nested is not None:  # a mapping of known keys: one flag per key (--instruction for prompt.instruction)
                for sub_name, sub_field in nested.model_fields.items():
                    _add_flag(group, sub_name, sub_field, f"{DEST}{name}.{sub_name}")
            else:
                _add_flag(group, extra.get("flag") or FLAG_NAMES.get(name, name), field, f"{DEST}{name}",
                          required and field.is_required())


def _expanded(sections) -> list[tuple[str, type[BaseModel]]]:
    """Sections, with each function in the list (such as one group per registered backend) called."""
    return [item for entry in sections for item in (entry() if callable(entry) else [entry])]


def _add_flag(group, name: str, field: FieldInfo, dest: str, required: bool = False) -> None:
    flag = "--" + name.replace("_", "-")
    help_text = (field.description or "").replace("%", "%%")
    if (field.json_schema_extra or {}).get("choices_from") == "backends":  # the registered backends, said once
        options = all_options()
        listed = ", ".join(f"{name} ({o.summary})" if o.summary else name for name, o in options.items())
        group.add_argument(flag, dest=dest, choices=list(options),
                           help=f"{help_text}: " + f"{listed} (default {field.default})".replace("%", "%%"))
        return
    if field.default not in (None, PydanticUndefined, [], {}) and not isinstance(field.default, bool):
        help_text += f" (default {field.default})"
    kind, choices = _plain_type(field.annotation)
    if kind is bool:
        group.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, help=help_text)
    elif kind is dict:
        group.add_argument(flag, dest=dest, action="append", metavar="KEY=VALUE",
                           help=help_text + "; repeatable, values are YAML, e.g. k=4")
    elif kind is list:
        group.add_argument(flag, dest=dest, action="append", metavar=name.upper(), help=help_text + " (repeatable)",
                           required=required)
    else:
        group.add_argument(flag, dest=dest, type=kind, choices=choices, help=help_text, required=required,
                           metavar=None if choices else name.upper())


def _plain_type(annotation: Any) -> tuple[Any, list[Any] | None]:
    """The argparse type of an annotation (``X | None`` unwrapped; Literal -> choices; paths and secrets as str)."""
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) in (Union, UnionType) and len(args) == 1:
        annotation = args[0]
    origin = get_origin(annotation)
    if origin is Literal:
        values = list(get_args(annotation))
        return type(values[0]), values
    if origin in (list, dict):
        return origin, None
    if annotation in (bool, int, float):
        return annotation, None
    return str, None


def _model_class(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def settings_from(args: argparse.Namespace) -> dict[str, Any]:
    """The generated flags' values as settings keys (mappings as dicts; flags not given are left out)."""
    values: dict[str, Any] = {}
    for dest, value in vars(args).items():
        if not dest.startswith(DEST) or value is None:
            continue
        name, _, sub = dest[len(DEST):].partition(".")
        if sub:
            values.setdefault(name, {})[sub] = value
        elif name in FLAG_NAMES:
            values[name] = parse_key_values(value, FLAG_NAMES[name])
        else:
            values[name] = value
    return values


def settings_of(model: type[M], args: argparse.Namespace) -> M:
    """The settings of a command that reads no YAML, from its generated flags (errors name the flag)."""
    return validate(model, settings_from(args), COMMAND_LINE)


def parse_key_values(items: Sequence[str], flag: str = "strategy-arg") -> dict:
    """``["k=4", "selector=knn"]`` -> ``{"k": 4, "selector": "knn"}`` (values parsed as YAML scalars)."""
    parsed = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--{flag} {item!r} must look like KEY=VALUE, e.g. k=4")
        try:
            parsed[key.strip()] = yaml.safe_load(value) if value else ""
        except yaml.YAMLError:
            parsed[key.strip()] = value
    return parsed
