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

import logging
from collections.abc import Callable, Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from taskfit.models.base import Backend
from taskfit.serve import admin, arena, chat, feedback, openai_api
from taskfit.serve.assistant import Assistant
from taskfit.serve.gate import Gate
from taskfit.serve.http import ApiError, Guard, allowed_hosts, error_response
from taskfit.serve.served import Served
from taskfit.serve.store import Store
from taskfit.settings import ServeHTTPSection

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 20
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"}
ROUTERS = (chat.router, feedback.router, admin.router, arena.router, openai_api.router)


def create_app(assistant: Assistant, store: Store, gate: Gate, settings: ServeHTTPSection,
               arena: Sequence[Assistant] = (), load: Callable[[str, str | None], Backend] | None = None) -> FastAPI:
    """The application; ``arena``: the arena's contestants (the served assistant among them; fewer than two: off);
    ``load``: makes a backend for (model, adapter), which lets the admin switch the served model while it runs."""
    app = FastAPI(title="taskfit assistant", version="1", docs_url=None, redoc_url=None)
    app.state.served = Served(assistant, store, gate, settings, arena, load)
    app.add_middleware(Guard, max_body=MAX_BODY_BYTES, hosts=allowed_hosts(settings.host, settings.allowed_hosts),
                       headers=SECURITY_HEADERS, api_key=settings.api_secret())
    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(StarletteHTTPException, http_error)
    for router in ROUTERS:
        app.include_router(router)
    return app


async def api_error(request: Request, exc: ApiError):
    return error_response(exc.status, exc.message, exc.kind, param=exc.param, code=exc.code)


async def invalid(request: Request, exc: RequestValidationError):
    problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in exc.errors())
    return error_response(422, problems or "invalid request")


async def http_error(request: Request, exc: StarletteHTTPException):
    return error_response(exc.status_code, str(exc.detail), headers=exc.headers)  # 405 keeps its Allow
