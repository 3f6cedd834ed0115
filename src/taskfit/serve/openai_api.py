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
from dataclasses import dataclass, replace
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse

from taskfit.api import GenerateRequest, GenerateResult, Message, Prompt
from taskfit.serve.gate import Busy, Delta, Done, Event, Failed
from taskfit.serve.http import ApiError, require_unicode
from taskfit.serve.protocol import ChatCompletionIn, CompletionIn, ResponseFormat, SamplingIn
from taskfit.serve.served import Served, served

router = APIRouter()


@router.get("/v1/models")
def models(s: Served = Depends(served)) -> dict[str, Any]:
    identity = s.assistant.identity()
    return {"object": "list", "data": [{"id": identity["model"], "object": "model", "created": 0,
                                        "owned_by": "taskfit", "adapter": identity["adapter"]}]}


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionIn, s: Served = Depends(served)):
    limits = s.settings
    if len(body.messages) > limits.max_messages:
        raise ApiError(413, f"{len(body.messages)} messages; the limit is {limits.max_messages}")
    turns = [Message("system" if m.role == "developer" else m.role, m.text()) for m in body.messages]
    if sum(len(m.content) for m in turns) > limits.max_question_chars * limits.max_messages:
        raise ApiError(413, "the messages are too long")
    require_unicode(m.content for m in turns)
    prefix = ""
    if turns[-1].role == "assistant" and body.continue_final_message is not False:
        prefix, turns = turns[-1].content, turns[:-1]
    if not turns and not prefix:
        raise ApiError(400, "messages: nothing to answer (only an empty assistant message)")
    prompt = Prompt(tuple(turns), prefix)
    asked = body.max_completion_tokens or body.max_tokens
    generate = request_for(s, prompt, body, asked, schema_of(s, body.response_format))
    return await respond(s, Reply(body, "chat.completion"), generate, prompt, asked)


@router.post("/v1/completions")
async def completions(body: CompletionIn, s: Served = Depends(served)):
    if body.echo or body.logprobs:
        raise ApiError(400, "echo and logprobs are not offered by this server; use --mode generate "
                            "(or a server with prompt log-probabilities, such as vLLM, for log-likelihood)",
                       param="echo" if body.echo else "logprobs", code="unsupported_parameter")
    texts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if len(texts) != 1:
        raise ApiError(400, "prompt: one string")
    if len(texts[0]) > s.settings.max_question_chars * s.settings.max_messages:
        raise ApiError(413, "the prompt is too long")
    if not texts[0]:
        raise ApiError(400, "prompt: must not be empty")
    require_unicode(texts)
    prompt = Prompt((), texts[0])
    generate = request_for(s, prompt, body, body.max_tokens)
    return await respond(s, Reply(body, "text_completion"), generate, prompt, body.max_tokens)


def check(s: Served, body: SamplingIn) -> None:
    """404 for another model, 400 naming the parameters this server would otherwise ignore."""
    served_model = s.assistant.identity()["model"]
    if body.model not in (None, "", served_model):
        raise ApiError(404, f"The model '{body.model}' does not exist on this server; it serves '{served_model}' "
                            "(GET /v1/models)", param="model", code="model_not_found")
    refused = body.unhonoured()
    if refused:
        raise ApiError(400, f"not offered by this server: {', '.join(refused)}; leave them out (no tool calls, no "
                            "token log-probabilities, one choice per request, no sampling penalties)",
                       param=refused[0], code="unsupported_parameter")


def schema_of(s: Served, response_format: ResponseFormat | None) -> str | None:
    """The JSON schema a reply must match, for backends that constrain their output."""
    if response_format is None or response_format.type == "text":
        return None
    backend = s.assistant.backend
    if not getattr(backend, "supports_json_schema", False):
        raise ApiError(400, f"response_format: the {backend.name} backend cannot constrain its output; "
                            "serve with --backend llamacpp for JSON answers", param="response_format")
    if response_format.type == "json_object":
        return json.dumps({"type": "object"})
    schema = (response_format.json_schema or {}).get("schema")
    if not isinstance(schema, dict):
        raise ApiError(400, "response_format.json_schema.schema: give the JSON schema the reply must match",
                       param="response_format")
    return json.dumps(schema)


def request_for(s: Served, prompt: Prompt, body: SamplingIn, max_tokens: int | None,
                schema: str | None = None) -> GenerateRequest:
    check(s, body)
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    if len(stop) > 4 or any(not x for x in stop):
        raise ApiError(400, "stop: at most 4 non-empty strings")
    limit = s.settings.max_answer_tokens
    if max_tokens is not None and max_tokens > limit:
        raise ApiError(400, f"max_tokens {max_tokens} is over this server's limit of {limit}")
    seed = body.seed if body.seed is not None else secrets.randbelow(2**31)
    return GenerateRequest(prompt, tuple(stop), max_tokens or s.assistant.max_tokens, body.temperature,
                           body.top_p, seed % (2**31), json_schema=schema)


def fitted(s: Served, generate: GenerateRequest, counted: int, asked: int | None) -> GenerateRequest:
    """The request with room for its answer in the model's window, or OpenAI's context-length 400 (a prompt is
    never cut silently: the model would not see what ``usage`` counts)."""
    window = s.assistant.backend.context_window()
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


def prompt_tokens(s: Served, prompt: Prompt) -> int:
    try:
        return s.assistant.backend.count_tokens(s.assistant.backend.render(prompt))
    except NotImplementedError:
        return 0


@dataclass
class Reply:
    """One response's wire format: its id, kind (``chat.completion`` or ``text_completion``), model and usage."""

    body: SamplingIn
    kind: str
    model: str = ""
    counted: int = 0
    created: int = 0
    ident: str = ""

    def __post_init__(self) -> None:
        self.created = int(time.time())
        self.ident = ("chatcmpl-" if self.kind == "chat.completion" else "cmpl-") + secrets.token_hex(12)

    def usage(self, result: GenerateResult) -> dict[str, int]:
        return {"prompt_tokens": self.counted, "completion_tokens": result.n_tokens,
                "total_tokens": self.counted + result.n_tokens}

    def whole(self, result: GenerateResult) -> dict[str, Any]:
        if self.kind == "chat.completion":
            out = {"index": 0, "message": {"role": "assistant", "content": result.text},
                   "finish_reason": result.finish_reason, "logprobs": None}
        else:
            out = {"index": 0, "text": result.text, "finish_reason": result.finish_reason, "logprobs": None}
        return {"id": self.ident, "object": self.kind, "created": self.created, "model": self.model,
                "choices": [out], "usage": self.usage(result)}

    def chunk(self, payload: dict[str, Any]) -> str:
        kind = self.kind + ".chunk" if self.kind == "chat.completion" else self.kind
        return "data: " + json.dumps({"id": self.ident, "object": kind, "created": self.created, "model": self.model}
                                     | payload) + "\n\n"  # ASCII: safe for any line splitter

    def choice(self, text: str | None, finish: str | None) -> dict[str, Any]:
        if self.kind == "chat.completion":
            return {"index": 0, "delta": {} if text is None else {"content": text}, "finish_reason": finish,
                    "logprobs": None}
        return {"index": 0, "text": text or "", "finish_reason": finish, "logprobs": None}


async def respond(s: Served, reply: Reply, generate: GenerateRequest, prompt: Prompt, asked: int | None):
    """Answer ``generate`` through the gate, whole or streamed as the request asked."""
    reply.model = s.assistant.identity()["model"]
    reply.counted = await asyncio.to_thread(prompt_tokens, s, prompt)  # the backend may ask its server
    generate = fitted(s, generate, reply.counted, asked)
    backend = s.assistant.backend
    stream = s.gate.stream(lambda emit: backend.generate_streaming(generate, emit), s.settings.answer_timeout)
    try:  # take the slot before answering 200, so a busy server says 503
        first = await anext(stream)
    except Busy as exc:
        raise ApiError(503, str(exc), "server_busy") from None
    if not reply.body.stream:
        return reply.whole(await last_result(first, stream))
    return StreamingResponse(chunks(reply, first, stream), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store"})


async def last_result(event: Event, stream) -> GenerateResult:
    """The answer at the end of ``stream`` (its first event already read), or the model's failure as 500 / 504."""
    while isinstance(event, Delta):
        event = await anext(stream)
    if isinstance(event, Failed):
        raise ApiError(504 if isinstance(event.error, TimeoutError) else 500, f"the model failed: {event.error}",
                       "server_error")
    return event.result


async def chunks(reply: Reply, event: Event, stream):
    """OpenAI's streamed chunks: the role first (chat), each delta, the finish reason, usage when asked, [DONE]."""
    if reply.kind == "chat.completion":
        yield reply.chunk({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                        "finish_reason": None, "logprobs": None}]})
    while isinstance(event, Delta):
        yield reply.chunk({"choices": [reply.choice(event.text, None)]})
        event = await anext(stream)
    if isinstance(event, Done):
        yield reply.chunk({"choices": [reply.choice(None, event.result.finish_reason)]})
        if reply.body.stream_options and reply.body.stream_options.include_usage:
            yield reply.chunk({"choices": [], "usage": reply.usage(event.result)})
    else:
        yield "data: " + json.dumps({"error": {"message": f"the model failed: {event.error}",
                                               "type": "server_error"}}) + "\n\n"
    yield "data: [DONE]\n\n"
