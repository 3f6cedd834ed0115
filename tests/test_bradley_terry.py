"""Bradley–Terry with ties (Davidson) on made-up votes whose true strengths are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from taskfit.metrics.bradley_terry import BASE, ELO, leaderboard, votes_needed
from taskfit.metrics.paired import sign_test

NAMES = ["w", "x", "y", "z"]


def simulate(theta, nu, n, rng, names=NAMES):
    """``n`` votes between random pairs drawn from Davidson's model with log-strengths ``theta``, tie parameter ν."""
    votes = []
    for _ in range(n):
        i, j = rng.choice(len(theta), 2, replace=False)
        pi, pj = math.exp(theta[i]), math.exp(theta[j])
        tie = nu * math.sqrt(pi * pj)
        outcome = rng.choice(3, p=np.array([pi, pj, tie]) / (pi + pj + tie))
        votes.append((names[i], names[j], ("a", "b", "tie")[outcome]))
    return votes


def test_the_fit_recovers_the_order_and_the_tie_rate_of_known_strengths():
    theta, nu = np.array([1.0, 0.3, -0.2, -1.1]), 0.5
    board = leaderboard(simulate(theta, nu, 3000, np.random.default_rng(0)), resamples=200)
    assert [s.name for s in board.standings] == ["w", "x", "y", "z"]
    truth = BASE + ELO * (theta - theta.mean())
    for standing in board.standings:
        assert abs(standing.rating - truth[NAMES.index(standing.name)]) < 40  # ~2.5 standard errors at 3000 votes
    assert abs(board.tie_parameter - nu) < 0.08
    assert sum(s.votes for s in board.standings) == 2 * 3000
    best = board.pairs[[(p.a, p.b) for p in board.pairs].index(("w", "z"))]
    assert best.significant and best.sign_p < 1e-6 and best.a_wins > best.b_wins


def test_the_bootstrap_interval_covers_the_true_rating_about_95_percent_of_the_time():
    theta, nu = np.array([0.6, 0.1, -0.2, -0.5]), 0.4
    truth = BASE + ELO * (theta - theta.mean())
    rng = np.random.default_rng(7)
    covered, total = 0, 0
    for sim in range(120):
        board = leaderboard(simulate(theta, nu, 400, rng), resamples=300, seed=sim)
        for s in board.standings:
            covered += s.low <= truth[NAMES.index(s.name)] <= s.high
            total += 1
    assert 0.90 <= covered / total <= 0.985, covered / total


def test_ties_and_both_ways_of_writing_a_pair_count_the_same():
    votes = [("a", "b", "a"), ("b", "a", "b"), ("a", "b", "tie"), ("b", "a", "tie"), ("b", "a", "a")]
    board = leaderboard(votes, resamples=50)
    (pair,) = board.pairs
    assert (pair.a, pair.b, pair.a_wins, pair.b_wins, pair.ties) == ("a", "b", 2, 1, 2)
    mirrored = leaderboard([(b, a, {"a": "b", "b": "a", "tie": "tie"}[o]) for a, b, o in votes], resamples=50)
    assert [round(s.rating, 6) for s in mirrored.standings] == [round(s.rating, 6) for s in board.standings]
    assert board.standings[0].win_rate == pytest.approx((2 + 1) / 5)


def test_a_contestant_that_won_every_vote_gets_a_finite_rating_and_unvoted_names_are_listed():
    board = leaderboard([("a", "b", "a")] * 6, resamples=100, names=["c"])
    ratings = {s.name: s.rating for s in board.standings}
    assert math.isfinite(ratings["a"]) and ratings["a"] > ratings["b"]
    assert ratings["c"] == pytest.approx(BASE, abs=ratings["a"] - BASE)  # between the two, no votes of its own
    assert next(s for s in board.standings if s.name == "c").votes == 0


def test_bad_votes_are_refused():
    with pytest.raises(ValueError, match="outcome"):
        leaderboard([("a", "b", "left")])
    with pytest.raises(ValueError, match="itself"):
        leaderboard([("a", "a", "a")])
    with pytest.raises(ValueError, match="two contestants"):
        leaderboard([], names=["a"])


def test_sign_test_and_votes_needed_match_their_closed_forms():
    assert sign_test(0, 0) == 1.0
    assert sign_test(5, 0) == pytest.approx(2 / 32)
    assert sign_test(9, 1) == pytest.approx(2 * 11 / 1024)
    assert sign_test(3, 3) == 1.0
    needed = [votes_needed(w) for w in (0.55, 0.6, 0.7)]
    assert needed == sorted(needed, reverse=True)
    assert 190 <= votes_needed(0.6) <= 200  # ((1.96 * 0.5 + 0.8416 * sqrt(0.24)) / 0.1)^2 = 193.5
    with pytest.raises(ValueError):
        votes_needed(0.5)


def test_one_vote_is_no_evidence_and_many_consistent_votes_are():
    (one,) = leaderboard([("x", "y", "a")], resamples=200).pairs
    assert not one.significant and one.low < 0 < one.high  # every resample is the same vote: not a narrow CI
    (many,) = leaderboard([("x", "y", "a")] * 30 + [("x", "y", "b")] * 12, resamples=200).pairs
    assert many.significant and many.sign_p < 0.01
