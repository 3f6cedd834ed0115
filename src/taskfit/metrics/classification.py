"""Classification metrics on label strings (scikit-learn).

A prediction that failed to parse is a class outside the label set: it counts as wrong for accuracy and
lowers the recall of the gold class for macro-F1 without adding a false positive to any class.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import f1_score


def macro_f1_values(gold: np.ndarray, pred: np.ndarray, labels: Sequence[str]) -> float:
    """Unweighted mean of per-class F1 over ``labels`` (a class never predicted nor gold scores 0)."""
    return float(f1_score(list(gold), list(pred), labels=list(labels), average="macro", zero_division=0))


def macro_f1_resampled(gold: np.ndarray, pred: np.ndarray, indices: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """:func:`macro_f1_values` on every resample (rows of ``indices``) at once, from confusion counts.

    Per class F1 = 2·tp / (2·tp + fp + fn), 0 where the class is neither predicted nor gold: the same numbers
    as scikit-learn with ``zero_division=0`` (tested), without a Python-level call per resample.
    """
    k = len(labels)
    position = {label: i for i, label in enumerate(labels)}
    g = np.array([position.get(x, k) for x in gold], dtype=np.int64)[indices]
    p = np.array([position.get(x, k) for x in pred], dtype=np.int64)[indices]  # outside the labels -> k
    resamples, width = len(indices), k + 1
    flat = (np.arange(resamples)[:, None] * width * width + g * width + p).ravel()
    confusion = np.bincount(flat, minlength=resamples * width * width).reshape(resamples, width, width)
    classes = np.arange(k)
    tp = confusion[:, classes, classes]
    predicted = confusion[:, :, :k].sum(axis=1)  # tp + fp per class
    actual = confusion[:, :k, :].sum(axis=2)  # tp + fn per class
    denominator = predicted + actual
    f1 = np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)
    return f1.mean(axis=1)
