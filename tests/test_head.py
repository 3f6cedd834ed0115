"""The specialist baseline: the packaged MiniLM encoder + a head, trained on a task's train split and evaluated by
the same harness (samples.jsonl fields, metrics with CIs) as every prompting run. Tasks and rows are made up here."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from taskfit.errors import UserError
from taskfit.evaluation import evaluate
from taskfit.settings import RunConfig
from taskfit.tuning import TuneConfig, tune

GOOD = ["great", "wonderful", "loved", "delightful", "superb", "charming"]
BAD = ["awful", "boring", "hated", "dreadful", "tedious", "clumsy"]
THINGS = ["the film", "this movie", "the plot", "the acting", "the ending", "the soundtrack"]


def _write_task(folder, name: str, body: str, splits: dict[str, list[dict]]) -> str:
    for split, rows in splits.items():
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    files = ", ".join(f"{split}: {split}.jsonl" for split in splits)
    path = folder / f"{name}.yaml"
    path.write_text(f"name: {name}\ndataset: {name}\ndata_files: {{{files}}}\neval_split: test\npool_split: train\n"
                    + body)
    return str(path)


def _sentiment_rows(rng: random.Random, n: int) -> list[dict]:
    rows = []
    for i in range(n):
        positive = i % 2 == 0
        word = rng.choice(GOOD if positive else BAD)
        rows.append({"text": f"{rng.choice(THINGS)} was {word}", "label": "positive" if positive else "negative"})
    return rows


@pytest.fixture
def sentiment_task(tmp_path):
    rng = random.Random(0)
    body = ("type: classification\nfields: {text: text}\ntarget: label\nlabels:\n"
            "  - {value: negative, verbalizer: negative}\n  - {value: positive, verbalizer: positive}\n"
            "prompt:\n  instruction: Classify the sentiment.\n  input_template: '{text}'\n"
            "metrics: [accuracy, macro_f1]\n")
    return _write_task(tmp_path, "toy_sentiment", body, {"train": _sentiment_rows(rng, 64),
                                                          "test": _sentiment_rows(rng, 24)})


def _head_config(task, out, **overrides) -> TuneConfig:
    base = {"method": "head", "task": task, "output": out, "batch_size": 8, "epochs": 3, "lr": 1e-4,
            "logging_steps": 2, "progress": False, "threads": 1, "warmup_ratio": 0.0}
    return TuneConfig(**(base | overrides))


def test_head_learns_a_classification_task_and_reports_like_any_run(tmp_path, sentiment_task):
    card = tune(_head_config(sentiment_task, tmp_path / "head")).card
    assert card["method"] == "head" and card["steps"] == 24 and card["final_loss"] < card["first_loss"]
    for name in ("head_config.json", "head.safetensors", "encoder/config.json", "loss.png", "RUN_CARD.md"):
        assert (tmp_path / "head" / name).is_file(), name
    res = evaluate(RunConfig(task=sentiment_task, model=f"head:{tmp_path / 'head'}", output=tmp_path / "eval",
                             bootstrap_samples=200), progress=False)
    accuracy = res["metrics"]["accuracy"]
    assert accuracy["value"] >= 0.9 and accuracy["ci_low"] <= accuracy["value"] <= accuracy["ci_high"]
    assert res["model"]["backend"] == "head" and res["counts"]["n"] == 24
    records = [json.loads(line) for line in (tmp_path / "eval" / "samples.jsonl").read_text().splitlines()]
    assert len(records) == 24 and all(r["parse_ok"] for r in records)
    for record in records:
        assert record["correct"] == (record["prediction"] == record["gold"])
        assert sum(record["probs"].values()) == pytest.approx(1.0, abs=1e-5)
        assert record["prediction"] == max(record["probs"], key=record["probs"].get)
    # a head run resumes like any run: cut after 10 records and a partial line, the rerun completes it
    samples = (tmp_path / "eval" / "samples.jsonl").read_text()
    lines = samples.splitlines(keepends=True)
    (tmp_path / "eval" / "samples.jsonl").write_text("".join(lines[:10]) + lines[10][:20])
    (tmp_path / "eval" / "results.json").unlink()
    resumed = evaluate(RunConfig(task=sentiment_task, model=f"head:{tmp_path / 'head'}", output=tmp_path / "eval",
                                 bootstrap_samples=200), progress=False)
    assert resumed["timings"]["resumed_after"] == 10 and resumed["counts"] == res["counts"]
    again = [json.loads(line) for line in (tmp_path / "eval" / "samples.jsonl").read_text().splitlines()]
    assert [r["prediction"] for r in again] == [r["prediction"] for r in records]


def test_head_regression_on_sentence_pairs(tmp_path):
    rng = random.Random(1)
    words = GOOD + BAD + ["cat", "dog", "river", "table", "lamp", "storm", "piano", "garden"]

    def pair():
        first = rng.sample(words, 6)
        shared = rng.randint(0, 6)
        second = first[:shared] + rng.sample([w for w in words if w not in first], 6 - shared)
        return {"s1": " ".join(first), "s2": " ".join(second), "score": round(5 * shared / 6, 3)}

    body = ("type: regression\nscore_range: [0, 5]\nfields: {sentence1: s1, sentence2: s2}\ntarget: score\n"
            "prompt:\n  instruction: Rate the similarity.\n  input_template: '{sentence1} / {sentence2}'\n"
            "metrics: [spearman, pearson]\n")
    task = _write_task(tmp_path, "toy_sts", body, {"train": [pair() for _ in range(96)],
                                                    "test": [pair() for _ in range(32)]})
    tune(_head_config(task, tmp_path / "head", epochs=4, lr=2e-4))
    res = evaluate(RunConfig(task=task, model=f"head:{tmp_path / 'head'}", output=tmp_path / "eval",
                             bootstrap_samples=100), progress=False)
    assert res["metrics"]["spearman"]["value"] > 0.5
    records = [json.loads(line) for line in (tmp_path / "eval" / "samples.jsonl").read_text().splitlines()]
    assert all(0 <= r["prediction"] <= 5 and r["score"] == r["prediction"] for r in records)
    assert " || " in records[0]["prompt"]  # a sentence pair went in as two segments


def test_head_refuses_what_it_cannot_do(tmp_path, sentiment_task):
    with pytest.raises(UserError, match="classification or regression"):
        tune(_head_config("gsm8k", tmp_path / "x", data_dir=tmp_path))
    with pytest.raises(UserError, match="--train-file"):
        tune(TuneConfig(method="head", train_file=tmp_path / "t.jsonl", output=tmp_path / "y"))
    tune(_head_config(sentiment_task, tmp_path / "head", max_steps=1))
    with pytest.raises(UserError, match="needs a language model"):
        evaluate(RunConfig(task=sentiment_task, model=f"head:{tmp_path / 'head'}", strategy="few_shot",
                           output=tmp_path / "e1"), progress=False)
    other = Path(sentiment_task).read_text().replace("value: negative", "value: bad").replace("value: positive",
                                                                                               "value: good")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "other.yaml").write_text(other.replace("name: toy_sentiment", "name: other"))
    (tmp_path / "other" / "test.jsonl").write_text(json.dumps({"text": "fine", "label": "good"}) + "\n")
    with pytest.raises(UserError, match="predicts the labels"):
        evaluate(RunConfig(task=str(tmp_path / "other" / "other.yaml"), model=f"head:{tmp_path / 'head'}",
                           output=tmp_path / "e2"), progress=False)
    with pytest.raises(UserError, match="no head_config.json"):
        evaluate(RunConfig(task=sentiment_task, model=f"head:{tmp_path}", output=tmp_path / "e3"), progress=False)
