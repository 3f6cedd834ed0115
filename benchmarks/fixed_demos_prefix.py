"""4-shot with fixed demonstrations vs zero-shot on the hf backend, with and without running the shared prompt
prefix (system prompt + demos) once. SST-2 dev, log-likelihood mode, embedded model, no cache. Every run starts with
an empty prefix store (where the backend has one: since issue 17 a shared prefix runs once per run, before once per
batch), so no run profits from the one before; the script runs unchanged against older commits for a side-by-side.

Runs of ~5 s vary by 10-20% on this machine, and the first run in a process is slower (allocator warm-up), so a
warm-up run (16 rows, not counted) comes first, zero-shot and the shared-prefix run take turns ``--repeats`` times (the
prefix run per context, 5x slower, runs once); the table gives the median seconds and the range.

    .venv/bin/python benchmarks/fixed_demos_prefix.py --data-dir ../shared/data [--limit 100] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
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
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    backend = load_backend("hf", "smollm2-135m-instruct")
    fixed = {"selector": "fixed", "k": 4, "indices": [0, 1, 2, 3]}
    runs = [("zero-shot", "zero_shot", {}, SHARED_PREFIX_MIN_TOKENS),
            ("4-shot fixed, prefix run per context", "few_shot", fixed, 10**9),
            ("4-shot fixed, shared prefix once", "few_shot", fixed, SHARED_PREFIX_MIN_TOKENS)]
    rows = []
    records: dict[str, dict] = {}
    store_tokens = backend.runner.prefixes.max_tokens if hasattr(backend, "runner") else 0
    warm_up = [("warm-up", "zero_shot", {}, SHARED_PREFIX_MIN_TOKENS, 16)]
    turns = [(label, strategy, options, min_tokens, args.limit) for label, strategy, options, min_tokens in runs]
    slow = turns[1]  # the prefix run per context (5x the others): once, at the end
    for label, strategy, strategy_args, min_tokens, limit in warm_up + [t for t in turns if t != slow] * args.repeats \
            + [slow]:
        backend.runner.shared_prefix_min_tokens = min_tokens
        if hasattr(backend, "prefixes"):
            backend.runner.prefixes = type(backend.runner.prefixes)(store_tokens if min_tokens < 10**9 else 0)
        out = Path("runs/bench-prefix") / label.replace(" ", "_").replace(",", "")
        shutil.rmtree(out, ignore_errors=True)
        config = RunConfig(task="sst2", data_dir=args.data_dir, split="dev", limit=limit, strategy=strategy,
                           strategy_args=strategy_args, output=out, cache=False)
        before = dict(backend.stats)
        res = evaluate(config, backend=backend, progress=False)
        if label == "warm-up":
            continue
        tokens = backend.stats["input_tokens"] - before["input_tokens"]
        record = records.setdefault(label, {"label": label, "n": res["counts"]["n"], "eval_s_runs": []})
        record["eval_s_runs"].append(res["timings"]["eval_s"])
        record.update({"accuracy": res["metrics"]["accuracy"], "input_tokens": tokens,
                       "eval_s": statistics.median(record["eval_s_runs"]),
                       "predictions": [json.loads(line)["prediction"]
                                       for line in (out / "samples.jsonl").read_text().splitlines() if line]})
    records = [records[label] for label, *_ in runs]
    base = records[0]["eval_s"]
    for r in records:
        acc = r["accuracy"]
        runs_s = r["eval_s_runs"]
        rows.append([r["label"], r["n"], f"{acc['value']:.3f} [{acc['ci_low']:.3f}, {acc['ci_high']:.3f}]",
                     f"{r['eval_s']:.2f} ({min(runs_s):.2f}-{max(runs_s):.2f})", f"{r['eval_s'] / base:.2f}x",
                     r["input_tokens"]])
    table = markdown_table(["run", "n", "accuracy [95% CI]", f"eval seconds, median of {args.repeats} (range)",
                            "vs zero-shot", "tokens run"], rows)
    Path(args.out + ".json").write_text(json.dumps(records, indent=2) + "\n")
    same = records[1]["predictions"] == records[2]["predictions"]
    Path(args.out + ".md").write_text(f"SST-2 dev, {args.limit} rows, log-likelihood mode, hf backend, no cache, "
                                      f"zero-shot and shared prefix taking turns {args.repeats} times after a "
                                      "warm-up (the prefix run per context once); "
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
