"""The hf backend's ceiling on this machine: tokens/s of plain batched forward passes of the embedded model
(random token ids, no padding, only the last position's logits, as log-likelihood scoring computes), next to
the tokens/s a real SST-2 zero-shot log-likelihood evaluation achieves.

    .venv/bin/python benchmarks/forward_ceiling.py --data-dir ../shared/data [--limit 300]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

from taskfit.evaluation import evaluate
from taskfit.models import load_backend
from taskfit.report.table import markdown_table
from taskfit.settings import RunConfig


def ceiling(model, batch: int, length: int, repeats: int = 5) -> float:
    ids = torch.randint(100, 20000, (batch, length))
    with torch.inference_mode():
        model(input_ids=ids, logits_to_keep=1)  # warm-up
        start = time.perf_counter()
        for _ in range(repeats):
            model(input_ids=ids, logits_to_keep=1)
    return batch * length * repeats / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--limit", type=int, default=300)
    parser.add_argument("--out", default="benchmarks/results/forward_ceiling")
    args = parser.parse_args()
    backend = load_backend("hf", "smollm2-135m-instruct")
    rows = []
    for batch in (1, 8, 16, 32):
        for length in (64, 128):
            rows.append({"batch": batch, "length": length, "tokens_per_s": ceiling(backend.model, batch, length)})
    out = Path("runs/bench-ceiling")
    shutil.rmtree(out, ignore_errors=True)
    before = dict(backend.stats)
    res = evaluate(RunConfig(task="sst2", data_dir=args.data_dir, split="dev", limit=args.limit, output=out,
                             cache=False), backend=backend, progress=False)
    run_tokens = backend.stats["input_tokens"] - before["input_tokens"]
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text(encoding="utf-8").splitlines()]
    prompt_tokens = sum(len(backend.tokenizer(s["prompt"], add_special_tokens=False).input_ids) for s in samples)
    eval_s = res["timings"]["eval_s"]
    best = max(r["tokens_per_s"] for r in rows)
    result = {"ceiling": rows, "best_ceiling_tokens_per_s": best, "eval": {
        "n": len(samples), "eval_s": eval_s, "examples_per_s": len(samples) / eval_s,
        "tokens_run": run_tokens, "tokens_run_per_s": run_tokens / eval_s,
        "prompt_tokens": prompt_tokens, "prompt_tokens_per_s": prompt_tokens / eval_s,
        "accuracy": res["metrics"]["accuracy"]["value"]}}
    Path(args.out + ".json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown_table(["batch", "tokens per row", "forward tokens/s"],
                           [[r["batch"], r["length"], f"{r['tokens_per_s']:.0f}"] for r in rows])
    e = result["eval"]
    summary = (f"\nSST-2 dev zero-shot LL, {e['n']} rows: {e['eval_s']:.1f} s, {e['examples_per_s']:.2f} examples/s, "
               f"accuracy {e['accuracy']:.4f}; tokens run {e['tokens_run']} ({e['tokens_run_per_s']:.0f}/s = "
               f"{e['tokens_run_per_s'] / best:.0%} of the best ceiling); prompt tokens scored {e['prompt_tokens']} "
               f"({e['prompt_tokens_per_s']:.0f}/s = {e['prompt_tokens_per_s'] / best:.0%} of the ceiling)\n")
    Path(args.out + ".md").write_text(table + "\n" + summary)
    print(table + "\n" + summary)


if __name__ == "__main__":
    main()
