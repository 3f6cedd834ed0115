"""OpenAI-compatible routes on the assistant's server: ``/v1/models``, ``/v1/chat/completions``, ``/v1/completions``.

The served backend answers them through the same generation gate as the chat page. A chat request's final assistant
message is continued (an answer prefix, as llama.cpp and vLLM do; ``taskfit eval --backend openai`` sends its answer
prefix that way), and only the continuation comes back. ``/v1/completions`` sends its prompt as raw text, no chat
template. ``usage`` counts the rendered prompt's tokens and the generated ones. Streaming follows OpenAI's chunk
format, ``data: [DONE]`` last, with a usage chunk when ``stream_options.include_usage`` is set. With a serve API
key every ``/v1`` request needs ``Authorization: Bearer <key>``.

Not offered (a 400 says so): ``n`` > 1, ``echo``, prompt log-probabilities, tools.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from taskfit.api import GenerateRequest, Message, Prompt
from taskfit.serve.gate import Busy
from taskfit.serve.http import ApiError, require_bearer, require_unicode

MAX_TOKENS_LIMIT = 4096


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: str


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[ContentPart]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class SamplingIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_LIMIT)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int | None = Field(None, ge=-(2**63), lt=2**63)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=1, description="only 1")
    user: str | None = None


class ChatIn(SamplingIn):
    messages: list[ChatMessageIn] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_LIMIT)
    logprobs: bool | None = None
    continue_final_message: bool | None = None
    add_generation_prompt: bool | None = None


class CompletionIn(SamplingIn):
    prompt: str | list[str]
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=5)


def add_openai_routes(app: FastAPI, assistant, gate, settings) -> None:
    def check_key(request: Request) -> None:
        if settings.api_key:
            require_bearer(request, settings.api_key, "the server's API key (taskfit serve --serve-api-key)")

    def request_for(prompt: Prompt, body: SamplingIn, max_tokens: int | None) -> GenerateRequest:
        stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        if len(stop) > 4 or any(not s for s in stop):
            raise ApiError(400, "stop: at most 4 non-empty strings")
        if max_tokens is not None and max_tokens > settings.max_answer_tokens:
            raise ApiError(400, f"max_tokens {max_tokens} is over this server's limit of {settings.max_answer_tokens}")
        seed = body.seed if body.seed is not None else secrets.randbelow(2**31)
        return GenerateRequest(prompt, tuple(stop), max_tokens or assistant.max_tokens, body.temperature,
                               body.top_p, seed % (2**31))

    def prompt_tokens(prompt: Prompt) -> int:
        try:
            return assistant.backend.count_tokens(assistant.backend.render(prompt))
        except NotImplementedError:
            return 0

    @app.get("/v1/models")
    def models(request: Request) -> dict[str, Any]:
        check_key(request)
        identity = assistant.identity()
        return {"object": "list", "data": [{"id": identity["model"], "object": "model", "created": 0,
                                            "owned_by": "taskfit", "adapter": identity["adapter"]}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatIn, request: Request):
        check_key(request)
        if len(body.messages) > settings.max_messages:
            raise ApiError(413, f"{len(body.messages)} messages; the limit is {settings.max_messages}")
        turns = [Message("system" if m.role == "developer" else m.role, m.text()) for m in body.messages]
        if sum(len(m.content) for m in turns) > settings.max_question_chars * settings.max_messages:
            raise ApiError(413, "the messages are too long")
        require_unicode(m.content for m in turns)
        prefix = ""
        if turns[-1].role == "assistant" and body.continue_final_message is not False:
            prefix, turns = turns[-1].content, turns[:-1]
        if not turns and not prefix:
            raise ApiError(400, "messages: nothing to answer (only an empty assistant message)")
        prompt = Prompt(tuple(turns), prefix)
        generate = request_for(prompt, body, body.max_completion_tokens or body.max_tokens)
        return await respond(body, generate, "chat.completion", prompt)

    @app.post("/v1/completions")
    async def completions(body: CompletionIn, request: Request):
        check_key(request)
        if body.echo or body.logprobs:
            raise ApiError(400, "echo and logprobs are not offered by this server; use --mode generate "
                                "(or a server with prompt log-probabilities, such as vLLM, for log-likelihood)")
        texts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if len(texts) != 1:
            raise ApiError(400, "prompt: one string")
        if len(texts[0]) > settings.max_question_chars * settings.max_messages:
            raise ApiError(413, "the prompt is too long")
        if not texts[0]:
            raise ApiError(400, "prompt: must not be empty")
        require_unicode(texts)
        prompt = Prompt((), texts[0])
        return await respond(body, request_for(prompt, body, body.max_tokens), "text_completion", prompt)

    async def respond(body: SamplingIn, generate: GenerateRequest, kind: str, prompt: Prompt):
        ident = ("chatcmpl-" if kind == "chat.completion" else "cmpl-") + secrets.token_hex(12)
        created, model = int(time.time()), assistant.identity()["model"]
        counted = await asyncio.to_thread(prompt_tokens, prompt)  # the backend may ask its server

        def work(emit):
            return assistant.backend.generate_streaming(generate, emit)

        def usage(result) -> dict[str, int]:
            return {"prompt_tokens": counted, "completion_tokens": result.n_tokens,
                    "total_tokens": counted + result.n_tokens}

        def choice(text: str | None, finish: str | None) -> dict[str, Any]:
            if kind == "chat.completion":
                delta = {} if text is None else {"content": text}
                return {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
            return {"index": 0, "text": text or "", "finish_reason": finish, "logprobs": None}

        if not body.stream:
            try:
                result = None
                async for event in gate.stream(work, settings.answer_timeout):
                    if event.kind == "error":
                        raise ApiError(500 if not isinstance(event.value, TimeoutError) else 504,
                                       f"the model failed: {event.value}", "server_error")
                    if event.kind == "done":
                        result = event.value
            except Busy as exc:
                raise ApiError(503, str(exc), "server_busy") from None
            if kind == "chat.completion":
                out = {"index": 0, "message": {"role": "assistant", "content": result.text},
                       "finish_reason": result.finish_reason, "logprobs": None}
            else:
                out = {"index": 0, "text": result.text, "finish_reason": result.finish_reason, "logprobs": None}
            return {"id": ident, "object": kind, "created": created, "model": model, "choices": [out],
                    "usage": usage(result)}

        chunk_kind = kind + ".chunk" if kind == "chat.completion" else kind
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        try:  # take the slot before answering 200, so a busy server says 503
            stream = gate.stream(work, settings.answer_timeout)
            first = await anext(stream)
        except Busy as exc:
            raise ApiError(503, str(exc), "server_busy") from None

        def line(payload: dict[str, Any]) -> str:
            return "data: " + json.dumps({"id": ident, "object": chunk_kind, "created": created, "model": model}
                                         | payload) + "\n\n"  # ASCII: safe for any line splitter

        async def chunks():
            if kind == "chat.completion":
                yield line({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                         "finish_reason": None, "logprobs": None}]})
            event = first
            while True:
                if event.kind == "delta":
                    yield line({"choices": [choice(event.value, None)]})
                elif event.kind == "done":
                    yield line({"choices": [choice(None, event.value.finish_reason)]})
                    if include_usage:
                        yield line({"choices": [], "usage": usage(event.value)})
                    break
                else:
                    yield "data: " + json.dumps({"error": {"message": f"the model failed: {event.value}",
                                                           "type": "server_error"}}) + "\n\n"
                    break
                event = await anext(stream)
            yield "data: [DONE]\n\n"

        return StreamingResponse(chunks(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})

