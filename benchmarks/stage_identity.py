"""Behaviour identity of the tuning stages: run SFT (LoRA, IA3), the head, the reward model (LoRA, MiniLM), DPO, KTO
and RAFT with fixed seeds at a tiny scale on the embedded model, and print the numbers of their run cards.

Run it on two commits one after the other (the old one from a second worktree) and compare the outputs:

    PYTHONPATH=/tmp/prev/src python benchmarks/stage_identity.py --data-dir ../shared/data --out /tmp/id-before
    python benchmarks/stage_identity.py --data-dir ../shared/data --out /tmp/id-after
    diff /tmp/id-before/numbers.json /tmp/id-after/numbers.json

Seconds, memory, dates and paths are left out; everything a run computes is kept.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

KEEP = ("method", "steps", "first_loss", "final_loss", "loss_history", "train_loss", "trainable_parameters",
        "total_parameters", "dev", "iterations", "heldout_start", "heldout_end_minus_start", "heldout_win_rate",
        "accuracy_history", "train_accuracy")
DROP_INSIDE = ("train_s", "total_s", "tokens_per_s", "peak_rss_mib", "output", "created")


def runs(data: Path, out: Path) -> dict[str, list[str]]:
    hh = str(data / "hh_rlhf" / "train.jsonl")
    sft = ["--task", "sst2", "--data-dir", str(data), "--limit", "16", "--max-steps", "2", "--batch-size", "4",
           "--logging-steps", "1", "--seed", "7"]
    prefs = ["--data", hh, "--limit", "24", "--max-steps", "2", "--batch-size", "4", "--logging-steps", "1",
             "--max-length", "192", "--dev-share", "0.25", "--seed", "7"]
    return {
        "sft-lora": ["tune", "--method", "lora", *sft],
        "sft-ia3": ["tune", "--method", "ia3", *sft],
        "head": ["tune", "--method", "head", *sft],
        "reward-lora": ["reward", "train", "--method", "lora", *prefs],
        "reward-minilm": ["reward", "train", "--method", "minilm", *prefs],
        "dpo": ["align", "--method", "dpo", *prefs],
        "kto": ["align", "--method", "kto", *prefs],
        "raft": ["align", "--method", "raft", "--reward", "length:shorter", "--data", hh, "--limit", "24",
                 "--iterations", "1", "--prompts", "4", "--samples", "2", "--max-new-tokens", "8", "--eval-prompts",
                 "4", "--batch-size", "2", "--logging-steps", "1", "--max-length", "192", "--seed", "7"],
    }


def clean(value):
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items() if k not in DROP_INSIDE}
    if isinstance(value, list):
        return [clean(v) for v in value]
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--only", nargs="*", help="run only these stages")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    numbers = {}
    for name, argv in runs(args.data_dir, args.out).items():
        if args.only and name not in args.only:
            continue
        folder = args.out / name
        done = subprocess.run([sys.executable, "-m", "taskfit.cli", *argv, "--output", str(folder), "--threads", "2",
                               "--no-progress"], capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"{name} failed:\n{done.stderr[-3000:]}")
        card = json.loads((folder / "run_card.json").read_text(encoding="utf-8"))
        numbers[name] = clean({k: card[k] for k in KEEP if k in card})
        print(name, json.dumps({k: numbers[name].get(k) for k in ("steps", "first_loss", "final_loss")}), flush=True)
    (args.out / "numbers.json").write_text(json.dumps(numbers, indent=1, sort_keys=True) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
