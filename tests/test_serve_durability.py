"""Durability: 20 browser sessions send 80 feedback events (and, in the arena, 60 votes) while `taskfit serve` is
killed with SIGKILL and restarted.

Every event a client saw acknowledged must be in the database exactly once afterwards; clients retry an
unacknowledged event with the same id (as the page does), so after the restart every event lands, once.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from serving import chat, free_port, start_process

SESSIONS, EVENTS = 20, 4


def post_until_acknowledged(client: httpx.Client, url: str, body: dict) -> int:
    """POST ``body`` until the server answers 200 (as the page retries a click with the same event id); a 4xx fails
    the test. Returns how many tries failed."""
    deadline, retries = time.time() + 90, 0
    while True:
        try:
            response = client.post(url, json=body)
            if response.status_code == 200:
                return retries
            assert response.status_code >= 500, response.text
        except httpx.TransportError:
            pass
        assert time.time() < deadline, f"{body['event']} never acknowledged"
        retries += 1
        time.sleep(0.1)


def test_acknowledged_feedback_survives_sigkill_exactly_once(tmp_path):
    kb = tmp_path / "kb.jsonl"
    kb.write_text(json.dumps({"subject": "高等数学", "predicate": "出版社", "object": "武汉大学出版社"},
                             ensure_ascii=False) + "\n", encoding="utf-8")
    db, port = tmp_path / "assistant.sqlite", free_port()
    args = ["--task", "nlpcc_kbqa", "--kb", str(kb), "--db", str(db), "--max-tokens", "4", "--threads", "1"]
    base = f"http://127.0.0.1:{port}"
    server = start_process(args, port)
    clients = [httpx.Client(timeout=30) for _ in range(SESSIONS)]
    try:
        with ThreadPoolExecutor(SESSIONS) as pool:
            answers = list(pool.map(lambda c: chat(c, base, "《高等数学》是哪个出版社出版的？"), clients))
        assert all("done" in a for a in answers), [a["events"][-1] for a in answers if "done" not in a]
        turns = [a["meta"] for a in answers]
        acknowledged: set[str] = set()
        lock = threading.Lock()
        killed = threading.Event()

        def send(index: int) -> int:
            client, meta = clients[index], turns[index]
            retries = 0
            for k in range(EVENTS):
                event = f"event-{index:02d}-{k}"
                body = {"event": event, "turn": meta["turn"], "kind": ("up", "down", "better", "up")[k],
                        "text": "武汉大学出版社" if k == 2 else None}
                retries += post_until_acknowledged(client, f"{base}/api/feedback", body)
                with lock:
                    acknowledged.add(event)
                if index == 0 and k == 1:
                    killed.wait(30)  # session 0 goes on only after the kill, so some events span it
            return retries

        with ThreadPoolExecutor(SESSIONS) as pool:
            futures = [pool.submit(send, i) for i in range(SESSIONS)]
            deadline = time.time() + 30
            while len(acknowledged) < 20 and time.time() < deadline:
                time.sleep(0.005)
            server.send_signal(signal.SIGKILL)
            server.wait(10)
            at_kill = len(acknowledged)
            killed.set()
            server = start_process(args, port)
            retries = sum(f.result() for f in futures)
        assert 0 < at_kill < SESSIONS * EVENTS  # the kill really landed mid-run
        assert retries > 0

        rows = sqlite3.connect(db).execute("SELECT id, COUNT(*) FROM feedback GROUP BY id").fetchall()
        stored = dict(rows)
        assert acknowledged <= set(stored)  # nothing acknowledged was lost
        assert set(stored.values()) == {1}  # and nothing was stored twice
        assert len(stored) == SESSIONS * EVENTS

        # no conversation is visible to another session, before or after the restart
        own = [c.get(f"{base}/api/conversations").json()["conversations"] for c in clients]
        assert [[x["id"] for x in o] for o in own] == [[t["conversation"]] for t in turns]
        assert clients[1].get(f"{base}/api/conversations/{turns[0]['conversation']}").status_code == 404
    finally:
        for client in clients:
            client.close()
        server.kill()
        server.wait(10)


def test_an_answer_cut_by_sigkill_is_failed_after_a_restart_and_can_be_regenerated(tmp_path):
    db, port = tmp_path / "assistant.sqlite", free_port()
    args = ["--db", str(db), "--max-tokens", "600", "--threads", "1"]
    base = f"http://127.0.0.1:{port}"
    server = start_process(args, port)
    try:
        with httpx.Client(timeout=60) as http:
            seen, meta = [], None
            with http.stream("POST", f"{base}/api/chat",
                             json={"question": "Write a long story about a dragon who learns to bake bread."}) as r:
                assert r.status_code == 200
                first = None
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        data = json.loads(line[6:])
                        if "turn" in data and meta is None:
                            meta = data
                        if "text" in data:
                            seen.append(data["text"])
                            first = first or time.monotonic()
                        assert "answer" not in data, "the answer finished before the kill; ask for a longer one"
                    if first and time.monotonic() - first > 2.5:  # at least two partial saves have happened
                        server.send_signal(signal.SIGKILL)
                        server.wait(10)
                        break
            server = start_process(args, port)
            turns = http.get(f"{base}/api/conversations/{meta['conversation']}").json()["turns"]
            assert len(turns) == 1
            cut = turns[0]
            assert cut["status"] == "failed" and "server stopped" in cut["error"]
            assert cut["answer"] and "".join(seen).startswith(cut["answer"])  # what was saved of what streamed
            assert 'data-status="failed"' in http.get(base, params={"c": meta["conversation"]}).text
            refused = http.post(f"{base}/api/feedback", json={"event": "event-oncut1", "turn": cut["id"],
                                                               "kind": "up"})
            assert refused.status_code == 422  # feedback needs a finished answer; regenerating gives one
            again = chat(http, base, "-", regenerate=cut["id"])
            assert "done" in again and again["meta"]["parent"] == cut["id"]
    finally:
        server.kill()
        server.wait(10)


def test_acknowledged_arena_votes_survive_sigkill_exactly_once_and_the_leaderboard_reads_them(tmp_path):
    """20 sessions each fight one battle, then vote three times (the last counts) while the server is killed."""
    from taskfit.models.embedded import SMOLLM2_135M

    db, port = tmp_path / "assistant.sqlite", free_port()
    args = ["--db", str(db), "--max-tokens", "4", "--threads", "1", "--arena-model",
            f"gguf:{SMOLLM2_135M.gguf_path()}"]
    base = f"http://127.0.0.1:{port}"
    server = start_process(args, port)
    clients = [httpx.Client(timeout=60) for _ in range(SESSIONS)]
    try:
        def fight(client: httpx.Client) -> str:
            with client.stream("POST", f"{base}/api/arena", json={"question": "天空是什么颜色？"}) as response:
                assert response.status_code == 200, response.read()
                lines = [line for line in response.iter_lines() if line.startswith("data: ")]
            events = [json.loads(line[6:]) for line in lines]
            assert sum("answer" in e for e in events) == 2, events
            return events[0]["battle"]

        with ThreadPoolExecutor(4) as pool:
            battles = list(pool.map(fight, clients))
        acknowledged: set[str] = set()
        lock = threading.Lock()
        killed = threading.Event()

        def send(index: int) -> int:
            retries = 0
            for k, winner in enumerate(("a", "tie", ("a", "b", "both_bad")[index % 3])):
                body = {"event": f"vote-{index:02d}-{k}", "battle": battles[index], "winner": winner}
                retries += post_until_acknowledged(clients[index], f"{base}/api/arena/vote", body)
                with lock:
                    acknowledged.add(body["event"])
                if index == 0 and k == 0:
                    killed.wait(30)  # session 0 goes on only after the kill, so its votes span it
            return retries

        with ThreadPoolExecutor(SESSIONS) as pool:
            futures = [pool.submit(send, i) for i in range(SESSIONS)]
            deadline = time.time() + 30
            while len(acknowledged) < 15 and time.time() < deadline:
                time.sleep(0.005)
            server.send_signal(signal.SIGKILL)
            server.wait(10)
            at_kill = len(acknowledged)
            killed.set()
            server = start_process(args, port)
            retries = sum(f.result() for f in futures)
        assert 0 < at_kill < SESSIONS * 3 and retries > 0  # the kill landed mid-run

        stored = dict(sqlite3.connect(db).execute("SELECT id, COUNT(*) FROM votes GROUP BY id").fetchall())
        assert acknowledged == set(stored) and set(stored.values()) == {1}  # every vote once, none lost

        board = subprocess.run([sys.executable, "-m", "taskfit.cli", "feedback", "leaderboard", "--db", str(db),
                                "--json", "--resamples", "200"], capture_output=True, text=True, check=True)
        result = json.loads(board.stdout)
        assert result["votes"] == SESSIONS  # one counting vote per battle: the latest
        last = [("a", "b", "both_bad")[i % 3] for i in range(SESSIONS)]
        wins = sum(s["wins"] for s in result["standings"])
        assert wins == sum(w in ("a", "b") for w in last)
        assert sum(s["ties"] for s in result["standings"]) == 2 * last.count("both_bad")
    finally:
        for client in clients:
            client.close()
        server.kill()
        server.wait(10)
