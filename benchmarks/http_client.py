"""Requests per second of the openai backend against a local OpenAI-compatible server that answers at once, so the
client's own cost (connections, threads, JSON) is what is measured. Run it on two commits one after the other:

    PYTHONPATH=<tree>/src .venv/bin/python benchmarks/http_client.py --requests 2000 --concurrency 8

The server is the standard library's threading HTTP server speaking HTTP/1.1 with keep-alive and TCP_NODELAY, as
vLLM, TGI and llama.cpp's server do (without TCP_NODELAY, its separate header and body writes meet the client's
delayed ACK and every kept-alive request waits ~40 ms, which measures the server, not the client).
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from taskfit.api import GenerateRequest, Message, Prompt
from taskfit.models.openai import OpenAIBackend

ANSWER = json.dumps({"choices": [{"message": {"role": "assistant", "content": " positive"}, "finish_reason": "stop"}],
                     "usage": {"prompt_tokens": 10, "completion_tokens": 1}}).encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # TCP_NODELAY, as uvicorn (vLLM), TGI and llama.cpp's server set it
    def do_POST(self):  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(ANSWER)))
        self.end_headers()
        self.wfile.write(ANSWER)

    def log_message(self, *args):
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    backend = OpenAIBackend("m", base_url=f"http://127.0.0.1:{server.server_port}/v1", concurrency=args.concurrency)
    requests = [GenerateRequest(Prompt((Message("user", f"Review {i}: great film"),)), (), 4)
                for i in range(args.requests)]
    rates = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        results = backend.generate(requests)
        rates.append(len(results) / (time.perf_counter() - start))
        assert all(r.text == " positive" for r in results)
    print(json.dumps({"requests": args.requests, "concurrency": args.concurrency, "repeats": args.repeats,
                      "requests_per_s": [round(r, 1) for r in rates], "median": round(statistics.median(rates), 1)}))
    server.shutdown()


if __name__ == "__main__":
    main()
