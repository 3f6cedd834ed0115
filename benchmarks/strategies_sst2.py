"""Prompting strategies on SST-2 dev with the embedded model: accuracy with CI, parse failures, seconds.

Pool (demonstrations) = the first 20,000 rows of SST-2 train; eval = the first N dev rows (fewer for the
strategies that generate long reasoning or score twice, to fit this 2-core CPU: zero-shot CoT alone took
~14 minutes for 300 rows here). Answers are scored by log-likelihood
after each strategy's answer prefix. Also checks that a seeded self-consistency run repeated gives an
identical samples.jsonl.

    .venv/bin/python benchmarks/strategies_sst2.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from taskfit.evaluation import evaluate
from taskfit.models import load_backend
from taskfit.report.table import markdown_table
from taskfit.settings import RunConfig

POOL = {"pool_limit": 20000}
RUNS = [
    # label, strategy, args, rows
    ("zero-shot", "zero_shot", {}, 300),
    ("few-shot random k=4", "few_shot", {"selector": "random", "k": 4, **POOL}, 300),
    ("few-shot kNN k=4", "few_shot", {"selector": "knn", "k": 4, **POOL}, 300),
    ("few-shot random k=4, calibrated", "few_shot", {"selector": "random", "k": 4, "calibrate": True, **POOL}, 100),
    ("few-shot kNN k=4, calibrated", "few_shot", {"selector": "knn", "k": 4, "calibrate": True, **POOL}, 100),
    ("zero-shot CoT", "cot", {}, 300),
    ("self-consistency n=5 (CoT, majority)", "self_consistency", {"n": 5}, 40),
    ("CARP zero-shot", "carp", {"k": 0}, 60),
    ("CARP kNN k=2", "carp", {"k": 2, "selector": "knn", "pool_limit": 2000}, 40),
]


def _row(record: dict) -> list:
    acc, f1 = record["metrics"]["accuracy"], record["metrics"]["macro_f1"]
    seconds = record["timings"]["eval_s"] + record["timings"]["prepare_s"]
    return [record["label"], record["n"], acc["value"], f"[{acc['ci_low']:.3f}, {acc['ci_high']:.3f}]", f1["value"],
            f"{record['counts']['parse_failure_rate']:.1%}", round(seconds, 1), round(seconds / record["n"], 2)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--out", default="benchmarks/results/strategies_sst2")
    parser.add_argument("--runs-dir", default="runs/bench-strategies")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every row count (quick checks)")
    parser.add_argument("--only", nargs="*", help="run only these labels, keeping the other rows already recorded")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    backend = load_backend("hf", "smollm2-135m-instruct")
    headers = ["strategy", "n", "accuracy", "95% CI", "macro-F1", "parse fail", "seconds", "s/example"]
    rows, records = [], []
    previous = {}
    if args.only and Path(args.out + ".json").is_file():
        previous = {r["label"]: r for r in json.loads(Path(args.out + ".json").read_text())}
    for label, strategy, strategy_args, n in RUNS:
        if args.only and label not in args.only:
            if label in previous:
                records.append(previous[label])
                rows.append(_row(previous[label]))
            continue
        n = max(2, int(n * args.scale))
        config = RunConfig(task="sst2", strategy=strategy, strategy_args=strategy_args, data_dir=args.data_dir,
                           split="dev", limit=n, output=Path(args.runs_dir) / label.replace(" ", "_"))
        res = evaluate(config, backend=backend, progress=False)
        records.append({"label": label, "strategy": strategy, "strategy_args": strategy_args, "n": n,
                        "metrics": res["metrics"], "counts": res["counts"], "timings": res["timings"],
                        "strategy_info": res["strategy_info"]})
        rows.append(_row(records[-1]))
        logging.info("%s", markdown_table(headers, rows[-1:]))
        Path(args.out + ".json").parent.mkdir(parents=True, exist_ok=True)
        Path(args.out + ".json").write_text(json.dumps(records, indent=2) + "\n")

    # determinism: a sampled strategy run twice gives byte-identical samples
    texts = []
    for attempt in ("a", "b"):
        out = Path(args.runs_dir) / f"repeat_{attempt}"
        evaluate(RunConfig(task="sst2", strategy="self_consistency", strategy_args={"n": 3, "max_reasoning_tokens": 32},
                           data_dir=args.data_dir, split="dev", limit=5, output=out, bootstrap_samples=0),
                 backend=backend, progress=False)
        texts.append((out / "samples.jsonl").read_text())
    identical = texts[0] == texts[1]
    table = markdown_table(headers, rows)
    summary = f"{table}\n\nself-consistency rerun (5 rows, n=3) gives identical samples.jsonl: {identical}\n"
    Path(args.out + ".md").write_text(summary)
    print(summary)


if __name__ == "__main__":
    main()
