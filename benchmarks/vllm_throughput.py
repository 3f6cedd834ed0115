"""taskfit through vLLM against lm-evaluation-harness through the same vLLM server (issue 33): what a vLLM user would
otherwise run is lm-eval's ``local-completions`` model pointed at the server. Both tools score the same SST-2 dev rows
with the same plain-text prompt (lm-eval's sst2 prompt; taskfit reads it as ``benchmarks/tasks/sst2_lmeval_prompt.yaml``
with ``--no-chat-template``): the log-likelihood of each label through ``/v1/completions`` with ``echo``. Each tool
runs as its own command, one after the other, at 1, 8 and 32 requests in flight (taskfit ``--concurrency``, lm-eval
``num_concurrent``), and taskfit's hf backend in process is the reference. Wall seconds of the whole command, rows/s,
accuracy, and how often the two tools pick the same label; table and numbers to OUT.{md,json}.

lm-eval is the peer, not a dependency: give it its own environment (it pins other versions than taskfit's)::

    python -m venv /tmp/lmeval && /tmp/lmeval/bin/pip install torch==2.13.0 "lm-eval[api]==0.4.13" \
        transformers==5.25.0 accelerate==1.16.0
    .venv/bin/python benchmarks/vllm_throughput.py --data-dir ../shared/data --limit 200 \
        --lm-eval /tmp/lmeval/bin/lm_eval
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

from peer_lm_eval import LM_EVAL_TASK, TASKFIT_TASK, run  # the peer benchmark's prompt and process runner

from taskfit.models.catalog import resolve_model
from taskfit.models.vllm_server import start_vllm
from taskfit.report.table import markdown_table

MODEL = "smollm2-135m-instruct"
log = logging.getLogger("vllm_throughput")


def taskfit_run(opts, out: Path, backend: list[str], env: dict[str, str]) -> dict:
    """``taskfit eval`` as its own process; wall seconds, accuracy, predictions."""
    wall, rss, _ = run([str(Path(sys.executable).parent / "taskfit"), "eval", "--model", MODEL, "--task",
                        str(TASKFIT_TASK), "--no-chat-template", "--data-dir", opts.data_dir, "--split", "dev",
                        "--limit", str(opts.limit), "--no-cache", "--no-progress", "--output", str(out), *backend], env)
    results = json.loads((out / "results.json").read_text())
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    return {"accuracy": results["metrics"]["accuracy"]["value"], "wall_s": wall, "eval_s": results["timings"]["eval_s"],
            "peak_rss_mib": rss, "predictions": [s["prediction"] for s in samples]}


def lm_eval_run(opts, out: Path, url: str, folder: Path, concurrent: int, tasks: Path, env: dict[str, str]) -> dict:
    """``lm_eval --model local-completions`` against the server; wall seconds, accuracy, predictions."""
    model_args = (f"model={MODEL},base_url={url}/completions,num_concurrent={concurrent},max_retries=3,"
                  f"tokenized_requests=False,tokenizer_backend=huggingface,tokenizer={folder}")
    wall, rss, _ = run([opts.lm_eval, "--model", "local-completions", "--model_args", model_args, "--tasks",
                        "sst2_local", "--include_path", str(tasks), "--batch_size", "1", "--limit", str(opts.limit),
                        "--log_samples", "--output_path", str(out)], env)
    results = json.loads(next(out.rglob("results_*.json")).read_text())
    samples = sorted((json.loads(line) for f in out.rglob("samples_sst2_local_*.jsonl")
                      for line in f.read_text().splitlines()), key=lambda s: s["doc_id"])
    predictions = ["positive" if float(s["filtered_resps"][1][0]) > float(s["filtered_resps"][0][0]) else "negative"
                   for s in samples]
    return {"accuracy": results["results"]["sst2_local"]["acc,none"], "wall_s": wall, "peak_rss_mib": rss,
            "predictions": predictions, "version": results.get("lm_eval_version", "?")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--limit", type=int, default=200, help="the first N SST-2 dev rows")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--lm-eval", required=True, help="the lm_eval command of lm-eval's own environment")
    parser.add_argument("--dtype", default="float32", help="vLLM's dtype")
    parser.add_argument("--out", default="benchmarks/results/vllm_throughput")
    opts = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    _, folder = resolve_model(MODEL)
    data = (Path(opts.data_dir) / "sst2" / "dev.jsonl").resolve()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    work = Path(tempfile.mkdtemp(prefix="vllm-throughput-"))
    (work / "tasks").mkdir()
    (work / "tasks" / "sst2_local.yaml").write_text(LM_EVAL_TASK.format(data=data))
    runs: dict[str, dict] = {"taskfit hf backend (in process)": taskfit_run(opts, work / "hf", ["--backend", "hf"],
                                                                              env)}
    server = start_vllm(folder, served_name=MODEL, dtype=opts.dtype)
    try:
        for k in opts.concurrency:
            log.info("concurrency %d: taskfit, then lm-eval", k)
            runs[f"taskfit via vLLM, {k} in flight"] = taskfit_run(
                opts, work / f"taskfit-{k}", ["--backend", "openai", "--base-url", server.url, "--api-key", "none",
                                              "--api", "completions", "--concurrency", str(k)], env)
            runs[f"lm-eval local-completions via vLLM, {k} in flight"] = lm_eval_run(
                opts, work / f"lm-eval-{k}", server.url, folder, k, work / "tasks", env)
    finally:
        server.stop()
    write(runs, opts)


def write(runs: dict[str, dict], opts) -> None:
    reference = runs["taskfit hf backend (in process)"]["predictions"]
    rows, record = [], {"limit": opts.limit, "dtype": opts.dtype, "runs": {}}
    for name, r in runs.items():
        same = sum(a == b for a, b in zip(r["predictions"], reference))
        rows.append([name, f"{r['accuracy']:.4f}", f"{r['wall_s']:.1f}", f"{opts.limit / r['wall_s']:.2f}",
                     f"{same}/{len(reference)}", f"{r['peak_rss_mib']:.0f}"])
        record["runs"][name] = {k: v for k, v in r.items() if k != "predictions"} | {"same_as_hf": same}
    table = markdown_table(["run", "accuracy", "wall s (whole command)", "rows/s", "same label as hf",
                            "peak RSS MiB (client)"], rows)
    text = (f"SST-2 dev, first {opts.limit} rows, lm-eval's sst2 prompt (plain text), {MODEL} ({opts.dtype} in "
            f"vLLM), one command at a time on this machine; vLLM's start-up is not in any row.\n\n{table}\n")
    out = Path(opts.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text)
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    print(text)


if __name__ == "__main__":
    main()
