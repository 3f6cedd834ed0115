"""The real embedded model on real SST-2 dev rows, both answer modes, checking the files' contents."""

import json

import pytest

from taskfit.evaluation import evaluate
from taskfit.metrics import compute_metrics
from taskfit.settings import RunConfig

pytestmark = pytest.mark.slow
N = 40


@pytest.fixture(scope="module")
def dev_rows(shared_data):
    lines = (shared_data / "sst2" / "dev.jsonl").read_text(encoding="utf-8").splitlines()[:N]
    return [json.loads(line) for line in lines]


@pytest.mark.parametrize("mode", ["loglikelihood", "generate"])
def test_sst2_40_rows(mode, embedded_backend, shared_data, dev_rows, tmp_path):
    config = RunConfig(task="sst2", mode=mode, data_dir=shared_data, split="dev", limit=N, output=tmp_path,
                       bootstrap_samples=200)
    results = evaluate(config, backend=embedded_backend, progress=False)
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["metrics"] == results["metrics"]
    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text(encoding="utf-8").splitlines()]

    # one line per example, in data order, each with the exact prompt sent
    assert len(samples) == N
    assert [s["index"] for s in samples] == list(range(N))
    for sample, row in zip(samples, dev_rows):
        assert sample["gold"] == row["label"]
        assert sample["input"]["text"] == row["text"]
        assert row["text"] in sample["prompt"]
        assert sample["prompt"].startswith("<|im_start|>system")  # chat template applied
        assert sample["prompt"].endswith("The sentiment of the review is")
        assert sample["correct"] == (sample["prediction"] == sample["gold"])
        if mode == "loglikelihood":
            assert set(sample["response"]) == {"negative", "positive"}
            assert sample["prediction"] == max(sample["response"], key=sample["response"].get)
            assert sample["parse_ok"] is True
        else:
            assert isinstance(sample["response"], str)
            assert sample["parse_ok"] == (sample["prediction"] is not None)

    # metrics and counts in results.json are exactly what the samples give
    recomputed = compute_metrics(["accuracy", "macro_f1"], samples, ["negative", "positive"],
                                 n_resamples=200, seed=config.seed)
    for name, value in recomputed.items():
        assert on_disk["metrics"][name] == pytest.approx(value.as_dict())
    assert on_disk["counts"]["n"] == N
    assert on_disk["counts"]["correct"] == sum(s["correct"] for s in samples)
    assert on_disk["counts"]["parse_failures"] == sum(not s["parse_ok"] for s in samples)
    assert on_disk["config"]["mode"] == mode and on_disk["config"]["task"] == "sst2"
    assert on_disk["model"]["model"] == "smollm2-135m-instruct" and on_disk["model"]["parameters"] > 100_000_000
    assert {"torch", "transformers", "python"} <= set(on_disk["versions"])
    assert on_disk["timings"]["eval_s"] > 0
    # a 135M model with a decent prompt does better than chance on easy SST-2 rows
    assert on_disk["metrics"]["accuracy"]["value"] > 0.6


def test_loglikelihood_run_is_reproducible(embedded_backend, shared_data, tmp_path):
    outputs = []
    for name in ("a", "b"):
        config = RunConfig(task="sst2", data_dir=shared_data, split="dev", limit=8, output=tmp_path / name,
                           bootstrap_samples=50)
        evaluate(config, backend=embedded_backend, progress=False)
        outputs.append((tmp_path / name / "samples.jsonl").read_text())
    assert outputs[0] == outputs[1]
