"""Every built-in benchmark task end to end on a tiny random model (fast), in each mode it supports, and
every number in results.json recomputed from samples.jsonl alone."""

import json

import pytest

from taskfit.config import RunConfig
from taskfit.errors import UserError
from taskfit.evaluate import evaluate
from taskfit.metrics.registry import compute_metrics
from taskfit.models.hf import HFBackend
from taskfit.tasks import list_tasks, load_task

# (task, split in ../shared/data, mode, strategy args)
CASES = [
    ("sst2", "dev", "loglikelihood", {}),
    ("ag_news", "dev", "generate", {}),
    ("stsb", "dev", "loglikelihood", {}),
    ("sts12", "train", "generate", {"answer_format": "json"}),
    ("truthfulqa_mc1", "dev", "loglikelihood", {}),
    ("truthfulqa_mc1", "dev", "generate", {"answer_format": "json"}),
    ("truthfulqa_mc2", "dev", "loglikelihood", {}),
    ("squad", "dev", "generate", {}),
    ("gsm8k", "train", "generate", {}),
    ("nlpcc_kbqa", "train", "loglikelihood", {}),
    ("nlpcc_kbqa", "train", "generate", {}),
]


@pytest.fixture(scope="module")
def tiny_backend(tiny_model_dir):
    return HFBackend(tiny_model_dir, batch_size=8, threads=1)


@pytest.mark.parametrize(("task", "split", "mode", "args"), CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_results_recompute_from_samples(task, split, mode, args, tiny_backend, shared_data, tmp_path):
    config = RunConfig(task=task, data_dir=shared_data, split=split, mode=mode, limit=6, strategy_args=args,
                       max_tokens=6, output=tmp_path, bootstrap_samples=50)
    results = evaluate(config, backend=tiny_backend, progress=False)
    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [s["index"] for s in samples] == list(range(6))
    labels = [label["value"] for label in results["task"]["labels"]]
    recomputed = compute_metrics(results["task"]["metrics"], samples, labels, n_resamples=50, seed=config.seed)
    assert set(results["metrics"]) == set(results["task"]["metrics"]) == set(recomputed)
    for name, value in recomputed.items():
        assert results["metrics"][name] == pytest.approx(value.as_dict(), nan_ok=True), name
    assert results["counts"]["parse_failures"] == sum(not s["parse_ok"] for s in samples)
    if "correct" in results["counts"]:
        assert results["counts"]["correct"] == sum(s["correct"] for s in samples)
    if mode == "generate":
        assert all(isinstance(s["response"], str) for s in samples)
        assert all(s["parse_ok"] == (s["prediction"] is not None) for s in samples)


def test_truthfulqa_choices_are_shuffled_and_recorded(tiny_backend, shared_data, tmp_path):
    config = RunConfig(task="truthfulqa_mc1", data_dir=shared_data, limit=20, output=tmp_path, bootstrap_samples=0)
    evaluate(config, backend=tiny_backend, progress=False)
    rows = [json.loads(line) for line in (shared_data / "truthfulqa_mc" / "dev.jsonl").open(encoding="utf-8")][:20]
    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text(encoding="utf-8").splitlines()]
    for row, sample in zip(rows, samples):
        assert sorted(sample["choices"]) == sorted(row["choices"])
        assert sample["choices"][sample["gold"][0]] == row["choices"][row["label"]]
        scores = sample["response"]  # one log-probability per choice, in the shown order
        assert len(scores) == len(sample["choices"])
        assert sample["prediction"] == max(range(len(scores)), key=scores.__getitem__)
    assert len({s["gold"][0] for s in samples}) > 2


def test_kbqa_knowledge_base_is_the_whole_split(tiny_backend, shared_data, tmp_path):
    config = RunConfig(task="nlpcc_kbqa", data_dir=shared_data, split="train", limit=4, output=tmp_path,
                       bootstrap_samples=0)
    results = evaluate(config, backend=tiny_backend, progress=False)
    assert results["knowledge_base"]["triples"] > 10_000  # not just the 4 evaluated rows
    sample = json.loads((tmp_path / "samples.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert "知识：" in sample["prompt"] and len(sample["ranked"]) >= 1


@pytest.mark.parametrize(("task", "mode", "message"), [
    ("squad", "loglikelihood", "use --mode generate"),
    ("gsm8k", "loglikelihood", "use --mode generate"),
    ("truthfulqa_mc2", "generate", "use --mode loglikelihood"),
])
def test_modes_a_task_type_cannot_do_are_refused_before_loading_a_model(task, mode, message, shared_data,
                                                                         tmp_path):
    config = RunConfig(task=task, data_dir=shared_data, split="train" if task == "gsm8k" else None, mode=mode,
                       limit=2, output=tmp_path / "out")
    with pytest.raises(UserError, match=message):
        evaluate(config, backend=None, progress=False)
    assert not (tmp_path / "out").exists()


def test_missing_split_names_the_ones_that_exist(shared_data, tmp_path):
    config = RunConfig(task="r8", data_dir=shared_data, limit=2, output=tmp_path / "out")
    with pytest.raises(UserError, match=r"test.jsonl not found; splits in .*: train \(choose one with --split\)"):
        evaluate(config, backend=None, progress=False)


def test_calibration_needs_a_classification_task(tiny_backend, shared_data, tmp_path):
    config = RunConfig(task="stsb", data_dir=shared_data, limit=2, strategy="few_shot",
                       strategy_args={"k": 1, "calibrate": True}, output=tmp_path)
    with pytest.raises(UserError, match="calibrate=true .* classification"):
        evaluate(config, backend=tiny_backend, progress=False)


@pytest.mark.parametrize("name", sorted(list_tasks()))
def test_every_builtin_task_loads_its_shared_data(name, shared_data):
    task = load_task(name)
    if task.config.dataset is None or not (shared_data / task.config.dataset).is_dir():
        pytest.skip("no shared data for this task")
    split = task.config.eval_split
    if not (shared_data / task.config.dataset / f"{split}.jsonl").is_file():
        split = "train"
    examples = task.examples(split, shared_data, 50)
    assert len(examples) == 50
    for ex in examples:
        assert all(isinstance(v, str) and v for v in ex.fields.values())
        task.config.prompt.input_template.format(**ex.fields)
