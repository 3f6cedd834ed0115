"""`taskfit serve` with the real embedded model on llama.cpp behind a real HTTP server on loopback."""

from __future__ import annotations

import json
import sqlite3

import httpx
import pytest

from serving import chat, kbqa_task, running, write_kb
from taskfit.api import GenerateRequest, GenerateResult, Message, Prompt
from taskfit.models.registry import load_backend
from taskfit.serve.app import create_app
from taskfit.serve.assistant import Assistant
from taskfit.serve.gate import Gate
from taskfit.serve.store import Store
from taskfit.settings import ServeHTTPSection

MODEL = "smollm2-135m-instruct"
KB = [("高等数学", "出版社", "武汉大学出版社"), ("高等数学", "作者", "同济大学数学系"),
      ("线性代数", "出版时间", "2013-12-30"), ("安德烈", "国籍", "法国")]


@pytest.fixture(scope="module")
def backend():
    loaded = load_backend("llamacpp", "smollm2-135m-instruct", concurrency=2, threads=2)
    yield loaded
    loaded.close()


@pytest.fixture(scope="module")
def kb_file(tmp_path_factory):
    return write_kb(tmp_path_factory.mktemp("kb") / "kb.jsonl", KB)


def make_app(backend, kb_file, tmp_path, **settings):
    task = kbqa_task(kb_file)
    assistant = Assistant(backend, task=task, model="smollm2-135m-instruct", max_tokens=24)
    store = Store(tmp_path / "assistant.sqlite")
    gate = Gate(settings.pop("slots", 2), settings.pop("max_waiting", 8), 30)
    return create_app(assistant, store, gate, ServeHTTPSection(**settings)), store


def test_a_conversation_streams_shows_its_sources_and_keeps_the_context_it_was_answered_in(backend, kb_file,
                                                                                          tmp_path):
    app, store = make_app(backend, kb_file, tmp_path)
    with running(app) as base, httpx.Client() as http:
        first = chat(http, base, "《高等数学》是哪个出版社出版的？")
        assert len(first["deltas"]) >= 2
        assert "".join(first["deltas"]) == first["done"]["answer"]
        assert "高等数学 | 出版社 | 武汉大学出版社" in first["meta"]["sources"]
        conversation = first["meta"]["conversation"]
        second = chat(http, base, "它的作者是谁？", conversation)
        assert second["meta"]["conversation"] == conversation

        (one, two) = store.turns(http.cookies["taskfit_session"], conversation)
        assert (one.status, one.answer, one.model) == ("done", first["done"]["answer"], "smollm2-135m-instruct")
        messages = two.prompt["messages"]
        assert messages[0] == {"role": "system", "content": "你是一个知识库问答助手。"}
        assert messages[1] == {"role": "user", "content": "《高等数学》是哪个出版社出版的？"}
        assert messages[2] == {"role": "assistant", "content": first["done"]["answer"]}
        assert messages[3]["content"].startswith("根据下面的知识回答问题，只写出答案。\n问题：它的作者是谁？\n知识：")
        prompt = Prompt(tuple(Message(m["role"], m["content"]) for m in messages), two.prompt["answer_prefix"])
        assert two.rendered == backend.render(prompt)  # the exact text the model saw
        assert two.rendered.endswith("答案：")

        page = http.get(base, params={"c": conversation})
        assert page.status_code == 200
        assert "它的作者是谁？" in page.text
        assert page.headers["content-security-policy"].startswith("default-src 'none'; script-src 'self'")

        # another browser session sees none of it
        with httpx.Client() as stranger:
            assert stranger.get(f"{base}/api/conversations/{conversation}").status_code == 404
            assert stranger.get(f"{base}/api/conversations").json() == {"conversations": []}
            wrong = stranger.post(f"{base}/api/feedback", json={"event": "event-strange", "turn": one.id,
                                                                 "kind": "up"})
            assert wrong.status_code == 404
            assert "它的作者是谁？" not in stranger.get(base, params={"c": conversation}).text

        ok = http.post(f"{base}/api/feedback", json={"event": "event-thumb1", "turn": one.id, "kind": "down",
                                                      "reason": "wrong publisher"})
        assert ok.json() == {"stored": True, "event": "event-thumb1", "duplicate": False}
        again = http.post(f"{base}/api/feedback", json={"event": "event-thumb1", "turn": one.id, "kind": "down"})
        assert again.json()["duplicate"] is True
    assert store.counts() == {"conversations": 1, "turns": 2, "feedback": 1, "battles": 0, "votes": 0, "ratings": 0}


def test_bad_requests_get_json_errors_that_say_what_to_do(backend, kb_file, tmp_path):
    app, _ = make_app(backend, kb_file, tmp_path, max_question_chars=50, max_messages=3, admin_token="tok")
    with running(app) as base, httpx.Client() as http:
        long = http.post(f"{base}/api/chat", json={"question": "问" * 51})
        assert long.status_code == 413
        assert "limit is 50" in long.json()["error"]["message"]
        bad = http.post(f"{base}/api/chat", json={"nothing": 1})
        assert bad.status_code == 422 and "question" in bad.json()["error"]["message"]
        assert http.post(f"{base}/api/chat", json={"question": "q", "conversation": "nope"}).status_code == 404
        many = http.post(f"{base}/v1/chat/completions",
                         json={"messages": [{"role": "user", "content": "hi"}] * 4, "max_tokens": 2})
        assert many.status_code == 413
        assert http.post(f"{base}/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}],
                                                               "max_tokens": 5000}).status_code == 422
        huge = http.post(f"{base}/api/chat", content=b"{" + b" " * (1 << 20) + b"}",
                         headers={"Content-Type": "application/json"})
        assert huge.status_code == 413
        assert http.get(f"{base}/api/export").status_code == 401
        assert http.get(f"{base}/api/export", headers={"Authorization": "Bearer nope"}).status_code == 401
        assert http.get(f"{base}/api/export", headers={"Authorization": "Bearer tok"}).status_code == 200
        assert http.get(f"{base}/static/../app.py").status_code == 404


class Failing:
    """The real backend, failing after two tokens of its answer (a model crashing mid-answer)."""

    def __init__(self, backend):
        self.backend = backend
        self.name = backend.name

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def generate_streaming(self, request, emit):
        emit("partial ")
        emit("answer")
        raise RuntimeError("the model process died")


def test_a_model_failing_mid_answer_is_reported_and_the_conversation_goes_on(backend, kb_file, tmp_path):
    app, store = make_app(backend, kb_file, tmp_path)
    real = app.state.served.assistant.backend
    with running(app) as base, httpx.Client() as http:
        app.state.served.assistant.backend = Failing(real)
        failed = chat(http, base, "线性代数的出版时间是什么？")
        assert failed["deltas"] == ["partial ", "answer"]
        assert "the model failed" in failed["error"]["message"]
        conversation = failed["meta"]["conversation"]
        app.state.served.assistant.backend = real
        later = chat(http, base, "安德烈是哪国人？", conversation)
        assert "done" in later
        turns = store.turns(http.cookies["taskfit_session"], conversation)
    assert [(t.status, t.answer) for t in turns][0] == ("failed", "partial answer")
    assert turns[0].error == "RuntimeError: the model process died"
    assert turns[1].status == "done"
    # the failed turn is not shown to the model as an earlier answer
    assert all("partial answer" not in m["content"] for m in turns[1].prompt["messages"])


def test_the_openai_client_streams_and_gets_usage(backend, kb_file, tmp_path):
    from openai import OpenAI

    app, _ = make_app(backend, kb_file, tmp_path, serve_api_key="key-1")
    with running(app) as base:
        client = OpenAI(base_url=f"{base}/v1", api_key="key-1")
        assert [m.id for m in client.models.list()] == ["smollm2-135m-instruct"]
        messages = [{"role": "user", "content": "Name a colour."}]
        stream = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=12, temperature=0,
                                                stream=True, stream_options={"include_usage": True})
        pieces, usage = [], None
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
            usage = chunk.usage or usage
        whole = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=12, temperature=0)
        assert len(pieces) >= 2 and "".join(pieces) == whole.choices[0].message.content
        assert usage.completion_tokens == whole.usage.completion_tokens == 12
        assert usage.prompt_tokens == whole.usage.prompt_tokens > 5
        assert whole.choices[0].finish_reason == "length"
        direct = backend.generate([_request(messages, 12)])[0]
        assert whole.choices[0].message.content == direct.text
        text = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=4,
                                         temperature=0).choices[0].text
        assert "Paris" in text
        stopped = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=30, temperature=0,
                                                 stop=["."])
        assert "." not in stopped.choices[0].message.content
        denied = httpx.get(f"{base}/v1/models", headers={"Authorization": "Bearer wrong"})
        assert denied.status_code == 401


def _request(messages, max_tokens):
    from taskfit.api import GenerateRequest, Message, Prompt

    return GenerateRequest(Prompt(tuple(Message(m["role"], m["content"]) for m in messages)), (), max_tokens, 0.0)


def test_a_busy_server_answers_503_instead_of_queueing_forever(backend, kb_file, tmp_path):
    import threading

    app, _ = make_app(backend, kb_file, tmp_path, slots=1, max_waiting=0)
    started = threading.Event()
    release = threading.Event()

    class Slow:
        name = "llamacpp"

        def __getattr__(self, item):
            return getattr(backend, item)

        def generate_streaming(self, request, emit):
            started.set()
            release.wait(20)
            return GenerateResult("done", 1, "stop")

    app.state.served.assistant.backend = Slow()
    with running(app) as base:
        body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        first = threading.Thread(target=httpx.post, args=(f"{base}/v1/chat/completions",), kwargs={"json": body,
                                                                                                   "timeout": 30})
        first.start()
        assert started.wait(10)
        busy = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=30)
        release.set()
        first.join(30)
    assert busy.status_code == 503
    assert busy.json()["error"]["type"] == "server_busy"


def test_database_rows_are_what_the_page_acknowledged(backend, kb_file, tmp_path):
    app, store = make_app(backend, kb_file, tmp_path)
    with running(app) as base, httpx.Client() as http:
        turn = chat(http, base, "高等数学的作者是谁？")["meta"]["turn"]
        for i in range(5):
            http.post(f"{base}/api/feedback", json={"event": f"event-many{i}", "turn": turn, "kind": "up"})
    rows = sqlite3.connect(tmp_path / "assistant.sqlite").execute("SELECT id, kind FROM feedback").fetchall()
    assert sorted(rows) == [(f"event-many{i}", "up") for i in range(5)]


def test_the_openai_backend_streams_from_a_served_model(backend, kb_file, tmp_path):
    from taskfit.models.openai import OpenAIBackend

    app, _ = make_app(backend, kb_file, tmp_path)
    with running(app) as base:
        remote = OpenAIBackend("smollm2-135m-instruct", base_url=f"{base}/v1", api_key="")
        for prefix in ("", "Sure:"):
            request = GenerateRequest(Prompt((Message("user", "Name three colours."),), prefix), ("\n\n",), 24)
            pieces: list[str] = []
            streamed = remote.generate_streaming(request, pieces.append)
            whole = remote.generate([request])[0]
            assert len(pieces) >= 2
            assert "".join(pieces) == streamed.text == whole.text == backend.generate([request])[0].text
            assert streamed.n_tokens == whole.n_tokens


def test_answers_rated_on_criteria_are_stored_once_exported_as_tags_and_filter_the_export(backend, kb_file,
                                                                                          tmp_path):
    app, store = make_app(backend, kb_file, tmp_path, criteria=["helpful", "correct"], admin_token="tok")
    with running(app) as base, httpx.Client() as http:
        page = http.get(base).text
        assert 'data-criteria="[&quot;helpful&quot;, &quot;correct&quot;]"' in page
        answered = chat(http, base, "《高等数学》是哪个出版社出版的？")
        turn = answered["done"]["turn"]
        rate = {"event": "rate-000001", "turn": turn, "criterion": "correct", "value": "bad"}
        assert http.post(f"{base}/api/rate", json=rate).json()["duplicate"] is False
        assert http.post(f"{base}/api/rate", json=rate).json()["duplicate"] is True
        assert http.post(f"{base}/api/rate", json={**rate, "event": "rate-000002", "criterion": "helpful",
                                                    "value": "good"}).status_code == 200
        unknown = http.post(f"{base}/api/rate", json={**rate, "event": "rate-000003", "criterion": "funny"})
        assert unknown.status_code == 422 and "helpful, correct" in unknown.json()["error"]["message"]
        http.post(f"{base}/api/feedback", json={"event": "better-00001", "turn": turn, "kind": "better",
                                                 "text": "武汉大学出版社"})
        filtered = http.get(f"{base}/api/export", params={"as": "dpo", "where": "correct=bad"},
                            headers={"Authorization": "Bearer tok"})
        (row,) = [json.loads(line) for line in filtered.text.splitlines()]
        assert row["ratings"] == {"correct": "bad", "helpful": "good"}
        none = http.get(f"{base}/api/export", params={"as": "dpo", "where": "correct=good"},
                        headers={"Authorization": "Bearer tok"})
        assert none.status_code == 200 and none.text == ""
        bad = http.get(f"{base}/api/export", params={"as": "dpo", "where": "correct"},
                       headers={"Authorization": "Bearer tok"})
        assert bad.status_code == 422 and "CRITERION=good" in bad.json()["error"]["message"]
    assert store.counts()["ratings"] == 2
    assert store.ratings() == {turn: {"correct": "bad", "helpful": "good"}}


def test_without_criteria_the_page_offers_no_ratings(backend, kb_file, tmp_path):
    app, _ = make_app(backend, kb_file, tmp_path)
    with running(app) as base, httpx.Client() as http:
        assert 'data-criteria="[]"' in http.get(base).text
        answered = chat(http, base, "你好")
        refused = http.post(f"{base}/api/rate", json={"event": "rate-000009", "turn": answered["done"]["turn"],
                                                       "criterion": "correct", "value": "bad"})
        assert refused.status_code == 422 and "--criteria" in refused.json()["error"]["message"]
