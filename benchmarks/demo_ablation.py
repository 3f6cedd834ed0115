"""What demonstrations do (Min et al. 2022, "Rethinking the Role of Demonstrations"), on the embedded model.

For each dataset, on the same dev rows: no demos (zero-shot), k demos with gold labels, with random labels (drawn
from the label set with the seed), with out-of-domain inputs of similar length and random labels (the paper's
"OOD + random labels"; SST-2 and MR take AG News text, AG News takes MR text), and inputs only (no labels, in one
prompt). Every condition is paired against gold labels on the same rows (paired bootstrap CI, McNemar p); the table
and a plot go to OUT.{md,json,png}. Runs are kept under --runs-dir and reused when their results.json exists.

    .venv/bin/python benchmarks/demo_ablation.py --data-dir ../shared/data --limit 200
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from taskfit.compare import compare_runs
from taskfit.evaluation import evaluate
from taskfit.models import load_backend
from taskfit.report.table import markdown_table
from taskfit.settings import RunConfig

DATASETS = {"sst2": "ag_news", "mr": "ag_news", "ag_news": "mr"}  # task: where its out-of-domain inputs come from
CONDITIONS = {  # name: (run folder, few-shot options besides k; None: zero-shot)
    "no demos": ("zero", None),
    "gold labels": ("gold", {}),
    "random labels": ("random", {"demo_labels": "random"}),
    "OOD inputs + random labels": ("ood-random", {"demo_labels": "random", "demo_inputs": "<ood>"}),
    "inputs only (no labels)": ("inputs-only", {"demo_labels": "none"}),
}
log = logging.getLogger("demo_ablation")


def run_one(backend, task: str, name: str, args: dict | None, k: int, opts, folder: Path) -> dict:
    if not (folder / "results.json").is_file():
        strategy_args = None if args is None else {"k": k, "selector": "random", "pool_limit": opts.pool_limit,
                                                   **{key: DATASETS[task] if v == "<ood>" else v
                                                      for key, v in args.items()}}
        config = RunConfig(task=task, data_dir=opts.data_dir, limit=opts.limit, sample="random", seed=opts.seed,
                           strategy="zero_shot" if args is None else "few_shot", strategy_args=strategy_args or {},
                           output=folder, cache=False)
        log.info("%s, %s, k=%s", task, name, k)
        evaluate(config, backend=backend, progress=True)
    return json.loads((folder / "results.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--limit", type=int, default=200, help="N dev rows of each dataset, a seeded random sample "
                        "(MR's and AG News's files are sorted by label: their first rows are one class)")
    parser.add_argument("--ks", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--pool-limit", type=int, default=None, help="demos drawn from the first N train rows "
                        "(default: all of them; MR's first 5,000 are 85%% positive)")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--runs-dir", default="runs/bench-demo-ablation")
    parser.add_argument("--out", default="benchmarks/results/demo_ablation")
    opts = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    backend = load_backend("hf", "smollm2-135m-instruct")
    runs = Path(opts.runs_dir)
    records = []
    for task in opts.datasets:
        for k in opts.ks:
            folders = {name: runs / task / (slug if args is None else f"k{k}-{slug}")
                       for name, (slug, args) in CONDITIONS.items()}
            results = {name: run_one(backend, task, name, args, k, opts, folders[name])
                       for name, (_, args) in CONDITIONS.items()}
            for name, res in results.items():
                acc = res["metrics"]["accuracy"]
                rec = {"dataset": task, "k": k, "condition": name, "n": res["counts"]["n"], "accuracy": acc["value"],
                       "ci": [acc["ci_low"], acc["ci_high"]], "eval_s": res["timings"]["eval_s"]}
                if name != "gold labels":
                    diff = next(c for c in compare_runs(folders["gold labels"], folders[name],
                                                        seed=opts.seed)["comparisons"] if c["metric"] == "accuracy")
                    rec["vs_gold"] = {"diff": diff["diff"], "ci": [diff["ci_low"], diff["ci_high"]],
                                      "p_mcnemar": diff.get("p_mcnemar")}
                records.append(rec)
                log.info("%s k=%d %s: %.4f", task, k, name, acc["value"])
        write(records, opts)  # after every dataset: a cut run keeps the tables of the finished ones


def write(records: list[dict], opts) -> None:
    headers = ["dataset", "k", "demos", "n", "accuracy [95% CI]", "minus gold labels [95% CI], p McNemar", "eval s"]
    rows = []
    for r in records:
        vs = r.get("vs_gold")
        rows.append([r["dataset"], r["k"] if r["condition"] != "no demos" else "-", r["condition"], r["n"],
                     f"{r['accuracy']:.4f} [{r['ci'][0]:.4f}, {r['ci'][1]:.4f}]",
                     "-" if vs is None else f"{vs['diff']:+.4f} [{vs['ci'][0]:+.4f}, {vs['ci'][1]:+.4f}], "
                                            f"p={vs['p_mcnemar']:.3g}", f"{r['eval_s']:.1f}"])
    table = markdown_table(headers, rows)
    print(table)
    out = Path(opts.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"limit": opts.limit, "seed": opts.seed,
                                                    "pool_limit": opts.pool_limit, "records": records}, indent=2))
    out.with_suffix(".md").write_text(table + "\n")
    plot(records, opts, out.with_suffix(".png"))


def plot(records: list[dict], opts, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(CONDITIONS)  # zero-shot repeated in each panel as the reference
    datasets = [d for d in opts.datasets if any(r["dataset"] == d for r in records)]
    fig, axes = plt.subplots(1, len(opts.ks), figsize=(5 * len(opts.ks), 4.0), sharey=True, squeeze=False)
    width = 0.8 / len(names)
    for ax, k in zip(axes[0], opts.ks):
        for j, name in enumerate(names):
            xs, ys, lo, hi = [], [], [], []
            for i, task in enumerate(datasets):
                r = next(r for r in records if r["dataset"] == task and r["condition"] == name
                         and (r["k"] == k or name == "no demos"))
                xs.append(i + (j - (len(names) - 1) / 2) * width)
                ys.append(r["accuracy"])
                lo.append(r["accuracy"] - r["ci"][0])
                hi.append(r["ci"][1] - r["accuracy"])
            ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=name)
        ax.set_xticks(range(len(datasets)), datasets)
        ax.set_title(f"k = {k} ({opts.limit} random dev rows, 95% CI)")
        ax.set_ylim(0, 1)
    axes[0][0].set_ylabel("accuracy")
    handles, labels = axes[0][0].get_legend_handles_labels()  # below the panels, clear of the bars
    fig.legend(handles, labels, loc="lower center", ncol=len(names), fontsize=8)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
