"""What the routes work with: the served assistant, the arena's contestants, the store, the generation gate and the
server's settings, kept on the application (``app.state.served``) and handed to a route by FastAPI
(``served: Served = Depends(served)``), so the routes live in their own modules as plain functions. Also the checks
several routes make: a question the model can take, the admin token."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from taskfit.models.base import Backend
from taskfit.serve.assistant import Assistant
from taskfit.serve.gate import Gate
from taskfit.serve.http import ApiError, require_bearer, require_unicode
from taskfit.serve.store import NotFound, Store
from taskfit.settings import ServeHTTPSection


@dataclass
class Served:
    assistant: Assistant
    store: Store
    gate: Gate
    settings: ServeHTTPSection
    arena: Sequence[Assistant] = ()  # the arena's contestants, the served assistant first (fewer than two: off)
    load: Callable[[str, str | None], Backend] | None = None  # (model, adapter) -> backend, for a live switch
    admin_token: str | None = None
    switching: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.admin_token = self.settings.admin_secret()


def served(request: Request) -> Served:
    """The server's state (a FastAPI dependency)."""
    return request.app.state.served


def question_of(served: Served, text: str) -> str:
    """The question a user asked, stripped; 400 for text that is not Unicode, 413 over the limit, 422 empty."""
    require_unicode([text])
    limit = served.settings.max_question_chars
    if len(text) > limit:
        raise ApiError(413, f"the question has {len(text)} characters; the limit is {limit}")
    if not text.strip():
        raise ApiError(422, "question: empty")
    return text.strip()


def require_admin(served: Served, request: Request, what: str) -> None:
    """404 when the server has no admin token (``what`` is then off), 401 unless the request sends it."""
    if not served.admin_token:
        raise ApiError(404, f"{what} is off: start the server with --admin-token (or $TASKFIT_ADMIN_TOKEN)",
                       "not_found")
    require_bearer(request, served.admin_token, "the admin token (taskfit serve --admin-token)")


def stored_once(event: str, missing: str, store: Callable[[], bool]) -> dict[str, Any]:
    """Commit a click (``store()`` says whether it was new) and acknowledge it; 404 for what it names that is not
    there, 422 for what the store refuses."""
    try:
        stored = store()
    except NotFound:
        raise ApiError(404, missing, "not_found") from None
    except ValueError as exc:
        raise ApiError(422, str(exc)) from None
    return {"stored": True, "event": event, "duplicate": not stored}
