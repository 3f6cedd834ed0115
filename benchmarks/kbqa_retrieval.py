"""BM25 retrieval quality for NLPCC 2016 KBQA: how often the question's gold triple is ranked first / in the top 5
among all triples of the split (the knowledge base `taskfit eval --task nlpcc_kbqa` uses), and how fast.

    .venv/bin/python benchmarks/kbqa_retrieval.py --data-dir ../shared/data [--n 1000]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from taskfit.tasks.retrieval import BM25Index, Triple, triples_from_rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--n", type=int, default=1000, help="questions to check (the first n of train)")
    parser.add_argument("--out", default="benchmarks/results/kbqa_retrieval.json")
    args = parser.parse_args()
    path = Path(args.data_dir) / "nlpcc2016_kbqa" / "train.jsonl"
    rows = [json.loads(line) for line in path.open(encoding="utf-8")]
    start = time.perf_counter()
    index = BM25Index(triples_from_rows(rows, "triple", str(path)))
    build_s = time.perf_counter() - start
    hits = {1: 0, 5: 0}
    start = time.perf_counter()
    for row in rows[: args.n]:
        found = [t for t, _ in index.search(row["question"], 5)]
        gold = Triple(*(str(v).strip() for v in row["triple"]))
        hits[1] += found[:1] == [gold]
        hits[5] += gold in found
    search_s = time.perf_counter() - start
    result = {"triples": len(index.triples), "questions": args.n, "recall@1": hits[1] / args.n,
              "recall@5": hits[5] / args.n, "build_s": round(build_s, 2),
              "search_ms_per_question": round(1000 * search_s / args.n, 2)}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
