"""The arena with the real embedded model on llama.cpp behind a real HTTP server: two blind answers stream side by
side, a vote is stored once and reveals the names, the leaderboard and the export read the votes."""

from __future__ import annotations

import json
import random

import httpx
import pytest

from serving import kbqa_task, read_events, running, write_kb
from taskfit.models.registry import load_backend
from taskfit.serve.app import create_app
from taskfit.serve.arena import draw
from taskfit.serve.assistant import Assistant
from taskfit.serve.export import export_rows
from taskfit.serve.gate import Gate
from taskfit.serve.store import Store
from taskfit.settings import ServeHTTPSection

KB = [("高等数学", "出版社", "武汉大学出版社"), ("线性代数", "出版时间", "2013-12-30")]
NAMES = ["long-answers", "short-answers", "tiny-answers"]


@pytest.fixture(scope="module")
def backend():
    loaded = load_backend("llamacpp", "smollm2-135m-instruct", concurrency=2, threads=2)
    yield loaded
    loaded.close()


def arena_app(backend, tmp_path, contestants=3, **settings):
    task = kbqa_task(write_kb(tmp_path / "kb.jsonl", KB))
    # three contestants on one backend, told apart by their answer budgets (the arena only sees names and answers)
    assistants = [Assistant(backend, task=task, model=name, max_tokens=tokens)
                  for name, tokens in zip(NAMES, (24, 8, 3))][:contestants]
    store = Store(tmp_path / "assistant.sqlite")
    app = create_app(assistants[0], store, Gate(2, 8, 30), ServeHTTPSection(**settings), arena=assistants)
    return app, store


def battle(http: httpx.Client, base: str, question: str) -> dict:
    events = read_events(http, f"{base}/api/arena", {"question": question})
    return {"events": events, "meta": events[0][1], "done": {d["side"]: d for n, d in events if n == "done"},
            "deltas": {side: [d["text"] for n, d in events if n == "delta" and d["side"] == side] for side in "ab"}}


def test_a_battle_streams_two_blind_answers_and_a_vote_is_stored_once_and_reveals_them(backend, tmp_path):
    app, store = arena_app(backend, tmp_path, admin_token="tok")
    with running(app) as base, httpx.Client() as http:
        fight = battle(http, base, "《高等数学》是哪个出版社出版的？")
        assert [n for n, _ in fight["events"]][0] == "meta" and fight["events"][-1][0] == "end"
        assert set(fight["done"]) == {"a", "b"}
        for side in "ab":
            assert "".join(fight["deltas"][side]).strip() == fight["done"][side]["answer"].strip()
        assert "高等数学 | 出版社 | 武汉大学出版社" in fight["meta"]["sources"]["a"]
        battle_id = fight["meta"]["battle"]
        assert "name" not in json.dumps(fight["events"])  # blind: nothing names a contestant before the vote

        session = http.cookies["taskfit_session"]
        found = store.battle(session, battle_id)
        assert found["a"].model != found["b"].model
        assert [found["a"].model, found["b"].model] == [NAMES[k] for k in draw(found["seed"], 3)]  # replayable
        assert (found["a"].answer, found["b"].answer) == (fight["done"]["a"]["answer"], fight["done"]["b"]["answer"])
        assert found["a"].prompt == found["b"].prompt  # both answered the same messages

        vote = {"event": "vote-00000001", "battle": battle_id, "winner": "a"}
        first = http.post(f"{base}/api/arena/vote", json=vote).json()
        assert first == {"stored": True, "event": "vote-00000001", "duplicate": False, "a": found["a"].model,
                         "b": found["b"].model}
        assert http.post(f"{base}/api/arena/vote", json=vote).json()["duplicate"] is True
        assert store.counts()["votes"] == 1

        # battles are not chat conversations, and another session cannot vote on this one
        assert http.get(f"{base}/api/conversations").json() == {"conversations": []}
        with httpx.Client() as stranger:
            assert stranger.post(f"{base}/api/arena/vote", json={**vote, "event": "vote-stranger"}).status_code == 404
        bad = http.post(f"{base}/api/arena/vote", json={**vote, "event": "vote-00000002", "winner": "left"})
        assert bad.status_code == 422

        # a changed vote counts once, as the latest
        http.post(f"{base}/api/arena/vote", json={**vote, "event": "vote-00000003", "winner": "b"})
        (counted,) = store.arena_votes()
        assert counted["winner"] == "b" and store.counts()["votes"] == 2

        assert http.get(f"{base}/api/arena/leaderboard").status_code == 401
        board = http.get(f"{base}/api/arena/leaderboard", headers={"Authorization": "Bearer tok"}).json()
        assert board["votes"] == 1
        assert {s["name"] for s in board["standings"]} == set(NAMES)  # unvoted contestants listed too
        assert board["standings"][0]["name"] == found["b"].model

        (pair,) = export_rows(store, "dpo")
        prefix = found["a"].prompt["answer_prefix"]  # rows continue the served answer prefix ("答案：")
        assert pair["chosen"][0]["content"] == prefix + found["b"].answer
        assert pair["rejected"][0]["content"] == prefix + found["a"].answer
        assert (pair["model"], pair["rejected_model"], pair["battle"]) == (found["b"].model, found["a"].model,
                                                                           battle_id)
        kto = export_rows(store, "kto")
        assert [r["label"] for r in kto] == [True, False]


def test_ties_give_no_pair_and_both_bad_gives_two_undesirable_rows(backend, tmp_path):
    app, store = arena_app(backend, tmp_path, contestants=2)
    with running(app) as base, httpx.Client() as http:
        ids = [battle(http, base, q)["meta"]["battle"] for q in ("线性代数什么时候出版？", "《高等数学》的出版社？")]
        for k, (battle_id, winner) in enumerate(zip(ids, ("tie", "both_bad"))):
            ok = http.post(f"{base}/api/arena/vote", json={"event": f"vote-tie-{k:04d}", "battle": battle_id,
                                                            "winner": winner})
            assert ok.status_code == 200
    assert export_rows(store, "dpo") == []
    kto = export_rows(store, "kto")
    assert [r["label"] for r in kto] == [False, False]
    assert {r["model"] for r in kto} == set(NAMES[:2])


def test_the_arena_is_off_with_one_contestant_and_a_vote_waits_for_both_answers(backend, tmp_path):
    app, store = arena_app(backend, tmp_path, contestants=1)
    with running(app) as base, httpx.Client() as http:
        off = http.post(f"{base}/api/arena", json={"question": "你好"})
        assert off.status_code == 404 and "--arena-adapter" in off.json()["error"]["message"]
        assert http.get(f"{base}/arena").status_code == 404
        assert 'href="/arena"' not in http.get(base).text
    # a battle whose answers are still being written takes no vote
    session = "0" * 32
    sides = [{"prompt": {"messages": [], "answer_prefix": ""}, "rendered": "", "sources": [], "model": name,
              "adapter": None, "task": None, "settings": {}} for name in NAMES[:2]]
    started = store.start_battle(session, question="q", seed=random.randrange(100), sides=sides)
    with pytest.raises(ValueError, match="both answers"):
        store.add_vote(session, "vote-early-0001", started["battle"], "a")
