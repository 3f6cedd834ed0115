"""OpenAI-compatible routes on the assistant's server: ``/v1/models``, ``/v1/chat/completions``, ``/v1/completions``.

The served backend answers them through the same generation gate as the chat page. A chat request's final assistant
message is continued (an answer prefix, as llama.cpp and vLLM do; ``taskfit eval --backend openai`` sends its answer
prefix that way), and only the continuation comes back. ``/v1/completions`` sends its prompt as raw text, no chat
template. ``usage`` counts the rendered prompt's tokens and the generated ones. Streaming follows OpenAI's chunk
format, ``data: [DONE]`` last, with a usage chunk when ``stream_options.include_usage`` is set. With a serve API
key every ``/v1`` request needs ``Authorization: Bearer <key>`` (checked by :class:`~taskfit.serve.http.Guard`
before the body is read, so a request without it learns nothing about the API).

As OpenAI and vLLM do: a ``model`` other than the served one is 404 ``model_not_found``; a prompt that leaves the
answer no room in the model's window is 400 ``context_length_exceeded`` (never cut silently). ``response_format``
(``json_object``, ``json_schema``) is honoured where the backend constrains its output (llama.cpp, a server behind
the openai backend). Parameters this server would otherwise ignore are a 400 naming them: ``tools``,
``tool_choice``, ``functions``, ``logprobs`` / ``top_logprobs``, ``logit_bias``, non-zero presence and frequency
penalties, ``n`` > 1, ``echo``, ``suffix``, ``best_of`` > 1.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from dataclasses import replace
from typing import Any, Literal

from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from taskfit.api import GenerateRequest, Message, Prompt
from taskfit.serve.gate import Busy
from taskfit.serve.http import ApiError, require_unicode

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
    n: int = Field(1, ge=1, description="only 1")
    user: str | None = None
    # accepted so that a request asking for them is refused by name instead of being answered without them
    logit_bias: dict[str, float] | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0

    def unhonoured(self) -> list[str]:
        """The parameters of this request that would change the answer and that this server does not apply."""
        asked = {"n": self.n > 1, "logit_bias": bool(self.logit_bias), "presence_penalty": self.presence_penalty != 0,
                 "frequency_penalty": self.frequency_penalty != 0}
        return [name for name, given in asked.items() if given]


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None


class ChatIn(SamplingIn):
    messages: list[ChatMessageIn] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_LIMIT)
    logprobs: bool | None = None
    top_logprobs: int | None = None
    continue_final_message: bool | None = None
    add_generation_prompt: bool | None = None
    response_format: ResponseFormat | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None
    function_call: Any = None

    def unhonoured(self) -> list[str]:
        asked = {"tools": bool(self.tools), "tool_choice": self.tool_choice not in (None, "none", "auto"),
                 "functions": bool(self.functions), "function_call": self.function_call not in (None, "none", "auto"),
                 "logprobs": bool(self.logprobs), "top_logprobs": self.top_logprobs is not None}
        return super().unhonoured() + [name for name, given in asked.items() if given]


class CompletionIn(SamplingIn):
    prompt: str | list[str]
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=5)
    suffix: str | None = None
    best_of: int = Field(1, ge=1)

    def unhonoured(self) -> list[str]:
        asked = {"echo": self.echo, "logprobs": bool(self.logprobs), "suffix": bool(self.suffix),
                 "best_of": self.best_of > 1}
        return super().unhonoured() + [name for name, given in asked.items() if given]


def add_openai_routes(app: FastAPI, assistant, gate, settings) -> None:
    def check(body: SamplingIn) -> None:
        """404 for another model, 400 naming the parameters this server would otherwise ignore."""
        served = assistant.identity()["model"]
        if body.model not in (None, "", served):
            raise ApiError(404, f"The model '{body.model}' does not exist on this server; it serves '{served}' "
                                "(GET /v1/models)", param="model", code="model_not_found")
        refused = body.unhonoured()
        if refused:
            raise ApiError(400, f"not offered by this server: {', '.join(refused)}; leave them out (no tool calls, no "
                                "token log-probabilities, one choice per request, no sampling penalties)",
                           param=refused[0], code="unsupported_parameter")

    def schema_of(response_format: ResponseFormat | None) -> str | None:
        """The JSON schema a reply must match, for backends that constrain their output."""
        if response_format is None or response_format.type == "text":
            return None
        if not getattr(assistant.backend, "supports_json_schema", False):
            raise ApiError(400, f"response_format: the {assistant.backend.name} backend cannot constrain its output; "
                                "serve with --backend llamacpp for JSON answers", param="response_format")
        if response_format.type == "json_object":
            return json.dumps({"type": "object"})
        schema = (response_format.json_schema or {}).get("schema")
        if not isinstance(schema, dict):
            raise ApiError(400, "response_format.json_schema.schema: give the JSON schema the reply must match",
                           param="response_format")
        return json.dumps(schema)

    def request_for(prompt: Prompt, body: SamplingIn, max_tokens: int | None,
                    schema: str | None = None) -> GenerateRequest:
        check(body)
        stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        if len(stop) > 4 or any(not s for s in stop):
            raise ApiError(400, "stop: at most 4 non-empty strings")
        if max_tokens is not None and max_tokens > settings.max_answer_tokens:
            raise ApiError(400, f"max_tokens {max_tokens} is over this server's limit of {settings.max_answer_tokens}")
        seed = body.seed if body.seed is not None else secrets.randbelow(2**31)
        return GenerateRequest(prompt, tuple(stop), max_tokens or assistant.max_tokens, body.temperature,
                               body.top_p, seed % (2**31), json_schema=schema)

    def fitted(generate: GenerateRequest, counted: int, asked: int | None) -> GenerateRequest:
        """The request with room for its answer in the model's window, or OpenAI's context-length 400 (a prompt is
        never cut silently: the model would not see what ``usage`` counts)."""
        window = assistant.backend.context_window()
        if window is None:
            return generate
        room = window - counted
        if room <= 0 or (asked is not None and asked > room):
            wanted = asked or generate.max_tokens
            raise ApiError(400, f"This model's maximum context length is {window} tokens. However, you requested "
                                f"{counted + wanted} tokens ({counted} in the messages, {wanted} in the completion). "
                                "Please reduce the length of the messages or completion.",
                           param="messages", code="context_length_exceeded")
        return replace(generate, max_tokens=min(generate.max_tokens, room))

    def prompt_tokens(prompt: Prompt) -> int:
        try:
            return assistant.backend.count_tokens(assistant.backend.render(prompt))
        except NotImplementedError:
            return 0

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        identity = assistant.identity()
        return {"object": "list", "data": [{"id": identity["model"], "object": "model", "created": 0,
                                            "owned_by": "taskfit", "adapter": identity["adapter"]}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatIn):
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
        asked = body.max_completion_tokens or body.max_tokens
        generate = request_for(prompt, body, asked, schema_of(body.response_format))
        return await respond(body, generate, "chat.completion", prompt, asked)

    @app.post("/v1/completions")
    async def completions(body: CompletionIn):
        if body.echo or body.logprobs:
            raise ApiError(400, "echo and logprobs are not offered by this server; use --mode generate "
                                "(or a server with prompt log-probabilities, such as vLLM, for log-likelihood)",
                           param="echo" if body.echo else "logprobs", code="unsupported_parameter")
        texts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if len(texts) != 1:
            raise ApiError(400, "prompt: one string")
        if len(texts[0]) > settings.max_question_chars * settings.max_messages:
            raise ApiError(413, "the prompt is too long")
        if not texts[0]:
            raise ApiError(400, "prompt: must not be empty")
        require_unicode(texts)
        prompt = Prompt((), texts[0])
        return await respond(body, request_for(prompt, body, body.max_tokens), "text_completion", prompt,
                             body.max_tokens)

    async def respond(body: SamplingIn, generate: GenerateRequest, kind: str, prompt: Prompt, asked: int | None):
        ident = ("chatcmpl-" if kind == "chat.completion" else "cmpl-") + secrets.token_hex(12)
        created, model = int(time.time()), assistant.identity()["model"]
        counted = await asyncio.to_thread(prompt_tokens, prompt)  # the backend may ask its server
        generate = fitted(generate, counted, asked)

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

