"""Which linear layers torch's dynamic int8 can take: SST-2 dev zero-shot accuracy and the label probabilities of the
embedded model in fp32, with every linear layer but the output layer in int8, and with the MLP down projections
also kept in fp32 (what ``--quantize int8`` does).

    .venv/bin/python benchmarks/int8_layers.py --data-dir ../shared/data [--limit 100]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from taskfit.evaluation import evaluate
from taskfit.models.catalog import resolve_model
from taskfit.models.hf import HFBackend
from taskfit.models.loading import quantize_int8
from taskfit.report.table import markdown_table
from taskfit.settings import RunConfig


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--out", default="benchmarks/results/int8_layers")
    args = parser.parse_args()
    _, path = resolve_model("smollm2-135m-instruct")
    variants = [("fp32", None), ("int8, all but the output layer", ()),
                ("int8, down_proj and output fp32", ("down_proj",))]
    probs, rows, records = {}, [], {}
    for label, keep in variants:
        backend = HFBackend(path)
        quantized = 0
        if keep is not None:
            backend.model = quantize_int8(backend.model, keep)
            quantized = sum(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in backend.model.modules())
        out = Path(f"runs/bench-int8-{len(records)}")
        started = time.perf_counter()
        res = evaluate(RunConfig(task="sst2", data_dir=args.data_dir, split="dev", limit=args.limit, output=out,
                                 cache=False), backend=backend, progress=False)
        seconds = time.perf_counter() - started
        lines = (out / "samples.jsonl").read_text().splitlines()
        probs[label] = np.array([json.loads(line)["probs"]["positive"] for line in lines])
        diff = np.abs(probs[label] - probs["fp32"])
        acc = res["metrics"]["accuracy"]
        accuracy = f"{acc['value']:.4f} [{acc['ci_low']:.4f}, {acc['ci_high']:.4f}]"
        rows.append([label, quantized, res["counts"]["n"], accuracy,
                     f"{diff.mean():.4f}", f"{diff.max():.4f}", f"{seconds:.1f}"])
        records[label] = {"quantized_layers": quantized, "metrics": res["metrics"], "seconds": seconds,
                          "mean_abs_prob_diff": float(diff.mean()), "max_abs_prob_diff": float(diff.max())}
    table = markdown_table(["model", "int8 layers", "n", "accuracy [95% CI]", "mean |p - p_fp32|",
                            "max |p - p_fp32|", "seconds"], rows)
    Path(args.out + ".md").write_text(f"SST-2 dev, first {args.limit} rows, zero-shot log-likelihood, embedded "
                                      "SmolLM2-135M-Instruct, torch dynamic int8 (per-channel weights), 2-core CPU; "
                                      "p = probability of the positive label.\n\n" + table + "\n")
    Path(args.out + ".json").write_text(json.dumps(records, indent=2) + "\n")
    print(table)


if __name__ == "__main__":
    main()
