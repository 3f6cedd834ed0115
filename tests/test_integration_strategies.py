"""Every strategy once on the real embedded model and real SST-2 rows (a few rows, small budgets)."""

import json

import pytest

from taskfit.evaluation import evaluate
from taskfit.settings import RunConfig

pytestmark = pytest.mark.slow

CASES = [
    ("few_shot", "loglikelihood", {"selector": "random", "k": 2, "pool_limit": 200}),
    ("few_shot", "generate", {"selector": "knn", "k": 2, "pool_limit": 200}),
    ("zero_shot", "generate", {"answer_format": "json"}),
    ("cot", "loglikelihood", {"max_reasoning_tokens": 24}),
    ("self_consistency", "loglikelihood", {"n": 3, "max_reasoning_tokens": 16}),
    ("carp", "loglikelihood", {"k": 0, "max_reasoning_tokens": 24}),
    ("carp", "generate", {"k": 2, "pool_limit": 30, "max_reasoning_tokens": 16}),
    ("ape", "loglikelihood", {"m": 2, "score_n": 4, "n_pairs": 3}),
]


@pytest.mark.parametrize(("strategy", "mode", "args"), CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_strategy_on_embedded_model(strategy, mode, args, embedded_backend, shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("TASKFIT_HOME", str(tmp_path / "home"))  # CARP/kNN caches start empty
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = RunConfig(task="sst2", strategy=strategy, mode=mode, strategy_args=args, data_dir=shared_data,
                       split="dev", limit=2, output=tmp_path / "run", bootstrap_samples=0)
    results = evaluate(config, backend=embedded_backend, progress=False)
    samples = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 2 and results["counts"]["n"] == 2
    assert results["counts"]["parse_failures"] == sum(not s["parse_ok"] for s in samples)
    assert results["metrics"]["accuracy"]["value"] == sum(s["correct"] for s in samples) / 2
    for s in samples:
        assert s["prompt"].startswith("<|im_start|>system\nYou are a sentiment classifier.")
        assert s["correct"] == (s["prediction"] == s["gold"])
    if strategy in ("cot", "carp"):
        assert all(s["rationale"] for s in samples)
    if strategy == "self_consistency":
        assert all(len(s["path_answers"]) == 3 for s in samples)
    if strategy == "few_shot":
        assert all(len(s["demos"]) == 2 for s in samples)
    if strategy == "ape":
        assert results["strategy_info"]["ape"]["best_instruction"]
