"""`taskfit align` on a tiny random Llama: DPO / KTO step-0 losses that only hold when the reference is the start
policy (DPO ln 2, KTO 0.5), held-out implicit reward margins, the output's evaluation hint; RAFT and GRPO / RLOO
reproducible with a seed, resumed to the same result, measured on held-out prompts."""

from __future__ import annotations

import json
import math
import shutil

import pytest

from taskfit.api import Message
from taskfit.cli import main
from taskfit.data.preferences import PreferencePair, RatedRow, pair_row, rated_row
from taskfit.tuning.align import kto_order


def prefs(n: int) -> list[PreferencePair]:
    return [PreferencePair((Message("user", f"Review {i}: good or bad?"),), "great and positive", "terrible negative")
            for i in range(n)]


def jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("method, step0", [("dpo", math.log(2)), ("kto", 0.5)])
def test_step_zero_loss_holds_only_with_the_reference(tiny_model_dir, tmp_path, method, step0):
    data = jsonl(tmp_path / "prefs.jsonl", [pair_row(p) for p in prefs(16)])
    out = tmp_path / method
    assert main(["align", "--method", method, "--model", f"hf:{tiny_model_dir}", "--data", str(data),
                 "--max-steps", "2", "--batch-size", "4", "--logging-steps", "1", "--lr", "1e-2",
                 "--dev-share", "0.25", "--output", str(out), "--no-progress"]) == 0
    card = json.loads((out / "run_card.json").read_text())
    assert card["loss_history"][0]["loss"] == pytest.approx(step0, abs=1e-3)
    assert card["dev"]["n"] == 4 and card["dev"]["mean_margin"]["ci_low"] is not None
    assert card["evaluate_with"] == {"model": f"hf:{tiny_model_dir}", "adapter": str(out)}
    assert (out / "adapter_config.json").is_file()
    assert card["data"]["train_rows"] == (12 if method == "dpo" else 24)


def test_feedback_style_rows_run_one_kto_step(tiny_model_dir, tmp_path):
    rows = [rated_row(RatedRow((Message("user", f"Q{i}"),), "great" if i % 2 else "terrible", bool(i % 2)))
            | {"feedback_id": i} for i in range(8)]
    data = jsonl(tmp_path / "kto.jsonl", rows)
    assert main(["align", "--method", "kto", "--model", f"hf:{tiny_model_dir}", "--data", str(data), "--max-steps",
                 "1", "--batch-size", "4", "--dev-share", "0", "--output", str(tmp_path / "k"), "--no-progress"]) == 0


def raft_args(tiny_model_dir, data, out, reward):
    return ["align", "--method", "raft", "--model", f"hf:{tiny_model_dir}", "--data", str(data), "--reward", reward,
            "--iterations", "2", "--samples", "2", "--prompts", "4", "--max-new-tokens", "6", "--eval-prompts", "3",
            "--eval-samples", "2", "--epochs", "2", "--batch-size", "2", "--dev-share", "0.3", "--lr", "1e-3",
            "--output", str(out), "--no-progress"]


def test_raft_is_reproducible_and_resumes_to_the_same_result(tiny_model_dir, tmp_path):
    data = jsonl(tmp_path / "prefs.jsonl", [pair_row(p) for p in prefs(10)])
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(raft_args(tiny_model_dir, data, a, "length:longer")) == 0
    card = json.loads((a / "run_card.json").read_text())
    assert len(card["iterations"]) == 2 and card["data"]["heldout_prompts"] == 3
    for it in card["iterations"]:  # --epochs 2: two passes over the kept answers, batches of 2
        assert it["steps"] == 2 * -(-it["selected"] // 2)
    held = [json.loads(line) for line in (a / "iter_2" / "heldout.jsonl").read_text().splitlines()]
    assert len(held) == 6 and [h["sample"] for h in held] == [0, 1] * 3  # --eval-samples 2 per held-out prompt
    means = {}
    for h in held:
        means.setdefault(h["prompt"], []).append(h["reward"])
    assert card["iterations"][-1]["heldout"]["mean_reward"]["value"] == pytest.approx(
        sum(sum(v) / 2 for v in means.values()) / 3)
    first = [json.loads(line) for line in (a / "iter_1" / "candidates.jsonl").read_text().splitlines()]
    assert len(first) == 8 and sum(c["kept"] for c in first) <= 4
    for c in first:  # the kept answer of a prompt is its best usable one
        rivals = [d for d in first if d["prompt"] == c["prompt"] and d["discarded"] is None]
        if c["kept"]:
            assert c["reward"] == max(d["reward"] for d in rivals)
    # --min-reward: the same first iteration learns only from answers that reach it
    cut = sorted(c["reward"] for c in first)[len(first) // 2]
    strict = raft_args(tiny_model_dir, data, tmp_path / "c", "length:longer") + ["--min-reward", str(cut)]
    strict[strict.index("--iterations") + 1] = "1"
    assert main(strict) == 0
    again = [json.loads(line) for line in (tmp_path / "c" / "iter_1" / "candidates.jsonl").read_text().splitlines()]
    assert [c["text"] for c in again] == [c["text"] for c in first]
    assert all((c["discarded"] == "below min_reward") == (c["reward"] < cut)
               for c in again if c["discarded"] in (None, "below min_reward"))
    assert any(c["kept"] for c in again) and all(c["reward"] >= cut for c in again if c["kept"])
    # the same run again, stopped after one iteration and resumed, gives the same selections and adapter
    one = raft_args(tiny_model_dir, data, b, "length:longer")
    one[one.index("--iterations") + 1] = "1"
    into_a = list(one)
    into_a[into_a.index("--output") + 1] = str(a)
    assert main(into_a) == 2  # other settings into a finished run's folder: refused, nothing lost
    assert (a / "iter_2" / "adapter").is_dir()
    assert main(one) == 0
    settings = json.loads((b / "settings.json").read_text())
    settings["iterations"] = 2  # as if the two-iteration run had been cut after its first iteration
    (b / "settings.json").write_text(json.dumps(settings))
    assert main(raft_args(tiny_model_dir, data, b, "length:longer") + ["--resume"]) == 0
    for t in (1, 2):
        assert (a / f"iter_{t}" / "candidates.jsonl").read_text() == (b / f"iter_{t}" / "candidates.jsonl").read_text()
    from safetensors.torch import load_file

    wa = load_file(a / "iter_2" / "adapter" / "adapter_model.safetensors")
    wb = load_file(b / "iter_2" / "adapter" / "adapter_model.safetensors")
    assert wa.keys() == wb.keys() and all(torch_equal(wa[k], wb[k]) for k in wa)


def torch_equal(x, y) -> bool:
    import torch

    return bool(torch.equal(x, y))


def test_align_eval_compares_policies_on_the_same_prompts(tiny_model_dir, tmp_path):
    data = jsonl(tmp_path / "prefs.jsonl", [pair_row(p) for p in prefs(12)])
    dpo = tmp_path / "dpo"
    assert main(["align", "--method", "dpo", "--model", f"hf:{tiny_model_dir}", "--data", str(data), "--max-steps",
                 "2", "--batch-size", "4", "--lr", "5e-2", "--dev-share", "0", "--output", str(dpo),
                 "--no-progress"]) == 0
    out = tmp_path / "eval"
    assert main(["align", "eval", "--model", f"hf:{tiny_model_dir}", "--data", str(data), "--policies",
                 f"base,{dpo}", "--reward", "length:longer", "--eval-prompts", "6", "--eval-samples", "2",
                 "--max-new-tokens", "8", "--output", str(out)]) == 0
    results = json.loads((out / "align_eval.json").read_text())
    base, tuned = results["policies"]
    assert base["policy"] == "base" and base["prompts"] == 6
    assert base["win_rate_vs_start"] == 0.5 and base["kl_to_start"]["value"] == pytest.approx(0, abs=1e-6)
    assert base["reward_delta_vs_start"]["value"] == pytest.approx(0, abs=1e-9)
    assert tuned["reward_delta_vs_start"]["value"] == pytest.approx(tuned["reward"]["value"] - base["reward"]["value"])
    assert tuned["perplexity_chosen"] != base["perplexity_chosen"]  # the DPO LoRA changed the model
    answers = [json.loads(line) for line in (out / "answers_1.jsonl").read_text().splitlines()]
    assert len(answers) == 12 and all(a["policy"] == str(dpo) for a in answers)
    assert results["samples_per_prompt"] == 2 and len({a["answer"] for a in answers}) > 6  # two draws per prompt
    from taskfit.tuning.reward_functions import load_reward

    scores = load_reward("length:longer").score([((Message("user", a["prompt"])),) for a in answers],
                                                [a["answer"] for a in answers])
    per_prompt = [(scores[i] + scores[i + 1]) / 2 for i in range(0, 12, 2)]  # a prompt's reward: its answers' mean
    assert tuned["reward"]["value"] == pytest.approx(sum(per_prompt) / 6)
    assert "| policy" in (out / "align_eval.md").read_text()


def test_align_eval_refuses_a_bad_reward_or_policy_before_generating(tiny_model_dir, tmp_path, monkeypatch, capsys):
    import taskfit.tuning.align_eval as align_eval

    def no_generation(*args, **kwargs):
        raise AssertionError("a model was loaded before the arguments were checked")

    monkeypatch.setattr(align_eval, "HFBackend", no_generation)
    data = jsonl(tmp_path / "prefs.jsonl", [pair_row(p) for p in prefs(4)])
    common = ["align", "eval", "--model", f"hf:{tiny_model_dir}", "--data", str(data), "--output", str(tmp_path / "e")]
    assert main(common + ["--policies", "base", "--reward", str(tmp_path / "no-rm")]) == 2
    assert "not a reward model folder" in capsys.readouterr().err
    assert main(common + ["--policies", f"base,{tmp_path / 'no-policy'}", "--reward", "length:longer"]) == 2
    assert "not 'base', an adapter folder or a model folder" in capsys.readouterr().err
    assert main(common + ["--policies", "base", "--reward", "length:longer", "--judge", "length:wider"]) == 2
    assert "use length:shorter or length:longer" in capsys.readouterr().err


def test_task_metric_rewards_read_answers_as_the_task_does(shared_data):
    from pathlib import Path

    from taskfit.errors import UserError
    from taskfit.settings import AlignConfig
    from taskfit.tasks.task import load_task
    from taskfit.tuning.raft import MetricReward, raft_prompts

    config = AlignConfig(method="raft", task="gsm8k", data_dir=Path(shared_data), split="train",
                         reward="metric:accuracy", limit=10)
    task = load_task("gsm8k")
    train, held = raft_prompts(config, task)
    assert len(train) + len(held) == 10 and not {p.key for p in train} & {p.key for p in held}
    reward = MetricReward("accuracy", task, {p.prompt.messages: p.example for p in train + held})
    first = train[0]
    assert reward.score([first.prompt.messages] * 3, [f"So the answer is {first.example.gold}.", "It is 3.5 apples.",
                                                      ""]) == [1.0, 0.0, 0.0]
    with pytest.raises(UserError, match="metric:accuracy"):
        MetricReward("rouge_l", task, {})


def test_pair_logprobs_equal_a_plain_forward_pass_per_row(tiny_model_dir):
    """Held-out scoring (each prompt run once, left-padded, its cache continued by both answers, right-padded, in
    groups of similar length) gives each answer's log-probability as one unpadded forward pass over the whole row."""
    import torch
    from transformers import AutoModelForCausalLM

    from taskfit.prompting.preference_tokens import PairIds
    from taskfit.tuning.align import pair_logps

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    pairs = [PairIds(chosen=list(range(5, 5 + prompt)) + list(range(60, 60 + n)),
                     rejected=list(range(5, 5 + prompt)) + list(range(90, 90 + n + extra)), prompt_length=prompt)
             for n, extra, prompt in ((6, 3, 2), (12, -11, 9), (4, 7, 1), (9, 1, 5), (1, 0, 14))]
    for budget in (0, 30, 10_000):
        got = dict(zip(("chosen", "rejected"), pair_logps(model, pairs, budget, batch_size=3)))
        for which in ("chosen", "rejected"):
            for value, pair in zip(got[which], pairs):
                row = getattr(pair, which)
                with torch.inference_mode():
                    logps = torch.log_softmax(model(input_ids=torch.tensor([row])).logits[0, :-1], -1)
                expected = logps[torch.arange(len(row) - 1), torch.tensor(row[1:])][pair.prompt_length - 1:].sum()
                assert value == pytest.approx(float(expected), abs=1e-4), (budget, which, pair.prompt_length)


def test_kto_rows_are_shuffled_into_batches_of_distinct_prompts():
    # pairs split into rated rows arrive chosen, rejected, chosen, rejected, ...: read in that order (TRL's KTO reads
    # sequentially) the rotated KL completion of every rejected row would be its own prompt's chosen answer
    rows = [{"prompt_ids": [p, 1], "completion_ids": [p, side], "label": side == 7}
            for p in range(12) for side in (7, 8)]
    ordered = kto_order(rows, 4, seed=3)
    assert sorted(map(str, ordered)) == sorted(map(str, rows))
    assert ordered != rows and ordered == kto_order(rows, 4, seed=3) and ordered != kto_order(rows, 4, seed=4)
    batches = [ordered[i:i + 4] for i in range(0, len(ordered), 4)]
    assert all(len({tuple(r["prompt_ids"]) for r in b}) == len(b) for b in batches)
    # one prompt only: duplicates are unavoidable and nothing is lost
    same = [{"prompt_ids": [5], "completion_ids": [i], "label": True} for i in range(6)]
    assert sorted(r["completion_ids"][0] for r in kto_order(same, 4, seed=1)) == list(range(6))


def grpo_args(tiny_model_dir, data, out, *extra):
    return ["align", "--method", "grpo", "--model", f"hf:{tiny_model_dir}", "--data", str(data), "--reward",
            "length:longer,length:shorter*0.5", "--num-generations", "4", "--batch-size", "4", "--max-steps", "4",
            "--max-new-tokens", "6", "--eval-prompts", "3", "--eval-samples", "2", "--dev-share", "0.25",
            "--logging-steps", "1", "--lr", "1e-3", "--save-steps", "2", "--threads", "1", "--output", str(out),
            "--no-progress", *extra]


def test_grpo_is_reproducible_resumes_and_measures_held_out_prompts(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file

    data = jsonl(tmp_path / "prefs.jsonl", [pair_row(p) for p in prefs(12)])
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(grpo_args(tiny_model_dir, data, a)) == 0
    card = json.loads((a / "run_card.json").read_text())
    assert card["steps"] == 4 and len(card["rl_history"]) == 4
    step = card["rl_history"][0]
    for key in ("reward", "reward_std", "kl", "mean_length", "clipped_ratio", "rewards/length_longer/mean",
                "rewards/length_shorter/mean"):
        assert key in step, key
    # the logged reward is the weighted sum of the two rewards
    assert step["reward"] == pytest.approx(step["rewards/length_longer/mean"]
                                           + 0.5 * step["rewards/length_shorter/mean"])
    held = [json.loads(line) for line in (a / "heldout_end" / "heldout.jsonl").read_text().splitlines()]
    assert len(held) == 6  # 3 held-out prompts x 2 answers, the same seeds as the start policy's
    start = [json.loads(line) for line in (a / "heldout_start" / "heldout.jsonl").read_text().splitlines()]
    assert [h["prompt"] for h in held] == [s["prompt"] for s in start]
    assert card["heldout_end_minus_start"]["ci_low"] is not None and card["evaluate_with"]["adapter"] == str(a)
    assert (a / "rl.png").is_file()
    # a kill after the checkpoint at step 2: the same command with --resume ends where the uninterrupted run did
    assert main(grpo_args(tiny_model_dir, data, b)) == 0
    again = json.loads((b / "run_card.json").read_text())  # the same seed: the same run
    assert again["rl_history"] == card["rl_history"] and again["heldout_end"] == card["heldout_end"]
    for path in b.iterdir():
        if path.name not in ("checkpoint-2", "settings.json", "online_rl.json", "heldout_start"):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    assert main(grpo_args(tiny_model_dir, data, b)) == 2  # not without --resume
    assert main(grpo_args(tiny_model_dir, data, b, "--resume")) == 0
    resumed = json.loads((b / "run_card.json").read_text())
    assert resumed["steps"] == 4
    assert resumed["rl_history"] == card["rl_history"]  # the checkpoint's steps, then the same two after it
    wa, wb = load_file(a / "adapter_model.safetensors"), load_file(b / "adapter_model.safetensors")
    assert wa.keys() == wb.keys() and all(torch_equal(wa[k], wb[k]) for k in wa)


def test_rloo_trains_against_a_reward(tiny_model_dir, tmp_path):
    data = jsonl(tmp_path / "prefs.jsonl", [pair_row(p) for p in prefs(8)])
    args = grpo_args(tiny_model_dir, data, tmp_path / "r")
    args[args.index("grpo")] = "rloo"
    assert main(args) == 0
    card = json.loads((tmp_path / "r" / "run_card.json").read_text())
    assert card["method"] == "rloo" and card["steps"] == 4 and card["rl_history"][0]["reward_std"] >= 0
