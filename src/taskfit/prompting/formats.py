"""Answer formats: how the model is asked to write its answer and how the answer is read back.

Two objects instead of branches: :class:`TextFormat` (the task's answer prefix and verbalizers, its parser) and
:class:`JsonFormat` (``{"label": ...}``: the JSON shape as the output format, the object prefilled or constrained
by the backend's grammar, the JSON parser). A strategy picks one with :func:`make_format` and never asks which.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from taskfit.api import Example, Message, Prompt, continuation_for
from taskfit.prompting.options import BaseOptions
from taskfit.prompting.templates import default, fill
from taskfit.tasks.answers import json_values
from taskfit.tasks.task import Task


@dataclass(frozen=True)
class Generation:
    """How one answer is generated: the prompt, stop strings, an optional JSON schema, and the text the format
    wrote around the model's (``opener`` prefilled before it, ``closer`` after)."""

    prompt: Prompt
    stop: tuple[str, ...]
    schema: str | None = None
    opener: str = ""
    closer: str = ""


def join(prefix: str, text: str) -> str:
    """``text`` after the assistant prefix, separated by a space unless the prefix ends in whitespace."""
    if not prefix:
        return text
    return prefix + ("" if prefix[-1].isspace() else " ") + text


class TextFormat:
    """The task's own wording: its output-format line, answer prefix, answer words and parser."""

    json = False

    def __init__(self, task: Task, options: BaseOptions):
        self.task, self.space, self.options = task, task.space, options

    def output_format(self) -> str | None:
        """The output-format line of the user turn (``None``: the task's own)."""
        return None

    def answer_prefix(self) -> str:
        """Text the assistant's direct answer starts with."""
        return self.task.config.prompt.answer_prefix

    def gold(self, example: Example) -> str:
        """The gold answer as the model should write it."""
        return self.space.word(example)

    def demo_answer(self, example: Example) -> str:
        """A demonstration's assistant turn: the answer prefix and the gold answer."""
        word, prefix = self.space.word(example), self.answer_prefix()
        return prefix + continuation_for(Prompt((), prefix), word) if prefix else word

    def scoring(self, messages: Sequence[Message], prefix: str, words: Sequence[str]) -> tuple[Prompt, list[str]]:
        """The context and one continuation per candidate answer, for log-likelihood scoring."""
        prompt = Prompt(tuple(messages), prefix)
        return prompt, [continuation_for(prompt, w) for w in words]

    def generation(self, messages: Sequence[Message], prefix: str, example: Example, schema_ok: bool) -> Generation:
        return Generation(Prompt(tuple(messages), prefix), tuple(self.task.config.generation.stop))

    def budget(self, max_tokens: int | None) -> int:
        """Tokens to generate for an answer (``--max-tokens`` wins)."""
        return max_tokens or self.task.config.generation.max_tokens

    def parse(self, text: str, example: Example) -> tuple[Any, str | None]:
        return self.space.parse(text, example)


class JsonFormat(TextFormat):
    """``{"<key>": value}``: the JSON shape as the output format; prefilled or grammar-constrained generation."""

    json = True

    def output_format(self) -> str | None:
        """The JSON shape for this task type (naming the labels, the score range ...)."""
        return fill(self.options.json_output_format or default("json", self.space.type), **self.space.json_fill())

    def answer_prefix(self) -> str:
        """None: the answer is the object."""
        return ""

    def gold(self, example: Example) -> str:
        return json_values.render_answer(self.space.json_word(example), self.space.json_key)

    def demo_answer(self, example: Example) -> str:
        return self.gold(example)

    def _opener(self) -> tuple[str, str]:
        quote = '"' if self.space.json_quoted else ""
        return f'{{"{self.space.json_key}": {quote}', quote

    def scoring(self, messages: Sequence[Message], prefix: str, words: Sequence[str]) -> tuple[Prompt, list[str]]:
        opener, quote = self._opener()
        return Prompt(tuple(messages), join(prefix, opener)), [f"{w}{quote}}}" for w in words]

    def generation(self, messages: Sequence[Message], prefix: str, example: Example, schema_ok: bool) -> Generation:
        if self.options.constrained and schema_ok:
            # The backend's grammar makes the reply a valid object; no prefill, no stop strings needed.
            schema = json.dumps(self.space.json_schema(example), sort_keys=True)
            return Generation(Prompt(tuple(messages), prefix), (), schema)
        if self.options.json_prefill:
            # The reply is started for the model: it writes only the value, then the object is closed.
            opener, quote = self._opener()
            stop = ('"',) if quote else ("}", ",", "\n")
            return Generation(Prompt(tuple(messages), join(prefix, opener)), stop, None, opener, f"{quote}}}")
        return Generation(Prompt(tuple(messages), prefix), ())

    def budget(self, max_tokens: int | None) -> int:
        return max_tokens or max(self.task.config.generation.max_tokens, 24)

    def parse(self, text: str, example: Example) -> tuple[Any, str | None]:
        return self.space.parse_json(text, example)


def make_format(task: Task, options: BaseOptions) -> TextFormat:
    """The answer format ``options.answer_format`` names."""
    return (JsonFormat if options.answer_format == "json" else TextFormat)(task, options)
