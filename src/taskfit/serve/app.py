"""The assistant's web application: the chat page, its streaming answers, feedback, export, and the ``/v1`` API.

- ``GET /``: the page, rendered on the server (every user and model text escaped), with one script and one
  stylesheet from ``/static`` and a strict content security policy (no inline script, nothing from elsewhere).
- ``POST /api/chat``: ``{"question", "conversation"?, "regenerate"?}`` → server-sent events: ``meta`` (conversation,
  turn, sources), ``delta`` (text as it is generated), then ``done`` (the whole answer) or ``error``. The turn is
  stored with its context before the first token and finished by the worker thread, so an answer completes and is
  kept even when the browser goes away.
- ``POST /api/feedback``: ``{"event", "turn", "kind": up|down|better|pick, "reason"?, "text"?}`` → committed, then
  answered; a repeated ``event`` id is acknowledged and stored once.
- ``GET /api/conversations``, ``GET /api/conversations/{id}``: this session's conversations only.
- ``POST /api/rate``: ``{"event", "turn", "criterion", "value": good|bad}`` on the server's ``--criteria``; stored
  once per event, like feedback.
- ``GET /api/export?as=dpo|kto|sft[&where=correct=bad]``: JSONL training rows; needs ``Authorization: Bearer <admin
  token>``.
- ``POST /api/admin/serve``: ``{"model", "adapter"?}`` (admin token): serve another model from now on.
- ``/arena``, ``/admin``, ``/api/arena...``: the arena and its leaderboard (:mod:`taskfit.serve.arena`).
- ``/v1/models``, ``/v1/chat/completions``, ``/v1/completions``: OpenAI-compatible (:mod:`taskfit.serve.openai_api`).

Errors are JSON ``{"error": {"message", "type"}}`` with a status that says what to do: 400 / 422 bad input, 401 no or
wrong token, 404 unknown (or another session's) conversation, 413 too large, 503 busy (retry).
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from html import escape
from importlib import resources
from typing import Any, Literal

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from taskfit.errors import UserError
from taskfit.models.base import Backend
from taskfit.serve.answering import answer_into, describe, session_of, set_session_cookie, sse
from taskfit.serve.arena import add_arena_routes
from taskfit.serve.assistant import Assistant, PromptTooLong
from taskfit.serve.export import export_rows, parse_where
from taskfit.serve.gate import Busy, Gate
from taskfit.serve.http import ApiError, Guard, allowed_hosts, error_response, require_bearer, require_unicode
from taskfit.serve.openai_api import add_openai_routes
from taskfit.serve.store import NotFound, Store

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 20
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"}
STATIC = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8",
          "arena.js": "text/javascript; charset=utf-8", "admin.js": "text/javascript; charset=utf-8"}


class ChatIn(BaseModel):
    question: str = Field(min_length=1)
    conversation: str | None = Field(None, max_length=64)
    regenerate: str | None = Field(None, max_length=64, description="a turn id: answer its question again")


class FeedbackIn(BaseModel):
    event: str = Field(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_-]+$",
                       description="an id the client makes per click; a retried click sends the same id")
    turn: str = Field(min_length=1, max_length=64)
    kind: Literal["up", "down", "better", "pick"]
    reason: str | None = Field(None, max_length=2000)
    text: str | None = Field(None, max_length=20000)


class RatingIn(BaseModel):
    event: str = Field(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_-]+$",
                       description="an id the client makes per click; a retried click sends the same id")
    turn: str = Field(min_length=1, max_length=64)
    criterion: str = Field(min_length=1, max_length=64)
    value: Literal["good", "bad"]


class ServeModelIn(BaseModel):
    model: str = Field(min_length=1, max_length=4096, description="known model, hf:<folder> or gguf:<file>")
    adapter: str | None = Field(None, max_length=4096, description="an adapter folder applied to it")


class Settings(BaseModel):
    """What the application needs beyond the assistant and the store."""

    host: str = "127.0.0.1"
    allowed_hosts: list[str] = []
    admin_token: str | None = None
    api_key: str | None = None
    max_question_chars: int = 4000
    max_messages: int = 64
    max_answer_tokens: int = 1024
    answer_timeout: float = 300.0
    criteria: list[str] = []


def create_app(assistant: Assistant, store: Store, gate: Gate, settings: Settings,
               arena: Sequence[Assistant] = (), load: Callable[[str, str | None], Backend] | None = None) -> FastAPI:
    """The application; ``arena``: the arena's contestants (the served assistant among them; fewer than two: off);
    ``load``: makes a backend for (model, adapter), which lets the admin switch the served model while it runs."""
    app = FastAPI(title="taskfit assistant", version="1", docs_url=None, redoc_url=None)
    app.state.assistant, app.state.store, app.state.gate, app.state.settings = assistant, store, gate, settings

    app.add_middleware(Guard, max_body=MAX_BODY_BYTES, hosts=allowed_hosts(settings.host, settings.allowed_hosts),
                       headers=SECURITY_HEADERS, api_key=settings.api_key)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return error_response(exc.status, exc.message, exc.kind, param=exc.param, code=exc.code)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in exc.errors())
        return error_response(422, problems or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return error_response(exc.status_code, str(exc.detail), headers=exc.headers)  # 405 keeps its Allow

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page(request: Request, c: str | None = None):
        session, new = session_of(request)
        conversation = c if c and store.owns(session, c) else None
        response = HTMLResponse(render_page(assistant, store, session, conversation, arena=len(arena) >= 2,
                                            criteria=settings.criteria))
        if new:
            set_session_cookie(response, session)
        return response

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str):
        if name not in STATIC:
            raise ApiError(404, "not found", "not_found")
        body = resources.files("taskfit.serve").joinpath("page", name).read_bytes()
        return Response(body, media_type=STATIC[name], headers={"Cache-Control": "no-cache"})

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"ok": True, **assistant.identity(), "generation": gate.stats()}

    @app.get("/api/conversations")
    def conversations(request: Request) -> dict[str, Any]:
        session, _ = session_of(request)
        return {"conversations": store.conversations(session)}

    @app.get("/api/conversations/{conversation}")
    def conversation_turns(conversation: str, request: Request) -> dict[str, Any]:
        session, _ = session_of(request)
        try:
            turns = store.turns(session, conversation)
        except NotFound:
            raise ApiError(404, "no such conversation", "not_found") from None
        return {"conversation": conversation, "turns": [t.public() for t in turns]}

    @app.post("/api/chat")
    def chat(body: ChatIn, request: Request):  # sync: retrieval, rendering and the store run on a worker thread
        session, new = session_of(request)
        require_unicode([body.question])
        question = body.question.strip()
        if len(body.question) > settings.max_question_chars:
            raise ApiError(413, f"the question has {len(body.question)} characters; the limit is "
                                f"{settings.max_question_chars}")
        if not question:
            raise ApiError(422, "question: empty")
        conversation, parent, temperature = body.conversation, None, None
        try:
            if body.regenerate:
                original = store.turn(session, body.regenerate)
                conversation, parent, question = original.conversation, original.id, original.question
                temperature = max(assistant.temperature, 0.8)  # another answer, not the same greedy one
            if conversation is None:
                conversation = store.new_conversation(session, question)
            before = store.turn(session, parent).position if parent else None
            history = [(t.question, t.answer) for t in store.history(session, conversation)
                       if before is None or t.position < before]
        except NotFound:
            raise ApiError(404, "no such conversation or turn", "not_found") from None
        seed = secrets.randbelow(2**31) if temperature else 0
        try:
            asked = assistant.ask(question, history, seed=seed, temperature=temperature)
        except PromptTooLong as exc:
            raise ApiError(413, f"{exc}; ask a shorter question") from None
        turn = store.start_turn(session, conversation, question=question, prompt=asked.stored_prompt(),
                                rendered=asked.rendered, sources=asked.sources, parent=parent,
                                settings={"temperature": asked.request.temperature, "seed": seed,
                                          "max_tokens": asked.request.max_tokens, "stop": list(asked.request.stop),
                                          **({"fitted": asked.fitted} if asked.fitted else {})},
                                **{k: v for k, v in assistant.identity().items() if k in ("model", "adapter", "task")})

        work = answer_into(store, assistant.backend, turn.id, asked.request)

        async def events():
            yield sse("meta", {"conversation": conversation, "turn": turn.id, "parent": parent,
                                "question": question, "sources": asked.sources,
                                "notice": asked.fitted["notice"] if asked.fitted else None})
            try:
                async for event in gate.stream(work, settings.answer_timeout):
                    if event.kind == "delta":
                        yield sse("delta", {"text": event.value})
                    elif event.kind == "done":
                        yield sse("done", {"turn": turn.id, "answer": event.value.text,
                                            "tokens": event.value.n_tokens})
                    else:
                        yield sse("error", {"turn": turn.id, "message": describe(event.value)})
            except Busy as exc:
                store.finish_turn(turn.id, "", error=str(exc))
                yield sse("error", {"turn": turn.id, "message": str(exc), "busy": True})

        response = StreamingResponse(events(), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
        if new:
            set_session_cookie(response, session)
        return response

    @app.post("/api/feedback")
    def feedback(body: FeedbackIn, request: Request) -> dict[str, Any]:
        session, _ = session_of(request)
        require_unicode([body.reason, body.text])
        try:
            stored = store.add_feedback(session, body.event, body.turn, body.kind, body.reason, body.text)
        except NotFound:
            raise ApiError(404, "no such answer", "not_found") from None
        except ValueError as exc:
            raise ApiError(422, str(exc)) from None
        return {"stored": True, "event": body.event, "duplicate": not stored}

    @app.post("/api/rate")
    def rate(body: RatingIn, request: Request) -> dict[str, Any]:
        session, _ = session_of(request)
        if body.criterion not in settings.criteria:
            raise ApiError(422, f"criterion {body.criterion!r}: this server rates "
                                f"{', '.join(settings.criteria) or 'no criteria (start it with --criteria)'}")
        try:
            stored = store.add_rating(session, body.event, body.turn, body.criterion, body.value)
        except NotFound:
            raise ApiError(404, "no such answer", "not_found") from None
        except ValueError as exc:
            raise ApiError(422, str(exc)) from None
        return {"stored": True, "event": body.event, "duplicate": not stored}

    @app.get("/api/export")
    def export(request: Request, as_: Literal["dpo", "kto", "sft"] = Query("kto", alias="as"),
               where: list[str] = Query([], description="CRITERION=good|bad: only answers rated so")):
        if not settings.admin_token:
            raise ApiError(404, "export is off: start the server with --admin-token (or $TASKFIT_ADMIN_TOKEN)",
                           "not_found")
        require_bearer(request, settings.admin_token, "the admin token (taskfit serve --admin-token)")
        try:
            rows = export_rows(store, as_, parse_where(where))
        except ValueError as exc:
            raise ApiError(422, str(exc)) from None
        body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        return Response(body, media_type="application/x-ndjson",
                        headers={"Content-Disposition": f'attachment; filename="feedback-{as_}.jsonl"'})

    switching = threading.Lock()

    @app.post("/api/admin/serve")
    def switch_model(body: ServeModelIn, request: Request) -> dict[str, Any]:
        """Serve another model / adapter from now on (``taskfit loop`` promotes a candidate this way); answers
        already streaming finish on the old one, which is closed once no answer is being generated."""
        if not settings.admin_token:
            raise ApiError(404, "switching the model is off: start the server with --admin-token", "not_found")
        require_bearer(request, settings.admin_token, "the admin token (taskfit serve --admin-token)")
        if load is None:
            raise ApiError(404, "this server cannot load another model", "not_found")
        with switching:
            try:
                backend = load(body.model, body.adapter)
            except UserError as exc:
                raise ApiError(422, str(exc)) from None
            old = assistant.swap(backend, body.model, body.adapter)
        log.info("now serving %s%s", body.model, f" + {body.adapter}" if body.adapter else "")
        threading.Thread(target=_close_when_idle, args=(old, gate), name="taskfit-retire", daemon=True).start()
        return {"served": assistant.identity()}

    add_openai_routes(app, assistant, gate, settings)
    add_arena_routes(app, arena, store, gate, settings)
    return app


def _close_when_idle(backend: Backend, gate: Gate, limit_s: float = 3600.0) -> None:
    """Close a replaced backend once no answer is being generated (or after ``limit_s``: then answers still on it
    fail and say so)."""
    deadline = time.monotonic() + limit_s
    while gate.running and time.monotonic() < deadline:
        time.sleep(0.5)
    close = getattr(backend, "close", None)  # llama.cpp stops its server; an hf model is freed with its object
    try:
        if close is not None:
            close()
    except Exception:  # noqa: BLE001 - a backend that fails to close is logged, the server goes on
        log.exception("closing the replaced backend failed")


# ---------------------------------------------------------------------------------------------------- the page
def render_page(assistant: Assistant, store: Store, session: str, conversation: str | None, *,
                arena: bool = False, criteria: Sequence[str] = ()) -> str:
    """The whole page as HTML; every text from users, the model or the knowledge base goes through ``escape``."""
    identity = assistant.identity()
    title = "taskfit assistant"
    about = " · ".join(escape(str(v)) for v in (identity["model"], identity["adapter"], identity["task"]) if v)
    if arena:
        about += ' · <a href="/arena">Arena</a>'
    items = []
    for c in store.conversations(session):
        current = ' aria-current="page"' if c["id"] == conversation else ""
        items.append(f'<li><a href="/?c={escape(c["id"])}"{current}>{escape(c["title"])}</a></li>')
    turns = store.turns(session, conversation) if conversation else []
    rendered = "\n".join(render_turn(t.public()) for t in turns)
    return PAGE.format(title=title, about=about, conversations="\n".join(items) or '<li class="none">none yet</li>',
                       conversation=escape(conversation or ""), turns=rendered,
                       criteria=escape(json.dumps(list(criteria))),
                       started=escape(time.strftime("%Y-%m-%d")))


def render_turn(turn: dict[str, Any]) -> str:
    sources = "".join(f"<li>{escape(s)}</li>" for s in turn["sources"])
    status = escape(turn["status"])
    error = f'<p class="error">{escape(turn["error"])}</p>' if turn.get("error") else ""
    notice = f'<p class="notice">{escape(turn["notice"])}</p>' if turn.get("notice") else ""
    parent = f' data-parent="{escape(turn["parent"])}"' if turn.get("parent") else ""
    return (f'<li class="turn" data-turn="{escape(turn["id"])}" data-status="{status}"{parent}>'
            f'<p class="question">{escape(turn["question"])}</p>'
            f'<p class="answer">{escape(turn["answer"].strip())}</p>{notice}{error}'
            f'<details class="sources"><summary>Sources ({len(turn["sources"])})</summary><ul>{sources}</ul></details>'
            f'</li>')


PAGE = """<!doctype html>
<html lang="zh-Hans">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/static/app.css">
<script src="/static/app.js" defer></script>
</head>
<body>
<header><h1>{title}</h1><p class="about">{about}</p></header>
<div class="layout">
<nav aria-label="conversations">
<a class="new" href="/">New conversation</a>
<ul id="conversations">
{conversations}
</ul>
</nav>
<main>
<ol id="turns" data-conversation="{conversation}" data-criteria="{criteria}">
{turns}
</ol>
<form id="ask" autocomplete="off">
<label for="question">Question</label>
<textarea id="question" name="question" rows="2" required placeholder="Ask a question / 请输入问题"></textarea>
<button type="submit">Send</button>
<p id="status" role="status" aria-live="polite"></p>
</form>
</main>
</div>
<footer>Answers come from a language model and can be wrong; your ratings and rewrites are stored to improve it.
</footer>
</body>
</html>
"""

