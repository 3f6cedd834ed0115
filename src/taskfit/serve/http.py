"""HTTP pieces the page routes and the ``/v1`` routes share: the JSON error, bearer tokens, and :class:`Guard`, the
checks every request passes before any route reads it (allowed Host, body size while it is read, HEAD, headers)."""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


class ApiError(Exception):
    """Answered as ``{"error": {"message", "type", "param"?, "code"?}}`` with ``status`` (OpenAI's error body)."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", *, param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code


def error_response(status: int, message: str, kind: str = "invalid_request_error", *, param: str | None = None,
                   code: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    error = {"message": message, "type": kind} | ({"param": param} if param else {}) | ({"code": code} if code else {})
    return JSONResponse({"error": error}, status_code=status, headers=headers)


def bearer_matches(authorization: str, expected: str) -> bool:
    """Whether an ``Authorization`` header is ``Bearer <expected>`` (compared in constant time)."""
    token = authorization[7:] if authorization.lower().startswith("bearer ") else ""
    return hmac.compare_digest(token.encode(), expected.encode())


def require_bearer(request: Request, expected: str, what: str) -> None:
    """401 unless the request sends ``Authorization: Bearer <expected>``."""
    if not bearer_matches(request.headers.get("authorization", ""), expected):
        raise ApiError(401, f"send {what} as 'Authorization: Bearer <token>'", "authentication_error")


def require_unicode(texts: Iterable[str | None]) -> None:
    """400 for text a model or the database cannot take: lone surrogates (JSON escapes such as "\\ud800")."""
    for text in texts:
        try:
            (text or "").encode("utf-8")
        except UnicodeEncodeError:
            raise ApiError(400, "text must be valid Unicode (a lone surrogate such as \\ud800 is not)") from None


def allowed_hosts(bound: str, extra: Iterable[str] = ()) -> frozenset[str] | None:
    """Host names a request may name: loopback, the bound address, and ``extra`` (``*``: any, for a proxy that
    checks hosts itself). A page on another site can reach a loopback server through DNS rebinding, naming its own
    host; refusing unknown hosts stops that."""
    names = {*LOOPBACK_NAMES, bound, *extra}
    return None if "*" in names else frozenset(n.strip("[]").lower() for n in names if n)


def host_name(header: str) -> str:
    """``example.org`` of ``example.org:8000``, ``::1`` of ``[::1]:8000``."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class Guard:
    """Pure ASGI middleware in front of every route.

    - a request whose ``Host`` is not allowed gets 400 (DNS rebinding);
    - with an API key, a request under ``/v1`` without it gets 401 before its body is read or validated;
    - a body over ``max_body`` bytes gets 413: at once when Content-Length says so, and while it is read otherwise
      (a chunked body is never buffered past the limit);
    - ``HEAD`` is answered as ``GET`` without its content (RFC 9110);
    - the security headers go on every response.
    """

    def __init__(self, app: ASGIApp, *, max_body: int, hosts: frozenset[str] | None, headers: dict[str, str],
                 api_key: str | None = None):
        self.app, self.max_body, self.hosts, self.api_key = app, max_body, hosts, api_key
        self.headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request_headers = dict(scope.get("headers") or [])
        host = request_headers.get(b"host", b"").decode("latin-1")
        if self.hosts is not None and host_name(host) not in self.hosts:
            return await self._refuse(scope, receive, send, 400, f"host {host!r} is not served here; start the "
                                      "server with --allowed-hosts NAME for the name clients use")
        path = scope.get("path", "")
        if self.api_key and (path == "/v1" or path.startswith("/v1/")) and \
                not bearer_matches(request_headers.get(b"authorization", b"").decode("latin-1"), self.api_key):
            return await self._refuse(scope, receive, send, 401, "send the server's API key (taskfit serve "
                                      "--serve-api-key) as 'Authorization: Bearer <key>'", "authentication_error")
        length = request_headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return await self._refuse(scope, receive, send, 413, f"request body over {self.max_body} bytes")
        head = scope["method"] == "HEAD"
        if head:
            scope = {**scope, "method": "GET"}
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:  # routes re-raise it; the error handler answers 413
                    raise HTTPException(413, f"request body over {self.max_body} bytes")
            return message

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                message = {**message, "headers": [*message.get("headers", []),
                                                  *(h for h in self.headers if h[0] not in present)]}
            elif head and message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app(scope, limited, send_with_headers)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, status: int, text: str,
                      kind: str = "invalid_request_error") -> None:
        response = error_response(status, text, kind)
        for key, value in self.headers:
            response.raw_headers.append((key, value))
        await response(scope, receive, send)
