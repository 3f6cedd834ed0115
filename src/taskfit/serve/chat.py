"""The chat: the page, its static files, this session's conversations, and ``POST /api/chat`` — a question answered as
server-sent events: ``meta`` (conversation, turn, sources), ``delta`` (text as it is generated), then ``done`` (the
whole answer) or ``error``. The turn is stored with its context before the first token and finished by the worker
thread, so an answer completes and is kept even when the browser goes away."""

from __future__ import annotations

import secrets
from importlib import resources
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from taskfit.serve.answering import answer_into, describe, event_stream, session_of, sse, with_session
from taskfit.serve.assistant import Asked, PromptTooLong
from taskfit.serve.gate import Busy, Delta, Done
from taskfit.serve.http import ApiError
from taskfit.serve.page import render_page
from taskfit.serve.protocol import AskIn
from taskfit.serve.served import Served, question_of, served
from taskfit.serve.store import NotFound, Turn

router = APIRouter()
STATIC = {"common.js": "text/javascript; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
          "app.css": "text/css; charset=utf-8",
          "arena.js": "text/javascript; charset=utf-8", "admin.js": "text/javascript; charset=utf-8"}
REGENERATE_TEMPERATURE = 0.8  # a regenerated answer is sampled at least this hot: another answer, not the same one


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def page(request: Request, c: str | None = None, s: Served = Depends(served)):
    session, new = session_of(request)
    conversation = c if c and s.store.owns(session, c) else None
    response = HTMLResponse(render_page(s.assistant, s.store, session, conversation, arena=len(s.arena) >= 2,
                                        criteria=s.settings.criteria))
    return with_session(response, session, new)


@router.get("/static/{name}", include_in_schema=False)
def static(name: str):
    if name not in STATIC:
        raise ApiError(404, "not found", "not_found")
    body = resources.files("taskfit.serve").joinpath("page", name).read_bytes()
    return Response(body, media_type=STATIC[name], headers={"Cache-Control": "no-cache"})


@router.get("/healthz")
def healthz(s: Served = Depends(served)) -> dict[str, Any]:
    return {"ok": True, **s.assistant.identity(), "generation": s.gate.stats()}


@router.get("/api/conversations")
def conversations(request: Request, s: Served = Depends(served)) -> dict[str, Any]:
    session, _ = session_of(request)
    return {"conversations": s.store.conversations(session)}


@router.get("/api/conversations/{conversation}")
def conversation_turns(conversation: str, request: Request, s: Served = Depends(served)) -> dict[str, Any]:
    session, _ = session_of(request)
    try:
        turns = s.store.turns(session, conversation)
    except NotFound:
        raise ApiError(404, "no such conversation", "not_found") from None
    return {"conversation": conversation, "turns": [t.public() for t in turns]}


@router.post("/api/chat")
def chat(body: AskIn, request: Request, s: Served = Depends(served)):  # sync: runs on a worker thread
    session, new = session_of(request)
    turn, asked = start_turn(s, session, body)
    return with_session(event_stream(answer_events(s, turn, asked)), session, new)


def start_turn(s: Served, session: str, body: AskIn) -> tuple[Turn, Asked]:
    """Store the turn a question (or a regenerated one) starts, with the prompt the model will see."""
    question = question_of(s, body.question)
    conversation, parent, temperature = body.conversation, None, None
    try:
        if body.regenerate:
            original = s.store.turn(session, body.regenerate)
            conversation, parent, question = original.conversation, original.id, original.question
            temperature = max(s.assistant.temperature, REGENERATE_TEMPERATURE)
        if conversation is None:
            conversation = s.store.new_conversation(session, question)
        before = s.store.turn(session, parent).position if parent else None
        history = [(t.question, t.answer) for t in s.store.history(session, conversation)
                   if before is None or t.position < before]
    except NotFound:
        raise ApiError(404, "no such conversation or turn", "not_found") from None
    seed = secrets.randbelow(2**31) if temperature else 0
    try:
        asked = s.assistant.ask(question, history, seed=seed, temperature=temperature)
    except PromptTooLong as exc:
        raise ApiError(413, f"{exc}; ask a shorter question") from None
    identity = {k: v for k, v in s.assistant.identity().items() if k in ("model", "adapter", "task")}
    turn = s.store.start_turn(session, conversation, question=question, prompt=asked.stored_prompt(),
                              rendered=asked.rendered, sources=asked.sources, parent=parent,
                              settings=asked.settings(), **identity)
    return turn, asked


async def answer_events(s: Served, turn: Turn, asked: Asked):
    """The turn's events: ``meta``, the deltas, then ``done`` or ``error`` (busy: the turn fails and says so)."""
    yield sse("meta", {"conversation": turn.conversation, "turn": turn.id, "parent": turn.parent,
                       "question": turn.question, "sources": asked.sources,
                       "notice": asked.fitted["notice"] if asked.fitted else None})
    work = answer_into(s.store, s.assistant.backend, turn.id, asked.request)
    try:
        async for event in s.gate.stream(work, s.settings.answer_timeout):
            if isinstance(event, Delta):
                yield sse("delta", {"text": event.text})
            elif isinstance(event, Done):
                yield sse("done", {"turn": turn.id, "answer": event.result.text, "tokens": event.result.n_tokens})
            else:
                yield sse("error", {"turn": turn.id, "message": describe(event.error)})
    except Busy as exc:
        s.store.finish_turn(turn.id, "", error=str(exc))
        yield sse("error", {"turn": turn.id, "message": str(exc), "busy": True})
