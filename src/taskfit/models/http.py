"""JSON over HTTP with timeouts and retries, for backends that talk to a server (llama.cpp, OpenAI-compatible).

A backend keeps one :func:`client` (an ``httpx.Client``: keep-alive connections pooled up to its concurrency,
separate connect and read timeouts) for all its requests. :func:`post_with_retries` retries what a server or
network does transiently — connection refused or reset, timeouts, HTTP 408, 409, 429 and 5xx — with exponential
backoff (honouring ``Retry-After`` in seconds or as an HTTP date), and raises :class:`ServerError` at once for other
answers (a 400 or 404 will not get better by asking again).
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

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


def client(concurrency: int = 4, timeout: float = 120.0) -> httpx.Client:
    """A pooled HTTP client for one server: up to ``concurrency`` keep-alive connections; ``timeout`` seconds to
    answer, at most 10 of them to connect."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return httpx.Client(limits=limits, timeout=httpx.Timeout(timeout, connect=min(10.0, timeout)))


def post_with_retries(url: str, body: dict[str, Any], headers: dict[str, str] | None = None,
                      policy: RetryPolicy = RetryPolicy(), sleep: Callable[[float], None] = time.sleep,
                      http: httpx.Client | None = None) -> dict[str, Any]:
    """POST ``body`` as JSON and return the decoded answer, retrying transient failures per ``policy``;
    :class:`ServerError` when it gives up. ``http``: the backend's pooled client (default: a client for this call)."""
    own = http is None
    http = http or client(1, policy.timeout)
    try:
        return _post_with_retries(http, url, body, headers or {}, policy, sleep)
    finally:
        if own:
            http.close()


def _post_with_retries(http: httpx.Client, url: str, body: dict[str, Any], headers: dict[str, str],
                       policy: RetryPolicy, sleep: Callable[[float], None]) -> dict[str, Any]:
    attempt = 0
    while True:
        retry_after = None
        status: int | None = None
        try:
            response = http.post(url, json=body, headers=headers, timeout=policy.timeout)
            if response.status_code < 400:
                return response.json()
            detail = _error_detail(response)
            if response.status_code not in RETRY_STATUSES:
                raise ServerError(f"{url} answered HTTP {response.status_code}: {detail}", response.status_code)
            problem = f"HTTP {response.status_code}: {detail}"
            retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            status = response.status_code
        except httpx.TimeoutException:
            problem = f"no answer within {policy.timeout:g} s"
        except httpx.TransportError as exc:
            problem = f"{type(exc).__name__}: {exc}"
        except json.JSONDecodeError as exc:
            raise ServerError(f"{url} answered with something that is not JSON: {exc}") from None
        attempt += 1
        if attempt > policy.max_retries:
            raise ServerError(f"{url} failed {attempt} times, last: {problem}", status)
        wait = policy.delay(attempt, retry_after)
        log.warning("%s: %s; retry %d/%d in %.1f s", url, problem, attempt, policy.max_retries, wait)
        sleep(wait)


def stream_events(http: httpx.Client, url: str, body: dict[str, Any], headers: dict[str, str] | None = None,
                  policy: RetryPolicy = RetryPolicy(), who: str | None = None,
                  sleep: Callable[[float], None] = time.sleep) -> Iterator[dict[str, Any]]:
    """POST ``body`` and yield the JSON events of the server-sent event stream that answers (``data: {...}`` lines;
    ``data: [DONE]`` ends it). An HTTP error, or an event that carries ``error``, raises :class:`ServerError` naming
    ``who`` (default the URL). A connection that breaks before the first event (a closed keep-alive connection, a
    server not up yet) is tried again with back-off per ``policy``; once events have come, a break raises, since the
    consumer has already used them."""
    who = who or url
    for attempt in range(policy.max_retries + 1):
        started = False
        try:
            with http.stream("POST", url, json=body, headers=headers or {}, timeout=policy.timeout) as response:
                if response.status_code >= 400:
                    response.read()
                    raise ServerError(f"{who} answered HTTP {response.status_code}: {response.text[:300]}",
                                      response.status_code)
                for line in sse_lines(response):
                    if not line.startswith(b"data: ") or line == b"data: [DONE]":
                        continue
                    event = json.loads(line[len(b"data: "):])
                    if event.get("error"):
                        raise ServerError(f"{who}: {event['error']}")
                    started = True
                    yield event
            return
        except httpx.TransportError as exc:
            if started or attempt == policy.max_retries:
                raise ServerError(f"{who} stream broke: {type(exc).__name__}: {exc}") from None
            wait = policy.delay(attempt + 1)
            log.warning("%s: %s before the stream began; retry %d/%d in %.2f s", who, type(exc).__name__,
                        attempt + 1, policy.max_retries, wait)
            sleep(wait)


def sse_lines(response: httpx.Response):
    """The lines of a server-sent event stream, split at b"\\n" only (``iter_lines`` also splits at U+0085, U+2028
    and other characters a model may write inside a JSON string)."""
    buffer = b""
    for chunk in response.iter_bytes():
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            yield line.rstrip(b"\r")
    if buffer:
        yield buffer


def _error_detail(response: httpx.Response) -> str:
    """The server's own error message where it sent one (OpenAI-style ``{"error": {"message": ...}}``)."""
    raw = response.text
    try:
        payload = json.loads(raw)
    except json.JSONDecodeError:
        return raw.strip()[:300] or response.reason_phrase
    error = payload.get("error", payload) if isinstance(payload, dict) else payload
    if isinstance(error, dict):
        return str(error.get("message") or error)[:300]
    return str(error)[:300]


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds: a number of seconds, or an HTTP date (RFC 9110) turned into seconds from now."""
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)
