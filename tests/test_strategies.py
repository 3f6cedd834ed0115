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


def run(setup, name, strategy, mode="loglikelihood", seed=1234, **args):
    root, backend = setup
    config = RunConfig(task=str(root / "mini.yaml"), data_dir=root / "data", strategy=strategy, mode=mode,
                       strategy_args=args, output=root / name, bootstrap_samples=0, seed=seed)
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


def _demo_answers(prompt):
    """The label words the demos' assistant turns show, in order (the query's own turn is left open)."""
    import re

    return re.findall(r"<\|im_start\|>assistant\nThe sentiment is (\w+)<\|im_end\|>", prompt)


def test_random_demo_labels_follow_the_seed_and_are_recorded(setup):
    root, _ = setup
    train = [json.loads(line) for line in (root / "data" / "mini" / "train.jsonl").read_text().splitlines()]

    def labels(name, seed):
        _, samples = run(setup, name, "few_shot", k=4, demo_labels="random", seed=seed)
        for s in samples:  # what the prompt shows is what the row records
            assert _demo_answers(s["prompt"]) == s["demo_labels"]
            assert [train[i]["text"] in s["prompt"] for i in s["demos"]] == [True] * 4
        return [s["demo_labels"] for s in samples], [s["demos"] for s in samples]

    first, demos = labels("rand1", 3)
    again, demos_again = labels("rand2", 3)
    other, _ = labels("rand3", 4)
    assert first == again and demos == demos_again
    assert first != other
    flat = [label for row in first for label in row]
    assert set(flat) <= {"negative", "positive"}
    gold = [train[i]["label"] for row in demos for i in row]
    assert any(a != b for a, b in zip(flat, gold)) and any(a == b for a, b in zip(flat, gold))


def test_flipped_and_missing_demo_labels(setup):
    root, _ = setup
    train = [json.loads(line) for line in (root / "data" / "mini" / "train.jsonl").read_text().splitlines()]
    _, flipped = run(setup, "flip", "few_shot", k=3, demo_labels="flipped")
    for s in flipped:
        assert s["demo_labels"] == [{"negative": "positive", "positive": "negative"}[train[i]["label"]]
                                    for i in s["demos"]]
        assert _demo_answers(s["prompt"]) == s["demo_labels"]
    _, inputs_only = run(setup, "nolab", "few_shot", k=3, demo_labels="none")
    for s in inputs_only:  # inputs only, in one prompt: no demo answers at all
        assert s["demo_labels"] is None
        assert s["prompt"].count("<|im_start|>assistant") == 1 and s["prompt"].count("The sentiment is") == 1
        assert "Here are some examples:" in s["prompt"]
        assert all(train[i]["text"] in s["prompt"] for i in s["demos"])


def test_out_of_domain_demo_inputs_keep_the_labels(setup, tmp_path):
    root, _ = setup
    train = [json.loads(line) for line in (root / "data" / "mini" / "train.jsonl").read_text().splitlines()]
    outside = [f"stock market item {i} " + "x" * i for i in range(40)]
    source = tmp_path / "news.txt"
    source.write_text("\n".join(outside) + "\n")
    _, samples = run(setup, "ood", "few_shot", k=3, demo_inputs=str(source))
    for s in samples:
        rows = s["demo_inputs"]["rows"]
        assert s["demo_inputs"]["source"] == str(source) and len(rows) == 3
        assert all(f"Review: {outside[r]}" in s["prompt"] for r in rows)  # the outside text in the task's template
        assert not any(train[i]["text"] in s["prompt"] for i in s["demos"])
        assert s["demo_labels"] == [train[i]["label"] for i in s["demos"]]  # gold labels of the pool rows
        # drawn among the 16 nearest in length: the train texts are 14-30 characters
        assert all(len(outside[r]) <= 50 for r in rows)


@pytest.mark.parametrize("args, message", [
    ({"demo_inputs": "no_such_thing"}, "neither a task .* nor a file"),
    ({"demo_inputs": "mini.yaml"}, "is this task"),
])
def test_bad_demo_inputs_say_what_to_do(setup, args, message):
    root, _ = setup
    if args["demo_inputs"] == "mini.yaml":
        args = {"demo_inputs": str(root / "mini.yaml")}
    with pytest.raises(UserError, match=message):
        run(setup, "badood", "few_shot", k=2, **args)


def test_label_ablations_need_labels_and_carp_refuses_them(setup, tmp_path):
    root, backend = setup
    task = tmp_path / "score.yaml"
    task.write_text(TASK.replace("labels:\n  - {value: negative}\n  - {value: positive}\n",
                                 "type: regression\nscore_range: [0, 5]\n"))
    for split in ("train", "dev"):
        (tmp_path / "data" / "mini").mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / "mini" / f"{split}.jsonl").write_text(
            "".join(json.dumps({"text": f"row {i}", "label": i % 5, "why": "w"}) + "\n" for i in range(4)))
    config = RunConfig(task=str(task), data_dir=tmp_path / "data", strategy="few_shot", mode="generate",
                       strategy_args={"k": 2, "demo_labels": "random"}, output=tmp_path / "run", bootstrap_samples=0)
    with pytest.raises(UserError, match="needs a classification task"):
        evaluate(config, backend=backend, progress=False)
    with pytest.raises(UserError, match="CARP's demos .* few_shot or cot"):
        run(setup, "carpx", "carp", k=2, demo_labels="flipped")
