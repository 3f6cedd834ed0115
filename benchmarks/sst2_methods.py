"""Every way to fit the embedded model to SST-2, on the same dev rows with the same metric: zero-shot, the few-shot
strategy of record (kNN k=4), LoRA, prefix tuning, prompt tuning, IA3, bottleneck adapters, the specialist MiniLM
head, and the LoRA-merged model quantized to int8.

Every tuned row trains on the same 1,000 seeded SST-2 train rows (the LoRA run of ``lora_sst2.py`` is reused);
each training and each evaluation runs in its own process, so its peak RSS is its own. Finished steps are kept in
``runs/bench-table-*`` and reused, so the script can be stopped and run again; ``--only NAME`` redoes one row.

    .venv/bin/python benchmarks/sst2_methods.py --data-dir ../shared/data [--eval-limit 872] [--only ia3 ...]
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import shutil
import subprocess
import sys
from pathlib import Path

from taskfit.compare import compare_runs
from taskfit.report.table import markdown_table

log = logging.getLogger("sst2_methods")

TRAIN_ROWS = 1000
LORA_Q8 = "runs/bench-table-lora-q8_0.gguf"
# name, label, tune method (None: no training), tune flags, eval settings
ROWS = [
    ("zero-shot", "zero-shot (untuned)", None, [], {}),
    ("few-shot", "few-shot kNN k=4", None, [], {"strategy": "few_shot",
                                               "strategy_args": {"selector": "knn", "k": 4, "pool_limit": 20000}}),
    ("lora", "LoRA r=8", "lora", ["--lr", "3e-4", "--dropout", "0.05"], {}),
    ("prefix", "prefix tuning (20 virtual tokens)", "prefix", [], {}),
    ("prompt", "prompt tuning (20 virtual tokens)", "prompt", [], {}),
    ("ia3", "IA3", "ia3", [], {}),
    ("adapter", "bottleneck adapters (64)", "adapter", [], {}),
    ("head", "specialist: MiniLM-L6 + head", "head", ["--epochs", "3"], {}),
    ("head-10k", "specialist, 10,000 train rows, 1 epoch", "head", ["--limit", "10000", "--epochs", "1"], {}),
    ("lora-int8", "LoRA merged, torch int8 (dynamic)", None, [], {"quantize": "int8"}),
    ("lora-q8", "LoRA merged, GGUF Q8_0 on llamacpp", None, [], {"backend": "llamacpp", "model": f"gguf:{LORA_Q8}"}),
]
# Folders an earlier run already filled with the same settings: the LoRA adapter of lora_sst2.py, and the few-shot
# evaluation started from the command line (`taskfit eval --task sst2 --data-dir ../shared/data --split dev --strategy
# few_shot --strategy-arg selector=knn --strategy-arg k=4 --strategy-arg pool_limit=20000 --no-cache --output ...`),
# whose peak RSS was not recorded.
REUSE = {"lora": "runs/bench-lora-sst2"}
REUSE_EVAL = {"few-shot": "runs/bench-table-fewshot-knn"}


def train(name: str, method: str, flags: list[str], data_dir: str) -> dict:
    out = Path(REUSE.get(name, f"runs/bench-table-train-{name}"))
    if not (out / "run_card.json").is_file():
        shutil.rmtree(out, ignore_errors=True)
        subprocess.run([str(Path(sys.executable).parent / "taskfit"), "tune", "--method", method, "--task", "sst2",
                        "--data-dir", data_dir, "--limit", str(TRAIN_ROWS), "--epochs", "1", "--batch-size", "8",
                        "--save-steps", "1000", "--no-progress", "--output", str(out), *flags], check=True)
    return json.loads((out / "run_card.json").read_text())


def evaluate_in_process(spec: dict) -> None:
    """Child process: one evaluation; writes its peak RSS next to results.json."""
    from taskfit.evaluation import evaluate
    from taskfit.settings import RunConfig

    evaluate(RunConfig(**spec), progress=False)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    (Path(spec["output"]) / "peak_rss.json").write_text(json.dumps({"peak_rss_mib": round(peak, 1)}) + "\n")


def evaluate_row(name: str, settings: dict, data_dir: str, limit: int | None, fresh: bool) -> dict:
    out = Path(REUSE_EVAL.get(name, f"runs/bench-table-eval-{name}"))
    if fresh:
        shutil.rmtree(out, ignore_errors=True)
    reused = name in REUSE_EVAL and (out / "results.json").is_file()
    if not reused and not (out / "peak_rss.json").is_file():  # an unfinished run resumes where it stopped
        spec = {"task": "sst2", "data_dir": data_dir, "split": "dev", "output": str(out), "cache": False,
                **({"limit": limit} if limit else {}), **settings}
        subprocess.run([sys.executable, __file__, "--eval-one", json.dumps(spec)], check=True)
    results = json.loads((out / "results.json").read_text())
    peak = out / "peak_rss.json"
    results["peak_rss_mib"] = json.loads(peak.read_text())["peak_rss_mib"] if peak.is_file() else None
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--eval-limit", type=int, help="evaluate the first N dev rows (default: all 872)")
    parser.add_argument("--only", nargs="*", default=[], help="redo these rows (others are read back if done)")
    parser.add_argument("--skip", nargs="*", default=[], help="leave these rows out of this invocation")
    parser.add_argument("--out", default="benchmarks/results/sst2_methods")
    parser.add_argument("--eval-one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.eval_one:
        evaluate_in_process(json.loads(args.eval_one))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    records = {}
    for name, label, method, flags, settings in ROWS:
        if name in args.skip:
            continue
        card = None
        if method is not None:
            if name in args.only and name not in REUSE:
                shutil.rmtree(f"runs/bench-table-train-{name}", ignore_errors=True)
            card = train(name, method, flags, args.data_dir)
            if method == "head":
                settings = {**settings, "model": f"head:{card['output']}"}
            else:
                settings = {**settings, "adapter": card["output"]}
        if name == "lora-int8":
            settings = {**settings, "adapter": REUSE["lora"]}
        if name == "lora-q8" and not Path(LORA_Q8).is_file():
            subprocess.run([str(Path(sys.executable).parent / "taskfit"), "export", LORA_Q8, "--adapter", REUSE["lora"],
                            "--type", "q8_0"], check=True)
        if name.startswith("lora-"):
            card = json.loads((Path(REUSE["lora"]) / "run_card.json").read_text())
        log.info("evaluating %s", label)
        results = evaluate_row(name, settings, args.data_dir, args.eval_limit, name in args.only)
        records[name] = {"label": label, "card": card, "results": results}

    base = Path(records["zero-shot"]["results"]["output_dir"]) if "zero-shot" in records else None
    rows = []
    for name, record in records.items():
        res, card = record["results"], record["card"]
        acc = res["metrics"]["accuracy"]
        diff = ""
        if base is not None and name != "zero-shot":
            paired = compare_runs(str(base), res["output_dir"], n_resamples=2000, seed=0)
            d = next(c for c in paired["comparisons"] if c["metric"] == "accuracy")
            record["paired_vs_zero_shot"] = d
            diff = (f"{100 * d['diff']:+.2f} [{100 * d['ci_low']:+.2f}, {100 * d['ci_high']:+.2f}], "
                    f"p={d['p_mcnemar']:.2g}")
        trainable = (f"{card['trainable_parameters']:,} ({100 * card['trainable_share']:.2f}%)"
                     if card and not name.startswith("lora-") else "-")
        accuracy = f"{acc['value']:.4f} [{acc['ci_low']:.4f}, {acc['ci_high']:.4f}]"
        rows.append([record["label"], res["counts"]["n"], accuracy,
                     diff, trainable,
                     f"{card['train_s']:.0f}" if card and not name.startswith("lora-") else "-",
                     f"{card['peak_rss_mib']:.0f}" if card and not name.startswith("lora-") else "-",
                     f"{res['timings']['eval_s']:.0f}",
                     f"{res['peak_rss_mib']:.0f}" if res["peak_rss_mib"] else "not recorded"])
    table = markdown_table(["method", "n", "accuracy [95% CI]", "vs zero-shot, points [95% CI], McNemar p",
                            "trainable params", "train s", "train peak RSS MiB", "eval s", "eval peak RSS MiB"], rows)
    note = (f"SST-2 dev, {args.eval_limit or 'all 872'} rows, embedded SmolLM2-135M-Instruct (fp32 unless stated), "
            "2-core CPU, "
            f"no response cache. Tuned rows: the same {TRAIN_ROWS} seeded SST-2 train rows with the evaluation prompt, "
            "1 epoch of batch 8 (the head: 3 epochs; one more head row uses 10,000 rows), each method's default "
            "learning rate (LoRA 3e-4, dropout 0.05). Each training "
            "and each evaluation ran in its own process.")
    Path(args.out + ".md").write_text(note + "\n\n" + table + "\n")
    Path(args.out + ".json").write_text(json.dumps(
        {name: {"label": r["label"], "run_card": r["card"], "metrics": r["results"]["metrics"],
                "counts": r["results"]["counts"], "timings": r["results"]["timings"],
                "eval_peak_rss_mib": r["results"]["peak_rss_mib"], "model": r["results"]["model"],
                "paired_vs_zero_shot": r.get("paired_vs_zero_shot")} for name, r in records.items()},
        indent=2) + "\n")
    print(table)


if __name__ == "__main__":
    main()
