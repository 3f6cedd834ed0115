import numpy as np
import pytest

from taskfit.metrics.classification import accuracy, bootstrap_ci, compute_metrics, encode, macro_f1


def test_accuracy_and_macro_f1_known_values():
    labels = ["neg", "pos"]
    gold = ["pos", "pos", "pos", "neg", "neg", "neg"]
    pred = ["pos", "pos", "neg", "neg", "pos", None]
    res = compute_metrics(["accuracy", "macro_f1"], gold, pred, labels, n_resamples=0)
    assert res["accuracy"].value == pytest.approx(3 / 6)
    # pos: tp=2 fp=1 fn=1 -> F1 2/3;  neg: tp=1 fp=1 fn=2 (one unparsed) -> P 1/2 R 1/3 F1 0.4
    assert res["macro_f1"].value == pytest.approx((2 / 3 + 0.4) / 2)
    assert res["accuracy"].ci_low is None and res["accuracy"].ci_high is None


def test_unparsed_is_wrong_but_not_a_false_positive():
    gold = encode(["a", "b"], ["a", "b"])
    pred = encode([None, "b"], ["a", "b"])
    assert list(pred) == [-1, 1]
    assert accuracy(gold, pred, 2) == 0.5
    # class a: recall 0, precision undefined -> F1 0; class b: perfect -> F1 1
    assert macro_f1(gold, pred, 2) == pytest.approx(0.5)


def test_bootstrap_ci_is_seeded_and_brackets_the_value():
    rng = np.random.default_rng(3)
    gold = rng.integers(0, 2, 200)
    pred = np.where(rng.random(200) < 0.8, gold, 1 - gold)
    first = bootstrap_ci(accuracy, gold, pred, 2, n_resamples=300, seed=7)
    again = bootstrap_ci(accuracy, gold, pred, 2, n_resamples=300, seed=7)
    other = bootstrap_ci(accuracy, gold, pred, 2, n_resamples=300, seed=8)
    assert first == again
    assert first != other
    value = accuracy(gold, pred, 2)
    assert first[0] < value < first[1]
    # normal approximation of a proportion: half-width about 1.96*sqrt(p(1-p)/n) = 0.055
    assert 0.03 < (first[1] - first[0]) / 2 < 0.08


def test_ci_of_a_perfect_classifier_is_degenerate_not_nan():
    gold = np.array([0, 1, 0, 1])
    low, high = bootstrap_ci(accuracy, gold, gold.copy(), 2, n_resamples=50, seed=0)
    assert low == high == 1.0
