"""Training throughput and memory of every tuning method on the same data: SST-2 train rows with the evaluation
prompt, the embedded model, the same batch size and number of steps; each method in its own process (peak RSS is
that process's).

    .venv/bin/python benchmarks/tuning_methods.py --data-dir ../shared/data [--steps 12] [--methods lora full ...]
    .venv/bin/python benchmarks/tuning_methods.py --task r8 --max-length 256 --steps 6 --methods lora full \
        --out benchmarks/results/tuning_methods_r8       # long samples (news articles cut at 256 tokens)
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from taskfit.report.table import markdown_table


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--methods", nargs="+", default=["lora", "full", "ia3", "prefix", "prompt"])
    parser.add_argument("--out", default="benchmarks/results/tuning_methods")
    parser.add_argument("--extra", nargs="*", default=[], help="more `taskfit tune` flags for every method")
    args = parser.parse_args()
    cards = {}
    for method in args.methods:
        out = Path(f"runs/bench-tune-{args.task}-{method}")
        shutil.rmtree(out, ignore_errors=True)
        subprocess.run([str(Path(sys.executable).parent / "taskfit"), "tune", "--method", method, "--task", args.task,
                        "--data-dir", args.data_dir, "--limit", str(args.steps * args.batch_size), "--max-steps",
                        str(args.steps), "--batch-size", str(args.batch_size), "--save-steps", "1000",
                        "--max-length", str(args.max_length), *args.extra,
                        "--no-progress", "--output", str(out)], check=True, stdout=subprocess.DEVNULL)
        cards[method] = json.loads((out / "run_card.json").read_text())
    rows = []
    base = cards.get("full")
    for method, card in cards.items():
        speed = f"{card['tokens_per_s'] / base['tokens_per_s']:.2f}x" if base else ""
        memory = f"{card['peak_rss_mib'] / base['peak_rss_mib']:.2f}x" if base else ""
        rows.append([method, f"{card['trainable_parameters']:,}", f"{100 * card['trainable_share']:.3f}%",
                     card["steps"], f"{card['train_s']:.1f}", card["tokens_per_s"], speed,
                     f"{card['peak_rss_mib']:.0f}", memory, f"{card['first_loss']:.3f} -> {card['final_loss']:.3f}"])
    table = markdown_table(["method", "trainable params", "share", "steps", "train s", "tokens/s", "vs full",
                            "peak RSS MiB", "vs full", "loss"], rows)
    Path(args.out + ".md").write_text(
        f"{args.task} train, {args.steps * args.batch_size} rows (max {args.max_length} tokens, mean "
        f"{next(iter(cards.values()))['data']['tokens'] / (args.steps * args.batch_size):.0f}), {args.steps} steps "
        f"of batch {args.batch_size}, the "
        "evaluation prompt, embedded model fp32, 2-core CPU, one method per process.\n\n" + table + "\n")
    Path(args.out + ".json").write_text(json.dumps(cards, indent=2) + "\n")
    print(table)


if __name__ == "__main__":
    main()
