"""Every built-in benchmark task end to end on a tiny random model (fast), in each mode it supports, and
every number in results.json recomputed from samples.jsonl alone."""

import json

import pytest

from taskfit.errors import UserError
from taskfit.evaluation import evaluate
from taskfit.metrics.registry import compute_metrics
from taskfit.models.hf import HFBackend
from taskfit.settings import RunConfig
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


@pytest.mark.parametrize(("task", "split", "strategy", "mode", "args"), [
    ("gsm8k", "train", "self_consistency", "generate", {"n": 3, "max_reasoning_tokens": 6}),
    ("stsb", "dev", "self_consistency", "loglikelihood", {"n": 2, "max_reasoning_tokens": 4}),
    ("stsb", "dev", "carp", "loglikelihood", {"max_reasoning_tokens": 4}),
    ("truthfulqa_mc1", "dev", "cot", "generate", {"max_reasoning_tokens": 4, "answer_format": "json"}),
    ("squad", "dev", "ape", "generate", {"m": 2, "n_pairs": 2, "score_n": 2, "max_instruction_tokens": 6}),
    ("nlpcc_kbqa", "train", "few_shot", "loglikelihood", {"k": 1, "selector": "random"}),
])
def test_every_strategy_runs_on_other_task_types(task, split, strategy, mode, args, tiny_backend, shared_data,
                                                 tmp_path):
    pool = "dev" if task in ("squad", "truthfulqa_mc1") else None
    config = RunConfig(task=task, data_dir=shared_data, split=split, strategy=strategy, mode=mode, limit=3,
                       strategy_args=args, pool_split=pool, max_tokens=4, output=tmp_path, bootstrap_samples=0)
    results = evaluate(config, backend=tiny_backend, progress=False)
    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(samples) == 3 and set(results["metrics"]) == set(results["task"]["metrics"])
    if strategy == "self_consistency":
        for s in samples:
            assert len(s["path_answers"]) == args["n"]
            valid = [a for a in s["path_answers"] if a is not None]
            if task == "stsb":  # regression paths are averaged, not voted
                assert s["prediction"] == pytest.approx(sum(valid) / len(valid))
            elif valid:
                assert s["prediction"] in valid
    if strategy == "ape":
        assert results["strategy_info"]["ape"]["metric"] == "exact_match"


def test_gsm8k_few_shot_cot_demos_use_cleaned_worked_solutions(tiny_backend, shared_data, tmp_path):
    config = RunConfig(task="gsm8k", data_dir=shared_data, split="train", strategy="cot", mode="generate", limit=2,
                       strategy_args={"k": 1, "selector": "fixed", "indices": [0], "max_reasoning_tokens": 4},
                       pool_split="train", max_tokens=4, output=tmp_path, bootstrap_samples=0)
    evaluate(config, backend=tiny_backend, progress=False)
    prompt = json.loads((tmp_path / "samples.jsonl").read_text(encoding="utf-8").splitlines()[1])["prompt"]
    assert "Natalia sold 48/2 = 24 clips in May." in prompt  # calculator notes <<48/2=24>> removed
    assert "<<" not in prompt and "####" not in prompt
    assert "Therefore, the answer is 72" in prompt


def test_paired_comparison_of_regression_runs(tmp_path):
    from taskfit.metrics.paired import paired_compare

    gold = [float(i % 6) for i in range(60)]
    good = [{"gold": g, "score": g + 0.3 * ((i * 7) % 3 - 1)} for i, g in enumerate(gold)]
    bad = [{"gold": g, "score": float((i * 5) % 6)} for i, g in enumerate(gold)]
    (result,) = paired_compare(["spearman"], bad, good, n_resamples=300)
    assert result.diff > 0.5 and result.ci_low > 0 and result.p_bootstrap < 0.01
    assert result.p_mcnemar is None
