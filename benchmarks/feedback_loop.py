"""The feedback loop end to end on the embedded model: a scripted user chats with `taskfit serve` over HTTP, then
`taskfit loop` trains a candidate, gates it and promotes it to the running server or refuses; then a second round.

The scripted user asks NLPCC KBQA questions (rows whose id does not end in 0; the held-out gate rows are those whose
id ends in 0, never chatted about), reads each streamed answer, gives a thumbs-up when it matches the gold answer and
otherwise a thumbs-down and a better answer (the gold). Run alone on the machine, from the repository root:

    python benchmarks/feedback_loop.py --out /tmp/loop-bench [--questions 40] [--limit 150] [--epochs 2]

A DPO step of 4 KBQA pairs (~400-token prompts, policy and reference) takes about a minute on this 2-core machine,
so the defaults keep a round near 20 minutes.

Writes OUT/feedback_loop.json and OUT/feedback_loop.md (copy them to benchmarks/results/); each round's report,
decision and candidate stay under OUT/round-N.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from serving import chat, free_port, start_process  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "nlpcc2016_kbqa" / "train.jsonl"
TOKEN = "loop-bench-admin-token"
log = logging.getLogger("feedback_loop")


def split(out: Path) -> tuple[Path, list[dict]]:
    """OUT/data/nlpcc2016_kbqa/{train,dev}.jsonl by id (ids ending in 0 are dev, as benchmarks/alignment.sh)."""
    folder = out / "data" / "nlpcc2016_kbqa"
    folder.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in DATA.read_text("utf-8").splitlines()]
    for name, keep in (("train", lambda r: r["id"] % 10 != 0), ("dev", lambda r: r["id"] % 10 == 0)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows
                                                      if keep(r)), "utf-8")
    return out / "data", [r for r in rows if r["id"] % 10 != 0]


def norm(text: str) -> str:
    return "".join(ch for ch in unicodedata.normalize("NFKC", text).lower() if not ch.isspace())


def user_session(base: str, rows: list[dict]) -> dict:
    """Chat each row's question in its own conversation; thumbs and better answers as described above."""
    right = wrong = 0
    with httpx.Client(timeout=300) as http:
        for k, row in enumerate(rows):
            answer = chat(http, base, row["question"])
            done = answer.get("done")
            if done is None:
                log.warning("no answer for %r: %s", row["question"], answer["events"][-1])
                continue
            turn = done["turn"]
            if norm(row["answer"]) and norm(row["answer"]) in norm(done["answer"]):
                right += 1
                http.post(f"{base}/api/feedback", json={"event": f"up-{row['id']}-{k}", "turn": turn, "kind": "up"})
            else:
                wrong += 1
                http.post(f"{base}/api/feedback", json={"event": f"down-{row['id']}-{k}", "turn": turn,
                                                         "kind": "down", "reason": "wrong answer"})
                http.post(f"{base}/api/feedback", json={"event": f"better-{row['id']}-{k}", "turn": turn,
                                                         "kind": "better", "text": row["answer"]})
    return {"questions": len(rows), "right": right, "wrong": wrong}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--questions", type=int, default=40, help="questions the user asks before each round")
    parser.add_argument("--limit", type=int, default=150, help="held-out KBQA rows the gate evaluates")
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--dev-share", type=float, default=0.3, help="feedback pairs held out for the second gate")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    data_dir, pool = split(args.out)
    random.Random(args.seed).shuffle(pool)
    db, port = args.out / "assistant.sqlite", free_port()
    base = f"http://127.0.0.1:{port}"
    serve_args = ["--backend", "hf", "--task", "nlpcc_kbqa", "--data-dir", str(data_dir), "--split", "train",
                  "--db", str(db), "--admin-token", TOKEN]
    server = start_process(serve_args, port)
    served = {"model": "smollm2-135m-instruct", "adapter": None}
    rounds = []
    try:
        for number in (1, 2):
            asked = pool[(number - 1) * args.questions:number * args.questions]
            started = time.perf_counter()
            session = user_session(base, asked)
            session["chat_s"] = round(time.perf_counter() - started, 1)
            log.info("round %d: the user asked %d questions (%d right)", number, session["questions"],
                     session["right"])
            out = args.out / f"round-{number}"
            command = [sys.executable, "-m", "taskfit.cli", "loop", "--db", str(db), "--task", "nlpcc_kbqa",
                       "--data-dir", str(data_dir), "--split", "dev", "--limit", str(args.limit), "--output",
                       str(out), "--served-model", served["model"], "--epochs", str(args.epochs), "--seed",
                       str(args.seed), "--dev-share", str(args.dev_share), "--server", base, "--admin-token", TOKEN]
            if served["adapter"]:
                command += ["--served-adapter", served["adapter"]]
            started = time.perf_counter()
            subprocess.run(command, check=True, env={**os.environ})
            state = json.loads((out / "round.json").read_text("utf-8"))
            state["loop_s"] = round(time.perf_counter() - started, 1)
            health = httpx.get(f"{base}/healthz").json()
            with httpx.Client(timeout=300) as http:
                probe = chat(http, base, pool[-1]["question"])
            state["after"] = {"served_model": health["model"], "served_adapter": health["adapter"],
                              "probe_question": pool[-1]["question"], "probe_answer": probe.get("done", {})}
            if state["decision"]["promote"]:
                served = state["candidate"]
            rounds.append({"round": number, "user": session, **{k: state[k] for k in (
                "events", "new_events", "rows", "decision", "loop_s", "after") if k in state},
                "switched": state.get("switched", False)})
    finally:
        server.kill()
        server.wait(10)
    (args.out / "feedback_loop.json").write_text(json.dumps(rounds, indent=2, ensure_ascii=False), "utf-8")
    (args.out / "feedback_loop.md").write_text(markdown(rounds, args), "utf-8")
    print((args.out / "feedback_loop.md").read_text("utf-8"))
    return 0


def markdown(rounds: list[dict], args) -> str:
    lines = ["# The feedback loop, end to end (embedded model, hf backend)", "",
             f"`python benchmarks/feedback_loop.py --out OUT --questions {args.questions} --limit {args.limit} "
             f"--epochs {args.epochs} --dev-share {args.dev_share}`", "",
             "| round | user: asked / right | events used (new) | DPO rows | task metric: served → candidate "
             "[95% CI of the difference] | held-out pairs: right / wrong, p | decision | served afterwards | "
             "loop s |", "|---|---|---|---|---|---|---|---|---:|"]
    for r in rounds:
        t, p = r["decision"]["task_metric"], r["decision"]["preference"]
        pairs = f"{p['ranked_right']} / {p['ranked_wrong']} of {p['n']}, p = {p['sign_p']:.3g}" if p else "none"
        after = r["after"]["served_adapter"] or r["after"]["served_model"]
        lines.append(f"| {r['round']} | {r['user']['questions']} / {r['user']['right']} | {r['events']} "
                     f"({r['new_events']}) | {r['rows']} | {t['metric']} {t['a']:.4f} → {t['b']:.4f} "
                     f"[{t['ci_low']:+.4f}, {t['ci_high']:+.4f}], n = {t['n']} | {pairs} | "
                     f"{r['decision']['outcome']} | {after} | {r['loop_s']} |")
    lines += ["", "Why each decision:"]
    for r in rounds:
        lines += [f"- round {r['round']}: " + "; ".join(r["decision"]["reasons"])]
    lines += ["", "The server's answer to a probe question after each round (the model it came from in the "
              "`served afterwards` column):"]
    for r in rounds:
        lines.append(f"- round {r['round']}: {r['after']['probe_question']} → "
                     f"{r['after']['probe_answer'].get('answer', '(no answer)')!r}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
