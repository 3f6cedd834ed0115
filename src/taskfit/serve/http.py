"""HTTP pieces the page routes and the ``/v1`` routes share: the JSON error, bearer tokens."""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from fastapi import Request
from fastapi.responses import JSONResponse


class ApiError(Exception):
    """Answered as ``{"error": {"message", "type"}}`` with ``status``."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


def error_response(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind}}, status_code=status)


def require_bearer(request: Request, expected: str, what: str) -> None:
    """401 unless the request sends ``Authorization: Bearer <expected>`` (compared in constant time)."""
    given = request.headers.get("authorization", "")
    token = given[7:] if given.lower().startswith("bearer ") else ""
    if not hmac.compare_digest(token.encode(), expected.encode()):
        raise ApiError(401, f"send {what} as 'Authorization: Bearer <token>'", "authentication_error")


def require_unicode(texts: Iterable[str | None]) -> None:
    """400 for text a model or the database cannot take: lone surrogates (JSON escapes such as "\\ud800")."""
    for text in texts:
        try:
            (text or "").encode("utf-8")
        except UnicodeEncodeError:
            raise ApiError(400, "text must be valid Unicode (a lone surrogate such as \\ud800 is not)") from None
