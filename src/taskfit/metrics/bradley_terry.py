"""Pairwise votes → strengths: Bradley–Terry with ties (Davidson 1970), bootstrap CIs, head-to-head tests.

Davidson's model: for contestants i and j with strengths π = exp(θ) and a tie parameter ν = exp(φ),
P(i wins) = π_i / D, P(j wins) = π_j / D, P(tie) = ν √(π_i π_j) / D, D the sum of the three. Each pair's votes are a
three-way multinomial logit in x = (θ, φ), so the log-likelihood is concave; it is maximised by Newton's method with
a weak Gaussian prior (precision :data:`PRIOR`) that makes the maximum exist when a contestant won every vote or no
vote was a tie, and centres θ at 0 (the likelihood does not move when every θ shifts). Ratings are on the Elo scale:
``1000 + 400 / ln 10 × θ``, so 400 rating points are 10:1 odds.

Confidence intervals resample the votes (a multinomial draw over the observed (pair, outcome) counts, which is
resampling votes with replacement) and fit every replicate at once: one batched Newton solve. With few votes that
interval is too narrow (one vote: every resample is the same vote), so each interval is widened to cover the
posterior's normal approximation (±1.96 standard errors from the inverse negative Hessian, prior included) too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from taskfit.metrics.paired import sign_test

PRIOR = 0.1  # precision of the N(0, 1/PRIOR) prior on each log-strength and on log ν
ELO = 400.0 / math.log(10.0)
BASE = 1000.0
Z95 = 1.959963984540054
OUTCOMES = ("a", "b", "tie")


@dataclass(frozen=True)
class Standing:
    name: str
    rating: float
    low: float
    high: float
    votes: int
    wins: int
    losses: int
    ties: int

    @property
    def win_rate(self) -> float:
        """Wins plus half the ties, over the votes this contestant was in."""
        return (self.wins + 0.5 * self.ties) / self.votes if self.votes else float("nan")


@dataclass(frozen=True)
class PairResult:
    a: str
    b: str
    votes: int  # head-to-head votes, ties included
    a_wins: int
    b_wins: int
    ties: int
    difference: float  # rating a − rating b (from the whole fit, not only these votes)
    low: float
    high: float
    sign_p: float  # exact two-sided sign test on the head-to-head votes, ties left out (1.0 when there are none)

    @property
    def significant(self) -> bool:
        return self.low > 0 or self.high < 0


@dataclass(frozen=True)
class Leaderboard:
    standings: list[Standing]  # best first
    pairs: list[PairResult]
    tie_parameter: float  # ν
    votes: int
    resamples: int

    def as_dict(self) -> dict[str, Any]:
        return {"votes": self.votes, "resamples": self.resamples, "tie_parameter": self.tie_parameter,
                "standings": [{**s.__dict__, "win_rate": s.win_rate} for s in self.standings],
                "pairs": [{**p.__dict__, "significant": p.significant} for p in self.pairs],
                "votes_needed": {f"{w:.2f}": votes_needed(w) for w in (0.55, 0.6, 0.65, 0.7)}}


def _design(n_players: int, pairs: Sequence[tuple[int, int]]) -> np.ndarray:
    """[pairs, 3 outcomes, players + 1]: the logit of each outcome as a linear function of (θ, φ)."""
    design = np.zeros((len(pairs), 3, n_players + 1))
    for p, (i, j) in enumerate(pairs):
        design[p, 0, i] = 1.0
        design[p, 1, j] = 1.0
        design[p, 2, i] = design[p, 2, j] = 0.5
        design[p, 2, n_players] = 1.0
    return design


def fit_counts(counts: np.ndarray, design: np.ndarray, *, prior: float = PRIOR, iterations: int = 100) -> np.ndarray:
    """Maximum a posteriori (θ, φ) for each replicate: ``counts`` [replicates, pairs, 3] → [replicates, players + 1].

    Newton steps on the concave log-posterior, all replicates at once; a step longer than 4 in any coordinate is cut
    back (far from the optimum a full step can overshoot)."""
    counts = np.asarray(counts, dtype=float)
    x = np.zeros((counts.shape[0], design.shape[2]))
    for _ in range(iterations):
        gradient, hessian = _derivatives(counts, design, x, prior)
        step = np.linalg.solve(hessian, gradient[..., None])[..., 0]
        biggest = np.abs(step).max(axis=1, keepdims=True)
        step *= np.minimum(1.0, 4.0 / np.maximum(biggest, 1e-300))
        x += step
        if biggest.max() < 1e-10:
            break
    return x


def _derivatives(counts: np.ndarray, design: np.ndarray, x: np.ndarray,
                 prior: float) -> tuple[np.ndarray, np.ndarray]:
    """The log-posterior's gradient [replicates, dims] and negative Hessian [replicates, dims, dims] at ``x``."""
    totals = counts.sum(axis=2)
    logits = np.einsum("pod,bd->bpo", design, x)
    logits -= logits.max(axis=2, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=2, keepdims=True)
    gradient = np.einsum("pod,bpo->bd", design, counts - totals[..., None] * probs) - prior * x
    mean = np.einsum("pod,bpo->bpd", design, probs)
    hessian = (np.einsum("bp,pod,bpo,poe->bde", totals, design, probs, design)
               - np.einsum("bp,bpd,bpe->bde", totals, mean, mean) + prior * np.eye(design.shape[2]))
    return gradient, hessian


def votes_needed(win_rate: float, *, alpha: float = 0.05, power: float = 0.8) -> int:
    """Decided head-to-head votes (ties left out) a two-sided sign test at ``alpha`` needs to find a contestant that
    wins ``win_rate`` of them better, with probability ``power`` (normal approximation)."""
    from statistics import NormalDist

    if not 0.5 < win_rate < 1.0:
        raise ValueError("win_rate must be between 0.5 and 1")
    z_alpha, z_power = NormalDist().inv_cdf(1 - alpha / 2), NormalDist().inv_cdf(power)
    n = ((z_alpha * 0.5 + z_power * math.sqrt(win_rate * (1 - win_rate))) / (win_rate - 0.5)) ** 2
    return math.ceil(n)


def leaderboard(votes: Sequence[tuple[str, str, str]], *, resamples: int = 1000, seed: int = 0,
                names: Sequence[str] = ()) -> Leaderboard:
    """Standings from ``votes`` of (contestant a, contestant b, outcome "a" | "b" | "tie"), best first.

    ``names`` adds contestants that have no votes yet (shown with no rating interval worth reading)."""
    for a, b, outcome in votes:
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome {outcome!r}: expected one of {', '.join(OUTCOMES)}")
        if a == b:
            raise ValueError(f"a vote between {a!r} and itself")
    players = sorted({*names, *(v[0] for v in votes), *(v[1] for v in votes)})
    if len(players) < 2:
        raise ValueError("a leaderboard needs at least two contestants")
    index = {name: k for k, name in enumerate(players)}
    pair_index: dict[tuple[int, int], int] = {}
    cells: list[list[int]] = []
    record = {name: [0, 0, 0] for name in players}  # wins, losses, ties
    for a, b, outcome in votes:
        i, j = index[a], index[b]
        if i > j:  # store every pair once, lower index first
            i, j, outcome = j, i, {"a": "b", "b": "a", "tie": "tie"}[outcome]
        if (i, j) not in pair_index:
            pair_index[(i, j)] = len(cells)
            cells.append([0, 0, 0])
        cells[pair_index[(i, j)]][OUTCOMES.index(outcome)] += 1
        winner = {"a": (i, j), "b": (j, i)}.get(outcome)
        if winner is None:
            record[players[i]][2] += 1
            record[players[j]][2] += 1
        else:
            record[players[winner[0]]][0] += 1
            record[players[winner[1]]][1] += 1
    pairs = list(pair_index)
    n_players = len(players)
    if not pairs:  # no votes: everyone at the prior's centre
        counts = np.zeros((1, 1, 3))
        design = _design(n_players, [(0, 1)])
    else:
        counts = np.asarray(cells, dtype=float)[None]
        design = _design(n_players, pairs)
    point = fit_counts(counts, design)[0]
    flat = counts[0].ravel()
    total = int(flat.sum())
    if total and resamples:
        rng = np.random.default_rng(seed)
        drawn = rng.multinomial(total, flat / total, size=resamples).reshape(resamples, *counts.shape[1:])
        boot = fit_counts(drawn, design)
    else:
        boot = np.repeat(point[None], max(resamples, 1), axis=0)
    ratings = BASE + ELO * point[:n_players]
    boot_ratings = BASE + ELO * boot[:, :n_players]
    # the posterior's normal approximation: with few votes the bootstrap has little to resample (one vote: every
    # resample is that vote) and its interval is too narrow; the wider of the two is reported
    covariance = np.linalg.inv(_derivatives(counts, design, point[None], PRIOR)[1][0])[:n_players, :n_players]
    centre = np.eye(n_players) - 1.0 / n_players  # ratings are relative: the spread of θ − mean(θ)
    covariance = centre @ covariance @ centre
    spread = Z95 * ELO * np.sqrt(np.diag(covariance))
    low, high = np.percentile(boot_ratings, [2.5, 97.5], axis=0)
    low, high = np.minimum(low, ratings - spread), np.maximum(high, ratings + spread)
    standings = [Standing(name, float(ratings[k]), float(low[k]), float(high[k]), sum(record[name]),
                          *record[name]) for k, name in enumerate(players)]
    standings.sort(key=lambda s: -s.rating)
    results = []
    for first in range(n_players):
        for second in range(first + 1, n_players):
            cell = cells[pair_index[(first, second)]] if (first, second) in pair_index else [0, 0, 0]
            i, j = first, second
            if ratings[j] > ratings[i]:  # the stronger one first
                i, j, cell = j, i, [cell[1], cell[0], cell[2]]
            diff = boot_ratings[:, i] - boot_ratings[:, j]
            d_low, d_high = np.percentile(diff, [2.5, 97.5])
            half = Z95 * ELO * math.sqrt(max(covariance[i, i] + covariance[j, j] - 2 * covariance[i, j], 0.0))
            gap = ratings[i] - ratings[j]
            d_low, d_high = min(d_low, gap - half), max(d_high, gap + half)
            results.append(PairResult(players[i], players[j], sum(cell), cell[0], cell[1], cell[2],
                                      float(ratings[i] - ratings[j]), float(d_low), float(d_high),
                                      sign_test(cell[0], cell[1])))
    results.sort(key=lambda r: -r.votes)
    return Leaderboard(standings, results, float(math.exp(point[n_players])), total, resamples)
