"""Is strategy A really better than B? Paired tests on the same examples.

- Paired bootstrap (Koehn 2004; Berg-Kirkpatrick et al. 2012): resample example indices, recompute each
  metric for A and B on the same resample, and report the CI of the difference. ``p_bootstrap`` is the
  *bootstrap sign share*: twice the share of resamples whose difference falls on the other side of zero. It is
  a rough two-sided estimate, not a test with a null distribution; use ``p_permutation`` for decisions.
- Paired permutation test (approximate randomization, Noreen 1989; recommended for NLP comparisons by Dror et
  al. 2018): under "A and B are exchangeable" each example's two outputs may swap sides; the p-value is the share
  of random swaps whose |B - A| is at least the observed one, (count + 1) / (resamples + 1). Valid for any
  metric, including F1 and correlations that are not means over examples.
- McNemar's exact test for accuracy: only the examples where exactly one run is right carry information;
  under "no difference" they split 50/50 (scipy's exact binomial test).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

from taskfit.metrics.registry import METRICS, metric_fn, resample_indices, resampled_values


@dataclass(frozen=True)
class PairedResult:
    metric: str
    a: float
    b: float
    diff: float  # b - a
    ci_low: float
    ci_high: float
    p_bootstrap: float  # bootstrap sign share (see the module docstring)
    se_diff: float = 0.0  # standard error of b - a over the paired bootstrap resamples
    p_permutation: float | None = None
    p_mcnemar: float | None = None
    b_only_right: int | None = None
    a_only_right: int | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def sign_test(wins: int, losses: int) -> float:
    """Exact two-sided binomial test of wins vs losses at 1/2."""
    n = wins + losses
    if n == 0:
        return 1.0
    k = min(wins, losses)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0**n
    return min(1.0, 2.0 * tail)


def mcnemar(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> tuple[float, int, int]:
    """Exact McNemar p-value, and the two discordant counts (only B right, only A right)."""
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    b_only, a_only = int(np.sum(b & ~a)), int(np.sum(a & ~b))
    if b_only + a_only == 0:
        return 1.0, b_only, a_only
    return float(stats.binomtest(b_only, b_only + a_only, 0.5).pvalue), b_only, a_only


def paired_compare(
    metrics: Sequence[str],
    records_a: Sequence[Mapping[str, Any]],
    records_b: Sequence[Mapping[str, Any]],
    labels: Sequence[str] = (),
    *,
    n_resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> list[PairedResult]:
    """Paired bootstrap of B - A for every metric (+ McNemar where samples have ``correct``), on the same
    examples in the same order."""
    indices = resample_indices(len(records_a), n_resamples, seed)
    out = []
    for name in metrics:
        metric = METRICS[name]
        arrays_a, arrays_b = metric.columns(records_a, labels), metric.columns(records_b, labels)
        fn = metric_fn(metric, labels)
        a, b = fn(*arrays_a), fn(*arrays_b)
        diffs = (resampled_values(metric, arrays_b, indices, labels)
                 - resampled_values(metric, arrays_a, indices, labels))
        low, high = np.quantile(diffs, [(1 - level) / 2, 1 - (1 - level) / 2])
        # two-sided: how often the resampled difference falls on the other side of zero
        p = min(1.0, 2 * min(np.mean(diffs <= 0), np.mean(diffs >= 0)))
        extra: dict[str, Any] = {"p_permutation": permutation_p(metric, arrays_a, arrays_b, float(b - a), labels,
                                                                n_resamples, seed)}
        if name == "accuracy":
            p_m, b_only, a_only = mcnemar([bool(r["correct"]) for r in records_a],
                                          [bool(r["correct"]) for r in records_b])
            extra |= {"p_mcnemar": p_m, "b_only_right": b_only, "a_only_right": a_only}
        out.append(PairedResult(name, float(a), float(b), float(b - a), float(low), float(high), float(p),
                                float(np.std(diffs)), **extra))
    return out


def permutation_p(metric, arrays_a: tuple[np.ndarray, ...], arrays_b: tuple[np.ndarray, ...], observed: float,
                  labels: Sequence[str], n_resamples: int, seed: int) -> float:
    """Two-sided paired permutation p-value of ``observed`` = metric(B) - metric(A): each resample swaps every
    example's A and B outputs with probability 1/2 (rows of the stacked table [A; B])."""
    n = len(arrays_a[0])
    if n == 0 or n_resamples == 0:
        return 1.0
    stacked = tuple(np.concatenate([a, b]) for a, b in zip(arrays_a, arrays_b))
    swap = np.random.default_rng([seed, 0x5E]).random((n_resamples, n)) < 0.5
    rows = np.arange(n)[None, :]
    side_a, side_b = np.where(swap, rows + n, rows), np.where(swap, rows, rows + n)
    diffs = resampled_values(metric, stacked, side_b, labels) - resampled_values(metric, stacked, side_a, labels)
    extreme = np.sum(np.abs(diffs) >= abs(observed) - 1e-12)
    return float((extreme + 1) / (n_resamples + 1))
