"""Post-training quantization across bit widths (issue 32 part 3): what each GGUF weight type costs on SST-2.

For the embedded base model and a LoRA adapter merged into it, every type ``taskfit export`` writes (q4_0, q4_1,
q5_0, q5_1, q8_0, f16, f32) is exported and evaluated by the llamacpp backend on the same SST-2 dev rows
(log-likelihood mode), beside the hf backend in fp32 (the reference) and with its int8 dynamic quantization. Per
row: file size, export and load seconds, accuracy with its CI, the paired difference to hf fp32 (bootstrap CI,
McNemar p), how often the prediction is the same as fp32's, the mean |difference| of the label log-probabilities,
and llama.cpp's generation tokens/s (8 prompts x 64 new tokens, greedy). Table and plot: OUT.{md,json,png}.

Note: the embedded model's fp32 weights were converted from its Q4_1 GGUF, so the base model's q4_1 export lands
back on the grid the weights came from; the merged LoRA model is the case that says what quantizing costs.

    .venv/bin/python benchmarks/ptq_curve.py --data-dir ../shared/data --adapter runs/lora-sst2
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from taskfit.api import GenerateRequest, Message, Prompt
from taskfit.compare import compare_runs
from taskfit.evaluation import evaluate
from taskfit.models import load_backend
from taskfit.models.catalog import GGUF_TYPES
from taskfit.models.export import export_gguf, merge
from taskfit.report.table import markdown_table
from taskfit.runs import read_run
from taskfit.settings import RunConfig

MODEL = "smollm2-135m-instruct"
log = logging.getLogger("ptq_curve")


def sst2(opts, folder: Path, **config) -> dict:
    if not (folder / "results.json").is_file():
        evaluate(RunConfig(task="sst2", data_dir=opts.data_dir, limit=opts.limit, output=folder, cache=False,
                           **config), progress=True)
    return json.loads((folder / "results.json").read_text())


def tokens_per_s(backend) -> float:
    requests = [GenerateRequest(Prompt((Message("user", f"Write a short story about a {w}."),)), max_tokens=64)
                for w in ("cat", "ship", "river", "violin", "garden", "robot", "storm", "library")]
    backend.generate(requests[:1])  # warm-up
    start = time.perf_counter()
    results = backend.generate(requests)
    return sum(r.n_tokens for r in results) / (time.perf_counter() - start)


def agreement(reference: Path, other: Path) -> tuple[float, float]:
    """(share of rows with the same prediction, mean |difference| of the label log-probabilities)."""
    ref = {s["index"]: s for s in read_run(reference).samples}
    same, deltas = [], []
    for s in read_run(other).samples:
        r = ref[s["index"]]
        same.append(s["prediction"] == r["prediction"])
        deltas += [abs(s["response"][k] - r["response"][k]) for k in r["response"]]
    return float(np.mean(same)), float(np.mean(deltas))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--limit", type=int, default=None, help="first N dev rows (default: all 872)")
    parser.add_argument("--adapter", help="an SST-2 LoRA adapter folder (taskfit tune); without it: base model only")
    parser.add_argument("--types", nargs="+", default=list(GGUF_TYPES))
    parser.add_argument("--work-dir", default="runs/bench-ptq")
    parser.add_argument("--out", default="benchmarks/results/ptq_curve")
    opts = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    work = Path(opts.work_dir)
    models = {"base": None, **({"LoRA merged": opts.adapter} if opts.adapter else {})}
    records = []
    for label, adapter in models.items():
        slug = "base" if adapter is None else "lora"
        hf_model = MODEL
        if adapter is not None:  # the merged model: what the GGUFs hold, so fp32 is the same weights
            merged = work / slug / "merged"
            if not (merged / "config.json").is_file():
                merge(adapter, merged)
            hf_model = f"hf:{merged}"
        reference = work / slug / "hf-fp32"
        runs = {("hf", "fp32", 32.0): (reference, sst2(opts, reference, model=hf_model), None),
                ("hf", "int8", 8.0): (work / slug / "hf-int8", sst2(opts, work / slug / "hf-int8", model=hf_model,
                                                                   quantize="int8"), None)}
        for qtype in opts.types:
            gguf_path = work / slug / f"{qtype}.gguf"
            export_s = None
            if not gguf_path.is_file():
                start = time.perf_counter()
                export_gguf(MODEL, gguf_path, adapter=adapter, qtype=qtype)
                export_s = time.perf_counter() - start
            start = time.perf_counter()
            backend = load_backend("llamacpp", f"gguf:{gguf_path}")
            load_s = time.perf_counter() - start
            folder = work / slug / f"llamacpp-{qtype}"
            res = sst2(opts, folder, model=f"gguf:{gguf_path}", backend="llamacpp")
            extra = {"bytes": gguf_path.stat().st_size, "export_s": export_s, "load_s": load_s,
                     "tokens_per_s": tokens_per_s(backend)}
            del backend
            runs[("llamacpp", qtype, GGUF_TYPES[qtype])] = (folder, res, extra)
        for (engine, qtype, bits), (folder, res, extra) in runs.items():
            acc = res["metrics"]["accuracy"]
            rec = {"model": label, "engine": engine, "type": qtype, "bits_per_weight": bits, "n": res["counts"]["n"],
                   "accuracy": acc["value"], "ci": [acc["ci_low"], acc["ci_high"]], "eval_s": res["timings"]["eval_s"],
                   **(extra or {})}
            if folder != reference:
                diff = next(c for c in compare_runs(reference, folder)["comparisons"] if c["metric"] == "accuracy")
                rec["vs_fp32"] = {"diff": diff["diff"], "ci": [diff["ci_low"], diff["ci_high"]],
                                  "p_mcnemar": diff.get("p_mcnemar")}
                rec["same_prediction"], rec["mean_abs_dlogp"] = agreement(reference, folder)
            records.append(rec)
            log.info("%s %s %s: %.4f", label, engine, qtype, acc["value"])
    write(records, opts)


def write(records: list[dict], opts) -> None:
    headers = ["model", "engine", "type", "bits/weight", "file MiB", "load s", "accuracy [95% CI]",
               "minus hf fp32 [95% CI], p McNemar", "same prediction", "mean abs Δ log p", "tokens/s", "eval s"]
    rows = []
    for r in records:
        vs = r.get("vs_fp32")
        rows.append([r["model"], r["engine"], r["type"], f"{r['bits_per_weight']:g}",
                     f"{r['bytes'] / 2**20:.1f}" if "bytes" in r else "-",
                     f"{r['load_s']:.2f}" if "load_s" in r else "-",
                     f"{r['accuracy']:.4f} [{r['ci'][0]:.4f}, {r['ci'][1]:.4f}]",
                     "-" if vs is None else f"{vs['diff']:+.4f} [{vs['ci'][0]:+.4f}, {vs['ci'][1]:+.4f}], "
                                            f"p={vs['p_mcnemar']:.3g}",
                     f"{r['same_prediction']:.3f}" if "same_prediction" in r else "-",
                     f"{r['mean_abs_dlogp']:.4f}" if "mean_abs_dlogp" in r else "-",
                     f"{r['tokens_per_s']:.1f}" if "tokens_per_s" in r else "-", f"{r['eval_s']:.1f}"])
    table = markdown_table(headers, rows)
    print(table)
    out = Path(opts.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"limit": opts.limit, "records": records}, indent=2))
    out.with_suffix(".md").write_text(table + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for model, marker in (("base", "o"), ("LoRA merged", "s")):
        rs = sorted((r for r in records if r["model"] == model and r["engine"] == "llamacpp"),
                    key=lambda r: r["bits_per_weight"])
        if not rs:
            continue
        xs, ys = [r["bits_per_weight"] for r in rs], [r["accuracy"] for r in rs]
        err = [[r["accuracy"] - r["ci"][0] for r in rs], [r["ci"][1] - r["accuracy"] for r in rs]]
        line = ax.errorbar(xs, ys, yerr=err, marker=marker, capsize=3, label=f"{model}, llama.cpp GGUF")
        ref = next(r for r in records if r["model"] == model and r["type"] == "fp32")
        ax.axhline(ref["accuracy"], color=line[0].get_color(), linestyle=":", label=f"{model}, hf fp32")
    ax.set_xscale("log", base=2)
    ax.set_xticks([4.5, 5, 5.5, 6, 8.5, 16, 32], ["4.5", "5", "5.5", "6", "8.5", "16", "32"])
    ax.set_xlabel("bits per weight (q4_0 q4_1 q5_0 q5_1 q8_0 f16 f32)")
    ax.set_ylabel(f"SST-2 dev accuracy (n = {records[0]['n']}, 95% CI)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=120)


if __name__ == "__main__":
    main()
