"""Knowledge-base retrieval for KBQA: BM25 over character n-grams of each triple's subject and predicate (and, for
the assistant, of passages' text).

Chinese questions have no spaces, so words are not a usable unit; character unigrams and bigrams are (the
question "《高等数学》是哪个出版社出版的？" shares the bigrams of the subject 高等数学 and the predicate 出版社).
Term counts come from scikit-learn's ``CountVectorizer``; the BM25 weighting (Robertson & Zaragoza 2009,
k1 = 1.5, b = 0.75, idf = ln(1 + (N - df + 0.5) / (df + 0.5))) is applied to the sparse matrix once, so
scoring a question is one sparse matrix-vector product over the whole knowledge base.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from taskfit.errors import UserError
from taskfit.paths import decode_utf8


@dataclass(frozen=True)
class Triple:
    subject: str
    predicate: str
    object: str

    def as_text(self) -> str:
        return f"{self.subject} | {self.predicate} | {self.object}"


@dataclass(frozen=True)
class Passage:
    text: str

    def as_text(self) -> str:
        return self.text


class BM25Index:
    """Ranks triples (or passages) for a question by BM25 over character 1-2-grams of ``subject predicate`` (of the
    passage's text)."""

    def __init__(self, triples: Iterable[Triple | Passage], k1: float = 1.5, b: float = 0.75):
        from sklearn.feature_extraction.text import CountVectorizer

        self.triples = list(dict.fromkeys(triples))  # distinct, first-seen order
        if not self.triples:
            raise UserError("the knowledge base is empty; give triples with --kb or use a split whose rows have them")
        docs = [t.text if isinstance(t, Passage) else f"{t.subject} {t.predicate}" for t in self.triples]
        self.vectorizer = CountVectorizer(analyzer="char", ngram_range=(1, 2), lowercase=True)
        counts = self.vectorizer.fit_transform(docs).tocsr().astype(np.float64)
        n_docs = counts.shape[0]
        df = np.bincount(counts.indices, minlength=counts.shape[1])
        self.idf = np.log1p((n_docs - df + 0.5) / (df + 0.5))
        lengths = np.asarray(counts.sum(axis=1)).ravel()
        norm = k1 * (1 - b + b * lengths / lengths.mean())
        rows = np.repeat(np.arange(n_docs), np.diff(counts.indptr))
        counts.data = counts.data * (k1 + 1) / (counts.data + norm[rows])
        self.weights = counts.multiply(self.idf).tocsr()

    def search(self, question: str, k: int) -> list[tuple[Triple | Passage, float]]:
        """The ``k`` best triples with their scores, best first (ties: knowledge-base order)."""
        query = self.vectorizer.transform([question])
        query.data[:] = 1.0  # a question term counts once
        scores = np.asarray((self.weights @ query.T).todense()).ravel()
        order = np.lexsort((np.arange(len(scores)), -scores))[:k]
        return [(self.triples[i], float(scores[i])) for i in order]


def triples_from_rows(rows: Sequence[dict], column: str, where: str) -> list[Triple]:
    """Triples from data rows whose ``column`` is ``[subject, predicate, object]``."""
    out = []
    for i, row in enumerate(rows):
        value = row.get(column)
        if not (isinstance(value, list | tuple) and len(value) == 3):
            raise UserError(f"{where} row {i + 1}: field {column!r} must be [subject, predicate, object], "
                            f"got {value!r}")
        out.append(Triple(*(str(v).strip() for v in value)))
    return out


def _kb_lines(path: str | Path) -> Iterator[tuple[Path, int, str]]:
    """(path, line number, stripped text) of every non-empty line of a knowledge-base file (UTF-8 checked)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"knowledge base file not found: {path}")
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            line = decode_utf8(raw, path, number).strip()
            if line:
                yield path, number, line


def load_kb_file(path: str | Path) -> list[Triple]:
    """A knowledge-base file: JSONL with ``subject``/``predicate``/``object`` keys (or a ``triple`` list),
    or NLPCC's text format ``subject ||| predicate ||| object`` per line."""
    triples = []
    for where, number, line in _kb_lines(path):
        if "|||" in line and not line.startswith("{"):
            parts = [p.strip() for p in line.split("|||")]
        else:
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{where}:{number}: not JSON ({exc.msg}) and not 'subject ||| predicate ||| "
                                "object'") from None
            parts = item.get("triple") if isinstance(item, dict) and "triple" in item else (
                [item.get(k) for k in ("subject", "predicate", "object")] if isinstance(item, dict) else None)
        if not parts or len(parts) != 3 or any(p is None for p in parts):
            raise UserError(f"{where}:{number}: expected subject, predicate and object")
        triples.append(Triple(*(str(p).strip() for p in parts)))
    return triples


def load_passages(path: str | Path) -> list[Passage]:
    """Passages for the assistant's retrieval: JSONL rows with a ``text`` field."""
    passages = []
    for where, number, line in _kb_lines(path):
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{where}:{number}: not JSON ({exc.msg}); passages are JSONL rows with a 'text' "
                            "field") from None
        if not isinstance(item, dict) or not isinstance(item.get("text"), str) or not item["text"].strip():
            raise UserError(f"{where}:{number}: key 'text': expected a non-empty string")
        passages.append(Passage(item["text"].strip()))
    return passages
