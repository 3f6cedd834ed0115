"""Extractive QA (SQuAD): the answer is a span of text."""

from __future__ import annotations

from taskfit.errors import UserError
from taskfit.metrics import text as text_metrics
from taskfit.tasks.answers.base import AnswerSpace
from taskfit.tasks.answers.parsing import first_line
from taskfit.tasks.schema import TYPE_METRICS


class SpanSpace(AnswerSpace):
    """Extractive QA (SQuAD): the answer is text; EM and F1 against every gold answer, best kept."""

    type = "span"
    metrics = TYPE_METRICS["span"]
    modes = ("generate",)

    def gold(self, raw, row, index, where, choices=None):
        answers = raw if isinstance(raw, list) else [raw]
        answers = [str(a) for a in answers if str(a).strip()]
        if not answers:
            raise UserError(f"{where} row {index + 1}: no gold answer")
        return answers, {}

    def word(self, example):
        return example.gold[0]

    def parse(self, text, example):
        answer = first_line(text).rstrip(".").strip()
        return (answer, None) if answer else (None, "empty answer")

    def vote_key(self, prediction):
        return text_metrics.squad_normalize(prediction)

    def score(self, example, prediction, extra=None):
        if prediction is None:
            return {"em": 0.0, "f1": 0.0}
        return {"em": text_metrics.squad_exact_match(prediction, example.gold),
                "f1": text_metrics.squad_f1(prediction, example.gold)}
