"""The structured prompt every strategy builds and every backend renders.

A :class:`Prompt` keeps chat roles separate from the text that opens the assistant's answer, so a
backend can apply the model's chat template (or plain text when templates are off) and still continue
the answer after the prefix. Strategies never build raw strings for a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

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
