"""Reward models on a tiny random Llama built in the test: pad-invariant scoring, the one renderer, prompts cut by
whole turns, step-0 loss ln 2, and `taskfit reward train | eval | score` end to end."""

from __future__ import annotations

import json
import math

import pytest
import torch

from taskfit.api import Message
from taskfit.cli import main
from taskfit.data.preferences import PreferencePair, pair_row
from taskfit.models.reward import RewardScorer, sequence_classifier
from taskfit.prompting.preference_tokens import PreferenceTokenizer
from taskfit.prompting.tokens import Tokenizer

SYSTEM = Message("system", "Answer with one word.")


def pairs(n: int) -> list[PreferencePair]:
    good = ["the movie was great and positive", "great film", "positive and great"]
    bad = ["terrible negative", "a terrible film", "negative"]
    return [PreferencePair((SYSTEM, Message("user", f"Review {i}: is it good?")), good[i % 3], bad[(i + 1) % 3])
            for i in range(n)]


@pytest.fixture(scope="module")
def tiny_reward(tiny_model_dir):
    model, tokenizer = sequence_classifier(tiny_model_dir)
    torch.manual_seed(0)
    with torch.no_grad():
        model.score.weight.normal_(0, 0.5)  # a head with something to say
    return model, tokenizer


def test_a_reward_is_the_same_alone_and_in_padded_batches(tiny_reward):
    model, tokenizer = tiny_reward
    renderer = PreferenceTokenizer(Tokenizer(tokenizer), 256)
    texts = ["great", "the movie was great and positive, a great film", "negative", "terrible negative film " * 4]
    rows = [renderer.sequence((SYSTEM, Message("user", "is it good?")), t)[0] for t in texts]
    scorer = RewardScorer(model, batch_size=8)
    alone = [scorer.score([row])[0] for row in rows]
    assert len({len(r) for r in rows}) >= 3  # different lengths: real padding in every batch
    assert scorer.score(rows, padding_side="right") == pytest.approx(alone, abs=1e-4)
    assert scorer.score(rows, padding_side="left") == pytest.approx(alone, abs=1e-4)
    assert RewardScorer(model, batch_size=3).score(rows[::-1]) == pytest.approx(alone[::-1], abs=1e-4)
    assert len(set(round(a, 4) for a in alone)) == 4  # the scores really differ: the test can fail


def test_pad_token_is_not_the_end_of_turn_token_and_one_bos(tiny_reward):
    model, tokenizer = tiny_reward
    assert tokenizer.pad_token_id != tokenizer.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    ids, prompt_length = PreferenceTokenizer(Tokenizer(tokenizer), 256).sequence(
        (Message("user", "hi"),), "great")
    assert ids[-1] == tokenizer.eos_token_id and 0 < prompt_length < len(ids)
    assert ids[:2] != [tokenizer.bos_token_id] * 2
    assert tokenizer.decode(ids).startswith("<|im_start|>user\nhi<|im_end|>")


def test_prompts_lose_whole_turns_from_the_left_keeping_the_system_prompt(tiny_reward):
    _, tokenizer = tiny_reward
    long_turns = [SYSTEM]
    for i in range(6):
        long_turns += [Message("user", f"question {i} " * 6), Message("assistant", f"answer {i} " * 6)]
    long_turns.append(Message("user", "last question"))
    renderer = PreferenceTokenizer(Tokenizer(tokenizer), 120)
    full = renderer.sequence(long_turns, "great")[0]
    assert len(full) > 120
    ((ids, _),) = renderer.fit(long_turns, ["great"])
    text = tokenizer.decode(ids)
    assert len(ids) <= 120 and text.startswith("<|im_start|>system\nAnswer with one word.")
    assert "last question" in text and "question 0" not in text
    assert text.count("<|im_start|>user") == text.count("<|im_start|>assistant") - 1 + 1  # whole turns only
    assert renderer.counts["prompts cut by whole turns"] == 1
    assert renderer.fit([SYSTEM, Message("user", "word " * 200)], ["great"]) is None
    assert renderer.counts["dropped: too long even with the last turn alone"] == 1


def write_pairs(path, rows):
    path.write_text("".join(json.dumps(pair_row(p)) + "\n" for p in rows), encoding="utf-8")
    return path


def test_reward_training_starts_at_ln2_and_eval_writes_a_run(tiny_model_dir, tmp_path):
    data = write_pairs(tmp_path / "prefs.jsonl", pairs(20))
    out = tmp_path / "rm"
    assert main(["reward", "train", "--model", f"hf:{tiny_model_dir}", "--data", str(data), "--method", "lora",
                 "--max-steps", "3", "--batch-size", "4", "--logging-steps", "1", "--dev-share", "0.25",
                 "--output", str(out), "--no-progress"]) == 0
    card = json.loads((out / "run_card.json").read_text())
    assert card["first_loss"] == pytest.approx(math.log(2), abs=1e-3)
    assert card["data"]["train_pairs"] == 15 and card["data"]["dev_pairs"] == 5
    dev = json.loads((out / "dev-eval" / "results.json").read_text())
    assert dev["counts"]["n"] == 5 and 0 <= dev["metrics"]["accuracy"]["value"] <= 1
    assert set(dev["baselines"]) == {"shorter", "longer"}
    samples = [json.loads(line) for line in (out / "dev-eval" / "samples.jsonl").read_text().splitlines()]
    assert all(s["correct"] in (0.0, 0.5, 1.0) for s in samples)
    assert main(["reward", "score", "--reward", str(out), "--data", str(data), "--output",
                 str(tmp_path / "scores.jsonl")]) == 0
    scores = [json.loads(line) for line in (tmp_path / "scores.jsonl").read_text().splitlines()]
    assert len(scores) == 20 and all(isinstance(s["chosen_reward"], float) for s in scores)


def test_full_and_top_methods_train_only_what_they_say(tiny_model_dir, tmp_path):
    data = write_pairs(tmp_path / "prefs.jsonl", pairs(8))
    for method, expected_share in (("top", (0.0, 1.0)), ("full", (1.0, 1.0))):
        out = tmp_path / method
        assert main(["reward", "train", "--model", f"hf:{tiny_model_dir}", "--data", str(data), "--method", method,
                     "--top-layers", "1", "--max-steps", "1", "--batch-size", "4", "--dev-share", "0",
                     "--output", str(out), "--no-progress"]) == 0
        share = json.loads((out / "run_card.json").read_text())["trainable_share"]
        assert expected_share[0] < share <= expected_share[1] if method == "top" else share == 1.0


def test_length_rules_and_the_minilm_judge(tmp_path):
    rows = [PreferencePair((Message("user", f"Q{i}"),), "short" if i % 4 else "a much longer answer here", "mid answer")
            for i in range(8)]
    data = write_pairs(tmp_path / "p.jsonl", rows)
    assert main(["reward", "eval", "--reward", "length:shorter", "--data", str(data), "--output",
                 str(tmp_path / "short")]) == 0
    results = json.loads((tmp_path / "short" / "results.json").read_text())
    assert results["metrics"]["accuracy"]["value"] == pytest.approx(6 / 8)
    assert results["baselines"]["shorter"]["value"] == pytest.approx(6 / 8)
    assert results["versus_baselines"]["shorter"]["diff"] == 0
    assert main(["reward", "eval", "--reward", "nonsense", "--data", str(data), "--output",
                 str(tmp_path / "x")]) == 2


def test_two_reward_evals_of_the_same_pairs_in_two_files_compare_pair_by_pair(tmp_path):
    from taskfit.compare import compare_runs
    from taskfit.errors import UserError

    rows = [PreferencePair((Message("user", f"Q{i}"),), "short" if i % 3 else "a much longer answer", "mid answer")
            for i in range(8)]
    for folder in ("copy", "changed"):
        (tmp_path / folder).mkdir()
    files = [write_pairs(tmp_path / "p.jsonl", rows), write_pairs(tmp_path / "copy" / "p.jsonl", rows)]
    changed = write_pairs(tmp_path / "changed" / "p.jsonl", [*rows[:7], PreferencePair(rows[7].prompt, "other",
                                                                                        "mid answer")])
    for name, rule, data in (("a", "shorter", files[0]), ("b", "longer", files[1]), ("c", "longer", changed)):
        assert main(["reward", "eval", "--reward", f"length:{rule}", "--data", str(data), "--output",
                     str(tmp_path / name)]) == 0
    sample = json.loads((tmp_path / "b" / "samples.jsonl").read_text().splitlines()[0])
    assert sample["source"] == f"{files[1]}:1" and "source" not in sample["input"]  # where it was read, beside it
    accuracy = compare_runs(tmp_path / "a", tmp_path / "b")["comparisons"][0]
    assert accuracy["a"] == pytest.approx(5 / 8) and accuracy["b"] == pytest.approx(3 / 8)
    with pytest.raises(UserError, match="example 7 differs"):  # another answer: another pair
        compare_runs(tmp_path / "a", tmp_path / "c")


@pytest.mark.slow
def test_minilm_reward_learns_an_easy_preference(tmp_path):
    data = write_pairs(tmp_path / "prefs.jsonl", pairs(60))
    out = tmp_path / "minilm"
    assert main(["reward", "train", "--method", "minilm", "--data", str(data), "--output", str(out),
                 "--no-progress"]) == 0
    card = json.loads((out / "run_card.json").read_text())
    assert card["dev"]["accuracy"]["value"] >= 0.9


def test_prefix_rewards_equal_whole_sequence_rewards(tiny_reward):
    """Each prompt run once and continued by its answers gives the rewards the whole sequences get."""
    from taskfit.models.reward import prefix_rewards

    model, _ = tiny_reward
    prefixes = [list(range(5, 12)), list(range(20, 23)), [7]]
    continuations = [[[40, 41, 42], [50]], [[60, 61, 62, 63, 64, 65], [70, 71], [80, 81, 82]], [[90, 91]]]
    with torch.inference_mode():
        got = prefix_rewards(model, prefixes, continuations).tolist()
    whole = RewardScorer(model).score([p + c for p, cs in zip(prefixes, continuations) for c in cs])
    assert got == pytest.approx(whole, abs=1e-4) and len(set(round(g, 4) for g in got)) == 6


def test_the_shared_prompt_loss_and_gradients_are_trls(tiny_model_dir, tmp_path):
    """The reward trainer's loss on shared prompts in passes of similar length: TRL's loss and gradients on the
    same batch (its own compute_loss, whole sequences padded together)."""
    import datasets
    from peft import get_peft_model
    from trl import RewardConfig as TRLRewardConfig
    from trl import RewardTrainer

    from taskfit.settings import RewardConfig
    from taskfit.tuning.reward import shared_prompt_trainer
    from taskfit.tuning.skeleton import lora_config

    model, tokenizer = sequence_classifier(tiny_model_dir)
    model = get_peft_model(model, lora_config(RewardConfig(data=[tmp_path]), "SEQ_CLS"))
    renderer = PreferenceTokenizer(Tokenizer(tokenizer), 256)
    mixed = [PreferencePair(p.prompt, p.chosen * (1 + i % 3), p.rejected) for i, p in enumerate(pairs(6))]
    rows = [{"chosen_ids": p.chosen, "rejected_ids": p.rejected} for p in renderer.pairs(mixed)]
    # fp32 as taskfit trains on the CPU (TRL's configs default to bf16, and the shared-prompt loss runs under the
    # accelerator's autocast, while TRL's compute_loss here calls a model the Trainer has not wrapped in it yet)
    args = TRLRewardConfig(output_dir=str(tmp_path / "out"), per_device_train_batch_size=6, use_cpu=True, bf16=False,
                           report_to=[], center_rewards_coefficient=None, gradient_checkpointing=False)
    results = []
    for trainer_class in (RewardTrainer, shared_prompt_trainer(RewardTrainer, 40)):
        trainer = trainer_class(model=model, args=args, train_dataset=datasets.Dataset.from_list(rows),
                                processing_class=tokenizer)
        batch = next(iter(trainer.get_train_dataloader()))
        model.train()
        model.zero_grad()
        loss = trainer.compute_loss(model, dict(batch))
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((loss.item(), grads, trainer._metrics["train"]["accuracy"][-1]))
    (trl_loss, trl_grads, trl_accuracy), (loss, grads, accuracy) = results
    assert loss == pytest.approx(trl_loss, abs=1e-5) and accuracy == trl_accuracy
    assert grads.keys() == trl_grads.keys() and len(grads) > 2
    for name, grad in grads.items():
        assert torch.allclose(grad, trl_grads[name], atol=1e-5), name
