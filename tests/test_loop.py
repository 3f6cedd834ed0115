"""`taskfit loop` end to end on a tiny model: feedback in a real SQLite store → a DPO candidate → the gate → a real
running assistant switched to the candidate; a second round that is refused; a third with nothing new to do."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx

from serving import chat, running
from taskfit.cli import main
from taskfit.models.registry import load_backend
from taskfit.serve.app import create_app
from taskfit.serve.assistant import Assistant
from taskfit.serve.gate import Gate
from taskfit.serve.store import Store
from taskfit.settings import ServeHTTPSection

SESSION = "0123456789abcdef" * 2


def give_feedback(store: Store, n: int, start: int = 0) -> list[str]:
    """``n`` answered questions, each with a better answer written by the user (a DPO pair: always 'yes' over
    'no', so a candidate can learn it from some prompts and show it on held-out ones)."""
    events = []
    for i in range(start, start + n):
        conversation = store.new_conversation(SESSION, f"q{i}")
        prompt = {"messages": [{"role": "user", "content": f"Is review number {i} positive?"}], "answer_prefix": ""}
        turn = store.start_turn(SESSION, conversation, question=f"q{i}", prompt=prompt, rendered="", sources=[],
                                model="tiny", adapter=None, task=None, settings={})
        store.finish_turn(turn.id, "no")
        event = f"event-better-{i:04d}"
        assert store.add_feedback(SESSION, event, turn.id, "better", text="yes")
        events.append(event)
    return events


def loop_args(tiny_model_dir, shared_data, db, out, *extra):
    return ["loop", "--db", str(db), "--task", "sst2", "--data-dir", str(shared_data), "--split", "dev", "--limit",
            "24", "--served-model", f"hf:{tiny_model_dir}", "--output", str(out), "--epochs", "4", "--lr", "5e-3",
            "--beta", "0.5", "--batch-size", "8", "--dev-share", "0.25", *extra]


def loop(*args: str) -> subprocess.CompletedProcess:
    """`taskfit loop ARGS` in its own process (as a user runs it beside a running server)."""
    done = subprocess.run([sys.executable, "-m", "taskfit.cli", *args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_a_round_trains_gates_and_switches_a_running_server_then_refuses_and_skips(tiny_model_dir, shared_data,
                                                                                 tmp_path):
    db = tmp_path / "assistant.sqlite"
    store = Store(db)
    first_events = give_feedback(store, 32)

    backend = load_backend("hf", f"hf:{tiny_model_dir}")
    assistant = Assistant(backend, model=f"hf:{tiny_model_dir}", max_tokens=4)
    loaded: list[tuple[str, str | None]] = []

    def load(model, adapter):
        loaded.append((model, adapter))
        return load_backend("hf", model, adapter=adapter)

    app = create_app(assistant, store, Gate(1, 4, 30), ServeHTTPSection(admin_token="tok"), load=load)
    with running(app) as base, httpx.Client() as http:
        before = http.get(f"{base}/healthz").json()
        assert before["adapter"] is None
        # round 1: a loose task margin (a random tiny model's accuracy is noise), the pairs must favour the candidate
        round1 = tmp_path / "round1"
        loop(*loop_args(tiny_model_dir, shared_data, db, round1, "--non-inferiority", "1", "--server", base,
                        "--admin-token", "tok"))
        state = json.loads((round1 / "round.json").read_text())
        gate = state["decision"]
        assert state["events"] == 32 and state["new_events"] == 32
        assert gate["preference"]["n"] == 8  # a quarter of the 32 pairs held out
        assert gate["preference"]["ranked_right"] == 8 and gate["preference"]["sign_p"] < 0.05
        assert gate["promote"] is True and state["switched"] is True
        candidate = state["candidate"]
        assert candidate == {"model": f"hf:{tiny_model_dir}", "adapter": str(round1 / "round1-candidate")}
        assert loaded == [(candidate["model"], candidate["adapter"])]
        after = http.get(f"{base}/healthz").json()
        assert after["adapter"] == candidate["adapter"]  # the running server switched
        answered = chat(http, base, "Is it positive?")
        assert "done" in answered
        turn = store.turn(http.cookies["taskfit_session"], answered["done"]["turn"])
        assert turn.adapter == candidate["adapter"]  # and answers with the candidate
        for name in ("report.html", "report.md", "decision.md", "feedback-dpo.jsonl"):
            assert (round1 / name).is_file()
        assert "Round decision: promote" in (round1 / "decision.md").read_text()

        # the same command again: decided, nothing retrained or switched twice
        mtime = (round1 / "round1-candidate" / "run_card.json").stat().st_mtime
        loop(*loop_args(tiny_model_dir, shared_data, db, round1, "--non-inferiority", "1", "--server", base,
                        "--admin-token", "tok"))
        assert (round1 / "round1-candidate" / "run_card.json").stat().st_mtime == mtime and len(loaded) == 1

    # round 2 from the promoted candidate, on the new feedback only; a strict alpha refuses it
    second_events = give_feedback(store, 8, start=100)
    round2 = tmp_path / "round2"
    printed = loop(*loop_args(tiny_model_dir, shared_data, db, round2, "--served-adapter", candidate["adapter"],
                              "--alpha", "1e-9", "--dev-share", "0.5")).stdout
    state2 = json.loads((round2 / "round.json").read_text())
    assert state2["event_ids"] == sorted(second_events)  # lineage: round 1's events trained the served model
    assert state2["decision"]["promote"] is False
    assert any("sign test" in r for r in state2["decision"]["reasons"])
    rounds = store.rounds()
    assert [r["status"] for r in rounds] == ["promoted", "kept"]
    assert sorted(rounds[0]["events"]) == sorted(first_events)
    assert "decision: keep the served model" in printed

    # round 3: nothing new since round 2 (its events are not trained on, but were seen)
    round3 = tmp_path / "round3"
    assert "nothing to do" in loop(*loop_args(tiny_model_dir, shared_data, db, round3, "--served-adapter",
                                              candidate["adapter"])).stdout
    assert len(store.rounds()) == 2
    store.close()


def test_a_round_refuses_a_missing_database_and_an_empty_export(tmp_path, capsys):
    assert main(["loop", "--db", str(tmp_path / "none.sqlite"), "--task", "sst2", "--output",
                 str(tmp_path / "r")]) == 2
    assert "no assistant database" in capsys.readouterr().err
    store = Store(tmp_path / "a.sqlite")
    conversation = store.new_conversation(SESSION, "q")
    turn = store.start_turn(SESSION, conversation, question="q", prompt={"messages": [], "answer_prefix": ""},
                            rendered="", sources=[], model="m", adapter=None, task=None, settings={})
    store.finish_turn(turn.id, "a")
    store.add_feedback(SESSION, "event-thumb-0001", turn.id, "up")
    store.close()
    code = main(["loop", "--db", str(tmp_path / "a.sqlite"), "--task", "sst2", "--output", str(tmp_path / "r")])
    assert code == 2
    assert "no dpo rows" in capsys.readouterr().err
    assert main(["loop", "--db", str(tmp_path / "a.sqlite"), "--task", "sst2", "--output", str(tmp_path / "r"),
                 "--method", "kto", "--min-new-events", "2"]) == 0
    assert "1 feedback event(s) or vote(s) no round has used" in capsys.readouterr().out


def test_a_kto_round_trains_on_rated_rows_and_decides(tiny_model_dir, shared_data, tmp_path):
    db = tmp_path / "assistant.sqlite"
    store = Store(db)
    give_feedback(store, 16)
    store.close()
    out = tmp_path / "kto-round"
    assert main(loop_args(tiny_model_dir, shared_data, db, out, "--method", "kto", "--max-steps", "2")) == 0
    state = json.loads((out / "round.json").read_text())
    assert state["method"] == "kto" and state["rows"] == 32  # each better answer: two rated rows
    assert state["decision"]["preference"]["n"] >= 1
    assert state["decision"]["outcome"] in ("promote", "keep the served model")
    assert "switched" not in state or state["switched"] is False  # no --server: the restart command instead
