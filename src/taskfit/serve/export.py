"""Feedback → training rows that ``taskfit align`` and ``taskfit tune`` read (TRL's conversational formats).

- ``kto``: every thumb is a rated row (up: desirable, down: not); a better answer gives two (the rewrite desirable,
  the model's answer not); a pick gives the picked answer desirable and each other answer at its position not.
- ``dpo``: a better answer is a pair (the rewrite chosen, the model's answer rejected); a pick is a pair per other
  answer at that position (the picked one chosen).
- ``sft``: prompt-completion rows from up-voted answers, rewrites and picks.

The prompt is the exact message list the model answered (system prompt, earlier turns, the user turn with its
retrieved facts); the completion is the answer after the served answer prefix, written with that prefix, so a model
trained on it sees the assistant turn the server renders. Each row carries ``feedback_id``, ``conversation``,
``turn``, ``model``, ``adapter`` and, when the user gave one, the ``reason`` they wrote with the event (a thumbs-down's
"the page count is wrong, it is 304" is what a better answer can later be written from); all are read back as tags by
:mod:`taskfit.data.preferences`. A later event on the same
answer and kind replaces an earlier one (a user who changes a thumb from up to down counts once, as down).

Ratings by criterion (``serve --criteria``) ride along as a ``ratings`` tag ({criterion: good | bad}) and
``where`` keeps only the events whose answer was rated so.

Arena votes (:func:`arena_rows`) follow the feedback rows: the winner over the loser, both answers to one prompt.
The two contestants' prompts are the same messages (one task, one question, no history), and the pair's prompt is
the winner's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from taskfit.api import Message
from taskfit.data.preferences import PreferencePair, RatedRow, pair_row, rated_row
from taskfit.serve.store import Store, Turn

FORMATS = ("dpo", "kto", "sft")


def _prompt(turn: Turn) -> tuple[Message, ...]:
    return tuple(Message(m["role"], m["content"]) for m in turn.prompt["messages"])


def _answer(turn: Turn, text: str) -> str:
    return turn.prompt.get("answer_prefix", "") + text


def _tags(event: dict[str, Any], turn: Turn, ratings: Mapping[str, Mapping[str, str]]) -> tuple[tuple[str, Any], ...]:
    reason = (event.get("reason") or "").strip()
    rated = ratings.get(turn.id)
    return (("feedback_id", event["feedback_id"]), ("conversation", turn.conversation), ("turn", turn.id),
            ("model", turn.model), ("adapter", turn.adapter), *((("reason", reason),) if reason else ()),
            *((("ratings", dict(rated)),) if rated else ()))


def parse_where(conditions: list[str] | None) -> dict[str, str]:
    """``--where correct=bad`` (repeatable) as {criterion: good | bad}."""
    where: dict[str, str] = {}
    for condition in conditions or []:
        name, _, value = condition.partition("=")
        if not name.strip() or value.strip() not in ("good", "bad"):
            raise ValueError(f"--where {condition!r}: write CRITERION=good or CRITERION=bad, e.g. correct=bad")
        where[name.strip()] = value.strip()
    return where


def latest_events(store: Store) -> list[dict[str, Any]]:
    """Feedback events with thumbs deduplicated: the last thumb on an answer wins."""
    events = store.feedback_events()
    last_thumb: dict[str, str] = {}
    for event in events:
        if event["kind"] in ("up", "down"):
            last_thumb[event["turn"].id] = event["feedback_id"]
    return [e for e in events if e["kind"] not in ("up", "down") or last_thumb[e["turn"].id] == e["feedback_id"]]


def export_rows(store: Store, fmt: str, where: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """The training rows of every feedback event in ``fmt`` (``dpo``, ``kto`` or ``sft``); with ``where``
    ({criterion: good | bad}) only the events whose answer was rated so (an arena vote: its losing answer)."""
    if fmt not in FORMATS:
        raise ValueError(f"export format must be one of {', '.join(FORMATS)}")
    ratings = store.ratings()

    def wanted(turn: Turn) -> bool:
        return all(ratings.get(turn.id, {}).get(k) == v for k, v in (where or {}).items())

    rows: list[dict[str, Any]] = []
    for event in latest_events(store):
        if wanted(event["turn"]):
            rows += event_rows(store, event, fmt, _tags(event, event["turn"], ratings))
    return rows + arena_rows(store, fmt, wanted)


def event_rows(store: Store, event: dict[str, Any], fmt: str, tags: dict[str, Any]) -> list[dict[str, Any]]:
    """One feedback event's rows: a thumb is a KTO row (an up-vote also an SFT row); a better answer a DPO pair (two
    KTO rows, an SFT row of the better answer); a pick a pair against every other answer at its position."""
    turn: Turn = event["turn"]
    prompt, kind, model_answer = _prompt(turn), event["kind"], _answer(turn, turn.answer)
    rows: list[dict[str, Any]] = []
    if kind in ("up", "down"):
        if fmt == "kto":
            rows.append(rated_row(RatedRow(prompt, model_answer, kind == "up", "feedback", tags)))
        elif fmt == "sft" and kind == "up":
            rows.append(_sft_row(prompt, model_answer, tags))
    elif kind == "better":
        better = _answer(turn, event["text"].strip())
        pair = PreferencePair(prompt, better, model_answer, None, "feedback", tags)
        if fmt == "dpo":
            rows.append(pair_row(pair))
        elif fmt == "kto":
            rows += [rated_row(r) for r in pair.rated()]
        else:
            rows.append(_sft_row(prompt, better, tags))
    else:  # pick: the picked answer over every other answer at its position
        if fmt == "sft":
            rows.append(_sft_row(prompt, model_answer, tags))
        for other in (_answer(t, t.answer) for t in store.siblings(turn) if t.answer != turn.answer):
            pair = PreferencePair(prompt, model_answer, other, None, "feedback", tags)
            if fmt == "dpo":
                rows.append(pair_row(pair))
            elif fmt == "kto":
                rows.append(rated_row(pair.rated()[1]))
        if fmt == "kto":
            rows.append(rated_row(RatedRow(prompt, model_answer, True, "feedback", tags)))
    return rows


def arena_rows(store: Store, fmt: str, wanted=lambda turn: True) -> list[dict[str, Any]]:
    """Each battle's counting vote as training rows: a decided vote is a DPO pair (the winner chosen) and two KTO
    rows (winner desirable, loser not); a tie gives none (no preference); both bad gives two undesirable KTO rows;
    SFT takes the winner. Tags: the vote id (as ``feedback_id``), the battle, and each side's model and adapter."""
    rows: list[dict[str, Any]] = []
    for vote in store.arena_votes():
        a, b, winner = vote["a"], vote["b"], vote["winner"]
        tags = (("feedback_id", vote["vote_id"]), ("battle", vote["battle"]), ("conversation", a.conversation),
                ("source_kind", "arena"))
        if winner == "tie":
            continue
        if not all(wanted(t) for t in ((a, b) if winner == "both_bad" else ((b,) if winner == "a" else (a,)))):
            continue
        if winner == "both_bad":
            if fmt == "kto":
                rows += [rated_row(RatedRow(_prompt(t), _answer(t, t.answer), False, "feedback",
                                            (*tags, ("turn", t.id), ("model", t.model), ("adapter", t.adapter))))
                         for t in (a, b)]
            continue
        won, lost = (a, b) if winner == "a" else (b, a)
        pair_tags = (*tags, ("turn", won.id), ("model", won.model), ("adapter", won.adapter),
                     ("rejected_turn", lost.id), ("rejected_model", lost.model), ("rejected_adapter", lost.adapter))
        pair = PreferencePair(_prompt(won), _answer(won, won.answer), _answer(lost, lost.answer), None, "feedback",
                              pair_tags)
        if fmt == "dpo":
            rows.append(pair_row(pair))
        elif fmt == "kto":
            rows += [rated_row(r) for r in pair.rated()]
        else:
            rows.append(_sft_row(_prompt(won), _answer(won, won.answer), pair_tags))
    return rows


def _sft_row(prompt: tuple[Message, ...], answer: str, tags: tuple[tuple[str, Any], ...]) -> dict[str, Any]:
    """TRL's conversational prompt-completion row (``taskfit tune --train-file`` reads it)."""
    return {"prompt": [{"role": m.role, "content": m.content} for m in prompt],
            "completion": [{"role": "assistant", "content": answer}]} | dict(tags)
