"""The assistant under a hostile client (issue 35), against a real server on loopback and the embedded model on
llama.cpp: bodies over the limit refused while they are read, foreign Host headers, /v1 parameter abuse, over-long
prompts fitted (never cut from the start), methods and HEAD as RFC 9110 says, and reasons carried into the export."""

from __future__ import annotations

import json
import socket
import time
from urllib.parse import urlparse

import httpx
import pytest

from serving import chat, kbqa_task, running, write_kb
from taskfit.models.registry import load_backend
from taskfit.serve.app import MAX_BODY_BYTES, create_app
from taskfit.serve.assistant import Assistant
from taskfit.serve.export import export_rows
from taskfit.serve.gate import Gate
from taskfit.serve.store import Store
from taskfit.settings import ServeHTTPSection

MODEL = "smollm2-135m-instruct"
KB = [("高等数学", "出版社", "武汉大学出版社"), ("高等数学", "页数", "304")]


@pytest.fixture(scope="module")
def backend():
    loaded = load_backend("llamacpp", MODEL, concurrency=2, threads=2)
    yield loaded
    loaded.close()


@pytest.fixture(scope="module")
def served(backend, tmp_path_factory):
    """One server for the module: the KBQA assistant with an API key on /v1."""
    folder = tmp_path_factory.mktemp("hostile")
    task = kbqa_task(write_kb(folder / "kb.jsonl", KB))
    store = Store(folder / "assistant.sqlite")
    app = create_app(Assistant(backend, task=task, model=MODEL, max_tokens=16), store, Gate(2, 8, 60),
                     ServeHTTPSection(serve_api_key="key-1", allowed_hosts=["assistant.example"]))
    with running(app) as base:
        yield base, store


def raw_request(base: str, head: bytes, chunks, timeout: float = 20) -> tuple[int, bytes, bool]:
    """Send ``head`` then each chunk over one socket; returns the status, the response, and whether the server
    answered before every chunk was sent (a body refused while it was read, not after)."""
    url = urlparse(base)
    with socket.create_connection((url.hostname, url.port), timeout=timeout) as sock:
        sock.sendall(head)
        early = False
        for chunk in chunks:
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                early = True
                break
            sock.setblocking(False)
            try:
                if sock.recv(1, socket.MSG_PEEK):
                    early = True
                    break
            except BlockingIOError:
                pass
            finally:
                sock.setblocking(True)
        sock.settimeout(timeout)
        response = b""
        while b"\r\n\r\n" not in response or len(response.partition(b"\r\n\r\n")[2]) < _length(response):
            piece = sock.recv(65536)
            if not piece:
                break
            response += piece
    status = int(response.split(b" ", 2)[1]) if response else 0
    return status, response, early


def _length(response: bytes) -> int:
    for line in response.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":", 1)[1])
    return 0


def chunked(total: int, size: int = 64 * 1024):
    """A JSON chat body sent with Transfer-Encoding: chunked, ``total`` bytes of it, never finished (no last chunk):
    a server that waits for the whole body never answers."""
    sent = 0
    first = b'{"question": "'
    yield b"%x\r\n%s\r\n" % (len(first), first)
    while sent < total:
        part = b"a" * size
        sent += size
        yield b"%x\r\n%s\r\n" % (len(part), part)
        time.sleep(0.01)


@pytest.mark.parametrize("path", ["/api/chat", "/api/feedback", "/v1/chat/completions"])
def test_a_chunked_body_over_the_limit_is_refused_before_it_is_read_whole(served, path):
    base, _ = served
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            "Authorization: Bearer key-1\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
    status, response, early = raw_request(base, head, chunked(4 * MAX_BODY_BYTES))
    assert status == 413, response[:300]
    assert early  # answered while the client was still sending: the body was never buffered whole
    assert b"request body over 1048576 bytes" in response


def test_a_declared_length_over_the_limit_is_refused_at_once(served):
    base, _ = served
    head = (b"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % (MAX_BODY_BYTES + 1))
    status, response, _ = raw_request(base, head, [])
    assert status == 413 and b"request body over" in response


def test_only_the_bound_and_allowed_host_names_are_answered(served):
    base, _ = served
    assert httpx.get(base, headers={"Host": "attacker.example"}).status_code == 400
    refused = httpx.get(f"{base}/healthz", headers={"Host": "attacker.example:8000"})
    assert refused.status_code == 400 and "--allowed-hosts" in refused.json()["error"]["message"]
    assert httpx.post(f"{base}/v1/chat/completions", headers={"Host": "evil.test", "Authorization": "Bearer key-1"},
                      json={"messages": [{"role": "user", "content": "hi"}]}).status_code == 400
    for host in ("127.0.0.1", "localhost:8000", "assistant.example", "[::1]:8000"):
        assert httpx.get(f"{base}/healthz", headers={"Host": host}).status_code == 200, host


def test_v1_authenticates_before_it_reads_the_body(served):
    base, _ = served
    for body in (b"{not json", b'{"messages": 3}', b"{}"):
        response = httpx.post(f"{base}/v1/chat/completions", content=body,
                              headers={"Content-Type": "application/json"})
        assert response.status_code == 401, (body, response.text)
        assert response.json()["error"]["type"] == "authentication_error"


def test_v1_refuses_what_it_would_otherwise_ignore(served):
    base, _ = served
    auth = {"Authorization": "Bearer key-1"}
    messages = [{"role": "user", "content": "Name a colour."}]
    unknown = httpx.post(f"{base}/v1/chat/completions", headers=auth, json={"model": "gpt-4o", "messages": messages})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
    for extra, name in (({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
                        ({"logprobs": True}, "logprobs"), ({"top_logprobs": 2}, "top_logprobs"),
                        ({"n": 2}, "n"), ({"presence_penalty": 0.5}, "presence_penalty"),
                        ({"logit_bias": {"12": 5}}, "logit_bias")):
        refused = httpx.post(f"{base}/v1/chat/completions", headers=auth,
                             json={"model": MODEL, "messages": messages, "max_tokens": 4, **extra})
        assert refused.status_code == 400, (extra, refused.text)
        assert refused.json()["error"]["param"] == name
    neutral = httpx.post(f"{base}/v1/chat/completions", headers=auth, timeout=60,
                         json={"model": MODEL, "messages": messages, "max_tokens": 4, "logprobs": False,
                               "tool_choice": "none", "presence_penalty": 0, "response_format": {"type": "text"}})
    assert neutral.status_code == 200, neutral.text
    for extra in ({"echo": True}, {"suffix": "!"}, {"best_of": 3}):
        refused = httpx.post(f"{base}/v1/completions", headers=auth,
                             json={"model": MODEL, "prompt": "Paris is", "max_tokens": 2, **extra})
        assert refused.status_code == 400, (extra, refused.text)


def test_v1_answers_json_when_asked_with_a_schema(served):
    base, _ = served
    schema = {"type": "object", "properties": {"colour": {"type": "string", "enum": ["red", "green", "blue"]}},
              "required": ["colour"]}
    answer = httpx.post(f"{base}/v1/chat/completions", headers={"Authorization": "Bearer key-1"}, timeout=60,
                        json={"model": MODEL, "max_tokens": 24, "temperature": 0,
                              "messages": [{"role": "user", "content": "Name a colour of the sky."}],
                              "response_format": {"type": "json_schema",
                                                  "json_schema": {"name": "c", "schema": schema}}})
    assert answer.status_code == 200, answer.text
    assert json.loads(answer.json()["choices"][0]["message"]["content"])["colour"] in ("red", "green", "blue")


def test_v1_says_when_a_prompt_does_not_fit_instead_of_cutting_it(served, backend):
    base, _ = served
    long = "word " * (backend.context_window() + 500)
    response = httpx.post(f"{base}/v1/chat/completions", headers={"Authorization": "Bearer key-1"}, timeout=60,
                          json={"model": MODEL, "max_tokens": 8,
                                "messages": [{"role": "system", "content": "Be brief."},
                                             {"role": "user", "content": long}]})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "context_length_exceeded"
    assert f"maximum context length is {backend.context_window()} tokens" in error["message"]


def test_an_over_long_question_keeps_the_system_prompt_and_says_what_was_cut(served, backend):
    base, store = served
    window = backend.context_window()
    question = "问" * 3980 + "《高等数学》的页数是多少？"  # within the 4,000-character limit, ~8,000 tokens
    with httpx.Client() as http:
        answered = chat(http, base, question)
        session = http.cookies["taskfit_session"]
    assert "done" in answered, answered["events"][-1]
    notice = answered["meta"]["notice"]
    assert notice and "left out" in notice
    turn = store.turns(session, answered["meta"]["conversation"])[0]
    assert turn.question == question  # what the user asked is kept whole
    messages = turn.prompt["messages"]
    assert messages[0] == {"role": "system", "content": "你是一个知识库问答助手。"}
    assert messages[-1]["content"].startswith("根据下面的知识回答问题，只写出答案。")  # the instruction stays
    assert "《高等数学》的页数是多少？" in messages[-1]["content"] and " … " in messages[-1]["content"]
    assert backend.count_tokens(turn.rendered) <= window - 16  # room for the answer: what the model saw, whole
    assert turn.rendered.startswith("<|im_start|>system\n你是一个知识库问答助手。")
    assert turn.notice == notice
    fitted = json.loads(store._read("SELECT settings FROM turns WHERE id = ?", (turn.id,))[0][0])["fitted"]
    assert fitted["question_chars"] == len(question) > fitted["question_kept_chars"] > 0


def test_earlier_turns_go_before_the_question_is_cut(backend, tmp_path):
    assistant = Assistant(backend, model=MODEL, max_tokens=16)
    window = backend.context_window()
    history = [("问" * window, "答"), ("第二个问题", "第二个回答")]  # the first turn alone is over the window
    asked = assistant.ask("最后的问题？", history)
    assert asked.fitted["history_dropped"] == 1 and asked.fitted["question_kept_chars"] == len("最后的问题？")
    assert [m.content for m in asked.prompt.messages][-3:] == ["第二个问题", "第二个回答", "最后的问题？"]
    assert assistant.ask("短问题", history[1:]).fitted is None


def test_wrong_methods_say_what_is_allowed_and_head_answers_like_get(served):
    base, _ = served
    wrong = httpx.get(f"{base}/api/chat")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
    assert httpx.delete(f"{base}/api/feedback").headers["allow"] == "POST"
    head, get = httpx.head(base), httpx.get(base)
    assert head.status_code == get.status_code == 200
    assert head.content == b"" and head.headers["content-type"] == get.headers["content-type"]
    assert head.headers["content-security-policy"] == get.headers["content-security-policy"]
    assert httpx.head(f"{base}/healthz").status_code == 200


def test_a_thumbs_down_reason_reaches_every_export(served):
    base, store = served
    with httpx.Client() as http:
        turn = chat(http, base, "《高等数学》有多少页？")["meta"]["turn"]
        assert http.post(f"{base}/api/feedback", json={"event": "event-reason1", "turn": turn, "kind": "down",
                                                        "reason": "页数不对，应为304"}).status_code == 200
        assert http.post(f"{base}/api/feedback", json={"event": "event-reason2", "turn": turn, "kind": "better",
                                                        "text": "304页", "reason": "书上写的"}).status_code == 200
    kto = [r for r in export_rows(store, "kto") if r["turn"] == turn]
    dpo = [r for r in export_rows(store, "dpo") if r["turn"] == turn]
    assert {r["reason"] for r in kto} == {"页数不对，应为304", "书上写的"}
    assert [r["reason"] for r in dpo] == ["书上写的"]
