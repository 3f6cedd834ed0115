"""Multi-task instruction tuning with a held-out task (issue 15), FLAN-style, on the embedded model, alone:

1. LoRA on a mixture of three built-in tasks — AG News (topics), R8 (Reuters topics), STS-B (similarity) — each in
   taskfit's built-in templates (5 wordings + 1 turned around), proportional sampling with a cap;
2. the same mixture with one template per task (the task's own prompt: FLAN's template ablation);
3. zero-shot evaluation of the held-out task SST-2 (sentiment: no sentiment task is in the mixture) and of two
   in-mixture tasks, for the untuned model and both adapters on the same seeded rows, with paired CIs
   (McNemar for accuracy, paired bootstrap otherwise).

    python benchmarks/mixture_heldout.py --data-dir ../shared/data
        (writes benchmarks/results/mixture_heldout.{md,json}; run folders under runs/bench-mixture)
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
from taskfit.settings import RunConfig, TuneConfig
from taskfit.tuning import tune

ROOT = Path("runs/bench-mixture")
MIXTURE_TASKS = ["ag_news", "r8", "stsb"]
EVALS = [("sst2", "held out", 872), ("ag_news", "in the mixture", 300), ("stsb", "in the mixture", 300)]


def mixture_file(name: str, templates: str, total: int, cap: int) -> Path:
    path = ROOT / f"{name}.yaml"
    lines = [f"sampling: proportional\ncap: {cap}\ntotal: {total}\ntasks:"]
    lines += [f"  - {{task: {task}, templates: {templates}}}" for task in MIXTURE_TASKS]
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--total", type=int, default=450, help="training rows in each mixture")
    parser.add_argument("--out", default="benchmarks/results/mixture_heldout")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    shutil.rmtree(ROOT, ignore_errors=True)
    ROOT.mkdir(parents=True)
    cards = {}
    for name, templates in (("templates", "builtin"), ("one-template", "task")):
        mix = mixture_file(name, templates, args.total, cap=args.total)
        out = ROOT / f"lora-{name}"
        result = tune(TuneConfig(mixture=mix, data_dir=args.data_dir, method="lora", output=out, epochs=1,
                                 batch_size=8, max_length=384, seed=1234))
        cards[name] = result.card
    records = []
    for task, role, limit in EVALS:
        folders = {}
        for name in ("base", "templates", "one-template"):
            folder = ROOT / f"eval-{task}-{name}"
            adapter = None if name == "base" else str(ROOT / f"lora-{name}")
            res = evaluate(RunConfig(task=task, data_dir=args.data_dir, split="dev", limit=limit, sample="random",
                                     output=folder, adapter=adapter, cache=False), progress=True)
            folders[name] = folder
            metric = res["task"]["metrics"][0]
            value = res["metrics"][metric]
            record = {"task": task, "role": role, "model": name, "n": res["counts"]["n"], "metric": metric,
                      "value": value, "eval_s": res["timings"]["eval_s"]}
            if name != "base":
                paired = compare_runs(folders["base"], folder, n_resamples=2000)
                record["vs_base"] = next(c for c in paired["comparisons"] if c["metric"] == metric)
            records.append(record)
    rows = []
    for r in records:
        v = r["value"]
        delta = ""
        if "vs_base" in r:
            d = r["vs_base"]
            p = next((d[k] for k in ("p_mcnemar", "p_permutation", "p_bootstrap") if d.get(k) is not None), None)
            delta = f"{d['diff']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]" + ("" if p is None else
                                                                                   f", p = {p:.3f}")
        rows.append([r["task"], r["role"], r["model"], r["n"], r["metric"],
                     f"{v['value']:.3f} [{v['ci_low']:.3f}, {v['ci_high']:.3f}]", delta, f"{r['eval_s']:.0f}"])
    table = markdown_table(["task", "role", "model", "n", "metric", "value [95% CI]", "Δ vs base [95% CI], p",
                            "eval s"], rows)
    mixes = []
    for name, card in cards.items():
        parts = ", ".join(f"{t['task']} {t['rows']} rows / {len(t['templates'])} templates"
                          for t in card["data"]["mixture"]["tasks"])
        mixes.append(f"- `{name}`: {parts}; {card['steps']} steps, loss {card['first_loss']} -> "
                     f"{card['final_loss']}, {card['train_s']:.0f} s")
    text = ("LoRA (r 8, lr 2e-4, 1 epoch, batch 8) on a mixture of "
            f"{', '.join(MIXTURE_TASKS)} ({args.total} rows, proportional sampling), embedded "
            "SmolLM2-135M-Instruct; zero-shot log-likelihood evaluation on seeded dev rows; p = McNemar (accuracy) "
            "or paired permutation (otherwise; the bootstrap sign share where no permutation p was computed).\n\n"
            + "\n".join(mixes) + "\n\n" + table + "\n")
    Path(args.out + ".md").write_text(text)
    Path(args.out + ".json").write_text(json.dumps({"records": records, "cards": {
        k: {"data": c["data"], "steps": c["steps"], "train_s": c["train_s"]} for k, c in cards.items()}}, indent=2)
        + "\n")
    print(text)


if __name__ == "__main__":
    main()
