import json

import numpy as np
import pytest

from taskfit.cli import main
from taskfit.metrics.paired import mcnemar, paired_compare


def test_mcnemar_known_value():
    # 10 discordant pairs, all in favour of B: p = 2 * 0.5**10
    a = [False] * 10 + [True] * 5
    b = [True] * 10 + [True] * 5
    p, b_only, a_only = mcnemar(a, b)
    assert (b_only, a_only) == (10, 0)
    assert p == pytest.approx(2 * 0.5**10)
    assert mcnemar([True, False], [True, False])[0] == 1.0


def test_paired_bootstrap_detects_a_real_difference_and_not_a_fake_one():
    rng = np.random.default_rng(0)
    gold = list(rng.choice(["x", "y"], 300))
    a = [g if rng.random() < 0.6 else ("y" if g == "x" else "x") for g in gold]
    b = [g if rng.random() < 0.9 else ("y" if g == "x" else "x") for g in gold]
    def recs(pred):
        return [{"gold": g, "prediction": p, "correct": g == p} for g, p in zip(gold, pred)]

    better = {r.metric: r for r in paired_compare(["accuracy", "macro_f1"], recs(a), recs(b), ["x", "y"],
                                                  n_resamples=300)}
    assert better["accuracy"].diff > 0.2 and better["accuracy"].ci_low > 0
    assert better["accuracy"].p_bootstrap < 0.01 and better["accuracy"].p_mcnemar < 1e-6
    same = paired_compare(["accuracy"], recs(a), recs(list(a)), ["x", "y"], n_resamples=200)[0]
    assert same.diff == 0 and same.p_bootstrap == 1.0 and same.p_mcnemar == 1.0


def write_run(folder, preds, golds, task="mini"):
    folder.mkdir()
    results = {"config": {"task": task, "strategy": "zero_shot", "mode": "loglikelihood", "strategy_args": {}},
               "task": {"name": task, "labels": [{"value": "neg"}, {"value": "pos"}], "metrics": ["accuracy"]}}
    (folder / "results.json").write_text(json.dumps(results))
    lines = [json.dumps({"index": i, "input": {"text": str(i)}, "gold": g, "prediction": p, "correct": g == p})
             for i, (g, p) in enumerate(zip(golds, preds))]
    (folder / "samples.jsonl").write_text("\n".join(lines) + "\n")


def test_compare_results_cli(tmp_path, capsys):
    golds = ["pos", "neg"] * 20
    write_run(tmp_path / "a", ["pos"] * 40, golds)
    write_run(tmp_path / "b", golds, golds)
    assert main(["compare-results", str(tmp_path / "a"), str(tmp_path / "b" / "results.json"),
                 "--bootstrap-samples", "200"]) == 0
    out = capsys.readouterr().out
    assert "n = 40 paired examples" in out
    row = next(line for line in out.splitlines() if line.startswith("| accuracy"))
    assert "+0.5000" in row and "(20/0)" in row


def test_compare_results_refuses_different_examples(tmp_path, capsys):
    write_run(tmp_path / "a", ["pos", "neg"], ["pos", "neg"])
    write_run(tmp_path / "b", ["pos", "neg"], ["neg", "neg"])
    assert main(["compare-results", str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    assert "differs between the runs" in capsys.readouterr().err


def test_compare_results_on_overlapping_sets_refuses_unless_asked_to_intersect(tmp_path, capsys):
    """Issue 16 defect 6: runs of 40 and 30 examples used to be compared silently on the 30 shared ones."""
    golds = ["pos", "neg"] * 20
    write_run(tmp_path / "a", ["pos"] * 40, golds)
    write_run(tmp_path / "b", golds[:30], golds[:30])
    assert main(["compare-results", str(tmp_path / "a"), str(tmp_path / "b"), "--bootstrap-samples", "100"]) == 2
    err = capsys.readouterr().err
    assert "10 only in A, 0 only in B, 30 in both" in err and "--intersect" in err and "Traceback" not in err
    assert main(["compare-results", str(tmp_path / "a"), str(tmp_path / "b"), "--bootstrap-samples", "100",
                 "--intersect"]) == 0
    assert "n = 30 paired examples (10 only in A and 0 only in B left out: --intersect)" in capsys.readouterr().out


def test_permutation_p_value_agrees_with_exact_mcnemar_on_accuracy():
    """For accuracy the paired permutation test is the exact sign test on the discordant examples: 10 examples only
    B gets right, 0 only A -> p = 2 * 0.5**10 ~ 0.00195; 6 vs 4 -> p ~ 0.754."""
    def recs(correct):
        return [{"gold": "x", "prediction": "x" if c else "y", "correct": c} for c in correct]

    a, b = [False] * 10 + [True] * 30, [True] * 40
    result = paired_compare(["accuracy"], recs(a), recs(b), ["x", "y"], n_resamples=20000, seed=1)[0]
    assert abs(result.p_permutation - result.p_mcnemar) < 0.0015
    a, b = [False] * 6 + [True] * 4 + [True] * 30, [True] * 6 + [False] * 4 + [True] * 30
    result = paired_compare(["accuracy"], recs(a), recs(b), ["x", "y"], n_resamples=20000, seed=1)[0]
    assert result.p_mcnemar == pytest.approx(0.7539, abs=1e-3)
    assert abs(result.p_permutation - result.p_mcnemar) < 0.02


def test_permutation_p_value_for_macro_f1_sees_a_real_difference_and_none_in_a_copy():
    rng = np.random.default_rng(3)
    gold = list(rng.choice(["x", "y"], 200))
    def flip(g, keep):
        return g if rng.random() < keep else ("y" if g == "x" else "x")
    recs = lambda preds: [{"gold": g, "prediction": p, "correct": g == p} for g, p in zip(gold, preds)]  # noqa: E731
    weak, strong = [flip(g, 0.6) for g in gold], [flip(g, 0.9) for g in gold]
    better = paired_compare(["macro_f1"], recs(weak), recs(strong), ["x", "y"], n_resamples=500)[0]
    assert better.p_permutation < 0.01
    same = paired_compare(["macro_f1"], recs(weak), recs(list(weak)), ["x", "y"], n_resamples=500)[0]
    assert same.p_permutation == 1.0
