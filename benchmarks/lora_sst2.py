"""LoRA on SST-2 with the embedded model: train on a seeded sample of the train split (~20 minutes on this CPU),
then evaluate the adapter and the untuned model zero-shot on the same dev rows with the same prompt.

    .venv/bin/python benchmarks/lora_sst2.py --data-dir ../shared/data [--train-limit 1000] [--eval-limit 872]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from taskfit.compare import compare_runs
from taskfit.evaluation import evaluate
from taskfit.report.table import markdown_table
from taskfit.settings import RunConfig


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--train-limit", type=int, default=1000)
    parser.add_argument("--eval-limit", type=int, default=872)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--out", default="benchmarks/results/lora_sst2")
    parser.add_argument("--reuse-adapter", action="store_true", help="evaluate the adapter trained by an earlier run")
    args = parser.parse_args()
    adapter = Path("runs/bench-lora-sst2")
    if not (args.reuse_adapter and (adapter / "run_card.json").is_file()):
        shutil.rmtree(adapter, ignore_errors=True)
        subprocess.run([str(Path(sys.executable).parent / "taskfit"), "tune", "--method", "lora", "--task", "sst2",
                        "--data-dir", args.data_dir, "--limit", str(args.train_limit), "--epochs", "1", "--batch-size",
                        "8", "--lr", str(args.lr), "--dropout", "0.05", "--save-steps", "50", "--no-progress",
                        "--output", str(adapter)],
                       check=True)
    card = json.loads((adapter / "run_card.json").read_text())
    rows, results = [], {}
    for label, extra in (("zero-shot (untuned)", {}), ("LoRA", {"adapter": adapter})):
        out = Path(f"runs/bench-lora-eval-{'lora' if extra else 'base'}")
        shutil.rmtree(out, ignore_errors=True)
        res = evaluate(RunConfig(task="sst2", data_dir=args.data_dir, split="dev", limit=args.eval_limit,
                                 output=out, cache=False, **extra), progress=False)
        results[label] = res
        acc = res["metrics"]["accuracy"]
        rows.append([label, res["counts"]["n"], f"{acc['value']:.4f} [{acc['ci_low']:.4f}, {acc['ci_high']:.4f}]",
                     f"{res['metrics']['macro_f1']['value']:.4f}", f"{res['timings']['eval_s']:.1f}"])
    paired = compare_runs("runs/bench-lora-eval-base", "runs/bench-lora-eval-lora", n_resamples=2000, seed=0)
    diff = next(c for c in paired["comparisons"] if c["metric"] == "accuracy")
    table = markdown_table(["model", "n", "accuracy [95% CI]", "macro-F1", "eval s"], rows)
    summary = (f"LoRA r={card['config']['rank']} alpha={card['config']['alpha']} "
               f"on {card['data']['n']} SST-2 train rows "
               f"(1 epoch, batch 8, lr {args.lr}, {card['steps']} steps): {card['train_s']:.0f} s, "
               f"{card['tokens_per_s']} tokens/s, peak RSS {card['peak_rss_mib']:.0f} MiB, trainable "
               f"{card['trainable_parameters']:,} parameters ({100 * card['trainable_share']:.2f}%), loss "
               f"{card['first_loss']} -> {card['final_loss']}.\n\nPaired difference LoRA - zero-shot: "
               f"{diff['diff']:+.4f} [{diff['ci_low']:+.4f}, {diff['ci_high']:+.4f}], McNemar p = {diff['p_mcnemar']}")
    Path(args.out + ".md").write_text(table + "\n\n" + summary + "\n")
    Path(args.out + ".json").write_text(json.dumps({"run_card": card, "paired": diff, "rows": rows}, indent=2) + "\n")
    print(table)
    print(summary)


if __name__ == "__main__":
    main()
