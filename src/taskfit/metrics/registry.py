"""Every task metric as a function of per-example columns of ``samples.jsonl``, with bootstrap CIs.

A metric reads the columns it needs from the sample records (``correct``, ``em``, ``f1``, ``rr``, ``gold``,
``prediction`` ...) into arrays, then computes one number from them. Because the inputs are exactly what
``samples.jsonl`` stores, any number in ``results.json`` can be recomputed from that file.

Two kinds:
- *mean* metrics are the average of one per-example column (accuracy, SQuAD EM/F1, MRR, MAP, MC2,
  ROUGE-L): bootstrap resamples are one vectorized numpy operation;
- *corpus* metrics need the whole list at once (macro-F1 via scikit-learn, Pearson/Spearman via scipy,
  BLEU via sacrebleu): recomputed per resample, except where per-example statistics can be summed per resample
  (macro-F1's confusion counts, BLEU's n-gram counts).

Confidence intervals are percentile bootstraps over examples (resampled with replacement, a fixed seed).
The paired comparison of two runs (:mod:`taskfit.metrics.paired`) uses the same metric functions on the
same resampled indices for both runs.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from taskfit.metrics import text
from taskfit.metrics.classification import macro_f1_resampled, macro_f1_values

UNPARSED = "\x00unparsed"  # a prediction that failed to parse, as a class no gold label has


@dataclass(frozen=True)
class MetricValue:
    """A metric's value on all examples and its bootstrap confidence interval."""

    value: float
    ci_low: float | None
    ci_high: float | None
    ci_level: float

    def as_dict(self) -> dict[str, float | None]:
        return asdict(self)


@dataclass(frozen=True)
class Metric:
    """``columns(records, labels)`` -> arrays; ``fn(*arrays)`` -> value (arrays sliced by resampled indices)."""

    name: str
    description: str
    columns: Callable[[Sequence[Mapping[str, Any]], Sequence[str]], tuple[np.ndarray, ...]]
    fn: Callable[..., float]
    mean: bool = False  # fn is the mean of the single column: bootstrap vectorized
    needs_labels: bool = False  # fn takes the task's label values as a last argument
    batched: Callable[..., np.ndarray] | None = None  # (*arrays, indices, labels) -> value per resample
    higher_is_better: bool = True  # which way is better, declared by every metric (the report ranks by it)


def _column(name: str, default: float | None = None) -> Callable[..., tuple[np.ndarray, ...]]:
    def read(records: Sequence[Mapping[str, Any]], labels: Sequence[str]) -> tuple[np.ndarray, ...]:
        try:
            return (np.array([float(r[name]) for r in records], dtype=np.float64),)
        except KeyError:
            raise ValueError(f"samples have no {name!r} field; this metric does not fit this task type") from None

    return read


def _mean(x: np.ndarray) -> float:
    return float(np.mean(x))


def _labels_columns(records: Sequence[Mapping[str, Any]], labels: Sequence[str]) -> tuple[np.ndarray, ...]:
    gold = np.array([str(r["gold"]) for r in records], dtype=object)
    pred = np.array([UNPARSED if r["prediction"] is None else str(r["prediction"]) for r in records], dtype=object)
    return gold, pred


def _score_columns(records: Sequence[Mapping[str, Any]], labels: Sequence[str]) -> tuple[np.ndarray, ...]:
    """Gold scores and the scores used for correlation (``score``: the prediction, or the imputed value)."""
    return (np.array([float(r["gold"]) for r in records]), np.array([float(r["score"]) for r in records]))


def _text_columns(records: Sequence[Mapping[str, Any]], labels: Sequence[str]) -> tuple[np.ndarray, ...]:
    pred = np.array(["" if r["prediction"] is None else str(r["prediction"]) for r in records], dtype=object)
    gold = np.array([str(r["gold"]) for r in records], dtype=object)
    return pred, gold


def _mean_metric(name: str, column: str, description: str) -> Metric:
    return Metric(name, description, _column(column), _mean, mean=True)


METRICS: dict[str, Metric] = {m.name: m for m in (
    _mean_metric("accuracy", "correct", "share of examples answered correctly"),
    Metric("macro_f1", "unweighted mean of per-class F1 over the task's labels (scikit-learn)", _labels_columns,
           macro_f1_values, needs_labels=True, batched=macro_f1_resampled),
    Metric("pearson", "Pearson correlation of predicted and gold scores (scipy)", _score_columns, text.pearson),
    Metric("spearman", "Spearman rank correlation of predicted and gold scores (scipy)", _score_columns,
           text.spearman),
    _mean_metric("mc2", "mc2", "normalized probability mass on the true answers (TruthfulQA MC2)"),
    _mean_metric("exact_match", "em", "exact match after SQuAD normalization, best over gold answers"),
    _mean_metric("f1", "f1", "token F1 after SQuAD normalization, best over gold answers"),
    _mean_metric("mrr", "rr", "mean reciprocal rank of the gold answer in the ranked candidates"),
    _mean_metric("map", "ap", "mean average precision of the ranked candidates"),
    _mean_metric("rouge_l", "rouge_l", "ROUGE-L F-measure (rouge-score; character level for Chinese)"),
    Metric("bleu", "corpus BLEU, 0-100 (sacrebleu, Chinese tokenizer)", _text_columns,
           lambda pred, gold: text.corpus_bleu(list(pred), list(gold), chinese=True),
           batched=lambda pred, gold, indices, labels: text.corpus_bleu_resampled(pred, gold, indices, chinese=True)),
)}


def metric_fn(metric: Metric, labels: Sequence[str]) -> Callable[..., float]:
    if metric.needs_labels:
        return lambda *arrays: metric.fn(*arrays, labels)
    return metric.fn


def metric_inputs(name: str, records: Sequence[Mapping[str, Any]],
                  labels: Sequence[str] = ()) -> tuple[np.ndarray, ...]:
    """The arrays metric ``name`` is computed from (public so tests can recompute from samples.jsonl)."""
    return METRICS[name].columns(records, labels)


def metric_value(name: str, records: Sequence[Mapping[str, Any]], labels: Sequence[str] = ()) -> float:
    """Metric ``name`` on all ``records``, no CI."""
    return metric_fn(METRICS[name], labels)(*metric_inputs(name, records, labels))


def resample_indices(n: int, n_resamples: int, seed: int) -> np.ndarray:
    """``n_resamples`` x ``n`` example indices drawn with replacement (the same draw for every metric)."""
    return np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))


def resampled_values(metric: Metric, arrays: tuple[np.ndarray, ...], indices: np.ndarray,
                     labels: Sequence[str]) -> np.ndarray:
    """The metric on every resample (rows of ``indices``)."""
    if metric.mean:
        return arrays[0][indices].mean(axis=1)
    if metric.batched is not None:
        return metric.batched(*arrays, indices, labels)
    fn = metric_fn(metric, labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant resamples in correlations etc. are handled by the functions
        return np.array([fn(*(a[idx] for a in arrays)) for idx in indices], dtype=np.float64)


def compute_metrics(names: Sequence[str], records: Sequence[Mapping[str, Any]], labels: Sequence[str] = (), *,
                    n_resamples: int = 1000, seed: int = 0, level: float = 0.95) -> dict[str, MetricValue]:
    """Every metric in ``names`` with its percentile-bootstrap CI, from the sample records."""
    out: dict[str, MetricValue] = {}
    indices = resample_indices(len(records), n_resamples, seed) if n_resamples and len(records) >= 2 else None
    for name in names:
        metric = METRICS[name]
        arrays = metric.columns(records, labels)
        value = metric_fn(metric, labels)(*arrays)
        low = high = None
        if indices is not None:
            values = resampled_values(metric, arrays, indices, labels)
            low, high = (float(v) for v in np.quantile(values, [(1 - level) / 2, 1 - (1 - level) / 2]))
        out[name] = MetricValue(float(value), low, high, level)
    return out


def mean_with_ci(values: Sequence[float], *, n_resamples: int = 2000, seed: int = 0,
                 level: float = 0.95) -> MetricValue:
    """The mean of any per-example values with its percentile-bootstrap CI (e.g. reward margins)."""
    array = np.asarray(values, dtype=np.float64)
    if len(array) < 2 or not n_resamples:
        return MetricValue(float(array.mean()) if len(array) else float("nan"), None, None, level)
    means = array[resample_indices(len(array), n_resamples, seed)].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return MetricValue(float(array.mean()), float(low), float(high), level)
