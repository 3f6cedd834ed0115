"""The assistant's SQLite store: conversations, turns with the exact context the model saw, feedback events.

WAL journal with ``synchronous=FULL``: a transaction is on disk when ``commit`` returns, so a feedback event the
server acknowledged survives a SIGKILL a moment later. Every feedback event carries an id its client made
(``UNIQUE``): a click retried after a lost answer is stored once. Conversations belong to one browser session;
every read checks the session, and a conversation of another session reads as missing.

A turn is written (status ``generating``, with its context) before the model produces its first token, its text so
far is saved while it streams, and it is finished afterwards (``done``, or ``failed`` with the error and the partial
answer), so a failed answer loses nothing. A turn a killed server left ``generating`` is marked ``failed`` when the
server starts again (:meth:`Store.fail_interrupted`), keeping the text saved before the kill, so the page offers to
regenerate it. A
regenerated answer is a new turn at the same position with ``parent`` naming the turn it replaces; picking one of
them is a ``pick`` feedback event.

An arena battle is a conversation of its own (left out of the conversation list) whose two answers are turns at
position 0, written with the battle row in one transaction; its votes carry client-made ids as feedback events do.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taskfit.errors import UserError

SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    session TEXT NOT NULL,
    title TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS conversations_session ON conversations(session);
CREATE TABLE IF NOT EXISTS turns (
    id TEXT PRIMARY KEY,
    conversation TEXT NOT NULL REFERENCES conversations(id),
    position INTEGER NOT NULL,
    parent TEXT,
    question TEXT NOT NULL,
    answer TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL CHECK (status IN ('generating', 'done', 'failed')),
    error TEXT,
    prompt TEXT NOT NULL,
    rendered TEXT NOT NULL,
    sources TEXT NOT NULL,
    model TEXT NOT NULL,
    adapter TEXT,
    task TEXT,
    settings TEXT NOT NULL,
    generated_tokens INTEGER,
    created REAL NOT NULL,
    finished REAL
);
CREATE INDEX IF NOT EXISTS turns_conversation ON turns(conversation, position);
CREATE TABLE IF NOT EXISTS feedback (
    id TEXT PRIMARY KEY,
    turn TEXT NOT NULL REFERENCES turns(id),
    kind TEXT NOT NULL CHECK (kind IN ('up', 'down', 'better', 'pick')),
    reason TEXT,
    text TEXT,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS feedback_turn ON feedback(turn);
CREATE TABLE IF NOT EXISTS ratings (
    id TEXT PRIMARY KEY,
    turn TEXT NOT NULL REFERENCES turns(id),
    criterion TEXT NOT NULL,
    value TEXT NOT NULL CHECK (value IN ('good', 'bad')),
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS ratings_turn ON ratings(turn);
CREATE TABLE IF NOT EXISTS battles (
    id TEXT PRIMARY KEY,
    conversation TEXT NOT NULL UNIQUE REFERENCES conversations(id),
    seed INTEGER NOT NULL,
    a_turn TEXT NOT NULL REFERENCES turns(id),
    b_turn TEXT NOT NULL REFERENCES turns(id),
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS votes (
    id TEXT PRIMARY KEY,
    battle TEXT NOT NULL REFERENCES battles(id),
    winner TEXT NOT NULL CHECK (winner IN ('a', 'b', 'tie', 'both_bad')),
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS votes_battle ON votes(battle);
CREATE TABLE IF NOT EXISTS rounds (
    id TEXT PRIMARY KEY,
    output TEXT NOT NULL,
    served TEXT NOT NULL,
    candidate TEXT,
    status TEXT NOT NULL CHECK (status IN ('training', 'promoted', 'kept', 'failed')),
    decision TEXT,
    started REAL NOT NULL,
    finished REAL
);
CREATE TABLE IF NOT EXISTS round_events (
    round TEXT NOT NULL REFERENCES rounds(id),
    event TEXT NOT NULL,
    PRIMARY KEY (round, event)
);
"""

FEEDBACK_KINDS = ("up", "down", "better", "pick")
VOTES = ("a", "b", "tie", "both_bad")
INTERRUPTED = "the server stopped while this answer was being written; regenerate it"


class NotFound(LookupError):
    """No such conversation or turn for this session."""


@dataclass(frozen=True)
class Turn:
    id: str
    conversation: str
    position: int
    parent: str | None
    question: str
    answer: str
    status: str
    error: str | None
    prompt: dict[str, Any]  # {"messages": [{role, content}], "answer_prefix": str}: what the backend rendered
    rendered: str
    sources: list[str]
    model: str
    adapter: str | None
    task: str | None
    created: float
    notice: str | None = None  # what was left out of the prompt to fit the model's window, as the user is told

    def public(self) -> dict[str, Any]:
        """What the page shows of a turn (the context stays server-side)."""
        return {"id": self.id, "position": self.position, "parent": self.parent, "question": self.question,
                "answer": self.answer, "status": self.status, "error": self.error, "sources": self.sources,
                "notice": self.notice}


class Store:
    """One SQLite file shared by the server's threads (one connection behind a lock: writes are short)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self.db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise UserError(f"cannot open the feedback database {self.path}: {exc}; choose another --db") from None

    def close(self) -> None:
        with self.lock:
            self.db.close()

    def _write(self, sql: str, args: tuple) -> sqlite3.Cursor:
        return self._write_all([(sql, args)])

    def _write_all(self, statements: list[tuple[str, tuple]]) -> sqlite3.Cursor:
        """Run ``statements`` in one transaction, committed before this returns; the last one's cursor."""
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                for sql, args in statements:
                    cursor = self.db.execute(sql, args)
                self.db.execute("COMMIT")
                return cursor
            except BaseException:
                self.db.execute("ROLLBACK")
                raise

    def _read(self, sql: str, args: tuple) -> list[sqlite3.Row]:
        with self.lock:
            self.db.row_factory = sqlite3.Row
            try:
                return self.db.execute(sql, args).fetchall()
            finally:
                self.db.row_factory = None

    # ------------------------------------------------------------------ conversations
    def new_conversation(self, session: str, title: str) -> str:
        conversation = uuid.uuid4().hex
        self._write("INSERT INTO conversations (id, session, title, created) VALUES (?, ?, ?, ?)",
                    (conversation, session, title[:80], time.time()))
        return conversation

    def conversations(self, session: str) -> list[dict[str, Any]]:
        """This session's chat conversations, newest first (arena battles are not listed)."""
        rows = self._read("SELECT id, title, created FROM conversations WHERE session = ? "
                          "AND id NOT IN (SELECT conversation FROM battles) ORDER BY created DESC", (session,))
        return [dict(r) for r in rows]

    def owns(self, session: str, conversation: str) -> bool:
        return bool(self._read("SELECT 1 FROM conversations WHERE id = ? AND session = ?", (conversation, session)))

    def turns(self, session: str, conversation: str) -> list[Turn]:
        """Every turn of a conversation in order (regenerated answers after the one they replace)."""
        if not self.owns(session, conversation):
            raise NotFound(conversation)
        rows = self._read("SELECT * FROM turns WHERE conversation = ? ORDER BY position, created", (conversation,))
        return [_turn(r) for r in rows]

    def history(self, session: str, conversation: str) -> list[Turn]:
        """The turns a new question follows: per position the latest finished answer (a picked one wins)."""
        picked = {r["turn"] for r in self._read(
            "SELECT f.turn FROM feedback f JOIN turns t ON t.id = f.turn WHERE t.conversation = ? AND f.kind = 'pick'",
            (conversation,))}
        chosen: dict[int, Turn] = {}
        for turn in self.turns(session, conversation):
            if turn.status != "done":
                continue
            if turn.position not in chosen or turn.id in picked or chosen[turn.position].id not in picked:
                chosen[turn.position] = turn
        return [chosen[p] for p in sorted(chosen)]

    # ------------------------------------------------------------------ turns
    def start_turn(self, session: str, conversation: str, *, question: str, prompt: dict[str, Any], rendered: str,
                   sources: list[str], model: str, adapter: str | None, task: str | None,
                   settings: dict[str, Any], parent: str | None = None) -> Turn:
        """Record a question and the context its answer is generated from, before generation starts."""
        if not self.owns(session, conversation):
            raise NotFound(conversation)
        if parent is not None:
            position = self.turn(session, parent).position
        else:
            rows = self._read("SELECT COALESCE(MAX(position), -1) + 1 FROM turns WHERE conversation = ?",
                              (conversation,))
            position = int(rows[0][0])
        turn = uuid.uuid4().hex
        self._write(*_insert_turn(turn, conversation, position, parent, question, prompt, rendered, sources, model,
                                  adapter, task, settings))
        return self.turn(session, turn)

    def finish_turn(self, turn: str, answer: str, *, error: str | None = None,
                    generated_tokens: int | None = None) -> None:
        self._write("UPDATE turns SET answer = ?, status = ?, error = ?, generated_tokens = ?, finished = ? "
                    "WHERE id = ?", (answer, "failed" if error else "done", error, generated_tokens, time.time(), turn))

    def save_partial(self, turn: str, answer: str) -> None:
        """The text streamed so far of a turn still generating (kept if the server dies before it finishes)."""
        self._write("UPDATE turns SET answer = ? WHERE id = ? AND status = 'generating'", (answer, turn))

    def fail_interrupted(self) -> int:
        """Mark the turns a stopped server left ``generating`` as failed, keeping their saved text; call it when a
        server starts on this file (never while another server is answering from it). Returns how many."""
        cursor = self._write("UPDATE turns SET status = 'failed', error = ?, finished = ? WHERE status = 'generating'",
                             (INTERRUPTED, time.time()))
        return cursor.rowcount

    def turn(self, session: str, turn: str) -> Turn:
        rows = self._read("SELECT t.* FROM turns t JOIN conversations c ON c.id = t.conversation "
                          "WHERE t.id = ? AND c.session = ?", (turn, session))
        if not rows:
            raise NotFound(turn)
        return _turn(rows[0])

    # ------------------------------------------------------------------ feedback
    def add_feedback(self, session: str, event: str, turn: str, kind: str, reason: str | None = None,
                     text: str | None = None) -> bool:
        """Store one feedback event (committed before this returns); False when ``event`` was stored before."""
        if kind not in FEEDBACK_KINDS:
            raise ValueError(f"feedback kind must be one of {', '.join(FEEDBACK_KINDS)}")
        found = self.turn(session, turn)
        if found.status != "done":
            raise ValueError("feedback needs a finished answer")
        if kind == "better" and not (text or "").strip():
            raise ValueError("a better answer needs its text")
        cursor = self._write("INSERT OR IGNORE INTO feedback (id, turn, kind, reason, text, created) "
                             "VALUES (?, ?, ?, ?, ?, ?)", (event, turn, kind, reason, text, time.time()))
        return cursor.rowcount == 1

    def add_rating(self, session: str, event: str, turn: str, criterion: str, value: str) -> bool:
        """Store one rating of a finished answer on a named criterion (``good`` / ``bad``), committed before this
        returns; False when ``event`` was stored before. The latest rating of an answer on a criterion counts."""
        if value not in ("good", "bad"):
            raise ValueError("a rating is good or bad")
        if not criterion or len(criterion) > 64:
            raise ValueError("a criterion needs a name of at most 64 characters")
        if self.turn(session, turn).status != "done":
            raise ValueError("a rating needs a finished answer")
        cursor = self._write("INSERT OR IGNORE INTO ratings (id, turn, criterion, value, created) "
                             "VALUES (?, ?, ?, ?, ?)", (event, turn, criterion, value, time.time()))
        return cursor.rowcount == 1

    def ratings(self) -> dict[str, dict[str, str]]:
        """Each rated answer's ratings, {turn: {criterion: good | bad}}, the latest per criterion."""
        out: dict[str, dict[str, str]] = {}
        for row in self._read("SELECT turn, criterion, value FROM ratings ORDER BY created, id", ()):
            out.setdefault(row["turn"], {})[row["criterion"]] = row["value"]
        return out

    def feedback_events(self) -> list[dict[str, Any]]:
        """Every feedback event with its turn, oldest first (what the export reads)."""
        rows = self._read("SELECT f.id AS feedback_id, f.kind, f.reason, f.text, f.created AS feedback_created, t.* "
                          "FROM feedback f JOIN turns t ON t.id = f.turn ORDER BY f.created, f.id", ())
        return [{"feedback_id": r["feedback_id"], "kind": r["kind"], "reason": r["reason"], "text": r["text"],
                 "created": r["feedback_created"], "turn": _turn(r)} for r in rows]

    def siblings(self, turn: Turn) -> list[Turn]:
        """The other finished answers at the same position of the same conversation (regenerations)."""
        rows = self._read("SELECT * FROM turns WHERE conversation = ? AND position = ? AND id != ? AND status = 'done' "
                          "ORDER BY created", (turn.conversation, turn.position, turn.id))
        return [_turn(r) for r in rows]

    def counts(self) -> dict[str, int]:
        with self.lock:
            return {table: self.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]  # noqa: S608 - fixed names
                    for table in ("conversations", "turns", "feedback", "battles", "votes", "ratings")}

    # ------------------------------------------------------------------ retraining rounds (taskfit loop)
    def start_round(self, round_id: str, output: str, served: str, events: list[str]) -> None:
        """Record a round and the feedback events and votes it trains on (its lineage); a round restarted with the
        same id keeps its first record."""
        statements = [("INSERT OR IGNORE INTO rounds (id, output, served, status, started) "
                       "VALUES (?, ?, ?, 'training', ?)", (round_id, output, served, time.time()))]
        statements += [("INSERT OR IGNORE INTO round_events (round, event) VALUES (?, ?)", (round_id, e))
                       for e in events]
        self._write_all(statements)

    def finish_round(self, round_id: str, status: str, candidate: str | None, decision: dict[str, Any]) -> None:
        self._write("UPDATE rounds SET status = ?, candidate = ?, decision = ?, finished = ? WHERE id = ?",
                    (status, candidate, json.dumps(decision), time.time(), round_id))

    def rounds(self) -> list[dict[str, Any]]:
        """Every round, oldest first, with the ids of the events it used."""
        used: dict[str, list[str]] = {}
        for row in self._read("SELECT round, event FROM round_events ORDER BY event", ()):
            used.setdefault(row["round"], []).append(row["event"])
        return [{**dict(r), "decision": json.loads(r["decision"]) if r["decision"] else None,
                 "events": used.get(r["id"], [])}
                for r in self._read("SELECT * FROM rounds ORDER BY started, id", ())]

    # ------------------------------------------------------------------ arena
    def start_battle(self, session: str, *, question: str, seed: int, sides: list[dict[str, Any]]) -> dict[str, Any]:
        """A battle's conversation, its two turns (``sides``: start_turn's keyword arguments but the question, A
        first) and the battle row, in one transaction. Returns {"battle", "conversation", "a", "b"} (turn ids)."""
        if len(sides) != 2:
            raise ValueError("a battle has two sides")
        battle, conversation, now = uuid.uuid4().hex, uuid.uuid4().hex, time.time()
        turns = [uuid.uuid4().hex, uuid.uuid4().hex]
        statements = [("INSERT INTO conversations (id, session, title, created) VALUES (?, ?, ?, ?)",
                       (conversation, session, question[:80], now))]
        statements += [_insert_turn(turn, conversation, 0, None, question, **side) for turn, side in zip(turns, sides)]
        statements.append(("INSERT INTO battles (id, conversation, seed, a_turn, b_turn, created) "
                           "VALUES (?, ?, ?, ?, ?, ?)", (battle, conversation, seed, *turns, now)))
        self._write_all(statements)
        return {"battle": battle, "conversation": conversation, "a": turns[0], "b": turns[1]}

    def battle(self, session: str, battle: str) -> dict[str, Any]:
        """A battle of this session: {"id", "seed", "a": Turn, "b": Turn}."""
        rows = self._read("SELECT b.* FROM battles b JOIN conversations c ON c.id = b.conversation "
                          "WHERE b.id = ? AND c.session = ?", (battle, session))
        if not rows:
            raise NotFound(battle)
        row = rows[0]
        return {"id": row["id"], "seed": row["seed"], "a": self.turn(session, row["a_turn"]),
                "b": self.turn(session, row["b_turn"])}

    def add_vote(self, session: str, event: str, battle: str, winner: str) -> bool:
        """Store one arena vote (committed before this returns); False when ``event`` was stored before."""
        if winner not in VOTES:
            raise ValueError(f"a vote must be one of {', '.join(VOTES)}")
        found = self.battle(session, battle)
        if found["a"].status != "done" or found["b"].status != "done":
            raise ValueError("a vote needs both answers finished")
        cursor = self._write("INSERT OR IGNORE INTO votes (id, battle, winner, created) VALUES (?, ?, ?, ?)",
                             (event, battle, winner, time.time()))
        return cursor.rowcount == 1

    def arena_votes(self) -> list[dict[str, Any]]:
        """The vote that counts for each battle (its latest), oldest first: {"vote_id", "battle", "winner",
        "created", "a": Turn, "b": Turn}."""
        rows = self._read("SELECT v.id AS vote_id, v.battle, v.winner, v.created AS vote_created, b.a_turn, b.b_turn "
                          "FROM votes v JOIN battles b ON b.id = v.battle ORDER BY v.created, v.id", ())
        latest = {r["battle"]: r for r in rows}
        turns = {}
        ids = sorted({t for r in latest.values() for t in (r["a_turn"], r["b_turn"])})
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            found = self._read(f"SELECT * FROM turns WHERE id IN ({','.join('?' * len(chunk))})",  # noqa: S608
                               tuple(chunk))
            turns.update({r["id"]: _turn(r) for r in found})
        return [{"vote_id": r["vote_id"], "battle": r["battle"], "winner": r["winner"], "created": r["vote_created"],
                 "a": turns[r["a_turn"]], "b": turns[r["b_turn"]]}
                for r in sorted(latest.values(), key=lambda r: (r["vote_created"], r["vote_id"]))]


def _insert_turn(turn: str, conversation: str, position: int, parent: str | None, question: str,
                 prompt: dict[str, Any], rendered: str, sources: list[str], model: str, adapter: str | None,
                 task: str | None, settings: dict[str, Any]) -> tuple[str, tuple]:
    """The INSERT of a turn that starts generating (the statement and its arguments)."""
    return ("INSERT INTO turns (id, conversation, position, parent, question, status, prompt, rendered, sources, "
            "model, adapter, task, settings, created) VALUES (?, ?, ?, ?, ?, 'generating', ?, ?, ?, ?, ?, ?, ?, ?)",
            (turn, conversation, position, parent, question, json.dumps(prompt, ensure_ascii=False), rendered,
             json.dumps(sources, ensure_ascii=False), model, adapter, task, json.dumps(settings), time.time()))


def _turn(row: sqlite3.Row) -> Turn:
    return Turn(id=row["id"], conversation=row["conversation"], position=row["position"], parent=row["parent"],
                question=row["question"], answer=row["answer"], status=row["status"], error=row["error"],
                prompt=json.loads(row["prompt"]), rendered=row["rendered"], sources=json.loads(row["sources"]),
                model=row["model"], adapter=row["adapter"], task=row["task"], created=row["created"],
                notice=(json.loads(row["settings"]).get("fitted") or {}).get("notice"))
