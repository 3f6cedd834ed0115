"""The ``openai`` backend: any OpenAI-compatible HTTP server (OpenAI, vLLM, TGI, llama.cpp server, Ollama).

This is the path past one machine: point ``--base-url`` at a vLLM server on a GPU cluster and the same
tasks, strategies and metrics run there. Two endpoints (``--api``):

- ``chat`` (default): ``/chat/completions`` with the prompt's messages; the server applies the model's chat
  template. An answer prefix is sent as a final assistant message that the server continues
  (``continue_final_message`` for vLLM; llama.cpp continues it by default). Structured answers use
  ``response_format`` with a JSON schema. Chat endpoints return no log-probabilities for prompt tokens, so
  log-likelihood scoring is refused before any request is sent.
- ``completions``: ``/completions`` with the prompt rendered as plain text (no chat template, as
  lm-evaluation-harness's ``local-completions``). Log-likelihood requests ask for the prompt's
  log-probabilities (``echo`` + ``logprobs``); a server that does not return them (llama.cpp's server, most
  hosted chat models) gets a clear error instead of the silent chance-level scores lm-eval users hit.

Requests run ``concurrency`` at a time; each has a timeout and is retried with exponential backoff on
timeouts, refused connections, 429 and 5xx (:mod:`taskfit.models.http`). The API key comes from
``--api-key`` or ``$OPENAI_API_KEY`` and is never written to results.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlparse

from taskfit.api import (
    GenerateRequest,
    GenerateResult,
    LoglikelihoodRequest,
    LoglikelihoodResult,
    Prompt,
    render_plain,
)
from taskfit.errors import ServerError, UserError
from taskfit.models.base import Backend, StreamCutter, cut_at_stop, map_in_threads, register_backend
from taskfit.models.http import RetryPolicy, client, post_with_retries, stream_events
from taskfit.models.options import OpenAIOptions

log = logging.getLogger(__name__)
DEFAULT_CONCURRENCY = 4  # requests in flight to a server

DEFAULT_BASE_URL = "https://api.openai.com/v1"
MAX_SERVER_STOPS = 4  # OpenAI accepts at most 4 stop sequences; the rest are applied here


class EchoUnsupported(UserError):
    """The server does not return log-probabilities of prompt tokens."""


@register_backend("openai")
class OpenAIBackend(Backend):
    """Requests sent to an OpenAI-compatible server."""

    Options = OpenAIOptions

    supports_json_schema = True

    @classmethod
    def resolve(cls, spec: str) -> tuple[str, str]:
        return spec, spec  # the server's model name, as it is

    def generation_slots(self) -> int:
        return self.concurrency

    def __init__(
        self,
        model: str,
        *,
        display_name: str | None = None,
        chat_template: bool = True,
        batch_size: int = 16,
        threads: int | None = None,
        progress: bool = False,
        base_url: str | None = None,
        api_key: str | None = None,
        api: str = "chat",
        concurrency: int | None = None,
        request_timeout: float = 120.0,
        max_retries: int = 5,
    ):
        if api not in ("chat", "completions"):
            raise UserError(f"--api must be chat or completions, not {api!r}")
        self.model = model
        self.display_name = display_name or model
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        if urlparse(self.base_url).scheme not in ("http", "https"):
            raise UserError("--base-url must be an http(s) URL such as http://127.0.0.1:8000/v1, "
                            f"not {self.base_url!r}")
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY", "")
        self.api = api
        self.chat_template = api == "chat" and chat_template
        self.concurrency = concurrency = concurrency or DEFAULT_CONCURRENCY
        self.policy = RetryPolicy(timeout=request_timeout, max_retries=max_retries)
        self.http = client(concurrency, request_timeout)  # one pool of keep-alive connections for every request
        self.progress = progress
        self.official = urlparse(self.base_url).hostname == "api.openai.com"
        self.supports_loglikelihood = api == "completions"
        self.stats = {"requests": 0, "prompt_tokens": 0, "generated_tokens": 0}
        self.token_logprobs = True  # ask chat answers for their tokens' log-probabilities until a server refuses
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ plumbing
    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def _post(self, endpoint: str, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """POST to ``endpoint``; the first choice and the usage counts."""
        response = post_with_retries(f"{self.base_url}/{endpoint}", {"model": self.model, **body}, self._headers(),
                                     self.policy, http=self.http)
        usage = response.get("usage") or {}
        with self._lock:  # requests run on several threads
            self.stats["requests"] += 1
            self.stats["prompt_tokens"] += int(usage.get("prompt_tokens") or 0)
            self.stats["generated_tokens"] += int(usage.get("completion_tokens") or 0)
        choices = response.get("choices")
        if not choices:
            raise ServerError(f"{self.base_url}/{endpoint} answered without choices: {json.dumps(response)[:300]}")
        return choices[0], usage

    def _complete(self, endpoint: str, body: dict[str, Any], cutter: StreamCutter | None,
                  prefix: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """The first choice and the usage: in one answer, or streamed (``cutter`` shows the text as it comes; a
        repeated answer prefix, as llama.cpp's server sends it, is not shown)."""
        if cutter is None:
            return self._post(endpoint, body)
        body = {"model": self.model, **body, "stream": True, "stream_options": {"include_usage": True}}
        body.pop("logprobs", None)  # streamed log-probabilities are not summed here
        chat = endpoint == "chat/completions"
        text, finish, usage = "", None, {}
        for event in stream_events(self.http, f"{self.base_url}/{endpoint}", body, self._headers(), self.policy):
            usage = event.get("usage") or usage
            for choice in event.get("choices") or []:
                piece = (choice.get("delta") or {}).get("content") if chat else choice.get("text")
                finish = choice.get("finish_reason") or finish
                if piece:
                    text += piece
                    shown = text[len(prefix):] if prefix and text.startswith(prefix) else text
                    if not (prefix and prefix.startswith(text)):
                        cutter.update(shown)
        with self._lock:
            self.stats["requests"] += 1
            self.stats["prompt_tokens"] += int(usage.get("prompt_tokens") or 0)
            self.stats["generated_tokens"] += int(usage.get("completion_tokens") or 0)
        choice = {"message": {"content": text}, "text": text, "finish_reason": finish, "logprobs": None}
        return choice, usage

    def _map(self, work, items: Sequence[Any], desc: str) -> list[Any]:
        return map_in_threads(work, items, self.concurrency, desc, self.progress)

    # ------------------------------------------------------------------ the backend protocol
    def render(self, prompt: Prompt) -> str:
        if self.api == "completions":
            return render_plain(prompt)
        # The exact content sent: the server applies its own template to it.
        return json.dumps({"messages": self._messages(prompt)}, ensure_ascii=False)

    def _messages(self, prompt: Prompt) -> list[dict[str, str]]:
        messages = prompt.as_dicts()
        if prompt.answer_prefix:
            messages.append({"role": "assistant", "content": prompt.answer_prefix})
        return messages

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[LoglikelihoodResult]:
        if not self.supports_loglikelihood:
            raise UserError(self.loglikelihood_refusal())
        return self._map(self._score, list(requests), "loglikelihood")

    def loglikelihood_refusal(self) -> str:
        return ("chat endpoints return no log-probabilities for prompt tokens, so log-likelihood scoring is "
                "impossible with --api chat; use --mode generate, or --api completions with a server that "
                "returns prompt log-probabilities (echo), such as vLLM")

    def _score(self, request: LoglikelihoodRequest) -> LoglikelihoodResult:
        context = render_plain(request.context)
        text = context + request.continuation
        boundary = len(context.rstrip())  # a trailing space belongs to the continuation's first token
        choice, _ = self._post("completions", {"prompt": text, "max_tokens": 1, "temperature": 0.0, "echo": True,
                                            "logprobs": 1})
        logprobs = choice.get("logprobs") or {}
        tokens = logprobs.get("tokens") or []
        offsets = logprobs.get("text_offset") or []
        values = logprobs.get("token_logprobs") or []
        if not tokens or len(offsets) != len(tokens) or not offsets or offsets[0] != 0:
            raise EchoUnsupported(
                f"{self.base_url} returned log-probabilities only for generated tokens, not for the prompt "
                "(no `echo` support); log-likelihood scoring needs them. Use --mode generate, or a server "
                "that supports echo (such as vLLM)")
        top = logprobs.get("top_logprobs") or [None] * len(tokens)
        total, greedy, count = 0.0, True, 0
        for i, (token, start) in enumerate(zip(tokens, offsets)):
            end = offsets[i + 1] if i + 1 < len(offsets) else start + len(token)
            if start >= len(text):
                break  # the generated token after the prompt
            if end <= boundary:
                continue  # a context token
            if values[i] is None:
                raise ServerError(f"{self.base_url} gave no log-probability for continuation token {token!r}")
            total += float(values[i])
            count += 1
            if top[i]:
                best = max(top[i].items(), key=lambda kv: kv[1])[0]
                greedy = greedy and best == token
        if count == 0:
            raise UserError(f"continuation {request.continuation!r} encodes to no tokens; use a non-empty answer")
        return LoglikelihoodResult(logprob=total, is_greedy=greedy, n_tokens=count)

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        return self._map(self._generate_one, list(requests), "generate")

    def generate_streaming(self, request: GenerateRequest, emit) -> GenerateResult:
        return StreamCutter.streamed(request, emit, lambda cutter: self._generate_one(request, cutter))

    def _generate_one(self, request: GenerateRequest, cutter: StreamCutter | None = None) -> GenerateResult:
        # Whitespace-only stops would end a reply that opens with a newline; they are applied here instead
        # (cut_at_stop skips leading whitespace), together with any beyond the server's limit of four.
        server_stops = [s for s in request.stop if s.strip()][:MAX_SERVER_STOPS]
        body: dict[str, Any] = {"max_tokens": request.max_tokens, "temperature": request.temperature,
                                "top_p": request.top_p, "seed": request.seed}
        if server_stops:
            body["stop"] = server_stops
        schema = json.loads(request.json_schema) if request.json_schema else None
        if schema:
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "answer", "schema": schema, "strict": True}}
        usage: dict[str, Any]
        if self.api == "chat":
            body["messages"] = self._messages(request.prompt)
            if self.token_logprobs:
                body["logprobs"] = True
            if request.prompt.answer_prefix and not self.official:
                body |= {"continue_final_message": True, "add_generation_prompt": False}
            try:
                choice, usage = self._complete("chat/completions", body, cutter, request.prompt.answer_prefix)
            except ServerError as exc:  # a server that offers no log-probabilities (taskfit serve) says so with 400
                if exc.status != 400 or "logprobs" not in str(exc) or not body.pop("logprobs", None):
                    raise
                self.token_logprobs = False
                log.info("%s offers no token log-probabilities; answers carry none (weighted votes count each path "
                         "once)", self.base_url)
                choice, usage = self._complete("chat/completions", body, cutter, request.prompt.answer_prefix)
            text = (choice.get("message") or {}).get("content") or ""
            prefix = request.prompt.answer_prefix
            if prefix and text.startswith(prefix):  # llama.cpp's server repeats the prefilled part
                text = text[len(prefix):]
        else:
            body |= {"prompt": render_plain(request.prompt), "logprobs": 1}
            if schema and not self.official:
                body["json_schema"] = schema  # llama.cpp's name for it on /completions
            choice, usage = self._complete("completions", body, cutter, "")
            text = choice.get("text") or ""
        values = _token_logprobs(choice.get("logprobs"))
        logprob = sum(float(v) for v in values) if values and all(v is not None for v in values) else None
        text, _ = cut_at_stop(text, request.stop)
        reason = "length" if choice.get("finish_reason") == "length" else "stop"
        n_tokens = int(usage.get("completion_tokens") or len(values))
        return GenerateResult(text=text, n_tokens=n_tokens, finish_reason=reason, logprob=logprob)

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "model": self.display_name,
            "path": f"{self.base_url}#{self.model}",
            "base_url": self.base_url,
            "api": self.api,
            "dtype": None,
            "chat_template": self.chat_template,
            "concurrency": self.concurrency,
            "timeout_s": self.policy.timeout,
            "max_retries": self.policy.max_retries,
        }


def _token_logprobs(logprobs: dict[str, Any] | None) -> list[float | None]:
    """Per-token log-probabilities of a reply, in either layout servers use: ``{"content": [{"logprob": ..}]}``
    (chat, and llama.cpp everywhere) or ``{"token_logprobs": [...]}`` (legacy completions)."""
    if not logprobs:
        return []
    if logprobs.get("content") is not None:
        return [step.get("logprob") for step in logprobs["content"]]
    return list(logprobs.get("token_logprobs") or [])
