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
