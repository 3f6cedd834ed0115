"""Generation throughput on the embedded model (issue 17), one engine after another in one process, alone on the
machine:

(a) uniform requests: 64 prompts of ~30 tokens, 96 greedy tokens each — transformers' ``model.generate`` at batch 16
    and 64 (the reference), the hf backend with its default settings, the llamacpp backend with 1 / 4 / 8 / 16 slots;
(b) real workloads: SST-2 dev zero-shot CoT (96 rows) and self-consistency n = 5 (32 rows), generate mode, no response
    cache — generated tokens per second of the whole eval time, prompt tokens run, accuracy.

Run it twice, once against the previous commit's code (a second worktree on PYTHONPATH) and once against this one,
then compare:

    PYTHONPATH=/tmp/prev/src python benchmarks/generation_throughput.py --label before --engines hf
    python benchmarks/generation_throughput.py --label after --engines reference,hf
    python benchmarks/generation_throughput.py --label llamacpp --engines llamacpp   # optional, its own rows
    python benchmarks/generation_throughput.py --compare before after llamacpp

Each label writes benchmarks/results/generation_throughput_<label>.json and its run folders under
runs/bench-throughput/<label>; --compare writes benchmarks/results/generation_throughput.md (speed ratios, and whether
greedy predictions and sampled paths are identical between the two).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

RESULTS = Path("benchmarks/results")
RUNS = Path("runs/bench-throughput")
TOPICS = ["a lighthouse keeper", "the history of bread", "a robot learning to paint", "rivers in winter",
          "a chess tournament", "how bridges are built", "a city at night", "the first day of school"]
UNIFORM_REQUESTS = 64
UNIFORM_TOKENS = 96
WORKLOADS = [("cot", 96, {}), ("self_consistency", 32, {"n": 5})]

log = logging.getLogger("throughput")


def uniform_prompts() -> list[str]:
    return [f"Write a long, detailed story about {TOPICS[i % len(TOPICS)]} (version {i})."
            for i in range(UNIFORM_REQUESTS)]


def transformers_generate(batch: int) -> dict:
    """The reference: ``model.generate`` on left-padded batches, greedy, counting each row's tokens up to EOS."""
    import torch

    from taskfit.models import load_backend

    backend = load_backend("hf", "smollm2-135m-instruct")
    tok, model = backend.tokenizer, backend.model
    tok.padding_side = "left"
    texts = [backend.render(_prompt(p)) for p in uniform_prompts()]
    eos = backend.eos_ids()
    tokens = prompt_tokens = 0
    start = time.perf_counter()
    with torch.inference_mode():
        for begin in range(0, len(texts), batch):
            enc = tok(texts[begin : begin + batch], return_tensors="pt", padding=True, add_special_tokens=False)
            out = model.generate(**enc, max_new_tokens=UNIFORM_TOKENS, do_sample=False,
                                 pad_token_id=backend.runner.pad_id)
            prompt_tokens += int(enc.attention_mask.sum())
            for row in out[:, enc.input_ids.shape[1] :].tolist():
                ends = [i for i, t in enumerate(row) if t in eos]
                tokens += ends[0] + 1 if ends else len(row)
    seconds = time.perf_counter() - start
    return {"engine": f"transformers generate, batch {batch}", "seconds": seconds, "generated_tokens": tokens,
            "prompt_tokens": prompt_tokens, "tokens_per_s": tokens / seconds}


def backend_uniform(name: str, **options) -> dict:
    from taskfit.api import GenerateRequest
    from taskfit.models import load_backend

    backend = load_backend(name, "smollm2-135m-instruct", **options)
    requests = [GenerateRequest(_prompt(p), max_tokens=UNIFORM_TOKENS) for p in uniform_prompts()]
    before = dict(backend.stats)
    start = time.perf_counter()
    results = backend.generate(requests)
    seconds = time.perf_counter() - start
    tokens = sum(r.n_tokens for r in results)
    label = f"{name} backend" + ("".join(f", {k} {v}" for k, v in options.items()) or ", defaults")
    out = {"engine": label, "seconds": seconds, "generated_tokens": tokens,
           "prompt_tokens": backend.stats.get("input_tokens", 0) - before.get("input_tokens", 0),
           "tokens_per_s": tokens / seconds, "texts": [r.text for r in results]}
    _close(backend)
    return out


def workload(name: str, strategy: str, limit: int, options: dict, label: str, data_dir: str,
             **backend_options) -> dict:
    from taskfit.evaluation import evaluate
    from taskfit.models import load_backend
    from taskfit.settings import RunConfig

    backend = load_backend(name, "smollm2-135m-instruct", **backend_options)
    folder = RUNS / label / f"{name}-{strategy}"
    shutil.rmtree(folder, ignore_errors=True)
    before = dict(backend.stats)
    res = evaluate(RunConfig(task="sst2", data_dir=data_dir, split="dev", limit=limit, sample="random",
                             mode="generate", strategy=strategy, strategy_args=options, output=folder, cache=False,
                             backend=name), backend=backend, progress=True)
    generated = backend.stats["generated_tokens"] - before["generated_tokens"]
    eval_s = res["timings"]["eval_s"]
    acc = res["metrics"]["accuracy"]
    _close(backend)
    return {"engine": f"{name} backend", "workload": f"{strategy} {options or ''}".strip(), "rows": limit,
            "eval_s": eval_s, "generated_tokens": generated, "tokens_per_s": generated / eval_s,
            "prompt_tokens": backend.stats.get("input_tokens", 0) - before.get("input_tokens", 0),
            "accuracy": acc, "folder": str(folder)}


def _prompt(text: str):
    from taskfit.api import Message, Prompt

    return Prompt((Message("user", text),))


def _close(backend) -> None:
    if hasattr(backend, "close"):
        backend.close()
    gc.collect()


def measure(label: str, engines: list[str], data_dir: str) -> None:
    record = {"label": label, "commit": _commit(), "cores": os.cpu_count(), "uniform": [], "workloads": []}
    if "reference" in engines:
        for batch in (16, 64):
            record["uniform"].append(transformers_generate(batch))
            log.info("%s", _brief(record["uniform"][-1]))
    if "hf" in engines:
        record["uniform"].append(backend_uniform("hf"))
        log.info("%s", _brief(record["uniform"][-1]))
    if "llamacpp" in engines:
        for slots in (1, 4, 8, 16):
            record["uniform"].append(backend_uniform("llamacpp", concurrency=slots))
            log.info("%s", _brief(record["uniform"][-1]))
    for name in [e for e in ("hf", "llamacpp") if e in engines]:
        for strategy, limit, options in WORKLOADS:
            record["workloads"].append(workload(name, strategy, limit, options, label, data_dir))
            log.info("%s", _brief(record["workloads"][-1]))
    (RESULTS / f"generation_throughput_{label}.json").write_text(json.dumps(record, indent=2) + "\n")


def _brief(row: dict) -> str:
    return (f"{row['engine']} {row.get('workload', 'uniform')}: {row['generated_tokens']} tokens, "
            f"{row['tokens_per_s']:.1f} tokens/s, {row['prompt_tokens']} prompt tokens run")


def _commit() -> str:
    """The commit of the taskfit code measured (a second worktree on PYTHONPATH for "before")."""
    import taskfit

    try:
        return subprocess.run(["git", "-C", str(Path(taskfit.__file__).parent), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True).stdout.strip()
    except OSError:
        return "?"


def compare(before_label: str, after_label: str, *more_labels: str) -> None:
    """The table of ``before`` against ``after``; ``more_labels`` (e.g. the llamacpp engines measured on their own)
    add their rows under their own label."""
    from taskfit.report.table import markdown_table

    before = json.loads((RESULTS / f"generation_throughput_{before_label}.json").read_text())
    after = json.loads((RESULTS / f"generation_throughput_{after_label}.json").read_text())
    more = [(label, json.loads((RESULTS / f"generation_throughput_{label}.json").read_text())) for label in more_labels]
    lines = [f"Embedded model (SmolLM2-135M-Instruct), {after['cores']} cores, one engine at a time in one process. "
             f"`{before_label}` = commit {before['commit']}, `{after_label}` = commit {after['commit']}.", "",
             f"## (a) Uniform requests: {UNIFORM_REQUESTS} prompts, {UNIFORM_TOKENS} greedy tokens each", ""]
    ref = next((u for u in after["uniform"] if u["engine"] == "transformers generate, batch 64"), None)
    rows = []
    for label, record in [(before_label, before), (after_label, after), *more]:
        for u in record["uniform"]:
            share = f"{u['tokens_per_s'] / ref['tokens_per_s']:.2f}x" if ref else ""
            rows.append([label, u["engine"], u["generated_tokens"], u["prompt_tokens"], f"{u['seconds']:.1f}",
                         f"{u['tokens_per_s']:.1f}", share])
    lines += [markdown_table(["code", "engine", "generated tokens", "prompt tokens run", "seconds", "tokens/s",
                              "vs transformers batch 64"], rows), ""]
    old_hf = next((u for u in before["uniform"] if u["engine"].startswith("hf backend")), None)
    new_hf = next((u for u in after["uniform"] if u["engine"].startswith("hf backend")), None)
    if old_hf and new_hf:
        lines.append(f"Uniform greedy texts identical before/after: {old_hf['texts'] == new_hf['texts']}.")
        lines.append("")
    lines += ["## (b) SST-2 dev, generate mode, no cache (tokens/s of the whole eval time)", ""]
    rows = []
    for w in after["workloads"]:
        old = next((o for o in before["workloads"]
                    if o["engine"] == w["engine"] and o["workload"] == w["workload"]), None)
        same = _same_samples(old["folder"], w["folder"]) if old else ""
        for label, row in ((before_label, old), (after_label, w)):
            if row is None:
                continue
            acc = row["accuracy"]
            speedup = f"{w['tokens_per_s'] / old['tokens_per_s']:.2f}x" if old and label == after_label else ""
            rows.append([label, row["engine"], row["workload"], row["rows"], f"{row['eval_s']:.1f}",
                         row["generated_tokens"], f"{row['tokens_per_s']:.1f}", speedup, row["prompt_tokens"],
                         f"{acc['value']:.3f} [{acc['ci_low']:.3f}, {acc['ci_high']:.3f}]",
                         same if label == after_label else ""])
    for label, record in more:
        for w in record["workloads"]:
            acc = w["accuracy"]
            rows.append([label, w["engine"], w["workload"], w["rows"], f"{w['eval_s']:.1f}", w["generated_tokens"],
                         f"{w['tokens_per_s']:.1f}", "", w["prompt_tokens"],
                         f"{acc['value']:.3f} [{acc['ci_low']:.3f}, {acc['ci_high']:.3f}]", ""])
    lines += [markdown_table(["code", "engine", "workload", "rows", "eval s", "generated tokens", "tokens/s",
                              "speed-up", "prompt tokens run", "accuracy [95% CI]", "same samples as before"],
                             rows), ""]
    (RESULTS / "generation_throughput.md").write_text("\n".join(lines))
    print("\n".join(lines))


def _same_samples(old_folder: str, new_folder: str) -> str:
    """Whether two runs produced the same model outputs row by row (predictions and generated text)."""
    def outputs(folder: str) -> list:
        rows = [json.loads(line) for line in (Path(folder) / "samples.jsonl").read_text().splitlines() if line]
        keep = ("prediction", "response", "paths", "votes")
        return [{k: r.get(k) for k in keep if k in r} for r in sorted(rows, key=lambda r: r.get("index", 0))]

    try:
        old, new = outputs(old_folder), outputs(new_folder)
    except OSError as exc:
        return f"cannot tell ({exc.__class__.__name__})"
    if len(old) != len(new):
        return f"no: {len(old)} rows before, {len(new)} after"
    differing = sum(a != b for a, b in zip(old, new))
    if not differing:
        return "yes"
    predictions = sum(a.get("prediction") != b.get("prediction") for a, b in zip(old, new))
    return f"no: outputs differ in {differing} of {len(new)} rows, predictions in {predictions}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--label", default="after")
    parser.add_argument("--engines", default="reference,hf,llamacpp")
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--compare", nargs="+", metavar="LABEL",
                        help="BEFORE AFTER [MORE...]: write the comparison table from recorded labels")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if args.compare:
        if len(args.compare) < 2:
            parser.error("--compare needs a BEFORE and an AFTER label")
        compare(*args.compare)
    else:
        measure(args.label, args.engines.split(","), args.data_dir)


if __name__ == "__main__":
    main()
