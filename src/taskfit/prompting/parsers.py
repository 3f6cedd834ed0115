"""Answer parsers: free model text -> a task answer, or ``None`` when no answer can be found.

A ``None`` is a parse failure; the evaluator counts it (never hides it) and scores it as wrong.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from functools import lru_cache

from taskfit.tasks.task import LabelSpec

Parser = Callable[[str, Sequence[LabelSpec]], "str | None"]


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


PARSERS: dict[str, Parser] = {"label": parse_label}
