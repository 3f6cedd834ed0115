"""Multiple choice (TruthfulQA MC1 / MC2): one of the example's choices."""

from __future__ import annotations

import numpy as np

from taskfit.errors import UserError
from taskfit.tasks.answers.base import AnswerSpace, softmax
from taskfit.tasks.answers.parsing import parse_first_number
from taskfit.tasks.schema import TYPE_METRICS, lookup


class MultipleChoiceSpace(AnswerSpace):
    """Pick one of the example's choices (TruthfulQA).

    Choices are shuffled per example with a fixed seed (the source lists the right MC1 answer first). Gold is
    the list of true choices' positions after shuffling. Log-likelihood mode scores every choice text (as
    lm-evaluation-harness does, raw sum of log-probabilities) and also records MC2: the probability mass on
    the true choices, normalized over all choices. Generate mode lists the choices numbered from 1 and reads
    the number (``{"answer": n}`` in JSON).
    """

    type = "multiple_choice"
    metrics = TYPE_METRICS["multiple_choice"]

    def gold(self, raw, row, index, where, choices=None):
        spec = choices or self.config.choices
        choices = lookup(row, spec.column, None)
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
            raise UserError(f"{where} row {index + 1}: field {spec.column!r} must be a list of at least 2 strings")
        if spec.labels_column:
            flags = lookup(row, spec.labels_column, None)
            if not isinstance(flags, list) or len(flags) != len(choices):
                raise UserError(f"{where} row {index + 1}: field {spec.labels_column!r} must be a list of 0/1 "
                                f"flags, one per choice ({len(choices)})")
            true = [i for i, f in enumerate(flags) if int(f) == 1]
        else:
            try:
                true = [int(raw)]
            except (TypeError, ValueError):
                raise UserError(f"{where} row {index + 1}: target {raw!r} is not a choice index") from None
        if not true or not all(0 <= t < len(choices) for t in true):
            raise UserError(f"{where} row {index + 1}: no valid true choice among {len(choices)} choices")
        order = list(range(len(choices)))
        if spec.shuffle:
            order = [int(i) for i in np.random.default_rng([spec.shuffle_seed, index]).permutation(len(choices))]
        shuffled = [choices[i] for i in order]
        gold = sorted(order.index(t) for t in true)
        return gold, {"choices": shuffled, "order": order, "header": spec.header}

    def check_mode(self, mode):
        super().check_mode(mode)
        if mode == "generate" and "mc2" in self.config.metrics:
            raise UserError(f"task {self.config.name!r} reports mc2, a probability mass over all choices: "
                            "use --mode loglikelihood")

    def prompt_extra(self, example, scored_texts):
        if scored_texts:
            return ""  # the choice texts are the scored continuations (lm-evaluation-harness style)
        lines = [f"{i}. {c}" for i, c in enumerate(example.meta["choices"], start=1)]
        return example.meta.get("header", self.config.choices.header) + "\n" + "\n".join(lines)

    def word(self, example):
        return example.meta["choices"][example.gold[0]]

    def value(self, example):
        return example.gold[0] + 1

    def value_schema(self, example):
        return {"type": "integer", "minimum": 1, "maximum": len(example.meta["choices"])}

    def answer_words(self):
        return ["the number of the correct choice"]

    def candidates(self, example):
        return list(example.meta["choices"])

    def value_candidates(self, example):
        return list(range(1, len(example.meta["choices"]) + 1))  # the choice numbers

    def from_scores(self, example, words, logprobs):
        prediction = int(np.argmax(logprobs))
        probs = softmax(logprobs)
        mc2 = float(sum(probs[i] for i in example.gold))
        return prediction, {"scores": list(logprobs), "mc2": mc2, "logprob": logprobs[prediction]}

    def parse(self, text, example):
        choices = example.meta["choices"]
        stripped = text.strip()
        for i, choice in enumerate(choices):  # the full choice text, as written
            if stripped.lower().startswith(choice.strip().lower()):
                return i, None
        value = parse_first_number(stripped)
        if value is None or value != int(value):
            return None, "no choice number in the response"
        return self._number(int(value))

    def from_value(self, value, example):
        if isinstance(value, int) and not isinstance(value, bool):
            return self._number(value, len(example.meta["choices"]))
        return self.parse(str(value), example)

    def _number(self, number: int, n: int | None = None) -> tuple[int | None, str | None]:
        if number < 1 or (n is not None and number > n):
            return None, f"choice {number} does not exist"
        return number - 1, None

    def score(self, example, prediction, extra=None):
        if prediction is not None and prediction >= len(example.meta["choices"]):
            prediction = None
        return {"correct": prediction is not None and prediction in example.gold}
