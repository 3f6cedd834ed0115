"""A numeric final answer (GSM8K)."""

from __future__ import annotations

from taskfit.errors import UserError
from taskfit.tasks.answers.base import AnswerSpace
from taskfit.tasks.answers.parsing import normalize_number, parse_final_number
from taskfit.tasks.schema import TYPE_METRICS


class NumberSpace(AnswerSpace):
    """A numeric final answer (GSM8K): the final number is read from the text and compared exactly."""

    type = "number"
    metrics = TYPE_METRICS["number"]
    modes = ("generate",)

    def gold(self, raw, row, index, where, choices=None):
        value = normalize_number(str(raw))
        if value is None:  # a worked solution ending in "#### 72" (GSM8K as published)
            value = parse_final_number(str(raw)) if "####" in str(raw) else None
        if value is None:
            raise UserError(f"{where} row {index + 1}: gold answer {raw!r} is not a number")
        return value, {}

    def word(self, example):
        return example.gold

    def value(self, example):
        value = float(example.gold)
        return int(value) if value == int(value) else value

    def value_schema(self, example):
        return {"type": "number"}

    def answer_words(self):
        return ["the final number"]

    def parse(self, text, example):
        value = parse_final_number(text)
        return (value, None) if value is not None else (None, "no number in the response")

    def from_value(self, value, example):
        if isinstance(value, int | float) and not isinstance(value, bool):
            return normalize_number(repr(value)), None
        return self.parse(str(value), example)

    def score(self, example, prediction, extra=None):
        return {"correct": prediction is not None and prediction == example.gold}
