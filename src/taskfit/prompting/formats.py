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
from taskfit.tasks.answers.base import AnswerSpace
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

    def __init__(self, task: Task, options: BaseOptions):
        self.task, self.space, self.options = task, task.space, options

    def output_format(self) -> str | None:
        """The output-format line of the user turn (``None``: the task's own)."""
        return None

    def scored_texts(self, mode: str) -> bool:
        """Whether the candidate answers are scored as their own texts (then a choice list is not shown)."""
        return mode == "loglikelihood"

    def candidates(self, example: Example) -> list[str]:
        """The candidate answers scored in log-likelihood mode."""
        return self.space.candidates(example)

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

    def scoring(self, messages: Sequence[Message], prefix: str, words: Sequence[str],
                example: Example) -> tuple[Prompt, list[str]]:
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
    """``{"<key>": value}``: the JSON shape as the output format; prefilled or grammar-constrained generation. It
    owns the key (the space's ``answer_name``), the quoting (a string value's schema) and how candidate values are
    written; the space gives the values, their schema and their reading (``value``, ``value_schema``,
    ``from_value``)."""

    def __init__(self, task: Task, options: BaseOptions):
        super().__init__(task, options)
        self.key = self.space.answer_name

    def output_format(self) -> str | None:
        """The JSON shape for this task type (naming the labels, the score range ...)."""
        return fill(self.options.json_output_format or default("json", self.space.type), **self.space.value_fill())

    def scored_texts(self, mode: str) -> bool:
        return False  # values are scored (a choice's number): the choices are listed

    def candidates(self, example: Example) -> list[str]:
        """The candidate values as written inside the object (a string inside the quote the opener opened)."""
        return [v if isinstance(v, str) else str(v) for v in self.space.value_candidates(example)]

    def quoted(self, example: Example) -> bool:
        return value_is_string(self.space, example)

    def schema(self, example: Example) -> dict[str, Any]:
        return reply_schema(self.space, example)

    def answer_prefix(self) -> str:
        """None: the answer is the object."""
        return ""

    def gold(self, example: Example) -> str:
        return json_values.render_answer(self.space.value(example), self.key)

    def demo_answer(self, example: Example) -> str:
        return self.gold(example)

    def _opener(self, example: Example) -> tuple[str, str]:
        quote = '"' if self.quoted(example) else ""
        return f'{{"{self.key}": {quote}', quote

    def scoring(self, messages: Sequence[Message], prefix: str, words: Sequence[str],
                example: Example) -> tuple[Prompt, list[str]]:
        opener, quote = self._opener(example)
        return Prompt(tuple(messages), join(prefix, opener)), [f"{w}{quote}}}" for w in words]

    def generation(self, messages: Sequence[Message], prefix: str, example: Example, schema_ok: bool) -> Generation:
        if self.options.constrained and schema_ok:
            # The backend's grammar makes the reply a valid object; no prefill, no stop strings needed.
            schema = json.dumps(self.schema(example), sort_keys=True)
            return Generation(Prompt(tuple(messages), prefix), (), schema)
        if self.options.json_prefill:
            # The reply is started for the model: it writes only the value, then the object is closed.
            opener, quote = self._opener(example)
            stop = ('"',) if quote else ("}", ",", "\n")
            return Generation(Prompt(tuple(messages), join(prefix, opener)), stop, None, opener, f"{quote}}}")
        return Generation(Prompt(tuple(messages), prefix), ())

    def budget(self, max_tokens: int | None) -> int:
        return max_tokens or max(self.task.config.generation.max_tokens, 24)

    def parse(self, text: str, example: Example) -> tuple[Any, str | None]:
        return read_reply(self.space, text, example)


def value_is_string(space: AnswerSpace, example: Example) -> bool:
    """Whether the answer value is a JSON string (its schema says so: a string type, or an enum of strings)."""
    schema = space.value_schema(example)
    enum = schema.get("enum")
    return schema.get("type") == "string" or bool(enum) and all(isinstance(v, str) for v in enum)


def reply_schema(space: AnswerSpace, example: Example) -> dict[str, Any]:
    """JSON schema of the whole reply object ``{"<answer_name>": value}`` and nothing else."""
    key = space.answer_name
    return {"type": "object", "properties": {key: space.value_schema(example)}, "required": [key],
            "additionalProperties": False}


def read_reply(space: AnswerSpace, text: str, example: Example) -> tuple[Any, str | None]:
    """The prediction in a JSON reply (repaired when it can be), or ``(None, reason)``."""
    found = json_values.parse_json_value(text, space.answer_name)
    if found.error:
        return None, found.error
    return space.from_value(found.label, example)


def make_format(task: Task, options: BaseOptions) -> TextFormat:
    """The answer format ``options.answer_format`` names."""
    return (JsonFormat if options.answer_format == "json" else TextFormat)(task, options)
