"""Speed of scoring held-out preference pairs (DPO / KTO dev margins): each pair's chosen and rejected answers'
log-probabilities under the embedded model, as `taskfit align` computes them after training.

Runs on whatever taskfit is importable: this tree's ``pair_logps`` (prompt once, cache repeated for both answers) or
an older tree's ``answer_logps`` (each answer scored with its own prompt). Side by side, alone on the machine:

    .venv/bin/python benchmarks/pair_scoring.py --pairs 48
    git worktree add -f /tmp/prev <older commit>
    PYTHONPATH=/tmp/prev/src .venv/bin/python benchmarks/pair_scoring.py --pairs 48

HH-RLHF dev pairs from ../shared/data (the `align` split: dev share 0.2, seed 1234), cut to 192 tokens as the
benchmark runs of benchmarks/alignment.sh cut them; prints seconds and the values' checksum (equal across trees).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import taskfit
from taskfit.models.catalog import resolve_model
from taskfit.models.loading import load_causal_lm
from taskfit.prompting.preference_tokens import PreferenceTokenizer
from taskfit.prompting.tokens import Tokenizer
from taskfit.tuning import align
from taskfit.tuning.common import preference_split


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="../shared/data/hh_rlhf/train.jsonl")
    parser.add_argument("--pairs", type=int, default=48)
    parser.add_argument("--max-length", type=int, default=192)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=None, help="append the result as one JSON line to this file")
    args = parser.parse_args()
    torch.manual_seed(0)
    split = preference_split([Path(args.data)], None, 0.2, 1234)
    _, location = resolve_model("smollm2-135m-instruct")
    loaded = load_causal_lm(location)
    renderer = PreferenceTokenizer(Tokenizer(loaded.tokenizer, True), args.max_length)
    pairs = renderer.pairs(split.dev)[:args.pairs]
    if hasattr(align, "pair_logps"):
        way = "prompt once, cache repeated for both answers (pair_logps)"

        def score():
            return align.pair_logps(loaded.model, pairs)
    else:
        way = "each answer with its own prompt (answer_logps x 2)"

        def score():
            return tuple(align.answer_logps(loaded.model, pairs, which) for which in ("chosen", "rejected"))
    score()  # warm-up
    times = []
    for _ in range(args.repeats):
        began = time.perf_counter()
        chosen, rejected = score()
        times.append(time.perf_counter() - began)
    tokens = sum(len(p.chosen) + len(p.rejected) for p in pairs)
    result = {"taskfit": str(Path(taskfit.__file__).parent), "way": way, "pairs": len(pairs),
              "tokens_as_rows": tokens, "seconds": times, "best_s": min(times),
              "checksum": round(sum(chosen) + sum(rejected), 3), "threads": torch.get_num_threads()}
    print(json.dumps(result))
    if args.out:
        with open(args.out, "a", encoding="utf-8") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
