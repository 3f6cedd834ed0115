"""The report's arithmetic, on plain numbers: multiple-comparison correction, tie groups, the Pareto frontier,
the smallest difference a test set can detect, and break-even volume.

- Holm's step-down procedure (Holm 1979) controls the family-wise error rate without assuming independence:
  sort the m p-values, multiply the i-th smallest by (m - i + 1), keep the running maximum, cap at 1.
- Tie-group letters follow the compact letter display of multiple-comparison tables (Piepho 2004), restricted to
  ranges in rank order: methods share a letter when no pair among them differs significantly.
- Minimum detectable difference of a paired test at two-sided level α with power 1 - β:
  (z_{1-α/2} + z_{1-β}) × SE of the paired difference (Cohen 1988, the normal approximation).
"""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence

from scipy import stats

ALPHA = 0.05
POWER = 0.8


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values, in the input order."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def tie_letters(ranked: Sequence[str], differs: Callable[[str, str], bool]) -> dict[str, str]:
    """Letters for methods in rank order (best first): each maximal run of consecutive methods with no
    significant difference among any of its pairs gets one letter; a method's letters are those of its runs."""
    letters: dict[str, str] = {name: "" for name in ranked}
    covered_until = -1
    alphabet = iter(string.ascii_lowercase + string.ascii_uppercase)
    for start in range(len(ranked)):
        end = start
        while end + 1 < len(ranked) and not any(differs(ranked[i], ranked[end + 1]) for i in range(start, end + 1)):
            end += 1
        if end <= covered_until:
            continue  # this run lies inside an earlier one
        letter = next(alphabet, "*")
        for name in ranked[start:end + 1]:
            letters[name] += letter
        covered_until = end
    return letters


def pareto_front(points: Sequence[tuple[float, float]], higher_is_better: bool = True) -> list[int]:
    """Indices of the (cost, quality) points no other point dominates (cheaper or equal and at least as good,
    strictly better in one), sorted by cost."""
    sign = 1.0 if higher_is_better else -1.0
    front = []
    for i, (cost, quality) in enumerate(points):
        dominated = any(
            c <= cost and sign * q >= sign * quality and (c < cost or sign * q > sign * quality)
            for j, (c, q) in enumerate(points) if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], -sign * points[i][1]))


def min_detectable(se_diff: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest true paired difference a two-sided test at ``alpha`` finds with probability ``power``."""
    return float((stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)) * se_diff)


def se_from_ci(low: float | None, high: float | None, level: float = 0.95) -> float:
    """A standard error read back from a symmetric-enough percentile CI."""
    if low is None or high is None:
        return 0.0
    return float((high - low) / (2 * stats.norm.ppf(1 - (1 - level) / 2)))


def break_even(train_s: float, per_prediction_tuned_s: float, per_prediction_prompted_s: float) -> float | None:
    """Predictions after which a tuned method (training paid once) costs less than a prompted one; ``None`` when
    the tuned one is not faster per prediction (it never catches up)."""
    saving = per_prediction_prompted_s - per_prediction_tuned_s
    if saving <= 0:
        return None
    return train_s / saving
