"""Strategy mechanics on a tiny random model (fast): demos, rendering, seeding, voting, JSON failures."""

import json

import pytest

from taskfit.errors import UserError
from taskfit.evaluation import evaluate
from taskfit.models.hf import HFBackend
from taskfit.settings import RunConfig

TASK = """
name: mini
dataset: mini
eval_split: dev
pool_split: train
fields: {text: text}
rationale: why
labels:
  - {value: negative}
  - {value: positive}
prompt:
  system: You are a sentiment classifier.
  instruction: Classify the sentiment.
  input_template: "Review: {text}"
  answer_prefix: The sentiment is
generation: {max_tokens: 6, stop: ["\\n"]}
"""
WORDS = ["great movie", "terrible film", "the movie was great", "a terrible negative film", "positive and great",
         "negative and terrible", "great great", "terrible terrible"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("strategies")
    (root / "data" / "mini").mkdir(parents=True)
    for split, n in (("train", 8), ("dev", 4)):
        rows = [{"text": f"{WORDS[i % 8]} {split}{i}", "label": "positive" if i % 2 == 0 else "negative",
                 "why": f"because of word {i}"} for i in range(n)]
        (root / "data" / "mini" / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "mini.yaml").write_text(TASK)
    return root, HFBackend(tiny_model_dir, batch_size=8, threads=1)


def run(setup, name, strategy, mode="loglikelihood", **args):
    root, backend = setup
    config = RunConfig(task=str(root / "mini.yaml"), data_dir=root / "data", strategy=strategy, mode=mode,
                       strategy_args=args, output=root / name, bootstrap_samples=0)
    results = evaluate(config, backend=backend, progress=False)
    samples = [json.loads(line) for line in (root / name / "samples.jsonl").read_text().splitlines()]
    return results, samples


def test_few_shot_multi_turn_demos(setup):
    _, samples = run(setup, "fs", "few_shot", selector="random", k=3)
    for s in samples:
        assert len(s["demos"]) == 3
        assert s["prompt"].count("<|im_start|>assistant") == 4  # three demo answers + the query's
        assert s["prompt"].count("The sentiment is") == 4


def test_few_shot_single_prompt_and_fixed(setup):
    root, _ = setup
    train = [json.loads(line) for line in (root / "data" / "mini" / "train.jsonl").read_text().splitlines()]
    _, samples = run(setup, "fs1", "few_shot", selector="fixed", indices=[2, 5], demo_style="single_prompt", k=2)
    for s in samples:
        assert s["demos"] == [2, 5]
        assert s["prompt"].count("<|im_start|>assistant") == 1
        assert "Here are some examples:" in s["prompt"]
        assert train[2]["text"] in s["prompt"] and train[5]["text"] in s["prompt"]


def test_self_consistency_is_reproducible_and_records_votes(setup):
    root, _ = setup
    _, first = run(setup, "sc1", "self_consistency", mode="generate", n=3, max_reasoning_tokens=8, temperature=1.0)
    _, second = run(setup, "sc2", "self_consistency", mode="generate", n=3, max_reasoning_tokens=8,
                    temperature=1.0)
    # the same paths, answers and votes; the second run's prompts continue KV the first run left in the backend's
    # stores, so the log-probabilities may differ in the last float digits
    logprobs = [[lp for s in run_ for lp in s.pop("path_logprobs")] for run_ in (first, second)]
    assert first == second
    assert logprobs[0] == pytest.approx(logprobs[1], abs=1e-4)
    for s in first:
        assert len(s["seeds"]) == len(set(s["seeds"])) == 3
        assert len(s["rationales"]) == 3 and len(s["path_answers"]) == 3
        assert sum(s["votes"].values()) == sum(a is not None for a in s["path_answers"])
    assert len({r for s in first for r in s["rationales"]}) > 1  # paths really differ


@pytest.mark.parametrize("prefill", [True, False])
def test_json_answers_count_failures(setup, prefill):
    results, samples = run(setup, f"json{prefill}", "zero_shot", mode="generate", answer_format="json",
                           json_prefill=prefill)
    assert 'Reply with JSON only, in the form {"label": "<label>"}' in samples[0]["prompt"]
    # prefill: the reply is opened for the model, which writes only the label
    assert samples[0]["prompt"].endswith('{"label": "') == prefill
    failures = [s for s in samples if not s["parse_ok"]]
    assert results["counts"]["parse_failures"] == len(failures)
    assert all(s["prediction"] is None and not s["correct"] and s["parse_error"] for s in failures)


def test_json_loglikelihood_scores_inside_the_object(setup):
    _, samples = run(setup, "jsonll", "zero_shot", answer_format="json")
    assert samples[0]["prompt"].endswith('{"label": "')


def test_few_shot_cot_uses_rationales(setup):
    _, samples = run(setup, "cot", "cot", k=2, max_reasoning_tokens=4)
    for s in samples:
        assert "Let's think step by step. because of word" in s["prompt"]
        assert s["prompt"].rstrip().endswith("Therefore, the answer is")
        assert "rationale" in s


def test_bad_strategy_option_names_key(setup):
    with pytest.raises(UserError, match=r"unknown key 'kay'.*k,"):
        run(setup, "bad", "few_shot", kay=3)


def test_carp_annotations_are_cached(setup, tmp_path, monkeypatch):
    monkeypatch.setenv("TASKFIT_HOME", str(tmp_path))
    first, samples = run(setup, "carp1", "carp", k=2, selector="random", max_reasoning_tokens=4)
    second, _ = run(setup, "carp2", "carp", k=2, selector="random", max_reasoning_tokens=4)
    assert first["strategy_info"]["carp_annotations"]["generated"] > 0
    assert second["strategy_info"]["carp_annotations"]["generated"] == 0
    assert samples[0]["prompt"].count("<|im_start|>assistant\nCLUES:") == 3  # two demos and the query


def test_ape_reports_candidates_and_best(setup):
    results, samples = run(setup, "ape", "ape", m=2, n_pairs=2, score_n=4, max_instruction_tokens=6)
    ape = results["strategy_info"]["ape"]
    assert ape["candidates"][0]["instruction"] == "Classify the sentiment."
    assert ape["best_instruction"] in [c["instruction"] for c in ape["candidates"]]
    assert all(s["instruction"] == ape["best_instruction"] for s in samples)
    assert ape["best_instruction"] in samples[0]["prompt"]


def test_few_shot_cot_without_rationales_says_what_to_do(setup, tmp_path):
    root, backend = setup
    task = tmp_path / "norat.yaml"
    task.write_text(TASK.replace("rationale: why\n", ""))
    config = RunConfig(task=str(task), data_dir=root / "data", strategy="cot", strategy_args={"k": 2},
                       output=tmp_path / "run", bootstrap_samples=0)
    with pytest.raises(UserError, match="needs rationales.*--pool-split demos"):
        evaluate(config, backend=backend, progress=False)


def test_contextual_calibration_divides_out_the_content_free_prior(setup):
    import math

    _, plain = run(setup, "fsplain", "few_shot", selector="fixed", indices=[0, 1], k=2)
    _, calibrated = run(setup, "fscal", "few_shot", selector="fixed", indices=[0, 1], k=2, calibrate=True)
    for p, c in zip(plain, calibrated):
        assert p["response"] == pytest.approx(c["response"])  # same prompt, same raw scores
        free = c["content_free_probs"]
        expected = {k: math.log(c["probs"][k]) - math.log(free[k]) for k in free}
        assert c["calibrated_scores"] == pytest.approx(expected)
        assert c["prediction"] == max(expected, key=expected.get)
