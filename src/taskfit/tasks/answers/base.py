"""The base of every answer space: what an answer is for one task type, and how it is asked for, read and scored."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

from taskfit.api import Example
from taskfit.errors import UserError
from taskfit.tasks.answers.voting import Vote, vote
from taskfit.tasks.schema import ChoicesSpec, SplitRows, TaskConfig


def softmax(scores: Sequence[float]) -> list[float]:
    top = max(scores)
    exp = [math.exp(s - top) for s in scores]
    total = sum(exp)
    return [e / total for e in exp]


class AnswerSpace:
    """Base class: one subclass per task type, registered in :data:`ANSWER_SPACES`."""

    type: ClassVar[str]
    metrics: ClassVar[tuple[str, ...]]  # metrics that fit this type: schema.TYPE_METRICS, where tasks are validated
    modes: ClassVar[tuple[str, ...]] = ("loglikelihood", "generate")
    answer_name: ClassVar[str] = "answer"  # what the answer is called (the JSON answer format's key)

    def __init__(self, config: TaskConfig):
        self.config = config

    # -- data
    def gold(self, raw: Any, row: dict[str, Any], index: int, where: str,
             choices: ChoicesSpec | None = None) -> tuple[Any, dict[str, Any]]:
        """The gold answer of a data row and per-example data the prompt needs (``Example.meta``)."""
        raise NotImplementedError

    def check_mode(self, mode: str) -> None:
        if mode not in self.modes:
            raise UserError(f"task {self.config.name!r} ({self.type}) cannot be answered in {mode} mode; "
                            f"use --mode {' or '.join(self.modes)}")

    def needs_split_rows(self, kb: Any) -> bool:
        """Whether :meth:`setup` needs all rows of the evaluated split (KBQA without a KB file)."""
        return False

    def setup(self, examples: Sequence[Example], *, kb: Any = None, split_rows: SplitRows | None = None) -> None:
        """Work needed before prompts can be built (the knowledge base of KBQA); default: nothing."""

    # -- prompt pieces
    def prompt_extra(self, example: Example, scored_texts: bool) -> str:
        """Text shown after the rendered input (choice lists, retrieved facts); default none. ``scored_texts``: the
        candidate answers are scored as their own texts (log-likelihood in the text format), so a list of them
        would show them twice."""
        return ""

    def word(self, example: Example) -> str:
        """The gold answer as the model should say it (demonstrations)."""
        raise NotImplementedError

    def value(self, example: Example) -> Any:
        """The gold answer as a value (the JSON answer format's demonstrations): the word, a number, an index."""
        return self.word(example)

    def answer_words(self) -> list[str]:
        """How the answer is described in instructions such as CARP's "give the DECISION: ..."."""
        return ["the answer"]

    def value_fill(self) -> dict[str, Any]:
        """Placeholders that describe this type's values in an output-format line (templates.yaml, section
        ``json``): the labels, the score range."""
        return {}

    # -- log-likelihood mode
    def candidates(self, example: Example) -> list[str]:
        """The answers scored in log-likelihood mode, as texts."""
        raise UserError(f"task {self.config.name!r} ({self.type}) has no candidate answers to score; "
                        "use --mode generate")

    def value_candidates(self, example: Example) -> list[Any]:
        """The candidate answers as values (what the JSON answer format scores); default: the texts."""
        return self.candidates(example)

    def from_scores(self, example: Example, words: Sequence[str], logprobs: Sequence[float]) -> tuple[Any, dict]:
        """Prediction and audit fields from the candidates' log-probabilities (in ``candidates`` order)."""
        raise NotImplementedError

    # -- generate mode
    def parse(self, text: str, example: Example) -> tuple[Any, str | None]:
        """Prediction from generated text, or ``(None, reason)``."""
        raise NotImplementedError

    def from_value(self, value: Any, example: Example) -> tuple[Any, str | None]:
        """Prediction from an answer given as a value (a JSON reply's), or ``(None, reason)``."""
        return self.parse(str(value), example)

    def value_schema(self, example: Example) -> dict[str, Any]:
        """JSON schema of the answer value (constrained decoding; strings are quoted in JSON); default any text."""
        return {"type": "string"}

    # -- several answers to one (self-consistency)
    def combine(self, predictions: Sequence[Any], logprobs: Sequence[float | None], rule: str) -> Vote:
        keys = [None if p is None else self.vote_key(p) for p in predictions]
        result = vote(keys, logprobs, rule, self.preference())
        if result.winner is None:
            return result
        winner = next(p for p, k in zip(predictions, keys) if k == result.winner)
        return Vote(winner, result.distribution, result.valid)

    def vote_key(self, prediction: Any) -> str:
        return str(prediction)

    def preference(self) -> list[str]:
        return []

    # -- scoring
    def score(self, example: Example, prediction: Any, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Per-example metric inputs written to samples.jsonl (``extra``: the strategy's audit fields)."""
        raise NotImplementedError
