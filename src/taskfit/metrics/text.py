"""Metrics on answer text: SQuAD exact match / F1, BLEU and ROUGE-L (Chinese-aware), correlation and ranking.

These are the per-example and corpus metrics of the benchmark tasks (SQuAD, STS, NLPCC KBQA). Arithmetic
comes from scipy, sacrebleu and rouge-score where they provide it; SQuAD's normalization follows the
official v1.1 evaluation script's rules (lower-case, drop punctuation, drop the articles a/an/the,
collapse whitespace), and F1 is over the bag of normalized tokens.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from scipy import stats

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def squad_normalize(text: str) -> str:
    """SQuAD v1.1 answer normalization."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def squad_exact_match(prediction: str, golds: Sequence[str]) -> float:
    """1.0 if the normalized prediction equals any normalized gold answer."""
    norm = squad_normalize(prediction)
    return float(any(norm == squad_normalize(g) for g in golds))


def squad_f1(prediction: str, golds: Sequence[str]) -> float:
    """Best token-overlap F1 of the prediction against the gold answers."""
    pred_tokens = squad_normalize(prediction).split()
    best = 0.0
    for gold in golds:
        gold_tokens = squad_normalize(gold).split()
        same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
        if same == 0:
            continue
        precision, recall = same / len(pred_tokens), same / len(gold_tokens)
        best = max(best, 2 * precision * recall / (precision + recall))
    return best


def pearson(gold: Sequence[float], pred: Sequence[float]) -> float:
    """Pearson correlation (scipy); 0.0 when either side is constant."""
    if len(set(gold)) < 2 or len(set(pred)) < 2:
        return 0.0
    return float(stats.pearsonr(gold, pred).statistic)


def spearman(gold: Sequence[float], pred: Sequence[float]) -> float:
    """Spearman rank correlation (scipy); 0.0 when either side is constant."""
    if len(set(gold)) < 2 or len(set(pred)) < 2:
        return 0.0
    return float(stats.spearmanr(gold, pred).statistic)


def reciprocal_rank(ranked: Sequence[str], golds: Sequence[str]) -> float:
    """1 / rank of the first correct candidate (0 if none is correct)."""
    wanted = set(golds)
    for rank, candidate in enumerate(ranked, start=1):
        if candidate in wanted:
            return 1.0 / rank
    return 0.0


def average_precision(ranked: Sequence[str], golds: Sequence[str]) -> float:
    """Mean of precision@k over the ranks k holding a (first occurrence of a) gold answer, divided by the
    number of distinct gold answers; a gold answer missing from the list counts as precision 0."""
    wanted = set(golds)
    if not wanted:
        return 0.0
    found, total, seen = 0, 0.0, set()
    for rank, candidate in enumerate(ranked, start=1):
        if candidate in wanted and candidate not in seen:
            seen.add(candidate)
            found += 1
            total += found / rank
    return total / len(wanted)


def corpus_bleu(predictions: Sequence[str], references: Sequence[str], chinese: bool = True) -> float:
    """Corpus BLEU (sacrebleu, 0-100) with sacrebleu's Chinese tokenizer, or 13a for other text."""
    import sacrebleu

    tokenize = "zh" if chinese else "13a"
    return float(sacrebleu.corpus_bleu(list(predictions), [list(references)], tokenize=tokenize).score)


def corpus_bleu_resampled(predictions: Sequence[str], references: Sequence[str], indices: np.ndarray,
                          chinese: bool = True) -> np.ndarray:
    """Corpus BLEU of every resample (each row of ``indices`` picks rows of predictions/references), equal to
    :func:`corpus_bleu` on each. BLEU is a function of summed per-sentence n-gram counts, so each sentence is
    tokenized and counted once and a resample only sums its rows' counts — instead of sacrebleu re-tokenizing the
    whole corpus per resample (minutes for a paired test of 400 rows x 2,000 resamples). Uses sacrebleu's
    per-segment statistics, the route its own significance tests take."""
    from sacrebleu.metrics import BLEU

    bleu = BLEU(tokenize="zh" if chinese else "13a")
    counts = np.asarray(bleu._extract_corpus_statistics(list(predictions), [list(references)]), dtype=np.int64)
    sums = counts[np.asarray(indices)].sum(axis=1)
    return np.array([bleu._compute_score_from_stats(row.tolist()).score for row in sums], dtype=np.float64)


class _CharTokenizer:
    """rouge-score tokenizer for Chinese: every non-space character is a token (character-level ROUGE)."""

    def tokenize(self, text: str) -> list[str]:
        return [ch for ch in text.lower() if not ch.isspace()]


@lru_cache(maxsize=2)
def _rouge_scorer(chinese: bool):
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], tokenizer=_CharTokenizer() if chinese else None)


def rouge_l(prediction: str, reference: str, chinese: bool = True) -> float:
    """ROUGE-L F-measure (rouge-score); character-level for Chinese."""
    return float(_rouge_scorer(chinese).score(reference, prediction)["rougeL"].fmeasure)


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct n-grams over all n-grams of the answers (Li et al. 2016), on whitespace words."""
    grams = [tuple(words[i:i + n]) for t in texts for words in [t.split()] for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0
