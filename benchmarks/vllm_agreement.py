"""Log-likelihood through vLLM vs the hf backend on the same rows (issue 33): starts vLLM itself (from .venv-vllm),
scores the rows through `--backend openai --api completions` (prompt log-probabilities via echo) and with
`--backend hf` on the same plain-text prompts, and prints the agreement, the largest log-probability difference,
and the rows that disagree. The last line is `agreement K/N`.

    .venv/bin/python benchmarks/vllm_agreement.py --data-dir ../shared/data --split dev --limit 200
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

from taskfit.evaluation import evaluate
from taskfit.models.catalog import resolve_model
from taskfit.models.vllm_server import start_vllm
from taskfit.settings import RunConfig


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--split", default="dev")
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--dtype", default="float32", help="vLLM's dtype: float32 or bfloat16")
    parser.add_argument("--out", help="JSON file for the numbers")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    _, folder = resolve_model(args.model)
    started = time.perf_counter()
    server = start_vllm(folder, served_name=args.model, dtype=args.dtype)
    startup_s = time.perf_counter() - started
    try:
        with tempfile.TemporaryDirectory() as tmp:
            runs = {}
            for name, options in (("vllm", {"backend": "openai", "base_url": server.url, "api_key": "none",
                                            "api": "completions"}), ("hf", {"backend": "hf"})):
                config = RunConfig(task=args.task, data_dir=args.data_dir, split=args.split, limit=args.limit,
                                   model=args.model, chat_template=False, cache=False, output=Path(tmp) / name,
                                   **options)
                results = evaluate(config, progress=True)
                samples = [json.loads(line) for line in (Path(tmp) / name / "samples.jsonl").read_text().splitlines()]
                runs[name] = (results, samples)
    finally:
        server.stop()
    (vres, vllm), (hres, hf) = runs["vllm"], runs["hf"]
    differ = [(a["index"], a["prediction"], b["prediction"]) for a, b in zip(vllm, hf)
              if a["prediction"] != b["prediction"]]
    gaps = [abs(a["response"][k] - b["response"][k]) for a, b in zip(vllm, hf) for k in a["response"]]
    summary = {"rows": len(hf), "agree": len(hf) - len(differ), "differ": differ, "max_abs_dlogp": max(gaps),
               "mean_abs_dlogp": sum(gaps) / len(gaps), "dtype": args.dtype, "vllm_startup_s": round(startup_s, 1),
               "accuracy": {"vllm": vres["metrics"]["accuracy"]["value"], "hf": hres["metrics"]["accuracy"]["value"]},
               "eval_s": {"vllm": vres["timings"]["eval_s"], "hf": hres["timings"]["eval_s"]}}
    print(json.dumps(summary, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    print(f"agreement {summary['agree']}/{summary['rows']}")


if __name__ == "__main__":
    main()
