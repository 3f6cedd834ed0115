"""--precision (issue 34): bf16 mixed precision on a CPU with bf16 instructions, refused where it would be emulated,
and applied to every pass a stage runs — the Trainer's, the reward model's shared-prompt loss (which calls the
model's body, past the Trainer's autocast) and DPO's held-out scoring.

The stages run for real on the tiny random Llama; the CPU's bf16 instructions are faked where a test needs them
(on a CPU without them bf16 is emulated: slow for a real model, fine for this one)."""

from __future__ import annotations

import json

import pytest
import torch

from taskfit.api import Message
from taskfit.data.preferences import PreferencePair, pair_row
from taskfit.errors import UserError
from taskfit.models import loading
from taskfit.models.loading import autocast, mixed_precision
from taskfit.settings import AlignConfig, RewardConfig, TuneConfig
from taskfit.tuning import align, reward, tune

QUIET = {"progress": False, "threads": 1, "logging_steps": 1}


def cpu_bf16(monkeypatch, present: bool) -> None:
    monkeypatch.setattr(loading, "cpu_has_bf16", lambda: present)


def test_auto_is_fp32_on_the_cpu_and_bf16_needs_the_cpu_instructions(monkeypatch):
    assert mixed_precision("auto", "cpu") is None
    cpu_bf16(monkeypatch, False)
    with pytest.raises(UserError, match="AMX.*--precision at auto"):
        mixed_precision("bf16", "cpu")
    cpu_bf16(monkeypatch, True)
    assert mixed_precision("bf16", "cpu") == "bf16"
    with pytest.raises(UserError, match="auto or bf16"):
        mixed_precision("fp8", "cpu")


def test_autocast_context_runs_matrix_products_in_the_precision():
    x, w = torch.randn(2, 4), torch.randn(4, 3)
    with autocast("bf16", "cpu"):
        assert (x @ w).dtype == torch.bfloat16
    with autocast(None, "cpu"):
        assert (x @ w).dtype == torch.float32


def test_a_cpu_without_bf16_is_refused_before_anything_loads(monkeypatch, tmp_path):
    cpu_bf16(monkeypatch, False)
    config = TuneConfig(method="lora", task="demo", model="hf:/nonexistent", precision="bf16",
                        output=tmp_path / "out", **QUIET)
    with pytest.raises(UserError, match="--precision bf16"):
        tune(config)
    assert not (tmp_path / "out").exists()


def test_sft_trains_in_bf16_close_to_fp32(monkeypatch, tiny_model_dir, tmp_path):
    cpu_bf16(monkeypatch, True)
    train = tmp_path / "train.json"
    rows = [{"input": f"Review: film {i}", "output": "positive" if i % 2 else "negative"} for i in range(8)]
    train.write_text(json.dumps({"type": "text2text", "instances": rows}), encoding="utf-8")
    losses = {}
    for precision in ("auto", "bf16"):
        card = tune(TuneConfig(method="lora", model=f"hf:{tiny_model_dir}", train_file=train, max_steps=2,
                               batch_size=4, precision=precision, output=tmp_path / precision, **QUIET)).card
        losses[precision] = card["loss_history"][0]["loss"]
        assert json.loads((tmp_path / precision / "settings.json").read_text())["precision"] == precision
    # the same step in another arithmetic: close, and not the same number (bf16 really ran)
    assert losses["auto"] != losses["bf16"]
    assert abs(losses["auto"] - losses["bf16"]) < 0.05 * abs(losses["auto"])


def test_reward_loss_and_dpo_scoring_run_in_bf16(monkeypatch, tiny_model_dir, tmp_path):
    cpu_bf16(monkeypatch, True)
    pairs = [PreferencePair((Message("user", f"Review {i}: good or bad?"),), "great and positive",
                            "terrible negative") for i in range(8)]
    data = tmp_path / "prefs.jsonl"
    data.write_text("".join(json.dumps(pair_row(p)) + "\n" for p in pairs), encoding="utf-8")
    seen = []

    def watching(function):
        def run(*args, **kwargs):
            seen.append((function.__name__, torch.is_autocast_enabled("cpu") and
                         torch.get_autocast_dtype("cpu") == torch.bfloat16))
            return function(*args, **kwargs)
        return run

    monkeypatch.setattr(reward, "prefix_rewards", watching(reward.prefix_rewards))
    monkeypatch.setattr(align, "pair_logps", watching(align.pair_logps))
    common = {"model": f"hf:{tiny_model_dir}", "data": [data], "max_steps": 1, "batch_size": 2, "dev_share": 0.25,
              "precision": "bf16", **QUIET}
    reward.train_reward(RewardConfig(method="lora", output=tmp_path / "rm", **common))
    align.train_align(AlignConfig(method="dpo", output=tmp_path / "dpo", **common))
    assert {name for name, _ in seen} == {"prefix_rewards", "pair_logps"}
    assert all(in_bf16 for _, in_bf16 in seen), seen
