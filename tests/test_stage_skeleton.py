"""The tuning stages on one skeleton (issue 30): every flag a command exposes is read by one of its methods, every
stage honours --max-steps, each command's help shows its own defaults, and one output rule holds for every stage.

The stages run for real on a tiny random Llama (and the packaged MiniLM for the head and the MiniLM reward model),
with a config that records which of its fields were read."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from taskfit.api import Message
from taskfit.data.preferences import PreferencePair, pair_row
from taskfit.errors import UserError
from taskfit.settings import AlignConfig, RewardConfig, TuneConfig
from taskfit.tuning import tune
from taskfit.tuning.align import train_align
from taskfit.tuning.online_rl import train_online
from taskfit.tuning.raft import train_raft
from taskfit.tuning.reward import train_reward


def recording(config):
    """``config`` as an instance of a subclass that records every field read on it."""
    fields = set(type(config).model_fields)
    seen: set[str] = set()

    class Recorded(type(config)):
        def __getattribute__(self, name):
            if name in fields:
                seen.add(name)
            return super().__getattribute__(name)

    return Recorded.model_validate(config.model_dump()), seen


@pytest.fixture
def prefs_file(tmp_path):
    pairs = [PreferencePair((Message("user", f"Review {i}: good or bad?"),), "great and positive",
                            "terrible negative") for i in range(16)]
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join(json.dumps(pair_row(p)) + "\n" for p in pairs), encoding="utf-8")
    return path


def train_file(tmp_path):
    path = tmp_path / "train.json"
    rows = [{"input": f"Review: film {i}", "output": "positive" if i % 2 else "negative"} for i in range(24)]
    path.write_text(json.dumps({"type": "text2text", "instances": rows}), encoding="utf-8")
    return path


QUIET = {"progress": False, "threads": 1, "logging_steps": 1}


def test_every_tune_flag_is_read_and_max_steps_holds_for_every_method(tiny_model_dir, tmp_path):
    read: set[str] = set()
    common = {"model": f"hf:{tiny_model_dir}", "max_steps": 2, "batch_size": 2, "epochs": 5, **QUIET}
    for method in ("lora", "ia3", "prefix", "prompt", "adapter", "full"):
        config, seen = recording(TuneConfig(method=method, train_file=train_file(tmp_path),
                                            output=tmp_path / method, **common))
        card = tune(config).card
        assert card["steps"] == 2, method  # --max-steps, not the 5 epochs
        read |= seen
    config, seen = recording(TuneConfig(method="lora", task="demo", split="test", limit=8,
                                        output=tmp_path / "task", **common))
    assert tune(config).card["steps"] == 2
    read |= seen
    config, seen = recording(TuneConfig(method="head", task="demo", split="test", limit=8, output=tmp_path / "head",
                                        max_steps=2, batch_size=2, epochs=5, **QUIET))
    card = tune(config).card
    assert card["steps"] == 2 and card["evaluate_with"] == {"task": "demo", "model": f"head:{tmp_path / 'head'}"}
    card_md = (tmp_path / "head" / "RUN_CARD.md").read_text()
    assert f"`taskfit eval --task demo --model head:{tmp_path / 'head'}`" in card_md
    read |= seen
    # a mixture is its own data source, tested in test_mixture; every other field must have been read
    assert set(TuneConfig.model_fields) - read - {"mixture"} == set()


def test_every_reward_flag_is_read_and_max_steps_holds(tiny_model_dir, tmp_path, prefs_file):
    read: set[str] = set()
    for method in ("lora", "full", "top", "minilm"):
        config, seen = recording(RewardConfig(method=method, model=f"hf:{tiny_model_dir}", data=[prefs_file],
                                              max_steps=2, batch_size=2, epochs=5, top_layers=1, dev_share=0.25,
                                              output=tmp_path / method, **QUIET))
        card = train_reward(config)
        if method != "minilm":  # a logistic regression has no optimizer steps to cap
            assert card["steps"] == 2, method
        assert card["dev"]["n"] == 4
        read |= seen
    assert set(RewardConfig.model_fields) - read == set()


def test_every_align_flag_is_read_and_max_steps_holds_in_every_method(tiny_model_dir, tmp_path, prefs_file):
    read: set[str] = set()
    common = {"model": f"hf:{tiny_model_dir}", "data": [prefs_file], "batch_size": 2, "dev_share": 0.25, **QUIET}
    for method in ("dpo", "kto"):
        config, seen = recording(AlignConfig(method=method, max_steps=2, epochs=5, output=tmp_path / method,
                                             **common))
        assert train_align(config)["steps"] == 2, method
        read |= seen
    # RAFT: --max-steps caps each iteration's fine-tuning (it was accepted and ignored before)
    config, seen = recording(AlignConfig(method="raft", reward="length:longer", iterations=1, samples=2, prompts=4,
                                         max_new_tokens=4, eval_prompts=2, epochs=4, max_steps=1, lr=1e-3,
                                         output=tmp_path / "raft", **common))
    card = train_raft(config)
    assert [it["steps"] for it in card["iterations"]] == [1] and card["steps"] == 1
    assert card["tokens_per_s"] > 0  # the card counts what RAFT trained on (it said None)
    read |= seen
    config, seen = recording(AlignConfig(method="raft", task="demo", split="test", reward="metric:accuracy",
                                         iterations=1, samples=2, prompts=4, max_new_tokens=4, eval_prompts=2,
                                         eval_samples=2, max_steps=1, output=tmp_path / "raft-task",
                                         **{**common, "data": []}))
    train_raft(config)
    read |= seen
    for method in ("grpo", "rloo"):  # --max-steps caps the RL steps; the prompts come from a task here
        config, seen = recording(AlignConfig(method=method, task="demo", split="test", reward="metric:accuracy",
                                             num_generations=2, max_new_tokens=4, eval_prompts=2, max_steps=2,
                                             epochs=5, output=tmp_path / method, **{**common, "data": []}))
        assert train_online(config)["steps"] == 2, method
        read |= seen
    assert set(AlignConfig.model_fields) - read == set()


def help_of(*command: str) -> str:
    done = subprocess.run([sys.executable, "-m", "taskfit.cli", *command, "--help"], capture_output=True, text=True,
                          env={"COLUMNS": "400", "PATH": ""})
    assert done.returncode == 0, done.stderr
    return " ".join(done.stdout.split())


def test_each_command_shows_its_own_defaults():
    tune_help, reward_help, align_help = help_of("tune"), help_of("reward", "train"), help_of("align")
    assert "2e-4 (lora), 2e-3 (ia3)" in tune_help and "5e-5 (head)" in tune_help
    assert "1e-4 (lora), 1e-5 (full), 2e-5 (top), 1 (minilm)" in reward_help and "2e-4 (lora)" not in reward_help
    assert "5e-5 (dpo), 5e-5 (kto), 2e-4 (raft)" in align_help and "2e-3 (ia3)" not in align_help
    assert "runs/tune/<method>-<time>" in tune_help
    assert "runs/reward/<method>-<time>" in reward_help and "runs/tune" not in reward_help
    assert "runs/align/<method>-<time>" in align_help and "runs/tune" not in align_help
    assert "--save-steps" in tune_help  # checkpoints exist only where they are written: tune, align's grpo / rloo
    assert "--save-steps" not in reward_help and "grpo / rloo: checkpoint every N steps" in align_help


def test_one_output_rule_for_every_stage(tiny_model_dir, tmp_path, prefs_file):
    common = {"model": f"hf:{tiny_model_dir}", "data": [prefs_file], "batch_size": 2, "max_steps": 1,
              "dev_share": 0.25, **QUIET}
    out = tmp_path / "dpo"
    train_align(AlignConfig(method="dpo", output=out, **common))
    identity = json.loads((out / "settings.json").read_text())
    assert identity["max_steps"] == 1 and "threads" not in identity and "output" not in identity
    for stage in (lambda o: train_align(AlignConfig(method="dpo", output=o, **common)),
                  lambda o: train_reward(RewardConfig(method="lora", output=o, **common)),
                  lambda o: train_raft(AlignConfig(method="raft", reward="length:longer", output=o, **common))):
        with pytest.raises(UserError, match="not empty|holds"):
            stage(out)  # a folder holding another run is never overwritten
    with pytest.raises(UserError, match="keeps no checkpoints"):
        tune(TuneConfig(method="head", task="demo", output=tmp_path / "head", **QUIET), resume=True)
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(UserError):
        train_align(AlignConfig(method="dpo", output=out, **common))
    assert sorted(p.name for p in out.iterdir()) == before
