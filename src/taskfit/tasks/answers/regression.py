"""Regression (STS): a score in the task's range."""

from __future__ import annotations

import math

import numpy as np

from taskfit.errors import UserError
from taskfit.tasks.answers.base import AnswerSpace, softmax
from taskfit.tasks.answers.parsing import parse_first_number
from taskfit.tasks.answers.voting import Vote
from taskfit.tasks.schema import TYPE_METRICS


class RegressionSpace(AnswerSpace):
    """A score in ``score_range`` (STS: similarity 0-5).

    Log-likelihood mode reads the probabilities of the integer score tokens and predicts their expected
    value. Generate mode reads the first number; out-of-range or missing scores are parse failures, and the
    correlation then uses the middle of the range for that example (``score`` field), so failing never
    helps a run.
    """

    type = "regression"
    metrics = TYPE_METRICS["regression"]
    answer_name = "score"

    @property
    def low(self) -> float:
        return float(self.config.score_range[0])

    @property
    def high(self) -> float:
        return float(self.config.score_range[1])

    def gold(self, raw, row, index, where, choices=None):
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise UserError(f"{where} row {index + 1}: score {raw!r} is not a number") from None
        if not self.low <= value <= self.high:
            raise UserError(f"{where} row {index + 1}: score {value} is outside score_range "
                            f"[{self.low:g}, {self.high:g}]")
        return value, {}

    def word(self, example):
        return f"{example.gold:g}"

    def value(self, example):
        return example.gold

    def answer_words(self):
        return [f"a score from {self.low:g} to {self.high:g}"]

    def value_fill(self):
        return {"low": f"{self.low:g}", "high": f"{self.high:g}"}

    def value_schema(self, example):
        return {"type": "number", "minimum": self.low, "maximum": self.high}

    def candidates(self, example):
        return [str(v) for v in range(math.ceil(self.low), math.floor(self.high) + 1)]

    def from_scores(self, example, words, logprobs):
        probs = softmax(logprobs)
        expected = float(sum(float(w) * p for w, p in zip(words, probs)))
        return round(expected, 6), {"probs": dict(zip(words, probs))}

    def parse(self, text, example):
        value = parse_first_number(text)
        if value is None:
            return None, "no number in the response"
        return self._in_range(value)

    def from_value(self, value, example):
        if isinstance(value, int | float) and not isinstance(value, bool):
            return self._in_range(float(value))
        return self.parse(str(value), example)

    def _in_range(self, value: float) -> tuple[float | None, str | None]:
        if not self.low <= value <= self.high:
            return None, f"score {value:g} outside [{self.low:g}, {self.high:g}]"
        return value, None

    def combine(self, predictions, logprobs, rule):
        """The mean of the paths' valid scores (weighted by path probability for ``weighted``)."""
        valid = [(p, lp) for p, lp in zip(predictions, logprobs) if p is not None]
        if not valid:
            return Vote(None, {}, 0)
        values = np.array([p for p, _ in valid], dtype=np.float64)
        if rule == "weighted" and all(lp is not None for _, lp in valid):
            weights = np.array(softmax([lp for _, lp in valid]))
        else:
            weights = np.full(len(valid), 1 / len(valid))
        distribution: dict[str, float] = {}
        for p, _ in valid:
            distribution[f"{p:g}"] = distribution.get(f"{p:g}", 0) + 1
        return Vote(round(float(values @ weights), 6), distribution, len(valid))

    def score(self, example, prediction, extra=None):
        midpoint = (self.low + self.high) / 2
        return {"score": midpoint if prediction is None else float(prediction),
                "abs_error": None if prediction is None else abs(float(prediction) - example.gold)}
