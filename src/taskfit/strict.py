"""Strict models read from YAML: the base of every settings and options class, YAML reading and one-line errors.

The settings of each command are in :mod:`taskfit.settings`; a backend's and a strategy's options classes are built
on :class:`StrictModel` too. Unknown keys and wrong types are rejected with a message that names the file (or the
flag), the key and what is allowed (:func:`validate`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from taskfit.errors import UserError
from taskfit.paths import read_utf8

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base for every config: unknown keys are errors, values are validated on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


COMMAND_LINE = "command line"
"""The source of settings given as flags: errors then name the flag (``--limit``), not the key."""

FLAG_NAMES = {"strategy_args": "strategy-arg"}
"""Settings whose flag is not the field's name: a mapping given as repeatable KEY=VALUE flags."""


def flag_for(name: str, model_cls: type[BaseModel] | None = None) -> str:
    """The command-line flag of settings field ``name`` (``--batch-size`` for ``batch_size``); with ``model_cls``,
    a field that names its own flag (``flag_named``: ``--as`` for ``format``) gets that one."""
    field = model_cls.model_fields.get(name) if model_cls is not None else None
    extra = field.json_schema_extra if field is not None and isinstance(field.json_schema_extra, dict) else {}
    return "--" + str(extra.get("flag") or FLAG_NAMES.get(name, name)).replace("_", "-")


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(read_utf8(path))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise UserError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a YAML mapping of keys to values, got {type(data).__name__}")
    return data


def validate(model_cls: type[M], data: dict[str, Any], source: str) -> M:
    """Build ``model_cls`` from ``data`` or raise one :class:`UserError` line naming source and key."""
    try:
        return model_cls.model_validate(data)
    except ValidationError as exc:
        raise UserError(describe_error(exc, model_cls, source)) from None


def describe_error(exc: ValidationError, model_cls: type[BaseModel], source: str) -> str:
    """Turn the first pydantic error into one line a user can act on."""
    err = exc.errors()[0]
    loc = ".".join(str(part) for part in err["loc"])
    more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
    message = err["msg"].removeprefix("Value error, ")
    if not loc:  # a check across several keys (a model validator): its own message says what is wrong
        return f"{source}: {message}{more}"
    if err["type"] == "extra_forbidden":
        allowed = _allowed_keys(model_cls, err["loc"][:-1])
        return f"{source}: unknown key '{loc}'; allowed keys: {', '.join(allowed)}{more}"
    value = err.get("input")
    shown = repr(value) if not isinstance(value, dict) else "a mapping"
    if source == COMMAND_LINE and len(err["loc"]) == 1 and isinstance(err["loc"][0], str):  # a flag: name it
        flag = flag_for(err["loc"][0], model_cls)
        if err["type"] == "missing":
            return f"{flag} is required{more}"
        return f"{flag} {shown}: {message}{more}"
    if err["type"] == "missing":
        return f"{source}: missing required key '{loc}'{more}"
    if value is None:
        return f"{source}: key '{loc}' is empty (null): {message}{_yaml_hint(err)}{more}"
    return f"{source}: key '{loc}' has invalid value {shown}: {message}{_yaml_hint(err)}{more}"


# what YAML 1.1 (PyYAML) reads an unquoted word as, when the word is not text to it
_YAML_READS = {bool: ("yes, no, on, off, true and false", "a boolean"), type(None): ("null, ~ and nothing", "null"),
               int: ("digits", "a number"), float: ("digits", "a number")}


def _yaml_hint(err: dict[str, Any]) -> str:
    """For a text field that YAML gave another type (``verbalizer: yes`` is the boolean True): say to quote it."""
    value = err.get("input")
    if err["type"] != "string_type" or type(value) not in _YAML_READS:
        return ""
    words, kind = _YAML_READS[type(value)]
    example = '"null"' if value is None else ('"yes"' if value is True else '"no"' if value is False else f'"{value}"')
    return f" (YAML reads {words} without quotes as {kind}, not text: quote the value, e.g. {example})"


def _allowed_keys(model_cls: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The field names allowed at ``loc`` inside ``model_cls`` (best effort through nested models)."""
    current: Any = model_cls
    for part in loc:
        if isinstance(part, int) or not (isinstance(current, type) and issubclass(current, BaseModel)):
            continue
        field = current.model_fields.get(part)
        if field is None:
            break
        current = _model_in(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return sorted(current.model_fields)
    return []


def _model_in(annotation: Any) -> Any:
    """Find a BaseModel class inside an annotation such as ``list[X]`` or ``X | None``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None
