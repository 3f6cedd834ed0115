"""Answers as JSON: a schema derived from the task, and tolerant but never silent parsing.

A classification task asks for ``{"label": "<label>"}``; other task types ask for ``{"score": x}`` or
``{"answer": ...}`` (see :mod:`taskfit.tasks.answers`). Parsing accepts code fences, prose around the
object, single quotes, trailing commas and truncation (repaired with json-repair); the value must then be
valid for the task (for labels: exactly one of the label names, so "negative | positive" is not an
answer). Anything else is a parse failure with a reason, counted by the evaluator.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from taskfit.tasks.schema import LabelSpec

ANSWER_KEY = "label"


def example_answer() -> str:
    """The shape shown to the model, with a placeholder it cannot mistake for an answer."""
    return f'{{"{ANSWER_KEY}": "<label>"}}'


def choices(labels: Sequence[LabelSpec]) -> str:
    """The allowed label words, quoted: ``"negative", "positive"``."""
    return ", ".join(f'"{label.word}"' for label in labels)


def render_answer(word: Any, key: str = ANSWER_KEY) -> str:
    """A demo's answer in JSON form."""
    return json.dumps({key: word}, ensure_ascii=False)


@dataclass(frozen=True)
class JSONParse:
    """Result of parsing: the label (or None) and, on failure, why."""

    label: Any  # the label (or, from parse_json_value, the raw value); None on failure
    error: str | None
    data: Any = None


_FENCE = re.compile(r"```(?:json)?\s*(.*?)(?:```|$)", re.DOTALL | re.IGNORECASE)


def extract_object_text(text: str) -> str | None:
    """The JSON object inside ``text``: fenced block first, else from the first '{' on."""
    fenced = _FENCE.search(text)
    if fenced:
        text = fenced.group(1)
    start = text.find("{")
    if start < 0:
        return None
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start : i + 1]
    return text[start:]  # truncated: let the repair step close it


def parse_json_value(text: str, key: str) -> JSONParse:
    """The value under ``key`` of the JSON object in ``text`` (in ``label``), or why there is none."""
    body = extract_object_text(text)
    if body is None:
        return JSONParse(None, "no JSON object in the response")
    try:
        data = json.loads(body)
    except json.JSONDecodeError:
        import json_repair

        data = json_repair.loads(body)
    if not isinstance(data, dict):
        return JSONParse(None, f"expected a JSON object, got {type(data).__name__}", data)
    value = data.get(key)
    if value is None:
        return JSONParse(None, f"no {key!r} key", data)
    return JSONParse(value, None, data)


def exact_label(value: str, labels: Sequence[LabelSpec]) -> str | None:
    """The label whose word, value or alias equals ``value`` (case and surrounding space ignored)."""
    wanted = value.strip().strip(".").lower()
    for label in labels:
        if wanted in {name.lower() for name in (label.word, label.value, *label.aliases)}:
            return label.value
    return None
