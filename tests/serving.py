"""Helpers for the assistant's tests: a real uvicorn server on loopback (in a thread, or `taskfit serve`)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def running(app) -> Iterator[str]:
    """Serve ``app`` on a free loopback port in a thread; yields its base URL."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_process(args: list[str], port: int, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``taskfit serve ARGS --port PORT`` as a process; returns once it listens."""
    process = subprocess.Popen([sys.executable, "-m", "taskfit.cli", "serve", *args, "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, **(env or {})}, cwd=REPO)
    lines = []
    deadline = time.time() + 120
    while time.time() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("listening "):
            threading.Thread(target=process.stdout.read, daemon=True).start()  # keep the pipe drained
            return process
    process.kill()
    raise RuntimeError("taskfit serve did not start:\n" + "".join(lines))


def write_kb(path: Path, triples) -> Path:
    """A knowledge base of (subject, predicate, object) triples as the JSONL ``--kb`` reads."""
    path.write_text("".join(json.dumps({"subject": s, "predicate": p, "object": o}, ensure_ascii=False) + "\n"
                            for s, p, o in triples), encoding="utf-8")
    return path


def kbqa_task(kb: Path):
    """The built-in KBQA task answering from ``kb``, as `taskfit serve --task nlpcc_kbqa --kb` sets it up."""
    from taskfit.tasks.task import load_task

    task = load_task("nlpcc_kbqa")
    task.prepare_answers([], "train", None, kb)
    return task


def read_events(http: httpx.Client, url: str, body: dict) -> list[tuple[str, dict]]:
    """POST ``body`` to a server-sent-events route and read every event as (name, data)."""
    events = []
    with http.stream("POST", url, json=body, timeout=120) as response:
        assert response.status_code == 200, response.read()
        name = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line[len("event: "):]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[len("data: "):])))
    return events


def chat(http: httpx.Client, base: str, question: str, conversation: str | None = None,
         regenerate: str | None = None) -> dict:
    """POST /api/chat and read its server-sent events: {"events": [(name, data)...], "deltas": [...], ...}."""
    body = {"question": question, "conversation": conversation, "regenerate": regenerate}
    events = read_events(http, f"{base}/api/chat", body)
    out = {"events": events, "deltas": [d["text"] for n, d in events if n == "delta"]}
    for name, data in events:
        out.setdefault(name, data)
    return out
