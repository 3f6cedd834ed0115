"""What goes over the wire: every request body the server accepts, validated by FastAPI before a route runs (an
invalid body is a 422 naming the field). The page's and the arena's bodies, then OpenAI's (``/v1``), whose models
ignore fields they do not know, as OpenAI's own API does, but keep those that would change the answer so that a
request asking for them is refused by name (``unhonoured``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

EventId = Annotated[str, Field(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_-]+$",
                               description="an id the client makes per click; a retried click sends the same id")]


# ------------------------------------------------------------------------------------------------- the page
class AskIn(BaseModel):
    question: str = Field(min_length=1)
    conversation: str | None = Field(None, max_length=64)
    regenerate: str | None = Field(None, max_length=64, description="a turn id: answer its question again")


class FeedbackIn(BaseModel):
    event: EventId
    turn: str = Field(min_length=1, max_length=64)
    kind: Literal["up", "down", "better", "pick"]
    reason: str | None = Field(None, max_length=2000)
    text: str | None = Field(None, max_length=20000)


class RatingIn(BaseModel):
    event: EventId
    turn: str = Field(min_length=1, max_length=64)
    criterion: str = Field(min_length=1, max_length=64)
    value: Literal["good", "bad"]


class ServeModelIn(BaseModel):
    model: str = Field(min_length=1, max_length=4096, description="known model, hf:<folder> or gguf:<file>")
    adapter: str | None = Field(None, max_length=4096, description="an adapter folder applied to it")


class ArenaIn(BaseModel):
    question: str = Field(min_length=1)


class VoteIn(BaseModel):
    event: EventId
    battle: str = Field(min_length=1, max_length=64)
    winner: Literal["a", "b", "tie", "both_bad"]


# ------------------------------------------------------------------------------------------------- /v1
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


class ChatCompletionIn(SamplingIn):
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
