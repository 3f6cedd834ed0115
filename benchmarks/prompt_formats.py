"""Compare zero-shot prompt formats for SST-2 on the embedded model (log-likelihood mode).

A 135M instruct model is very sensitive to prompt format; this script measures a few formats on the
same dev rows so the best one can be the built-in default. Each variant is a task YAML derived from the
built-in sst2.yaml (prompts are data), evaluated with the normal `evaluate` path.

    .venv/bin/python benchmarks/prompt_formats.py --data-dir ../shared/data --limit 300
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path

import yaml

from taskfit.evaluation import evaluate
from taskfit.models import load_backend
from taskfit.report.table import markdown_table
from taskfit.settings import RunConfig
from taskfit.tasks.task import _builtin_dir

LM_EVAL = {"instruction": "", "input_template": "{text}\nQuestion: Is this sentence positive or negative?",
           "output_format": "", "answer_prefix": "Answer:"}
REVIEW = {"instruction": "Classify the sentiment of the movie review as positive or negative.",
          "input_template": "Review: {text}", "output_format": "", "answer_prefix": "The sentiment of the review is"}
VARIANTS = {
    # name: (prompt fields, chat template on?)
    "lm-eval prompt, plain text": (LM_EVAL, False),
    "lm-eval prompt, chat template": (LM_EVAL, True),
    "instruction + review + sentiment prefix, chat": (REVIEW, True),
    "same, plain text": (REVIEW, False),
    "same, short system prompt, chat": ({**REVIEW, "system": "You are a sentiment classifier."}, True),
    "instruction + one-word format + 'Sentiment:' prefix, chat": (
        {"instruction": "Is the sentiment of this movie review positive or negative?",
         "input_template": "Review: {text}", "output_format": "Answer with one word: positive or negative.",
         "answer_prefix": "Sentiment:"}, True),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--limit", type=int, default=300)
    parser.add_argument("--out", default="benchmarks/results/prompt_formats.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    base = yaml.safe_load((_builtin_dir() / "sst2.yaml").read_text())
    backends = {chat: load_backend("hf", "smollm2-135m-instruct", chat_template=chat) for chat in (True, False)}
    rows, records = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, (prompt, chat)) in enumerate(VARIANTS.items()):
            task_path = Path(tmp) / f"sst2_variant{i}.yaml"
            task_path.write_text(yaml.safe_dump({**base, "prompt": {**base["prompt"], **prompt}}))
            config = RunConfig(task=str(task_path), data_dir=args.data_dir, split="dev", limit=args.limit,
                               chat_template=chat, output=Path(tmp) / f"run{i}")
            res = evaluate(config, backend=backends[chat], progress=False)
            acc, f1 = res["metrics"]["accuracy"], res["metrics"]["macro_f1"]
            rows.append([name, acc["value"], f"[{acc['ci_low']:.3f}, {acc['ci_high']:.3f}]", f1["value"],
                         res["timings"]["eval_s"]])
            records.append({"variant": name, "prompt": prompt, "chat_template": chat, "metrics": res["metrics"],
                            "eval_s": res["timings"]["eval_s"], "n": res["counts"]["n"]})
            print(markdown_table(["variant", "accuracy", "95% CI", "macro-F1", "seconds"], rows[-1:]), flush=True)
    print(markdown_table(["variant", "accuracy", "95% CI", "macro-F1", "seconds"], rows))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(records, indent=2) + "\n")


if __name__ == "__main__":
    main()
