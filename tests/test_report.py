"""`taskfit report` on made-up run folders: the verdicts, the statistics behind them, and what it refuses."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from taskfit.cli import main
from taskfit.compare import compare_runs
from taskfit.errors import UserError
from taskfit.metrics.registry import compute_metrics
from taskfit.report import stats
from taskfit.report.analysis import pair_p
from taskfit.report.collect import collect
from taskfit.report.render import build, leaderboard, to_html, to_markdown

LABELS = [{"value": "negative", "verbalizer": "negative", "aliases": []},
          {"value": "positive", "verbalizer": "positive", "aliases": []}]


def make_run(folder: Path, correct, *, strategy="zero_shot", strategy_args=None, unparsed=0, cached=0,
             inputs=None, task="toy", adapter=None, train_s=None, eval_s=10.0, predictions=None, pool=None) -> Path:
    """A finished run folder as taskfit eval writes it: samples.jsonl, results.json (metrics recomputed from the
    samples), run.json."""
    folder.mkdir(parents=True)
    n = len(correct)
    inputs = inputs or [f"review number {i}" for i in range(n)]
    samples = []
    for i, ok in enumerate(correct):
        gold = "positive" if i % 2 else "negative"
        other = "negative" if gold == "positive" else "positive"
        parsed = i >= unparsed
        prediction = (predictions[i] if predictions else (gold if ok else other)) if parsed else None
        samples.append({"index": i, "input": {"text": inputs[i]}, "prompt": "p", "response": "r",
                        "prediction": prediction, "gold": gold, "parse_ok": parsed,
                        "correct": bool(ok) and parsed})
    (folder / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples), encoding="utf-8")
    metrics = compute_metrics(["accuracy", "macro_f1"], samples, ["negative", "positive"], n_resamples=200)
    cost = {"generated_tokens": 0, "input_tokens_computed": 50 * n, "requests_computed": 2 * n - cached,
            "requests_cached": cached, "rows_resumed": 0, "eval_s_this_session": eval_s, "peak_rss_mib": 900.0}
    if adapter is not None:
        card_dir = folder.parent / f"{folder.name}-adapter"
        card_dir.mkdir()
        (card_dir / "run_card.json").write_text(json.dumps({"method": "lora", "loss_history": [
            {"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0}]}))
        cost["training"] = {"run_card": str(card_dir / "run_card.json"), "train_s": train_s,
                            "trainable_parameters": 1000, "labelled_examples": 500, "steps": 2}
    results = {
        "config": {"task": task, "strategy": strategy, "strategy_args": strategy_args or {}, "mode": "loglikelihood",
                   "model": "smollm2-135m-instruct", "backend": "hf", "seed": 1234, "split": "dev",
                   "adapter": str(adapter) if adapter else None, "quantize": "none", "pool_split": None},
        "task": {"name": task, "type": "classification", "labels": LABELS, "metrics": ["accuracy", "macro_f1"],
                 "eval_split": "dev", "pool_split": "train"},
        "metrics": {k: v.as_dict() for k, v in metrics.items()},
        "counts": {"n": n, "parse_failures": unparsed, "parse_failure_rate": unparsed / n},
        "timings": {"eval_s": eval_s}, "cost": cost, "versions": {"taskfit": "0.1.0"}, "git_hash": "abc",
        "created": "2026-11-30T00:00:00+00:00", "pool": pool,
    }
    (folder / "results.json").write_text(json.dumps(results), encoding="utf-8")
    (folder / "run.json").write_text(json.dumps({"fingerprint": "f" * 64}))
    return folder


def pattern(n: int, accuracy: float, seed: int) -> list[bool]:
    rng = np.random.default_rng(seed)
    right = np.zeros(n, dtype=bool)
    right[rng.choice(n, int(round(accuracy * n)), replace=False)] = True
    return right.tolist()


def test_holm_matches_the_step_down_definition():
    assert stats.holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert stats.holm([0.6, 0.6]) == [1.0, 1.0]


def test_pareto_front_of_a_hand_made_set():
    # (cost, quality): B dominates D (cheaper and better); C is dearest but best; A cheapest
    points = [(1.0, 0.70), (2.0, 0.80), (9.0, 0.90), (3.0, 0.75), (2.0, 0.80)]
    assert stats.pareto_front(points) == [0, 1, 4, 2]
    assert stats.pareto_front([(1.0, 0.5), (2.0, 0.4)], higher_is_better=False) == [0, 1]
    assert stats.pareto_front([(1.0, 0.5), (2.0, 0.6)], higher_is_better=False) == [0]


def test_tie_letters_group_runs_without_significant_pairs():
    significant = {("a", "c"), ("c", "a"), ("a", "d"), ("d", "a"), ("b", "d"), ("d", "b")}
    letters = stats.tie_letters(["a", "b", "c", "d"], lambda x, y: (x, y) in significant)
    assert letters == {"a": "a", "b": "ab", "c": "bc", "d": "c"}


def test_break_even_and_min_detectable():
    assert stats.break_even(100.0, 0.01, 0.11) == pytest.approx(1000.0)
    assert stats.break_even(100.0, 0.2, 0.1) is None
    assert stats.min_detectable(0.01) == pytest.approx(0.028, abs=1e-3)


def test_clear_winner_beats_everyone(tmp_path):
    n = 300
    make_run(tmp_path / "zero", pattern(n, 0.55, 1))
    make_run(tmp_path / "knn", pattern(n, 0.60, 2), strategy="few_shot", strategy_args={"k": 4})
    make_run(tmp_path / "lora", pattern(n, 0.95, 3), adapter=tmp_path / "ad", train_s=300.0, eval_s=5.0)
    report = build([tmp_path], volume=10_000, n_resamples=500)
    (task,) = report.tasks
    assert task.best.label == "zero_shot lora (ad)"
    assert [m.label for m in task.tier] == [task.best.label]
    assert "beats each of the other 2 methods" in task.headline[0]
    assert task.baseline.label == "zero_shot" and not task.baseline.cost.tuned
    volume = [line for line in task.headline if line.startswith("At 10,000 predictions")]
    # lora: 300 s + 10,000 x 5/300 s; the best prompted method (knn) 10,000 x 10/300 s; break-even 300 / (1/60)
    assert "costs 467 s (300 s training + inference) against 333 s" in volume[0]
    assert "after 18,000 predictions" in volume[0]
    assert any("Single training seed" in c for c in task.caveats)


def test_identical_runs_cannot_be_told_apart(tmp_path):
    right = pattern(200, 0.7, 5)
    make_run(tmp_path / "a", right)
    make_run(tmp_path / "b", right, strategy="cot")
    (task,) = build([tmp_path], n_resamples=300).tasks
    assert pair_p(task.versus(task.methods[0], task.methods[1])) == 1.0
    assert len(task.tier) == 2
    assert "cannot be told apart" in task.headline[0] and "p = 1" in task.headline[0]
    assert "cannot detect differences under" in task.headline[0]
    assert task.min_detectable > 0.05  # 200 rows at 70%: about 0.13 from the two CIs


def test_close_methods_form_a_top_tier_and_name_the_cheapest(tmp_path):
    n = 200
    base = pattern(n, 0.80, 7)
    close = list(base)
    for i in [j for j, ok in enumerate(close) if not ok][:3]:
        close[i] = True  # three more right: not significant on 200 rows
    make_run(tmp_path / "slow", close, strategy="cot", eval_s=50.0)
    make_run(tmp_path / "fast", base, eval_s=5.0)
    make_run(tmp_path / "bad", pattern(n, 0.5, 8), strategy="carp")
    (task,) = build([tmp_path], n_resamples=300).tasks
    assert {m.label for m in task.tier} == {"cot", "zero_shot"}
    assert task.headline[0].startswith("Top tier on toy (200 rows): cot, zero_shot.")
    assert task.headline[0].endswith("the other method is significantly behind it.")
    assert "The cheapest member of the tier is zero_shot: 25.0 s per 1,000 predictions against 250.0 s" \
        in " ".join(task.headline)
    assert task.letters["cot"] == task.letters["zero_shot"] != task.letters["carp"]


def test_parse_failures_and_cache_are_flagged(tmp_path):
    n = 100
    make_run(tmp_path / "zero", pattern(n, 0.5, 9))
    make_run(tmp_path / "json", [True] * n, strategy="cot", unparsed=20)  # the winner, with 20% unparsed
    make_run(tmp_path / "cached", pattern(n, 0.5, 10), strategy="carp", cached=40)
    (task,) = build([tmp_path], n_resamples=200).tasks
    assert task.best.label == "cot"
    assert any(c.startswith("cot: 20.0% of its answers did not parse") for c in task.caveats)
    cached = next(m for m in task.methods if m.label == "carp")
    assert cached.cost.seconds_per_1k is None
    assert "40 of 200 answers read from the response cache" in cached.cost.excluded
    assert any(c.startswith("carp: 40 of 200 answers") for c in task.caveats)
    row = next(r for r in leaderboard(task) if r[1] == "carp")
    assert row[6] == "cached"


def test_mismatched_example_sets_are_refused(tmp_path):
    make_run(tmp_path / "a", pattern(50, 0.5, 1))
    make_run(tmp_path / "b", pattern(50, 0.5, 2), inputs=[f"another review {i}" for i in range(50)])
    with pytest.raises(UserError, match="evaluated different examples of task toy"):
        collect([tmp_path / "a", tmp_path / "b"])
    assert main(["report", str(tmp_path / "a"), str(tmp_path / "b")]) == 2


def test_numbers_equal_results_json_and_compare_results(tmp_path):
    a = make_run(tmp_path / "zero", pattern(150, 0.6, 11))
    b = make_run(tmp_path / "knn", pattern(150, 0.7, 12), strategy="few_shot", strategy_args={"k": 2})
    (task,) = build([a, b], n_resamples=2000).tasks
    compared = compare_runs(a, b, n_resamples=2000, seed=0)["comparisons"][0]
    pair = task.versus(task.baseline, next(m for m in task.methods if m is not task.baseline))
    for key in ("a", "b", "diff", "ci_low", "ci_high", "p_mcnemar", "p_permutation"):
        assert getattr(pair, key) == pytest.approx(compared[key])
    for m in task.methods:
        recorded = json.loads((m.run.folder / "results.json").read_text())["metrics"]["accuracy"]["value"]
        assert task.value(m)["value"] == recorded
        assert math.isclose(recorded, sum(r["correct"] for r in m.samples) / m.n)
    markdown = to_markdown(build([a, b], n_resamples=2000))
    assert f"{compared['diff']:+.4f} [{compared['ci_low']:+.4f}, {compared['ci_high']:+.4f}]" in markdown


def test_html_escapes_model_and_data_text_and_is_self_contained(tmp_path):
    n = 40
    evil = "<script>alert(1)</script>"
    inputs = [f"{evil} 电影很好看 {i}" for i in range(n)]
    make_run(tmp_path / "a", pattern(n, 0.5, 1), inputs=inputs)
    make_run(tmp_path / "b", pattern(n, 0.9, 2), inputs=inputs, strategy="cot",
             predictions=[evil] * n)
    page = to_html(build([tmp_path], n_resamples=200))
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "电影很好看" in page
    assert "http://" not in page.replace("http://www.w3.org/", "") and "https://" not in page
    assert "Content-Security-Policy" in page


def test_report_cli_writes_both_files(tmp_path, capsys):
    make_run(tmp_path / "runs" / "zero", pattern(60, 0.5, 1))
    make_run(tmp_path / "runs" / "cot", pattern(60, 0.9, 2), strategy="cot")
    html_path, md_path = tmp_path / "out" / "report.html", tmp_path / "out" / "report.md"
    assert main(["report", str(tmp_path / "runs"), "--html", str(html_path), "--md", str(md_path),
                 "--bootstrap-samples", "200"]) == 0
    assert html_path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert "| group | method" in md_path.read_text(encoding="utf-8")
    assert "toy: cot beats" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "runs"), "--baseline", "nonesuch"]) == 2


def test_tier_headline_delta_column_and_letters_read_one_family_of_tests(tmp_path):
    """Issue 36 item 10: with the best, the baseline and all pairs Holm-corrected as three families, a small run
    could say "significantly behind" in the headline and give the same group letter in the table. Here few-shot
    differs from the best on 11 rows (10 to 1, McNemar p = 0.012): significant over the 3 comparisons with the best
    (x3), not over the 6 pairs (x6). Every statement now reads the all-pairs family."""
    best = [i < 40 for i in range(50)]
    runs = {"zero_shot": best,
            "few_shot": [(ok and i >= 10) or i == 40 for i, ok in enumerate(best)],
            "cot": [(ok and i not in (10, 11)) or i == 41 for i, ok in enumerate(best)],
            "carp": [(ok and i not in (12, 13)) or i == 42 for i, ok in enumerate(best)]}
    for strategy, correct in runs.items():
        make_run(tmp_path / strategy, correct, strategy=strategy)
    (task,) = build([tmp_path], n_resamples=200).tasks
    assert task.best.label == task.baseline.label == "zero_shot"
    others = [m for m in task.methods if m is not task.best]
    versus_best_alone = dict(zip([m.label for m in others],
                                 stats.holm([pair_p(task.versus(task.best, m)) for m in others])))
    assert versus_best_alone["few_shot"] < stats.ALPHA <= task.p_all[("zero_shot", "few_shot")]  # the old split
    for m in others:
        assert task.p_best[m.label] == task.p_baseline[m.label] == task.p_all[("zero_shot", m.label)]
    assert {m.label for m in task.tier} == set(runs)  # nothing is behind in the family the letters use
    assert all("a" in task.letters[name] for name in runs)
    assert "no method is significantly behind it" in " ".join(task.headline)
    row = next(r for r in leaderboard(task) if "few_shot" in str(r[1]))
    assert fmt_p_text(task.p_baseline["few_shot"]) in [str(c) for c in row]


def fmt_p_text(p):
    from taskfit.report.analysis import fmt_p

    return fmt_p(p)


def test_the_caveat_on_demonstrations_from_the_evaluated_split_reads_what_the_run_recorded(tmp_path):
    make_run(tmp_path / "zero", pattern(100, 0.6, 1))
    make_run(tmp_path / "knn", pattern(100, 0.7, 2), strategy="few_shot", strategy_args={"k": 4},
             pool={"split": "dev", "rows": 100, "evaluated_split": True})
    make_run(tmp_path / "ape", pattern(100, 0.65, 3), strategy="ape",
             pool={"split": "train", "rows": 500, "evaluated_split": False})
    (task,) = build([tmp_path], n_resamples=200).tasks
    chosen = [c for c in task.caveats if "chosen from the evaluated split" in c]
    assert chosen == ["few_shot(k=4): demonstrations / instructions were chosen from the evaluated split (dev), so its "
                      "score is optimistic."]
