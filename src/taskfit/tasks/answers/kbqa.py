"""Knowledge-base QA (NLPCC 2016 KBQA): retrieved facts, ranked candidate answers."""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any

from taskfit.api import Example
from taskfit.metrics import text as text_metrics
from taskfit.tasks.answers.base import AnswerSpace
from taskfit.tasks.answers.parsing import first_line
from taskfit.tasks.retrieval import BM25Index, load_kb_file, triples_from_rows
from taskfit.tasks.schema import TYPE_METRICS

_LIST_MARKER = re.compile(r"^\s*(?:\d+[.、)]|[-*•])\s*")


def _kb_normalize(text: str) -> str:
    return "".join(text.split()).strip("。.！!？?\"'“”").lower()


RETRIEVED_KEPT = 4096  # questions whose retrieved facts are kept (least recently asked out first)


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
    metrics = TYPE_METRICS["kbqa"]

    def __init__(self, config):
        super().__init__(config)
        self.index: BM25Index | None = None
        # each question is asked several times per example (prompt, candidates, scoring); bounded, since the
        # assistant keeps one space for as long as it serves
        self._retrieved: OrderedDict[str, list[Any]] = OrderedDict()
        self.kb_info: dict[str, Any] = {}

    def gold(self, raw, row, index, where, choices=None):
        # An empty gold answer occurs in the published data (NLPCC train has one); it is kept, and can only be
        # matched by an empty answer, rather than failing a whole run over one row.
        return str(raw).strip(), {}

    def needs_split_rows(self, kb):
        return kb is None and not self.config.kb.file

    def setup(self, examples, *, kb=None, split_rows=None):
        spec = self.config.kb
        if kb is not None or spec.file:
            path = kb or spec.file
            triples, source = load_kb_file(path), str(path)
        else:  # the whole split, not just --limit rows: a realistic haystack
            if split_rows is None:
                raise RuntimeError("KBQA setup without a KB file needs the split's rows")
            triples = triples_from_rows(split_rows.rows, spec.triple_column, split_rows.where)
            source = f"triples of {split_rows.where}"
        self.index = BM25Index(triples)
        self._retrieved.clear()
        self.kb_info = {"source": source, "triples": len(self.index.triples), "top_k": spec.top_k}

    def retrieved(self, example: Example) -> list[Any]:
        if self.index is None:
            raise RuntimeError("KBQA answer space used before setup()")
        question = example.fields[self.config.kb.question_field]
        if question not in self._retrieved:
            self._retrieved[question] = [t for t, _ in self.index.search(question, self.config.kb.top_k)]
            while len(self._retrieved) > RETRIEVED_KEPT:
                self._retrieved.popitem(last=False)
        self._retrieved.move_to_end(question)
        return self._retrieved[question]

    def ranked_candidates(self, example: Example) -> list[str]:
        return list(dict.fromkeys(t.object for t in self.retrieved(example) if t.object))

    def prompt_extra(self, example, scored_texts):
        facts = "\n".join(t.as_text() for t in self.retrieved(example))
        return f"{self.config.kb.header}\n{facts}"

    def word(self, example):
        return example.gold

    def candidates(self, example):
        return self.ranked_candidates(example)

    def from_scores(self, example, words, logprobs):
        per_char = [lp / max(1, len(w)) for w, lp in zip(words, logprobs)]
        order = sorted(range(len(words)), key=lambda i: (-per_char[i], i))
        ranked = [words[i] for i in order]
        return ranked[0], {"ranked": ranked, "scores": dict(zip(words, per_char))}

    def parse(self, text, example):
        """The first line, without a list marker ("1. "); a copied fact line "s | p | o" gives its object."""
        answer = _LIST_MARKER.sub("", first_line(text))
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
