"""JSON over HTTP with timeouts and retries, for backends that talk to a server (llama.cpp, OpenAI-compatible).

Only the standard library: a request is one ``urllib`` POST. :func:`post_with_retries` retries what a
server or network does transiently — connection refused or reset, timeouts, HTTP 408, 409, 429 and 5xx —
with exponential backoff (honouring ``Retry-After``), and raises :class:`ServerError` at once for other
answers (a 400 or 404 will not get better by asking again).
"""

from __future__ import annotations

import json
import logging
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from taskfit.errors import ServerError

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """How long one request may take and how often a failed one is tried again."""

    timeout: float = 120.0  # seconds for one request (connect + answer)
    max_retries: int = 5  # tries after the first one
    base_delay: float = 0.5  # seconds before the first retry; doubles each time
    max_delay: float = 30.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based): the server's Retry-After if it gave one,
        else exponential backoff with jitter."""
        if retry_after is not None:
            return min(retry_after, self.max_delay)
        backoff = min(self.base_delay * 2 ** (attempt - 1), self.max_delay)
        return backoff * (0.5 + random.random() / 2)


def post_json(url: str, body: dict[str, Any], headers: dict[str, str] | None = None,
              timeout: float = 120.0) -> dict[str, Any]:
    """POST ``body`` as JSON and return the decoded answer; HTTP errors raise :class:`urllib.error.HTTPError`."""
    data = json.dumps(body).encode("utf-8")
    request = urllib.request.Request(url, data=data, method="POST",
                                     headers={"Content-Type": "application/json", **(headers or {})})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def post_with_retries(url: str, body: dict[str, Any], headers: dict[str, str] | None = None,
                      policy: RetryPolicy = RetryPolicy(),
                      sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """:func:`post_json`, retrying transient failures per ``policy``; :class:`ServerError` when it gives up."""
    attempt = 0
    while True:
        retry_after = None
        try:
            return post_json(url, body, headers, policy.timeout)
        except urllib.error.HTTPError as exc:
            detail = _error_detail(exc)
            if exc.code not in RETRY_STATUSES:
                raise ServerError(f"{url} answered HTTP {exc.code}: {detail}", exc.code) from None
            problem = f"HTTP {exc.code}: {detail}"
            retry_after = _retry_after(exc)
            status: int | None = exc.code
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            problem = f"{type(reason).__name__}: {reason}" if not isinstance(reason, str) else reason
            if isinstance(reason, TimeoutError) or isinstance(exc, TimeoutError):
                problem = f"no answer within {policy.timeout:g} s"
            status = None
        except json.JSONDecodeError as exc:
            raise ServerError(f"{url} answered with something that is not JSON: {exc}") from None
        attempt += 1
        if attempt > policy.max_retries:
            raise ServerError(f"{url} failed {attempt} times, last: {problem}", status)
        wait = policy.delay(attempt, retry_after)
        log.warning("%s: %s; retry %d/%d in %.1f s", url, problem, attempt, policy.max_retries, wait)
        sleep(wait)


def _error_detail(exc: urllib.error.HTTPError) -> str:
    """The server's own error message where it sent one (OpenAI-style ``{"error": {"message": ...}}``)."""
    try:
        raw = exc.read().decode("utf-8", "replace")
    except Exception:  # noqa: BLE001 - the body is optional
        return exc.reason or ""
    try:
        payload = json.loads(raw)
    except json.JSONDecodeError:
        return raw.strip()[:300] or str(exc.reason)
    error = payload.get("error", payload) if isinstance(payload, dict) else payload
    if isinstance(error, dict):
        return str(error.get("message") or error)[:300]
    return str(error)[:300]


def _retry_after(exc: urllib.error.HTTPError) -> float | None:
    value = exc.headers.get("Retry-After") if exc.headers else None
    try:
        return max(float(value), 0.0) if value is not None else None
    except ValueError:
        return None
