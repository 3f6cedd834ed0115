"""The vocabulary every layer speaks; imports nothing from taskfit.

- :class:`Prompt` (chat :class:`Message` s plus the start of the assistant's reply) is what strategies build and
  backends render: a backend applies the model's chat template (or plain text when templates are off) and still
  continues the answer after the prefix. Nothing builds raw strings for a model.
- Two request types, as in lm-evaluation-harness: :class:`LoglikelihoodRequest` (how likely is this continuation
  after this context?) and :class:`GenerateRequest` (continue this prompt until a stop string), with their results.
  A backend answers a list of one type and returns results in request order.
- :class:`Example` is one row of a task; :class:`Outcome` is what an answerer (a strategy on a model, a trained
  head) concluded for it, with everything needed to audit it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class Message:
    """One chat turn."""

    role: Role
    content: str


@dataclass(frozen=True)
class Prompt:
    """Chat messages plus the start of the assistant's reply (``answer_prefix``)."""

    messages: tuple[Message, ...]
    answer_prefix: str = ""

    def as_dicts(self) -> list[dict[str, str]]:
        """Messages in the ``[{"role": ..., "content": ...}]`` form chat templates and APIs take."""
        return [{"role": m.role, "content": m.content} for m in self.messages]


def render_plain(prompt: Prompt) -> str:
    """Plain-text rendering (no chat template): turns separated by blank lines, then the answer prefix.

    ``user "X"`` with prefix ``"Answer:"`` renders as ``"X\\nAnswer:"``, the lm-eval prompt shape.
    """
    text = "\n\n".join(m.content for m in prompt.messages)
    if prompt.answer_prefix:
        text = f"{text}\n{prompt.answer_prefix}" if text else prompt.answer_prefix
    return text


def continuation_for(prompt: Prompt, answer: str) -> str:
    """The text to score after ``prompt`` for ``answer``: a space after a non-empty prefix, none otherwise."""
    prefix = prompt.answer_prefix
    if prefix and not prefix[-1].isspace():
        return f" {answer}"
    return answer


@dataclass(frozen=True)
class LoglikelihoodRequest:
    """Score ``continuation`` right after the rendered ``context`` (answer prefix included)."""

    context: Prompt
    continuation: str


@dataclass(frozen=True)
class LoglikelihoodResult:
    """Sum of log-probabilities of the continuation tokens, and whether greedy decoding would produce them."""

    logprob: float
    is_greedy: bool
    n_tokens: int


@dataclass(frozen=True)
class GenerateRequest:
    """Continue ``prompt`` for at most ``max_tokens`` tokens, cutting at the first stop string.

    ``temperature == 0`` is greedy decoding. Sampled requests are reproducible per request: the same
    ``seed`` gives the same text whatever else is in the batch.
    """

    prompt: Prompt
    stop: tuple[str, ...] = ()
    max_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    json_schema: str | None = None  # JSON text of a schema the reply must match (backends with supports_json_schema)
    # a later prompt will continue this one's text (reasoning before its answer): a backend may keep the finished
    # row's KV cache for it; never part of what is asked, so not of a response's cache key either
    continued: bool = False


@dataclass(frozen=True)
class GenerateResult:
    """Generated text (stop string excluded), how many tokens the model produced, and their log-probability.

    ``logprob`` is the sum over produced tokens of the model's own (temperature 1) log-probability, the
    sequence probability that weighted self-consistency votes use; ``None`` where a backend cannot say.
    """

    text: str
    n_tokens: int
    finish_reason: str  # "stop" (stop string or end of turn) or "length"
    logprob: float | None = None


Request = LoglikelihoodRequest | GenerateRequest


@dataclass(frozen=True)
class Example:
    """One evaluation item: its position in the data, the template fields, the gold answer (a label value,
    a score, true choice positions, gold spans ... see :mod:`taskfit.tasks.answers`), and per-example data
    the prompt needs (``meta``: shuffled choices)."""

    index: int
    fields: dict[str, str]
    gold: Any
    row: dict[str, Any] = field(repr=False, default_factory=dict)
    rationale: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    """What an answerer concluded for one example, with everything needed to audit it."""

    prediction: Any
    parse_ok: bool
    prompt: str
    response: Any
    extra: dict[str, Any] = field(default_factory=dict)
