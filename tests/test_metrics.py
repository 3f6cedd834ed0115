import numpy as np
import pytest

from taskfit.metrics.registry import METRICS, compute_metrics, metric_value


def records(gold, pred):
    return [{"gold": g, "prediction": p, "correct": p == g} for g, p in zip(gold, pred)]


def test_accuracy_and_macro_f1_known_values():
    labels = ["neg", "pos"]
    gold = ["pos", "pos", "pos", "neg", "neg", "neg"]
    pred = ["pos", "pos", "neg", "neg", "pos", None]
    res = compute_metrics(["accuracy", "macro_f1"], records(gold, pred), labels, n_resamples=0)
    assert res["accuracy"].value == pytest.approx(3 / 6)
    # pos: tp=2 fp=1 fn=1 -> F1 2/3;  neg: tp=1 fp=1 fn=2 (one unparsed) -> P 1/2 R 1/3 F1 0.4
    assert res["macro_f1"].value == pytest.approx((2 / 3 + 0.4) / 2)
    assert res["accuracy"].ci_low is None and res["accuracy"].ci_high is None


def test_unparsed_is_wrong_but_not_a_false_positive():
    recs = records(["a", "b"], [None, "b"])
    assert metric_value("accuracy", recs) == 0.5
    # class a: recall 0, precision undefined -> F1 0; class b: perfect -> F1 1
    assert metric_value("macro_f1", recs, ["a", "b"]) == pytest.approx(0.5)


def test_bootstrap_ci_is_seeded_and_brackets_the_value():
    rng = np.random.default_rng(3)
    gold = rng.integers(0, 2, 200)
    pred = np.where(rng.random(200) < 0.8, gold, 1 - gold)
    recs = records([str(g) for g in gold], [str(p) for p in pred])
    first = compute_metrics(["accuracy"], recs, n_resamples=300, seed=7)["accuracy"]
    again = compute_metrics(["accuracy"], recs, n_resamples=300, seed=7)["accuracy"]
    other = compute_metrics(["accuracy"], recs, n_resamples=300, seed=8)["accuracy"]
    assert (first.ci_low, first.ci_high) == (again.ci_low, again.ci_high)
    assert (first.ci_low, first.ci_high) != (other.ci_low, other.ci_high)
    assert first.ci_low < first.value < first.ci_high
    # normal approximation of a proportion: half-width about 1.96*sqrt(p(1-p)/n) = 0.055
    assert 0.03 < (first.ci_high - first.ci_low) / 2 < 0.08


def test_vectorized_and_looped_bootstrap_agree():
    """The mean fast path and the per-resample path draw the same indices, so they give the same CI."""
    rng = np.random.default_rng(0)
    recs = [{"correct": bool(c), "f1": float(c)} for c in rng.random(100) < 0.6]
    fast = compute_metrics(["accuracy"], recs, n_resamples=200, seed=3)["accuracy"]
    slow_metric = METRICS["accuracy"].__class__("acc_loop", "", METRICS["accuracy"].columns,
                                                lambda x: float(np.mean(x)), mean=False)
    METRICS["acc_loop"] = slow_metric
    try:
        slow = compute_metrics(["acc_loop"], recs, n_resamples=200, seed=3)["acc_loop"]
    finally:
        del METRICS["acc_loop"]
    assert (fast.ci_low, fast.ci_high) == pytest.approx((slow.ci_low, slow.ci_high))


def test_ci_of_a_perfect_classifier_is_degenerate_not_nan():
    res = compute_metrics(["accuracy"], records(["a", "b", "a", "b"], ["a", "b", "a", "b"]), n_resamples=50)
    assert res["accuracy"].ci_low == res["accuracy"].ci_high == 1.0


def test_correlation_metrics_from_records():
    gold = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    score = [0.5, 0.7, 2.5, 2.4, 4.9, 5.0]
    recs = [{"gold": g, "score": s} for g, s in zip(gold, score)]
    # one swapped pair among six ranks: rho = 1 - 6*2/(6*35) = 0.942857...
    assert metric_value("spearman", recs) == pytest.approx(1 - 12 / 210)
    res = compute_metrics(["pearson", "spearman"], recs, n_resamples=100, seed=0)
    assert -1 <= res["pearson"].ci_low <= res["pearson"].value <= res["pearson"].ci_high <= 1


def test_mean_metrics_read_their_columns_and_refuse_missing_ones():
    recs = [{"em": 1.0, "f1": 1.0, "rr": 1.0, "ap": 1.0, "rouge_l": 0.5, "mc2": 0.2},
            {"em": 0.0, "f1": 0.5, "rr": 0.5, "ap": 0.5, "rouge_l": 0.0, "mc2": 0.6}]
    assert metric_value("exact_match", recs) == 0.5
    assert metric_value("f1", recs) == 0.75
    assert metric_value("mrr", recs) == 0.75 and metric_value("map", recs) == 0.75
    assert metric_value("rouge_l", recs) == 0.25 and metric_value("mc2", recs) == pytest.approx(0.4)
    with pytest.raises(ValueError, match="'correct'"):
        metric_value("accuracy", recs)


def test_bleu_from_records_matches_sacrebleu():
    import sacrebleu

    recs = [{"prediction": "武汉大学出版社", "gold": "武汉大学出版社"}, {"prediction": None, "gold": "杨可桢"}]
    expected = sacrebleu.corpus_bleu(["武汉大学出版社", ""], [["武汉大学出版社", "杨可桢"]], tokenize="zh").score
    assert metric_value("bleu", recs) == pytest.approx(expected)


def test_resampled_bleu_equals_sacrebleu_on_every_resample():
    from taskfit.metrics.registry import METRICS, resample_indices, resampled_values
    from taskfit.metrics.text import corpus_bleu

    rng = np.random.default_rng(3)
    words = ["武汉", "大学", "出版社", "北京", "中国", "首都", "杨可桢", "电路"]
    gold = np.array(["".join(rng.choice(words, rng.integers(1, 5))) for _ in range(30)], dtype=object)
    pred = np.array([g if r < 0.4 else "" if r < 0.5 else "".join(rng.choice(words, rng.integers(1, 4)))
                     for g, r in zip(gold, rng.random(30))], dtype=object)
    indices = resample_indices(30, 25, seed=1)
    fast = resampled_values(METRICS["bleu"], (pred, gold), indices, [])
    slow = [corpus_bleu(list(pred[idx]), list(gold[idx])) for idx in indices]
    assert np.allclose(fast, slow, atol=1e-9) and len(set(np.round(fast, 6))) > 5  # resamples really differ


def test_resampled_macro_f1_equals_scikit_learn_on_every_resample():
    from taskfit.metrics.classification import macro_f1_resampled, macro_f1_values
    from taskfit.metrics.registry import UNPARSED, resample_indices

    rng = np.random.default_rng(5)
    labels = ["a", "b", "c", "d"]
    gold = np.array(rng.choice(labels[:3], 40), dtype=object)  # class d is never gold
    pred = np.array([UNPARSED if r < 0.1 else rng.choice(labels) for r in rng.random(40)], dtype=object)
    indices = resample_indices(40, 200, seed=1)
    fast = macro_f1_resampled(gold, pred, indices, labels)
    slow = [macro_f1_values(gold[idx], pred[idx], labels) for idx in indices]
    assert fast == pytest.approx(slow, abs=1e-12)
