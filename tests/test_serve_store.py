"""The assistant's SQLite store (conversations, regenerations, feedback, durability) and its export as training rows
that `taskfit align` reads."""

from __future__ import annotations

import json

import pytest

from taskfit.data.preferences import read_preferences
from taskfit.serve.export import export_rows
from taskfit.serve.store import NotFound, Store

A, B = "a" * 32, "b" * 32  # two browser sessions


@pytest.fixture()
def store(tmp_path):
    s = Store(tmp_path / "assistant.sqlite")
    yield s
    s.close()


def answered(store: Store, session: str, conversation: str, question: str, answer: str, parent=None, prefix="答案："):
    turn = store.start_turn(session, conversation, question=question,
                            prompt={"messages": [{"role": "system", "content": "sys"},
                                                 {"role": "user", "content": f"Q: {question}"}],
                                    "answer_prefix": prefix},
                            rendered=f"<rendered {question}>", sources=["s | p | o"], model="m", adapter="ad",
                            task="t", settings={}, parent=parent)
    store.finish_turn(turn.id, answer, generated_tokens=3)
    return turn


def test_feedback_is_stored_once_per_event_and_sessions_do_not_see_each_other(store):
    conversation = store.new_conversation(A, "first question")
    turn = answered(store, A, conversation, "q1", "a1")
    assert store.add_feedback(A, "event-0001", turn.id, "up") is True
    assert store.add_feedback(A, "event-0001", turn.id, "up") is False  # a retried click
    assert store.counts()["feedback"] == 1
    with pytest.raises(NotFound):
        store.turns(B, conversation)
    with pytest.raises(NotFound):
        store.add_feedback(B, "event-0002", turn.id, "down")
    assert store.conversations(B) == []
    assert [c["id"] for c in store.conversations(A)] == [conversation]
    with pytest.raises(ValueError, match="better answer needs its text"):
        store.add_feedback(A, "event-0003", turn.id, "better", text="  ")


def test_a_failed_answer_keeps_the_conversation_and_its_partial_text(store):
    conversation = store.new_conversation(A, "q")
    turn = store.start_turn(A, conversation, question="q", prompt={"messages": [], "answer_prefix": ""},
                            rendered="r", sources=[], model="m", adapter=None, task=None, settings={})
    store.finish_turn(turn.id, "half an ans", error="RuntimeError: boom")
    (kept,) = store.turns(A, conversation)
    assert (kept.status, kept.answer, kept.error) == ("failed", "half an ans", "RuntimeError: boom")
    assert store.history(A, conversation) == []  # a failed answer is not context for the next question
    with pytest.raises(ValueError, match="finished answer"):
        store.add_feedback(A, "event-0004", turn.id, "up")


def test_history_follows_the_picked_regeneration(store):
    conversation = store.new_conversation(A, "q1")
    first = answered(store, A, conversation, "q1", "old answer")
    again = answered(store, A, conversation, "q1", "new answer", parent=first.id)
    assert again.position == first.position
    assert [t.answer for t in store.history(A, conversation)] == ["new answer"]  # the latest by default
    store.add_feedback(A, "event-pick1", first.id, "pick")
    assert [t.answer for t in store.history(A, conversation)] == ["old answer"]


def test_export_turns_feedback_into_rows_align_reads_back(store, tmp_path):
    conversation = store.new_conversation(A, "q1")
    one = answered(store, A, conversation, "q1", "wrong")
    two = answered(store, A, conversation, "q2", "right")
    store.add_feedback(A, "event-up-1", one.id, "up")
    store.add_feedback(A, "event-down1", one.id, "down", reason="not in the facts")  # the later thumb wins
    store.add_feedback(A, "event-bttr1", one.id, "better", text="fixed")
    store.add_feedback(A, "event-up-2", two.id, "up")
    regen = answered(store, A, conversation, "q2", "another", parent=two.id)
    store.add_feedback(A, "event-pick2", regen.id, "pick")

    kto = export_rows(store, "kto")
    assert [(r["completion"][0]["content"], r["label"]) for r in kto] == [
        ("答案：wrong", False), ("答案：fixed", True), ("答案：wrong", False), ("答案：right", True),
        ("答案：right", False), ("答案：another", True)]
    dpo = export_rows(store, "dpo")
    assert [(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in dpo] == [
        ("答案：fixed", "答案：wrong"), ("答案：another", "答案：right")]
    assert dpo[0]["prompt"] == [{"role": "system", "content": "sys"}, {"role": "user", "content": "Q: q1"}]
    assert {k: dpo[0][k] for k in ("feedback_id", "conversation", "turn", "model", "adapter")} == {
        "feedback_id": "event-bttr1", "conversation": conversation, "turn": one.id, "model": "m", "adapter": "ad"}
    sft = export_rows(store, "sft")
    assert [r["completion"][0]["content"] for r in sft] == ["答案：fixed", "答案：right", "答案：another"]

    for name, rows in (("dpo", dpo), ("kto", kto)):
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        data = read_preferences(path)
        assert len(data.pairs) + len(data.rated) == len(rows)
    pairs = read_preferences(tmp_path / "dpo.jsonl").pairs
    assert dict(pairs[0].tags)["feedback_id"] == "event-bttr1"
    assert pairs[0].prompt[1].content == "Q: q1"


def test_the_store_survives_reopening(tmp_path):
    path = tmp_path / "a.sqlite"
    store = Store(path)
    conversation = store.new_conversation(A, "q")
    turn = answered(store, A, conversation, "q", "a")
    store.add_feedback(A, "event-keep1", turn.id, "down")
    store.close()
    again = Store(path)
    assert again.counts() == {"conversations": 1, "turns": 1, "feedback": 1, "battles": 0, "votes": 0, "ratings": 0}
    assert again.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    again.close()


def test_exported_feedback_runs_one_dpo_and_one_kto_step(tiny_model_dir, tmp_path):
    from taskfit.cli import main

    db = tmp_path / "assistant.sqlite"
    store = Store(db)
    for i in range(6):
        conversation = store.new_conversation(A, f"q{i}")
        turn = answered(store, A, conversation, f"question {i}", f"model answer {i}", prefix="")
        store.add_feedback(A, f"event-bet-{i}", turn.id, "better", text=f"a better answer {i}")
        store.add_feedback(A, f"event-thm-{i}", turn.id, "down")
    store.close()
    for fmt, rows in (("dpo", 6), ("kto", 18)):
        out = tmp_path / f"{fmt}.jsonl"
        assert main(["feedback", "export", "--as", fmt, "--db", str(db), "--output", str(out)]) == 0
        assert len(out.read_text(encoding="utf-8").splitlines()) == rows
        run = tmp_path / f"run-{fmt}"
        assert main(["align", "--method", fmt, "--model", f"hf:{tiny_model_dir}", "--data", str(out), "--max-steps",
                     "1", "--batch-size", "2", "--dev-share", "0", "--output", str(run), "--no-progress"]) == 0
        card = json.loads((run / "run_card.json").read_text())
        assert card["steps"] == 1 and card["data"]["train_rows"] == rows


def test_feedback_export_without_a_database_says_where_it_looked(tmp_path, capsys):
    from taskfit.cli import main

    assert main(["feedback", "export", "--as", "kto", "--db", str(tmp_path / "none.sqlite"), "--output",
                 str(tmp_path / "x.jsonl")]) == 2
    assert "no assistant database at" in capsys.readouterr().err
    assert not (tmp_path / "none.sqlite").exists() and not (tmp_path / "x.jsonl").exists()
