"""Classification (SST-2, AG News ...): one of the task's labels."""

from __future__ import annotations

from taskfit.errors import UserError
from taskfit.tasks.answers.base import AnswerSpace, softmax
from taskfit.tasks.answers.json_values import ANSWER_KEY, choices, exact_label, example_answer
from taskfit.tasks.answers.parsing import parse_label
from taskfit.tasks.schema import TYPE_METRICS


class ClassificationSpace(AnswerSpace):
    type = "classification"
    metrics = TYPE_METRICS["classification"]
    answer_name = ANSWER_KEY

    @property
    def labels(self):
        return self.config.labels

    @property
    def values(self) -> list[str]:
        return [label.value for label in self.labels]

    def gold(self, raw, row, index, where, choices=None):
        gold = str(raw)  # label_map was applied by the task
        if gold not in self.values:
            raise UserError(f"{where} row {index + 1}: label {raw!r} is not one of {self.values}; "
                            "add it to the task's labels or label_map")
        return gold, {}

    def word(self, example):
        return next(label.word for label in self.labels if label.value == example.gold)

    def answer_words(self):
        return [label.word for label in self.labels]

    def value_fill(self):
        return {"example": example_answer(), "choices": choices(self.labels)}

    def value_schema(self, example):
        return {"enum": [label.word for label in self.labels]}

    def candidates(self, example):
        return [label.word for label in self.labels]

    def from_scores(self, example, words, logprobs):
        scores = dict(zip(self.values, logprobs))
        prediction = max(scores, key=lambda value: scores[value])  # max keeps the first of equal scores
        probs = dict(zip(self.values, softmax(logprobs)))
        return prediction, {"scores": scores, "probs": probs, "logprob": scores[prediction]}

    def parse(self, text, example):
        label = parse_label(text, self.labels)
        return label, None if label is not None else "no label found in the response"

    def from_value(self, value, example):
        label = exact_label(str(value), self.labels)
        return label, None if label is not None else f"{value!r} is not one of the labels"

    def preference(self):
        return self.values

    def score(self, example, prediction, extra=None):
        return {"correct": prediction == example.gold}
