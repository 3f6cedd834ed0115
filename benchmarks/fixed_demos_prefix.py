"""4-shot with fixed demonstrations vs zero-shot on the hf backend, with and without running the shared prompt
prefix (system prompt + demos) once. SST-2 dev, log-likelihood mode, embedded model, no cache. Every run starts with
an empty prefix store (where the backend has one: since issue 17 a shared prefix runs once per run, before once per
batch), so no run profits from the one before; the script runs unchanged against older commits for a side-by-side.

    .venv/bin/python benchmarks/fixed_demos_prefix.py --data-dir ../shared/data [--limit 100]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from taskfit.evaluation import evaluate
from taskfit.models import load_backend
from taskfit.models.hf import SHARED_PREFIX_MIN_TOKENS
from taskfit.report.table import markdown_table
from taskfit.settings import RunConfig


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--out", default="benchmarks/results/fixed_demos_prefix")
    args = parser.parse_args()
    backend = load_backend("hf", "smollm2-135m-instruct")
    fixed = {"selector": "fixed", "k": 4, "indices": [0, 1, 2, 3]}
    runs = [("zero-shot", "zero_shot", {}, SHARED_PREFIX_MIN_TOKENS),
            ("4-shot fixed, prefix run per context", "few_shot", fixed, 10**9),
            ("4-shot fixed, shared prefix once", "few_shot", fixed, SHARED_PREFIX_MIN_TOKENS)]
    rows, records = [], []
    store_tokens = backend.prefixes.max_tokens if hasattr(backend, "prefixes") else 0
    for label, strategy, strategy_args, min_tokens in runs:
        backend.shared_prefix_min_tokens = min_tokens
        if hasattr(backend, "prefixes"):
            backend.prefixes = type(backend.prefixes)(store_tokens if min_tokens < 10**9 else 0)
        out = Path("runs/bench-prefix") / label.replace(" ", "_").replace(",", "")
        shutil.rmtree(out, ignore_errors=True)
        config = RunConfig(task="sst2", data_dir=args.data_dir, split="dev", limit=args.limit, strategy=strategy,
                           strategy_args=strategy_args, output=out, cache=False)
        before = dict(backend.stats)
        res = evaluate(config, backend=backend, progress=False)
        tokens = backend.stats["input_tokens"] - before["input_tokens"]
        records.append({"label": label, "n": res["counts"]["n"], "accuracy": res["metrics"]["accuracy"],
                        "eval_s": res["timings"]["eval_s"], "input_tokens": tokens,
                        "predictions": [json.loads(line)["prediction"]
                                        for line in (out / "samples.jsonl").read_text().splitlines() if line]})
    base = records[0]["eval_s"]
    for r in records:
        acc = r["accuracy"]
        rows.append([r["label"], r["n"], f"{acc['value']:.3f} [{acc['ci_low']:.3f}, {acc['ci_high']:.3f}]",
                     f"{r['eval_s']:.1f}", f"{r['eval_s'] / base:.2f}x", r["input_tokens"]])
    table = markdown_table(["run", "n", "accuracy [95% CI]", "eval seconds", "vs zero-shot", "tokens run"], rows)
    Path(args.out + ".json").write_text(json.dumps(records, indent=2) + "\n")
    same = records[1]["predictions"] == records[2]["predictions"]
    Path(args.out + ".md").write_text(f"SST-2 dev, {args.limit} rows, log-likelihood mode, hf backend, no cache; "
                                      f"commit {_commit()}.\n\n" + table + "\n\nPredictions with the shared "
                                      f"prefix identical to running each prompt in full: {same}.\n")
    print(table)


def _commit() -> str:
    import subprocess

    import taskfit  # the commit of the taskfit code measured (a second worktree on PYTHONPATH for "before")

    return subprocess.run(["git", "-C", str(Path(taskfit.__file__).parent), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip()


if __name__ == "__main__":
    main()
