"""Answer parsers: free model text -> a task answer, or ``None`` when no answer can be found.

A ``None`` is a parse failure; the evaluator counts it (never hides it) and scores it as wrong.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

from taskfit.tasks.schema import LabelSpec


def parse_label(text: str, labels: Sequence[LabelSpec]) -> str | None:
    """The label whose verbalizer, value or alias appears first in ``text`` (case-insensitive).

    Latin words must stand alone ("positively" does not match "positive"); CJK words match anywhere.
    When two names start at the same place the longer one wins ("not good" over "good" if both are
    names). No name found -> ``None``.
    """
    best: tuple[int, int, str] | None = None  # (position, -length, label value)
    lowered = text.lower()
    for label in labels:
        for name in {label.word, label.value, *label.aliases}:
            match = _pattern(name.lower()).search(lowered)
            if match is None:
                continue
            key = (match.start(), -(match.end() - match.start()), label.value)
            if best is None or key[:2] < best[:2]:
                best = key
    return best[2] if best else None


@lru_cache(maxsize=1024)
def _pattern(name: str) -> re.Pattern[str]:
    escaped = re.escape(name)
    if name.isascii():
        return re.compile(rf"(?<![\w]){escaped}(?![\w])")
    return re.compile(escaped)


# ------------------------------------------------------------------------------------------------ numbers
_NUMBER = re.compile(r"-?\$?\s?\d[\d,]*(?:\.\d+)?|-?\$?\.\d+")
_ANSWER_CUES = re.compile(r"(?:the (?:final )?answer is|answer:|####)", re.IGNORECASE)


def normalize_number(text: str) -> str | None:
    """``"$1,234.50"`` -> ``"1234.5"``; ``"72.0"`` -> ``"72"``; not a number -> ``None``.

    Commas as thousands separators and a currency sign are dropped; the value is written without
    trailing zeros so that equal numbers compare equal as strings.
    """
    from decimal import Decimal, InvalidOperation

    cleaned = text.replace(",", "").replace("$", "").replace(" ", "").strip().rstrip(".")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    if value == value.to_integral_value():
        return str(value.quantize(Decimal(1)))
    return format(value.normalize(), "f")


def _numbers(text: str) -> list[str]:
    found = []
    for match in _NUMBER.finditer(text):
        value = normalize_number(match.group())
        if value is not None:
            found.append(value)
    return found


def parse_final_number(text: str) -> str | None:
    """The final numeric answer in a model's text (GSM8K style).

    The first number after the last answer cue ("The answer is", "Answer:", "####") if there is one, else
    the last number in the text. Units and currency around the number are ignored ("$18", "18 dollars").
    """
    cues = list(_ANSWER_CUES.finditer(text))
    if cues:
        after = _numbers(text[cues[-1].end():])
        if after:
            return after[0]
    numbers = _numbers(text)
    return numbers[-1] if numbers else None


def parse_first_number(text: str) -> float | None:
    """The first number in the text as a float (a score such as "3.5 out of 5" -> 3.5)."""
    numbers = _numbers(text)
    return float(numbers[0]) if numbers else None


def first_line(text: str) -> str:
    """The first non-empty line of a reply, without surrounding quotes."""
    line = text.strip().split("\n", 1)[0].strip()
    return line.strip('"“”\'').strip()
