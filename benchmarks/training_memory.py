"""Issue 34's measurements, for one checkout of taskfit (run it with PYTHONPATH=<worktree>/src for the previous
commit and again for this one, one after the other, alone on the machine):

- ``sft``: a LoRA SFT (batch 8, ``--max-steps``) through ``taskfit tune``: peak RSS, tokens/s, the step-1 loss;
  then the adapter evaluated (zero-shot prompt, the task's metric) on held-out rows;
- ``reward``: ``taskfit reward train --method lora`` on HH-RLHF (batch 8, ``--max-steps``): seconds a step, peak
  RSS, the logged losses;
- ``score``: the DPO stage's held-out scoring, every answer's log-probability after its prompt, on the HH-RLHF dev
  pairs ``taskfit align`` holds out (20% of prompts, seed 1234), with the base model: seconds and the values.

    python benchmarks/training_memory.py sft --task nlpcc_kbqa --data-dir OUT/kbqa-data --limit 400 --max-steps 50 \
        --eval-limit 100 --out OUT/sft-kbqa-new
    python benchmarks/training_memory.py score --pairs 341 --out OUT/score-new

Each writes OUT.json; ``compare`` prints the table of two such files (before, after).
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger("training_memory")


def sft(args) -> dict:
    folder = Path(args.out)
    command = [sys.executable, "-m", "taskfit.cli", "tune", "--task", args.task, "--data-dir", args.data_dir,
               "--method", "lora", "--limit", str(args.limit), "--max-steps", str(args.max_steps), "--batch-size", "8",
               "--logging-steps", "1", "--no-progress", "--output", str(folder / "adapter"), *args.tune_args.split()]
    subprocess.run(command, check=True)
    card = json.loads((folder / "adapter" / "run_card.json").read_text())
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "taskfit.cli", "eval", "--task", args.task, "--data-dir", args.data_dir,
                    "--split", "dev", "--limit", str(args.eval_limit), "--adapter", str(folder / "adapter"),
                    "--no-cache", "--no-progress", "--output", str(folder / "eval")], check=True)
    results = json.loads((folder / "eval" / "results.json").read_text())
    metric = next(iter(results["metrics"]))
    return {"kind": "sft", "task": args.task, "steps": card["steps"], "train_s": card["train_s"],
            "tokens_per_s": card["tokens_per_s"], "peak_rss_mib": card["peak_rss_mib"],
            "step1_loss": card["loss_history"][0]["loss"], "losses": [h["loss"] for h in card["loss_history"]],
            "eval": {"metric": metric, **results["metrics"][metric], "n": results["counts"]["n"],
                     "seconds": round(time.perf_counter() - started, 1)}}


def reward(args) -> dict:
    folder = Path(args.out)
    subprocess.run([sys.executable, "-m", "taskfit.cli", "reward", "train", "--method", "lora", "--data", args.data,
                    "--max-length", "256", "--batch-size", "8", "--max-steps", str(args.max_steps), "--dev-share",
                    "0.2", "--logging-steps", "1", "--no-progress", "--output", str(folder)], check=True)
    card = json.loads((folder / "run_card.json").read_text())
    return {"kind": "reward", "steps": card["steps"], "train_s": card["train_s"],
            "s_per_step": round(card["train_s"] / card["steps"], 2), "peak_rss_mib": card["peak_rss_mib"],
            "step1_loss": card["loss_history"][0]["loss"], "losses": [h["loss"] for h in card["loss_history"]],
            "dev_accuracy": card["dev"]["accuracy"]["value"]}


def score(args) -> dict:
    import torch

    from taskfit.models.catalog import resolve_model
    from taskfit.models.loading import load_causal_lm
    from taskfit.prompting.preference_tokens import PreferenceTokenizer
    from taskfit.prompting.tokens import Tokenizer
    from taskfit.tuning import align
    from taskfit.tuning.common import preference_split

    torch.set_num_threads(2)
    dev = preference_split([Path(args.data)], None, 0.2, 1234).dev[: args.pairs]
    _, location = resolve_model("smollm2-135m-instruct")
    loaded = load_causal_lm(location)
    pairs = PreferenceTokenizer(Tokenizer(loaded.tokenizer, True), args.max_length).pairs(dev)
    started = time.perf_counter()
    if hasattr(align, "pair_logps"):  # this change: both answers on one prompt pass
        chosen, rejected = align.pair_logps(loaded.model, pairs)
    else:  # before: each answer after its own copy of the prompt
        chosen, rejected = (align.answer_logps(loaded.model, pairs, w) for w in ("chosen", "rejected"))
    seconds = time.perf_counter() - started
    return {"kind": "score", "pairs": len(pairs), "seconds": round(seconds, 2),
            "tokens": sum(len(p.chosen) + len(p.rejected) for p in pairs), "chosen": chosen, "rejected": rejected}


def compare(before: dict, after: dict) -> str:
    lines = ["| measure | before | after | after / before |", "|---|---|---|---|"]
    if before["kind"] in ("sft", "reward"):
        keys = ("train_s", "tokens_per_s", "peak_rss_mib", "step1_loss") if before["kind"] == "sft" else (
            "s_per_step", "peak_rss_mib", "step1_loss", "dev_accuracy")
        for key in keys:
            lines.append(f"| {key} | {before[key]} | {after[key]} | {after[key] / before[key]:.3f} |")
        diff = max(abs(a - b) for a, b in zip(before["losses"], after["losses"]))
        lines.append(f"| largest logged-loss difference over {len(before['losses'])} steps | | {diff:.2e} | |")
        if "eval" in before:
            lines.append(f"| held-out {before['eval']['metric']} ({before['eval']['n']} rows) | "
                         f"{before['eval']['value']:.4f} | {after['eval']['value']:.4f} | |")
    else:
        lines.append(f"| seconds for {before['pairs']} pairs (both answers) | {before['seconds']} | "
                     f"{after['seconds']} | {before['seconds'] / after['seconds']:.2f}x faster |")
        diff = max(abs(a - b) for w in ("chosen", "rejected") for a, b in zip(before[w], after[w]))
        lines.append(f"| largest log-probability difference | | {diff:.2e} | |")
    return "\n".join(lines)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="kind", required=True)
    p = sub.add_parser("sft")
    p.add_argument("--task", default="nlpcc_kbqa")
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--limit", type=int, default=400)
    p.add_argument("--max-steps", type=int, default=50)
    p.add_argument("--eval-limit", type=int, default=100)
    p.add_argument("--tune-args", default="", help="more `taskfit tune` flags, e.g. '--micro-batch-tokens 512'")
    p.add_argument("--out", required=True)
    p = sub.add_parser("reward")
    p.add_argument("--data", default="../shared/data/hh_rlhf/train.jsonl")
    p.add_argument("--max-steps", type=int, default=10)
    p.add_argument("--out", required=True)
    p = sub.add_parser("score")
    p.add_argument("--data", default="../shared/data/hh_rlhf/train.jsonl")
    p.add_argument("--pairs", type=int, default=341)
    p.add_argument("--max-length", type=int, default=192)
    p.add_argument("--out", required=True)
    p = sub.add_parser("compare")
    p.add_argument("before")
    p.add_argument("after")
    args = parser.parse_args()
    if args.kind == "compare":
        print(compare(json.loads(Path(args.before).read_text()), json.loads(Path(args.after).read_text())))
        return
    result = {"sft": sft, "reward": reward, "score": score}[args.kind](args)
    Path(args.out + ".json").write_text(json.dumps(result, indent=1) + "\n")
    log.info("%s", {k: v for k, v in result.items() if k not in ("chosen", "rejected", "losses")})


if __name__ == "__main__":
    main()
