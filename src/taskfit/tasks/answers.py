"""Answer spaces: what an answer is for each task type, and how it is asked for, read and scored.

Strategies build prompts and decide how many times to ask; the *last step* — score candidate answers by
log-likelihood, or generate and parse — and the scoring of the result depend on the task type. Each
:class:`AnswerSpace` owns exactly that, so every strategy works on every task type:

| type            | gold                      | log-likelihood mode               | generate mode (text / JSON)      |
|-----------------|---------------------------|-----------------------------------|----------------------------------|
| classification  | label value               | argmax over label verbalizers     | label parser / ``{"label"}``     |
| regression      | float in ``score_range``  | expected value over 0..5 tokens   | first number / ``{"score"}``     |
| multiple_choice | indices of true choices   | argmax over choice texts; MC2     | choice number / ``{"answer": n}``|
| span            | list of gold answers      | (not available)                   | first line / ``{"answer"}``      |
| number          | normalized number string  | (not available)                   | final number / ``{"answer"}``    |
| kbqa            | answer text               | rank retrieved candidate objects  | answer text / ``{"answer"}``     |

:meth:`AnswerSpace.score` turns (example, prediction) into the per-example fields written to
``samples.jsonl`` (``correct``, ``score``, ``em``/``f1``, ``mc2``, ``rr``/``ap``/``rouge_l``), from which every
metric in :mod:`taskfit.metrics.registry` is computed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from taskfit.errors import UserError
from taskfit.metrics import text as text_metrics
from taskfit.prompting import json_answers
from taskfit.prompting.parsers import normalize_number, parse_final_number, parse_first_number, parse_label
from taskfit.prompting.voting import Vote, vote

if TYPE_CHECKING:
    from taskfit.api import Example
    from taskfit.tasks.retrieval import BM25Index
    from taskfit.tasks.task import TaskConfig


def _softmax(scores: Sequence[float]) -> list[float]:
    top = max(scores)
    exp = [math.exp(s - top) for s in scores]
    total = sum(exp)
    return [e / total for e in exp]


class AnswerSpace:
    """Base class: one subclass per task type, registered in :data:`ANSWER_SPACES`."""

    type: ClassVar[str]
    metrics: ClassVar[tuple[str, ...]]  # metrics that fit this type (the first ones are the defaults)
    default_metrics: ClassVar[tuple[str, ...]]
    modes: ClassVar[tuple[str, ...]] = ("loglikelihood", "generate")
    json_key: ClassVar[str] = "answer"
    json_quoted: ClassVar[bool] = True  # the JSON value is a string (log-likelihood JSON scoring opens a quote)

    def __init__(self, config: TaskConfig):
        self.config = config

    # -- data
    def gold(self, raw: Any, row: dict[str, Any], index: int, where: str) -> tuple[Any, dict[str, Any]]:
        """The gold answer of a data row and per-example data the prompt needs (``Example.meta``)."""
        raise NotImplementedError

    def check_mode(self, mode: str) -> None:
        if mode not in self.modes:
            raise UserError(f"task {self.config.name!r} ({self.type}) cannot be answered in {mode} mode; "
                            f"use --mode {' or '.join(self.modes)}")

    def setup(self, examples: Sequence[Example], *, data_dir: Any, split: str | None, kb: Any,
              load_split) -> None:
        """Work needed before prompts can be built (the knowledge base of KBQA); default: nothing."""

    # -- prompt pieces
    def prompt_extra(self, example: Example, mode: str, json: bool) -> str:
        """Text shown after the rendered input (choice lists, retrieved facts); default none."""
        return ""

    def word(self, example: Example) -> str:
        """The gold answer as the model should say it (demonstrations)."""
        raise NotImplementedError

    def json_word(self, example: Example) -> Any:
        """The gold answer as the JSON value of a demonstration."""
        return self.word(example)

    def answer_words(self) -> list[str]:
        """How the answer is described in instructions such as CARP's "give the DECISION: ..."."""
        return ["the answer"]

    def json_fill(self) -> dict[str, Any]:
        """Placeholders of this type's JSON output-format line (templates.yaml, section ``json``)."""
        return {}

    # -- log-likelihood mode
    def candidates(self, example: Example, json: bool) -> list[str]:
        """The answers scored in log-likelihood mode (JSON values in json mode)."""
        raise UserError(f"task {self.config.name!r} ({self.type}) has no candidate answers to score; use --mode generate")

    def from_scores(self, example: Example, words: Sequence[str], logprobs: Sequence[float]) -> tuple[Any, dict]:
        """Prediction and audit fields from the candidates' log-probabilities (in ``candidates`` order)."""
        raise NotImplementedError

    # -- generate mode
    def parse(self, text: str, example: Example) -> tuple[Any, str | None]:
        """Prediction from generated text, or ``(None, reason)``."""
        raise NotImplementedError

    def parse_json(self, text: str, example: Example) -> tuple[Any, str | None]:
        found = json_answers.parse_json_value(text, self.json_key)
        if found.error:
            return None, found.error
        return self.from_json_value(found.label, example)

    def from_json_value(self, value: Any, example: Example) -> tuple[Any, str | None]:
        return self.parse(str(value), example)

    def json_value_schema(self, example: Example) -> dict[str, Any]:
        """JSON schema of the answer value, for backends with constrained decoding; default any string."""
        return {"type": "string"}

    def json_schema(self, example: Example) -> dict[str, Any]:
        """JSON schema of the whole reply object ``{"<json_key>": value}`` and nothing else."""
        return {"type": "object", "properties": {self.json_key: self.json_value_schema(example)},
                "required": [self.json_key], "additionalProperties": False}

    # -- several answers to one (self-consistency)
    def combine(self, predictions: Sequence[Any], logprobs: Sequence[float | None], method: str) -> Vote:
        keys = [None if p is None else self.vote_key(p) for p in predictions]
        result = vote(keys, logprobs, method, self.preference())
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


# ------------------------------------------------------------------------------------------ classification
class ClassificationSpace(AnswerSpace):
    type = "classification"
    metrics = ("accuracy", "macro_f1")
    default_metrics = ("accuracy", "macro_f1")
    json_key = json_answers.ANSWER_KEY

    @property
    def labels(self):
        return self.config.labels

    @property
    def values(self) -> list[str]:
        return [label.value for label in self.labels]

    def gold(self, raw, row, index, where):
        gold = str(raw)  # label_map was applied by the task
        if gold not in self.values:
            raise UserError(f"{where} row {index + 1}: label {raw!r} is not one of {self.values}; "
                            "add it to the task's labels or label_map")
        return gold, {}

    def word(self, example):
        return next(label.word for label in self.labels if label.value == example.gold)

    def answer_words(self):
        return [label.word for label in self.labels]

    def json_fill(self):
        return {"example": json_answers.example_answer(), "choices": json_answers.choices(self.labels)}

    def json_value_schema(self, example):
        return {"enum": [label.word for label in self.labels]}

    def candidates(self, example, json):
        return [label.word for label in self.labels]

    def from_scores(self, example, words, logprobs):
        scores = dict(zip(self.values, logprobs))
        prediction = max(scores, key=lambda value: scores[value])  # max keeps the first of equal scores
        probs = dict(zip(self.values, _softmax(logprobs)))
        return prediction, {"scores": scores, "probs": probs, "logprob": scores[prediction]}

    def parse(self, text, example):
        label = parse_label(text, self.labels)
        return label, None if label is not None else "no label found in the response"

    def from_json_value(self, value, example):
        label = json_answers.exact_label(str(value), self.labels)
        return label, None if label is not None else f"{value!r} is not one of the labels"

    def preference(self):
        return self.values

    def score(self, example, prediction, extra=None):
        return {"correct": prediction == example.gold}


# ------------------------------------------------------------------------------------------ regression
class RegressionSpace(AnswerSpace):
    """A score in ``score_range`` (STS: similarity 0-5).

    Log-likelihood mode reads the probabilities of the integer score tokens and predicts their expected
    value. Generate mode reads the first number; out-of-range or missing scores are parse failures, and the
    correlation then uses the middle of the range for that example (``score`` field), so failing never
    helps a run.
    """

    type = "regression"
    metrics = ("spearman", "pearson")
    default_metrics = ("spearman", "pearson")
    json_key = "score"
    json_quoted = False

    @property
    def low(self) -> float:
        return float(self.config.score_range[0])

    @property
    def high(self) -> float:
        return float(self.config.score_range[1])

    def gold(self, raw, row, index, where):
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

    def json_word(self, example):
        return example.gold

    def answer_words(self):
        return [f"a score from {self.low:g} to {self.high:g}"]

    def json_fill(self):
        return {"low": f"{self.low:g}", "high": f"{self.high:g}"}

    def json_value_schema(self, example):
        return {"type": "number", "minimum": self.low, "maximum": self.high}

    def candidates(self, example, json):
        return [str(v) for v in range(math.ceil(self.low), math.floor(self.high) + 1)]

    def from_scores(self, example, words, logprobs):
        probs = _softmax(logprobs)
        expected = float(sum(float(w) * p for w, p in zip(words, probs)))
        return round(expected, 6), {"probs": dict(zip(words, probs))}

    def parse(self, text, example):
        value = parse_first_number(text)
        if value is None:
            return None, "no number in the response"
        return self._in_range(value)

    def from_json_value(self, value, example):
        if isinstance(value, int | float) and not isinstance(value, bool):
            return self._in_range(float(value))
        return self.parse(str(value), example)

    def _in_range(self, value: float) -> tuple[float | None, str | None]:
        if not self.low <= value <= self.high:
            return None, f"score {value:g} outside [{self.low:g}, {self.high:g}]"
        return value, None

    def combine(self, predictions, logprobs, method):
        """The mean of the paths' valid scores (weighted by path probability for ``weighted``)."""
        valid = [(p, lp) for p, lp in zip(predictions, logprobs) if p is not None]
        if not valid:
            return Vote(None, {}, 0)
        values = np.array([p for p, _ in valid], dtype=np.float64)
        if method == "weighted" and all(lp is not None for _, lp in valid):
            weights = np.array(_softmax([lp for _, lp in valid]))
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


# ------------------------------------------------------------------------------------------ multiple choice
class MultipleChoiceSpace(AnswerSpace):
    """Pick one of the example's choices (TruthfulQA).

    Choices are shuffled per example with a fixed seed (the source lists the right MC1 answer first). Gold is
    the list of true choices' positions after shuffling. Log-likelihood mode scores every choice text (as
    lm-evaluation-harness does, raw sum of log-probabilities) and also records MC2: the probability mass on
    the true choices, normalized over all choices. Generate mode lists the choices numbered from 1 and reads
    the number (``{"answer": n}`` in JSON).
    """

    type = "multiple_choice"
    metrics = ("accuracy", "mc2")
    default_metrics = ("accuracy",)
    json_quoted = False

    def gold(self, raw, row, index, where):
        from taskfit.tasks.task import lookup

        spec = self.config.choices
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
        return gold, {"choices": shuffled, "order": order}

    def check_mode(self, mode):
        super().check_mode(mode)
        if mode == "generate" and "mc2" in self.config.metrics:
            raise UserError(f"task {self.config.name!r} reports mc2, a probability mass over all choices: "
                            "use --mode loglikelihood")

    def prompt_extra(self, example, mode, json):
        if mode == "loglikelihood" and not json:
            return ""  # the choice texts are the scored continuations (lm-evaluation-harness style)
        lines = [f"{i}. {c}" for i, c in enumerate(example.meta["choices"], start=1)]
        return self.config.choices.header + "\n" + "\n".join(lines)

    def word(self, example):
        return example.meta["choices"][example.gold[0]]

    def json_word(self, example):
        return example.gold[0] + 1

    def json_value_schema(self, example):
        return {"type": "integer", "minimum": 1, "maximum": len(example.meta["choices"])}

    def answer_words(self):
        return ["the number of the correct choice"]

    def candidates(self, example, json):
        choices = example.meta["choices"]
        return [str(i) for i in range(1, len(choices) + 1)] if json else list(choices)

    def from_scores(self, example, words, logprobs):
        prediction = int(np.argmax(logprobs))
        probs = _softmax(logprobs)
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

    def from_json_value(self, value, example):
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


# ------------------------------------------------------------------------------------------ span
def _first_line(text: str) -> str:
    line = text.strip().split("\n", 1)[0].strip()
    return line.strip('"“”\'').strip()


class SpanSpace(AnswerSpace):
    """Extractive QA (SQuAD): the answer is text; EM and F1 against every gold answer, best kept."""

    type = "span"
    metrics = ("exact_match", "f1")
    default_metrics = ("exact_match", "f1")
    modes = ("generate",)

    def gold(self, raw, row, index, where):
        answers = raw if isinstance(raw, list) else [raw]
        answers = [str(a) for a in answers if str(a).strip()]
        if not answers:
            raise UserError(f"{where} row {index + 1}: no gold answer")
        return answers, {}

    def word(self, example):
        return example.gold[0]

    def parse(self, text, example):
        answer = _first_line(text).rstrip(".").strip()
        return (answer, None) if answer else (None, "empty answer")

    def vote_key(self, prediction):
        return text_metrics.squad_normalize(prediction)

    def score(self, example, prediction, extra=None):
        if prediction is None:
            return {"em": 0.0, "f1": 0.0}
        return {"em": text_metrics.squad_exact_match(prediction, example.gold),
                "f1": text_metrics.squad_f1(prediction, example.gold)}


# ------------------------------------------------------------------------------------------ number
class NumberSpace(AnswerSpace):
    """A numeric final answer (GSM8K): the final number is read from the text and compared exactly."""

    type = "number"
    metrics = ("accuracy",)
    default_metrics = ("accuracy",)
    modes = ("generate",)
    json_quoted = False

    def gold(self, raw, row, index, where):
        value = normalize_number(str(raw))
        if value is None:  # a worked solution ending in "#### 72" (GSM8K as published)
            value = parse_final_number(str(raw)) if "####" in str(raw) else None
        if value is None:
            raise UserError(f"{where} row {index + 1}: gold answer {raw!r} is not a number")
        return value, {}

    def word(self, example):
        return example.gold

    def json_word(self, example):
        value = float(example.gold)
        return int(value) if value == int(value) else value

    def json_value_schema(self, example):
        return {"type": "number"}

    def answer_words(self):
        return ["the final number"]

    def parse(self, text, example):
        value = parse_final_number(text)
        return (value, None) if value is not None else (None, "no number in the response")

    def from_json_value(self, value, example):
        if isinstance(value, int | float) and not isinstance(value, bool):
            return normalize_number(repr(value)), None
        return self.parse(str(value), example)

    def score(self, example, prediction, extra=None):
        return {"correct": prediction is not None and prediction == example.gold}


# ------------------------------------------------------------------------------------------ KBQA
_LIST_MARKER = re.compile(r"^\s*(?:\d+[.、)]|[-*•])\s*")


def _kb_normalize(text: str) -> str:
    return "".join(text.split()).strip("。.！!？?\"'“”").lower()


class KBQASpace(AnswerSpace):
    """Question answering over a knowledge base of (subject, predicate, object) triples (NLPCC 2016 KBQA).

    BM25 retrieval (:mod:`taskfit.tasks.retrieval`) picks the ``top_k`` triples for the question; they are
    shown in the prompt, and their distinct objects are the candidate answers. Log-likelihood mode ranks
    the candidates by the model's per-character log-probability (long answers are not penalized for
    length); generate mode takes the written answer and ranks the candidate it names first (the others
    keep retrieval order). MRR and MAP are computed over that ranked list against the gold answer; exact
    match, ROUGE-L (characters) and BLEU (sacrebleu's Chinese tokenizer) on the final answer text.
    """

    type = "kbqa"
    metrics = ("mrr", "map", "exact_match", "bleu", "rouge_l")
    default_metrics = ("mrr", "map", "exact_match", "bleu", "rouge_l")

    def __init__(self, config):
        super().__init__(config)
        self.index: BM25Index | None = None
        self._retrieved: dict[str, list[Any]] = {}
        self.kb_info: dict[str, Any] = {}

    def gold(self, raw, row, index, where):
        # An empty gold answer occurs in the published data (NLPCC train has one); it is kept, and can only be
        # matched by an empty answer, rather than failing a whole run over one row.
        return str(raw).strip(), {}

    def setup(self, examples, *, data_dir, split, kb, load_split):
        from taskfit.tasks.retrieval import BM25Index, load_kb_file, triples_from_rows

        spec = self.config.kb
        if kb is not None or spec.file:
            path = kb or spec.file
            triples, source = load_kb_file(path), str(path)
        else:
            rows, where = load_split(split)  # the whole split, not just --limit rows: a realistic haystack
            triples, source = triples_from_rows(rows, spec.triple_column, where), f"triples of {where}"
        self.index = BM25Index(triples)
        self._retrieved.clear()
        self.kb_info = {"source": source, "triples": len(self.index.triples), "top_k": spec.top_k}

    def retrieved(self, example: Example) -> list[Any]:
        if self.index is None:
            raise RuntimeError("KBQA answer space used before setup()")
        question = example.fields[self.config.kb.question_field]
        if question not in self._retrieved:
            self._retrieved[question] = [t for t, _ in self.index.search(question, self.config.kb.top_k)]
        return self._retrieved[question]

    def ranked_candidates(self, example: Example) -> list[str]:
        return list(dict.fromkeys(t.object for t in self.retrieved(example) if t.object))

    def prompt_extra(self, example, mode, json):
        facts = "\n".join(t.as_text() for t in self.retrieved(example))
        return f"{self.config.kb.header}\n{facts}"

    def word(self, example):
        return example.gold

    def candidates(self, example, json):
        return self.ranked_candidates(example)

    def from_scores(self, example, words, logprobs):
        per_char = [lp / max(1, len(w)) for w, lp in zip(words, logprobs)]
        order = sorted(range(len(words)), key=lambda i: (-per_char[i], i))
        ranked = [words[i] for i in order]
        return ranked[0], {"ranked": ranked, "scores": dict(zip(words, per_char))}

    def parse(self, text, example):
        """The first line, without a list marker ("1. "); a copied fact line "s | p | o" gives its object."""
        answer = _LIST_MARKER.sub("", _first_line(text))
        if " | " in answer:
            answer = answer.rsplit(" | ", 1)[1]
        answer = answer.rstrip("。.").strip()
        return (answer, None) if answer else (None, "empty answer")

    def vote_key(self, prediction):
        return _kb_normalize(prediction)

    def score(self, example, prediction, extra=None):
        ranked = (extra or {}).get("ranked")
        if ranked is None:  # generate mode: the named candidate first, the others in retrieval order
            candidates = self.ranked_candidates(example)
            key = None if prediction is None else _kb_normalize(prediction)
            named = [c for c in candidates if _kb_normalize(c) == key]
            ranked = named + [c for c in candidates if c not in named]
        gold = [c for c in ranked if _kb_normalize(c) == _kb_normalize(example.gold)]
        text = "" if prediction is None else prediction
        return {
            "ranked": list(ranked),
            "rr": text_metrics.reciprocal_rank(ranked, gold or [example.gold]),
            "ap": text_metrics.average_precision(ranked, gold or [example.gold]),
            "em": float(prediction is not None and _kb_normalize(text) == _kb_normalize(example.gold)),
            "rouge_l": text_metrics.rouge_l(text, example.gold, chinese=True) if text else 0.0,
        }


ANSWER_SPACES: dict[str, type[AnswerSpace]] = {
    cls.type: cls for cls in (ClassificationSpace, RegressionSpace, MultipleChoiceSpace, SpanSpace, NumberSpace,
                              KBQASpace)
}
