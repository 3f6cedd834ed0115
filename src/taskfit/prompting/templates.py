"""Default strategy wording, read from ``templates.yaml`` (prompts are data, not code)."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Any

import yaml


@lru_cache(maxsize=1)
def templates() -> dict[str, dict[str, Any]]:
    """The packaged defaults, one section per strategy family."""
    text = resources.files("taskfit.prompting").joinpath("templates.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def default(section: str, key: str) -> Any:
    """One default value, e.g. ``default("cot", "reasoning_trigger")``."""
    return templates()[section][key]


def fill(template: str, **values: Any) -> str:
    """Format a template, leaving unknown ``{placeholders}`` as they are."""

    class Keep(dict):
        def __missing__(self, key: str) -> str:
            return "{" + key + "}"

    return template.format_map(Keep(values))
