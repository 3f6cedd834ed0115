"""Planning strategies on GSM8K (issue 15): zero-shot chain of thought vs plan-and-solve vs program-aided answers with
feedback, on the same seeded rows of the visible train split (GSM8K's test split is not in ../shared/data), generate
mode, embedded model, no response cache. Reports accuracy with its 95% CI, paired differences against CoT, the
programs' execution success, revisions used, and seconds.

    python benchmarks/planning_gsm8k.py --data-dir ../shared/data --limit 200
        (writes benchmarks/results/planning_gsm8k.{md,json}; run folders under runs/bench-planning)
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path

from taskfit.compare import compare_runs
from taskfit.evaluation import evaluate
from taskfit.report.table import markdown_table
from taskfit.settings import RunConfig

RUNS = [("zero-shot CoT", "cot", {}), ("plan-and-solve", "plan_and_solve", {}),
        ("program + feedback (2 revisions)", "program", {"revisions": 2})]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--backend", default="hf")
    parser.add_argument("--out", default="benchmarks/results/planning_gsm8k")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    records, folders = [], []
    for label, strategy, options in RUNS:
        folder = Path("runs/bench-planning") / strategy
        shutil.rmtree(folder, ignore_errors=True)
        res = evaluate(RunConfig(task="gsm8k", data_dir=args.data_dir, split="train", limit=args.limit,
                                 sample="random", mode="generate", strategy=strategy, strategy_args=options,
                                 output=folder, cache=False, backend=args.backend), progress=True)
        samples = [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines() if line]
        record = {"label": label, "strategy": strategy, "n": res["counts"]["n"],
                  "accuracy": res["metrics"]["accuracy"], "eval_s": res["timings"]["eval_s"],
                  "parse_failures": res["counts"]["parse_failures"], "folder": str(folder)}
        if strategy == "program":
            attempts = [a for s in samples for a in s["attempts"]]
            record.update(programs=len(attempts), programs_ran=sum(a["ok"] for a in attempts),
                          rows_with_a_result=sum(s["program_ok"] for s in samples),
                          revisions_used=sum(s["revisions_used"] for s in samples),
                          rows_revised=sum(s["revisions_used"] > 0 for s in samples),
                          revised_then_right=sum(s["revisions_used"] > 0 and s["correct"] for s in samples))
        records.append(record)
        folders.append(folder)
    rows = []
    for record, folder in zip(records, folders):
        acc = record["accuracy"]
        delta = ""
        if folder != folders[0]:
            paired = compare_runs(folders[0], folder, n_resamples=2000)
            primary = next(c for c in paired["comparisons"] if c["metric"] == "accuracy")
            delta = (f"{primary['diff']:+.3f} [{primary['ci_low']:+.3f}, {primary['ci_high']:+.3f}], "
                     f"p = {primary['p_mcnemar']:.3f}")
        rows.append([record["label"], record["n"], f"{acc['value']:.3f} [{acc['ci_low']:.3f}, {acc['ci_high']:.3f}]",
                     delta, record["parse_failures"], f"{record['eval_s']:.0f}"])
    table = markdown_table(["strategy", "n", "accuracy [95% CI]", "Δ vs CoT [95% CI], McNemar p", "no answer",
                            "eval s"], rows)
    program = next(r for r in records if r["strategy"] == "program")
    notes = (f"Programs: {program['programs']} written for {program['n']} rows; {program['programs_ran']} ran to a "
             f"result ({program['programs_ran'] / max(1, program['programs']):.1%}); {program['rows_with_a_result']} "
             f"rows ended with a numeric result ({program['rows_with_a_result'] / program['n']:.1%}); "
             f"{program['rows_revised']} rows used revisions ({program['revisions_used']} in all), "
             f"{program['revised_then_right']} of them then right.")
    text = (f"GSM8K visible train split, {args.limit} seeded random rows, generate mode, {args.backend} backend, "
            f"embedded SmolLM2-135M-Instruct, no cache.\n\n{table}\n\n{notes}\n")
    Path(args.out + ".md").write_text(text)
    Path(args.out + ".json").write_text(json.dumps(records, indent=2) + "\n")
    print(text)


if __name__ == "__main__":
    main()
