"""Every benchmark task on the embedded model, 50 rows of its ../shared/data split: zero-shot and at least one
other strategy that fits the task, with every metric, its 95% bootstrap CI, the parse-failure rate and seconds.

The 50 rows are a seeded random sample (`--limit 50 --sample random`, seed 1234, kept in data order), the same
rows for every strategy of a task: several files are sorted by label (the first 50 rows of ag_news dev are all
Business, of mr validation all positive), so "the first 50" would measure one class.

Splits: the task's eval split where ../shared/data has it (sst2/ag_news/stsb/truthfulqa/squad: dev, mr:
validation), else train (r8, sts12, gsm8k, nlpcc2016_kbqa hold only train there); demonstrations then come
from the same split, and a query never sees itself as a demo. Runs go one after another in one process
(two torch processes on 2 cores slow each other 2-3x).

    .venv/bin/python benchmarks/tasks_limit50.py --data-dir ../shared/data [--only LABEL ...]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path

from taskfit.evaluation import evaluate
from taskfit.models import load_backend
from taskfit.report.table import markdown_table
from taskfit.settings import RunConfig

log = logging.getLogger("benchmarks.tasks_limit50")
LL, GEN = "loglikelihood", "generate"
KNN = {"selector": "knn"}
RUNS = [
    # task, split, strategy, mode, strategy args, pool split
    ("sst2", "dev", "zero_shot", LL, {}, None),
    ("sst2", "dev", "few_shot", LL, {**KNN, "k": 4, "pool_limit": 2000}, None),
    ("mr", "validation", "zero_shot", LL, {}, None),
    ("mr", "validation", "few_shot", LL, {"selector": "random", "k": 4}, None),
    ("ag_news", "dev", "zero_shot", LL, {}, None),
    ("ag_news", "dev", "few_shot", LL, {**KNN, "k": 2}, None),
    ("r8", "train", "zero_shot", LL, {}, None),
    ("r8", "train", "few_shot", GEN, {**KNN, "k": 2, "pool_limit": 2000}, None),
    ("stsb", "dev", "zero_shot", LL, {}, None),
    ("stsb", "dev", "zero_shot", GEN, {"answer_format": "json"}, None),
    ("stsb", "dev", "few_shot", LL, {**KNN, "k": 2, "pool_limit": 2000}, None),
    ("sts12", "train", "zero_shot", LL, {}, None),
    ("sts12", "train", "few_shot", LL, {**KNN, "k": 2}, None),
    ("truthfulqa_mc1", "dev", "zero_shot", LL, {}, None),
    ("truthfulqa_mc1", "dev", "zero_shot", GEN, {"answer_format": "json"}, None),
    ("truthfulqa_mc1", "dev", "cot", LL, {"max_reasoning_tokens": 64}, None),
    ("truthfulqa_mc2", "dev", "zero_shot", LL, {}, None),
    ("truthfulqa_mc2", "dev", "cot", LL, {"max_reasoning_tokens": 64}, None),
    ("squad", "dev", "zero_shot", GEN, {}, None),
    ("squad", "dev", "few_shot", GEN, {"selector": "random", "k": 1}, "dev"),
    ("gsm8k", "train", "zero_shot", GEN, {}, None),
    ("gsm8k", "train", "cot", GEN, {"max_reasoning_tokens": 128}, None),
    ("nlpcc_kbqa", "train", "zero_shot", LL, {}, None),
    ("nlpcc_kbqa", "train", "zero_shot", GEN, {}, None),
    ("nlpcc_kbqa", "train", "few_shot", GEN, {**KNN, "k": 2, "pool_limit": 3000}, None),
]


def label_of(task: str, strategy: str, mode: str, args: dict) -> str:
    shown = ",".join(f"{k}={v}" for k, v in args.items() if k != "pool_limit")
    return f"{task} {strategy}{f'({shown})' if shown else ''} {'LL' if mode == LL else 'gen'}"


def metric_cells(record: dict) -> str:
    parts = []
    for name, m in record["metrics"].items():
        ci = "" if m["ci_low"] is None else f" [{m['ci_low']:.3f}, {m['ci_high']:.3f}]"
        parts.append(f"{name} {m['value']:.3f}{ci}")
    return "<br>".join(parts)


def table_row(record: dict) -> list:
    seconds = record["timings"]["eval_s"] + record["timings"]["prepare_s"]
    return [record["label"], record["split"], record["n"], metric_cells(record),
            f"{record['counts']['parse_failure_rate']:.0%}", f"{seconds:.1f}"]


HEADERS = ["run", "split", "n", "metrics [95% CI]", "parse fail", "seconds"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--out", default="benchmarks/results/tasks_limit50")
    parser.add_argument("--runs-dir", default="runs/bench-tasks")
    parser.add_argument("--only", nargs="*", help="run only labels containing these strings; keep other recorded rows")
    parser.add_argument("--render", action="store_true", help="only rewrite the .md table from the recorded .json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    out_json = Path(args.out + ".json")
    previous = {r["label"]: r for r in json.loads(out_json.read_text())} if out_json.is_file() else {}
    records = list(previous.values()) if args.render else []
    backend = None if args.render else load_backend("hf", "smollm2-135m-instruct")
    for task, split, strategy, mode, strategy_args, pool_split in [] if args.render else RUNS:
        label = label_of(task, strategy, mode, strategy_args)
        if args.only and not any(o in label for o in args.only):
            if label in previous:
                records.append(previous[label])
            continue
        run_dir = Path(args.runs_dir) / label.replace(" ", "_").replace("/", "-")
        shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run, never a resumed one: timings must be whole
        config = RunConfig(task=task, split=split, strategy=strategy, mode=mode, strategy_args=strategy_args,
                           pool_split=pool_split, data_dir=args.data_dir, limit=args.limit, sample="random",
                           output=run_dir)
        res = evaluate(config, backend=backend, progress=False)
        records.append({"label": label, "task": task, "split": split, "strategy": strategy, "mode": mode,
                        "strategy_args": strategy_args, "n": res["counts"]["n"], "metrics": res["metrics"],
                        "counts": res["counts"], "timings": res["timings"],
                        "knowledge_base": res.get("knowledge_base")})
        log.info("\n%s", markdown_table(HEADERS, [table_row(records[-1])]))
        out_json.parent.mkdir(parents=True, exist_ok=True)
        out_json.write_text(json.dumps(records, indent=2, ensure_ascii=False) + "\n")
    order = {label_of(t, s, m, a): i for i, (t, _, s, m, a, _) in enumerate(RUNS)}
    records.sort(key=lambda r: order.get(r["label"], len(order)))
    out_json.write_text(json.dumps(records, indent=2, ensure_ascii=False) + "\n")
    text = (f"Embedded smollm2-135m-instruct (hf backend, fp32, 2-core CPU), {args.limit} rows per task.\n"
            "Rows: a seeded random sample (`--limit 50 --sample random`, seed 1234), "
            "the same rows for every run of a task.\n"
            "Command: `.venv/bin/python benchmarks/tasks_limit50.py --data-dir ../shared/data`\n\n"
            + markdown_table(HEADERS, [table_row(r) for r in records]) + "\n")
    Path(args.out + ".md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
