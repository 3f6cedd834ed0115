"""What every command's settings share: the field markers, reading a YAML with flags laid over it, a config's
identity (its settings without the operational ones) and the command line that sets a config's values."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from taskfit.errors import UserError
from taskfit.models.registry import backend_names, options_of
from taskfit.strict import COMMAND_LINE, FLAG_NAMES, flag_for, read_yaml

BACKEND_CHOICES = {"choices_from": "backends"}
"""Field marker: the values are the registered backends' names (the CLI lists them with their summaries)."""

POSITIONAL = {"positional": True}
"""Field marker: the CLI takes this setting as a positional argument (a list: one or more of them)."""


def positional(description: str) -> Any:
    """A required setting given on the command line without a flag (``taskfit report RUN...``)."""
    return Field(description=description, json_schema_extra=POSITIONAL)


def flag_named(flag: str, default: Any, description: str, **kwargs: Any) -> Any:
    """A setting whose flag is not its field's name (``--as`` for ``format``: the field name is a Python word)."""
    return Field(default, description=description, json_schema_extra={"flag": flag}, **kwargs)


DB_HELP = "the assistant's database (default $TASKFIT_HOME/assistant.sqlite)"
"""The help of every ``--db`` that names the assistant's database."""


def command_line(subcommand: str, model_cls: type[BaseModel], values: dict[str, Any]) -> str:
    """The ``taskfit SUBCOMMAND`` command that sets ``values`` (a config as results.json records it): one flag per
    setting that differs from its default; secrets are left out."""
    words = ["taskfit", subcommand]
    fields = dict(model_cls.model_fields)
    if values.get("backend") in backend_names():  # a backend registered at run time: its options are extra keys
        fields.update({k: f for k, f in options_of(values["backend"]).model_fields.items() if k not in fields})
    for name, field in fields.items():
        default = field.get_default(call_default_factory=True)
        value = values.get(name, default)
        if value == default or value is None or "SecretStr" in str(field.annotation):
            continue
        if isinstance(value, bool):
            words.append(flag_for(name, model_cls) if value else "--no-" + flag_for(name, model_cls)[2:])
        elif name in FLAG_NAMES:
            for key, item in value.items():
                words += [flag_for(name, model_cls), f"{key}={item if isinstance(item, str) else json.dumps(item)}"]
        elif isinstance(value, dict):  # a section of known keys: one flag per key (--instruction for prompt)
            words += [w for key, item in value.items() if item is not None for w in (flag_for(key), str(item))]
        elif isinstance(value, list):
            words += [w for item in value for w in (flag_for(name, model_cls), str(item))]
        else:
            words += [flag_for(name, model_cls), str(value)]
    return shlex.join(words)


def operational_keys(model_cls: type[BaseModel]) -> set[str]:
    """Fields marked operational: how a run reaches its model, not what it computes."""
    return {name for name, f in model_cls.model_fields.items() if (f.json_schema_extra or {}).get("operational")}


def run_identity(config: BaseModel) -> dict[str, Any]:
    """What a run computes from: its settings without the operational ones (what a resumed run must share)."""
    return json.loads(config.model_dump_json(exclude=operational_keys(type(config))))


def merged(path: str | Path | None, overrides: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """A YAML config (if any) with flags laid over it, and where it came from: a flag given replaces the key, a
    mapping given as flags (``--strategy-arg``, ``--instruction``) is merged key by key into the YAML's mapping."""
    data = read_yaml(path) if path is not None else {}
    source = str(path) if path is not None else COMMAND_LINE
    for key, value in overrides.items():
        if value is None or value == {}:
            continue
        if isinstance(value, dict):
            base = data.get(key) or {}
            if not isinstance(base, dict):
                raise UserError(f"{source}: key '{key}' must be a mapping")
            value = {**base, **value}
        data[key] = value
    return data, source
