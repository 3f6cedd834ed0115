"""Classification metrics (scikit-learn) with seeded bootstrap confidence intervals (scipy).

Predictions that failed to parse are passed as ``None``; they count as wrong for accuracy and as a
prediction outside the label set for macro-F1 (they lower recall of the gold class, add no false
positive to any class).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats
from sklearn.metrics import f1_score

UNPARSED = -1


@dataclass(frozen=True)
class MetricValue:
    """A metric's value on all examples and its bootstrap confidence interval."""

    value: float
    ci_low: float | None
    ci_high: float | None
    ci_level: float

    def as_dict(self) -> dict[str, float | None]:
        return asdict(self)


def accuracy(gold: np.ndarray, pred: np.ndarray, n_labels: int) -> float:
    """Share of examples whose prediction equals gold (a plain mean: no per-call validation cost in bootstraps)."""
    return float(np.mean(gold == pred))


def macro_f1(gold: np.ndarray, pred: np.ndarray, n_labels: int) -> float:
    """Unweighted mean of per-class F1 over the task's labels (a class never predicted nor gold scores 0)."""
    return float(f1_score(gold, pred, labels=list(range(n_labels)), average="macro", zero_division=0))


METRICS: dict[str, Callable[[np.ndarray, np.ndarray, int], float]] = {"accuracy": accuracy, "macro_f1": macro_f1}


def encode(values: Sequence[str | None], labels: Sequence[str]) -> np.ndarray:
    """Label values -> indices into ``labels``; ``None`` (unparsed) -> -1."""
    position = {label: i for i, label in enumerate(labels)}
    return np.array([UNPARSED if v is None else position[v] for v in values], dtype=np.int64)


def bootstrap_ci(
    metric: Callable[[np.ndarray, np.ndarray, int], float],
    gold: np.ndarray,
    pred: np.ndarray,
    n_labels: int,
    *,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval over examples (gold and prediction resampled together)."""
    if n_resamples == 0 or len(gold) < 2:
        return None, None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate resamples (all correct) are fine for percentiles
        result = stats.bootstrap(
            (gold, pred),
            lambda g, p: metric(g, p, n_labels),
            paired=True,
            vectorized=False,
            n_resamples=n_resamples,
            confidence_level=level,
            method="percentile",
            rng=np.random.default_rng(seed),
        )
    low, high = result.confidence_interval
    return float(low), float(high)


def compute_metrics(
    names: Sequence[str],
    golds: Sequence[str],
    predictions: Sequence[str | None],
    labels: Sequence[str],
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, MetricValue]:
    """Every metric in ``names`` with its CI, from per-example golds and predictions."""
    gold, pred = encode(golds, labels), encode(predictions, labels)
    out = {}
    for name in names:
        fn = METRICS[name]
        low, high = bootstrap_ci(fn, gold, pred, len(labels), n_resamples=n_resamples, level=level, seed=seed)
        out[name] = MetricValue(fn(gold, pred, len(labels)), low, high, level)
    return out
