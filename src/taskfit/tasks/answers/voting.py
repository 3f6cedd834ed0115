"""Aggregating several answers to one: majority vote and probability-weighted vote (self-consistency).

Ties are broken deterministically: first by the summed sequence probability of the tied answers' paths,
then by the order of ``preference`` (the task's label order), then alphabetically.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Vote:
    """The winning answer and the full distribution of votes (answers that failed to parse are left out)."""

    winner: str | None
    distribution: dict[str, float]
    valid: int


def _path_weights(logprobs: Sequence[float | None]) -> list[float]:
    """Each path's probability, normalized over the paths (softmax of sequence log-probabilities)."""
    known = [lp for lp in logprobs if lp is not None]
    if not known:
        return [1.0] * len(logprobs)
    top = max(known)
    raw = [math.exp(lp - top) if lp is not None else 0.0 for lp in logprobs]
    total = sum(raw) or 1.0
    return [w / total for w in raw]


def vote(answers: Sequence[str | None], logprobs: Sequence[float | None] | None = None, rule: str = "majority",
         preference: Sequence[str] = ()) -> Vote:
    """Combine ``answers`` (one per path, ``None`` = unparsed) by ``majority`` or ``weighted`` vote."""
    if rule not in ("majority", "weighted"):
        raise ValueError(f"unknown voting rule {rule!r}; use majority or weighted")
    weights = _path_weights(logprobs if logprobs is not None else [None] * len(answers))
    counts: dict[str, float] = {}
    mass: dict[str, float] = {}
    for answer, weight in zip(answers, weights):
        if answer is None:
            continue
        counts[answer] = counts.get(answer, 0.0) + (1.0 if rule == "majority" else weight)
        mass[answer] = mass.get(answer, 0.0) + weight
    if not counts:
        return Vote(None, {}, 0)
    rank = {label: i for i, label in enumerate(preference)}
    winner = min(counts, key=lambda a: (-counts[a], -mass[a], rank.get(a, len(rank)), a))
    return Vote(winner, dict(sorted(counts.items())), sum(a is not None for a in answers))
