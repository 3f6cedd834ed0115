"""What the chat and the arena routes share: the browser session, server-sent events, and one answer generated into a
stored turn (its text so far saved while it streams, finished or failed at the end)."""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

from fastapi import Request, Response
from fastapi.responses import StreamingResponse

from taskfit.api import GenerateRequest, GenerateResult
from taskfit.models.base import Backend
from taskfit.serve.store import Store

log = logging.getLogger(__name__)

SESSION_COOKIE = "taskfit_session"
PARTIAL_SAVE_S = 1.0  # how often a streaming answer's text so far is written to the store


def answer_into(store: Store, backend: Backend, turn: str,
                request: GenerateRequest) -> Callable[[Callable[[str], None]], GenerateResult]:
    """The work a generation slot runs for ``turn``: stream the answer to ``emit``, save its text so far every
    :data:`PARTIAL_SAVE_S`, then finish the turn (or fail it with the error and the text produced)."""

    def work(emit: Callable[[str], None]) -> GenerateResult:
        produced: list[str] = []
        saved = [time.monotonic()]

        def relay(delta: str) -> None:
            produced.append(delta)
            emit(delta)
            if time.monotonic() - saved[0] >= PARTIAL_SAVE_S:  # a crash keeps what was streamed until here
                store.save_partial(turn, "".join(produced))
                saved[0] = time.monotonic()

        try:
            result = backend.generate_streaming(request, relay)
        except Exception as exc:
            store.finish_turn(turn, "".join(produced), error=f"{type(exc).__name__}: {exc}")
            log.exception("answer %s failed", turn)
            raise
        store.finish_turn(turn, result.text, generated_tokens=result.n_tokens)
        return result

    return work


def describe(exc: BaseException) -> str:
    """What the user reads when an answer failed."""
    if isinstance(exc, TimeoutError):
        return str(exc)
    return f"the model failed while answering ({type(exc).__name__}: {exc}); the conversation is kept, try again"


def sse(event: str, data: dict[str, Any]) -> str:
    # ASCII JSON: a client splitting lines at U+2028 or U+0085 (as httpx's iter_lines does) still reads whole events
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


def session_of(request: Request) -> tuple[str, bool]:
    """This browser's session id (a new one when it has none or an invalid one) and whether it is new."""
    value = request.cookies.get(SESSION_COOKIE, "")
    if len(value) == 32 and all(ch in "0123456789abcdef" for ch in value):
        return value, False
    session = getattr(request.state, "new_session", None) or secrets.token_hex(16)
    request.state.new_session = session
    return session, True


def set_session_cookie(response: Response, session: str) -> None:
    response.set_cookie(SESSION_COOKIE, session, httponly=True, samesite="lax", max_age=365 * 24 * 3600,
                        path="/")


def event_stream(events) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def with_session(response: Response, session: str, new: bool) -> Response:
    """``response``, setting the session cookie when the browser had none."""
    if new:
        set_session_cookie(response, session)
    return response
