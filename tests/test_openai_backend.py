"""The openai backend against HTTP servers on 127.0.0.1 that the tests start: scripted ones that fail on purpose
(429, 5xx, hangs, 400), one that returns prompt log-probabilities (echo) as vLLM does, and a real llama.cpp
server (tests/test_llamacpp.py)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from taskfit.api import GenerateRequest, LoglikelihoodRequest, Message, Prompt
from taskfit.errors import ServerError, UserError
from taskfit.models.http import RetryPolicy, post_with_retries
from taskfit.models.openai import EchoUnsupported, OpenAIBackend


class Scripted:
    """An HTTP server whose answers follow a script: each entry is (status, body, headers) or ("hang", seconds)."""

    def __init__(self, script, default=None):
        self.script = list(script)
        self.default = default
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                step = outer.script.pop(0) if outer.script else outer.default
                if callable(step):
                    step = step(body)
                if step[0] == "hang":
                    time.sleep(step[1])
                    return
                status, payload, headers = step
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def scripted():
    servers = []

    def make(script, default=None):
        server = Scripted(script, default)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


def chat_ok(text, logprobs=(-0.5, -0.25)):
    return (200, {"choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop",
                               "logprobs": {"content": [{"token": "x", "logprob": v} for v in logprobs]}}],
                  "usage": {"prompt_tokens": 10, "completion_tokens": len(logprobs)}}, {})


FAST = {"request_timeout": 2.0, "max_retries": 3}
PROMPT = Prompt((Message("user", "Review: great film"),), "The sentiment is")


def no_sleep(policy_calls):
    def sleep(seconds):
        policy_calls.append(seconds)
    return sleep


def test_retries_429_and_5xx_then_succeeds(scripted):
    server = scripted([(429, {"error": {"message": "slow down"}}, {"Retry-After": "0"}),
                       (503, {"error": "overloaded"}, {}), chat_ok(" positive")])
    waits: list[float] = []
    answer = post_with_retries(server.url + "/chat/completions", {"messages": []}, None,
                               RetryPolicy(timeout=2, max_retries=3, base_delay=0.01), sleep=no_sleep(waits))
    assert answer["choices"][0]["message"]["content"] == " positive"
    assert len(server.requests) == 3
    assert waits[0] == 0.0  # Retry-After honoured
    assert 0 < waits[1] <= 0.02  # exponential backoff with jitter


def test_gives_up_after_max_retries_with_the_last_problem(scripted):
    server = scripted([], default=(500, {"error": {"message": "boom"}}, {}))
    with pytest.raises(ServerError, match=r"failed 3 times, last: HTTP 500: boom"):
        post_with_retries(server.url + "/completions", {}, None, RetryPolicy(timeout=2, max_retries=2, base_delay=0),
                          sleep=lambda s: None)
    assert len(server.requests) == 3


def test_client_errors_are_not_retried(scripted):
    server = scripted([(400, {"error": {"message": "model 'x' does not exist"}}, {})])
    backend = OpenAIBackend("x", base_url=server.url, **FAST)
    with pytest.raises(ServerError, match="HTTP 400: model 'x' does not exist"):
        backend.generate([GenerateRequest(PROMPT, max_tokens=4)])
    assert len(server.requests) == 1


def test_timeout_is_retried(scripted):
    server = scripted([("hang", 1.5), chat_ok(" negative")])
    backend = OpenAIBackend("m", base_url=server.url, request_timeout=0.5, max_retries=2)
    (result,) = backend.generate([GenerateRequest(PROMPT, max_tokens=4)])
    assert result.text == " negative"
    assert len(server.requests) == 2


def test_refused_connection_is_retried_then_reported(scripted):
    server = scripted([])
    url = server.url
    server.close()  # nothing listens there any more
    backend = OpenAIBackend("m", base_url=url, request_timeout=1, max_retries=1)
    backend.policy = RetryPolicy(timeout=1, max_retries=1, base_delay=0.01)
    with pytest.raises(ServerError, match="failed 2 times"):
        backend.generate([GenerateRequest(PROMPT, max_tokens=4)])


def test_chat_request_shape_prefix_stop_schema_and_key(scripted):
    # llama.cpp's server repeats a prefilled assistant prefix; vLLM does not: both give the continuation.
    server = scripted([chat_ok("The sentiment is positive\nmore"), chat_ok(" negative")])
    backend = OpenAIBackend("my-model", base_url=server.url, api_key="sk-test", concurrency=1, **FAST)
    schema = json.dumps({"type": "object"})
    results = backend.generate([GenerateRequest(PROMPT, stop=("\n", "###"), max_tokens=5, json_schema=schema),
                                GenerateRequest(PROMPT, stop=("\n",), max_tokens=5, temperature=0.7, seed=9)])
    assert [r.text for r in results] == [" positive", " negative"]
    assert results[0].logprob == pytest.approx(-0.75) and results[0].n_tokens == 2
    first = server.requests[0]
    assert first["path"] == "/v1/chat/completions" and first["auth"] == "Bearer sk-test"
    body = first["body"]
    assert body["model"] == "my-model"
    assert body["messages"][-1] == {"role": "assistant", "content": "The sentiment is"}
    assert body["continue_final_message"] is True
    assert body["stop"] == ["###"]  # whitespace stops are applied locally (replies may open with a newline)
    assert body["response_format"]["json_schema"]["schema"] == {"type": "object"}
    assert server.requests[1]["body"]["seed"] == 9 and server.requests[1]["body"]["temperature"] == 0.7


def test_results_keep_request_order_under_concurrency(scripted):
    def echo_back(body):
        time.sleep(0.05 * (3 - int(body["messages"][0]["content"])))  # later requests answer first
        return chat_ok(body["messages"][0]["content"])

    server = scripted([], default=echo_back)
    backend = OpenAIBackend("m", base_url=server.url, concurrency=4, **FAST)
    prompts = [Prompt((Message("user", str(i)),)) for i in range(4)]
    results = backend.generate([GenerateRequest(p, max_tokens=2) for p in prompts])
    assert [r.text for r in results] == ["0", "1", "2", "3"]


def echo_completion(body):
    """A vLLM-like /completions answer with echo: one 'token' per word, offsets into the prompt."""
    text = body["prompt"]
    tokens, offsets, pos = [], [], 0
    for piece in text.replace(" ", "\x00 ").split("\x00"):
        if piece:
            tokens.append(piece)
            offsets.append(pos)
            pos += len(piece)
    tokens.append("!")
    offsets.append(len(text))
    values = [None] + [-float(len(t)) for t in tokens[1:]]
    top = [None] + [{t: -float(len(t))} for t in tokens[1:]]
    return (200, {"choices": [{"text": text + "!", "finish_reason": "length",
                               "logprobs": {"tokens": tokens, "text_offset": offsets, "token_logprobs": values,
                                            "top_logprobs": top}}]}, {})


def test_loglikelihood_from_echoed_prompt_logprobs(scripted):
    server = scripted([], default=echo_completion)
    backend = OpenAIBackend("m", base_url=server.url, api="completions", **FAST)
    results = backend.loglikelihood([LoglikelihoodRequest(PROMPT, " positive"),
                                     LoglikelihoodRequest(PROMPT, " very good")])
    # prompt "Review: great film\nThe sentiment is positive": the continuation is the token " positive"
    assert results[0].logprob == -len(" positive") and results[0].n_tokens == 1 and results[0].is_greedy
    assert results[1].logprob == -(len(" very") + len(" good")) and results[1].n_tokens == 2
    bodies = [r["body"] for r in server.requests]  # concurrent requests: any arrival order
    assert all(body["echo"] is True and body["logprobs"] == 1 for body in bodies)
    assert sorted(body["prompt"] for body in bodies) == ["Review: great film\nThe sentiment is positive",
                                                          "Review: great film\nThe sentiment is very good"]


def test_loglikelihood_without_echo_support_is_a_clear_error(scripted):
    # What llama.cpp's server (and most hosted models) do: log-probabilities for the generated token only.
    only_generated = (200, {"choices": [{"text": "x", "logprobs": {"content": [{"token": "x", "logprob": -1.0}]}}]},
                      {})
    server = scripted([], default=only_generated)
    backend = OpenAIBackend("m", base_url=server.url, api="completions", **FAST)
    with pytest.raises(EchoUnsupported, match="only for generated tokens"):
        backend.loglikelihood([LoglikelihoodRequest(PROMPT, " positive")])


def test_chat_api_refuses_loglikelihood_before_sending(scripted):
    server = scripted([])
    backend = OpenAIBackend("m", base_url=server.url, api="chat", **FAST)
    with pytest.raises(UserError, match="--api completions"):
        backend.loglikelihood([LoglikelihoodRequest(PROMPT, " positive")])
    assert server.requests == []


def test_bad_base_url_and_api_are_user_errors():
    with pytest.raises(UserError, match="http"):
        OpenAIBackend("m", base_url="localhost:8000")
    with pytest.raises(UserError, match="chat or completions"):
        OpenAIBackend("m", base_url="http://127.0.0.1:1/v1", api="responses")


def test_api_key_never_reaches_results(tmp_path, scripted):
    from taskfit.settings import RunConfig

    config = RunConfig(task="demo", backend="openai", api_key="sk-secret", base_url="http://127.0.0.1:1/v1")
    assert "sk-secret" not in config.model_dump_json()
    assert config.backend_options()["api_key"] == "sk-secret"


def test_rerun_of_a_finished_run_after_the_server_went_away_keeps_everything(tmp_path, scripted):
    """Issue 16, defect 1, as reported: 5 rows against a server, server stopped, same command again with
    --max-retries 1. It used to exit 3 with samples.jsonl emptied; a complete run now needs no server."""
    from taskfit.cli import main

    server = scripted([], default=chat_ok("positive"))
    out = tmp_path / "run"
    argv = ["eval", "--task", "demo", "--backend", "openai", "--base-url", server.url, "--api-key", "k",
            "--model", "m", "--mode", "generate", "--limit", "5", "--no-cache", "--no-progress",
            "--bootstrap-samples", "0", "--output", str(out)]
    assert main(argv) == 0
    samples = (out / "samples.jsonl").read_text()
    assert samples.count("\n") == 5
    server.close()
    assert main([*argv, "--max-retries", "1"]) == 0
    assert (out / "samples.jsonl").read_text() == samples
    assert json.loads((out / "results.json").read_text())["counts"]["n"] == 5


def test_retry_after_as_seconds_or_as_an_http_date():
    from email.utils import format_datetime, parsedate_to_datetime

    from taskfit.models.http import retry_after_seconds

    assert retry_after_seconds("7") == 7.0 and retry_after_seconds("-3") == 0.0 and retry_after_seconds(None) is None
    when = "Wed, 21 Oct 2026 07:28:00 GMT"
    now = parsedate_to_datetime(when).timestamp() - 12.5
    assert retry_after_seconds(when, now=now) == pytest.approx(12.5)
    assert retry_after_seconds(format_datetime(parsedate_to_datetime(when)), now=now + 100) == 0.0  # in the past
    assert retry_after_seconds("soon") is None


def test_one_pool_of_connections_serves_every_request():
    """Keep-alive: 12 requests at concurrency 2 open at most 2 connections (a new urllib connection per request
    opened 12)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    body = json.dumps(chat_ok(" positive")[1]).encode()
    connections = []

    class KeepAlive(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def setup(self):
            connections.append(self.client_address)
            super().setup()

        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), KeepAlive)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        backend = OpenAIBackend("m", base_url=f"http://127.0.0.1:{server.server_port}/v1", concurrency=2, **FAST)
        results = backend.generate([GenerateRequest(PROMPT, (), 4) for _ in range(12)])
    finally:
        server.shutdown()
    assert [r.text for r in results] == [" positive"] * 12
    assert 1 <= len(connections) <= 2


def test_one_event_stream_reader_retries_only_before_the_first_event():
    """models/http.stream_events, under both streaming backends: a connection that fails before any event is tried
    again with back-off; one that breaks after an event has been used raises; HTTP and in-stream errors raise."""
    import httpx

    from taskfit.models.http import stream_events

    class Breaks(httpx.SyncByteStream):
        def __iter__(self):
            yield b'data: {"content": "Hel"}\n\n'
            raise httpx.ReadError("connection reset")

    calls, slept = [], []

    def handler(request):
        calls.append(json.loads(request.content))
        plan = script.pop(0)
        if plan == "refuse":
            raise httpx.ConnectError("refused")
        if plan == "breaks":
            return httpx.Response(200, stream=Breaks())
        if plan == "500":
            return httpx.Response(500, text="overloaded")
        return httpx.Response(200, content=plan)

    http = httpx.Client(transport=httpx.MockTransport(handler))
    policy = RetryPolicy(timeout=2, max_retries=2)
    script = ["refuse", b'data: {"content": "Hel"}\n\n: comment\ndata: {"content": "lo"}\r\n\r\ndata: [DONE]\n\n']
    events = list(stream_events(http, "http://x/completion", {"n": 1}, policy=policy, sleep=slept.append))
    assert [e["content"] for e in events] == ["Hel", "lo"] and len(calls) == 2 and len(slept) == 1
    script, calls[:] = ["breaks", b""], []
    seen = []
    with pytest.raises(ServerError, match="stream broke: ReadError"):
        for event in stream_events(http, "http://x/completion", {}, policy=policy, who="llama.cpp",
                                   sleep=slept.append):
            seen.append(event)
    assert seen == [{"content": "Hel"}] and len(calls) == 1  # not asked again: the event was already used
    script = ["500"]
    with pytest.raises(ServerError, match="HTTP 500: overloaded") as info:
        list(stream_events(http, "http://x/completion", {}, policy=policy))
    assert info.value.status == 500
    script = [b'data: {"error": {"message": "context too long"}}\n\n']
    with pytest.raises(ServerError, match="context too long"):
        list(stream_events(http, "http://x/completion", {}, policy=policy))
    script = ["refuse"] * 3
    with pytest.raises(ServerError, match="stream broke: ConnectError"):
        list(stream_events(http, "http://x/completion", {}, policy=policy, sleep=slept.append))
