"""Generated tokens/s of the llamacpp backend (embedded Q4_1 GGUF, llama.cpp in process) against the hf backend
(the same weights dequantized to fp32, transformers) on the same prompts: zero-shot chain-of-thought and
self-consistency on SST-2 dev, generate mode, no response cache.

    .venv/bin/python benchmarks/llamacpp_generation.py --data-dir ../shared/data [--limit 20]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from taskfit.evaluation import evaluate
from taskfit.models import load_backend
from taskfit.report.table import markdown_table
from taskfit.settings import RunConfig

RUNS = [
    ("cot", {"max_reasoning_tokens": 96}),
    ("self_consistency", {"n": 5, "max_reasoning_tokens": 96}),
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--out", default="benchmarks/results/llamacpp_generation")
    args = parser.parse_args()
    rows, raw = [], []
    for strategy, options in RUNS:
        speeds = {}
        for name in ("hf", "llamacpp"):
            backend = load_backend(name, "smollm2-135m-instruct")
            out = Path(f"runs/bench-gen-{name}-{strategy}")
            shutil.rmtree(out, ignore_errors=True)
            before = backend.stats["generated_tokens"]
            res = evaluate(RunConfig(task="sst2", data_dir=args.data_dir, split="dev", limit=args.limit,
                                     sample="random", mode="generate", strategy=strategy, strategy_args=options,
                                     output=out, cache=False, backend=name), backend=backend, progress=False)
            tokens = backend.stats["generated_tokens"] - before
            eval_s = res["timings"]["eval_s"]
            speeds[name] = tokens / eval_s
            raw.append({"strategy": strategy, "backend": name, "generated_tokens": tokens, "eval_s": eval_s,
                        "tokens_per_s": tokens / eval_s, "accuracy": res["metrics"]["accuracy"]["value"],
                        "parse_failures": res["counts"]["parse_failures"]})
            rows.append([strategy, name, tokens, f"{eval_s:.1f}", f"{tokens / eval_s:.1f}",
                         f"{res['metrics']['accuracy']['value']:.3f}", res["counts"]["parse_failures"]])
            if hasattr(backend, "close"):
                backend.close()
            del backend
        rows.append([strategy, "llamacpp / hf", "", "", f"**{speeds['llamacpp'] / speeds['hf']:.2f}x**", "", ""])
    table = markdown_table(["strategy", "backend", "generated tokens", "eval s", "tokens/s", "accuracy",
                            "parse fail"], rows)
    Path(args.out + ".json").write_text(json.dumps(raw, indent=2) + "\n")
    Path(args.out + ".md").write_text(
        f"SST-2 dev, {args.limit} random rows (seed 1234), generate mode, max_reasoning_tokens 96, no cache, "
        "2-core CPU; hf batch 16, llamacpp 4 server slots.\n\n" + table + "\n")
    print(table)


if __name__ == "__main__":
    main()
