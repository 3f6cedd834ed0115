"""Speed of `taskfit serve` (embedded model, llamacpp backend, this machine): time to first token with a 5-fact KB
context, generated tokens/s for one user, aggregate tokens/s with 4 concurrent users, and feedback POST latency
while those 4 users generate. Run alone on the machine, from the repository root with the venv active:

    python benchmarks/serve_speed.py [--out benchmarks/results/serve_speed]

Questions are visible NLPCC KBQA train rows (../shared/data); the knowledge base is kb_subset.jsonl (top 5 facts per
question in the prompt). Long answers for tokens/s come from /v1/chat/completions (streamed, 128 tokens, greedy).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from serving import free_port, start_process  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "nlpcc2016_kbqa"
LONG = [{"role": "user", "content": f"Write a short story about a {w} that learns to fly."}
        for w in ("cat", "river", "robot", "teacher", "lighthouse", "violin", "farmer", "cloud")]


def ci(values: list[float], seed: int = 0, resamples: int = 2000) -> tuple[float, float]:
    rng = random.Random(seed)
    means = sorted(statistics.fmean(rng.choices(values, k=len(values))) for _ in range(resamples))
    return means[int(0.025 * resamples)], means[int(0.975 * resamples) - 1]


def summary(values: list[float]) -> dict:
    ordered = sorted(values)
    low, high = ci(values)
    return {"n": len(values), "mean": statistics.fmean(values), "ci95": [low, high],
            "p50": ordered[len(ordered) // 2], "p99": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
            "max": ordered[-1]}


def ask_page(http: httpx.Client, base: str, question: str) -> dict:
    """POST /api/chat; seconds to the first delta and to the end, and the finished turn."""
    start = time.perf_counter()
    first = None
    done = {}
    with http.stream("POST", f"{base}/api/chat", json={"question": question}, timeout=300) as response:
        name = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                if name == "delta" and first is None:
                    first = time.perf_counter() - start
                if name == "done":
                    done = json.loads(line[6:])
    return {"ttft": first, "total": time.perf_counter() - start, "turn": done.get("turn"),
            "tokens": done.get("tokens")}


def stream_v1(base: str, messages: list[dict], max_tokens: int) -> dict:
    """A streamed /v1 chat completion: first-token time, end time, generated tokens (from usage)."""
    body = {"messages": messages, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    first = last = None
    usage = {}
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=600) as response:
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                first = first or time.perf_counter()
                last = time.perf_counter()
            usage = chunk.get("usage") or usage
    return {"start": start, "first": first - start, "end": last - start, "tokens": usage["completion_tokens"],
            "tokens_per_s": (usage["completion_tokens"] - 1) / (last - first)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/serve_speed")
    parser.add_argument("--questions", type=int, default=30)
    args = parser.parse_args()
    rows = [json.loads(line) for line in (DATA / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    questions = [r["question"] for r in random.Random(1234).sample(rows, args.questions)]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as folder:
        server = start_process(["--task", "nlpcc_kbqa", "--kb", str(DATA / "kb_subset.jsonl"), "--db",
                                f"{folder}/a.sqlite", "--max-answer-tokens", "256"], port)
        try:
            results = run(base, questions)
        finally:
            server.kill()
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    out.with_suffix(".md").write_text(to_markdown(results), encoding="utf-8")
    print(to_markdown(results))


def run(base: str, questions: list[str]) -> dict:
    with httpx.Client() as http:
        ask_page(http, base, questions[0])  # warm-up (first prompt, caches)
        page = [ask_page(http, base, q) for q in questions]
        turn = page[0]["turn"]
        single = [stream_v1(base, [m], 128) for m in LONG[:4]]

        stop = threading.Event()
        latencies: list[float] = []

        def feedback() -> None:
            i = 0
            while not stop.is_set():
                start = time.perf_counter()
                response = http.post(f"{base}/api/feedback", json={"event": f"bench-{i:06d}", "turn": turn,
                                                                    "kind": "up"})
                latencies.append(time.perf_counter() - start)
                assert response.status_code == 200, response.text
                i += 1
                time.sleep(0.05)

        clicker = threading.Thread(target=feedback)
        users: list[list[dict]] = [[] for _ in range(4)]

        def user(k: int) -> None:
            for j in range(2):
                users[k].append(stream_v1(base, [LONG[(2 * k + j) % len(LONG)]], 128))

        start = time.perf_counter()
        threads = [threading.Thread(target=user, args=(k,)) for k in range(4)]
        clicker.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
        stop.set()
        clicker.join()
    concurrent = [r for u in users for r in u]
    return {
        "page_ttft_s": summary([p["ttft"] for p in page if p["ttft"] is not None]),
        "page_answer_s": summary([p["total"] for p in page]),
        "page_answer_tokens": summary([float(p["tokens"]) for p in page]),
        "single_user_tokens_per_s": summary([s["tokens_per_s"] for s in single]),
        "single_user_ttft_s": summary([s["first"] for s in single]),
        "four_users": {"requests": len(concurrent), "tokens": sum(r["tokens"] for r in concurrent), "wall_s": wall,
                       "aggregate_tokens_per_s": sum(r["tokens"] for r in concurrent) / wall,
                       "per_request_tokens_per_s": summary([r["tokens_per_s"] for r in concurrent]),
                       "ttft_s": summary([r["first"] for r in concurrent])},
        "feedback_post_s_under_4_users": summary(latencies),
    }


def to_markdown(r: dict) -> str:
    def line(name: str, s: dict, unit: str, scale: float = 1.0) -> str:
        return (f"| {name} | {s['n']} | {s['mean'] * scale:.3f} [{s['ci95'][0] * scale:.3f}, "
                f"{s['ci95'][1] * scale:.3f}] | {s['p50'] * scale:.3f} | {s['p99'] * scale:.3f} | {unit} |")

    four = r["four_users"]
    return "\n".join([
        "| measure | n | mean [95% CI] | p50 | p99 | unit |", "|---|---|---|---|---|---|",
        line("page: time to first token (5-fact KB context)", r["page_ttft_s"], "s"),
        line("page: whole answer", r["page_answer_s"], "s"),
        line("page: answer tokens", r["page_answer_tokens"], "tokens"),
        line("one user: generated tokens/s (/v1, 128 tokens)", r["single_user_tokens_per_s"], "tokens/s"),
        line("one user: time to first token (/v1)", r["single_user_ttft_s"], "s"),
        line("4 users: tokens/s per request", four["per_request_tokens_per_s"], "tokens/s"),
        line("4 users: time to first token", four["ttft_s"], "s"),
        line("feedback POST under 4 users", r["feedback_post_s_under_4_users"], "ms", 1000.0),
        "",
        f"4 concurrent users: {four['requests']} requests, {four['tokens']} tokens in {four['wall_s']:.1f} s = "
        f"**{four['aggregate_tokens_per_s']:.1f} tokens/s aggregate**.", ""])


if __name__ == "__main__":
    main()
