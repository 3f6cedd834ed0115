"""Peer benchmark: lm-evaluation-harness (``lm_eval --model hf``) and taskfit on the same model, the same SST-2 dev
rows and the identical prompt, on this machine, back to back.

The model is the embedded SmolLM2-135M-Instruct as the fp32 Hugging Face folder taskfit converts it to. The prompt
is lm-eval's own sst2 prompt (``benchmarks/tasks/sst2_lmeval_prompt.yaml``, plain text, no chat template); lm-eval
reads the same JSONL file through a task YAML written here (``dataset_path: json``), because the hub is not
reachable. Each tool runs in its own process; peak memory is that process's max RSS (``os.wait4``).

    python -m venv /tmp/lmeval && /tmp/lmeval/bin/pip install torch==2.13.0 "lm-eval[api]==0.4.13" \
        transformers==5.25.0 accelerate==1.16.0
    .venv/bin/python benchmarks/peer_lm_eval.py --data-dir ../shared/data --lm-eval /tmp/lmeval/bin/lm_eval
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TASKFIT_TASK = REPO / "benchmarks" / "tasks" / "sst2_lmeval_prompt.yaml"

LM_EVAL_TASK = """task: sst2_local
dataset_path: json
dataset_kwargs:
  data_files:
    validation: {data}
validation_split: validation
output_type: multiple_choice
doc_to_text: "{{{{text}}}}\\nQuestion: Is this sentence positive or negative?\\nAnswer:"
doc_to_target: "{{{{label_id}}}}"
doc_to_choice: ["negative", "positive"]
metric_list:
  - metric: acc
"""

# taskfit's built-in sst2 prompt in lm-eval terms: chat template, system prompt, user turn, and the answer prefix
# opening the assistant's reply (lm-eval's gen_prefix); run with --apply_chat_template --system_instruction.
LM_EVAL_CHAT_TASK = """task: sst2_local
dataset_path: json
dataset_kwargs:
  data_files:
    validation: {data}
validation_split: validation
output_type: multiple_choice
doc_to_text: "Classify the sentiment of the movie review as positive or negative.\\nReview: {{{{text}}}}"
gen_prefix: "The sentiment of the review is"
target_delimiter: " "
doc_to_target: "{{{{label_id}}}}"
doc_to_choice: ["negative", "positive"]
metric_list:
  - metric: acc
"""
SYSTEM = "You are a sentiment classifier."


def run(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """Run ``argv``; wall seconds, peak RSS in MiB of that process, and its output."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{argv[0]} failed:\n{output[-3000:]}")
    return wall, usage.ru_maxrss / 1024, output


def lm_eval_run(lm_eval: str, folder: Path, work: Path, limit: int, batch_size: int, env: dict[str, str],
                chat: bool) -> dict:
    out = work / f"lm-{limit}"
    extra = ["--apply_chat_template", "--system_instruction", SYSTEM] if chat else []
    wall, rss, _ = run([lm_eval, "--model", "hf", "--model_args", f"pretrained={folder},dtype=float32",
                        "--tasks", "sst2_local", "--include_path", str(work / "tasks"), "--device", "cpu",
                        "--batch_size", str(batch_size), "--limit", str(limit), "--log_samples", "--output_path",
                        str(out), *extra], env)
    results = json.loads(next(out.rglob("results_*.json")).read_text())
    samples = sorted((json.loads(line) for f in out.rglob("samples_sst2_local_*.jsonl")
                      for line in f.read_text().splitlines()), key=lambda s: s["doc_id"])
    predictions = ["positive" if float(s["filtered_resps"][1][0]) > float(s["filtered_resps"][0][0]) else "negative"
                   for s in samples]
    first = samples[0]["arguments"]
    first = first["gen_args_0"] if isinstance(first, dict) else first[0]
    context = first["arg_0"] if isinstance(first, dict) else first[0]  # (context, continuation) of choice 0
    return {"accuracy": results["results"]["sst2_local"]["acc,none"], "wall_s": wall, "peak_rss_mib": rss,
            "predictions": predictions, "version": results.get("lm_eval_version") or _version("lm_eval"),
            "first_context": context}


def taskfit_run(data_dir: str, work: Path, limit: int, batch_size: int, env: dict[str, str], chat: bool) -> dict:
    bindir = Path(sys.executable).parent
    out = work / f"taskfit-{limit}"
    prompt = ["--task", "sst2"] if chat else ["--task", str(TASKFIT_TASK), "--no-chat-template"]
    wall, rss, _ = run([str(bindir / "taskfit"), "eval", "--model", "smollm2-135m-instruct", *prompt,
                        "--data-dir", data_dir, "--split", "dev", "--limit", str(limit),
                        "--batch-size", str(batch_size), "--no-cache", "--no-progress",
                        "--output", str(out)], env)
    results = json.loads((out / "results.json").read_text())
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    return {"accuracy": results["metrics"]["accuracy"]["value"], "wall_s": wall, "peak_rss_mib": rss,
            "eval_s": results["timings"]["eval_s"], "tokens_run": results["backend_stats"].get("input_tokens"),
            "predictions": [s["prediction"] for s in samples],
            "first_context": samples[0]["prompt"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--limit", type=int, default=300)
    parser.add_argument("--small", type=int, default=20, help="a short run of each tool, to separate start-up time")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--prompt", choices=["plain", "chat"], default="plain",
                        help="plain: lm-eval's sst2 prompt; chat: taskfit's sst2 prompt (chat template, system "
                             "prompt, answer prefix = lm-eval gen_prefix)")
    parser.add_argument("--lm-eval", default=str(Path(sys.executable).parent / "lm_eval"),
                        help="the lm_eval command (default: beside this python); lm-eval in its own environment")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    from taskfit.models.embedded import SMOLLM2_135M

    folder = SMOLLM2_135M.hf_folder()
    data = (Path(args.data_dir) / "sst2" / "dev.jsonl").resolve()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    work = Path(tempfile.mkdtemp(prefix="peer-lm-eval-"))
    (work / "tasks").mkdir()
    chat = args.prompt == "chat"
    out_base = args.out or f"benchmarks/results/peer_lm_eval_{args.prompt}"
    (work / "tasks" / "sst2_local.yaml").write_text((LM_EVAL_CHAT_TASK if chat else LM_EVAL_TASK).format(data=data))

    runs = {}
    for limit in (args.small, args.limit):  # back to back, one tool at a time
        runs[("lm_eval", limit)] = lm_eval_run(args.lm_eval, folder, work, limit, args.batch_size, env, chat)
        runs[("taskfit", limit)] = taskfit_run(args.data_dir, work, limit, args.batch_size, env, chat)
    n, small = args.limit, args.small
    result: dict = {"n": n, "small": small, "batch_size": args.batch_size, "model_folder": str(folder)}
    for tool in ("lm_eval", "taskfit"):
        big, short = runs[(tool, n)], runs[(tool, small)]
        steady = (n - small) / (big["wall_s"] - short["wall_s"])
        result[tool] = {k: v for k, v in big.items() if k not in ("predictions", "first_context")} | {
            "examples_per_s_wall": n / big["wall_s"], "examples_per_s_steady": steady,
            "startup_s": short["wall_s"] - small / steady}
    lm, tf = result["lm_eval"], result["taskfit"]
    result["same_prediction"] = sum(a == b for a, b in zip(runs[("lm_eval", n)]["predictions"],
                                                          runs[("taskfit", n)]["predictions"]))
    result["identical_first_context"] = runs[("lm_eval", n)]["first_context"] == runs[("taskfit", n)]["first_context"]
    # Only a digest of the compared text: data rows stay in ../shared/data, not in this repository's results.
    result["first_context_sha256"] = {tool: hashlib.sha256(runs[(tool, n)]["first_context"].encode()).hexdigest()
                                      for tool in ("lm_eval", "taskfit")}
    result["speedup_wall"] = lm["wall_s"] / tf["wall_s"]
    result["speedup_steady"] = tf["examples_per_s_steady"] / lm["examples_per_s_steady"]
    Path(out_base).parent.mkdir(parents=True, exist_ok=True)
    Path(out_base + ".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        (f"SST-2 dev, first {n} rows, {'taskfit' if chat else 'lm-eval'}'s sst2 prompt "
         f"({'identical' if result['identical_first_context'] else 'DIFFERENT'} text), SmolLM2-135M-Instruct fp32, "
         f"batch size {args.batch_size}, 2-core CPU, one tool at a time. Steady examples/s = ({n} - {small}) rows / "
         f"(wall of the {n}-row run - wall of a {small}-row run), i.e. without start-up."),
        "",
        "| tool | accuracy | wall s | examples/s (wall) | examples/s (steady) | start-up s | peak RSS MiB |",
        "|---|---|---|---|---|---|---|",
        (f"| lm-eval {lm['version']} (`--model hf`) | {lm['accuracy']:.4f} | {lm['wall_s']:.1f} | "
         f"{lm['examples_per_s_wall']:.2f} | {lm['examples_per_s_steady']:.2f} | {lm['startup_s']:.1f} | "
         f"{lm['peak_rss_mib']:.0f} |"),
        (f"| taskfit (hf backend) | {tf['accuracy']:.4f} | {tf['wall_s']:.1f} | {tf['examples_per_s_wall']:.2f} | "
         f"{tf['examples_per_s_steady']:.2f} | {tf['startup_s']:.1f} | {tf['peak_rss_mib']:.0f} |"),
        "",
        (f"taskfit / lm-eval: {result['speedup_wall']:.2f}x wall clock, {result['speedup_steady']:.2f}x steady "
         f"examples/s; accuracy difference {100 * (tf['accuracy'] - lm['accuracy']):+.2f} points; the two tools pick "
         f"the same label on {result['same_prediction']}/{n} rows."),
    ]
    Path(out_base + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    shutil.rmtree(work, ignore_errors=True)


def _version(package: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "?"


if __name__ == "__main__":
    main()
